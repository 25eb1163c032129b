"""Training text for an example, in Coconut's layout, and answer extraction from generations.

Coconut tokenizes `question + "\\n"`, then each step followed by "\\n", then "### " + answer:

    Every shumpus is a rempus. ... Is Tom a lempus or scrompus?
    Tom is a terpus.
    Every terpus is a brimpus.
    Every brimpus is a lempus.
    ### Tom is a lempus.

The prompt is the question plus that newline, so `prompt + target` is the text above exactly even
when it is tokenized in parts (`latent.data.parts`: the question, each step, the answer) whose ids
are concatenated, and latent slots (`<bot>...<eot>`) can be placed right after the prompt as
Coconut does. The "### " marker lets `extract_answer` find the answer after any chain of
thought, written or latent.
"""

from __future__ import annotations

from latent.data.tasks.base import Example

ANSWER_MARKER = "###"
PROMPT_END = "\n"
STEP_END = "\n"


def prompt_text(example: Example) -> str:
    """The model's input: the question and the newline that ends it."""
    return example.question + PROMPT_END


def step_texts(example: Example) -> list[str]:
    """Each reasoning step as the chain writes it: the step and the newline that ends its line."""
    return [step + STEP_END for step in example.steps]


def answer_text(example: Example) -> str:
    """The answer line, "### answer": the last line, so no newline follows it."""
    return f"{ANSWER_MARKER} {example.answer}"


def cot_text(example: Example) -> tuple[str, str]:
    """(prompt, target) with the chain of thought: one step per line, then "### answer"."""
    return prompt_text(example), "".join(step_texts(example)) + answer_text(example)


def no_cot_text(example: Example) -> tuple[str, str]:
    """(prompt, target) with the answer only: "### answer"."""
    return prompt_text(example), answer_text(example)


def extract_answer(generated: str) -> str:
    """The answer in a generation: the text after the last "###", stripped (all of it if none)."""
    _, marker, answer = generated.rpartition(ANSWER_MARKER)
    return (answer if marker else generated).strip()
