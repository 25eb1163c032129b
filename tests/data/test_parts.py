"""One tokenisation of an example's parts (latent.data.parts) and every layout built from it.

Each layout is pinned twice: against ids encoded here from the layout's text, the way the code
did before the layouts shared `Parts` (CoT and the abstract chain as one text, every other piece
as its own text), and against digests of the batches that code built for the same examples
(recorded before the change), so a refactor that changes a single id fails.
"""

from __future__ import annotations

import hashlib
import itertools
import json

import numpy as np
import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from latent.config import LatentConfig
from latent.data import pipeline
from latent.data.parts import encode_parts
from latent.data.shapes import round_up
from latent.data.special_tokens import SPECIAL
from latent.data.tasks import Example, cot_text
from latent.data.tokenizer import Tokenizer
from latent.methods.abstract_cot import layouts as abstract
from latent.methods.coconut import curriculum
from latent.methods.switch import spans as switch
from latent.methods.token_assorted.vq_codes import cot_step_ids
from tests.conftest import word_tokenizer

EXAMPLES = (
    Example(
        "Every wumpus is a yumpus. Every yumpus is a zumpus. Alex is a wumpus. Is Alex a zumpus or a dumpus?",
        ("Alex is a wumpus.", "Every wumpus is a yumpus.", "Alex is a yumpus.", "Every yumpus is a zumpus."),
        "Alex is a zumpus.",
    ),
    Example("What is 123 * 45?", ("123 * 5 = 615", "123 * 40 = 4920 (5535)"), "5535"),
    Example("Is Sam happy?", (), "Sam is happy."),
    # stray spaces: a word-level tokenizer drops them wherever the text is cut
    Example("Max is a cat. Is Max a pet?", ("Max is a cat. ", " Every cat is  a pet."), "Max is a pet."),
)
ABSTRACT_SPANS = (["<abs_1>", "<abs_4>"], ["<abs_7>"], [], ["<abs_0>", "<abs_0>", "<abs_2>"])
CODED = tuple(Example(e.question, e.steps, e.answer, meta={"abstract": z}) for e, z in zip(EXAMPLES, ABSTRACT_SPANS))
MAX_LEN = 512


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return word_tokenizer(EXAMPLES, num_abstract=8)


def byte_level_tokenizer() -> Tokenizer:
    """A GPT-2-style byte-level BPE trained on the examples (no hub), `<|endoftext|>` its EOS."""
    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator([t for e in EXAMPLES for t in cot_text(e)] * 20, trainer=trainer)
    return Tokenizer(backend)


# ----------------------------------------------------------------------------- the old encodings


def steps_text(steps) -> str:
    return "".join(step + "\n" for step in steps)


def old_prompt(tok, e: Example) -> list[int]:
    return tok.encode(e.question + "\n")


def old_answer(tok, e: Example) -> list[int]:
    return tok.encode(f"### {e.answer}") + [tok.eos_id]


def old_steps_and_answer(tok, e: Example, start: int = 0) -> list[int]:
    """What the old Coconut/SWITCH code appended after its markers: steps[start:] and the answer
    line, as one text here (the same ids for the word-level tokenizer, whose newline is its own token)."""
    return tok.encode(steps_text(e.steps[start:]) + f"### {e.answer}") + [tok.eos_id]


def real(batch: dict, b: int) -> tuple[list[int], int, list[int]]:
    """Example b's prefix tokens, real latent slots and suffix tokens."""
    prefix = batch["prefix"][b][batch["prefix_mask"][b]].tolist()
    suffix = batch["suffix"][b][batch["suffix_mask"][b]].tolist()
    return prefix, int(batch["latent_mask"][b].sum()), suffix


# ----------------------------------------------------------------------------- Parts


@pytest.mark.parametrize("which", ["word_level", "byte_level"])
def test_parts_joined_are_the_ids_of_the_joined_cot_text(tok, which):
    tokenizer = tok if which == "word_level" else byte_level_tokenizer()
    for e in EXAMPLES if which == "word_level" else EXAMPLES[:3]:  # byte-level: steps without stray spaces
        parts = encode_parts(e, tokenizer)
        prompt, target = cot_text(e)
        assert parts.question.tolist() == tokenizer.encode(prompt)
        assert [s.tolist() for s in parts.steps] == [tokenizer.encode(step + "\n") for step in e.steps]
        assert parts.answer.tolist() == tokenizer.encode(f"### {e.answer}") + [tokenizer.eos_id]
        joined = np.concatenate([parts.question, parts.chain(), parts.answer])
        assert joined.tolist() == tokenizer.encode(prompt + target) + [tokenizer.eos_id]
        assert parts.n_tokens == len(joined)
        assert joined.dtype == np.int32 and parts.chain(1, 2).tolist() == tokenizer.encode(steps_text(e.steps[1:2]))


def test_round_up():
    assert [round_up(n, 8) for n in (0, 1, 8, 9, 16, 17)] == [0, 8, 8, 16, 16, 24]
    assert round_up(50, 64) == 64 and round_up(7, 1) == 7
    with pytest.raises(ValueError, match="multiple must be >= 1"):
        round_up(5, 0)


# ----------------------------------------------------------------------------- each layout, old way


def test_text_records_are_prompt_then_target_then_eos(tok):
    for fmt, target in (("cot", lambda e: cot_text(e)[1]), ("no_cot", lambda e: f"### {e.answer}")):
        records, dropped = pipeline.tokenize_examples(list(EXAMPLES), tok, fmt, MAX_LEN)
        prompts, _ = pipeline.tokenize_examples(list(EXAMPLES), tok, fmt, MAX_LEN, prompt_only=True)
        assert dropped == 0 and len(records) == len(prompts) == len(EXAMPLES)
        for e, record, prompt in zip(EXAMPLES, records, prompts):
            want = old_prompt(tok, e) + tok.encode(target(e)) + [tok.eos_id]
            assert record.tokens.tolist() == want and record.prompt_len == len(old_prompt(tok, e))
            assert record.loss_mask.tolist() == [i >= record.prompt_len for i in range(len(want))]
            assert prompt.tokens.tolist() == old_prompt(tok, e)


def test_text_records_drop_what_is_longer_than_max_len(tok):
    e = EXAMPLES[0]
    n = len(old_prompt(tok, e)) + len(tok.encode(cot_text(e)[1])) + 1
    assert pipeline.tokenize_examples([e], tok, "cot", n)[1] == 0
    assert pipeline.tokenize_examples([e], tok, "cot", n - 1)[1] == 1
    assert pipeline.tokenize_examples([e], tok, "cot", len(old_prompt(tok, e)), prompt_only=True)[1] == 0
    with pytest.raises(ValueError, match="is not one of"):
        pipeline.tokenize_examples([e], tok, "cots", n)


def test_coconut_prefix_and_suffix_at_every_stage(tok):
    records, dropped = curriculum.tokenize_latent_examples(list(EXAMPLES), tok, MAX_LEN)
    assert dropped == 0
    bot, eot = tok.id_of(SPECIAL.bot), tok.id_of(SPECIAL.eot)
    cfg = LatentConfig(mode="coconut", c_thought=2, max_latent_stage=2)
    stages = [0, 1, 2, 3]
    batch = curriculum.collate_latent(records, stages, tok, cfg, curriculum.batch_widths(records), n_slots=4)
    for b, (e, stage) in enumerate(zip(EXAMPLES, stages)):
        dropped_steps = min(stage, len(e.steps))
        prefix, _, suffix = real(batch, b)
        assert prefix == old_prompt(tok, e) + [bot]
        assert suffix == [eot] + old_steps_and_answer(tok, e, start=dropped_steps)
    n = len(old_prompt(tok, EXAMPLES[0])) + len(old_steps_and_answer(tok, EXAMPLES[0])) + 2  # <bot> <eot>
    assert curriculum.tokenize_latent_examples(EXAMPLES[:1], tok, n)[1] == 0
    assert curriculum.tokenize_latent_examples(EXAMPLES[:1], tok, n - 1)[1] == 1


def test_switch_prefix_and_suffix_at_every_stage(tok):
    spans = [switch.fixed_span(len(e.steps), 1, 2) for e in EXAMPLES]
    records, dropped = switch.tokenize_switch_examples(list(EXAMPLES), tok, MAX_LEN, spans)
    assert dropped == 0
    swi, swi_end = tok.id_of(SPECIAL.swi), tok.id_of(SPECIAL.swi_end)
    cfg = LatentConfig(mode="switch", c_thought=2)
    for stage in (0, 1, 2):
        batch = switch.collate_switch(records, stage, tok, cfg, switch.switch_widths(records), n_slots=4)
        for b, (e, (a, end)) in enumerate(zip(EXAMPLES, spans)):
            hidden = min(stage, end - a)
            prefix, slots, suffix = real(batch, b)
            assert prefix == tok.encode(e.question + "\n" + steps_text(e.steps[:a])) + [swi]
            assert slots == 2 * hidden
            assert suffix == tok.encode(steps_text(e.steps[a + hidden : end])) + [swi_end] + old_steps_and_answer(tok, e, end)
            labelled = batch["prefix"][b][batch["prefix_loss_mask"][b]].tolist()
            assert labelled == tok.encode(steps_text(e.steps[:a])) + [swi]


def test_switch_entropies_read_the_question_and_steps(tok):
    seen = []

    def uniform_logits(tokens_BxT, mask_BxT):
        seen.append((tokens_BxT, mask_BxT))
        return np.zeros((*tokens_BxT.shape, 5))

    per_step = switch.step_entropies(list(EXAMPLES), tok, uniform_logits)
    (tokens_BxT, mask_BxT), = seen
    for b, e in enumerate(EXAMPLES):
        want = tok.encode(e.question + "\n" + steps_text(e.steps))
        assert tokens_BxT[b][mask_BxT[b]].tolist() == want and mask_BxT[b, : len(want)].all()
        assert len(per_step[b]) == len(e.steps)
    assert tokens_BxT.shape[1] % 32 == 0


@pytest.mark.parametrize("fmt", abstract.ABSTRACT_FORMATS)
def test_abstract_layouts(tok, fmt):
    begin, end = tok.id_of(SPECIAL.begin_abstract), tok.id_of(SPECIAL.end_abstract)
    spans = [z if fmt == "codes" else z or ["<abs_5>"] for z in ABSTRACT_SPANS]  # only codes may have no span
    examples = [Example(e.question, e.steps, e.answer, meta={"abstract": z}) for e, z in zip(EXAMPLES, spans)]
    records, dropped = abstract.tokenize_abstract_examples(examples, tok, fmt, MAX_LEN, num_tokens=8, seed=0)
    prompts, _ = abstract.tokenize_abstract_prompts(examples, tok, fmt, MAX_LEN, open_span=True)
    assert dropped == 0
    for e, z, record, prompt in zip(examples, spans, records, prompts):
        x, y = old_prompt(tok, e), old_answer(tok, e)
        c = tok.encode("\n".join(e.steps) + "\n") if e.steps else []
        z_ids = [tok.id_of(t) for t in z]
        want = {
            "abstract": x + [begin, *z_ids, end] + y,
            "abstract_bottleneck": x + c + [begin, *z_ids, end] + y,
            "codes": x + ([begin, *z_ids, end] if z else []) + c + y,
        }[fmt]
        assert record.tokens.tolist() == want and record.prompt_len == len(x)
        with_chain = c if fmt == "abstract_bottleneck" else []
        assert prompt.tokens.tolist() == x + with_chain + [begin]
        assert prompt.segments.tolist() == [abstract.QUESTION] * len(x) + [abstract.COT] * len(with_chain) + [abstract.ABSTRACT]


def test_round_one_random_spans_draw_from_the_step_lengths_as_before(tok):
    records, _ = abstract.tokenize_abstract_examples(list(EXAMPLES), tok, "abstract", MAX_LEN, num_tokens=8, seed=3)
    begin, end = tok.id_of(SPECIAL.begin_abstract), tok.id_of(SPECIAL.end_abstract)
    for index, (e, record) in enumerate(zip(EXAMPLES, records)):
        rng = np.random.default_rng([3, index])  # the old draw: rand(1, max(1, n // 2)) per step
        names = []
        for step in e.steps:
            n = int(rng.integers(1, max(1, len(tok.encode(step + "\n")) // 2) + 1))
            names += [f"<abs_{i}>" for i in rng.integers(0, 8, size=n)]
        names = names or [f"<abs_{int(rng.integers(0, 8))}>"]
        tokens = record.tokens.tolist()
        assert tokens[tokens.index(begin) + 1 : tokens.index(end)] == [tok.id_of(t) for t in names]


def test_vq_code_step_spans_cover_each_step_of_the_cot_record(tok):
    cot, _ = pipeline.tokenize_examples(list(EXAMPLES), tok, "cot", MAX_LEN)
    for e, record in zip(EXAMPLES, cot):
        ids, spans = cot_step_ids(e, tok)
        assert ids == record.tokens.tolist()
        starts = [len(tok.encode(e.question + "\n" + steps_text(e.steps[:i]))) for i in range(len(e.steps) + 1)]
        assert spans == list(itertools.pairwise(starts))


# ----------------------------------------------------------------------------- recorded before the change


def layout_ids(tok) -> dict[str, object]:
    """Every layout of EXAMPLES (and CODED) as nested int lists, as the batches hold them."""

    def rows(array) -> list:
        return np.asarray(array).astype(int).tolist()

    out, examples = {}, list(EXAMPLES)
    for fmt in ("cot", "no_cot"):
        for prompt_only in (False, True):
            records, dropped = pipeline.tokenize_examples(examples, tok, fmt, MAX_LEN, prompt_only=prompt_only)
            out[f"text/{fmt}/prompt_only={prompt_only}"] = [
                [r.tokens.tolist(), rows(r.loss_mask), r.prompt_len, r.source_index] for r in records
            ] + [dropped]
        batch = pipeline.collate(pipeline.tokenize_examples(examples, tok, fmt, MAX_LEN)[0], pad_id=tok.pad_id, max_len=MAX_LEN)
        out[f"text/{fmt}/batch"] = [rows(batch["tokens"]), rows(batch["loss_mask"]), rows(batch["padding_mask"])]

    records, out["coconut/dropped"] = curriculum.tokenize_latent_examples(examples, tok, MAX_LEN)
    for cfg_name, cfg in (("c2", LatentConfig(mode="coconut", c_thought=2, max_latent_stage=2)),
                          ("c1_pad", LatentConfig(mode="coconut", c_thought=1, max_latent_stage=3, pad_latent_to_max=True))):
        for fitted in (False, True):
            widths = None if fitted else curriculum.batch_widths(records)
            for stages in ([0] * 4, [1] * 4, [2] * 4, [3] * 4, [4] * 4, [0, 1, 2, 3]):
                n_slots = curriculum.num_slots(max(stages), cfg)
                batch = curriculum.collate_latent(records, stages, tok, cfg, widths, n_slots, bucket=8)
                out[f"coconut/{cfg_name}/fitted={fitted}/stages={stages}"] = {k: rows(v) for k, v in sorted(batch.items())}

    cfg = LatentConfig(mode="switch", c_thought=2)
    spans = [switch.fixed_span(len(e.steps), 1, 2) for e in examples]
    records, out["switch/dropped"] = switch.tokenize_switch_examples(examples, tok, MAX_LEN, spans)
    max_span = max(b - a for a, b in (r.span for r in records))
    for fitted in (False, True):
        widths = None if fitted else switch.switch_widths(records)
        for stage in (0, 1, 2, 3):
            n_slots = switch.switch_num_slots(max_span, stage, cfg)
            batch = switch.collate_switch(records, stage, tok, cfg, widths, n_slots, bucket=8)
            out[f"switch/fitted={fitted}/stage={stage}"] = {k: rows(v) for k, v in sorted(batch.items())}
    seen = []
    switch.step_entropies(examples, tok, lambda t, m: (seen.append([rows(t), rows(m)]), np.zeros((*t.shape, 5)))[1],
                          batch_size=3)
    out["switch/entropy_inputs"] = seen

    for fmt in abstract.ABSTRACT_FORMATS:
        source = list(CODED if fmt == "codes" else EXAMPLES)
        records, dropped = abstract.tokenize_abstract_examples(source, tok, fmt, MAX_LEN, num_tokens=8, seed=3, max_tokens=5)
        out[f"abstract/{fmt}"] = [
            [r.tokens.tolist(), rows(r.loss_mask), r.segments.tolist(), r.prompt_len] for r in records
        ] + [dropped]
        for open_span in (False, True):
            records, skipped = abstract.tokenize_abstract_prompts(source, tok, fmt, MAX_LEN, open_span=open_span)
            out[f"abstract/{fmt}/prompts/open_span={open_span}"] = [
                [r.tokens.tolist(), r.segments.tolist(), r.prompt_len] for r in records
            ] + [skipped]

    out["codes/cot_step_ids"] = [list(cot_step_ids(e, tok)) for e in examples]
    return out


# sha256 (first 16 hex digits) of each layout's json, as the code before latent.data.parts built it
RECORDED = {
    "text/cot/prompt_only=False": "11ebbe0b0f713169",
    "text/cot/prompt_only=True": "d1110e867dc8a486",
    "text/cot/batch": "f1a0fd0b429bd4fd",
    "text/no_cot/prompt_only=False": "e3d19ecf1f015d5d",
    "text/no_cot/prompt_only=True": "d1110e867dc8a486",
    "text/no_cot/batch": "1dcde79d8f85deeb",
    "coconut/dropped": "5feceb66ffc86f38",
    "coconut/c2/fitted=False/stages=[0, 0, 0, 0]": "744fe0316e5d6903",
    "coconut/c2/fitted=False/stages=[1, 1, 1, 1]": "20ea08bb87414a6c",
    "coconut/c2/fitted=False/stages=[2, 2, 2, 2]": "bc728abda06182db",
    "coconut/c2/fitted=False/stages=[3, 3, 3, 3]": "9e71c6356a18091d",
    "coconut/c2/fitted=False/stages=[4, 4, 4, 4]": "9e71c6356a18091d",
    "coconut/c2/fitted=False/stages=[0, 1, 2, 3]": "31e02acdafd7e54d",
    "coconut/c2/fitted=True/stages=[0, 0, 0, 0]": "878cec46e967227f",
    "coconut/c2/fitted=True/stages=[1, 1, 1, 1]": "aa0b3224bde731bb",
    "coconut/c2/fitted=True/stages=[2, 2, 2, 2]": "ed690c49e1b7e0ef",
    "coconut/c2/fitted=True/stages=[3, 3, 3, 3]": "e0640779f553a532",
    "coconut/c2/fitted=True/stages=[4, 4, 4, 4]": "e0640779f553a532",
    "coconut/c2/fitted=True/stages=[0, 1, 2, 3]": "f213887f113b40a6",
    "coconut/c1_pad/fitted=False/stages=[0, 0, 0, 0]": "744fe0316e5d6903",
    "coconut/c1_pad/fitted=False/stages=[1, 1, 1, 1]": "d5f0aca038cb9b6d",
    "coconut/c1_pad/fitted=False/stages=[2, 2, 2, 2]": "bbdd769a38e5748c",
    "coconut/c1_pad/fitted=False/stages=[3, 3, 3, 3]": "fd6351a40efbe457",
    "coconut/c1_pad/fitted=False/stages=[4, 4, 4, 4]": "b3712ac472f89e27",
    "coconut/c1_pad/fitted=False/stages=[0, 1, 2, 3]": "351dc2242672c258",
    "coconut/c1_pad/fitted=True/stages=[0, 0, 0, 0]": "878cec46e967227f",
    "coconut/c1_pad/fitted=True/stages=[1, 1, 1, 1]": "16051c95774f8dcd",
    "coconut/c1_pad/fitted=True/stages=[2, 2, 2, 2]": "fdb3b5336b719c87",
    "coconut/c1_pad/fitted=True/stages=[3, 3, 3, 3]": "846ab0933a46eef8",
    "coconut/c1_pad/fitted=True/stages=[4, 4, 4, 4]": "a292d12afda2ccd8",
    "coconut/c1_pad/fitted=True/stages=[0, 1, 2, 3]": "ca55e19d6fee8dc6",
    "switch/dropped": "5feceb66ffc86f38",
    "switch/fitted=False/stage=0": "1d297d1e47139814",
    "switch/fitted=False/stage=1": "0c249ec6c5cd462c",
    "switch/fitted=False/stage=2": "61466cb8fae4d1eb",
    "switch/fitted=False/stage=3": "61466cb8fae4d1eb",
    "switch/fitted=True/stage=0": "fa89c21143a9ab31",
    "switch/fitted=True/stage=1": "73948565022116b3",
    "switch/fitted=True/stage=2": "86e84f00e5b6cd09",
    "switch/fitted=True/stage=3": "86e84f00e5b6cd09",
    "switch/entropy_inputs": "271d90500139139f",
    "abstract/abstract": "6a59d2b6697acb40",
    "abstract/abstract/prompts/open_span=False": "1ee6e77358f3cc1c",
    "abstract/abstract/prompts/open_span=True": "f3713f6b5760ea3e",
    "abstract/abstract_bottleneck": "323e88c805441a10",
    "abstract/abstract_bottleneck/prompts/open_span=False": "7b569852231e4e5f",
    "abstract/abstract_bottleneck/prompts/open_span=True": "a9ba1f45c148aa92",
    "abstract/codes": "7e9a2713a8f044d0",
    "abstract/codes/prompts/open_span=False": "1ee6e77358f3cc1c",
    "abstract/codes/prompts/open_span=True": "f3713f6b5760ea3e",
    "codes/cot_step_ids": "9e38ce71d30a2dfb",
}


def test_every_layout_is_the_one_recorded_before_parts(tok):
    # json turns the tuples of cot_step_ids' spans into lists, as it did when they were recorded
    digests = {
        name: hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
        for name, value in layout_ids(tok).items()
    }
    assert {k: v for k, v in digests.items() if v != RECORDED.get(k)} == {}
    assert digests.keys() == RECORDED.keys()
