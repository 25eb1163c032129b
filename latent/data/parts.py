"""An example's token ids, encoded once and cut where every layout cuts them.

    parts = encode_parts(example, tokenizer)
    cot = np.concatenate([parts.question, parts.chain(), parts.answer])             # the CoT record
    coconut_suffix = np.concatenate([[eot], parts.chain(start=stage), parts.answer])  # steps dropped

The text is the layout of `latent.data.tasks.formats`, cut into parts that are encoded one by one:

    question "\\n" | step_1 "\\n" | ... | step_n "\\n" | "### " answer  + <eos>

Every cut falls right after a newline. A word-level tokenizer holds "\\n" as an added token, at
which the text is split before anything else, so the parts' ids joined are exactly the ids of the
joined text (`cot_text`'s prompt + target); a byte-level BPE (GPT-2) does not merge a newline with
the non-space character after it either. So CoT, no-CoT, Coconut, SWITCH, the Abstract-CoT
layouts, VQ codes and the evaluation prompts all build their sequences from the same ids, and
place markers, latent slots or abstract spans between parts without encoding anything again.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from latent.data.tasks import Example
from latent.data.tasks.formats import answer_text, prompt_text, step_texts


@dataclasses.dataclass(frozen=True)
class Parts:
    """The token ids of one example's question, reasoning steps and answer."""

    question: np.ndarray  # int32 [Q]: question + "\n" (the prompt every layout starts with)
    steps: tuple[np.ndarray, ...]  # int32 [S_i] each: step i + "\n"
    answer: np.ndarray  # int32 [A]: "### " + answer, then <eos> (every training layout ends with both)

    def chain(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """int32 [sum of S_i]: steps[start:stop] one after the other (empty without steps)."""
        return np.concatenate([np.zeros(0, np.int32), *self.steps[start:stop]])

    @property
    def n_tokens(self) -> int:
        """Length of the CoT sequence: question, every step and the answer with its <eos>."""
        return len(self.question) + sum(len(step) for step in self.steps) + len(self.answer)


def encode_parts(example: Example, tokenizer) -> Parts:
    """The example's `Parts` under `tokenizer`."""

    def ids(text: str, end: tuple[int, ...] = ()) -> np.ndarray:
        ids_N = np.asarray([*tokenizer.encode(text), *end], np.int32)
        ids_N.flags.writeable = False  # every stage and layout reads the same arrays: none may write to them
        return ids_N

    return Parts(
        question=ids(prompt_text(example)),
        steps=tuple(ids(step) for step in step_texts(example)),
        answer=ids(answer_text(example), end=(tokenizer.eos_id,)),
    )
