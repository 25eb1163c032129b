"""Multi-digit multiplication with a long-multiplication chain of thought (Deng et al. 2023).

Layout, as in the implicit-CoT work ("4 x 4" = two 4-digit operands by default):

    question: "4 3 2 1 * 8 7 6 5"                    1234 * 5678, digits space-separated
    steps:    "2 7 8 9 0"                            1234 * 8 = 9872   (partial product 0)
              "+ 0 8 3 6 8 0 ( 2 5 2 6 9 0 )"        1234 * 70, running sum 96252
              "+ 0 0 4 0 4 7 0 ( 2 5 6 6 3 8 0 )"    1234 * 600, running sum 836652
              "+ 0 0 0 0 7 1 6 0 ( 2 5 6 6 0 0 7 0 )"  1234 * 5000, running sum 7006652
    answer:   "2 5 6 6 0 0 7 0"                      7006652, padded to 8 digits

Digits are written least-significant first (`reverse_digits=True`, the default, as in that work):
a left-to-right model then produces each digit after the lower digits and carries it depends
on, so every digit is computable from what precedes it. Partial product j (a times digit j of b,
shifted by j places) has len(a) + 1 + j digits, and the running sum in parentheses the same
width, zero-padded; the answer is the last running sum, i.e. the product padded to
len(a) + len(b) digits. Fixed widths make every example of a size the same length. Joining the
steps with spaces gives Deng et al.'s one-line chain of thought.
"""

from __future__ import annotations

import random

from latent.data.tasks.base import Example, Task, check_count


def spell(number: int, width: int, reverse: bool) -> str:
    """`number` zero-padded to `width` digits, space-separated, least-significant first if reverse."""
    digits = str(number).zfill(width)
    return " ".join(digits[::-1] if reverse else digits)


def digits_only(text: str) -> str | None:
    """The digit string of an answer ("2 5 2 3 ." -> "2523"), or None if it holds anything else."""
    text = "".join(text.split())
    if text.endswith("."):
        text = text[:-1]
    return text if text.isdigit() else None


class Multiplication(Task):
    """`digits`-by-`b_digits` multiplication (both default 4) with partial-product steps."""

    def __init__(self, digits: int = 4, b_digits: int | None = None, reverse_digits: bool = True):
        b_digits = digits if b_digits is None else b_digits
        for value in (digits, b_digits):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"operand digit counts must be ints >= 1, got {digits}, {b_digits}")
        self.a_digits, self.b_digits, self.reverse_digits = digits, b_digits, reverse_digits
        self.name = "multiplication"

    def make_example(self, a: int, b: int) -> Example:
        """The example for a * b (operands of any size; used by `generate` and by tests)."""
        rev, a_width = self.reverse_digits, len(str(a))
        b_digits = [int(d) for d in reversed(str(b))]
        steps, total = [], 0
        for j, digit in enumerate(b_digits):
            partial = a * digit * 10**j
            total += partial
            width = a_width + 1 + j
            if j == 0:
                steps.append(spell(partial, width, rev))
            else:
                steps.append(f"+ {spell(partial, width, rev)} ( {spell(total, width, rev)} )")
        answer = spell(a * b, a_width + len(b_digits), rev)
        return Example(
            question=f"{spell(a, a_width, rev)} * {spell(b, len(b_digits), rev)}",
            steps=tuple(steps),
            answer=answer,
            meta={"a": a, "b": b, "product": a * b, "reverse_digits": rev},
        )

    def generate(self, n: int, seed: int) -> list[Example]:
        rng = random.Random(seed)

        def operand(num_digits: int) -> int:
            return rng.randrange(10 ** (num_digits - 1) if num_digits > 1 else 0, 10**num_digits)

        return [self.make_example(operand(self.a_digits), operand(self.b_digits)) for _ in range(check_count(n))]

    scorer_name = "digits"

    def score(self, prediction: str, example: Example) -> bool:
        """Exact digit-string match; spaces and a trailing period are ignored."""
        predicted = digits_only(prediction)
        return predicted is not None and predicted == digits_only(example.answer)

    def credit(self, prediction: str, example: Example) -> float:
        """The share of the answer's digit positions written right, in the order written (least
        significant first by default), over the longer of the two lengths: 1 exactly when `score`
        is true, 0 for an answer that is not a digit string. An RL reward with a gradient where
        exact answers are rare (a model that gets the low digits of a product right but not all)."""
        predicted, answer = digits_only(prediction), digits_only(example.answer)
        if predicted is None or not answer:
            return 0.0
        right = sum(p == a for p, a in zip(predicted, answer))
        return right / max(len(predicted), len(answer))
