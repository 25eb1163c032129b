"""grain input pipeline: examples -> token records -> shuffled, bucketed, left-padded batches.

Each epoch is reshuffled deterministically from the seed (grain's shuffle + repeat), records are
sharded by process index for multi-host runs, and the iterator state is a small dict that goes
into every checkpoint so a resumed run sees exactly the batches it would have seen.

Batches are left-padded (prompts end at the same column, as decoding and Coconut's latent
slots need) to a length bucket, so a run compiles one train step per bucket, not per length.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import grain
import numpy as np

from latent.data.tasks import Example, cot_text, no_cot_text


@dataclasses.dataclass(frozen=True)
class Record:
    tokens: np.ndarray  # int32 [L]: prompt + target + eos
    loss_mask: np.ndarray  # bool [L]: True where the token is predicted (target and eos)
    prompt_len: int
    source_index: int  # position of the example this record came from
    segments: np.ndarray | None = None  # int8 [L]: part of each token (latent.data.abstract), if any


def format_example(example: Example, fmt: str) -> tuple[str, str]:
    """(prompt, target) text. The abstract formats share CoT's prompt and words (vocabulary
    fitting, eval prompts); their training records come from latent.data.abstract."""
    if fmt in ("cot", "abstract", "abstract_bottleneck", "codes"):
        return cot_text(example)
    if fmt == "no_cot":
        return no_cot_text(example)
    raise ValueError(f"task.format={fmt!r} is not one of ('cot', 'no_cot', 'abstract', 'abstract_bottleneck', 'codes')")


def tokenize_examples(
    examples: Sequence[Example], tokenizer, fmt: str, max_len: int, *, prompt_only: bool = False
) -> tuple[list[Record], int]:
    """Records for examples that fit `max_len` tokens, and how many were dropped for length.

    prompt_only: records hold just the prompt (for generation); only the prompt must fit.
    """
    records, dropped = [], 0
    for index, example in enumerate(examples):
        prompt, target = format_example(example, fmt)
        prompt_ids = tokenizer.encode(prompt)
        target_ids = [] if prompt_only else tokenizer.encode(target) + [tokenizer.eos_id]
        if len(prompt_ids) + len(target_ids) > max_len:
            dropped += 1
            continue
        tokens = np.asarray(prompt_ids + target_ids, np.int32)
        loss_mask = np.zeros(len(tokens), bool)
        loss_mask[len(prompt_ids):] = True
        records.append(Record(tokens, loss_mask, prompt_len=len(prompt_ids), source_index=index))
    return records, dropped


def bucket_length(length: int, max_len: int, multiple: int = 32) -> int:
    """Pad lengths up to a multiple of `multiple` (capped at max_len): few shapes, little waste."""
    return min(max_len, -(-length // multiple) * multiple)


def collate(records: Sequence[Record], *, pad_id: int, max_len: int) -> dict[str, np.ndarray]:
    """Left-padded batch: tokens/loss_mask/padding_mask [B, bucket] (+ segments when the records
    carry them; 0 on padding)."""
    length = bucket_length(max(len(r.tokens) for r in records), max_len)
    B = len(records)
    tokens = np.full((B, length), pad_id, np.int32)
    loss_mask = np.zeros((B, length), bool)
    padding_mask = np.zeros((B, length), bool)
    with_segments = records[0].segments is not None
    segments = np.zeros((B, length), np.int8)
    for b, record in enumerate(records):
        n = len(record.tokens)
        tokens[b, length - n:] = record.tokens
        loss_mask[b, length - n:] = record.loss_mask
        padding_mask[b, length - n:] = True
        if with_segments:
            segments[b, length - n:] = record.segments
    batch = {"tokens": tokens, "loss_mask": loss_mask, "padding_mask": padding_mask}
    if with_segments:
        batch["segments"] = segments
    return batch


def shuffled_batches(items: Sequence, *, batch_size: int, seed: int, batch_fn, process_index: int = 0,
                     process_count: int = 1):
    """An endless grain iterator over this process's share of `items`, reshuffled each epoch,
    `batch_fn(list of items)` per batch; `get_state()`/`set_state()` resume it."""
    if not items:
        raise ValueError("no training examples left after tokenization (check task.max_len)")
    dataset = grain.MapDataset.source(list(items))
    dataset = dataset[process_index::process_count]
    dataset = dataset.shuffle(seed=seed).repeat(None)
    return iter(dataset.batch(batch_size, drop_remainder=True, batch_fn=batch_fn).to_iter_dataset())


def train_batches(
    records: Sequence[Record],
    *,
    batch_size: int,
    seed: int,
    pad_id: int,
    max_len: int,
    process_index: int = 0,
    process_count: int = 1,
):
    """An endless grain iterator of collated training batches (see `shuffled_batches`)."""
    return shuffled_batches(
        records, batch_size=batch_size, seed=seed, process_index=process_index, process_count=process_count,
        batch_fn=lambda rs: collate(rs, pad_id=pad_id, max_len=max_len),
    )


def eval_batches(records: Sequence[Record], *, batch_size: int, pad_id: int, max_len: int) -> Iterator[dict]:
    """Prompts only, left-padded, in order (the last batch may be smaller)."""
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        prompts = [
            Record(r.tokens[: r.prompt_len], r.loss_mask[: r.prompt_len], r.prompt_len, r.source_index,
                   None if r.segments is None else r.segments[: r.prompt_len])
            for r in chunk
        ]
        batch = collate(prompts, pad_id=pad_id, max_len=max_len)
        batch["index"] = np.asarray([r.source_index for r in chunk])
        yield batch
