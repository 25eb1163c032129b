"""A run's data: its training and validation examples, how its answers are scored, and the
word-level tokenizer fitted to them. The same in train.py, eval.py, scripts and benchmarks.

Generated splits are cached on disk (`generate_cached`): the 100,000 ProsQA graphs of a preset
take minutes to generate and a second to load, so a rerun of a finished run or the start of an
eval does not generate them again. The cache key is the task name, count and seed, and the
source code of every task generator (latent/data/tasks/*.py): editing a generator makes the old
entries unreachable; an rg: task adds its options and reasoning-gym's version (its `cache_key`).
`LATENT_CACHE_DIR` moves the cache (default ~/.cache/latent); setting it to
an empty string turns caching off.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import re
import tempfile
from functools import cache
from pathlib import Path

from latent.config import Config, ConfigError
from latent.data import pipeline
from latent.data.shapes import round_up
from latent.data.special_tokens import DEFAULT_NUM_ABSTRACT
from latent.data.tasks import FILE_TASKS, DataError, FileTask, Task, check_task_name, get_task, load_examples
from latent.data.tasks.base import Example
from latent.data.tasks.reasoning_gym import is_rg_name
from latent.data.tasks.scoring import Scorer, resolve_scorer
from latent.data.tasks.text import is_text_name
from latent.data.tokenizer import Tokenizer

CACHE_ENV = "LATENT_CACHE_DIR"
_TASKS_SOURCE = Path(__file__).resolve().parent / "tasks"


def cache_dir() -> Path | None:
    """Where generated splits are cached; None when `LATENT_CACHE_DIR` is set empty (no cache)."""
    configured = os.environ.get(CACHE_ENV)
    if configured == "":
        return None
    return Path(configured) if configured else Path.home() / ".cache" / "latent"


@cache
def _generators_fingerprint() -> str:
    digest = hashlib.sha256()
    for path in sorted(_TASKS_SOURCE.rglob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def split_cache_path(name: str, n: int, seed: int) -> Path | None:
    """Where split (name, n, seed) is cached; `name` is the task's name or its `cache_key` (an rg:
    task's holds its mix, options and reasoning-gym's version), hashed whole, and in the file name
    with anything but letters, digits, "_", "." and "-" replaced."""
    directory = cache_dir()
    if directory is None:
        return None
    key = hashlib.sha256(f"{name}|{n}|{seed}|{_generators_fingerprint()}".encode()).hexdigest()[:16]
    readable = re.sub(r"[^\w.-]+", "_", name.split("|")[0])[:80]
    return directory / "splits" / f"{readable}-{n}-{seed}-{key}.pkl"


def generate_cached(name: str, task: Task, n: int, seed: int) -> list[Example]:
    """`task.generate(n, seed)` for the registered task `name`, read from the cache when it holds
    it; written there (atomically: concurrent runs never read a partial file) when not. A task
    built with options (an rg: task) is keyed by its `cache_key` instead of the name."""
    path = split_cache_path(getattr(task, "cache_key", None) or name, n, seed)
    if path is not None and path.is_file():
        try:
            with path.open("rb") as f:
                examples = pickle.load(f)
            if isinstance(examples, list) and len(examples) == n:
                return examples
        except Exception:  # an unreadable entry is regenerated and replaced
            pass
    examples = task.generate(n, seed=seed)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("wb", dir=path.parent, suffix=".tmp", delete=False) as f:
                pickle.dump(examples, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(f.name, path)
        except OSError:  # a read-only or full cache costs time, never the run
            pass
    return examples


# The validation split is generated from its own seed, derived from the task seed.
VALID_SEED_OFFSET = 1_000_003


def named_task(cfg: Config, **kwargs) -> Task:
    """The task task.name names, with task.options (an rg: task's generator options; any other
    task takes none: a ConfigError)."""
    if cfg.task.options is not None:
        if not is_rg_name(cfg.task.name):
            raise ConfigError(f"task.options sets the generator options of a reasoning-gym task (task.name=rg:...); "
                              f"task.name={cfg.task.name!r} takes none")
        kwargs["options"] = cfg.task.options
    return get_task(cfg.task.name, **kwargs)


def data_task(cfg: Config):
    """The task a run's examples come from: the named generator, or a FileTask over `task.path`
    (GSM8K for task.name=gsm8k). An unknown task.name is a ConfigError either way."""
    check_task_name(cfg.task.name)
    if is_text_name(cfg.task.name) and (cfg.task.path or cfg.task.valid_path):
        field = "task.path" if cfg.task.path else "task.valid_path"
        raise ConfigError(f"task.name={cfg.task.name} reads a built-in text corpus; {field} is not read with it")
    if cfg.task.path is None or cfg.task.name in FILE_TASKS:
        return named_task(cfg, **({"path": cfg.task.path} if cfg.task.path else {}))
    if cfg.task.options is not None:
        named_task(cfg)  # task.options are checked even when the training examples come from a file
    return FileTask(cfg.task.path)


def holds_out_of_file(cfg: Config) -> bool:
    """Does validation use a held-out split of task.path (not valid_path, nor the generator)?"""
    return bool(cfg.task.path) and not cfg.task.valid_path and cfg.task.valid_fraction > 0


def held_out_split(examples, task_cfg):
    """(train, valid) of one file: a `task.seed`-shuffled valid_fraction of it (at most n_valid,
    at least one example), both in file order. The same in train.py and eval.py."""
    n_valid = min(task_cfg.n_valid, max(1, round(task_cfg.valid_fraction * len(examples))))
    if n_valid >= len(examples):
        raise DataError(f"{task_cfg.path}: {len(examples)} examples are too few to hold out a validation split "
                        "(set task.valid_path)")
    order = list(range(len(examples)))
    random.Random(task_cfg.seed).shuffle(order)
    held_out = set(order[:n_valid])
    return ([e for i, e in enumerate(examples) if i not in held_out],
            [e for i, e in enumerate(examples) if i in held_out])


def load_valid(cfg: Config, task=None):
    """The run's validation examples: task.valid_path, else the held-out split of task.path, else
    (no path, or task.valid_fraction=0) generated by task.name; for a text corpus its held-out
    regions (text_split). `task`: data_task(cfg), if built."""
    if is_text_name(cfg.task.name):
        return text_split(cfg, task)[1]
    if cfg.task.valid_path:
        return load_examples(cfg.task.valid_path)
    if holds_out_of_file(cfg):
        return held_out_split((task or data_task(cfg)).examples, cfg.task)[1]
    if cfg.task.name in FILE_TASKS and cfg.task.path:  # a file task cannot generate its validation split
        raise ConfigError(f"task.name={cfg.task.name} with task.valid_fraction={cfg.task.valid_fraction} has no "
                          "validation examples: give task.valid_path=FILE.json, or set task.valid_fraction > 0")
    return generate_cached(cfg.task.name, named_task(cfg), cfg.task.n_valid, cfg.task.seed + VALID_SEED_OFFSET)


def run_scorer(cfg: Config, valid, task=None) -> Scorer:
    """How the run's answers are judged: task.scorer; under auto the named task's own scorer when
    it made the validation examples (or reads them: gsm8k), else the one that fits their answers."""
    own = None
    if cfg.task.name in FILE_TASKS:
        own = task or data_task(cfg)
    elif not cfg.task.valid_path and not holds_out_of_file(cfg):
        own = named_task(cfg)
    return resolve_scorer(cfg.task.scorer, valid, own)


def load_splits(cfg: Config, check_file=None):
    """(train examples, valid examples, scorer: `.name` and `.score(prediction, example)`);
    train never repeats a valid question. check_file(examples, locations): the run's method's
    check of the fields it reads from a data file (latent.methods.base.Method.check_file), run
    on task.path's examples so an error names the file and item, not a train index."""
    task = data_task(cfg)
    if is_text_name(cfg.task.name):
        return *text_split(cfg, task), run_scorer(cfg, [], task)
    if cfg.task.path:
        if check_file is not None:
            check_file(task.examples, task.locations)
        train = held_out_split(task.examples, cfg.task)[0] if holds_out_of_file(cfg) else task.examples
    else:
        train = generate_cached(cfg.task.name, task, cfg.task.n_train, cfg.task.seed)
    valid = load_valid(cfg, task)
    held_out = {e.question for e in valid}
    train = [e for e in train if e.question not in held_out]
    return train, valid, run_scorer(cfg, valid, task)


def text_split(cfg: Config, task=None):
    """(train, valid) regions of a text corpus (task.name=text:...): a task.seed-drawn
    task.valid_fraction of its regions validates (latent.data.tasks.text)."""
    return (task or data_task(cfg)).split(cfg.task.valid_fraction, cfg.task.seed)


def fit_run_tokenizer(cfg: Config, train, valid) -> Tokenizer:
    """The tokenizer a run from scratch fits: a byte-level BPE of model.vocab_size ids trained on
    the training regions alone for a text corpus (natural text has too many words for a
    word-level vocabulary), else the word-level one of `fit_tokenizer`."""
    if is_text_name(cfg.task.name):
        try:
            return Tokenizer.fit_byte_level_bpe([region.question for region in train], cfg.model.vocab_size)
        except ValueError as err:
            raise ConfigError(f"model.vocab_size={cfg.model.vocab_size} sets the size of task.name={cfg.task.name}'s "
                              f"tokenizer: {err}") from None
    return fit_tokenizer(train, valid, cfg.task.format, cfg.abstract.num_tokens)


def fit_tokenizer(train, valid, fmt: str, num_abstract: int = DEFAULT_NUM_ABSTRACT) -> Tokenizer:
    texts = []
    for example in list(train) + list(valid):
        prompt, target = pipeline.format_example(example, fmt)
        texts += [prompt, target]
    return Tokenizer.fit_word_level(texts, num_abstract=max(num_abstract, DEFAULT_NUM_ABSTRACT))


def resolve_vocab(cfg: Config, tokenizer: Tokenizer) -> Config:
    """Grow model.vocab_size to fit the tokenizer (rounded up to 64 for matmul-friendly shapes)."""
    needed = round_up(tokenizer.vocab_size, 64)
    if cfg.model.vocab_size >= tokenizer.vocab_size:
        return cfg
    return cfg.replace(model=cfg.model.replace(vocab_size=needed))
