"""Abstract-CoT sequences: an abstract span `z` stands in for (or sits after) the verbal chain.

    abstract             [x; z; y]       question "\\n" <beginabstract> <abs_i>* <endabstract> "### " answer <eos>
    abstract_bottleneck  [x; c; z; y]    question "\\n" steps... <beginabstract> <abs_i>* <endabstract> "### " answer <eos>
    codes                [x; z; c'; y]   question "\\n" <beginabstract> <abs_i>* <endabstract> steps[m:]... "### " answer <eos>
                                         (Token Assorted: the first m steps replaced by VQ code tokens,
                                         scripts/vq_codes.py; no span when m = 0)

Labels cover z (both delimiters included) and y only, never x or the verbal chain c (in
`codes` the remaining steps are labelled too: they are the text the model still writes). In the
bottleneck layout the positions that predict the answer may not attend to c
(`bottleneck_attention_mask`), so everything the answer learns from c must pass through z's
hidden states. Those positions are `<endabstract>` and the answer tokens: the `<endabstract>`
position predicts the answer's first token, so it is on the answer's side of the mask.

Each example's z comes from `example.meta["abstract"]` (a list of abstract token strings, or
one string of them, as a warm-up round writes it), or else is drawn at random as Abstract-CoT's
first round does: for each verbal step of n tokens, rand(1, max(1, n // 2)) tokens uniformly
from the abstract vocabulary, seeded by (seed, example index) so a resumed run draws the same,
and cut to abstract.max_tokens (the span length decoding allows).
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Sequence

import numpy as np

from latent.config import AbstractFormat, Config, ConfigError
from latent.data.parts import Parts, encode_parts
from latent.data.pipeline import Record
from latent.data.special_tokens import SPECIAL, abstract_tokens
from latent.data.tasks import DataError, Example

ABSTRACT_FORMATS = typing.get_args(AbstractFormat)
# segment ids per position (0 is padding)
PAD, QUESTION, COT, ABSTRACT, ANSWER = 0, 1, 2, 3, 4
_ABSTRACT_TOKEN = re.compile(r"<abs_\d+>")


def random_abstract(parts: Parts, num_tokens: int, rng: np.random.Generator) -> list[str]:
    """Round 1 of the warm-up: rand(1, max(1, |step| // 2)) random abstract tokens per step, |step|
    counting the tokens of the step and its newline."""
    names = abstract_tokens(num_tokens)
    out = []
    for step in parts.steps:
        n = int(rng.integers(1, max(1, len(step) // 2) + 1))
        out += [names[i] for i in rng.integers(0, num_tokens, size=n)]
    return out or [names[int(rng.integers(0, num_tokens))]]  # an example without steps still gets a span


_NUMERIC_STEP = re.compile(r"^[\d\s+*=()-]+$")
_PARENTHESISED = re.compile(r"\(([^()]*)\)")


def step_result(step: str) -> str | list[int]:
    """What a verbal step concludes: for a numeric step (digits and + * = ( ) - only) the digits of
    its last parenthesised group (a running total, as in the multiplication chains) or else of the
    whole step; for a worded step its last word ("Every wumpus is a yumpus." -> "yumpus")."""
    if _NUMERIC_STEP.match(step) and any(ch.isdigit() for ch in step):
        groups = _PARENTHESISED.findall(step)
        return [int(ch) for ch in (groups[-1] if groups else step) if ch.isdigit()]
    words = step.split()
    return words[-1].strip(".,;:!?").lower() if words else ""


def step_results(example: Example, *, aligned: bool = False) -> list[str | list[int]]:
    """What each verbal step of `example` concludes, as `abstract.round1=keyed` names it: for a
    multiplication example (meta holds its factors "a" and "b", latent.data.tasks.multiplication)
    the partial products a * b_j, unshifted, each zero-padded to len(a) + 1 digits and written in
    the example's digit order (one per step); else `step_result` of each step.

    `aligned` (least-significant digit first only): a * b_j shifted to its columns, j zeros in
    front, less the whole pairs of those zeros (always zero, so they name nothing): product j
    then starts at column 2 * (j // 2), and read two digits per token every product's token i
    covers the same two columns as every other's and as answer digits 2i' and 2i' + 1. The partial
    products, not the running totals the chain also writes: a z naming the totals (two digits per
    token) left a d=64 x 4 model's self-distilled run at 0-1.5% on 3 x 3 digits, one naming the
    partial products reached 92.5% in the same 20 minutes (docs/results/abstract_cot.md, "What the
    key names matters" and the "before" row of its recipe table)."""
    meta = example.meta
    if "a" in meta and "b" in meta:
        a, b, width = int(meta["a"]), int(meta["b"]), len(str(meta["a"])) + 1
        reverse = meta.get("reverse_digits", True)
        products = [str(a * int(d)).zfill(width) for d in reversed(str(b))]
        digits = [[int(ch) for ch in (p[::-1] if reverse else p)] for p in products]
        if aligned:
            if not reverse:
                raise ConfigError("abstract.key_layout=aligned needs least-significant-first digits (reverse_digits)")
            digits = [[0] * (j % 2) + d for j, d in enumerate(digits)]
        return digits
    return [step_result(step) for step in example.steps]


def keyed_words(examples: Sequence[Example], num_tokens: int, seed: int = 0) -> dict[str, str]:
    """The one-to-one map of `abstract.round1=keyed` from the distinct worded step results of
    `examples` (sorted) onto a seeded permutation of the abstract vocabulary."""
    words = sorted({r for e in examples for r in step_results(e) if isinstance(r, str)})
    if len(words) > num_tokens:
        raise ConfigError(
            f"abstract.round1=keyed: the steps conclude with {len(words)} distinct words (e.g. {words[:3]}), "
            f"more than abstract.num_tokens={num_tokens} tokens to name them one-to-one"
        )
    names = abstract_tokens(num_tokens)
    return {w: names[i] for w, i in zip(words, np.random.default_rng(seed).permutation(num_tokens))}


UNKEYED = "<unkeyed>"  # a worded result the key's examples never reached (matches no generated token)


def keyed_abstract(
    examples: Sequence[Example], num_tokens: int, max_tokens: int, seed: int = 0,
    *, key_examples: Sequence[Example] | None = None, aligned: bool = False,
) -> list[list[str]]:
    """An informative round-1 z (`abstract.round1=keyed`) in place of the random draw: each step's
    `step_results` named by abstract tokens, cut to `max_tokens`.

    Worded results: one token each, through `keyed_words` of `key_examples` (default: `examples`
    themselves; the training examples when keying a validation set to compare a model's spans with,
    `UNKEYED` for a result they lack). Numeric results: two digits per token, <abs_{10a+b}>, a
    trailing single digit <abs_{100+d}> (needs num_tokens >= 110; a task mixing both kinds of step
    shares tokens between them). `aligned`: multiplication's partial products in their columns
    (`step_results`)."""
    names = abstract_tokens(num_tokens)
    word_token = keyed_words(examples if key_examples is None else key_examples, num_tokens, seed)
    results = [step_results(e, aligned=aligned) for e in examples]
    if num_tokens < 110 and any(isinstance(r, list) for rs in results for r in rs):
        raise ConfigError(f"abstract.round1=keyed: numeric steps need abstract.num_tokens >= 110 (two digits per "
                         f"token, then 10 single digits); got {num_tokens}")
    spans = []
    for rs in results:
        span = []
        for r in rs:
            if isinstance(r, str):
                span.append(word_token.get(r, UNKEYED))
            else:
                span += [names[10 * a + b] for a, b in zip(r[0:-1:2], r[1::2])]
                span += [names[100 + r[-1]]] if len(r) % 2 else []
        spans.append(span[:max_tokens])
    return spans


def abstract_of(
    example: Example, index: int, parts: Parts, num_tokens: int, seed: int, max_tokens: int | None = None,
    *, allow_empty: bool = False,
) -> list[str]:
    """The example's abstract sequence: its own (meta["abstract"]) or a seeded random one (drawn
    from its `parts`' step lengths) cut to `max_tokens` (the decoding cap m_max, so training never
    shows a longer span)."""
    given = example.meta.get("abstract")
    if given is None:
        if allow_empty:
            raise ValueError(f"example {index}: task.format=codes needs meta['abstract'] (written by scripts/vq_codes.py)")
        return random_abstract(parts, num_tokens, np.random.default_rng([seed, index]))[:max_tokens]
    names = _ABSTRACT_TOKEN.findall(given) if isinstance(given, str) else list(given)
    allowed = set(abstract_tokens(num_tokens))
    bad = [t for t in names if t not in allowed]
    if bad or not (names or allow_empty):
        raise ValueError(
            f"example {index}: meta['abstract'] must list tokens <abs_0>..<abs_{num_tokens - 1}> "
            f"(abstract.num_tokens={num_tokens}); got {bad[:3] or 'none'}"
        )
    return names


def check_abstract_fields(examples: Sequence[Example], locations: Sequence[str], num_tokens: int) -> None:
    """A DataError naming the file, item (or line) and field of the first malformed `abstract`:
    it must be a list of abstract token strings, or one string of them, each one of
    <abs_0>..<abs_{num_tokens - 1}>. `locations[i]` says where examples[i] is ("data.json: item 3")."""
    allowed = set(abstract_tokens(num_tokens))
    for example, where in zip(examples, locations):
        given = example.meta.get("abstract")
        if given is None:
            continue
        if isinstance(given, str):
            names = _ABSTRACT_TOKEN.findall(given)
            stray = _ABSTRACT_TOKEN.sub(" ", given).split()
            if stray:
                raise DataError(f"{where}: field 'abstract' holds {stray[0]!r}, not an abstract token <abs_i>")
        elif isinstance(given, list):
            not_strings = [t for t in given if not isinstance(t, str)]
            if not_strings:
                raise DataError(f"{where}: field 'abstract' must be a list of strings like '<abs_3>'; "
                                f"it holds {not_strings[0]!r} ({type(not_strings[0]).__name__})")
            names = given
        else:
            raise DataError(f"{where}: field 'abstract' must be a list of abstract token strings (or one string "
                            f"of them); got {type(given).__name__}")
        unknown = [t for t in names if t not in allowed]
        if unknown:
            raise DataError(f"{where}: field 'abstract': unknown abstract token {unknown[0]!r} "
                            f"(abstract.num_tokens={num_tokens} allows <abs_0>..<abs_{num_tokens - 1}>)")


def _verbal_chain(parts: Parts, *, with_chain: bool) -> np.ndarray:
    """int32 [C]: the verbal chain c (every step, "\\n" each) if the layout has it, else empty."""
    return parts.chain() if with_chain else np.zeros(0, np.int32)


def tokenize_abstract_examples(
    examples: Sequence[Example], tokenizer, fmt: str, max_len: int, *, num_tokens: int, seed: int,
    max_tokens: int | None = None,
) -> tuple[list[Record], int]:
    """Records (with `segments`) in layout `fmt`; examples over `max_len` are dropped and counted."""
    if fmt not in ABSTRACT_FORMATS:
        raise ValueError(f"task.format={fmt!r} is not one of {ABSTRACT_FORMATS}")
    begin, end = tokenizer.id_of(SPECIAL.begin_abstract), tokenizer.id_of(SPECIAL.end_abstract)
    records, dropped = [], 0
    for index, example in enumerate(examples):
        parts = encode_parts(example, tokenizer)
        x, c, y = parts.question, _verbal_chain(parts, with_chain=fmt != "abstract"), parts.answer  # y ends with <eos>
        names = abstract_of(example, index, parts, num_tokens, seed, max_tokens, allow_empty=fmt == "codes")
        z_inner = [tokenizer.id_of(t) for t in names]
        if fmt == "codes":  # the codes stand for the first steps; the rest is written out
            z = [begin, *z_inner, end] if z_inner else []
            pieces = [(x, QUESTION, False), (z, ABSTRACT, True), (c, COT, True), (y, ANSWER, True)]
        else:
            pieces = [(x, QUESTION, False), (c, COT, False), ([begin, *z_inner], ABSTRACT, True), ([end, *y], ANSWER, True)]
        tokens = np.asarray([t for ids, _, _ in pieces for t in ids], np.int32)
        if len(tokens) > max_len:
            dropped += 1
            continue
        segments = np.concatenate([np.full(len(ids), seg, np.int8) for ids, seg, _ in pieces])
        loss_mask = np.concatenate([np.full(len(ids), labelled) for ids, _, labelled in pieces]).astype(bool)
        records.append(Record(tokens, loss_mask, prompt_len=len(x), source_index=index, segments=segments))
    return records, dropped


def bottleneck_attention_mask(segments_BxT):
    """bool [B, T, T]: False where an answer-side query (<endabstract> and after) would read a
    verbal-CoT key. Works on numpy and jax arrays alike; the model ANDs it with causal/padding."""
    answer_query_BxTx1 = (segments_BxT == ANSWER)[:, :, None]
    cot_key_Bx1xT = (segments_BxT == COT)[:, None, :]
    return ~(answer_query_BxTx1 & cot_key_Bx1xT)


def tokenize_abstract_prompts(
    examples: Sequence[Example], tokenizer, fmt: str, max_len: int, *, open_span: bool = False
) -> tuple[list[Record], int]:
    """Generation prompts: x (abstract), or x + the gold verbal chain c (abstract_bottleneck,
    with `segments` marking c for the engine to hide from the answer); `open_span` appends
    <beginabstract> so decoding starts inside the span. Prompts over `max_len` are skipped."""
    if fmt not in ABSTRACT_FORMATS:
        raise ValueError(f"task.format={fmt!r} is not one of {ABSTRACT_FORMATS}")
    begin = [tokenizer.id_of(SPECIAL.begin_abstract)] if open_span else []
    records, skipped = [], 0
    for index, example in enumerate(examples):
        parts = encode_parts(example, tokenizer)
        x, c = parts.question, _verbal_chain(parts, with_chain=fmt == "abstract_bottleneck")
        tokens = np.concatenate([x, c, np.asarray(begin, np.int32)])
        if len(tokens) > max_len:
            skipped += 1
            continue
        segments = np.asarray([QUESTION] * len(x) + [COT] * len(c) + [ABSTRACT] * len(begin), np.int8)
        records.append(Record(tokens, np.zeros(len(tokens), bool), len(tokens), index, segments))
    return records, skipped


def span_tokens(ids: Sequence[int], vocab, tokenizer, *, opened: bool = False) -> list[str]:
    """The abstract token strings of the first span in generated `ids` (from its start, or from
    the first id when the prompt `opened` it, up to <endabstract> or the end)."""
    inside, span = opened, []
    abstract_ids = set(vocab.ids)
    for i in ids:
        if not inside:
            inside = i == vocab.begin_id
        elif i == vocab.end_id:
            break
        elif i in abstract_ids:
            span.append(tokenizer.backend.id_to_token(int(i)))
    return span


def training_examples(cfg: Config):
    """The warm-up's training examples (every phase's questions and chains)."""
    from latent.data.splits import load_splits

    return load_splits(cfg.replace(task=dataclasses.replace(cfg.task, format="cot")))[0]


def keyed_spans(cfg: Config, examples, train_examples=None) -> list[list[str]]:
    """The z that the warm-up's key (`abstract.round1=keyed`, built from its training examples)
    gives each of `examples`: round 1's spans for the training examples, and for a validation
    split what a model that kept the key would write."""
    a = cfg.abstract
    train_examples = training_examples(cfg) if train_examples is None else train_examples
    return keyed_abstract(examples, a.num_tokens, a.max_tokens, cfg.train.seed, key_examples=train_examples,
                          aligned=a.key_layout == "aligned")
