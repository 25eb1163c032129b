"""reasoning-gym's generators (PyPI `reasoning-gym`, Apache-2.0, offline) as tasks, alone or mixed.

    task.name=rg:chain_sum                        one dataset
    task.name=rg:chain_sum:2,leg_counting:1       a mix: each dataset's share of the examples is its
                                                  weight over their sum (a missing weight is 1)
    task.options='{"chain_sum": {"min_terms": 2, "max_terms": 3}}'
                                                  generator options per dataset: the fields of its
                                                  reasoning-gym config (`seed` and `size` are ours)

Generation is deterministic from the seed: dataset d's k-th example is reasoning-gym's item k of d
under that seed (`Random(seed + k)` in its generators), and the mix interleaves the datasets so
that every prefix holds each one's share to within one example (no draw: a split of 200 from a
2:1 mix holds 133 and 67), so a shorter list is a prefix of a longer one. The validation split's
seed is task.seed + 1,000,003 (latent.data.splits), so its items are others than the training
split's, and `load_splits` drops every training example whose question a validation one asks.

Scoring is reasoning-gym's own `score_answer` on the entry the generator made, stored whole in
`Example.meta["rg_entry"]` (it survives the split cache), through `credit` (its float in [0, 1], an
RL reward) and `score` (credit == 1: accuracy). A word-level tokenizer cannot write whitespace as
it was ("-12" decodes as "- 1 2"), so a prediction whose words (`word_level_pieces`) are the
reference's is scored as the reference itself, and any other is scored as written and with the
tokenizer's spacing undone ("- 1 2" -> "-12"), whichever scores higher.

Chains of thought: most datasets come without one (empty steps: `task.format=no_cot` is their
natural format). These write steps from the entry's metadata (`STEP_WRITERS`):
  chain_sum      one partial sum per operator: "4 - 1 = 3", "3 - 7 = -4"
  leg_counting   one line per animal with the running total: "3 spiders have 3 * 8 = 24 legs, 12 + 24 = 36"
  gsm_symbolic   the generator's own worked solution (`answer_cot`), one line per step
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.metadata
import json
import math
import re
from collections.abc import Mapping

from latent.config import ConfigError
from latent.data.tasks.base import Example, Task, check_count
from latent.data.tokenizer import word_level_pieces
from latent.errors import DataError

PREFIX = "rg:"
RESERVED_OPTIONS = {"seed": "task.seed", "size": "task.n_train / task.n_valid"}
NAME_FIELD, OPTIONS_FIELD = "task.name", "task.options"
SYNTAX = "rg:<dataset> or rg:<dataset>[:<weight>],<dataset>[:<weight>],... (e.g. rg:chain_sum:2,leg_counting:1)"


def is_rg_name(name: str) -> bool:
    return name.startswith(PREFIX)


def _registry() -> dict:
    """reasoning-gym's datasets (name -> (dataset class, config dataclass)); imported on first use,
    since importing it takes most of a second."""
    from reasoning_gym.factory import DATASETS

    return {name: entry for name, entry in DATASETS.items() if name != "composite"}


def rg_version() -> str:
    try:
        return importlib.metadata.version("reasoning-gym")
    except importlib.metadata.PackageNotFoundError:
        import reasoning_gym

        return getattr(reasoning_gym, "__version__", "unknown")


def _unknown_dataset(dataset: str, name: str, field: str) -> ConfigError:
    known = sorted(_registry())
    close = difflib.get_close_matches(dataset, known, n=5, cutoff=0.6)
    if dataset == "composite":
        hint = "reasoning-gym's own mixer is not used here: write the mix in the name (" + SYNTAX + ")"
    elif close:
        hint = "close ones: " + ", ".join(close)
    else:
        hint = f"the {len(known)} datasets: " + ", ".join(known)
    return ConfigError(f"{field}={name!r}: {dataset!r} is not a reasoning-gym dataset; {hint}")


def parse_mix(name: str, field: str = NAME_FIELD) -> dict[str, float]:
    """{dataset: weight} of an rg: name, in its order; a ConfigError naming `field` for an unknown
    dataset (listing the close ones), a bad weight, a repeated dataset or a malformed name."""
    if not is_rg_name(name):
        raise ConfigError(f"{field}={name!r} is not a reasoning-gym task name: {SYNTAX}")
    mix: dict[str, float] = {}
    for part in name[len(PREFIX):].split(","):
        dataset, colon, weight_text = part.strip().partition(":")
        if not dataset:
            raise ConfigError(f"{field}={name!r} names an empty dataset; write {SYNTAX}")
        if dataset not in _registry():
            raise _unknown_dataset(dataset, name, field)
        if dataset in mix:
            raise ConfigError(f"{field}={name!r} names {dataset} twice; give it one weight")
        weight = 1.0
        if colon:
            try:
                weight = float(weight_text)
            except ValueError:
                weight = math.nan
            if not (math.isfinite(weight) and weight > 0):
                raise ConfigError(f"{field}={name!r}: the weight of {dataset} must be a number > 0; got {weight_text!r}")
        mix[dataset] = weight
    return mix


def parse_options(options: str | Mapping | None, mix: Mapping[str, float], name: str,
                  field: str = OPTIONS_FIELD) -> dict[str, dict]:
    """{dataset: {option: value}} from task.options (a JSON string or an already parsed mapping),
    every option checked against the dataset's reasoning-gym config (its dataclass fields and its
    own `validate`): a ConfigError naming `field` when one is unknown, reserved or refused."""
    if options is None or options == "":
        parsed = {}
    elif isinstance(options, str):
        try:
            parsed = json.loads(options)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{field} is not valid JSON ({err.msg} at column {err.colno}); got {options!r}") from None
    else:
        parsed = dict(options)
    if not isinstance(parsed, dict):
        raise ConfigError(f"{field} takes a JSON object mapping datasets to their options; got {options!r}")
    checked = {}
    for dataset, values in parsed.items():
        if dataset not in mix:
            raise ConfigError(f"{field} sets options of {dataset!r}, which {NAME_FIELD}={name!r} does not use; "
                              f"its datasets: {', '.join(mix)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{field}: the options of {dataset} must be a JSON object; got {values!r}")
        config_cls = _registry()[dataset][1]
        fields = [f.name for f in dataclasses.fields(config_cls) if f.name not in RESERVED_OPTIONS]
        for option in values:
            if option in RESERVED_OPTIONS:
                raise ConfigError(f"{field}: {dataset}'s {option!r} is set by {RESERVED_OPTIONS[option]}, not here")
            if option not in fields:
                close = difflib.get_close_matches(option, fields, n=3, cutoff=0.6)
                hint = f" (close: {', '.join(close)})" if close else ""
                raise ConfigError(f"{field}: {dataset} has no option {option!r}{hint}; its options: {', '.join(fields)}")
        try:
            config = config_cls(**values)
            if hasattr(config, "validate"):
                config.validate()
        except (AssertionError, TypeError, ValueError) as err:
            raise ConfigError(f"{field}: reasoning-gym refuses {dataset}'s options {values}: {err or type(err).__name__}") from None
        checked[dataset] = dict(values)
    return checked


def mix_order(weights: list[float], n: int) -> list[int]:
    """Which dataset each of `n` examples comes from: at every step the one furthest below its share
    of the examples so far (ties: the first), so every prefix holds each share to within one."""
    total, counts, order = sum(weights), [0] * len(weights), []
    for i in range(n):
        d = max(range(len(weights)), key=lambda j: (weights[j] / total * (i + 1) - counts[j], -j))
        counts[d] += 1
        order.append(d)
    return order


# ----------------------------------------------------------------------------- chains of thought


def chain_sum_steps(entry: dict) -> tuple[str, ...]:
    """One partial sum per operator, left to right: "4 - 1 - 7" gives "4 - 1 = 3", "3 - 7 = -4"."""
    terms = entry["metadata"]["expression"].split(" ")
    total, steps = int(terms[0]), []
    for op, value in zip(terms[1::2], terms[2::2]):
        after = total + int(value) if op == "+" else total - int(value)
        steps.append(f"{total} {op} {value} = {after}")
        total = after
    return tuple(steps)


def leg_counting_steps(entry: dict) -> tuple[str, ...]:
    """One line per animal, as the question names them, with the running total."""
    from reasoning_gym.arithmetic.leg_counting import ANIMALS

    steps, total = [], 0
    for animal, count in entry["metadata"]["animals"].items():
        legs = count * ANIMALS[animal]
        named = f"{count} {animal}{'s' if count > 1 else ''}"
        line = f"{named} have {count} * {ANIMALS[animal]} = {legs} legs"
        steps.append(line if not steps else f"{line}, {total} + {legs} = {total + legs}")
        total += legs
    return tuple(steps)


def gsm_symbolic_steps(entry: dict) -> tuple[str, ...]:
    """The generator's worked solution, one line per step, without its "#### answer" line."""
    lines = entry["metadata"].get("answer_cot", "").splitlines()
    return tuple(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("####"))


STEP_WRITERS = {"chain_sum": chain_sum_steps, "leg_counting": leg_counting_steps, "gsm_symbolic": gsm_symbolic_steps}


# ----------------------------------------------------------------------------- scoring

# The word-level decoder's spacing undone where a number or a hyphenated word can only mean one thing.
_RESPACING = (
    (re.compile(r"(?<=\d) (?=\d)"), ""),  # "1 2 3" -> "123"
    (re.compile(r"(?<=\d)([.:]) (?=\d)"), r"\1"),  # "3. 1 4" -> "3.14", "0 6: 0 9" -> "06:09"
    # "- 4" -> "-4" unless a number or a closing bracket comes before it ("5 - 4" stays a subtraction)
    (re.compile(r"(?:^|(?<=[^\d)\]\s] )|(?<=[(\[=]))([-+]) (?=\d)"), r"\1"),
    (re.compile(r"(?<=[^\W\d_]) - (?=[^\W\d_])"), "-"),  # "mother - in - law" -> "mother-in-law"
    (re.compile(r"(?<=\d) %"), "%"),
    (re.compile(r"\$ (?=\d)"), "$"),
)


def undo_word_spacing(text: str) -> str:
    """`text` with the word-level tokenizer's spacing of numbers and hyphenated words undone."""
    text = " ".join(text.split())
    for pattern, replacement in _RESPACING:
        text = pattern.sub(replacement, text)
    return text


class ReasoningGym(Task):
    """Examples of one reasoning-gym dataset or a weighted mix (module docstring), scored by
    reasoning-gym's own scorers. `options`: task.options (a JSON string or a mapping)."""

    scorer_name = "reasoning_gym"

    def __init__(self, name: str, options: str | Mapping | None = None):
        self.name = name
        self.mix = parse_mix(name)
        self.options = parse_options(options, self.mix, name)
        self._scorers = {}  # dataset -> a reasoning-gym dataset object, for its score_answer
        for dataset in self.mix:
            self._scorer(dataset)  # built now: a generator that refuses its options fails here
        canonical = {"mix": self.mix, "options": self.options, "reasoning_gym": rg_version()}
        # The split cache's key (latent.data.splits.generate_cached): the mix, the options and the library's version.
        self.cache_key = f"{name}|{json.dumps(canonical, sort_keys=True)}"

    def _dataset(self, dataset: str, seed: int, size: int):
        from reasoning_gym import create_dataset

        return create_dataset(dataset, seed=seed, size=max(size, 1), **self.options.get(dataset, {}))

    def _scorer(self, dataset: str):
        if dataset not in self._scorers:
            if dataset not in _registry():
                raise DataError(f"an example of reasoning-gym dataset {dataset!r}, which this version "
                                f"({rg_version()}) does not have, cannot be scored")
            self._scorers[dataset] = self._dataset(dataset, seed=0, size=1)
        return self._scorers[dataset]

    def _example(self, dataset: str, entry: dict, where: str) -> Example:
        if not isinstance(entry.get("question"), str) or not isinstance(entry.get("answer"), str):
            raise DataError(f"{NAME_FIELD}={self.name!r}: {where} has no reference answer (answer="
                            f"{entry.get('answer')!r}); its scorer checks answers itself, and the text formats "
                            "here need one to train on, so this dataset is not supported")
        writer = STEP_WRITERS.get(dataset)
        return Example(question=entry["question"].strip(), steps=writer(entry) if writer else (),
                       answer=entry["answer"].strip(), meta={"rg_dataset": dataset, "rg_entry": entry})

    def generate(self, n: int, seed: int) -> list[Example]:
        datasets = list(self.mix)
        order = mix_order([self.mix[d] for d in datasets], check_count(n))
        per_dataset = {}
        for d, dataset in enumerate(datasets):
            count = order.count(d)
            source = self._dataset(dataset, seed=seed, size=count)
            items = []
            for k in range(count):
                where = f"reasoning-gym {dataset} item {k} (seed {seed})"
                try:
                    entry = source[k]
                except Exception as err:  # a generator's own failure, named with what reproduces it
                    raise DataError(f"{NAME_FIELD}={self.name!r}: {where} failed: {type(err).__name__}: {err}") from err
                items.append(self._example(dataset, entry, where))
            per_dataset[d] = iter(items)
        return [next(per_dataset[d]) for d in order]

    def credit(self, prediction: str, example: Example) -> float:
        """reasoning-gym's score of `prediction` (in [0, 1]) against the stored entry."""
        dataset, entry = example.meta.get("rg_dataset"), example.meta.get("rg_entry")
        if entry is None:
            raise DataError(f"{NAME_FIELD}={self.name!r} scores the examples it generated (they carry "
                            "reasoning-gym's entry); this one has none: give task.scorer a scorer of its own")
        score = self._scorer(dataset).score_answer
        if word_level_pieces(prediction) == word_level_pieces(entry["answer"]):
            return float(score(entry["answer"], entry))  # the reference, as the tokenizer writes it
        return max(float(score(prediction, entry)), float(score(undo_word_spacing(prediction), entry)))

    def score(self, prediction: str, example: Example) -> bool:
        return self.credit(prediction, example) >= 1.0

    def __repr__(self) -> str:
        return f"ReasoningGym(name={self.name!r}, options={self.options!r})"
