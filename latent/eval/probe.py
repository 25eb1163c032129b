"""Trained linear probes on the states at each reasoning step (`eval.py --analysis probe`): what a
Coconut or SWITCH run's latent slots, or a CoT run's written steps, hold of the question's graph.

States (latent.eval.states): per example, at each step position r (a latent slot, or the token
before a written step's node) and each layer l (0: the position's input; l: after block l).

Targets, on graph questions (ProsQA, ProntoQA: `meta` holds `idx_to_symbol`, `edges`, `root`):
- node: at the position of reasoning step s (0-based), the node the gold chain reaches after
  step s + 1, i.e. the node the step's statement concludes (its last word). Classes are node
  names, the union over the examples' graphs.
- frontier (Coconut's breadth-first reading, Hao et al. 2024, Sec. 5): the nodes at s + 1 hops
  from the root (shortest distance), the frontier a breadth-first search has reached after
  step s + 1. The node probe's softmax mass on them (`frontier`) against the mass on the other
  nodes of the example's graph (`other`), and on the gold node (`gold`): a state that holds
  the whole frontier spreads its mass over it rather than putting it all on the gold node.

Probe: multinomial logistic regression per (step, layer), on features standardised with the
train part's mean and std, fitted full-batch with Adam for PROBE_STEPS steps with an L2 penalty
(weight decay) on the weights. It is fitted on the run's training examples (the first
TRAIN_EXAMPLES of its train split, minus any question of the evaluated examples) and scored on the
evaluated examples (the validation split, or --data): disjoint examples. The shuffled-label control
is the same probe fitted on the training labels permuted across examples (per step): it must sit
at chance, the accuracy of always naming the training part's most frequent node (`chance`).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from latent.data.splits import load_splits
from latent.errors import DataError
from latent.eval.analyses import Analysis
from latent.eval.chains import reached_node
from latent.eval.figures import save_png, warn_not_drawn
from latent.eval.states import StepStates, step_states

TRAIN_EXAMPLES = 2000  # probe training examples from the run's train split
PROBE_STEPS = 500  # full-batch Adam steps
PROBE_LR = 0.02
PROBE_L2 = 1e-3  # times the sum of squared weights, per probe
GRAPH_FIELDS = ("idx_to_symbol", "edges", "root")


# ----------------------------------------------------------------------------- graph targets


@dataclasses.dataclass(frozen=True)
class Graph:
    """An example's graph: node names, the gold chain and every node's hops from the root."""

    names: tuple[str, ...]
    path: tuple[int, ...]  # node indices: the root, then the node each step reaches
    hops: dict[int, int]  # shortest distance from the root, for the nodes it reaches

    def frontier(self, step: int) -> list[int]:
        """The nodes at step + 1 hops from the root: the frontier after reasoning step `step` (0-based)."""
        return [node for node, hops in self.hops.items() if hops == step + 1]


def example_graph(example, index: int) -> Graph:
    """The graph of `example` (the `index`-th given), its gold chain read from the steps' last words."""
    meta = example.meta or {}
    missing = [field for field in GRAPH_FIELDS if field not in meta]
    if missing:
        raise DataError(f"example {index} has no graph (meta lacks {missing}): --analysis probe reads graph questions "
                        f"(ProsQA, ProntoQA), whose meta holds {list(GRAPH_FIELDS)}")
    names = tuple(meta["idx_to_symbol"])
    node_of = {name: i for i, name in enumerate(names)}
    path = [int(meta["root"])]
    for j, step in enumerate(example.steps):
        node = reached_node(step)
        if node not in node_of:
            raise DataError(f"example {index}, step {j + 1} ({step!r}): its last word is not a node of the graph "
                            f"(idx_to_symbol); the probe's target is the node each step reaches")
        path.append(node_of[node])
    return Graph(names, tuple(path), _hops(len(names), meta["edges"], path[0]))


def _hops(n_nodes: int, edges, root: int) -> dict[int, int]:
    """Breadth-first: each node the root reaches, with its shortest distance in edges."""
    children = [[] for _ in range(n_nodes)]
    for parent, child in edges:
        children[int(parent)].append(int(child))
    hops, layer, depth = {root: 0}, [root], 0
    while layer:
        depth += 1
        layer = list(dict.fromkeys(c for node in layer for c in children[node] if c not in hops))
        hops.update({node: depth for node in layer})
    return hops


@dataclasses.dataclass(frozen=True)
class Targets:
    """Per example and step position: the node class (-1: none), the frontier and graph classes."""

    label_NxR: np.ndarray  # int
    frontier_NxRxC: np.ndarray  # bool
    graph_NxC: np.ndarray  # bool: the example's graph nodes


def step_targets(graphs: list[Graph], step_NxR: np.ndarray, classes: dict[str, int]) -> Targets:
    """The targets of each (example, step position): step_NxR the reasoning step (0-based, -1 none)."""
    N, R = step_NxR.shape
    C = len(classes)
    label_NxR = np.full((N, R), -1, np.int32)
    frontier_NxRxC = np.zeros((N, R, C), bool)
    graph_NxC = np.zeros((N, C), bool)
    for n, graph in enumerate(graphs):
        graph_NxC[n, [classes[name] for name in graph.names]] = True
        for r, step in enumerate(step_NxR[n]):
            if 0 <= step < len(graph.path) - 1:  # a slot past the example's last step has no node
                label_NxR[n, r] = classes[graph.names[graph.path[step + 1]]]
                frontier_NxRxC[n, r, [classes[graph.names[node]] for node in graph.frontier(step)]] = True
    return Targets(label_NxR, frontier_NxRxC, graph_NxC)


# ----------------------------------------------------------------------------- probes


class Probes(NamedTuple):
    """P independent linear probes: standardisation and softmax regression weights."""

    mean_PxD: jax.Array
    scale_PxD: jax.Array
    w_PxDxC: jax.Array
    b_PxC: jax.Array


def fit_probes(x_PxNxD, label_PxN, n_classes: int, *, steps: int = PROBE_STEPS, lr: float = PROBE_LR,
               l2: float = PROBE_L2) -> Probes:
    """P softmax regressions, probe p on the rows of x[p] whose label[p] >= 0 (others ignored).
    Their losses are summed, and Adam scales each parameter on its own: every probe trains as if alone."""
    x_PxNxD = jnp.asarray(x_PxNxD, jnp.float32)
    label_PxN = jnp.asarray(label_PxN, jnp.int32)
    return _fit(x_PxNxD, label_PxN, n_classes, steps, lr, l2)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _fit(x_PxNxD, label_PxN, n_classes, steps, lr, l2):
    used_PxN = (label_PxN >= 0).astype(jnp.float32)
    count_Px1 = jnp.maximum(used_PxN.sum(1, keepdims=True), 1.0)
    mean_PxD = jnp.einsum("pn,pnd->pd", used_PxN, x_PxNxD) / count_Px1
    var_PxD = jnp.einsum("pn,pnd->pd", used_PxN, (x_PxNxD - mean_PxD[:, None]) ** 2) / count_Px1
    scale_PxD = jax.lax.rsqrt(var_PxD + 1e-6)
    P, _, D = x_PxNxD.shape
    params = (jnp.zeros((P, D, n_classes)), jnp.zeros((P, n_classes)))
    optimizer = optax.adam(lr)

    def loss(params):
        w_PxDxC, b_PxC = params
        logits_PxNxC = _logits(Probes(mean_PxD, scale_PxD, w_PxDxC, b_PxC), x_PxNxD)
        ce_PxN = optax.softmax_cross_entropy_with_integer_labels(logits_PxNxC, jnp.maximum(label_PxN, 0))
        per_probe_P = (ce_PxN * used_PxN).sum(1) / count_Px1[:, 0] + l2 * (w_PxDxC**2).sum((1, 2))
        return per_probe_P.sum()

    def step(carry, _):
        params, state = carry
        updates, state = optimizer.update(jax.grad(loss)(params), state)
        return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), None, length=steps)
    return Probes(mean_PxD, scale_PxD, *params)


def _logits(probes: Probes, x_PxNxD):
    z_PxNxD = (x_PxNxD - probes.mean_PxD[:, None]) * probes.scale_PxD[:, None]
    return jnp.einsum("pnd,pdc->pnc", z_PxNxD, probes.w_PxDxC) + probes.b_PxC[:, None]


def probe_probabilities(probes: Probes, x_PxNxD) -> np.ndarray:
    """[P, N, C]: each probe's softmax over the classes at each row."""
    return np.asarray(jax.nn.softmax(_logits(probes, jnp.asarray(x_PxNxD, jnp.float32)), axis=-1))


def accuracy(probs_PxNxC: np.ndarray, label_PxN: np.ndarray) -> np.ndarray:
    """[P]: argmax accuracy over the rows with a label (nan for a probe with none)."""
    used_PxN = label_PxN >= 0
    right_PxN = (probs_PxNxC.argmax(-1) == label_PxN) & used_PxN
    return right_PxN.sum(1) / np.where(used_PxN.sum(1) > 0, used_PxN.sum(1), np.nan)


def shuffled_labels(label_PxN: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each probe's labels permuted across its labelled rows (the control: same classes, same
    frequencies, no relation to the states)."""
    out = label_PxN.copy()
    for p in range(len(out)):
        used = np.flatnonzero(out[p] >= 0)
        out[p, used] = out[p, rng.permutation(used)]
    return out


def majority_chance(train_label_N: np.ndarray, test_label_N: np.ndarray) -> float | None:
    """Test accuracy of always naming the most frequent training class (None without labels)."""
    train, test = train_label_N[train_label_N >= 0], test_label_N[test_label_N >= 0]
    if not len(train) or not len(test):
        return None
    return float(np.mean(test == np.bincount(train).argmax()))


# ----------------------------------------------------------------------------- the analysis


def by_position_and_layer(states: StepStates) -> np.ndarray:
    """[R * (L + 1), N, D]: the states grouped by probe, probe p = r * (L + 1) + l."""
    N, R, L1, D = states.states_NxRxLxD.shape
    return np.transpose(states.states_NxRxLxD, (1, 2, 0, 3)).reshape(R * L1, N, D)


def per_probe(label_NxR: np.ndarray, n_layers: int) -> np.ndarray:
    """[R * (L + 1), N]: each position's labels, repeated for every layer's probe."""
    return np.repeat(label_NxR.T, n_layers, axis=0)


def probe_states(train: StepStates, train_graphs, test: StepStates, test_graphs, *, seed: int = 0,
                 steps: int = PROBE_STEPS) -> dict:
    """The probes' scores (lists [R][L + 1]) with the control, chance and frontier masses."""
    names = sorted({name for graph in (*train_graphs, *test_graphs) for name in graph.names})
    classes = {name: c for c, name in enumerate(names)}
    R = max(train.states_NxRxLxD.shape[1], test.states_NxRxLxD.shape[1])
    train_t = step_targets(train_graphs, _widen(train.step_NxR, R), classes)
    test_t = step_targets(test_graphs, _widen(test.step_NxR, R), classes)
    L1 = test.n_layers
    x_train, x_test = by_position_and_layer(_pad(train, R)), by_position_and_layer(_pad(test, R))
    y_train, y_test = per_probe(train_t.label_NxR, L1), per_probe(test_t.label_NxR, L1)

    probes = fit_probes(x_train, y_train, len(names), steps=steps)
    probs_PxNxC = probe_probabilities(probes, x_test)
    control = fit_probes(x_train, shuffled_labels(y_train, np.random.default_rng(seed)), len(names), steps=steps)
    control_PxNxC = probe_probabilities(control, x_test)

    def grid(values_P):
        return [[_number(v) for v in row] for row in np.asarray(values_P).reshape(R, L1)]

    frontier_PxN = per_probe_mass(probs_PxNxC, np.repeat(np.transpose(test_t.frontier_NxRxC, (1, 0, 2)), L1, axis=0))
    others_NxRxC = test_t.graph_NxC[:, None, :] & ~test_t.frontier_NxRxC
    other_PxN = per_probe_mass(probs_PxNxC, np.repeat(np.transpose(others_NxRxC, (1, 0, 2)), L1, axis=0))
    gold_PxN = np.take_along_axis(probs_PxNxC, np.maximum(y_test, 0)[..., None], axis=-1)[..., 0]
    used_PxN = y_test >= 0

    def mean_mass(mass_PxN):
        return grid(np.where(used_PxN, mass_PxN, 0).sum(1) / np.maximum(used_PxN.sum(1), 1))

    labelled_test_R = (test_t.label_NxR >= 0).sum(0)
    frontier_size = [float(test_t.frontier_NxRxC[:, r][test_t.label_NxR[:, r] >= 0].sum(-1).mean())
                     if labelled_test_R[r] else None for r in range(R)]
    return {
        "accuracy": grid(accuracy(probs_PxNxC, y_test)),
        "control": grid(accuracy(control_PxNxC, y_test)),
        "chance": [majority_chance(train_t.label_NxR[:, r], test_t.label_NxR[:, r]) for r in range(R)],
        "uniform_chance": 1.0 / len(names),
        "n_classes": len(names),
        "n_train_per_position": (train_t.label_NxR >= 0).sum(0).tolist(),
        "n_test_per_position": labelled_test_R.tolist(),
        "frontier": {"frontier_mass": mean_mass(frontier_PxN), "other_mass": mean_mass(other_PxN),
                     "gold_mass": mean_mass(gold_PxN), "mean_frontier_size": frontier_size,
                     "mean_graph_size": float(test_t.graph_NxC.sum(1).mean()) if len(test_graphs) else None},
    }


def per_probe_mass(probs_PxNxC: np.ndarray, chosen_PxNxC: np.ndarray) -> np.ndarray:
    return (probs_PxNxC * chosen_PxNxC).sum(-1)


def _widen(step_NxR: np.ndarray, R: int) -> np.ndarray:
    return np.pad(step_NxR, ((0, 0), (0, R - step_NxR.shape[1])), constant_values=-1)


def _pad(states: StepStates, R: int) -> StepStates:
    """`states` with R positions (a CoT test split whose longest chain is shorter than the train's)."""
    extra = R - states.states_NxRxLxD.shape[1]
    if extra == 0:
        return states
    padded = np.pad(states.states_NxRxLxD, ((0, 0), (0, extra), (0, 0), (0, 0)))
    return dataclasses.replace(states, states_NxRxLxD=padded, valid_NxR=np.pad(states.valid_NxR, ((0, 0), (0, extra))),
                               step_NxR=_widen(states.step_NxR, R))


def _number(value) -> float | None:
    value = float(value)
    return None if np.isnan(value) else round(value, 4)


def position_labels(states: StepStates) -> list[str]:
    """A name per step position: `slot r (step s)` for latent runs, `step s` for written steps (1-based)."""
    labels = []
    for r in range(states.states_NxRxLxD.shape[1]):
        steps = states.step_NxR[:, r][states.valid_NxR[:, r]]
        step = f"step {int(np.bincount(steps).argmax()) + 1}" if len(steps) else "no step"
        labels.append(f"slot {r + 1} ({step})" if states.kind == "latent" else step)
    return labels


def plot_probes(summary: dict, out_path: Path, title: str) -> Path | None:
    """PNG: accuracy heatmap (position x layer), accuracy against layer with the control and chance,
    and the frontier / other / gold masses against layer. A plotting failure is reported, not raised."""
    try:
        from matplotlib.figure import Figure  # no pyplot: no global state, no display backend

        acc_RxL = np.asarray(summary["accuracy"], dtype=float)
        R, L1 = acc_RxL.shape
        layers = summary["layers"]
        figure = Figure(figsize=(13, 1.8 + 0.45 * max(R, 4)), dpi=100, layout="constrained")
        heat, lines, masses = figure.subplots(1, 3)
        image = heat.imshow(acc_RxL, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        for r in range(R):
            for layer in range(L1):
                if not np.isnan(acc_RxL[r, layer]):
                    heat.text(layer, r, f"{acc_RxL[r, layer]:.2f}", ha="center", va="center", fontsize=7,
                              color="black" if acc_RxL[r, layer] > 0.6 else "white")
        heat.set_xticks(range(L1), layers, rotation=45, fontsize=7)
        heat.set_yticks(range(R), summary["positions"], fontsize=7)
        heat.set_title("node probe accuracy (held out)", fontsize=8)
        figure.colorbar(image, ax=heat)
        colors = [f"C{r}" for r in range(R)]
        for r in range(R):
            lines.plot(range(L1), acc_RxL[r], marker="o", color=colors[r], label=summary["positions"][r])
            lines.plot(range(L1), np.asarray(summary["control"][r], dtype=float), ls="--", color=colors[r], alpha=0.6)
            if summary["chance"][r] is not None:
                lines.axhline(summary["chance"][r], ls=":", color=colors[r], alpha=0.6)
            frontier = summary["frontier"]
            masses.plot(range(L1), np.asarray(frontier["frontier_mass"][r], float), marker="o", color=colors[r],
                        label=f"{summary['positions'][r]}: frontier")
            masses.plot(range(L1), np.asarray(frontier["gold_mass"][r], float), ls="--", color=colors[r], label="gold")
            masses.plot(range(L1), np.asarray(frontier["other_mass"][r], float), ls=":", color=colors[r], label="other")
        lines.set_title("accuracy (-- shuffled-label control, : chance)", fontsize=8)
        masses.set_title("probe mass: frontier (o), gold (--), other nodes (:)", fontsize=8)
        for axes in (lines, masses):
            axes.set_xticks(range(L1), layers, rotation=45, fontsize=7)
            axes.set_ylim(0, 1)
        lines.legend(fontsize=7)
        figure.suptitle(title, fontsize=9)
        return save_png(figure, out_path)
    except Exception as err:  # noqa: BLE001 - e.g. a broken matplotlib install must not lose the numbers
        warn_not_drawn(out_path, err)
        return None


def table(summary: dict) -> str:
    """Accuracy per position and layer, the control and chance beside it, then the frontier masses."""
    layers, width = summary["layers"], 9

    def cells(values):
        return "".join(f"{'-' if v is None else f'{v:.3f}':>{width}}" for v in values)

    head = f"{'':<18}" + "".join(f"{name:>{width}}" for name in layers)
    lines = [f"node probe accuracy (held out) of a {summary['method']} run, {summary['kind']} states", head]
    for r, label in enumerate(summary["positions"]):
        chance = summary["chance"][r]
        lines.append(f"{label:<18}" + cells(summary["accuracy"][r])
                     + f"   chance {'-' if chance is None else f'{chance:.3f}'}, n={summary['n_test_per_position'][r]}")
        lines.append(f"{'  control':<18}" + cells(summary["control"][r]))
    frontier = summary["frontier"]
    lines.append("probe mass on frontier / other graph nodes / gold node")
    for r, label in enumerate(summary["positions"]):
        lines.append(f"{label:<18}" + "".join(
            f"{'-' if f is None else f'{f:.2f}/{o:.2f}/{g:.2f}':>{width + 6}}"
            for f, o, g in zip(frontier["frontier_mass"][r], frontier["other_mass"][r], frontier["gold_mass"][r])))
    lines.append(f"n_train={summary['n_train']} n_test={summary['n_test']} classes={summary['n_classes']} "
                 f"(uniform chance {summary['uniform_chance']:.3f})")
    return "\n".join(lines)


def train_examples(cfg, test_examples, limit: int):
    """The probe's training examples: the first `limit` of the run's train split whose question is
    not one of the evaluated examples'."""
    held_out = {e.question for e in test_examples}
    train, _, _ = load_splits(cfg)
    return [e for e in train if e.question not in held_out][:limit]


class ProbeAnalysis(Analysis):
    """Node and frontier probes per step position and layer (module docstring)."""

    name = "probe"
    needs_model = True

    def __init__(self, train_limit: int = TRAIN_EXAMPLES, steps: int = PROBE_STEPS):
        self.train_limit, self.steps = train_limit, steps

    def standalone(self, run, examples, *, out: Path, progress: bool = True) -> dict:
        train_list = train_examples(run.cfg, examples, self.train_limit)
        # the graphs first: a task without them fails before any forward pass
        for source, name in ((examples, "evaluated"), (train_list, "training")):
            if not source:
                raise DataError(f"--analysis probe has no {name} examples to read")
            example_graph(source[0], 0)
        train = step_states(run, train_list, progress=progress)
        test = step_states(run, examples, progress=progress)
        train_graphs = [example_graph(train_list[i], int(i)) for i in train.source_index_N]
        test_graphs = [example_graph(examples[i], int(i)) for i in test.source_index_N]
        scores = probe_states(train, train_graphs, test, test_graphs, seed=run.cfg.train.seed, steps=self.steps)
        summary = {
            "method": test.method, "kind": test.kind, "stage": test.stage,
            "positions": position_labels(_pad(test, len(scores["accuracy"]))),
            "layers": ["input"] + [f"block {layer}" for layer in range(1, test.n_layers)],
            "n_train": len(train_graphs), "n_test": len(test_graphs), "skipped": len(examples) - len(test_graphs),
            **scores,
            "probe": {"steps": self.steps, "lr": PROBE_LR, "l2": PROBE_L2, "train_examples": "the run's train split"},
        }
        title = f"{run.workdir} step {run.step}: {test.method} ({test.kind} states)"
        plot = plot_probes(summary, Path(out).with_suffix(".png"), title)
        return summary | {"plot": None if plot is None else str(plot)}

    def table(self, summary: dict) -> str:
        return table(summary)
