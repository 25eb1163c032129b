"""Causal interventions (`eval.py --analysis intervene`): does the answer depend on latent step i?

Teacher-forced on the run's own layout at its checkpoint's curriculum stage (the batches a
Coconut or SWITCH run trains on: `question <bot> [thoughts] <eot> rest`, SWITCH `question steps
<swi> [thoughts] </swi> rest`), each latent step i alone, then all steps at once ("all"), has its
thought (the slot's input embedding, latent.nn.recurrence `slot_inputs`) replaced by

  zeros       the zero vector;
  noise       Gaussian noise rescaled to the replaced thought's norm (seeded);
  swap        another example's thought at the same step (the next example of the batch that has
              that step: a fixed cyclic derangement);
  right_node  the input embedding of the node the gold chain reaches at that step (slot j stands
              for step j // c, SWITCH's counted from its span's first step): the mean of the
              input embeddings of the node name's tokens as a statement writes it ("... is a
              NAME": the tokens of `a NAME` after those of `a`; one token under a word-level
              tokenizer);
  wrong_node  likewise for a concept of the same graph off the gold path (not the root, not a
              node a step reaches), drawn per example and step with a fixed seed;
  own         the slot's own input: a no-op, which must leave every measured number bit-equal
              to the base (`noop_bit_equal` in the result);

and the recurrence goes on from what the replaced slot computes. The answer is measured as a
two-way choice between the question's two options (ProsQA, ProntoQA: meta `target` and
`neg_target`): the logit of the right answer's first token that differs from the wrong answer's
(the answer text with the target's name replaced by the other option's) minus the wrong one's,
at the position that predicts it, teacher-forced; accuracy is the share with a positive
difference. Each row reports accuracy and mean logit difference with their standard errors,
and their change from the base on the same examples (paired) with its standard error; a row
counts the examples that have that step (and, for the node rows, a node at it).

Abstract-CoT runs (task.format=abstract, abstract_bottleneck) decode their own z greedily from
each prompt, then score [x; z; y] teacher-forced with z swapped between questions (the next
question's z, a cyclic derangement as in `chain_leak`): the whole span ("all"), and each span
position p alone (examples whose z has a position p, paired among themselves); `changed` says
how many swaps changed a token at all (a collapsed codebook changes none).

Latent runs are also decoded (the headline measure): after the (possibly replaced) slots the
suffix is teacher-forced only through the span's closing marker (`<eot>`; SWITCH: the span's
still-written steps at a partial stage, then `</swi>`), then the model decodes greedily from that
KV cache up to eval.max_new_tokens tokens or EOS, one token per step as the engine's greedy text
mode (latent.infer.engine) does; on the un-intervened slots this is what `eval.py` decodes for a
Coconut run at its stage. After the span the decoding stays in text mode: a `<swi>` a SWITCH
model emits there is fed as a token, not a new latent span, and counted (`reopened`). The
decoded text's answer (after the last "###", latent.data.tasks.extract_answer) is judged by the
run's scorer: per row the decoded accuracy, its paired change from the un-intervened decoding,
how often the decoded answer changed (`answer_changed`), and how many decodings still end in a
well-formed answer (`well_formed`: a "###" answer naming exactly one of the two options).

"The answer depends on step i" (`depends`, the summary sentence): the intervention lowers the
accuracy by more than DEPENDS_SE standard errors of the paired change: the decoded accuracy
where the run was decoded (latent runs), else the teacher-forced one (`depends_teacher_forced`
keeps that test on every row).

Teacher-forced, written steps after the latent span are the gold text: a run whose later
written steps name the answer (a SWITCH span that ends before the last step) answers from them
whatever its thoughts hold, which is why the decoded measure leads.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from latent.data.parts import encode_parts
from latent.data.pipeline import collate
from latent.data.special_tokens import SPECIAL
from latent.data.tasks import DataError, Example, extract_answer, normalize_answer
from latent.data.tasks.formats import ANSWER_MARKER, answer_text
from latent.errors import ConfigError
from latent.eval import states
from latent.eval.analyses import Analysis
from latent.eval.chains import reached_node
from latent.eval.figures import save_png, warn_not_drawn
from latent.infer.engine import emitted_ids
from latent.nn.recurrence import continuous_thought_forward

LATENT_INTERVENTIONS = ("zeros", "noise", "swap", "right_node", "wrong_node")
NOOP = "own"
ABSTRACT_INTERVENTIONS = ("swap",)
ALL = "all"  # the step label of the rows that replace every step at once
DEPENDS_SE = 2.0  # an accuracy drop larger than this many standard errors: the answer depends on the step
NODE_EMBEDDING = "mean of the input embeddings of the node name's tokens as written in a statement ('... is a NAME')"


# ----------------------------------------------------------------------------- the two-way answer


@dataclasses.dataclass(frozen=True)
class TwoWayAnswer:
    """Where an answer's two options part: `index` into the answer's tokens (parts.answer, after
    "### "), and the right and wrong option's token there."""

    index: int
    right_id: int
    wrong_id: int


def wrong_answer_text(example: Example) -> str:
    """The answer with the target's name replaced by the other option's (its last occurrence)."""
    meta = example.meta
    if not all(k in meta for k in ("idx_to_symbol", "target", "neg_target")):
        raise DataError(
            "--analysis intervene measures the answer as a choice between two options: it needs questions whose "
            "meta names them (idx_to_symbol, target, neg_target: ProsQA, ProntoQA); this example has meta keys "
            f"{sorted(meta)}"
        )
    names = meta["idx_to_symbol"]
    right, wrong = names[meta["target"]], names[meta["neg_target"]]
    head, found, tail = example.answer.rpartition(right)
    if not found:
        raise DataError(f"the answer {example.answer!r} does not name its target {right!r}")
    return head + wrong + tail


def two_way_answer(example: Example, tokenizer) -> TwoWayAnswer:
    """The first token where the right answer's ids and the wrong answer's part."""
    right_ids = tokenizer.encode(answer_text(example))
    wrong_ids = tokenizer.encode(answer_text(dataclasses.replace(example, answer=wrong_answer_text(example))))
    for index, (r, w) in enumerate(zip(right_ids, wrong_ids)):
        if r != w:
            return TwoWayAnswer(index, int(r), int(w))
    raise DataError(f"the two options of {example.answer!r} tokenize alike: no token tells them apart")


def logit_difference(logits_BxTxV, position_B, right_B, wrong_B):
    """float32 [B]: logits[b, position_b, right_b] - logits[b, position_b, wrong_b]."""
    at_BxV = jnp.take_along_axis(logits_BxTxV, position_B[:, None, None], axis=1)[:, 0]
    pick = lambda ids_B: jnp.take_along_axis(at_BxV, ids_B[:, None], axis=1)[:, 0]  # noqa: E731
    return (pick(right_B) - pick(wrong_B)).astype(jnp.float32)


# ----------------------------------------------------------------------------- nodes of the chain


def step_nodes(example: Example, seed: int, index: int) -> list[tuple[str, str | None]]:
    """Per gold step: (the node it reaches, a concept of the same graph off the gold path, drawn
    with a generator seeded by (seed, index, step); None when the graph has none)."""
    meta = example.meta
    names = list(meta["idx_to_symbol"])
    reached = [reached_node(s) for s in example.steps]
    on_path = {names[meta["root"]], *reached}
    concepts = sorted({child for _, child in meta.get("edges", [])})  # persons have no parent
    off_path = [names[i] for i in concepts if names[i] not in on_path]
    out = []
    for step, node in enumerate(reached):
        wrong = off_path[int(np.random.default_rng([seed, index, step]).integers(len(off_path)))] if off_path else None
        out.append((node, wrong))
    return out


def name_token_ids(name: str, tokenizer) -> list[int]:
    """The ids of `name` as a statement writes it after "a " (so a byte-level BPE keeps its
    leading-space form); the name alone if the tokenizer does not split there."""
    lead, written = tokenizer.encode("a"), tokenizer.encode(f"a {name}")
    ids = written[len(lead):] if written[: len(lead)] == lead and len(written) > len(lead) else tokenizer.encode(name)
    if not ids:
        raise DataError(f"node name {name!r} encodes to no tokens")
    return ids


def node_vector(embed_VxD: np.ndarray, name: str, tokenizer) -> np.ndarray:
    """float32 [D]: the mean input embedding of the name's tokens (NODE_EMBEDDING)."""
    return np.asarray(embed_VxD)[name_token_ids(name, tokenizer)].mean(axis=0).astype(np.float32)


def node_inputs(examples: Sequence[Example], slot_steps_BxK: np.ndarray, embed_VxD, tokenizer, seed: int,
                indices: Sequence[int]):
    """(right [B, K, D], wrong [B, K, D], has_right [B, K], has_wrong [B, K]): slot k of example b
    stands for gold step slot_steps_BxK[b, k] (-1: none)."""
    B, K = slot_steps_BxK.shape
    D = np.shape(embed_VxD)[1]
    right, wrong = np.zeros((B, K, D), np.float32), np.zeros((B, K, D), np.float32)
    has_right, has_wrong = np.zeros((B, K), bool), np.zeros((B, K), bool)
    cache: dict[str, np.ndarray] = {}

    def vector(name):
        if name not in cache:
            cache[name] = node_vector(embed_VxD, name, tokenizer)
        return cache[name]

    for b, (example, index) in enumerate(zip(examples, indices)):
        nodes = step_nodes(example, seed, index)
        for k in range(K):
            step = int(slot_steps_BxK[b, k])
            if 0 <= step < len(nodes):
                right_name, wrong_name = nodes[step]
                if right_name:
                    right[b, k], has_right[b, k] = vector(right_name), True
                if wrong_name is not None:
                    wrong[b, k], has_wrong[b, k] = vector(wrong_name), True
    return right, wrong, has_right, has_wrong


# ----------------------------------------------------------------------------- statistics


def _mean_se(values) -> tuple[float, float | None]:
    values = np.asarray(values, np.float64)
    if len(values) == 0:
        return float("nan"), None
    se = float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else None
    return float(np.mean(values)), se


def row_stats(base_diff, diff) -> dict:
    """Accuracy and logit difference of `diff` (the intervened run's), their standard errors, and
    the paired change from `base_diff` (the same examples without the intervention)."""
    base_diff, diff = np.asarray(base_diff, np.float64), np.asarray(diff, np.float64)
    right, base_right = (diff > 0).astype(np.float64), (base_diff > 0).astype(np.float64)
    accuracy, accuracy_se = _mean_se(right)
    logit, logit_se = _mean_se(diff)
    d_acc, d_acc_se = _mean_se(right - base_right)
    d_logit, d_logit_se = _mean_se(diff - base_diff)
    depends = drops(d_acc, d_acc_se, len(diff))
    return {"n": int(len(diff)), "accuracy": accuracy, "accuracy_se": accuracy_se, "logit_diff": logit,
            "logit_diff_se": logit_se, "delta_accuracy": d_acc, "delta_accuracy_se": d_acc_se,
            "delta_logit_diff": d_logit, "delta_logit_diff_se": d_logit_se, "depends": depends}


def drops(delta: float, delta_se: float | None, n: int) -> bool:
    """A paired accuracy change is a drop of more than DEPENDS_SE standard errors."""
    return bool(n > 1 and delta < 0 and -delta > DEPENDS_SE * (delta_se or 0.0))


@dataclasses.dataclass(frozen=True)
class Decoded:
    """One batch's greedy decodings after the latent span, judged (`judge_decodings`)."""

    ids: list[list[int]]  # emitted token ids per example, EOS left out
    texts: list[str]
    predictions: list[str]  # the answer after the last "###" (extract_answer)
    correct_B: np.ndarray  # bool: the run's scorer accepts the prediction
    well_formed_B: np.ndarray  # bool: a "###" answer naming exactly one of the two options
    reopened_B: np.ndarray  # bool: emitted <swi> (another span, decoded as text)


DECODED_FIELDS = ("base_correct", "correct", "changed", "well_formed", "reopened")


def decoded_row_stats(columns: dict) -> dict:
    """The decoded measures of one row from its per-example columns (DECODED_FIELDS): decoded
    accuracy, its paired change from the un-intervened decoding, the share whose decoded answer
    changed, the share still well-formed (each with its standard error), and the reopened count."""
    correct, base = (np.asarray(columns[k], np.float64) for k in ("correct", "base_correct"))
    accuracy, accuracy_se = _mean_se(correct)
    delta, delta_se = _mean_se(correct - base)
    changed, changed_se = _mean_se(np.asarray(columns["changed"], np.float64))
    well_formed, well_formed_se = _mean_se(np.asarray(columns["well_formed"], np.float64))
    return {"decoded_accuracy": accuracy, "decoded_accuracy_se": accuracy_se, "delta_decoded_accuracy": delta,
            "delta_decoded_accuracy_se": delta_se, "answer_changed": changed, "answer_changed_se": changed_se,
            "well_formed": well_formed, "well_formed_se": well_formed_se,
            "reopened": int(np.sum(columns["reopened"])), "depends": drops(delta, delta_se, len(correct))}


def base_stats(base_diff) -> dict:
    stats = row_stats(base_diff, base_diff)
    return {k: stats[k] for k in ("n", "accuracy", "accuracy_se", "logit_diff", "logit_diff_se")}


def decoded_columns(base: Decoded, decoded: Decoded) -> dict:
    """Per example: DECODED_FIELDS of `decoded` against the un-intervened `base`."""
    changed = [normalize_answer(a) != normalize_answer(b) for a, b in zip(decoded.predictions, base.predictions)]
    return {"base_correct": base.correct_B, "correct": decoded.correct_B, "changed": np.asarray(changed, bool),
            "well_formed": decoded.well_formed_B, "reopened": decoded.reopened_B}


class Rows:
    """Collects, per (intervention, step), the base and intervened logit differences of the
    examples the row covers (and, when decoded, their decoded columns), over batches."""

    def __init__(self):
        self.pairs: dict[tuple[str, object], tuple[list, list]] = {}
        self.extra: dict[tuple[str, object], dict] = {}
        self.decoded: dict[tuple[str, object], dict] = {}

    def add(self, intervention: str, step, base_B, diff_B, covered_B, *, decoded: dict | None = None,
            **counts) -> None:
        base, diff = self.pairs.setdefault((intervention, step), ([], []))
        covered_B = np.asarray(covered_B, bool)
        base.extend(np.asarray(base_B)[covered_B].tolist())
        diff.extend(np.asarray(diff_B)[covered_B].tolist())
        extra = self.extra.setdefault((intervention, step), {})
        for key, value in counts.items():
            extra[key] = extra.get(key, 0) + int(value)
        if decoded is not None:
            columns = self.decoded.setdefault((intervention, step), {k: [] for k in DECODED_FIELDS})
            for key in DECODED_FIELDS:
                columns[key].extend(np.asarray(decoded[key])[covered_B].tolist())

    def report(self) -> list[dict]:
        out = []
        for key in self.pairs:
            row = {"intervention": key[0], "step": key[1]} | row_stats(*self.pairs[key]) | self.extra[key]
            if key in self.decoded:  # decoded: the headline, and what `depends` reads
                row = row | {"depends_teacher_forced": row["depends"]} | decoded_row_stats(self.decoded[key])
            out.append(row)
        return out


def depends_on(rows: Sequence[dict], kinds: Sequence[str]) -> dict[str, list]:
    """Per intervention, the single steps whose rows say the answer depends on them."""
    return {kind: [r["step"] for r in rows if r["intervention"] == kind and r["step"] != ALL and r["depends"]]
            for kind in kinds}


def summary_sentence(method: str, depends: dict[str, list], unit: str = "step", decoded: bool = False) -> str:
    named = {kind: steps for kind, steps in depends.items() if steps}
    rule = f"{'decoded ' if decoded else ''}accuracy drop > {DEPENDS_SE:g} standard errors"
    if not named:
        return f"{method}: no single {unit} moves the answer ({rule}) under any intervention."
    parts = "; ".join(f"{kind}: {unit}s {', '.join(map(str, steps))}" for kind, steps in named.items())
    return f"{method}: the answer depends on {parts} ({rule})."


# ----------------------------------------------------------------------------- latent steps


def derangement(eligible_B) -> np.ndarray:
    """int [B]: each eligible example's donor, the next eligible one (cyclic); itself otherwise
    (and when fewer than two are eligible, so nothing moves)."""
    eligible_B = np.asarray(eligible_B, bool)
    donor_B = np.arange(len(eligible_B))
    chosen = np.flatnonzero(eligible_B)
    if len(chosen) > 1:
        donor_B[chosen] = np.roll(chosen, -1)
    return donor_B


def replacement(kind: str, step, batch: dict, thoughts_BxKxD: np.ndarray, rng: np.random.Generator):
    """(vectors [B, K, D], replace [B, K], covered [B]) for intervention `kind` at `step` (an
    int, or ALL) of one batch; `thoughts` are the base run's slot inputs."""
    real_BxK = np.asarray(batch["latent_mask"], bool)
    B, K, D = thoughts_BxKxD.shape
    chosen_K = np.ones(K, bool) if step == ALL else np.arange(K) == step
    if kind == "zeros":
        return np.zeros_like(thoughts_BxKxD), real_BxK & chosen_K, (real_BxK & chosen_K).any(1)
    if kind == NOOP:
        return thoughts_BxKxD, real_BxK & chosen_K, (real_BxK & chosen_K).any(1)
    if kind == "noise":
        noise = rng.standard_normal(thoughts_BxKxD.shape).astype(np.float32)
        scale = np.linalg.norm(thoughts_BxKxD, axis=-1, keepdims=True) / np.linalg.norm(noise, axis=-1, keepdims=True)
        return noise * scale, real_BxK & chosen_K, (real_BxK & chosen_K).any(1)
    if kind == "swap":
        eligible_B = real_BxK.any(1) if step == ALL else real_BxK[:, step]
        donor_B = derangement(eligible_B)
        moved_B = donor_B != np.arange(B)
        replace = real_BxK & real_BxK[donor_B] & chosen_K & moved_B[:, None]
        return thoughts_BxKxD[donor_B], replace, replace.any(1)
    if kind in ("right_node", "wrong_node"):
        has_BxK = batch["has_right" if kind == "right_node" else "has_wrong"] & real_BxK & chosen_K
        return batch["right" if kind == "right_node" else "wrong"], has_BxK, has_BxK.any(1)
    raise ValueError(f"unknown intervention {kind!r}")


def make_latent_measure(graphdef, K: int):
    """measure(params, batch, slot_inputs [B, K, D], replace [B, K]) -> (logit difference [B], the
    slot inputs the run used [B, K, D]): one jitted teacher-forced latent forward."""

    @jax.jit
    def measure(params, batch, slot_inputs_BxKxD, replace_BxK):
        model = nnx.merge(graphdef, params)
        out = continuous_thought_forward(
            model, batch["prefix"], batch["prefix_mask"], batch["latent_mask"].sum(1), batch["suffix"],
            batch["suffix_mask"], max_latent=K, slot_inputs=slot_inputs_BxKxD, replace_slots=replace_BxK,
        )
        return logit_difference(out.logits, batch["position"], batch["right_id"], batch["wrong_id"]), out.slot_inputs

    return measure


def make_latent_decode(graphdef, K: int, forced: int, max_new_tokens: int, eos_id: int):
    """decode(params, batch, slot_inputs [B, K, D], replace [B, K]) -> (tokens [B, N], lengths [B]):
    the recurrence over the (possibly replaced) slots with only the suffix's first token, then one
    token per step over the KV cache: the next suffix token while the example's `head_len` (its
    suffix through the span's closing marker) is not fed yet, then the greedy (argmax) token,
    emitted, until EOS or `max_new_tokens` (Generation.tokens/lengths of the engine: EOS counted
    in the length, pad after it). `forced`: the most suffix tokens fed after the first (static)."""

    @jax.jit
    def decode(params, batch, slot_inputs_BxKxD, replace_BxK):
        model = nnx.merge(graphdef, params)
        prefix_BxP, suffix_BxS, head_len_B = batch["prefix"], batch["suffix"], batch["head_len"]
        B, P = prefix_BxP.shape
        out = continuous_thought_forward(
            model, prefix_BxP, batch["prefix_mask"], batch["latent_mask"].sum(1), suffix_BxS[:, :1],
            jnp.ones((B, 1), bool), max_latent=K, slot_inputs=slot_inputs_BxKxD, replace_slots=replace_BxK,
            cache_len=P + K + 1 + forced + max_new_tokens,
        )
        rows_B = jnp.arange(B)

        def keep_going(state):
            step, _, _, _, _, done_B = state
            return (step < forced + max_new_tokens) & ~jnp.all(done_B)

        def advance(state):
            step, logits_BxV, cache, tokens_BxN, lengths_B, done_B = state
            feeds_suffix_B = step + 1 < head_len_B  # still inside the span: the gold text
            suffix_token_B = suffix_BxS[:, jnp.minimum(step + 1, suffix_BxS.shape[1] - 1)]
            greedy_B = jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)  # the engine's temperature-0 draw
            token_B = jnp.where(feeds_suffix_B, suffix_token_B, greedy_B)
            emit_B = ~feeds_suffix_B & ~done_B
            write_at_B = jnp.where(emit_B, lengths_B, max_new_tokens)  # out of range: dropped
            tokens_BxN = tokens_BxN.at[rows_B, write_at_B].set(token_B, mode="drop")
            lengths_B = lengths_B + emit_B
            done_B = done_B | (emit_B & (token_B == eos_id)) | (lengths_B >= max_new_tokens)
            step_out = model(token_B[:, None], cache=cache)
            return step + 1, step_out.logits[:, -1], step_out.cache, tokens_BxN, lengths_B, done_B

        zeros_B = jnp.zeros((B,), jnp.int32)
        state = (jnp.zeros((), jnp.int32), out.logits[:, -1], out.cache, jnp.full((B, max_new_tokens), eos_id, jnp.int32),
                 zeros_B, jnp.zeros((B,), bool))
        _, _, _, tokens_BxN, lengths_B, _ = jax.lax.while_loop(keep_going, advance, state)
        return tokens_BxN, lengths_B

    return decode


def names_one_option(prediction: str, example: Example) -> bool:
    """The prediction names exactly one of the question's two options (meta target, neg_target)."""
    names = example.meta["idx_to_symbol"]
    options = (names[example.meta["target"]], names[example.meta["neg_target"]])
    return sum(bool(re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", prediction, re.IGNORECASE))
               for o in options) == 1


def judge_decodings(tokens_BxN, lengths_B, examples: Sequence[Example], tokenizer, score: Callable,
                    reopen_id: int | None = None) -> Decoded:
    """Each decoding read as `eval.py` reads it (emitted ids up to EOS, decoded, the answer after the
    last "###") and judged by `score(prediction, example)`."""
    tokens_BxN, lengths_B = np.asarray(tokens_BxN), np.asarray(lengths_B)
    ids = [emitted_ids(tokens_BxN[b], int(lengths_B[b]), tokenizer.eos_id) for b in range(len(examples))]
    texts = [tokenizer.decode(i) for i in ids]
    predictions = [extract_answer(t) for t in texts]
    return Decoded(
        ids=ids, texts=texts, predictions=predictions,
        correct_B=np.asarray([bool(score(p, e)) for p, e in zip(predictions, examples)], bool),
        well_formed_B=np.asarray([ANSWER_MARKER in t and names_one_option(p, e)
                                  for t, p, e in zip(texts, predictions, examples)], bool),
        reopened_B=np.asarray([reopen_id is not None and reopen_id in i for i in ids], bool),
    )


def intervene_latent(measure: Callable, batches: Sequence[dict], K: int, *, seed: int = 0,
                     kinds: Sequence[str] = LATENT_INTERVENTIONS, progress: bool = False,
                     decode: Callable | None = None) -> dict:
    """Every intervention of `kinds` (and the no-op) at each of the K steps and at all of them, on
    `batches` (latent batches with position/right_id/wrong_id and right/wrong/has_right/has_wrong,
    `latent_batches`); measure(batch, slot_inputs, replace) -> (logit difference [B], slot inputs
    used); decode(batch, slot_inputs, replace) -> Decoded (optional: the decoded measures).
    Returns base (and base_decoded), rows, noop_bit_equal (the no-op's logit differences and,
    decoded, its decoded token ids equal the base's) and mean norms of the thoughts and node vectors."""
    rows, base_diffs, noop_equal = Rows(), [], True
    thought_norms, node_norms = [], []
    base_decoded: list[Decoded] = []
    base_indices: list[int] = []  # each decoded example's index in the examples (batch "index")
    steps = [*range(K), ALL]
    bar = tqdm(total=len(batches) * (len(kinds) + 1) * len(steps), desc="intervene", leave=False, disable=not progress)
    for number, batch in enumerate(batches):
        rng = np.random.default_rng([seed, number])
        B, D = len(batch["latent_mask"]), batch["right"].shape[-1]
        base_B, thoughts_BxKxD = (np.asarray(x) for x in measure(batch, np.zeros((B, K, D), np.float32),
                                                                 np.zeros((B, K), bool)))
        base_diffs.extend(base_B.tolist())
        base_text = decode(batch, np.zeros((B, K, D), np.float32), np.zeros((B, K), bool)) if decode else None
        if base_text is not None:
            base_decoded.append(base_text)
            base_indices.extend(np.asarray(batch.get("index", np.arange(B) + len(base_indices))).tolist())
        real_BxK = np.asarray(batch["latent_mask"], bool)
        thought_norms.extend(np.linalg.norm(thoughts_BxKxD, axis=-1)[real_BxK].tolist())
        node_norms.extend(np.linalg.norm(batch["right"], axis=-1)[batch["has_right"] & real_BxK].tolist())
        for kind in (NOOP, *kinds):
            for step in steps:
                vectors, replace, covered = replacement(kind, step, batch, thoughts_BxKxD, rng)
                diff_B = np.asarray(measure(batch, vectors, replace)[0])
                text = decode(batch, vectors, replace) if decode else None
                if kind == NOOP:
                    noop_equal &= bool(np.array_equal(diff_B, base_B))
                    noop_equal &= text is None or text.ids == base_text.ids
                rows.add(kind, step, base_B, diff_B, covered,
                         decoded=None if text is None else decoded_columns(base_text, text))
                bar.update()
    bar.close()
    result = {"base": base_stats(base_diffs), "rows": rows.report(), "noop_bit_equal": noop_equal,
              "mean_thought_norm": _mean_se(thought_norms)[0], "mean_node_embedding_norm": _mean_se(node_norms)[0]}
    if decode:
        result["base"] |= base_decoded_stats(base_decoded)
        result["base_decodings"] = [
            {"index": int(i), "generated": t, "prediction": p, "correct": bool(c)}
            for i, (t, p, c) in zip(base_indices, ((t, p, c) for d in base_decoded
                                                    for t, p, c in zip(d.texts, d.predictions, d.correct_B)))]
    return result


def base_decoded_stats(decoded: Sequence[Decoded]) -> dict:
    """The un-intervened decodings' accuracy and well-formed share (with standard errors) and reopened count."""
    correct = np.concatenate([d.correct_B for d in decoded]) if decoded else np.zeros(0, bool)
    well_formed = np.concatenate([d.well_formed_B for d in decoded]) if decoded else np.zeros(0, bool)
    accuracy, accuracy_se = _mean_se(correct.astype(np.float64))
    formed, formed_se = _mean_se(well_formed.astype(np.float64))
    return {"decoded_accuracy": accuracy, "decoded_accuracy_se": accuracy_se, "well_formed": formed,
            "well_formed_se": formed_se, "reopened": int(sum(d.reopened_B.sum() for d in decoded))}


def suffix_answer_fields(batch: dict, chunk, chunk_examples, tokenizer) -> dict:
    """position [B] (in the suffix: the position that predicts the answer's first token where the
    two options part), right_id [B], wrong_id [B] of a latent batch of `chunk`'s records."""
    answers = [two_way_answer(e, tokenizer) for e in chunk_examples]
    answer_len_B = np.asarray([len(r.parts.answer) for r in chunk])
    answer_start_B = batch["suffix_mask"].sum(1) - answer_len_B  # the answer ends the suffix
    position_B = (answer_start_B + [a.index for a in answers] - 1).astype(np.int32)
    if np.any(position_B < 0):  # the suffix always opens with <eot> or </swi>/a step
        raise DataError("an answer starts the suffix: no suffix position predicts its first token")
    return {"position": position_B, "right_id": np.asarray([a.right_id for a in answers], np.int32),
            "wrong_id": np.asarray([a.wrong_id for a in answers], np.int32)}


def closing_marker(mode: str, tokenizer) -> int:
    """The token that closes the latent span: <eot> (Coconut), </swi> (SWITCH)."""
    return tokenizer.id_of(SPECIAL.eot if mode == "coconut" else SPECIAL.swi_end)


def head_lengths(suffix_BxS, marker_id: int) -> np.ndarray:
    """int32 [B]: each suffix's tokens through its first `marker_id` (the span's closing marker;
    SWITCH's span steps still written at a partial stage come before it)."""
    is_marker_BxS = np.asarray(suffix_BxS) == marker_id
    if not is_marker_BxS.any(1).all():
        raise DataError(f"a latent suffix holds no span closing marker (token {marker_id})")
    return (is_marker_BxS.argmax(1) + 1).astype(np.int32)


def latent_batches(cfg, records, examples, tokenizer, embed_VxD, stage: int, batch_size: int):
    """(K, the teacher-forced batches at `stage` in the run's layout (latent.eval.states.latent_batches:
    one width for all, one compile), with each example's two-way answer and node vectors)."""
    K, batches = states.latent_batches(records, tokenizer, cfg.latent, stage, batch_size)
    if K == 0:
        raise ConfigError(f"--analysis intervene: this {cfg.latent.mode} run has no latent steps at its stage {stage} "
                          f"(latent.max_latent_stage={cfg.latent.max_latent_stage}): nothing to intervene on")
    out = []
    for batch, chunk in zip(batches, states.record_chunks(records, batch_size)):
        chunk_examples = [examples[r.source_index] for r in chunk]
        batch |= suffix_answer_fields(batch, chunk, chunk_examples, tokenizer)
        steps_BxK = states.slot_steps(batch["latent_mask"], states.span_starts(chunk, cfg.latent.mode),
                                      cfg.latent.c_thought)
        right, wrong, has_right, has_wrong = node_inputs(
            chunk_examples, steps_BxK, embed_VxD, tokenizer, cfg.train.seed, [r.source_index for r in chunk])
        batch |= {"right": right, "wrong": wrong, "has_right": has_right, "has_wrong": has_wrong,
                  "head_len": head_lengths(batch["suffix"], closing_marker(cfg.latent.mode, tokenizer)),
                  "index": np.asarray([r.source_index for r in chunk])}
        out.append({k: v for k, v in batch.items() if k not in ("thought_targets", "prefix_loss_mask",
                                                                 "suffix_loss_mask")})
    return K, out


def latent_report(run, examples, method, scorer, *, progress: bool) -> dict:
    cfg, tokenizer = run.cfg, run.tokenizer
    stage = int(run.meta.get("stage", 0))
    records = method.source(cfg, examples, tokenizer, batch_size=1).records  # the run's own rule for spans
    model = nnx.merge(run.graphdef, run.params)
    embed_VxD = np.asarray(model.embed[...], np.float32)
    K, batches = latent_batches(cfg, records, examples, tokenizer, embed_VxD, stage, cfg.eval.batch_size)
    measure = make_latent_measure(run.graphdef, K)
    device_keys = ("prefix", "prefix_mask", "latent_mask", "suffix", "suffix_mask", "position", "right_id", "wrong_id")

    def measure_batch(batch, slot_inputs, replace):
        return measure(run.params, {k: batch[k] for k in device_keys}, slot_inputs, replace)

    decode_batch = latent_decoder(run, K, batches, examples, scorer)
    result = intervene_latent(measure_batch, batches, K, seed=cfg.train.seed, progress=progress, decode=decode_batch)
    return {"method": cfg.latent.mode, "stage": stage, "steps": K, "unit": "latent step",
            "interventions": [*LATENT_INTERVENTIONS, NOOP], "node_embedding": NODE_EMBEDDING,
            "skipped": len(examples) - len(records), "scorer": scorer.name,
            "max_new_tokens": cfg.eval.max_new_tokens, "decoding": DECODING} | result


DECODING = ("greedy after the span's closing marker, text mode only (a <swi> emitted after it is fed as a "
            "token and counted as reopened)")


def latent_decoder(run, K: int, batches: Sequence[dict], examples: Sequence[Example], scorer) -> Callable:
    """decode(batch, slot_inputs, replace) -> Decoded: `make_latent_decode` on the run's params,
    judged by `scorer` (a latent.data.tasks.scoring.Scorer)."""
    cfg, tokenizer = run.cfg, run.tokenizer
    forced = max(int(b["head_len"].max()) for b in batches) - 1
    decode = make_latent_decode(run.graphdef, K, forced, cfg.eval.max_new_tokens, tokenizer.eos_id)
    reopen_id = tokenizer.id_of(SPECIAL.swi) if cfg.latent.mode == "switch" else None
    device_keys = ("prefix", "prefix_mask", "latent_mask", "suffix", "head_len")

    def decode_batch(batch, slot_inputs, replace):
        tokens, lengths = jax.device_get(decode(run.params, {k: batch[k] for k in device_keys}, slot_inputs, replace))
        return judge_decodings(tokens, lengths, [examples[i] for i in batch["index"]], tokenizer, scorer.score, reopen_id)

    return decode_batch


# ----------------------------------------------------------------------------- abstract spans


def decode_spans(run, examples, *, progress: bool):
    """Each example's greedily decoded abstract span (list of token strings) under the run's own
    prompts and constraint (None for a prompt over task.max_len)."""
    from latent.eval.evaluator import Evaluator
    from latent.methods import method_of, resolve_policy

    cfg = run.cfg
    evaluator = Evaluator(
        run.graphdef, cfg.model, run.tokenizer, examples, lambda prediction, example: False,  # only the spans are read
        dataclasses.replace(cfg.eval, temperature=0.0, n_examples=None),
        layout=method_of(cfg).prompt_layout(cfg, run.tokenizer), max_len=cfg.task.max_len, seed=cfg.train.seed,
        progress=progress, policy=resolve_policy(cfg),
    )
    spans: list = [None] * len(examples)
    for record in evaluator(run.params)["records"]:
        spans[record["index"]] = record["abstract"]
    return spans


def make_abstract_measure(graphdef, bottleneck: bool):
    """measure(params, tokens, padding, segments, position, right, wrong) -> logit difference [B]."""
    from latent.methods.abstract_cot.layouts import bottleneck_attention_mask

    @jax.jit
    def measure(params, tokens_BxT, padding_BxT, segments_BxT, position_B, right_B, wrong_B):
        model = nnx.merge(graphdef, params)
        mask = bottleneck_attention_mask(segments_BxT) if bottleneck else None
        logits = model(tokens_BxT, padding_mask=padding_BxT, attention_mask=mask).logits
        return logit_difference(logits, position_B, right_B, wrong_B)

    return measure


def abstract_diffs(score: Callable, examples: Sequence[Example], spans: Sequence[Sequence[str]], tokenizer, cfg,
                   batch_size: int) -> np.ndarray:
    """float [N]: the logit difference of each example teacher-forced on [x; (c;) z; y] with z =
    spans[i]; score(batch, position, right, wrong) runs the model on one collated batch."""
    from latent.methods.abstract_cot.layouts import tokenize_abstract_examples

    with_z = [dataclasses.replace(e, meta={**e.meta, "abstract": list(z)}) for e, z in zip(examples, spans)]
    records, dropped = tokenize_abstract_examples(with_z, tokenizer, cfg.task.format, 10**9,
                                                  num_tokens=cfg.abstract.num_tokens, seed=cfg.train.seed)
    assert not dropped
    out = []
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        batch = collate(chunk, pad_id=tokenizer.pad_id, max_len=10**9, multiple=16)
        T = batch["tokens"].shape[1]
        answers = [two_way_answer(examples[r.source_index], tokenizer) for r in chunk]
        answer_len = [len(encode_parts(examples[r.source_index], tokenizer).answer) for r in chunk]
        position = np.asarray([T - n + a.index - 1 for n, a in zip(answer_len, answers)], np.int32)
        right = np.asarray([a.right_id for a in answers], np.int32)
        wrong = np.asarray([a.wrong_id for a in answers], np.int32)
        out.extend(np.asarray(score(batch, position, right, wrong)).tolist())
    return np.asarray(out, np.float64)


def intervene_abstract(score: Callable, examples, spans, tokenizer, cfg, batch_size: int) -> dict:
    """The base, the no-op and the swaps of the whole span and of each span position (module docstring)."""
    spans = [list(z) for z in spans]
    diffs = lambda zs: abstract_diffs(score, examples, zs, tokenizer, cfg, batch_size)  # noqa: E731
    base = diffs(spans)
    rows = Rows()
    all_B = np.ones(len(spans), bool)
    noop = diffs([list(z) for z in spans])
    rows.add(NOOP, ALL, base, noop, all_B)
    donor = derangement(all_B)
    swapped = [spans[donor[i]] for i in range(len(spans))]
    rows.add("swap", ALL, base, diffs(swapped), donor != np.arange(len(spans)),
             changed=sum(a != b for a, b in zip(spans, swapped)))
    for p in range(max(map(len, spans), default=0)):
        has_B = np.asarray([len(z) > p for z in spans])
        donor = derangement(has_B)
        moved = [z[:p] + [spans[donor[i]][p]] + z[p + 1:] if has_B[i] else z for i, z in enumerate(spans)]
        rows.add("swap", p, base, diffs(moved), has_B & (donor != np.arange(len(spans))),
                 changed=sum(a != b for a, b in zip(spans, moved)))
    return {"base": base_stats(base), "rows": rows.report(), "noop_bit_equal": bool(np.array_equal(noop, base)),
            "steps": max(map(len, spans), default=0),
            "mean_span_tokens": float(np.mean([len(z) for z in spans])) if spans else 0.0}


def abstract_report(run, examples, *, progress: bool) -> dict:
    cfg, tokenizer = run.cfg, run.tokenizer
    for example in examples:
        two_way_answer(example, tokenizer)  # a task without two options fails before the decoding
    spans = decode_spans(run, examples, progress=progress)
    kept = [i for i, z in enumerate(spans) if z]  # skipped prompts and empty spans have nothing to swap
    if len(kept) < 2:
        raise ConfigError(f"--analysis intervene swaps z between questions: only {len(kept)} of {len(examples)} "
                          "examples decoded a non-empty abstract span")
    measure = make_abstract_measure(run.graphdef, cfg.task.format == "abstract_bottleneck")

    def score(batch, position, right, wrong):
        segments = batch.get("segments", np.zeros_like(batch["tokens"], np.int8))
        return measure(run.params, batch["tokens"], batch["padding_mask"], segments, position, right, wrong)

    result = intervene_abstract(score, [examples[i] for i in kept], [spans[i] for i in kept], tokenizer, cfg,
                                cfg.eval.batch_size)
    return {"method": "abstract_cot", "format": cfg.task.format, "unit": "span position",
            "interventions": [*ABSTRACT_INTERVENTIONS, NOOP], "skipped": len(examples) - len(kept)} | result


# ----------------------------------------------------------------------------- report


def plot(summary: dict, out_path: Path, title: str) -> Path | None:
    """PNG: (decoded accuracy, when decoded,) teacher-forced accuracy and logit difference against
    step, one line per intervention (the "all" rows at the right end), the base as a dashed line.
    A plotting failure is reported, not raised."""
    try:
        from matplotlib.figure import Figure

        steps = [*range(summary["steps"]), ALL]
        x = {step: i for i, step in enumerate(steps)}
        panels = [("accuracy", "accuracy (teacher-forced)"), ("logit_diff", "logit difference (teacher-forced)")]
        if "decoded_accuracy" in summary["base"]:  # latent runs: the decoded answer leads
            panels.insert(0, ("decoded_accuracy", "accuracy (decoded)"))
        figure = Figure(figsize=(4.5 * len(panels), 3.6), dpi=100, layout="constrained")
        axes = figure.subplots(1, len(panels))
        for ax, (field, label) in zip(axes, panels):
            base = summary["base"][field]
            ax.axhline(base, color="black", linestyle="--", linewidth=1, label="base")
            for kind in summary["interventions"]:
                if kind == NOOP:
                    continue
                rows = [r for r in summary["rows"] if r["intervention"] == kind and r["n"] > 0]
                if rows:
                    ax.errorbar([x[r["step"]] for r in rows], [r[field] for r in rows],
                                yerr=[r[field + "_se"] or 0.0 for r in rows], marker="o", capsize=2, label=kind)
            ax.set_xticks(range(len(steps)), [str(s) for s in steps])
            ax.set_xlabel(summary["unit"])
            ax.set_ylabel(label)
        axes[0].legend(fontsize=7)
        figure.suptitle(title, fontsize=8)
        return save_png(figure, out_path)
    except Exception as err:  # noqa: BLE001 - the numbers must not be lost to a plotting failure
        warn_not_drawn(out_path, err)
        return None


def _fmt(value, se=None, signed=False) -> str:
    if value is None or value != value:
        return "-"
    text = f"{value:+.3f}" if signed else f"{value:.3f}"
    return text + (f"±{se:.3f}" if se is not None else "")


def table(summary: dict) -> str:
    base = summary["base"]
    decoded = "decoded_accuracy" in base
    head = (f"base: decoded accuracy {_fmt(base['decoded_accuracy'], base['decoded_accuracy_se'])} (well-formed "
            f"{_fmt(base['well_formed'])}, reopened {base['reopened']}); teacher-forced " if decoded else "base: ")
    lines = [head + f"accuracy {_fmt(base['accuracy'], base['accuracy_se'])}, logit diff "
             f"{_fmt(base['logit_diff'], base['logit_diff_se'])}, n={base['n']}",
             f"{'intervention':>12} {'step':>5} {'n':>5} "
             + (f"{'dec acc':>14} {'Δdec acc':>15} {'ans changed':>14} {'formed':>6} " if decoded else "")
             + f"{'accuracy':>14} {'Δacc':>15} {'logit diff':>15} {'Δlogit':>15}"]
    for r in summary["rows"]:
        dec = (f"{_fmt(r['decoded_accuracy'], r['decoded_accuracy_se']):>14} "
               f"{_fmt(r['delta_decoded_accuracy'], r['delta_decoded_accuracy_se'], True):>15} "
               f"{_fmt(r['answer_changed'], r['answer_changed_se']):>14} {_fmt(r['well_formed']):>6} "
               if "decoded_accuracy" in r else "")
        lines.append(f"{r['intervention']:>12} {str(r['step']):>5} {r['n']:>5} {dec}"
                     f"{_fmt(r['accuracy'], r['accuracy_se']):>14} "
                     f"{_fmt(r['delta_accuracy'], r['delta_accuracy_se'], True):>15} "
                     f"{_fmt(r['logit_diff'], r['logit_diff_se']):>15} "
                     f"{_fmt(r['delta_logit_diff'], r['delta_logit_diff_se'], True):>15}"
                     + (f"  changed {r['changed']}" if "changed" in r else "") + ("  *" if r["depends"] else ""))
    lines.append(f"no-op bit-equal to base: {summary['noop_bit_equal']}; *: the answer depends on it")
    lines.append(summary["summary"])
    return "\n".join(lines)


def check_supported(cfg, method_name: str) -> str:
    """'latent' or 'abstract'; a ConfigError for a run with neither latent steps nor an abstract span."""
    if method_name in ("coconut", "switch"):
        return "latent"
    if method_name == "abstract_cot" and cfg.task.format in ("abstract", "abstract_bottleneck"):
        return "abstract"
    raise ConfigError(
        f"--analysis intervene replaces latent steps (Coconut, SWITCH: latent.mode=coconut|switch) or swaps abstract "
        f"spans (Abstract-CoT: task.format=abstract|abstract_bottleneck); this is a {method_name} run "
        f"(latent.mode={cfg.latent.mode}, task.format={cfg.task.format}) with neither"
    )


class InterventionAnalysis(Analysis):
    """Causal interventions at each latent step, or abstract span swaps (module docstring)."""

    name = "intervene"
    needs_model = True

    def standalone(self, run, examples, *, out: Path, progress: bool = True) -> dict:
        from latent.data.splits import run_scorer
        from latent.methods import method_of

        cfg = run.cfg
        method = method_of(cfg)
        if method.name == "rl":  # an RL run continues its base method's layout
            method = method.base(cfg)
        kind = check_supported(cfg, method.name)
        if len(examples) < 2:
            raise ConfigError(f"--analysis intervene swaps between examples: it needs at least 2; got {len(examples)}")
        if kind == "latent":
            scorer = self.scorer if self.scorer is not None else run_scorer(cfg, examples)
            summary = latent_report(run, examples, method, scorer, progress=progress)
        else:
            summary = abstract_report(run, examples, progress=progress)
        kinds = [k for k in summary["interventions"] if k != NOOP]
        summary["depends_on"] = depends_on(summary["rows"], kinds)
        summary["summary"] = summary_sentence(summary["method"], summary["depends_on"],
                                              "step" if kind == "latent" else "span position",
                                              decoded="base_decodings" in summary)
        path = plot(summary, out.with_suffix(".png"), f"{Path(run.workdir).name}, step {run.step}: {summary['summary']}")
        summary["plot"] = None if path is None else str(path)
        return summary

    def table(self, summary: dict) -> str:
        return table(summary)
