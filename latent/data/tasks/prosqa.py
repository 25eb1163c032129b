"""ProsQA-style graph reasoning (Coconut, Hao et al. 2024): "Is Tom a lempus or scrompus?".

A question lists the edges of a random DAG as sentences ("Every terpus is a brimpus.", "Tom is
a terpus."), shuffled, and asks which of two concepts a person is: the target, reachable from
the person, or the distractor (`neg_target`), which is not. The steps are the statements of a
shortest path from the person to the target, one per step, and the answer is
"Tom is a <target>.".

How a graph is grown (Coconut's Algorithm 1, with the changes noted):

* Nodes 0 and 1 are people; one of them becomes the root, the other the distractor's owner.
  Each node carries a label, a bit set of which of the two it descends from (1, 2, both: 3;
  0 for neither).
* Each new concept draws its number of parents from a Poisson(`mean_in_degree`) distribution,
  conditioned on being at least 1 (the real file has almost no parentless concepts), and, with
  probability `one_side_prob` each, may only pick parents outside person 1's or person 0's
  descendants; otherwise any node. Parents are drawn without replacement with weight
  1 + `depth_weight` * depth (depth = hops from the nearest person), which favours long chains.
* With probability `new_person_prob` a new person (label 0) is added as an extra parent, like
  the real file's occasional third, fourth... person who points at a single concept.
* The target is the deepest childless concept that descends from the root but not from the
  other initial person, at a distance within `path_length`; the distractor is a random childless
  concept that descends from the other person, not from the root, and is no farther from its
  person than the target is from the root (true of every real example). The root is whichever
  initial person has the deeper target (in the real file the root's side is the deeper one).
  A graph without a valid pair is discarded and regrown.

The defaults reproduce the real validation file's node, edge, path-length and question-length
statistics (`scripts/prosqa_stats.py`, `docs/data.md`); `size="small"` gives ~11-node graphs
and 2-3-step paths for quick CPU runs, "tiny" ~8 nodes, and "mini" ~6 nodes with as many 3-step
as 2-step paths (`uniform_path_length`).
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import deque

from latent.data.tasks.base import Example, Task, check_count
from latent.data.tasks.names import PROSQA_CONCEPTS, PROSQA_PERSONS

ROOT_SIDE, OTHER_SIDE = 1, 2  # label bits: descends from person 0 / person 1


@dataclasses.dataclass(frozen=True)
class ProsQAConfig:
    """Knobs of the graph generator; ranges are inclusive (low, high)."""

    num_nodes: tuple[int, int] = (16, 29)  # drawn as low + Binomial(high - low, 1/2)
    mean_in_degree: float = 1.5  # Poisson rate of parents per concept (zero-truncated)
    depth_weight: float = 1.5  # parent weight = 1 + depth_weight * depth
    one_side_prob: float = 0.35  # chance, for each side, that a concept may only join that side
    new_person_prob: float = 0.03  # chance that a concept also gets a new person as a parent
    path_length: tuple[int, int] = (3, 6)  # reasoning steps from the root to the target
    # Draw each example's number of steps uniformly from `path_length` first (regrowing graphs
    # until one has a target that far) instead of taking the deepest target a graph offers. Small
    # graphs rarely hold long paths (`mini` unbalanced: 88% 2-step), and a small decoder trained
    # on such a mix learns to stop after 2 steps rather than to stop at an option.
    uniform_path_length: bool = False
    # Put the distractor exactly as far from its person as the target is from the root. Otherwise
    # small graphs mostly give a 1-hop distractor, and "the option another person directly is,
    # is the wrong one" scores 94% on `mini` questions without following a path (60% on real ones;
    # `latent.eval.chains.no_path_guess`).
    match_distractor_depth: bool = False
    persons: tuple[str, ...] = PROSQA_PERSONS
    concepts: tuple[str, ...] = PROSQA_CONCEPTS
    max_attempts: int = 10_000  # graphs tried per example before giving up

    def __post_init__(self):
        low, high = self.num_nodes
        if not 4 <= low <= high:
            raise ValueError(f"num_nodes must be (low, high) with 4 <= low <= high, got {self.num_nodes}")
        p_low, p_high = self.path_length
        if not 1 <= p_low <= p_high:
            raise ValueError(f"path_length must be (low, high) with 1 <= low <= high, got {self.path_length}")
        if self.mean_in_degree <= 0 or self.depth_weight < 0:
            raise ValueError("mean_in_degree must be > 0 and depth_weight >= 0")
        if not 0 <= self.one_side_prob <= 0.5 or not 0 <= self.new_person_prob < 1:
            raise ValueError("one_side_prob must be in [0, 0.5] and new_person_prob in [0, 1)")
        if len(set(self.persons)) < 2 or len(set(self.concepts)) < high:
            raise ValueError(f"need >= 2 distinct persons and >= {high} distinct concepts (num_nodes high)")


SIZES = {
    "default": ProsQAConfig(),
    "small": ProsQAConfig(num_nodes=(9, 13), mean_in_degree=1.2, path_length=(2, 3)),
    "tiny": ProsQAConfig(num_nodes=(6, 9), mean_in_degree=1.2, path_length=(2, 3)),
    "mini": ProsQAConfig(num_nodes=(5, 7), mean_in_degree=1.2, path_length=(2, 3), uniform_path_length=True),
}


@dataclasses.dataclass
class _Graph:
    """A DAG in generation order: every parent index is smaller than its child's."""

    parents: list[list[int]] = dataclasses.field(default_factory=list)
    is_person: list[bool] = dataclasses.field(default_factory=list)
    label: list[int] = dataclasses.field(default_factory=list)
    depth: list[int] = dataclasses.field(default_factory=list)

    def add(self, parents: list[int], is_person: bool, label: int) -> int:
        self.parents.append(parents)
        self.is_person.append(is_person)
        self.label.append(label)
        self.depth.append(min((self.depth[p] + 1 for p in parents), default=0))
        return len(self.parents) - 1

    def children(self) -> list[list[int]]:
        kids = [[] for _ in self.parents]
        for child, parents in enumerate(self.parents):
            for parent in parents:
                kids[parent].append(child)
        return kids


def _poisson_at_least_one(rng: random.Random, mean: float) -> int:
    """A Poisson(mean) draw conditioned on >= 1 (Knuth's method, redrawn on 0)."""
    while True:
        limit, k, p = math.exp(-mean), 0, 1.0
        while True:
            p *= rng.random()
            if p <= limit:
                break
            k += 1
        if k >= 1:
            return k


def _weighted_sample(rng: random.Random, items: list[int], weights: list[float], k: int) -> list[int]:
    """`k` distinct items, each drawn with probability proportional to its weight."""
    items, weights, chosen = list(items), list(weights), []
    for _ in range(min(k, len(items))):
        i = rng.choices(range(len(items)), weights=weights)[0]
        chosen.append(items.pop(i))
        weights.pop(i)
    return chosen


def _grow_graph(rng: random.Random, cfg: ProsQAConfig) -> _Graph:
    low, high = cfg.num_nodes
    size = low + sum(rng.random() < 0.5 for _ in range(high - low))
    graph = _Graph()
    graph.add([], True, ROOT_SIDE)
    graph.add([], True, OTHER_SIDE)
    num_persons = 2
    while len(graph.parents) < size:
        n_parents = _poisson_at_least_one(rng, cfg.mean_in_degree)
        side = rng.random()
        if side < cfg.one_side_prob:
            allowed = (0, ROOT_SIDE)
        elif side < 2 * cfg.one_side_prob:
            allowed = (0, OTHER_SIDE)
        else:
            allowed = (0, ROOT_SIDE, OTHER_SIDE, ROOT_SIDE | OTHER_SIDE)
        candidates = [i for i, lab in enumerate(graph.label) if lab in allowed]
        weights = [1 + cfg.depth_weight * graph.depth[i] for i in candidates]
        parents = _weighted_sample(rng, candidates, weights, n_parents)
        new_person = (
            rng.random() < cfg.new_person_prob
            and len(graph.parents) + 2 <= size
            and num_persons < len(cfg.persons)
        )
        if new_person:
            parents.append(graph.add([], True, 0))
            num_persons += 1
        label = 0
        for p in parents:
            label |= graph.label[p]
        graph.add(parents, False, label)
    return graph


def _distances(children: list[list[int]], source: int) -> dict[int, int]:
    dist, queue = {source: 0}, deque([source])
    while queue:
        u = queue.popleft()
        for v in children[u]:
            if v not in dist:
                dist[v] = dist[u] + 1
                queue.append(v)
    return dist


def _random_shortest_path(rng: random.Random, graph: _Graph, dist: dict[int, int], target: int) -> list[int]:
    """Node indices of a shortest root -> target path, ties broken at random."""
    path = [target]
    while dist[path[-1]] > 0:
        node = path[-1]
        path.append(rng.choice([p for p in graph.parents[node] if dist.get(p) == dist[node] - 1]))
    return path[::-1]


def _pick_question(rng: random.Random, graph: _Graph, cfg: ProsQAConfig):
    """(root, target, neg_target, path) for this graph, or None if it has no valid question.

    Both initial people are tried as the root and the one with the deeper target wins (ties at
    random): in the real file the root's side is the deeper one (it reaches 12.4 nodes on
    average, the other person 9.1). The distractor is never farther from its person than the
    target is from the root, as in every real example.
    """
    children = graph.children()
    sinks = [v for v in range(len(children)) if not children[v] and not graph.is_person[v]]
    low, high = cfg.path_length
    options = []
    for root in rng.sample((0, 1), 2):
        from_root, from_other = _distances(children, root), _distances(children, 1 - root)
        targets = [v for v in sinks if v in from_root and v not in from_other and low <= from_root[v] <= high]
        if not targets:
            continue
        depth = max(from_root[v] for v in targets)
        distractors = [
            v for v in sinks
            if v not in from_root and v in from_other
            and (from_other[v] == depth if cfg.match_distractor_depth else from_other[v] <= depth)
        ]
        if distractors:
            target = rng.choice([v for v in targets if from_root[v] == depth])
            options.append((depth, root, target, rng.choice(distractors), from_root))
    if not options:
        return None
    depth, root, target, neg_target, from_root = max(options, key=lambda option: option[0])
    return root, target, neg_target, _random_shortest_path(rng, graph, from_root, target)


def _statement(names: list[str], graph: _Graph, parent: int, child: int) -> str:
    if graph.is_person[parent]:
        return f"{names[parent]} is a {names[child]}."
    return f"Every {names[parent]} is a {names[child]}."


def make_example(rng: random.Random, cfg: ProsQAConfig) -> Example:
    """One ProsQA example drawn with `rng` (regrowing graphs until one has a valid question)."""
    pick_cfg = cfg
    if cfg.uniform_path_length:
        steps = rng.randint(*cfg.path_length)
        pick_cfg = dataclasses.replace(cfg, path_length=(steps, steps))
    for _ in range(cfg.max_attempts):
        graph = _grow_graph(rng, cfg)
        picked = _pick_question(rng, graph, pick_cfg)
        if picked is not None:
            break
    else:
        raise RuntimeError(f"no valid ProsQA graph in {cfg.max_attempts} attempts; config too tight: {cfg}")
    root, target, neg_target, path = picked

    person_names = iter(rng.sample(cfg.persons, sum(graph.is_person)))
    concept_names = iter(rng.sample(cfg.concepts, len(graph.is_person) - sum(graph.is_person)))
    names = [next(person_names) if person else next(concept_names) for person in graph.is_person]

    edges = [[parent, child] for child, parents in enumerate(graph.parents) for parent in parents]
    statements = [_statement(names, graph, p, c) for p, c in edges]
    rng.shuffle(statements)
    options = [names[target], names[neg_target]]
    rng.shuffle(options)
    question = " ".join(statements) + f" Is {names[root]} a {options[0]} or {options[1]}?"
    steps = tuple(_statement(names, graph, p, c) for p, c in zip(path, path[1:]))
    meta = {"idx_to_symbol": names, "edges": edges, "root": root, "target": target, "neg_target": neg_target}
    return Example(question=question, steps=steps, answer=f"{names[root]} is a {names[target]}.", meta=meta)


class ProsQA(Task):
    """ProsQA generator; `ProsQA()` matches the real data, `ProsQA("small")` is a CPU-sized variant.

    Keyword arguments override fields of the size's `ProsQAConfig`, e.g.
    `ProsQA("small", path_length=(3, 3))`.
    """

    def __init__(self, size: str = "default", **overrides):
        if size not in SIZES:
            raise ValueError(f"unknown ProsQA size {size!r}; known: {sorted(SIZES)}")
        self.config = dataclasses.replace(SIZES[size], **overrides)
        self.name = "prosqa" if size == "default" else f"prosqa_{size}"

    def generate(self, n: int, seed: int) -> list[Example]:
        rng = random.Random(seed)
        return [make_example(rng, self.config) for _ in range(check_count(n))]
