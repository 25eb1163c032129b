"""What every task shares: the `Example` record and the `Task` interface.

An `Example` is one question with its chain of thought (`steps`) and final `answer`, the layout
of Coconut's JSON files, so generated and loaded data flow through the same pipeline. Anything
task-specific (a ProsQA graph, the factors of a product) rides along in `meta`.

A `Task` generates examples deterministically from a seed (same seed, same list; a shorter list
is a prefix of a longer one) and scores a model's answer (`score`: right or not; `credit`: a
partial credit in [0, 1] for RL rewards, by default the same). Scoring compares normalized strings:
surrounding whitespace, letter case, runs of spaces and one trailing period are forgiven, because
they are formatting, not reasoning; every other character must match.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True)
class Example:
    """One question, its reasoning steps (one statement each) and the answer text."""

    question: str
    steps: tuple[str, ...]
    answer: str
    # Extra information (graph, operands, source keys). Left out of hash() since dicts are
    # unhashable; equality still compares it.
    meta: Mapping = dataclasses.field(default_factory=dict, hash=False)

    def __post_init__(self):
        # Accept any sequence of steps (e.g. a JSON list) but store an immutable tuple.
        if not isinstance(self.steps, tuple):
            object.__setattr__(self, "steps", tuple(self.steps))


def normalize_answer(text: str) -> str:
    """Canonical form for comparison: stripped, casefolded, single spaces, no trailing period."""
    text = " ".join(text.split()).casefold()
    if text.endswith("."):
        text = text[:-1].rstrip()
    return text


class Task(abc.ABC):
    """A source of examples and the judge of answers to them.

    Subclasses set `name` and implement `generate`; the default `score` is a normalized exact
    match against `example.answer`, which suits every task whose answer is a fixed sentence.
    """

    name: str = "task"
    scorer_name: str = "exact"  # what `score` does, as evaluation reports name it (latent.data.tasks.scoring)

    @abc.abstractmethod
    def generate(self, n: int, seed: int) -> list[Example]:
        """`n` examples, the same for the same seed (a prefix of any longer list for that seed)."""

    def score(self, prediction: str, example: Example) -> bool:
        """True when `prediction` (the answer text, chain of thought already removed) is right."""
        return normalize_answer(prediction) == normalize_answer(example.answer)

    def credit(self, prediction: str, example: Example) -> float:
        """How right `prediction` is, in [0, 1]: an RL reward reads it (latent.methods.rl.rewards),
        accuracy reads `score`. A task with partial credit (reasoning-gym's scorers) overrides it and
        keeps `score` true exactly at full credit; by default it is `score` as 1.0 or 0.0."""
        return float(self.score(prediction, example))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def check_count(n: int) -> int:
    """`n` as a validated example count (a non-negative int), for `generate` implementations."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"number of examples must be a non-negative int, got {n!r}")
    return n
