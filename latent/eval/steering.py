"""Steering and steerability across training (`eval.py --analysis steering`), after the
Intervention Detector: is a concept linearly readable at layer l (separability), does adding its
direction there move the model's output (steerability), and when in training do both appear?

Concept ("option", the one the tasks define on two-option graph questions, ProsQA/ProntoQA: "Is
Tom a X or Y?"): is the right option the first-named (X) or the second (Y)? It is read at the
answer position, the teacher-forced position that predicts the answer's first token where the two
options part (latent.eval.interventions.two_way_answer), in the run's own layout: the full CoT or
no-CoT text of a text run; the curriculum stage's `question <bot> [slots] <eot> rest` (SWITCH:
`... <swi> [slots] </swi> rest`) of a Coconut or SWITCH run, whose slots are first filled by the
recurrence, then held fixed for one full pass (exact: the answer position comes after every slot,
so steering there cannot reach them). Its output probability: P(first) = the two-way softmax of
the first-named option's token against the second's at that position.

Per checkpoint and layer l (the residual stream after block l, 1..L):
- directions from the fit half of the examples (even indices): the difference of class means
  (first-named right minus second-named right), and a binary logistic probe's weight (in the
  state's own coordinates: the standardised weight divided by the feature scale);
- separability: the probe's accuracy on the held-out half (odd indices);
- steering: v = the mean-difference direction, unit-normalised and scaled by the layer's mean
  residual norm at the read position (on the fit half), so alpha is a fraction of a typical
  state's size; alpha * v is added after block l at the read position only, for alpha in ALPHAS
  (0 included, bit-identical to no steering: `alpha0_bit_equal`); on the held-out half, the mean
  P(first) against alpha gives the steerability slope (least squares; `margin_slope` the same for
  the logit margin first - second, which a confident model's saturated P(first) hides), and the
  mean entropy of the full next-token distribution there, how steering changes it.
Across checkpoints: each layer's mean-difference and probe direction's cosine with the previous
checkpoint's and with the last one's.

Two more concepts (`eval.py --steer-concept node|mode`; "option" is the default), each with the
same outputs per checkpoint and layer (separability on the held-out examples, the mean-difference
direction, the slope of its output probability against alpha, entropy, cosines across checkpoints).
Both split by example: every state of an even-indexed example fits, of an odd-indexed one is held out.
- "node" (a text CoT run): which node a written step reaches, read at the position that predicts
  the node name's first token (latent.eval.states.node_positions: the token before the step's key
  word). Classes: every node name of the examples' graphs; separability: a softmax probe over them
  (latent.eval.probe.fit_probes) on all written steps pooled, with `chance` the fit half's most
  frequent node; class n's direction: the mean state of the steps reaching n minus the mean of the
  others. Steering: each example steers one written step (its row index mod its number of steps)
  towards a target node t, the next node of its graph (idx_to_symbol order, cyclic) after the right
  one that has a direction and another first token: alpha * v_t at that position only; output
  P(target) = the softmax probability of t's first token there (`margin_slope`: log P(target) -
  log P(right node)). Directions compared across checkpoints: every class's, stacked.
- "mode" (a SWITCH run, `<swi> [slots] </swi>`): latent-slot states (class 1) against as many
  text-mode states of the same example (class 0: written tokens before `<swi>` or after `</swi>`,
  spread evenly, without the sequence's first token, an attention sink's, and the markers), at the
  checkpoint's curriculum stage with the slots filled by the recurrence, then held fixed for one full
  pass; direction = mean(slots) - mean(text). Steering: alpha * v (scaled to the text states' mean
  norm) at every text position before `<swi>`; output P(<swi>), the model's decision to enter latent
  mode, averaged over those positions (exact with the slots held fixed: they come after), with
  `decision_slope` the same at the one position that predicts the data's `<swi>` and `margin_slope`
  its mean log-odds. A checkpoint whose stage has no slots is skipped (`skipped`); a run whose
  latent.mode is not switch is refused. Coconut never predicts its <eot>, so it has no such output.

Which checkpoints: every checkpoint of the run up to the one loaded (eval.py --step N, default the
latest), in step order; with a single one the trends and cosines are empty (said in the table).
"""

from __future__ import annotations

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from latent.data.parts import encode_parts
from latent.data.pipeline import collate, tokenize_examples
from latent.data.special_tokens import SPECIAL
from latent.errors import ConfigError, DataError
from latent.eval import states
from latent.eval.analyses import Analysis
from latent.eval.figures import save_png, warn_not_drawn
from latent.eval.interventions import suffix_answer_fields, two_way_answer
from latent.eval.probe import fit_probes, probe_probabilities
from latent.nn.recurrence import continuous_thought_forward

ALPHAS = (-0.5, -0.25, 0.0, 0.25, 0.5)  # times the layer's mean residual norm
PROBE_STEPS = 300
CONCEPT = "option"  # the default
# --steer-concept NAME -> the concept's output probability, as tables and figures name it
OUTPUTS = {"option": "P(first)", "node": "P(target)", "mode": "P(<swi>)"}
_OPTIONS = re.compile(r"Is (\w+) an? (\w+) or (\w+)\?")
TEXT_FORMATS = ("cot", "no_cot")


# ----------------------------------------------------------------------------- the concept


def first_named_is_right(example, index: int) -> bool:
    """The concept's class: does the question name its right option first ("Is Tom a X or Y?", X right)?"""
    asked = _OPTIONS.search(example.question)
    meta = example.meta or {}
    if not asked or not all(k in meta for k in ("idx_to_symbol", "target")):
        raise DataError(f"example {index} has no two-option question ('Is Tom a X or Y?' with meta idx_to_symbol and "
                        f"target): --analysis steering's concept is which option is right (ProsQA, ProntoQA)")
    right = meta["idx_to_symbol"][meta["target"]]
    if right not in asked.group(2, 3):
        raise DataError(f"example {index}: its right option {right!r} is not one the question names {asked.group(2, 3)}")
    return asked.group(2) == right


# ----------------------------------------------------------------------------- teacher-forced sequences


@dataclasses.dataclass
class Sequences:
    """One teacher-forced batch as a single full pass: tokens, (latent runs) the slots' input
    vectors and where they go, the read position and the two options' tokens."""

    tokens_BxT: np.ndarray
    padding_BxT: np.ndarray
    position_B: np.ndarray  # the answer position (module docstring)
    first_id_B: np.ndarray  # the first-named option's token there
    second_id_B: np.ndarray
    label_B: np.ndarray  # 1: the first-named option is right
    embeds_BxTxD: np.ndarray | None = None
    embed_mask_BxT: np.ndarray | None = None


def option_ids(examples, tokenizer, indices):
    """(first_id, second_id, label) per example: the two options' distinguishing answer tokens."""
    answers = [two_way_answer(examples[i], tokenizer) for i in indices]
    label_B = np.asarray([first_named_is_right(examples[i], i) for i in indices], np.int32)
    first = np.where(label_B == 1, [a.right_id for a in answers], [a.wrong_id for a in answers]).astype(np.int32)
    second = np.where(label_B == 1, [a.wrong_id for a in answers], [a.right_id for a in answers]).astype(np.int32)
    return first, second, label_B


def text_sequences(run, examples, batch_size: int) -> list[Sequences]:
    """A text run's batches (its own task.format), every batch padded to the longest example."""
    cfg, tokenizer = run.cfg, run.tokenizer
    records, _ = tokenize_examples(examples, tokenizer, cfg.task.format, cfg.task.max_len)
    if not records:
        raise DataError(f"no example fits task.max_len={cfg.task.max_len}: nothing to steer")
    T = collate(records, pad_id=tokenizer.pad_id, max_len=cfg.task.max_len, multiple=states.BUCKET)["tokens"].shape[1]
    out = []
    for chunk in states.record_chunks(records, batch_size):
        batch = collate(chunk, pad_id=tokenizer.pad_id, max_len=T, multiple=T)
        indices = [r.source_index for r in chunk]
        answers = [two_way_answer(examples[i], tokenizer) for i in indices]
        answer_len = [len(encode_parts(examples[i], tokenizer).answer) for i in indices]
        position = np.asarray([T - n + a.index - 1 for n, a in zip(answer_len, answers)], np.int32)
        out.append(Sequences(batch["tokens"], batch["padding_mask"], position, *option_ids(examples, tokenizer, indices)))
    return out


def filled_latent_batches(run, examples, batch_size: int):
    """(K, [(batch, its records, slots' input vectors [B, K, D])]): a Coconut or SWITCH run's
    teacher-forced batches at its checkpoint's stage, the slots filled by the recurrence."""
    cfg, tokenizer = run.cfg, run.tokenizer
    stage = int(run.meta.get("stage", 0))
    from latent.methods import method_of

    records = method_of(cfg).source(cfg, examples, tokenizer, batch_size=1).records  # the run's own span rule
    K, batches = states.latent_batches(records, tokenizer, cfg.latent, stage, batch_size)
    graphdef = run.graphdef

    @jax.jit
    def slot_inputs(params, batch):
        out = continuous_thought_forward(nnx.merge(graphdef, params), batch["prefix"], batch["prefix_mask"],
                                         batch["latent_mask"].sum(1), batch["suffix"], batch["suffix_mask"],
                                         max_latent=K)
        return out.slot_inputs

    out = []
    for batch, chunk in zip(batches, states.record_chunks(records, batch_size)):
        inputs = {k: batch[k] for k in ("prefix", "prefix_mask", "latent_mask", "suffix", "suffix_mask")}
        out.append((batch, chunk, np.asarray(slot_inputs(run.params, inputs), np.float32)))
    return K, out


def full_pass_inputs(batch, K: int, slots_BxKxD):
    """(tokens, padding, embeds, embed_mask) of one full pass over `prefix [K slots] suffix`, the
    slots' inputs held fixed."""
    B, P = batch["prefix"].shape
    D = slots_BxKxD.shape[-1]
    S = batch["suffix"].shape[1]
    return (np.concatenate([batch["prefix"], np.zeros((B, K), np.int32), batch["suffix"]], 1),
            np.concatenate([batch["prefix_mask"], batch["latent_mask"], batch["suffix_mask"]], 1),
            np.concatenate([np.zeros((B, P, D), np.float32), slots_BxKxD, np.zeros((B, S, D), np.float32)], 1),
            np.concatenate([np.zeros((B, P), bool), np.ones((B, K), bool), np.zeros((B, S), bool)], 1))


def latent_sequences(run, examples, batch_size: int) -> list[Sequences]:
    """A Coconut or SWITCH run's batches at its checkpoint's stage, the slots filled by the recurrence."""
    tokenizer = run.tokenizer
    K, filled = filled_latent_batches(run, examples, batch_size)
    out = []
    for batch, chunk, slots_BxKxD in filled:
        indices = [r.source_index for r in chunk]
        answer = suffix_answer_fields(batch, chunk, [examples[i] for i in indices], tokenizer)
        P = batch["prefix"].shape[1]
        tokens_BxT, padding_BxT, embeds_BxTxD, embed_mask_BxT = full_pass_inputs(batch, K, slots_BxKxD)
        out.append(Sequences(
            tokens_BxT=tokens_BxT, padding_BxT=padding_BxT,
            position_B=(P + K + answer["position"]).astype(np.int32),
            first_id_B=None, second_id_B=None, label_B=None,
            embeds_BxTxD=embeds_BxTxD, embed_mask_BxT=embed_mask_BxT,
        ))
        out[-1].first_id_B, out[-1].second_id_B, out[-1].label_B = option_ids(examples, tokenizer, indices)
    return out


def sequences(run, examples, batch_size: int) -> list[Sequences]:
    """The run's teacher-forced batches; a ConfigError for a method without a text or latent layout."""
    from latent.methods import method_of

    method = method_of(run.cfg).name
    if method in states.LATENT_METHODS:
        return latent_sequences(run, examples, batch_size)
    if method == "sft" and run.cfg.task.format in TEXT_FORMATS:
        return text_sequences(run, examples, batch_size)
    raise ConfigError(f"--analysis steering reads text runs (task.format=cot|no_cot) and Coconut/SWITCH runs; "
                      f"{run.workdir} is a {method} run with task.format={run.cfg.task.format}")


# ----------------------------------------------------------------------------- the steered forward


def make_forward(graphdef):
    """forward(params, seq, add_LxD, at_BxT) -> (logits at the read position [B, V], residual
    stream there after every block [B, L, D]): add_LxD[l] is added after block l at the positions
    where at_BxT is 1 (the read position); add_LxD None: no steering at all."""

    @jax.jit
    def forward(params, seq: dict, add_LxD=None, at_BxT=None):
        model = nnx.merge(graphdef, params)
        residual_add = None if add_LxD is None else add_LxD[:, None, None, :] * at_BxT[None, :, :, None]
        out = model(seq["tokens"], embeds=seq.get("embeds"), embed_mask=seq.get("embed_mask"),
                    padding_mask=seq["padding"], residual_add=residual_add, return_residuals=True)
        index_B = seq["position"]
        logits_BxV = jnp.take_along_axis(out.logits, index_B[:, None, None], axis=1)[:, 0].astype(jnp.float32)
        at_LxBxD = jnp.take_along_axis(out.residuals, index_B[None, :, None, None], axis=2)[:, :, 0]
        return logits_BxV, jnp.swapaxes(at_LxBxD, 0, 1).astype(jnp.float32)

    return forward


def device_inputs(seq: Sequences) -> dict:
    inputs = {"tokens": seq.tokens_BxT, "padding": seq.padding_BxT, "position": seq.position_B}
    if seq.embeds_BxTxD is not None:
        inputs |= {"embeds": seq.embeds_BxTxD, "embed_mask": seq.embed_mask_BxT}
    return inputs


def read_mask(seq: Sequences) -> np.ndarray:
    """float [B, T]: 1 at each example's read position."""
    at_BxT = np.zeros(seq.tokens_BxT.shape, np.float32)
    at_BxT[np.arange(len(at_BxT)), seq.position_B] = 1.0
    return at_BxT


def answer_readout(logits_BxV, seq: Sequences):
    """(P(first) [B], the logit margin first - second [B], the full distribution's entropy [B])."""
    logits_BxV = np.asarray(logits_BxV, np.float64)
    rows = np.arange(len(logits_BxV))
    margin_B = logits_BxV[rows, seq.first_id_B] - logits_BxV[rows, seq.second_id_B]
    log_p_BxV = logits_BxV - logits_BxV.max(1, keepdims=True)
    log_p_BxV -= np.log(np.exp(log_p_BxV).sum(1, keepdims=True))
    return 1.0 / (1.0 + np.exp(-margin_B)), margin_B, -(np.exp(log_p_BxV) * log_p_BxV).sum(1)


# ----------------------------------------------------------------------------- directions and slopes


def mean_difference(x_NxLxD: np.ndarray, label_N: np.ndarray) -> np.ndarray:
    """[L, D]: the mean state of class 1 minus that of class 0, per layer."""
    label_N = np.asarray(label_N).astype(bool)
    return x_NxLxD[label_N].mean(0) - x_NxLxD[~label_N].mean(0)


def probe_directions(x_NxLxD, label_N, fit_N, test_N, steps: int = PROBE_STEPS):
    """(directions [L, D] in the states' coordinates, held-out accuracy [L]): one binary logistic
    probe per layer, fitted on the rows `fit_N`, scored on `test_N`."""
    x_LxNxD = np.swapaxes(x_NxLxD, 0, 1)
    L = x_LxNxD.shape[0]
    y_LxN = np.where(fit_N, label_N, -1)[None].repeat(L, 0)
    probes = fit_probes(x_LxNxD, y_LxN, 2, steps=steps)
    direction_LxD = np.asarray((probes.w_PxDxC[:, :, 1] - probes.w_PxDxC[:, :, 0]) * probes.scale_PxD)
    probs_LxNxC = probe_probabilities(probes, x_LxNxD)
    right_LxN = probs_LxNxC.argmax(-1) == np.asarray(label_N)[None]
    accuracy_L = right_LxN[:, test_N].mean(1) if test_N.any() else np.full(L, np.nan)
    return direction_LxD, accuracy_L


def steering_vectors(direction_LxD: np.ndarray, x_NxLxD: np.ndarray) -> np.ndarray:
    """[L, D]: each layer's direction unit-normalised, times the layer's mean state norm."""
    unit_LxD = direction_LxD / np.maximum(np.linalg.norm(direction_LxD, axis=1, keepdims=True), 1e-12)
    return unit_LxD * np.linalg.norm(x_NxLxD, axis=2).mean(0)[:, None]


def slope(alphas, values) -> float:
    """The least-squares slope of `values` against `alphas`."""
    return float(np.polyfit(np.asarray(alphas, np.float64), np.asarray(values, np.float64), 1)[0])


def cosine(a_LxD: np.ndarray, b_LxD: np.ndarray) -> np.ndarray:
    """[L]: the cosine of each layer's two directions (nan where one is zero)."""
    norms = np.linalg.norm(a_LxD, axis=1) * np.linalg.norm(b_LxD, axis=1)
    return np.where(norms > 0, (a_LxD * b_LxD).sum(1) / np.where(norms > 0, norms, 1.0), np.nan)


# ----------------------------------------------------------------------------- one checkpoint


def checkpoint_report(run, examples, *, batch_size: int, alphas=ALPHAS, progress: bool = False) -> dict:
    """The concept's directions, separability and steering at one checkpoint (module docstring);
    `directions` (numpy arrays) are for the cross-checkpoint cosines and are not JSON."""
    batches = sequences(run, examples, batch_size)
    forward = make_forward(run.graphdef)
    L, D = run.cfg.model.n_layers, run.cfg.model.d_model
    zeros_LxD = np.zeros((L, D), np.float32)
    base = [forward(run.params, device_inputs(s)) for s in batches]  # unsteered
    x_NxLxD = np.concatenate([np.asarray(states_BxLxD) for _, states_BxLxD in base])
    label_N = np.concatenate([s.label_B for s in batches])
    if len(np.unique(label_N)) < 2:
        raise DataError(f"every one of the {len(label_N)} examples names its right option "
                        f"{'first' if label_N[0] else 'second'}: the concept has one class")
    fit_N = np.arange(len(label_N)) % 2 == 0
    test_N = ~fit_N
    mean_diff_LxD = mean_difference(x_NxLxD[fit_N], label_N[fit_N])
    probe_LxD, separability_L = probe_directions(x_NxLxD, label_N, fit_N, test_N)
    v_LxD = steering_vectors(mean_diff_LxD, x_NxLxD[fit_N]).astype(np.float32)

    p_base_N, _, entropy_base_N = (np.concatenate(parts) for parts in
                                   zip(*(answer_readout(logits, s) for (logits, _), s in zip(base, batches))))
    p_LxA, margin_LxA, entropy_LxA = (np.zeros((L, len(alphas))) for _ in range(3))
    alpha0_equal = True
    bar = tqdm(total=L * len(alphas), desc=f"steer step {run.step}", leave=False, disable=not progress)
    for layer in range(L):
        for a, alpha in enumerate(alphas):
            add_LxD = zeros_LxD.copy()
            add_LxD[layer] = np.float32(alpha) * v_LxD[layer]
            logits = [forward(run.params, device_inputs(s), add_LxD, read_mask(s))[0] for s in batches]
            p_N, margin_N, entropy_N = (np.concatenate(parts) for parts in
                                        zip(*(answer_readout(lg, s) for lg, s in zip(logits, batches))))
            if alpha == 0.0:
                alpha0_equal &= all(np.array_equal(np.asarray(lg), np.asarray(b[0])) for lg, b in zip(logits, base))
            p_LxA[layer, a], margin_LxA[layer, a] = p_N[test_N].mean(), margin_N[test_N].mean()
            entropy_LxA[layer, a] = entropy_N[test_N].mean()
            bar.update()
    bar.close()
    right_N = (p_base_N > 0.5) == (label_N == 1)
    return {
        "step": int(run.step), "stage": run.meta.get("stage") if batches[0].embeds_BxTxD is not None else None, "n_fit": int(fit_N.sum()), "n_test": int(test_N.sum()),
        "accuracy": float(right_N[test_N].mean()), "base_p_first": float(p_base_N[test_N].mean()),
        "base_entropy": float(entropy_base_N[test_N].mean()),
        "separability": separability_L.tolist(),
        "mean_difference_separability": nearest_mean_accuracy(x_NxLxD, label_N, fit_N, test_N).tolist(),
        "slope": [slope(alphas, p_LxA[layer]) for layer in range(L)],
        "margin_slope": [slope(alphas, margin_LxA[layer]) for layer in range(L)],  # unsaturated: logits
        "p_first": p_LxA.tolist(), "entropy": entropy_LxA.tolist(),
        "entropy_slope": [slope(alphas, entropy_LxA[layer]) for layer in range(L)],
        "steering_norm": np.linalg.norm(v_LxD, axis=1).tolist(), "alpha0_bit_equal": bool(alpha0_equal),
        "directions": {"mean_difference": mean_diff_LxD, "probe": probe_LxD},
    }


def nearest_mean_accuracy(x_NxLxD, label_N, fit_N, test_N) -> np.ndarray:
    """[L]: held-out accuracy of projecting on the mean-difference direction, thresholded at the
    midpoint of the two class means (the direction's own separability)."""
    fit_x, fit_y = x_NxLxD[fit_N], label_N[fit_N].astype(bool)
    direction_LxD = fit_x[fit_y].mean(0) - fit_x[~fit_y].mean(0)
    midpoint_LxD = (fit_x[fit_y].mean(0) + fit_x[~fit_y].mean(0)) / 2
    score_NxL = np.einsum("nld,ld->nl", x_NxLxD - midpoint_LxD, direction_LxD)
    return ((score_NxL > 0) == label_N[:, None].astype(bool))[test_N].mean(0)


# ----------------------------------------------------------------------------- concepts read at many positions


class NoSlots(ConfigError):
    """A SWITCH checkpoint whose curriculum stage has no latent slots: the mode concept skips it."""


def make_read_forward(graphdef):
    """forward(params, seq, add_LxBxD, at_BxT) -> (logits at the positions seq["read"] [B, R, V],
    the residual stream after every block at seq["state"] [B, S, L, D]): add_LxBxD[l, b] is added
    after block l at example b's positions where at_BxT is 1; add_LxBxD None: no steering at all."""

    @jax.jit
    def forward(params, seq: dict, add_LxBxD=None, at_BxT=None):
        model = nnx.merge(graphdef, params)
        residual_add = None if add_LxBxD is None else add_LxBxD[:, :, None, :] * at_BxT[None, :, :, None]
        out = model(seq["tokens"], embeds=seq.get("embeds"), embed_mask=seq.get("embed_mask"),
                    padding_mask=seq["padding"], residual_add=residual_add, return_residuals=True)
        logits_BxRxV = jnp.take_along_axis(out.logits, seq["read"][:, :, None], axis=1).astype(jnp.float32)
        at_LxBxSxD = jnp.take_along_axis(out.residuals, seq["state"][None, :, :, None], axis=2)
        return logits_BxRxV, jnp.transpose(at_LxBxSxD, (1, 2, 0, 3)).astype(jnp.float32)

    return forward


def log_softmax(logits_xV: np.ndarray) -> np.ndarray:
    logits_xV = np.asarray(logits_xV, np.float64)
    shifted = logits_xV - logits_xV.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def entropy(log_p_xV: np.ndarray) -> np.ndarray:
    return -(np.exp(log_p_xV) * log_p_xV).sum(-1)


def class_mean_differences(x_NxLxD: np.ndarray, label_N: np.ndarray, n_classes: int) -> np.ndarray:
    """[C, L, D]: per class c, the mean state of class c minus that of every other class's rows
    (zeros for a class without rows, or one whose rows are all there is)."""
    out = np.zeros((n_classes, *x_NxLxD.shape[1:]), np.float64)
    for c in range(n_classes):
        mine = label_N == c
        if mine.any() and (~mine).any():
            out[c] = x_NxLxD[mine].mean(0) - x_NxLxD[~mine].mean(0)
    return out


def multiclass_probe(x_NxLxD, label_N, n_classes: int, fit_N, test_N, steps: int = PROBE_STEPS):
    """(per-class probe directions [L, C, D] in the states' coordinates, centred over the classes,
    held-out accuracy [L]): one softmax probe per layer fitted on the rows `fit_N`."""
    x_LxNxD = np.swapaxes(x_NxLxD, 0, 1)
    L = x_LxNxD.shape[0]
    y_LxN = np.where(fit_N, label_N, -1)[None].repeat(L, 0)
    probes = fit_probes(x_LxNxD, y_LxN, n_classes, steps=steps)
    w_LxDxC = np.asarray(probes.w_PxDxC) * np.asarray(probes.scale_PxD)[:, :, None]
    direction_LxCxD = np.swapaxes(w_LxDxC - w_LxDxC.mean(2, keepdims=True), 1, 2)
    right_LxN = probe_probabilities(probes, x_LxNxD).argmax(-1) == np.asarray(label_N)[None]
    return direction_LxCxD, right_LxN[:, test_N].mean(1) if test_N.any() else np.full(L, np.nan)


def nearest_class_mean_accuracy(x_NxLxD, label_N, fit_N, test_N) -> np.ndarray:
    """[L]: held-out accuracy of naming the class whose fit-half mean state is nearest (the class
    means' own separability; for two classes, the midpoint rule of `nearest_mean_accuracy`)."""
    classes = np.unique(label_N[fit_N])
    means_CxLxD = np.stack([x_NxLxD[fit_N & (label_N == c)].mean(0) for c in classes])
    distance_NxCxL = np.linalg.norm(x_NxLxD[test_N][:, None] - means_CxLxD[None], axis=-1)
    return (classes[distance_NxCxL.argmin(1)] == label_N[test_N][:, None]).mean(0)


def example_split(row_N: np.ndarray):
    """(fit_N, test_N): rows of even-indexed examples fit, of odd-indexed ones are held out (every
    state of one example on the same side)."""
    fit_N = np.asarray(row_N) % 2 == 0
    return fit_N, ~fit_N


def unit_times_norm(direction_xLxD: np.ndarray, norm_L: np.ndarray) -> np.ndarray:
    """Each layer's direction unit-normalised, times that layer's typical state norm."""
    length = np.linalg.norm(direction_xLxD, axis=-1, keepdims=True)
    return np.where(length > 0, direction_xLxD / np.maximum(length, 1e-12), 0.0) * norm_L[:, None]


def sweep(n_layers: int, alphas, measure, progress: bool, desc: str):
    """{name: [L, A] array} of measure(layer, alpha)'s means (a dict of floats), and whether every
    alpha-0 pass was bit-identical to the unsteered one (measure's `bit_equal`)."""
    grids, alpha0_equal = {}, True
    bar = tqdm(total=n_layers * len(alphas), desc=desc, leave=False, disable=not progress)
    for layer in range(n_layers):
        for a, alpha in enumerate(alphas):
            means, bit_equal = measure(layer, float(alpha))
            if alpha == 0.0:
                alpha0_equal &= bit_equal
            for key, value in means.items():
                grids.setdefault(key, np.zeros((n_layers, len(alphas))))[layer, a] = value
            bar.update()
    bar.close()
    return grids, alpha0_equal


def slopes(alphas, grid_LxA) -> list[float]:
    return [slope(alphas, row) for row in grid_LxA]


# --- node identity: a CoT run's written steps


@dataclasses.dataclass
class NodeBatch:
    """A text run's teacher-forced batch and, per written step r, the position that predicts the
    first token of the node the step reaches (`read_BxR`), its class and that token."""

    inputs: dict  # tokens, padding, read, state (= read)
    valid_BxR: np.ndarray
    class_BxR: np.ndarray  # -1 where not valid
    right_id_BxR: np.ndarray
    row_B: np.ndarray  # each example's index among the batches' records: the fit/test split
    graphs: list


def check_node_run(run) -> None:
    from latent.methods import method_of

    method = method_of(run.cfg).name
    if method != "sft" or run.cfg.task.format != "cot":
        raise ConfigError(f"--steer-concept node reads the written steps of a text run (task.format=cot); {run.workdir} "
                          f"is a {method} run with task.format={run.cfg.task.format} and latent.mode={run.cfg.latent.mode}")


def node_classes(examples) -> dict[str, int]:
    """Every node name of the examples' graphs (sorted) -> its class."""
    from latent.eval.probe import example_graph

    names = sorted({name for i, e in enumerate(examples) for name in example_graph(e, i).names})
    return {name: c for c, name in enumerate(names)}


def node_batches(run, examples, batch_size: int, classes: dict[str, int]) -> list[NodeBatch]:
    """The run's CoT batches (one width) with each written step's node position (latent.eval.states
    finds the token before a step's key word; a name of several tokens is read before its first)."""
    from latent.eval.interventions import name_token_ids
    from latent.eval.probe import example_graph

    check_node_run(run)
    cfg, tokenizer = run.cfg, run.tokenizer
    records, _ = tokenize_examples(examples, tokenizer, "cot", cfg.task.max_len)
    if not records:
        raise DataError(f"no example fits task.max_len={cfg.task.max_len}: nothing to steer")
    T = collate(records, pad_id=tokenizer.pad_id, max_len=cfg.task.max_len, multiple=states.BUCKET)["tokens"].shape[1]
    R = max(len(examples[r.source_index].steps) for r in records)
    out, row = [], 0
    for chunk in states.record_chunks(records, batch_size):
        batch = collate(chunk, pad_id=tokenizer.pad_id, max_len=T, multiple=T)
        B = len(chunk)
        read_BxR, class_BxR, right_BxR = np.zeros((B, R), np.int32), np.full((B, R), -1, np.int32), np.zeros((B, R), np.int32)
        graphs = []
        for b, record in enumerate(chunk):
            example = examples[record.source_index]
            graph = example_graph(example, record.source_index)
            graphs.append(graph)
            shift = T - len(record.tokens)  # left padding
            for step, key_position in enumerate(states.node_positions(example, tokenizer)[: len(graph.path) - 1]):
                name = graph.names[graph.path[step + 1]]
                ids = name_token_ids(name, tokenizer)
                at = key_position - (len(ids) - 1) + shift  # the position before the name's first token
                if key_position < 0 or list(batch["tokens"][b, at + 1 : at + 1 + len(ids)]) != ids:
                    continue  # the step does not end by naming its node as a statement does
                read_BxR[b, step], class_BxR[b, step], right_BxR[b, step] = at, classes[name], ids[0]
        inputs = {"tokens": batch["tokens"], "padding": batch["padding_mask"], "read": read_BxR, "state": read_BxR}
        out.append(NodeBatch(inputs, class_BxR >= 0, class_BxR, right_BxR, np.arange(row, row + B), graphs))
        row += B
    return out


def node_targets(batches: list[NodeBatch], classes: dict[str, int], usable_C: np.ndarray, tokenizer):
    """Per batch (steered step [B] (-1: none), target class [B], target's first token [B]): each
    example steers one written step, its (row mod its steps with a target)-th, towards the next node
    of its graph (idx_to_symbol order, cyclic) after the right one that has a direction (`usable_C`)
    and whose first token differs from the right node's and is known to the tokenizer."""
    from latent.eval.interventions import name_token_ids

    unk = tokenizer.token_to_id(SPECIAL.unk)
    out = []
    for batch in batches:
        B, R = batch.class_BxR.shape
        step_B, target_B, target_id_B = np.full(B, -1, np.int32), np.zeros(B, np.int32), np.zeros(B, np.int32)
        for b, graph in enumerate(batch.graphs):
            choices = {}
            for r in np.flatnonzero(batch.valid_BxR[b]):
                right = graph.path[r + 1]
                for j in range(1, len(graph.names)):
                    name = graph.names[(right + j) % len(graph.names)]
                    first = name_token_ids(name, tokenizer)[0]
                    if usable_C[classes[name]] and first != batch.right_id_BxR[b, r] and first != unk:
                        choices[int(r)] = (classes[name], first)
                        break
            if choices:
                steps = sorted(choices)
                step_B[b] = steps[int(batch.row_B[b]) % len(steps)]
                target_B[b], target_id_B[b] = choices[step_B[b]]
        out.append((step_B, target_B, target_id_B))
    return out


def node_steered_logits(forward, params, batches, targets, v_CxLxD, layer: int, alpha: float) -> list:
    """Per batch, the logits [B, R, V] at the node positions with alpha * v[target, layer] added
    after block `layer` at each example's steered node position (nothing where it has none)."""
    L, D = v_CxLxD.shape[1:]
    logits = []
    for batch, (step_B, target_B, _) in zip(batches, targets):
        B, T = batch.inputs["tokens"].shape
        add_LxBxD = np.zeros((L, B, D), np.float32)
        add_LxBxD[layer] = np.float32(alpha) * v_CxLxD[target_B, layer] * (step_B >= 0)[:, None]
        logits.append(forward(params, batch.inputs, add_LxBxD, steered_mask(batch, step_B)))
    return [lg for lg, _ in logits]


def steered_mask(batch, step_B) -> np.ndarray:
    """float [B, T]: 1 at each example's steered node position."""
    at_BxT = np.zeros(batch.inputs["tokens"].shape, np.float32)
    steered = np.flatnonzero(step_B >= 0)
    at_BxT[steered, batch.inputs["read"][steered, step_B[steered]]] = 1.0
    return at_BxT


def node_readout(logits, batches, targets) -> dict:
    """Means over the held-out examples that steer a step: P(target) at the steered position, the
    log-probability margin target - right node, the full distribution's entropy there."""
    parts = []
    for logits_BxRxV, batch, (step_B, _, target_id_B) in zip(logits, batches, targets):
        take = np.flatnonzero(step_B >= 0)
        log_p_MxV = log_softmax(np.asarray(logits_BxRxV)[take, step_B[take]])
        rows = np.arange(len(take))
        right_M = batch.right_id_BxR[take, step_B[take]]
        target_M = log_p_MxV[rows, target_id_B[take]]
        parts.append((np.exp(target_M), target_M - log_p_MxV[rows, right_M], entropy(log_p_MxV), batch.row_B[take]))
    p_M, margin_M, entropy_M, row_M = (np.concatenate(column) for column in zip(*parts))
    held_out = row_M % 2 == 1
    return {"p": float(p_M[held_out].mean()), "margin": float(margin_M[held_out].mean()),
            "entropy": float(entropy_M[held_out].mean())}


def node_report(run, examples, *, batch_size: int, alphas=ALPHAS, progress: bool = False) -> dict:
    """The node-identity concept at one checkpoint (module docstring)."""
    classes = node_classes(examples)
    C = len(classes)
    batches = node_batches(run, examples, batch_size, classes)
    forward = make_read_forward(run.graphdef)
    L = run.cfg.model.n_layers
    base = [forward(run.params, b.inputs) for b in batches]
    rows = [(np.asarray(s)[b.valid_BxR], b.class_BxR[b.valid_BxR], np.broadcast_to(b.row_B[:, None], b.valid_BxR.shape)[b.valid_BxR])
            for (_, s), b in zip(base, batches)]
    x_NxLxD, label_N, row_N = (np.concatenate(parts) for parts in zip(*rows))
    if len(label_N) < 4:
        raise DataError(f"only {len(label_N)} written steps name their node: too few to fit and score the concept")
    fit_N, test_N = example_split(row_N)
    mean_diff_CxLxD = class_mean_differences(x_NxLxD[fit_N], label_N[fit_N], C)
    usable_C = np.abs(mean_diff_CxLxD).sum((1, 2)) > 0
    probe_LxCxD, separability_L = multiclass_probe(x_NxLxD, label_N, C, fit_N, test_N)
    norm_L = np.linalg.norm(x_NxLxD[fit_N], axis=2).mean(0)
    v_CxLxD = unit_times_norm(mean_diff_CxLxD, norm_L).astype(np.float32)
    targets = node_targets(batches, classes, usable_C, run.tokenizer)

    def measure(layer, alpha):
        logits = node_steered_logits(forward, run.params, batches, targets, v_CxLxD, layer, alpha)
        bit_equal = all(np.array_equal(np.asarray(lg), np.asarray(b[0])) for lg, b in zip(logits, base))
        return node_readout(logits, batches, targets), bit_equal

    if not any((t[0] >= 0).any() for t in targets):
        raise DataError("no written step has a node of its graph to steer towards (another node with a direction)")
    grids, alpha0_equal = sweep(L, alphas, measure, progress, f"steer node, step {run.step}")
    base_logits = [np.asarray(lg) for lg, _ in base]
    predicted = np.concatenate([lg.argmax(-1)[b.valid_BxR] for lg, b in zip(base_logits, batches)])
    right = np.concatenate([b.right_id_BxR[b.valid_BxR] for b in batches])
    base_out = node_readout(base_logits, batches, targets)
    n_steered = int(sum(((t[0] >= 0) & (b.row_B % 2 == 1)).sum() for t, b in zip(targets, batches)))
    return {
        "step": int(run.step), "stage": None, "n_fit": int(fit_N.sum()), "n_test": int(test_N.sum()),
        "n_classes": C, "n_steered": n_steered, "chance": majority_chance(label_N[fit_N], label_N[test_N]),
        "accuracy": float((predicted == right)[test_N].mean()), "base_p_target": float(base_out["p"]),
        "base_entropy": float(base_out["entropy"]),
        "separability": separability_L.tolist(),
        "mean_difference_separability": nearest_class_mean_accuracy(x_NxLxD, label_N, fit_N, test_N).tolist(),
        "slope": slopes(alphas, grids["p"]), "margin_slope": slopes(alphas, grids["margin"]),
        "p_target": grids["p"].tolist(), "entropy": grids["entropy"].tolist(),
        "entropy_slope": slopes(alphas, grids["entropy"]),
        "steering_norm": norm_L.tolist(), "alpha0_bit_equal": bool(alpha0_equal),
        "directions": {"mean_difference": np.swapaxes(mean_diff_CxLxD, 0, 1).reshape(L, -1),
                       "probe": probe_LxCxD.reshape(L, -1)},
    }


def majority_chance(fit_label_N, test_label_N) -> float:
    """Held-out accuracy of always naming the fit half's most frequent class."""
    return float(np.mean(test_label_N == np.bincount(fit_label_N).argmax())) if len(test_label_N) else float("nan")


# --- latent vs text mode: a SWITCH run's spans


@dataclasses.dataclass
class ModeBatch:
    """A SWITCH batch as one full pass, the slots held fixed: the text-mode positions before `<swi>`
    (read and steered), the decision position (the one that predicts `<swi>`), and the states
    read for the concept: each real slot (class 1) and as many text-mode positions (class 0)."""

    inputs: dict  # tokens, padding, embeds, embed_mask, read [B, P], state [B, S]
    read_valid_BxR: np.ndarray
    decision_B: np.ndarray  # index into read
    state_valid_BxS: np.ndarray
    state_label_BxS: np.ndarray
    row_B: np.ndarray


def check_mode_run(run) -> None:
    if run.cfg.latent.mode != "switch":
        raise ConfigError(f"--steer-concept mode reads a SWITCH run's latent spans (<swi> [slots] </swi>); {run.workdir} "
                          f"has latent.mode={run.cfg.latent.mode}")


def evenly(positions: list[int], k: int) -> list[int]:
    """k of `positions` spread evenly from the first to the last (all of them when k >= their number)."""
    if k >= len(positions):
        return list(positions)
    return [positions[i] for i in np.linspace(0, len(positions) - 1, k).round().astype(int)]


def mode_batches(run, examples, batch_size: int) -> list[ModeBatch]:
    """The run's batches at its checkpoint's stage. Text-mode positions: the written tokens before
    `<swi>` and after `</swi>`, without each sequence's first token (an attention sink's) and the
    span's markers."""
    check_mode_run(run)
    tokenizer = run.tokenizer
    K, filled = filled_latent_batches(run, examples, batch_size)
    if K == 0:
        raise NoSlots(f"step {run.step} is at curriculum stage {run.meta.get('stage', 0)}, which has no latent slots")
    from latent.eval.interventions import head_lengths

    swi_end = tokenizer.id_of(SPECIAL.swi_end)
    out, row = [], 0
    for batch, _, slots_BxKxD in filled:
        tokens, padding, embeds, embed_mask = full_pass_inputs(batch, K, slots_BxKxD)
        B, P = batch["prefix"].shape
        first_B = P - batch["prefix_mask"].sum(1)
        read_BxR = np.broadcast_to(np.arange(P, dtype=np.int32), (B, P)).copy()
        read_valid_BxR = (read_BxR > first_B[:, None]) & (read_BxR <= P - 2)  # P - 1 is <swi>
        head_B, n_suffix_B = head_lengths(batch["suffix"], swi_end), batch["suffix_mask"].sum(1)
        state_BxS = np.zeros((B, 2 * K), np.int32)
        state_valid_BxS, state_label_BxS = np.zeros((B, 2 * K), bool), np.zeros((B, 2 * K), np.int32)
        for b in range(B):
            slots = [P + k for k in np.flatnonzero(batch["latent_mask"][b])]
            text = [*range(first_B[b] + 1, P - 1), *(P + K + j for j in range(head_B[b], n_suffix_B[b]))]
            chosen = [*slots, *evenly(text, len(slots))]
            state_BxS[b, : len(chosen)] = chosen
            state_valid_BxS[b, : len(chosen)] = True
            state_label_BxS[b, : len(slots)] = 1
        inputs = {"tokens": tokens, "padding": padding, "embeds": embeds, "embed_mask": embed_mask,
                  "read": read_BxR, "state": state_BxS}
        out.append(ModeBatch(inputs, read_valid_BxR, np.full(B, P - 2), state_valid_BxS, state_label_BxS,
                             np.arange(row, row + B)))
        row += B
    return out


def mode_steered_logits(forward, params, batches, v_LxD, layer: int, alpha: float) -> list:
    """Per batch, the logits [B, P, V] at the prefix positions with alpha * v[layer] added after
    block `layer` at every text position before <swi> (exact with the slots held fixed: they come after)."""
    L, D = v_LxD.shape
    logits = []
    for batch in batches:
        B, T = batch.inputs["tokens"].shape
        add_LxBxD = np.zeros((L, B, D), np.float32)
        add_LxBxD[layer] = np.float32(alpha) * v_LxD[layer]
        at_BxT = np.zeros((B, T), np.float32)
        at_BxT[:, : batch.read_valid_BxR.shape[1]] = batch.read_valid_BxR
        logits.append(forward(params, batch.inputs, add_LxBxD, at_BxT)[0])
    return logits


def mean_over_read(valid_BxR, values_BxR) -> np.ndarray:
    """[B]: each example's mean of `values` over its valid read positions."""
    return np.where(valid_BxR, values_BxR, 0.0).sum(1) / np.maximum(valid_BxR.sum(1), 1)


def mode_readout(logits, batches, swi: int) -> dict:
    """Means over the held-out examples: P(<swi>) over the text positions before the span (`p`),
    its log-odds (`margin`), the entropy there, and P(<swi>) at the decision position."""
    parts = {"p": [], "margin": [], "entropy": [], "decision_p": [], "row": []}
    for logits_BxRxV, batch in zip(logits, batches):
        log_p_BxRxV = log_softmax(logits_BxRxV)
        log_p_BxR = log_p_BxRxV[..., swi]
        log_odds_BxR = log_p_BxR - np.log1p(-np.minimum(np.exp(log_p_BxR), 1 - 1e-12))
        mean = functools.partial(mean_over_read, batch.read_valid_BxR)
        parts["p"].append(mean(np.exp(log_p_BxR)))
        parts["margin"].append(mean(log_odds_BxR))
        parts["entropy"].append(mean(entropy(log_p_BxRxV)))
        parts["decision_p"].append(np.exp(log_p_BxR[np.arange(len(batch.row_B)), batch.decision_B]))
        parts["row"].append(batch.row_B)
    joined = {k: np.concatenate(v) for k, v in parts.items()}
    held_out = joined.pop("row") % 2 == 1
    return {k: float(v[held_out].mean()) for k, v in joined.items()}


def mode_report(run, examples, *, batch_size: int, alphas=ALPHAS, progress: bool = False) -> dict:
    """The latent-vs-text-mode concept at one checkpoint (module docstring)."""
    batches = mode_batches(run, examples, batch_size)
    swi = run.tokenizer.id_of(SPECIAL.swi)
    forward = make_read_forward(run.graphdef)
    L = run.cfg.model.n_layers
    base = [forward(run.params, b.inputs) for b in batches]
    rows = [(np.asarray(s)[b.state_valid_BxS], b.state_label_BxS[b.state_valid_BxS],
             np.broadcast_to(b.row_B[:, None], b.state_valid_BxS.shape)[b.state_valid_BxS]) for (_, s), b in zip(base, batches)]
    x_NxLxD, label_N, row_N = (np.concatenate(parts) for parts in zip(*rows))
    fit_N, test_N = example_split(row_N)
    if len(np.unique(label_N[fit_N])) < 2 or not test_N.any():
        raise DataError(f"{len(examples)} examples give too few slot and text states to fit on half and score the other")
    mean_diff_LxD = mean_difference(x_NxLxD[fit_N], label_N[fit_N])
    probe_LxD, separability_L = probe_directions(x_NxLxD, label_N, fit_N, test_N)
    norm_L = np.linalg.norm(x_NxLxD[fit_N & (label_N == 0)], axis=2).mean(0)  # the steered (text-mode) positions'
    v_LxD = unit_times_norm(mean_diff_LxD, norm_L).astype(np.float32)

    def measure(layer, alpha):
        logits = mode_steered_logits(forward, run.params, batches, v_LxD, layer, alpha)
        bit_equal = all(np.array_equal(np.asarray(lg), np.asarray(b[0])) for lg, b in zip(logits, base))
        return mode_readout(logits, batches, swi), bit_equal

    grids, alpha0_equal = sweep(L, alphas, measure, progress, f"steer mode, step {run.step}")
    base_logits = [np.asarray(lg) for lg, _ in base]
    base_out = mode_readout(base_logits, batches, swi)
    decided = np.concatenate([lg[np.arange(len(b.row_B)), b.decision_B].argmax(-1) == swi for lg, b in zip(base_logits, batches)])
    example_rows = np.concatenate([b.row_B for b in batches])
    return {
        "step": int(run.step), "stage": run.meta.get("stage"), "n_fit": int(fit_N.sum()), "n_test": int(test_N.sum()),
        "accuracy": float(decided[example_rows % 2 == 1].mean()), "base_p_swi": base_out["p"],
        "base_decision_p_swi": base_out["decision_p"], "base_entropy": base_out["entropy"],
        "separability": separability_L.tolist(),
        "mean_difference_separability": nearest_mean_accuracy(x_NxLxD, label_N, fit_N, test_N).tolist(),
        "slope": slopes(alphas, grids["p"]), "margin_slope": slopes(alphas, grids["margin"]),
        "decision_slope": slopes(alphas, grids["decision_p"]),
        "p_swi": grids["p"].tolist(), "decision_p_swi": grids["decision_p"].tolist(), "entropy": grids["entropy"].tolist(),
        "entropy_slope": slopes(alphas, grids["entropy"]),
        "steering_norm": norm_L.tolist(), "alpha0_bit_equal": bool(alpha0_equal),
        "directions": {"mean_difference": mean_diff_LxD, "probe": probe_LxD},
    }


# ----------------------------------------------------------------------------- across checkpoints


def checkpoint_steps(run) -> list[int]:
    """The run's checkpoint steps up to the loaded one, in order."""
    from latent.run import checkpoint as ckpt

    manager = ckpt.make_manager(run.workdir, run.cfg.checkpoint)
    return sorted(step for step in manager.all_steps() if step <= run.step)


def across_checkpoints(reports: list[dict]) -> dict:
    """Cosines of each layer's directions between consecutive checkpoints and with the last one."""
    out = {}
    for kind in ("mean_difference", "probe"):
        directions = [r["directions"][kind] for r in reports]
        out[kind] = {
            "consecutive": [_numbers(cosine(a, b)) for a, b in zip(directions, directions[1:])],
            "to_last": [_numbers(cosine(d, directions[-1])) for d in directions],
        }
    return out


def _numbers(values) -> list:
    return [None if not np.isfinite(v) else round(float(v), 4) for v in values]


# ----------------------------------------------------------------------------- report


def plot(summary: dict, out_path, title: str):
    """PNG: layer x checkpoint heatmaps of separability, slope and the mean-difference direction's
    cosine to the last checkpoint, and the entropy at the read position against step."""
    try:
        from matplotlib.figure import Figure

        steps = [c["step"] for c in summary["checkpoints"]]
        layers = summary["layers"]
        figure = Figure(figsize=(15, 3.2 + 0.25 * len(layers)), dpi=100, layout="constrained")
        axes = figure.subplots(1, 4)
        grids = (("separability", "probe accuracy (held out)", "viridis", (0.0, 1.0)),
                 ("slope", f"steerability: d{summary.get('output', 'P(first)')}/dalpha", "RdBu_r", None),
                 ("cosine_to_last", "cos(mean-diff direction, last)", "RdBu_r", (-1.0, 1.0)))
        for ax, (key, label, cmap, limits) in zip(axes, grids):
            if key == "cosine_to_last":
                grid_LxC = np.asarray(summary["cosine"]["mean_difference"]["to_last"], float).T
            else:
                grid_LxC = np.asarray([c[key] for c in summary["checkpoints"]], float).T
            if limits is None:
                bound = float(np.nanmax(np.abs(grid_LxC))) or 1.0
                limits = (-bound, bound)
            image = ax.imshow(grid_LxC, cmap=cmap, vmin=limits[0], vmax=limits[1], aspect="auto", origin="lower")
            ax.set_xticks(range(len(steps)), [str(s) for s in steps], rotation=45, fontsize=7)
            ax.set_yticks(range(len(layers)), layers, fontsize=7)
            ax.set_xlabel("checkpoint step")
            ax.set_title(label, fontsize=8)
            figure.colorbar(image, ax=ax)
        entropy = axes[3]
        entropy.plot(steps, [c["base_entropy"] for c in summary["checkpoints"]], marker="o", color="black", label="alpha 0")
        for a, alpha in enumerate(summary["alphas"]):
            if alpha in (min(summary["alphas"]), max(summary["alphas"])):
                mean_over_layers = [float(np.mean([row[a] for row in c["entropy"]])) for c in summary["checkpoints"]]
                entropy.plot(steps, mean_over_layers, marker=".", linestyle="--", label=f"alpha {alpha:+g} (mean over layers)")
        entropy.set_xlabel("checkpoint step")
        entropy.set_title("entropy at the read position (nats)", fontsize=8)
        entropy.legend(fontsize=7)
        figure.suptitle(title, fontsize=9)
        return save_png(figure, out_path)
    except Exception as err:  # noqa: BLE001 - the numbers must not be lost to a plotting failure
        warn_not_drawn(out_path, err)
        return None


def _cell(value, fmt="{:.2f}") -> str:
    return "-" if value is None or value != value else fmt.format(value)


def table(summary: dict) -> str:
    layers = summary["layers"]
    lines = [f"concept '{summary['concept']}' of a {summary['method']} run: separability (held-out probe accuracy) / "
             f"steerability slope d{summary.get('output', 'P(first)')}/dalpha, per layer"]
    lines.append(f"{'step':>8} {'stage':>5} {'acc':>5} {'H':>5} " + "".join(f"{name:>16}" for name in layers))
    for c in summary["checkpoints"]:
        cells = "".join(f"{_cell(s) + ' / ' + _cell(k, '{:+.3f}'):>16}" for s, k in zip(c["separability"], c["slope"]))
        lines.append(f"{c['step']:>8} {str(c['stage']):>5} {c['accuracy']:>5.2f} {c['base_entropy']:>5.2f} " + cells)
    consecutive = summary["cosine"]["mean_difference"]["consecutive"]
    if consecutive:
        lines.append("cosine of the mean-difference direction with the previous checkpoint's, per layer")
        for c, row in zip(summary["checkpoints"][1:], consecutive):
            lines.append(f"{c['step']:>8} " + "".join(f"{_cell(v):>8}" for v in row))
    else:
        lines.append("one checkpoint: no trend across training and no cosines (keep several: checkpoint.keep)")
    for skipped in summary.get("skipped", []):
        lines.append(f"step {skipped['step']} skipped: {skipped['reason']}")
    lines.append(f"alpha 0 bit-identical to no steering: {summary['alpha0_bit_equal']}; alphas {summary['alphas']} "
                 "times the layer's mean residual norm (the logit margin's slope: margin_slope in the JSON)")
    return "\n".join(lines)


REPORTS = {"option": "checkpoint_report", "node": "node_report", "mode": "mode_report"}


def concept_report(concept: str, run, examples, *, batch_size: int, progress: bool) -> dict:
    """One checkpoint's report for `concept` (module docstring)."""
    return globals()[REPORTS[concept]](run, examples, batch_size=batch_size, progress=progress)


def check_concept(concept: str, run, examples) -> None:
    """Refuses, before any forward pass, a run or data without the concept."""
    from latent.eval.probe import example_graph

    if concept not in OUTPUTS:
        raise ConfigError(f"--steer-concept {concept!r} is not a steering concept; known: {sorted(OUTPUTS)}")
    for index, example in enumerate(examples):  # mode needs no graph: its states are the run's own spans
        if concept == "option":
            first_named_is_right(example, index)
        elif concept == "node":
            example_graph(example, index)
    if concept == "node":
        check_node_run(run)
    if concept == "mode":
        check_mode_run(run)
    if len(examples) < 4:
        raise ConfigError(f"--analysis steering fits on half of the examples and scores on the other: it needs at "
                          f"least 4; got {len(examples)}")


class SteeringAnalysis(Analysis):
    """Separability and steerability of a concept across a run's checkpoints (module docstring)."""

    name = "steering"
    needs_model = True

    def __init__(self, concept: str = CONCEPT):
        if concept not in OUTPUTS:
            raise ConfigError(f"--steer-concept {concept!r} is not a steering concept; known: {sorted(OUTPUTS)}")
        self.concept = concept

    def standalone(self, run, examples, *, out, progress: bool = True) -> dict:
        from latent.run import load_run

        concept = self.concept
        check_concept(concept, run, examples)
        steps = checkpoint_steps(run)
        reports, skipped = [], []
        for step in tqdm(steps, desc="checkpoints", disable=not progress):
            checkpoint = run if step == run.step else load_run(run.workdir, step=step)
            checkpoint = dataclasses.replace(checkpoint, cfg=run.cfg)  # the caller's eval settings at every step
            try:
                reports.append(concept_report(concept, checkpoint, examples, batch_size=run.cfg.eval.batch_size,
                                              progress=progress))
            except NoSlots as why:  # an early SWITCH checkpoint before its curriculum hides a step
                skipped.append({"step": int(step), "reason": str(why)})
        if not reports:
            raise ConfigError(f"--steer-concept {concept}: no checkpoint of {run.workdir} has latent slots "
                              f"({'; '.join(s['reason'] for s in skipped)})")
        cosines = across_checkpoints(reports)
        for report in reports:
            del report["directions"]
        summary = {
            "concept": concept, "output": OUTPUTS[concept], "method": states_method(run), "alphas": list(ALPHAS),
            "layers": [f"block {layer}" for layer in range(1, run.cfg.model.n_layers + 1)],
            "steps": [r["step"] for r in reports], "checkpoints": reports, "cosine": cosines,
            "alpha0_bit_equal": all(r["alpha0_bit_equal"] for r in reports),
            "steering": STEERING[concept],
        }
        if skipped:
            summary["skipped"] = skipped
        path = plot(summary, out.with_suffix(".png"),
                    f"{run.workdir}: concept '{concept}' across {len(reports)} checkpoints")
        return summary | {"plot": None if path is None else str(path)}

    def table(self, summary: dict) -> str:
        return table(summary)


STEERING = {
    "option": "mean-difference direction, unit norm times the layer's mean residual norm, added after the block at "
              "the read position only",
    "node": "the target node's mean-difference direction (its class mean minus the others'), unit norm times the "
            "layer's mean residual norm at node positions, added after the block at one written step's node "
            "position per example",
    "mode": "mean-difference direction (latent slots minus text positions), unit norm times the layer's mean "
            "residual norm at text positions, added after the block at every text position before <swi>",
}


def states_method(run) -> str:
    from latent.methods import method_of

    name = method_of(run.cfg).name
    return run.cfg.latent.mode if name in states.LATENT_METHODS else f"{name} ({run.cfg.task.format})"
