"""Reasoning tasks: generators (ProsQA, ProntoQA, multiplication), file loading and text formats.

    from latent.data.tasks import get_task, cot_text, extract_answer
    task = get_task("prosqa_small")
    examples = task.generate(1000, seed=0)
    prompt, target = cot_text(examples[0])
    task.score(extract_answer(generated_text), examples[0])

Every task generates deterministically from a seed and scores an answer string; files in
Coconut's JSON/JSONL layout load with `load_examples` or as a `FileTask`.
"""

from __future__ import annotations

from collections.abc import Callable

from latent.data.tasks.base import Example, Task, normalize_answer
from latent.data.tasks.formats import cot_text, extract_answer, no_cot_text
from latent.data.tasks.loader import DataError, FileTask, GenericTask, answers_match, load_examples
from latent.data.tasks.multiplication import Multiplication
from latent.data.tasks.prontoqa import ProntoQA
from latent.data.tasks.prosqa import ProsQA

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
    # Pure binding: which option is a statement about the asked person (a diagnostic, README).
    "prosqa_one_step": lambda **kw: ProsQA("mini", path_length=(1, 1), match_distractor_depth=True, **kw),
    "prontoqa": lambda **kw: ProntoQA("default", **kw),
    "prontoqa_small": lambda **kw: ProntoQA("small", **kw),
    "multiplication": lambda **kw: Multiplication(**kw),
    "multiplication_3x3": lambda **kw: Multiplication(3, **kw),  # CPU-sized
}


def get_task(name: str, **kwargs) -> Task:
    """The registered task `name`, built with `kwargs` (e.g. `get_task("prosqa", path_length=(4, 6))`)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name](**kwargs)


__all__ = [
    "DataError", "Example", "FileTask", "GenericTask", "Multiplication", "ProntoQA", "ProsQA", "TASKS",
    "Task", "answers_match", "cot_text", "extract_answer", "get_task", "load_examples", "no_cot_text",
    "normalize_answer",
]
