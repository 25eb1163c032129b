"""SWITCH data: reasoning with a model-switched latent span `<swi> ... </swi>`.

One contiguous span of reasoning steps per example is wrapped in `<swi>`/`</swi>`. The span is
chosen by a rule:

  fixed    steps [switch_start, switch_start + switch_span) (clipped to the example);
  entropy  the `switch_span` consecutive steps of highest mean next-token entropy under a given
           model (`step_entropies` computes them teacher-forced).

A visible-to-latent curriculum replaces the span's text, step by step, with latent slots:

  stage s:  question "\\n" steps[:a] <swi> [latent] * (min(s, m) * c) steps[a + min(s, m):b] </swi> steps[b:] "### " answer <eos>

for a span [a, b) of m steps. Unlike Coconut's markers the boundaries are ordinary tokens the
model must produce: `<swi>` is a label of the prefix and `</swi>` (or the first visible span
token) is the label of the last latent slot. Visible steps outside the span are labelled too;
only the question and the latents are not.

Batches reuse the Coconut layout of `latent.nn.recurrence` (prefix | K slots | suffix) plus
`prefix_loss_mask`; the first suffix token is labelled. `thought_targets` [B, K] name, as in
`latent.methods.coconut.curriculum`, the last word of each hidden step at its last slot (-1 elsewhere);
`latent.thought_loss` > 0 trains the position feeding that slot on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from latent.data.parts import Parts, encode_parts
from latent.data.shapes import round_up
from latent.data.special_tokens import SPECIAL
from latent.data.tasks import Example
from latent.methods.coconut.curriculum import (
    ROUND_TO,
    Widths,
    empty_batch,
    fit_widths,
    place,
    place_thought_targets,
    step_key_token,
)


@dataclasses.dataclass(frozen=True)
class SwitchRecord:
    parts: Parts
    span: tuple[int, int]  # [a, b): the steps inside <swi> ... </swi>
    source_index: int
    step_keys: tuple[int, ...] = ()  # step i's last word (step_key_token), for thought targets


def fixed_span(n_steps: int, start: int, length: int) -> tuple[int, int]:
    a = min(start, max(n_steps - 1, 0))
    return a, min(a + length, n_steps)


def highest_entropy_span(step_entropy: Sequence[float], length: int) -> tuple[int, int]:
    """The window of `length` consecutive steps with the highest mean entropy (earliest on ties)."""
    n = len(step_entropy)
    length = min(length, n)
    if length == 0:
        return 0, 0
    means = [float(np.mean(step_entropy[i : i + length])) for i in range(n - length + 1)]
    a = int(np.argmax(means))
    return a, a + length


def step_entropies(
    examples: Sequence[Example], tokenizer, logits_fn: Callable, *, batch_size: int = 32
) -> list[list[float]]:
    """Mean next-token entropy (nats) of each reasoning step's tokens, teacher-forced.

    logits_fn(tokens int [B, T], padding_mask bool [B, T]) -> logits [B, T, V] of some model
    that uses `tokenizer`; sequences are right-padded here.
    """
    out = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        chunk_parts = [encode_parts(example, tokenizer) for example in chunk]
        # the question and the steps, not the answer: only the steps are scored
        sequences = [np.concatenate([parts.question, parts.chain()]) for parts in chunk_parts]
        T = round_up(max(map(len, sequences)), ROUND_TO)
        tokens = np.full((len(chunk), T), tokenizer.pad_id, np.int32)
        mask = np.zeros((len(chunk), T), bool)
        for b, ids in enumerate(sequences):
            tokens[b, : len(ids)] = ids
            mask[b, : len(ids)] = True
        logits = np.asarray(logits_fn(tokens, mask), np.float64)
        logp = logits - np.log(np.sum(np.exp(logits - logits.max(-1, keepdims=True)), -1, keepdims=True)) - logits.max(
            -1, keepdims=True
        )
        entropy_BxT = -np.sum(np.exp(logp) * logp, -1)
        for b, parts in enumerate(chunk_parts):
            position, per_step = len(parts.question), []
            for step in parts.steps:  # token j of the step is predicted at position j - 1
                per_step.append(float(entropy_BxT[b, position - 1 : position - 1 + len(step)].mean()))
                position += len(step)
            out.append(per_step)
    return out


def tokenize_switch_examples(
    examples: Sequence[Example], tokenizer, max_len: int, spans: Sequence[tuple[int, int]]
) -> tuple[list[SwitchRecord], int]:
    records, dropped = [], 0
    for index, (example, span) in enumerate(zip(examples, spans)):
        parts = encode_parts(example, tokenizer)
        if parts.n_tokens + 2 > max_len:  # + <swi> </swi>
            dropped += 1
            continue
        keys = tuple(step_key_token(s, tokenizer) for s in parts.steps)
        records.append(SwitchRecord(parts, tuple(span), index, keys))
    return records, dropped


def switch_widths(records: Sequence[SwitchRecord]) -> Widths:
    """Widths that fit every record at every stage (stage 0, the whole span written, is the longest)."""
    prefix = max(len(r.parts.question) + len(r.parts.chain(stop=r.span[0])) + 1 for r in records)  # + <swi>
    suffix = max(len(r.parts.chain(start=r.span[0])) + len(r.parts.answer) + 1 for r in records)  # + </swi>
    return Widths(round_up(prefix, ROUND_TO), round_up(suffix, ROUND_TO))


def latent_steps_at(stage: int, record: SwitchRecord) -> int:
    """Span steps that are latent at `stage` (all of them once stage >= span length)."""
    a, b = record.span
    return min(stage, b - a)


def collate_switch(
    records: Sequence[SwitchRecord], stage: int, tokenizer, latent_cfg, widths: Widths | None, n_slots: int,
    bucket: int = ROUND_TO,
) -> dict[str, np.ndarray]:
    """A SWITCH batch at `stage`; `widths=None` fits the widths to this batch (rounded up to `bucket`)."""
    swi, swi_end = tokenizer.id_of(SPECIAL.swi), tokenizer.id_of(SPECIAL.swi_end)
    pieces = []  # (prefix, latent steps, suffix) per example
    for record in records:
        parts, (a, end) = record.parts, record.span
        hidden = latent_steps_at(stage, record)
        prefix = np.concatenate([parts.question, parts.chain(stop=a), [swi]]).astype(np.int32)
        suffix = np.concatenate([parts.chain(a + hidden, end), [swi_end], parts.chain(start=end), parts.answer]).astype(np.int32)
        pieces.append((prefix, hidden, suffix))
    widths = widths or fit_widths([p for p, _, _ in pieces], [s for _, _, s in pieces], bucket)
    batch = empty_batch(len(records), widths, n_slots, tokenizer.pad_id)
    batch["prefix_loss_mask"] = np.zeros_like(batch["prefix_mask"])
    P, c = widths.prefix, latent_cfg.c_thought
    for b, ((prefix, hidden, suffix), record) in enumerate(zip(pieces, records)):
        place(batch, b, prefix, hidden * c, suffix, record.source_index)
        batch["prefix_loss_mask"][b, P - len(prefix) + len(record.parts.question):] = True  # visible steps and <swi>
        batch["suffix_loss_mask"][b, : len(suffix)] = True  # </swi> included
        start = record.span[0]
        place_thought_targets(batch, b, record.step_keys[start : start + hidden], c)
    return batch


def switch_num_slots(records_max_span: int, stage: int, latent_cfg) -> int:
    """K for a batch at `stage`: the most span steps any example can hide, times c (per stage),
    or the longest span times c (compile="once")."""
    if latent_cfg.compile == "once":
        return records_max_span * latent_cfg.c_thought
    return min(stage, records_max_span) * latent_cfg.c_thought
