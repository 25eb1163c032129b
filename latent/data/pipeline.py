"""grain input pipeline: examples -> token records -> shuffled, bucketed, left-padded batches.

Each epoch is reshuffled deterministically from the seed (grain's shuffle + repeat), and the
iterator state is a small dict that goes into every checkpoint so a resumed run sees exactly the
batches it would have seen. A batch is global: in a multi-process run every process draws the same
batch from all the records and pads it to one bucket, and the loop places on each process only the
rows its devices hold (latent.sharding.global_batch), so the processes' shapes cannot differ.

Batches are left-padded (prompts end at the same column, as decoding and Coconut's latent
slots need) to a length bucket, so a run compiles one train step per bucket, not per length.
Optionally (`train.length_grouping`) batches are grouped by length, so a batch of short examples
is not padded to the length of one long one.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterator, Sequence

import grain
import numpy as np

from latent.config import TaskFormat
from latent.data.parts import encode_parts
from latent.data.shapes import round_up
from latent.data.tasks import Example, cot_text, no_cot_text


@dataclasses.dataclass(frozen=True)
class Record:
    tokens: np.ndarray  # int32 [L]: prompt + target + eos
    loss_mask: np.ndarray  # bool [L]: True where the token is predicted (target and eos)
    prompt_len: int
    source_index: int  # position of the example this record came from
    segments: np.ndarray | None = None  # int8 [L]: part of each token (latent.methods.abstract_cot.layouts), if any


TEXT_FORMATS = typing.get_args(TaskFormat)  # every format has text: CoT's, or no-CoT's


def writes_chain(fmt: str) -> bool:
    """Whether text records of `fmt` hold the chain of thought. The abstract formats share CoT's
    prompt and words (vocabulary fitting, eval prompts); their training records come from
    latent.methods.abstract_cot.layouts."""
    if fmt not in TEXT_FORMATS:
        raise ValueError(f"task.format={fmt!r} is not one of {TEXT_FORMATS}")
    return fmt != "no_cot"


def format_example(example: Example, fmt: str) -> tuple[str, str]:
    """(prompt, target) text."""
    return cot_text(example) if writes_chain(fmt) else no_cot_text(example)


def tokenize_examples(
    examples: Sequence[Example], tokenizer, fmt: str, max_len: int, *, prompt_only: bool = False
) -> tuple[list[Record], int]:
    """Records for examples that fit `max_len` tokens, and how many were dropped for length.

    prompt_only: records hold just the prompt (for generation); only the prompt must fit.
    """
    with_chain = writes_chain(fmt)
    records, dropped = [], 0
    for index, example in enumerate(examples):
        parts = encode_parts(example, tokenizer)
        target = [parts.chain(), parts.answer] if with_chain else [parts.answer]
        tokens = np.concatenate([parts.question, *([] if prompt_only else target)])
        if len(tokens) > max_len:
            dropped += 1
            continue
        loss_mask = np.zeros(len(tokens), bool)
        loss_mask[len(parts.question):] = True
        records.append(Record(tokens, loss_mask, prompt_len=len(parts.question), source_index=index))
    return records, dropped


def bucket_length(length: int, max_len: int, multiple: int = 32) -> int:
    """Pad lengths up to a multiple of `multiple` (capped at max_len): few shapes, little waste."""
    return min(max_len, round_up(length, multiple))


def label_positions(loss_mask_BxT: np.ndarray, width: int) -> np.ndarray:
    """int32 [B, width]: per row, the positions t whose next token t + 1 is labelled (where the
    output head must run; latent.methods.losses.next_token_head_sums), in order, then -1."""
    loss_mask_BxT = np.asarray(loss_mask_BxT, bool)
    positions_BxK = np.full((loss_mask_BxT.shape[0], width), -1, np.int32)
    for b, row_T in enumerate(loss_mask_BxT):
        predictors = np.flatnonzero(row_T[1:])
        if len(predictors) > width:
            raise ValueError(f"row {b} has {len(predictors)} labelled next tokens, more than the width {width}")
        positions_BxK[b, : len(predictors)] = predictors
    return positions_BxK


def label_width(loss_mask_BxT: np.ndarray, multiple: int) -> int:
    """The static width of a batch's `label_positions`: its most labelled next tokens in a row,
    rounded up to `multiple` like the length, capped at the length. The step compiles once per
    (length, width) bucket pair, not per count."""
    most = int(np.asarray(loss_mask_BxT, bool)[:, 1:].sum(axis=1).max(initial=0))
    return min(loss_mask_BxT.shape[1], round_up(max(most, 1), multiple))


def collate(records: Sequence[Record], *, pad_id: int, max_len: int, multiple: int = 32,
            with_label_positions: bool = False) -> dict[str, np.ndarray]:
    """Left-padded batch: tokens/loss_mask/padding_mask [B, bucket] (+ segments when the records
    carry them; 0 on padding). with_label_positions: also `label_positions` [B, K] (see
    `label_positions`; K from `label_width`) for the objectives that run the head only there."""
    length = bucket_length(max(len(r.tokens) for r in records), max_len, multiple)
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
    if with_label_positions:
        batch["label_positions"] = label_positions(loss_mask, label_width(loss_mask, multiple))
    return batch


def shuffled_batches(items: Sequence, *, batch_size: int, seed: int, batch_fn,
                     lengths: Sequence[int] | None = None, group_window: int = 0):
    """An endless grain iterator over `items`, reshuffled each epoch, `batch_fn(list of items)`
    per global batch of `batch_size`; `get_state()`/`set_state()` resume it.

    With `lengths` and `group_window` > 0, batches are grouped by length: each epoch's shuffled
    order is cut into windows of `group_window` batches, each window is sorted by length and cut
    into batches, and the batches of the epoch are shuffled. Every item is still seen once per
    epoch (less the remainder), but a batch pads to its own longest item, not to the longest of a
    random draw (`length_grouped_epoch`)."""
    if not items:
        raise ValueError("no training examples left after tokenization (check task.max_len)")
    items = list(items)
    if lengths is None or group_window <= 0:
        dataset = grain.MapDataset.source(items).shuffle(seed=seed).repeat(None)
        return iter(dataset.batch(batch_size, drop_remainder=True, batch_fn=batch_fn).to_iter_dataset())
    lengths_N = np.asarray(lengths)
    batches_per_epoch = len(items) // batch_size
    if batches_per_epoch == 0:
        raise ValueError(f"{len(items)} examples, fewer than one batch of {batch_size}")
    epoch_cache: dict[int, np.ndarray] = {}

    def epoch_batches(epoch: int) -> np.ndarray:
        if epoch not in epoch_cache:
            epoch_cache.clear()  # only the current epoch is ever read again
            epoch_cache[epoch] = length_grouped_epoch(lengths_N, batch_size, group_window, seed=(seed, epoch))
        return epoch_cache[epoch]

    def make_batch(index: int, _) -> object:
        epoch, position = divmod(index, batches_per_epoch)
        return batch_fn([items[i] for i in epoch_batches(epoch)[position]])

    dataset = grain.MapDataset.range(batches_per_epoch).repeat(None).map_with_index(make_batch)
    return iter(dataset.to_iter_dataset())


def length_grouped_epoch(lengths_N: np.ndarray, batch_size: int, group_window: int, seed) -> np.ndarray:
    """Item indices [n_batches, batch_size] of one epoch: a seeded shuffle, windows of
    `group_window` batches sorted by length, batches in a seeded random order."""
    rng = np.random.default_rng(seed)
    n_batches = len(lengths_N) // batch_size
    order = rng.permutation(len(lengths_N))[: n_batches * batch_size]
    window = group_window * batch_size
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        order[start : start + window] = chunk[np.argsort(lengths_N[chunk], kind="stable")]
    batches = order.reshape(n_batches, batch_size)
    return batches[rng.permutation(n_batches)]


def train_batches(
    records: Sequence[Record],
    *,
    batch_size: int,
    seed: int,
    pad_id: int,
    max_len: int,
    group_window: int = 0,
    bucket_multiple: int = 32,
    with_label_positions: bool = False,
):
    """An endless grain iterator of collated training batches (see `shuffled_batches`; with
    `group_window` > 0, grouped by record length), padded to multiples of `bucket_multiple`."""
    return shuffled_batches(
        records, batch_size=batch_size, seed=seed,
        batch_fn=lambda rs: collate(rs, pad_id=pad_id, max_len=max_len, multiple=bucket_multiple,
                                    with_label_positions=with_label_positions),
        lengths=[len(r.tokens) for r in records] if group_window > 0 else None, group_window=group_window,
    )


def eval_batches(records: Sequence[Record], *, batch_size: int, pad_id: int, max_len: int) -> Iterator[dict]:
    """Prompts only, left-padded, in order (the last batch may be smaller)."""
    for start in range(0, len(records), batch_size):
        yield _prompt_batch(records[start : start + batch_size], pad_id=pad_id, length=None, max_len=max_len)


def _prompt_batch(chunk: Sequence[Record], *, pad_id: int, length: int | None, max_len: int) -> dict:
    """One left-padded batch of the chunk's prompts, `length` wide (None: its 32-multiple bucket)."""
    prompts = [
        Record(r.tokens[: r.prompt_len], r.loss_mask[: r.prompt_len], r.prompt_len, r.source_index,
               None if r.segments is None else r.segments[: r.prompt_len])
        for r in chunk
    ]
    multiple = 32 if length is None else length  # a multiple of the width itself: exactly that width
    batch = collate(prompts, pad_id=pad_id, max_len=max_len if length is None else length, multiple=multiple)
    batch["index"] = np.asarray([r.source_index for r in chunk])
    return batch


def geometric_bucket(length: int, max_len: int, smallest: int = 32) -> int:
    """The prompt width of a decoding batch: the first of smallest * (1, 1.5, 2, 3, 4, 6, ...) that
    holds `length` (two widths per doubling), capped at max_len. Every width is a compiled decoding
    loop, so an evaluation compiles about 2 log2(max_len / smallest) shapes at most, whatever its
    prompts; a prompt pads by less than half its length."""
    width = smallest
    while width < length:
        width = width * 3 // 2 if width & (width - 1) == 0 else width * 4 // 3  # 32 48 64 96 128 192 ...
    return min(width, max_len)


def grouped_eval_batches(records: Sequence[Record], *, batch_size: int, pad_id: int, max_len: int) -> list[dict]:
    """Prompts only, left-padded, for decoding in few compiled shapes: the prompts sorted by length
    (ties in their order), cut into batches of `batch_size`, each as wide as its longest prompt's
    `geometric_bucket`. A last batch with fewer rows is filled up to `batch_size` with copies of its
    last prompt (when there is more than one batch), so every batch has the same rows.
    batch["rows"] counts the real rows (the first ones); batch["index"] names each row's record
    (`source_index`; fillers repeat the last). Decoded rows do not depend on their batch (left
    padding and per-example keys), so a caller puts results back in order by "index"."""
    order = sorted(range(len(records)), key=lambda i: records[i].prompt_len)  # stable: ties keep their order
    batches = []
    for start in range(0, len(order), batch_size):
        chunk = [records[i] for i in order[start : start + batch_size]]
        rows = len(chunk)
        if rows < batch_size and len(records) > batch_size:
            chunk += [chunk[-1]] * (batch_size - rows)
        width = geometric_bucket(max(r.prompt_len for r in chunk), max_len)
        batch = _prompt_batch(chunk, pad_id=pad_id, length=width, max_len=max_len)
        batch["rows"] = rows
        batches.append(batch)
    return batches
