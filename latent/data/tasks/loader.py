"""Examples from files in Coconut's layout, and a `Task` over such a file.

Two encodings are read:

* JSON (`.json` and anything else): one list of objects, as in Coconut's `data/*.json`;
* JSONL (`.jsonl`, `.ndjson`): one object per line; blank lines are skipped.

Each object needs `question` (str), `steps` (list of str) and `answer` (str); every other key
(a ProsQA graph, an id) is kept in `Example.meta`. Problems are reported as `DataError`s that
name the file and the line (bad JSON) or item index / line and key (bad item), because a data
error found mid-training is costly to trace back otherwise.
"""

from __future__ import annotations

import json
import random
import re
from decimal import Decimal, InvalidOperation
from os import PathLike
from pathlib import Path

from latent.data.tasks.base import Example, Task, check_count, normalize_answer

JSONL_SUFFIXES = (".jsonl", ".ndjson")
REQUIRED_KEYS = ("question", "steps", "answer")


class DataError(ValueError):
    """A data file that cannot be read as examples; the message says where and why."""


def _example(item, where: str) -> Example:
    """An Example from one decoded object; `where` ("data.json: item 3") prefixes errors."""
    if not isinstance(item, dict):
        raise DataError(f"{where}: expected an object with keys {list(REQUIRED_KEYS)}, got {type(item).__name__}")
    for key in REQUIRED_KEYS:
        if key not in item:
            raise DataError(f"{where}: missing required key {key!r}")
    for key in ("question", "answer"):
        if not isinstance(item[key], str):
            raise DataError(f"{where}: key {key!r} must be a string, got {type(item[key]).__name__}")
    steps = item["steps"]
    if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
        raise DataError(f"{where}: key 'steps' must be a list of strings")
    meta = {k: v for k, v in item.items() if k not in REQUIRED_KEYS}
    return Example(question=item["question"], steps=tuple(steps), answer=item["answer"], meta=meta)


def _load_jsonl(path: Path, text: str) -> list[Example]:
    examples = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: line {line_number}: invalid JSON: {err.msg} (column {err.colno})") from err
        examples.append(_example(item, f"{path}: line {line_number}"))
    return examples


def _load_json(path: Path, text: str) -> list[Example]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: line {err.lineno}: invalid JSON: {err.msg} (column {err.colno})") from err
    if not isinstance(items, list):
        raise DataError(f"{path}: expected a JSON list of examples, got {type(items).__name__}")
    return [_example(item, f"{path}: item {i}") for i, item in enumerate(items)]


def load_examples(path: str | PathLike) -> list[Example]:
    """All examples of a Coconut-layout JSON or JSONL file, in file order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text: {err}") from err
    if path.suffix.lower() in JSONL_SUFFIXES:
        return _load_jsonl(path, text)
    return _load_json(path, text)


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


class FileTask(Task):
    """A task whose examples come from a file (GSM8K-Aug, saved ProsQA, ...).

    `generate(n, seed)` returns `n` distinct examples in a seed-shuffled order (all of them when
    n is the file's size); `score` is `answers_match`, which suits free-form and numeric answers.
    """

    def __init__(self, path: str | PathLike, name: str | None = None):
        self.path = Path(path)
        self.examples = load_examples(self.path)
        self.name = name or self.path.stem

    def generate(self, n: int, seed: int) -> list[Example]:
        if check_count(n) > len(self.examples):
            raise ValueError(f"{self.path} has {len(self.examples)} examples, {n} were asked for")
        order = list(range(len(self.examples)))
        random.Random(seed).shuffle(order)
        return [self.examples[i] for i in order[:n]]

    def score(self, prediction: str, example: Example) -> bool:
        return answers_match(prediction, example.answer)


GenericTask = FileTask
