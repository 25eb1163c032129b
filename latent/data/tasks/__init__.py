"""Reasoning tasks: generators (ProsQA, ProntoQA, multiplication), file loading and text formats.

    from latent.data.tasks import get_task, cot_text, extract_answer
    task = get_task("prosqa_small")
    examples = task.generate(1000, seed=0)
    prompt, target = cot_text(examples[0])
    task.score(extract_answer(generated_text), examples[0])

Every task generates deterministically from a seed and scores an answer string; files in
Coconut's JSON/JSONL layout load with `load_examples` or as a `FileTask`, scored by the scorer
that fits them (`latent.data.tasks.scoring`). `gsm8k` has no generator: it reads a file.
`rg:<dataset>` and weighted mixes `rg:<dataset>:<weight>,...` are reasoning-gym's generators,
scored by its own scorers (`latent.data.tasks.reasoning_gym`). `text:<corpus>` is natural text
for language modelling, cut into regions (`latent.data.tasks.text`).
"""

from __future__ import annotations

from collections.abc import Callable

from latent.config import ConfigError
from latent.data.tasks.base import Example, Task, normalize_answer
from latent.data.tasks.formats import cot_text, extract_answer, no_cot_text
from latent.data.tasks.loader import GSM8K, DataError, FileTask, GenericTask, answers_match, load_examples
from latent.data.tasks.multiplication import Multiplication
from latent.data.tasks.prontoqa import ProntoQA
from latent.data.tasks.prosqa import ProsQA
from latent.data.tasks.reasoning_gym import ReasoningGym, is_rg_name, parse_mix
from latent.data.tasks.text import TextCorpus, corpus_names, is_text_name

TASKS: dict[str, Callable[..., Task]] = {
    "prosqa": lambda **kw: ProsQA("default", **kw),
    "prosqa_small": lambda **kw: ProsQA("small", **kw),
    "prosqa_tiny": lambda **kw: ProsQA("tiny", **kw),
    "prosqa_mini": lambda **kw: ProsQA("mini", **kw),
    "prosqa_mini_matched": lambda **kw: ProsQA("mini", num_nodes=(8, 11), match_distractor_depth=True, **kw),
    "prosqa_two_step": lambda **kw: ProsQA("mini", num_nodes=(6, 8), path_length=(2, 2), match_distractor_depth=True, **kw),
    # Three steps on every question and no one-statement shortcut: the CPU-sized latent comparison's task
    # (`scripts/latent_comparison.py --family tiny`), where a chain is 3 statements long.
    "prosqa_three_step": lambda **kw: ProsQA("mini", num_nodes=(8, 11), path_length=(3, 3), match_distractor_depth=True, **kw),
    # Pure binding: which option is a statement about the asked person (a diagnostic, docs/results/measured.md).
    "prosqa_one_step": lambda **kw: ProsQA("mini", path_length=(1, 1), match_distractor_depth=True, **kw),
    "prontoqa": lambda **kw: ProntoQA("default", **kw),
    "prontoqa_small": lambda **kw: ProntoQA("small", **kw),
    "multiplication": lambda **kw: Multiplication(**kw),
    "multiplication_3x3": lambda **kw: Multiplication(3, **kw),  # CPU-sized
}


def _gsm8k(path=None, **kwargs) -> Task:
    if path is None:
        raise ConfigError("task gsm8k has no generator: give it a GSM8K file in Coconut's layout "
                          "(task.path=FILE.json for train.py, --data FILE.json for eval.py)")
    return GSM8K(path, **kwargs)


# Tasks read from a file (`path=`), not generated; TASKS holds the generators.
FILE_TASKS: dict[str, Callable[..., Task]] = {"gsm8k": _gsm8k}


def check_task_name(name: str, field: str = "task.name") -> None:
    """A ConfigError naming `field` and the known tasks when `name` is not one; an rg: name must
    name reasoning-gym datasets (the close ones are listed) with weights > 0."""
    if is_rg_name(name):
        parse_mix(name, field)
    elif is_text_name(name):
        corpus_names(name, field)
    elif name not in TASKS and name not in FILE_TASKS:
        known = ", ".join(sorted(TASKS | FILE_TASKS))
        raise ConfigError(f"{field}={name!r} is not a known task; known tasks: {known}, or rg:<dataset> "
                          "(reasoning-gym's generators), text:<corpus> (latent.data.tasks.text)")


def get_task(name: str, **kwargs) -> Task:
    """The registered task `name`, built with `kwargs` (e.g. `get_task("prosqa", path_length=(4, 6))`);
    a file task (FILE_TASKS) takes `path=`; an rg: task (`ReasoningGym`) takes `options=`."""
    check_task_name(name)
    if is_rg_name(name):
        return ReasoningGym(name, **kwargs)
    if is_text_name(name):
        return TextCorpus(name, **kwargs)
    return (TASKS | FILE_TASKS)[name](**kwargs)


__all__ = [
    "DataError", "Example", "FILE_TASKS", "FileTask", "GSM8K", "GenericTask", "Multiplication", "ProntoQA", "ProsQA",
    "ReasoningGym", "TASKS", "Task", "TextCorpus", "is_text_name", "answers_match", "check_task_name", "cot_text", "extract_answer", "get_task", "load_examples",
    "no_cot_text", "normalize_answer",
]
