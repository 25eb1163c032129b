"""eval.py --analysis intervene (latent.eval.interventions): the no-op is bit-equal, an answer that
reads one step is moved by intervening on that step only, the node vectors are the right rows for
a hand-made graph, Abstract-CoT swaps per span position, and the CLI end to end on a tiny run."""

from __future__ import annotations

import json
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from latent.data.parts import encode_parts
from latent.data.special_tokens import SPECIAL
from latent.data.tasks import Example, get_task
from latent.errors import ConfigError
from latent.eval import interventions as iv
from latent.methods.coconut import curriculum
from latent.models import presets
from latent.nn import Transformer
from latent.nn.recurrence import continuous_thought_forward
from tests.conftest import eval_cli, tiny_model_fields, tiny_run, word_tokenizer

# Tom -> wumpus -> yumpus (the target); Ann -> zumpus (the other option); wumpus -> rompus (off the path).
GRAPH = Example(
    question="Tom is a wumpus. Every wumpus is a yumpus. Ann is a zumpus. Every wumpus is a rompus. "
             "Is Tom a yumpus or zumpus?",
    steps=("Tom is a wumpus.", "Every wumpus is a yumpus."),
    answer="Tom is a yumpus.",
    meta={"idx_to_symbol": ["Tom", "Ann", "wumpus", "yumpus", "zumpus", "rompus"],
          "edges": [[0, 2], [2, 3], [1, 4], [2, 5]], "root": 0, "target": 3, "neg_target": 4},
)


def test_two_way_answer_and_the_nodes_of_a_hand_made_graph():
    tokenizer = word_tokenizer([GRAPH])
    answer = iv.two_way_answer(GRAPH, tokenizer)
    assert (answer.right_id, answer.wrong_id) == (tokenizer.id_of("yumpus"), tokenizer.id_of("zumpus"))
    assert tokenizer.encode("### Tom is a yumpus.")[answer.index] == answer.right_id

    embed_VxD = np.random.default_rng(0).normal(size=(tokenizer.vocab_size, 8)).astype(np.float32)
    slot_steps_BxK = np.asarray([[0, 1, -1], [1, -1, 0]])
    right, wrong, has_right, has_wrong = iv.node_inputs([GRAPH, GRAPH], slot_steps_BxK, embed_VxD, tokenizer,
                                                        seed=0, indices=[0, 1])
    row = lambda name: embed_VxD[tokenizer.id_of(name)]  # noqa: E731
    np.testing.assert_array_equal(right[0, 0], row("wumpus"))
    np.testing.assert_array_equal(right[0, 1], row("yumpus"))
    np.testing.assert_array_equal(right[1, 0], row("yumpus"))
    np.testing.assert_array_equal(has_right, [[True, True, False], [True, False, True]])
    np.testing.assert_array_equal(has_wrong, has_right)
    off_path = {tuple(row("zumpus")), tuple(row("rompus"))}  # never the root, a reached node or a person
    assert all(tuple(wrong[b, k]) in off_path for b, k in zip(*np.nonzero(has_wrong)))
    assert not right[0, 2].any() and not wrong[0, 2].any()

    class Pieces:  # writes every word as two-letter pieces: a name of several tokens
        ids: dict = {}

        def encode(self, text):
            return [self.ids.setdefault(w[i : i + 2], len(self.ids)) for w in text.split() for i in range(0, len(w), 2)]

    pieces = Pieces()
    vector = iv.node_vector(embed_VxD, "yumpus", pieces)
    np.testing.assert_allclose(vector, embed_VxD[[pieces.ids[p] for p in ("yu", "mp", "us")]].mean(0), rtol=1e-6)
    assert pieces.encode("a")[0] not in [pieces.ids[p] for p in ("yu", "mp", "us")]


def test_an_example_without_two_options_is_named():
    with pytest.raises(Exception, match="needs questions whose meta names them"):
        iv.two_way_answer(Example("q?", ("s.",), "a.", meta={"a": 1}), word_tokenizer([GRAPH]))


def one_slot_reader(thoughts_BxKxD, label_B, read_slot: int):
    """A measure whose answer reads slot `read_slot` only: the logit difference is label_b times
    the slot's input (after the replacement) along the first axis."""

    def measure(batch, slot_inputs_BxKxD, replace_BxK):
        used = np.where(replace_BxK[..., None], slot_inputs_BxKxD, thoughts_BxKxD)
        return used[:, read_slot, 0] * label_B, thoughts_BxKxD

    return measure


def test_only_the_step_the_answer_reads_moves_it():
    B, K, D, read = 40, 3, 4, 1
    rng = np.random.default_rng(0)
    label_B = np.where(np.arange(B) % 2 == 0, 1.0, -1.0)  # neighbours differ: a swap hands over the wrong sign
    thoughts = rng.normal(size=(B, K, D)).astype(np.float32)
    thoughts[:, read, 0] = label_B * (1 + rng.random(B))  # the read slot says the answer
    right, wrong = np.zeros((B, K, D), np.float32), np.zeros((B, K, D), np.float32)
    right[:, :, 0], wrong[:, :, 0] = label_B[:, None], -label_B[:, None]
    batch = {"latent_mask": np.ones((B, K), bool), "right": right, "wrong": wrong,
             "has_right": np.ones((B, K), bool), "has_wrong": np.ones((B, K), bool)}
    result = iv.intervene_latent(one_slot_reader(thoughts, label_B, read), [batch], K)
    rows = {(r["intervention"], r["step"]): r for r in result["rows"]}

    assert result["base"]["accuracy"] == 1.0 and result["noop_bit_equal"]
    depends = iv.depends_on(result["rows"], iv.LATENT_INTERVENTIONS)
    assert depends == {"zeros": [read], "noise": [read], "swap": [read], "right_node": [], "wrong_node": [read]}
    for kind in iv.LATENT_INTERVENTIONS:
        for step in (0, 2):
            assert rows[(kind, step)]["delta_logit_diff"] == 0.0 and rows[(kind, step)]["delta_accuracy"] == 0.0
        assert rows[(kind, iv.ALL)]["depends"] == (kind != "right_node")
    assert rows[("swap", read)]["accuracy"] == 0.0 and rows[("zeros", read)]["accuracy"] == 0.0
    assert rows[("right_node", read)]["accuracy"] == 1.0
    assert "swap: steps 1" in iv.summary_sentence("coconut", depends)


def one_slot_decoder(thoughts_BxKxD, label_B, read_slot: int):
    """A decode whose answer reads slot `read_slot` only: it names the right option where the
    slot's input (after the replacement) agrees in sign with label_b along the first axis."""

    def decode(batch, slot_inputs_BxKxD, replace_BxK):
        used = np.where(replace_BxK[..., None], slot_inputs_BxKxD, thoughts_BxKxD)
        right_B = used[:, read_slot, 0] * label_B > 0
        predictions = ["yumpus" if r else "zumpus" for r in right_B]
        texts = [f"Tom is a wumpus. ### Tom is a {p}." for p in predictions]
        return iv.Decoded(ids=[[int(r)] for r in right_B], texts=texts, predictions=predictions, correct_B=right_B,
                          well_formed_B=np.ones(len(right_B), bool), reopened_B=np.zeros(len(right_B), bool))

    return decode


def test_the_decoded_answer_moves_only_at_the_step_it_reads_where_teacher_forcing_cannot_tell():
    """SWITCH's case: the teacher-forced answer reads the gold step written after the span (right
    whatever the thoughts hold), the decoded answer reads slot 1; `depends` follows the decoded one."""
    B, K, D, read = 40, 3, 4, 1
    rng = np.random.default_rng(1)
    label_B = np.where(np.arange(B) % 2 == 0, 1.0, -1.0)
    thoughts = rng.normal(size=(B, K, D)).astype(np.float32)
    thoughts[:, read, 0] = label_B * (1 + rng.random(B))
    right, wrong = np.zeros((B, K, D), np.float32), np.zeros((B, K, D), np.float32)
    right[:, :, 0], wrong[:, :, 0] = label_B[:, None], -label_B[:, None]
    batch = {"latent_mask": np.ones((B, K), bool), "right": right, "wrong": wrong,
             "has_right": np.ones((B, K), bool), "has_wrong": np.ones((B, K), bool), "index": np.arange(B) + 100}
    written_answer = lambda b, x, r: (np.full(B, 14.3), thoughts)  # noqa: E731 - the gold step names the answer
    result = iv.intervene_latent(written_answer, [batch], K, decode=one_slot_decoder(thoughts, label_B, read))
    rows = {(r["intervention"], r["step"]): r for r in result["rows"]}

    assert result["noop_bit_equal"] and result["base"]["decoded_accuracy"] == 1.0 and result["base"]["accuracy"] == 1.0
    assert [d["index"] for d in result["base_decodings"]] == list(range(100, 100 + B))
    assert all(r["accuracy"] == 1.0 and not r["depends_teacher_forced"] for r in result["rows"])
    depends = iv.depends_on(result["rows"], iv.LATENT_INTERVENTIONS)
    assert depends == {"zeros": [read], "noise": [read], "swap": [read], "right_node": [], "wrong_node": [read]}
    for kind in iv.LATENT_INTERVENTIONS:
        for step in (0, 2):
            assert rows[(kind, step)]["delta_decoded_accuracy"] == 0.0 and rows[(kind, step)]["answer_changed"] == 0.0
    assert rows[("swap", read)]["decoded_accuracy"] == 0.0 and rows[("swap", read)]["answer_changed"] == 1.0
    assert rows[("right_node", read)]["decoded_accuracy"] == 1.0 and rows[("right_node", read)]["answer_changed"] == 0.0
    assert all(r["answer_changed"] == 0.0 for r in result["rows"] if r["intervention"] == iv.NOOP)
    assert "decoded accuracy drop" in iv.summary_sentence("switch", depends, decoded=True)


def test_judging_a_decoding_reads_the_answer_after_the_marker():
    tokenizer = word_tokenizer([GRAPH])
    tokenizer.add_special_tokens([SPECIAL.swi])
    encode = lambda text: tokenizer.encode(text) + [tokenizer.eos_id]  # noqa: E731
    rows = [encode("### Tom is a yumpus."), encode("### Tom is a zumpus."), encode("Tom is a yumpus."),
            encode("### Tom is a yumpus or zumpus.")[:-1] + tokenizer.encode("<swi>")]
    N = max(map(len, rows))
    tokens = np.full((4, N), tokenizer.pad_id, np.int32)
    for b, row in enumerate(rows):
        tokens[b, : len(row)] = row
    lengths = np.asarray([len(r) for r in rows])
    judged = iv.judge_decodings(tokens, lengths, [GRAPH] * 4, tokenizer, lambda p, e: p == e.answer,
                                reopen_id=tokenizer.id_of(SPECIAL.swi))
    assert judged.predictions[:2] == ["Tom is a yumpus.", "Tom is a zumpus."]
    np.testing.assert_array_equal(judged.correct_B, [True, False, True, False])  # no marker: all the text, as eval.py
    np.testing.assert_array_equal(judged.well_formed_B, [True, True, False, False])
    np.testing.assert_array_equal(judged.reopened_B, [False, False, False, True])


def tiny_coconut_batches(stage=2, n=6):
    examples = [e for e in get_task("prosqa_small").generate(40, seed=3) if len(e.steps) == 2][:n]
    tokenizer = word_tokenizer(examples)
    tokenizer.add_special_tokens([SPECIAL.bot, SPECIAL.eot, SPECIAL.latent])
    cfg = tiny_run("latent.mode=coconut", "latent.max_latent_stage=2")
    model = Transformer(presets.qwen3(**tiny_model_fields(vocab_size=tokenizer.vocab_size, max_seq_len=256)),
                        rngs=nnx.Rngs(0))
    records, _ = curriculum.tokenize_latent_examples(examples, tokenizer, 256)
    embed_VxD = np.asarray(model.embed[...])
    K, batches = iv.latent_batches(cfg, records, examples, tokenizer, embed_VxD, stage, batch_size=4)
    return model, K, batches, tokenizer


def test_the_no_op_leaves_the_outputs_bit_equal_on_a_real_model():
    model, K, batches, tokenizer = tiny_coconut_batches()
    assert K == 2 and [len(b["prefix"]) for b in batches] == [4, 2]
    graphdef, params = nnx.split(model)
    measure = iv.make_latent_measure(graphdef, K)
    device = lambda b: {k: b[k] for k in ("prefix", "prefix_mask", "latent_mask", "suffix", "suffix_mask",  # noqa: E731
                                          "position", "right_id", "wrong_id")}
    result = iv.intervene_latent(lambda b, x, r: measure(params, device(b), x, r), batches, K, kinds=("zeros",))
    assert result["noop_bit_equal"]
    own = [r for r in result["rows"] if r["intervention"] == iv.NOOP]
    assert len(own) == K + 1 and all(r["delta_logit_diff"] == 0.0 and r["delta_logit_diff_se"] == 0.0 for r in own)
    assert any(r["delta_logit_diff"] != 0.0 for r in result["rows"] if r["intervention"] == "zeros")

    # the whole suffix's logits, not only the measured difference, and the difference is read at
    # the position whose next token is the right option
    batch = {k: jnp.asarray(v) for k, v in device(batches[0]).items()}
    args = (model, batch["prefix"], batch["prefix_mask"], batch["latent_mask"].sum(1), batch["suffix"], batch["suffix_mask"])
    base = continuous_thought_forward(*args, max_latent=K)
    own_out = continuous_thought_forward(*args, max_latent=K, slot_inputs=base.slot_inputs,
                                         replace_slots=jnp.ones((4, K), bool))
    np.testing.assert_array_equal(np.asarray(own_out.logits), np.asarray(base.logits))
    suffix, position = np.asarray(batch["suffix"]), np.asarray(batch["position"])
    np.testing.assert_array_equal(suffix[np.arange(4), position + 1], batches[0]["right_id"])
    np.testing.assert_array_equal(tokenizer.decode(suffix[0, position[0] + 1 :][:1]).strip(),
                                  tokenizer.decode([batches[0]["right_id"][0]]).strip())


def test_decoding_after_the_span_is_the_engines_greedy_coconut_decoding():
    """The base decoding (teacher-forced to <eot>, then greedy over the cache) emits what the
    engine's Coconut decoding (policy fixed, each example's thoughts) emits for the same prompts;
    the no-op leaves every decoded token in place and zeroing the thoughts moves some."""
    from latent.infer.engine import make_generate

    model, K, batches, tokenizer = tiny_coconut_batches()
    graphdef, params = nnx.split(model)
    N = 12
    decode = iv.make_latent_decode(graphdef, K, 0, N, tokenizer.eos_id)
    generate = make_generate(graphdef, model.cfg, N, tokenizer.eos_id, tokenizer.pad_id, 0.0, 1.0, policy="fixed",
                             latent_steps=K, eot_id=tokenizer.id_of(SPECIAL.eot))
    keys = ("prefix", "prefix_mask", "latent_mask", "suffix", "head_len")
    for batch in batches:
        B, D = len(batch["prefix"]), model.cfg.d_model
        assert (batch["head_len"] == 1).all()  # the <eot> alone
        args = ({k: batch[k] for k in keys}, np.zeros((B, K, D), np.float32), np.zeros((B, K), bool))
        tokens, lengths = decode(params, *args)
        engine = generate(params, batch["prefix"], batch["prefix_mask"], jax.random.PRNGKey(0),
                          latent_steps_B=batch["latent_mask"].sum(1))
        np.testing.assert_array_equal(np.asarray(lengths), np.asarray(engine.lengths))
        for b in range(B):
            n = int(lengths[b])
            np.testing.assert_array_equal(np.asarray(tokens)[b, :n], np.asarray(engine.tokens)[b, :n])

    measure = iv.make_latent_measure(graphdef, K)
    device = lambda b: {k: b[k] for k in ("prefix", "prefix_mask", "latent_mask", "suffix", "suffix_mask",  # noqa: E731
                                          "position", "right_id", "wrong_id")}
    examples = get_task("prosqa_small").generate(40, seed=3)

    def decode_batch(batch, x, r):
        tokens, lengths = decode(params, {k: batch[k] for k in keys}, x, r)
        return iv.judge_decodings(tokens, lengths, [examples[i] for i in batch["index"]], tokenizer,
                                  lambda p, e: p == e.answer)

    result = iv.intervene_latent(lambda b, x, r: measure(params, device(b), x, r), batches, K, kinds=("zeros",),
                                 decode=decode_batch)
    assert result["noop_bit_equal"]
    assert all(r["answer_changed"] == 0.0 for r in result["rows"] if r["intervention"] == iv.NOOP)
    zeroed = [decode(params, {k: b[k] for k in keys}, np.zeros((len(b["prefix"]), K, model.cfg.d_model), np.float32),
                     np.asarray(b["latent_mask"], bool))[0] for b in batches]
    base = [decode(params, {k: b[k] for k in keys}, np.zeros((len(b["prefix"]), K, model.cfg.d_model), np.float32),
                   np.zeros((len(b["prefix"]), K), bool))[0] for b in batches]
    assert any(not np.array_equal(z, b) for z, b in zip(zeroed, base))  # the no-op check could fail


def test_the_decoding_feeds_the_suffix_through_the_span_closing_marker():
    """SWITCH at a partial stage writes span steps before </swi>: they are fed, not decoded; the
    first emitted token is the argmax after the example's `head_len` suffix tokens."""
    model, K, batches, tokenizer = tiny_coconut_batches()
    graphdef, params = nnx.split(model)
    batch = dict(batches[0])
    batch["head_len"] = np.asarray([1, 3, 2, 4], np.int32)
    assert (batch["suffix_mask"].sum(1) >= 5).all()
    decode = iv.make_latent_decode(graphdef, K, 3, 4, tokenizer.eos_id)
    B, D = 4, model.cfg.d_model
    tokens, lengths = decode(params, {k: batch[k] for k in ("prefix", "prefix_mask", "latent_mask", "suffix", "head_len")},
                             np.zeros((B, K, D), np.float32), np.zeros((B, K), bool))
    out = continuous_thought_forward(model, jnp.asarray(batch["prefix"]), jnp.asarray(batch["prefix_mask"]),
                                     jnp.asarray(batch["latent_mask"].sum(1)), jnp.asarray(batch["suffix"]),
                                     jnp.asarray(batch["suffix_mask"]), max_latent=K)
    first_B = np.asarray(out.logits)[np.arange(B), batch["head_len"] - 1].argmax(-1)
    np.testing.assert_array_equal(np.asarray(tokens)[:, 0], first_B)
    assert (np.asarray(lengths) >= 1).all()
    np.testing.assert_array_equal(iv.head_lengths(np.asarray([[5, 7, 9], [7, 5, 5]]), 7), [2, 1])


def test_abstract_swaps_move_the_answer_only_at_the_position_it_reads():
    examples = [e for e in get_task("prosqa_small").generate(12, seed=5)][:8]
    tokenizer = word_tokenizer(examples, num_abstract=8)
    cfg = tiny_run("task.format=abstract", "abstract.num_tokens=8")
    key = [f"<abs_{1 + i % 2}>" for i in range(len(examples))]  # what the answer reads: z[1]
    spans = [[f"<abs_{3 + i % 2}>", key[i]] + ([f"<abs_{5 + i % 2}>"] if i < 4 else []) for i in range(len(examples))]
    begin = tokenizer.id_of(SPECIAL.begin_abstract)

    question_of = {tuple(encode_parts(e, tokenizer).question): i for i, e in enumerate(examples)}

    def score(batch, position, right, wrong):
        """+1 where the span's second token is its own question's key, -1 elsewhere."""
        diffs = []
        for row, real in zip(batch["tokens"], batch["padding_mask"]):
            tokens = row[real]
            start = int(np.flatnonzero(tokens == begin)[0])
            key_of_question = key[question_of[tuple(tokens[:start])]]
            diffs.append(1.0 if tokenizer.decode([int(tokens[start + 2])]).strip() == key_of_question else -1.0)
        return np.asarray(diffs)

    result = iv.intervene_abstract(score, examples, spans, tokenizer, cfg, batch_size=3)
    rows = {(r["intervention"], r["step"]): r for r in result["rows"]}
    assert result["base"]["accuracy"] == 1.0 and result["noop_bit_equal"] and result["steps"] == 3
    assert rows[("swap", 1)]["accuracy"] == 0.0 and rows[("swap", 1)]["depends"]
    assert rows[("swap", iv.ALL)]["depends"] and rows[("swap", iv.ALL)]["changed"] == 8
    assert rows[("swap", 0)]["delta_accuracy"] == 0.0 and rows[("swap", 0)]["changed"] == 8
    assert rows[("swap", 2)]["n"] == 4 and rows[("swap", 2)]["delta_accuracy"] == 0.0  # only 4 spans reach it


def test_a_run_with_nothing_to_intervene_on_is_named():
    analysis = iv.InterventionAnalysis()
    run = types.SimpleNamespace(cfg=tiny_run())
    with pytest.raises(ConfigError, match="with neither"):
        analysis.standalone(run, [GRAPH, GRAPH], out=Path("unused.json"))
    with pytest.raises(ConfigError, match="no latent steps at its stage 0"):
        tiny_coconut_batches(stage=0)


@pytest.mark.slow
def test_eval_py_analysis_intervene_on_a_tiny_coconut_run(tmp_path, capsys):
    from latent.train.loop import train

    cfg = tiny_run("latent.mode=coconut", "latent.epochs_per_stage=1", "latent.max_latent_stage=2", "task.n_train=16",
                   "task.n_valid=8", "train.batch_size=8", "train.steps=5", "train.eval_every=1000")
    train(cfg, tmp_path, progress=False)  # 5 steps of 8 of 16 examples: stage 2
    capsys.readouterr()
    results = eval_cli("--workdir", str(tmp_path), "--analysis", "intervene", "--batch-size", "4")
    out = capsys.readouterr().out
    saved = json.loads((tmp_path / "intervene_valid.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert saved["method"] == "coconut" and saved["stage"] == 2 and saved["steps"] == 2
    assert saved["noop_bit_equal"] and saved["base"]["n"] == 8
    kinds = {(r["intervention"], r["step"]) for r in saved["rows"]}
    assert kinds == {(k, s) for k in (*iv.LATENT_INTERVENTIONS, iv.NOOP) for s in (0, 1, "all")}
    assert all(r["n"] == 8 for r in saved["rows"])
    png = tmp_path / "intervene_valid.png"
    assert saved["plot"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert saved["summary"] in out and "no-op bit-equal to base: True" in out
    assert "decoded accuracy drop" in saved["summary"] and saved["plot"]
    assert all(0.0 <= r["decoded_accuracy"] <= 1.0 and r["answer_changed"] == 0.0
               for r in saved["rows"] if r["intervention"] == iv.NOOP)

    # the base decoding is what eval.py decodes for the same examples at the run's stage
    decoded = eval_cli("--workdir", str(tmp_path), "--batch-size", "3", "--out", str(tmp_path / "decoded.json"))
    generated = {r["index"]: (r["generated"], r["correct"]) for r in decoded["records"]}
    assert len(saved["base_decodings"]) == 8
    for record in saved["base_decodings"]:
        assert (record["generated"], record["correct"]) == generated[record["index"]]
    assert saved["base"]["decoded_accuracy"] == decoded["accuracy"]
