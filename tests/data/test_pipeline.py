"""grain pipeline: deterministic per-epoch reshuffles, left padding to buckets, labels, resume, sharding."""

from __future__ import annotations

import numpy as np
import pytest

from latent.data import pipeline
from latent.data.tasks import get_task
from latent.data.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def setup():
    examples = get_task("prosqa_small").generate(40, seed=0)
    texts = [t for e in examples for t in pipeline.format_example(e, "cot")]
    tokenizer = Tokenizer.fit_word_level(texts)
    records, dropped = pipeline.tokenize_examples(examples, tokenizer, "cot", max_len=256)
    assert dropped == 0
    return examples, tokenizer, records


def _batches(records, tokenizer, n, **kw):
    it = pipeline.train_batches(records, batch_size=4, seed=3, pad_id=tokenizer.pad_id, max_len=256, **kw)
    return it, [next(it) for _ in range(n)]


def test_labels_cover_target_and_eos_only(setup):
    examples, tokenizer, records = setup
    record = records[0]
    prompt, target = pipeline.format_example(examples[0], "cot")
    assert tokenizer.decode(record.tokens[: record.prompt_len]) == prompt
    assert tokenizer.decode(record.tokens[record.loss_mask][:-1]) == target
    assert record.tokens[-1] == tokenizer.eos_id and record.loss_mask[-1]
    assert not record.loss_mask[: record.prompt_len].any()


def test_batches_are_left_padded_to_a_bucket(setup):
    _, tokenizer, records = setup
    _, batches = _batches(records, tokenizer, 5)
    for batch in batches:
        B, L = batch["tokens"].shape
        assert B == 4 and L % 32 == 0
        pad = ~batch["padding_mask"]
        assert (batch["tokens"][pad] == tokenizer.pad_id).all()
        # left padding: once real tokens start they continue to the end
        assert (np.diff(batch["padding_mask"].astype(int), axis=1) >= 0).all()
        assert batch["padding_mask"][:, -1].all()
        assert not (batch["loss_mask"] & pad).any()


def test_same_seed_same_order_and_each_epoch_reshuffled(setup):
    _, tokenizer, records = setup
    _, a = _batches(records, tokenizer, 20)
    _, b = _batches(records, tokenizer, 20)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["tokens"], y["tokens"])
    epoch = len(records) // 4  # 10 batches an epoch
    def real(batches):
        return [tuple(r[m]) for b in batches for r, m in zip(b["tokens"], b["padding_mask"])]

    first, second = real(a[:epoch]), real(a[epoch : 2 * epoch])
    assert sorted(first) == sorted(second)  # every record once per epoch
    assert first != second  # in a new order


def test_iterator_state_resumes_exactly(setup):
    _, tokenizer, records = setup
    it, _ = _batches(records, tokenizer, 7)
    state = it.get_state()
    expected = [next(it) for _ in range(5)]
    resumed = pipeline.train_batches(records, batch_size=4, seed=3, pad_id=tokenizer.pad_id, max_len=256)
    resumed.set_state(state)
    for x, y in zip(expected, [next(resumed) for _ in range(5)]):
        np.testing.assert_array_equal(x["tokens"], y["tokens"])


def test_a_batch_is_global_and_pads_to_one_bucket_that_its_halves_would_not_share(setup):
    """Every process draws the same global batch from all records and pads it once (the loop then
    places each process's rows): records chosen so that each half of a batch, padded on its own as
    a process once did, would take another bucket than the whole."""
    _, tokenizer, records = setup
    short = [r for r in records if len(r.tokens) <= 96]
    long = [r for r in records if len(r.tokens) > 96]
    assert short and long
    mixed = [r for pair in zip(short, long) for r in pair]  # short, long, short, long, ...
    collate = lambda rs: pipeline.collate(rs, pad_id=tokenizer.pad_id, max_len=256, multiple=32)
    it = pipeline.shuffled_batches(mixed, batch_size=len(mixed), seed=3, batch_fn=list)
    batch = next(it)
    assert sorted(r.source_index for r in batch) == sorted(r.source_index for r in mixed)  # all records, not a share
    whole = collate(batch)["tokens"].shape[1]
    halves = {collate(mixed[0::2])["tokens"].shape[1], collate(mixed[1::2])["tokens"].shape[1]}
    assert whole == max(halves) and len(halves) == 2


def test_too_long_examples_are_dropped_and_counted(setup):
    examples, tokenizer, _ = setup
    records, dropped = pipeline.tokenize_examples(examples, tokenizer, "cot", max_len=40)
    assert dropped == len(examples) - len(records) > 0
    assert all(len(r.tokens) <= 40 for r in records)


def test_length_grouped_batches_cover_each_epoch_with_less_padding(setup):
    _, tokenizer, records = setup
    grouped, a = _batches(records, tokenizer, 20, group_window=5, bucket_multiple=16)
    assert all(b["tokens"].shape[1] % 16 == 0 for b in a)
    _, plain = _batches(records, tokenizer, 20)
    epoch = len(records) // 4

    def real(batches):
        return [tuple(r[m]) for b in batches for r, m in zip(b["tokens"], b["padding_mask"])]

    first, second = real(a[:epoch]), real(a[epoch : 2 * epoch])
    assert sorted(first) == sorted(second) == sorted(real(plain[:epoch]))  # every record once an epoch
    assert first != second  # reshuffled
    # within a batch, lengths come from one sorted window: the spread is smaller than at random
    def spread(batches):
        return np.mean([np.ptp(b["padding_mask"].sum(1)) for b in batches])

    assert spread(a) < spread(plain)
    state = grouped.get_state()
    expected = [next(grouped) for _ in range(5)]
    resumed = pipeline.train_batches(records, batch_size=4, seed=3, pad_id=tokenizer.pad_id, max_len=256,
                                     group_window=5, bucket_multiple=16)
    resumed.set_state(state)
    for x, y in zip(expected, [next(resumed) for _ in range(5)]):
        np.testing.assert_array_equal(x["tokens"], y["tokens"])


def test_length_grouped_epoch_sorts_each_window():
    lengths_N = np.random.default_rng(0).integers(10, 100, size=64)
    batches = pipeline.length_grouped_epoch(lengths_N, batch_size=4, group_window=4, seed=(1, 0))
    assert sorted(batches.ravel().tolist()) == list(range(64))
    for batch in batches:  # each batch is a run of one sorted window: sorted itself
        assert (np.diff(lengths_N[batch]) >= 0).all()
    again = pipeline.length_grouped_epoch(lengths_N, batch_size=4, group_window=4, seed=(1, 0))
    np.testing.assert_array_equal(batches, again)
    other_epoch = pipeline.length_grouped_epoch(lengths_N, batch_size=4, group_window=4, seed=(1, 1))
    assert not np.array_equal(batches, other_epoch)
