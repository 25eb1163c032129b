"""Where a written chain of thought goes wrong, for graph questions (ProsQA, ProntoQA-style).

The question's statements ("Every wumpus is a yumpus.", "Tom is a wumpus.") define the edges
of a graph. Each generated step line "X is a Y." / "Every X is a Y." is checked against them:

  valid         an edge of the question, continuing from the previous step's object
  reversed      not an edge, but its reverse is ("Every B is a A" for a stated "Every A is a B")
  shortcut      not an edge, but the object is reachable from the subject over two or more edges
                (the model skipped steps of a true path)
  hallucinated  none of these (the model made a fact up)
  broken        an edge, but its subject is not where the chain stood
and a chain that uses only valid steps ends either at the asked-about target (`reaches_target`)
or elsewhere (`wrong_branch`: it followed real edges the wrong way).

`analyse(question, generated, answer)` returns one example's record; `summarize(records)` the
shares that `eval.py` reports as `chain_analysis`, with `no_path_baseline_accuracy`: how often
the answer follows without a path, from one statement (`no_path_guess`), a bar a model's
accuracy should clear before it counts as reasoning.
"""

from __future__ import annotations

import re
from collections import Counter

_STATEMENT = re.compile(r"(?:Every (\w+)|(\w+)) is an? (\w+)\.")
_QUESTION = re.compile(r"Is (\w+) an? (\w+) or (\w+)\?")
_WORD = re.compile(r"[^\W_]+")  # a run of letters or digits


def reached_node(statement: str) -> str:
    """The node a ProsQA/ProntoQA statement reaches: its last word ("Every x is a lempus." ->
    "lempus"); "" for a statement without one."""
    words = _WORD.findall(statement)
    return words[-1] if words else ""


def question_edges(question: str) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for every_subject, name_subject, obj in _STATEMENT.findall(question):
        edges.setdefault(every_subject or name_subject, set()).add(obj)
    return edges


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    """Every node reachable from `start` over one or more edges."""
    seen, frontier = set(), [start]
    while frontier:
        for child in edges.get(frontier.pop(), ()):
            if child not in seen:
                seen.add(child)
                frontier.append(child)
    return seen


def step_verdict(edges: dict[str, set[str]], subject: str, obj: str, at: str) -> str:
    if obj in edges.get(subject, set()):
        return "valid" if subject == at else "broken"
    if subject in edges.get(obj, set()):
        return "reversed"
    return "shortcut" if obj in reachable(edges, subject) else "hallucinated"


def no_path_guess(question: str) -> str | None:
    """The option picked without following any path: if exactly one option is what some other
    person directly is ("Sam is a wumpus."), it is taken for the distractor and the other option
    is returned; None when that does not decide. In the real ProsQA file this gets 60% right
    (chance for undecided questions counted as 0.5); small generated graphs, whose distractor is
    mostly one hop from its person, make it far stronger (`docs/data.md`).
    """
    asked = _QUESTION.search(question)
    if not asked:
        return None
    root, options = asked.group(1), (asked.group(2), asked.group(3))
    others_direct = {obj for every, person, obj in _STATEMENT.findall(question[: asked.start()])
                     if person and person != root}
    attached = [o for o in options if o in others_direct]
    if len(attached) != 1:
        return None
    return options[1] if attached[0] == options[0] else options[0]


def analyse(question: str, generated: str, answer: str | None = None) -> dict | None:
    """Per-step verdicts of one generated chain, or None when the question is not a graph question.

    With the gold `answer` ("Tom is a wumpus."), the record also scores `no_path_guess`: 1 or 0,
    or 0.5 when the guess does not decide (a coin flip's expectation)."""
    asked = _QUESTION.search(question)
    if not asked:
        return None
    edges = question_edges(question[: asked.start()])
    if not edges:
        return None
    root, options = asked.group(1), (asked.group(2), asked.group(3))
    chain_text = generated.split("###")[0]
    verdicts, at = [], root
    for line in (text.strip() for text in chain_text.splitlines() if text.strip()):
        match = _STATEMENT.fullmatch(line)
        if not match:
            verdicts.append("unparsed")
            continue
        subject, obj = match.group(1) or match.group(2), match.group(3)
        verdicts.append(step_verdict(edges, subject, obj, at))
        at = obj
    all_valid = bool(verdicts) and all(v == "valid" for v in verdicts)
    record = {
        "steps": verdicts,
        "first_error": next((v for v in verdicts if v != "valid"), None),
        "ends_at": at,
        "reaches_option": at in options,
        "all_valid": all_valid,
    }
    if answer is not None:
        guess = no_path_guess(question)
        gold = answer.strip().rstrip(".").split()[-1] if answer.strip() else ""
        record["no_path_guess_score"] = 0.5 if guess is None else float(guess == gold)
    return record


def summarize(records: list[dict | None], correct: list[bool]) -> dict | None:
    """Shares over the analysed examples: valid steps, chains valid throughout, first errors, and
    accuracy among the valid chains (below 1: real edges followed down the wrong branch)."""
    pairs = [(r, c) for r, c in zip(records, correct) if r is not None]
    analysed = [r for r, _ in pairs]
    if not analysed:
        return None
    steps = Counter(v for r in analysed for v in r["steps"])
    n_steps = sum(steps.values())
    first_errors = Counter(r["first_error"] or ("none" if r["steps"] else "no_steps") for r in analysed)
    valid_chains = [r for r in analysed if r["all_valid"]]
    return {
        "n": len(analysed),
        "mean_steps": n_steps / len(analysed),
        "step_shares": {k: v / n_steps for k, v in sorted(steps.items())} if n_steps else {},
        "first_error_shares": {k: v / len(analysed) for k, v in sorted(first_errors.items())},
        "valid_chain_share": len(valid_chains) / len(analysed),
        "valid_chains_ending_at_an_option": (
            sum(r["reaches_option"] for r in valid_chains) / len(valid_chains) if valid_chains else 0.0
        ),
        "accuracy_of_valid_chains": (
            sum(c for r, c in pairs if r["all_valid"]) / len(valid_chains) if valid_chains else 0.0
        ),
    } | ({"no_path_baseline_accuracy": sum(r["no_path_guess_score"] for r in analysed) / len(analysed)}
         if all("no_path_guess_score" in r for r in analysed) else {})
