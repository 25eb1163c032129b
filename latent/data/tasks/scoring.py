"""Scorers: does a model's answer match an example's reference answer?

    exact    normalized words (case, spacing and one trailing period forgiven)
    numeric  the same number: 4.0 == 4, "1,000" == 1000, "$5" == 5, within a relative 1e-6
    choice   the question names its options ("Is Tom a lempus or scrompus?", "True or false: ...");
             the answer must name exactly one of them, the one the reference names
    auto     the scorer that fits the data: a generated task's own, else numeric when (nearly) all
             reference answers are numbers, else exact

A word-level tokenizer writes numbers digit by digit ("1,000" decodes as "1, 0 0 0"), so the
numeric scorer reads a prediction with its whitespace removed.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation

from latent.config import ConfigError, ScorerName
from latent.data.tasks.base import Example, normalize_answer

SCORERS = typing.get_args(ScorerName)
NUMERIC_SHARE = 0.95  # auto picks numeric when at least this share of reference answers are numbers
RELATIVE_TOLERANCE = Decimal("1e-6")

_THOUSANDS = re.compile(r"[+-]?\d{1,3}(,\d{3})+(\.\d*)?")


def parse_number(text: str) -> Decimal | None:
    """The number an answer states ("1,000", "$300", "2.50", "-3."), or None if it is not one."""
    text = text.strip().removeprefix("$").removesuffix(".").strip()
    if _THOUSANDS.fullmatch(text):
        text = text.replace(",", "")
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def answers_match(prediction: str, reference: str) -> bool:
    """Normalized exact match; numerically equal when both sides are numbers ("300" == "300.0")."""
    predicted, expected = parse_number(prediction), parse_number(reference)
    if predicted is not None and expected is not None:
        return predicted == expected
    return normalize_answer(prediction) == normalize_answer(reference)


def exact_match(prediction: str, example: Example) -> bool:
    return normalize_answer(prediction) == normalize_answer(example.answer)


def numeric_match(prediction: str, example: Example) -> bool:
    """Equal as numbers within RELATIVE_TOLERANCE; a reference that is no number is matched exactly."""
    expected = parse_number(example.answer)
    if expected is None:
        return exact_match(prediction, example)
    predicted = parse_number("".join(prediction.split()))
    if predicted is None:
        return False
    return abs(predicted - expected) <= RELATIVE_TOLERANCE * max(abs(predicted), abs(expected))


_TRUE_OR_FALSE = re.compile(r"\btrue or false\b", re.IGNORECASE)
_TWO_OPTIONS = re.compile(r"\b([\w-]+) or ([\w-]+)\?\s*$")


def question_options(question: str) -> tuple[str, ...]:
    """The options a question names: ("True", "False") for "True or false: ...", (A, B) for a
    question ending "... A or B?" (ProsQA); () when it names none."""
    if _TRUE_OR_FALSE.search(question):
        return ("True", "False")
    match = _TWO_OPTIONS.search(question)
    return match.groups() if match else ()


def _options_named(text: str, options: Sequence[str]) -> list[str]:
    return [o for o in options if re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", text, re.IGNORECASE)]


def choice_match(prediction: str, example: Example) -> bool:
    """The prediction names exactly one of the question's options, the one the reference names
    ("Tom is a lempus." and "lempus" are right; "lempus or scrompus" and "wumpus" are not).
    A question without options, or a reference naming none of them, is matched exactly."""
    options = question_options(example.question)
    expected = _options_named(example.answer, options)
    if len(expected) != 1:
        return exact_match(prediction, example)
    return _options_named(prediction, options) == expected


SCORE_FUNCTIONS: dict[str, Callable[[str, Example], bool]] = {
    "exact": exact_match, "numeric": numeric_match, "choice": choice_match,
}


@dataclasses.dataclass(frozen=True)
class Scorer:
    """A named judge of answers: `score(prediction, example) -> bool`, as `Task.score`, and
    `credit(prediction, example) -> float` in [0, 1], as `Task.credit` (RL rewards read it;
    without `partial` it is `score` as 1.0 or 0.0)."""

    name: str
    match: Callable[[str, Example], bool]
    partial: Callable[[str, Example], float] | None = None

    def score(self, prediction: str, example: Example) -> bool:
        return bool(self.match(prediction, example))

    def credit(self, prediction: str, example: Example) -> float:
        if self.partial is None:
            return float(self.score(prediction, example))
        return float(self.partial(prediction, example))


def infer_scorer(examples: Sequence[Example]) -> str:
    """numeric when at least NUMERIC_SHARE of the reference answers are numbers, else exact."""
    numbers = sum(parse_number(e.answer) is not None for e in examples)
    return "numeric" if examples and numbers >= NUMERIC_SHARE * len(examples) else "exact"


def resolve_scorer(requested: str, examples: Sequence[Example], task=None) -> Scorer:
    """The scorer for `examples`: `requested` unless it is "auto"; then the task's own scorer
    (a generated task, GSM8K), or one inferred from the reference answers."""
    if requested not in SCORERS:
        raise ConfigError(f"task.scorer={requested!r} is not allowed; choose one of {SCORERS}")
    if requested != "auto":
        return Scorer(requested, SCORE_FUNCTIONS[requested])
    if task is not None:
        return Scorer(task.scorer_name, task.score, task.credit)
    name = infer_scorer(examples)
    return Scorer(name, SCORE_FUNCTIONS[name])
