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

Not (yet) concepts here: "in latent mode vs in text mode" (states at slots against written
positions; its output, P(</swi>) at a SWITCH slot, would need the recurrence re-run under steering,
and Coconut never predicts its <eot>) and a node's identity (many classes: latent.eval.probe reads it).

Which checkpoints: every checkpoint of the run up to the one loaded (eval.py --step N, default the
latest), in step order; with a single one the trends and cosines are empty (said in the table).
"""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from latent.data.parts import encode_parts
from latent.data.pipeline import collate, tokenize_examples
from latent.errors import ConfigError, DataError
from latent.eval import states
from latent.eval.analyses import Analysis
from latent.eval.figures import save_png, warn_not_drawn
from latent.eval.interventions import suffix_answer_fields, two_way_answer
from latent.eval.probe import fit_probes, probe_probabilities
from latent.nn.recurrence import continuous_thought_forward

ALPHAS = (-0.5, -0.25, 0.0, 0.25, 0.5)  # times the layer's mean residual norm
PROBE_STEPS = 300
CONCEPT = "option"
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


def latent_sequences(run, examples, batch_size: int) -> list[Sequences]:
    """A Coconut or SWITCH run's batches at its checkpoint's stage, the slots filled by the recurrence."""
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
        indices = [r.source_index for r in chunk]
        answer = suffix_answer_fields(batch, chunk, [examples[i] for i in indices], tokenizer)
        B, P = batch["prefix"].shape
        inputs = {k: batch[k] for k in ("prefix", "prefix_mask", "latent_mask", "suffix", "suffix_mask")}
        slots_BxKxD = np.asarray(slot_inputs(run.params, inputs), np.float32)
        D = slots_BxKxD.shape[-1]
        S = batch["suffix"].shape[1]
        out.append(Sequences(
            tokens_BxT=np.concatenate([batch["prefix"], np.zeros((B, K), np.int32), batch["suffix"]], 1),
            padding_BxT=np.concatenate([batch["prefix_mask"], batch["latent_mask"], batch["suffix_mask"]], 1),
            position_B=(P + K + answer["position"]).astype(np.int32),
            first_id_B=None, second_id_B=None, label_B=None,
            embeds_BxTxD=np.concatenate([np.zeros((B, P, D), np.float32), slots_BxKxD, np.zeros((B, S, D), np.float32)], 1),
            embed_mask_BxT=np.concatenate([np.zeros((B, P), bool), np.ones((B, K), bool), np.zeros((B, S), bool)], 1),
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
                 ("slope", "steerability: dP(first)/dalpha", "RdBu_r", None),
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
             f"steerability slope dP(first)/dalpha, per layer"]
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
    lines.append(f"alpha 0 bit-identical to no steering: {summary['alpha0_bit_equal']}; alphas {summary['alphas']} "
                 "times the layer's mean residual norm (the logit margin's slope: margin_slope in the JSON)")
    return "\n".join(lines)


class SteeringAnalysis(Analysis):
    """Separability and steerability of the option concept across a run's checkpoints (module docstring)."""

    name = "steering"
    needs_model = True

    def standalone(self, run, examples, *, out, progress: bool = True) -> dict:
        from latent.run import load_run

        for index, example in enumerate(examples):  # a task without the concept fails before any forward pass
            first_named_is_right(example, index)
        if len(examples) < 4:
            raise ConfigError(f"--analysis steering fits on half of the examples and scores on the other: it needs at "
                              f"least 4; got {len(examples)}")
        steps = checkpoint_steps(run)
        reports = []
        for step in tqdm(steps, desc="checkpoints", disable=not progress):
            checkpoint = run if step == run.step else load_run(run.workdir, step=step)
            checkpoint = dataclasses.replace(checkpoint, cfg=run.cfg)  # the caller's eval settings at every step
            reports.append(checkpoint_report(checkpoint, examples, batch_size=run.cfg.eval.batch_size, progress=progress))
        cosines = across_checkpoints(reports)
        for report in reports:
            del report["directions"]
        summary = {
            "concept": CONCEPT, "method": states_method(run), "alphas": list(ALPHAS),
            "layers": [f"block {layer}" for layer in range(1, run.cfg.model.n_layers + 1)],
            "steps": steps, "checkpoints": reports, "cosine": cosines,
            "alpha0_bit_equal": all(r["alpha0_bit_equal"] for r in reports),
            "steering": "mean-difference direction, unit norm times the layer's mean residual norm, added after "
                        "the block at the read position only",
        }
        path = plot(summary, out.with_suffix(".png"), f"{run.workdir}: concept '{CONCEPT}' across {len(steps)} checkpoints")
        return summary | {"plot": None if path is None else str(path)}

    def table(self, summary: dict) -> str:
        return table(summary)


def states_method(run) -> str:
    from latent.methods import method_of

    name = method_of(run.cfg).name
    return run.cfg.latent.mode if name in states.LATENT_METHODS else f"{name} ({run.cfg.task.format})"
