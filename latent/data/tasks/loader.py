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
from os import PathLike
from pathlib import Path

from latent.data.tasks.base import Example, Task, check_count
from latent.data.tasks.scoring import answers_match, parse_number, resolve_scorer  # noqa: F401 (re-exported)
from latent.errors import DataError  # noqa: F401 (raised here; importable from latent.data.tasks)

JSONL_SUFFIXES = (".jsonl", ".ndjson")
REQUIRED_KEYS = ("question", "steps", "answer")


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


def _load_jsonl(path: Path, text: str) -> tuple[list[Example], list[str]]:
    examples, locations = [], []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: line {line_number}: invalid JSON: {err.msg} (column {err.colno})") from err
        locations.append(f"{path}: line {line_number}")
        examples.append(_example(item, locations[-1]))
    return examples, locations


def _load_json(path: Path, text: str) -> tuple[list[Example], list[str]]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: line {err.lineno}: invalid JSON: {err.msg} (column {err.colno})") from err
    if not isinstance(items, list):
        raise DataError(f"{path}: expected a JSON list of examples, got {type(items).__name__}")
    locations = [f"{path}: item {i}" for i in range(len(items))]
    return [_example(item, where) for item, where in zip(items, locations)], locations


def load_examples(path: str | PathLike) -> list[Example]:
    """All examples of a Coconut-layout JSON or JSONL file, in file order."""
    return load_examples_located(path)[0]


def load_examples_located(path: str | PathLike) -> tuple[list[Example], list[str]]:
    """(examples, where each one is: "data.json: item 3" / "data.jsonl: line 4"), for messages."""
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


class FileTask(Task):
    """A task whose examples come from a file (GSM8K-Aug, saved ProsQA, ...).

    `generate(n, seed)` returns `n` distinct examples in a seed-shuffled order (all of them when
    n is the file's size); `score` is the `scorer` named (latent.data.tasks.scoring), by default
    the one that fits the file's answers: numeric when they are numbers, else exact.
    `locations[i]` says where example i is in the file, for messages.
    """

    def __init__(self, path: str | PathLike, name: str | None = None, scorer: str = "auto"):
        self.path = Path(path)
        self.examples, self.locations = load_examples_located(self.path)
        self.name = name or self.path.stem
        self.scorer = resolve_scorer(scorer, self.examples)
        self.scorer_name = self.scorer.name

    def generate(self, n: int, seed: int) -> list[Example]:
        if check_count(n) > len(self.examples):
            raise ValueError(f"{self.path} has {len(self.examples)} examples, {n} were asked for")
        order = list(range(len(self.examples)))
        random.Random(seed).shuffle(order)
        return [self.examples[i] for i in order[:n]]

    def score(self, prediction: str, example: Example) -> bool:
        return self.scorer.score(prediction, example)


GenericTask = FileTask


class GSM8K(FileTask):
    """GSM8K in Coconut's layout (question, steps like "<<4-2=2>>", a numeric answer), scored as
    numbers. There is no generator: the examples come from a file (`task.path`)."""

    def __init__(self, path: str | PathLike, scorer: str = "numeric"):
        super().__init__(path, name="gsm8k", scorer="numeric" if scorer == "auto" else scorer)
