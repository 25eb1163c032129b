"""Evaluation batches for few compiled shapes: prompts sorted by length into geometric widths,
every batch of the same rows, records back in example order and decoded as in any other batch."""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from latent.config_io import apply_overrides, load_preset
from latent.data.pipeline import Record, bucket_length, geometric_bucket, grouped_eval_batches
from latent.data.splits import fit_tokenizer, resolve_vocab
from latent.data.tasks import Example
from latent.eval.evaluator import Evaluator
from latent.nn import Transformer


def record(length: int, index: int) -> Record:
    tokens = np.arange(1, length + 1, dtype=np.int32)
    return Record(tokens, np.zeros(length, bool), prompt_len=length, source_index=index)


def test_grouped_batches_sort_by_length_share_few_widths_and_fill_the_last_batch():
    lengths = [300, 5, 120, 40, 77, 500, 33, 64, 200]
    batches = grouped_eval_batches([record(n, i) for i, n in enumerate(lengths)], batch_size=2, pad_id=0, max_len=512)
    assert [list(b["index"]) for b in batches] == [[1, 6], [3, 7], [4, 2], [8, 0], [5, 5]]  # last: filled
    assert [b["rows"] for b in batches] == [2, 2, 2, 2, 1]
    assert [b["tokens"].shape for b in batches] == [(2, 48), (2, 64), (2, 128), (2, 384), (2, 512)]
    for batch in batches:  # left-padded: each row ends in its own prompt
        for row, index in enumerate(batch["index"]):
            n = lengths[index]
            assert batch["padding_mask"][row].sum() == n and list(batch["tokens"][row, -n:]) == list(range(1, n + 1))
    # widths: two per doubling, a handful up to max_len, where 32-multiples give one per 32 tokens
    widths = {geometric_bucket(n, 1024) for n in range(1, 1025)}
    assert sorted(widths) == [32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024]
    assert len({bucket_length(n, 1024) for n in range(1, 1025)}) == 32
    assert all(n <= geometric_bucket(n, 1024) < 1.5 * n + 32 for n in range(1, 1025))


def test_an_evaluation_of_many_prompt_lengths_compiles_two_shapes_and_decodes_as_one_batch():
    """Nine prompts in eight 32-token buckets, out of order, batches of 2: grouped into widths 384
    and 512 (two compiled loops; in example order they took five); and every record equals what
    one batch of all nine, 512 wide, decodes (left padding and batch company change nothing)."""
    prompt_lengths = [270, 500, 300, 470, 330, 440, 360, 410, 390]
    examples = [Example(" ".join(f"w{j % 5}" for j in range(n // 2 - 1)) + " ?", ("s",), f"w{i % 5}")
                for i, n in enumerate(prompt_lengths)]  # a word is two tokens here ("w", digit)
    tokenizer = fit_tokenizer(examples, [], "cot")
    cfg = resolve_vocab(apply_overrides(load_preset("tiny"), ["eval.max_new_tokens=3", "eval.batch_size=2",
                                                               "model.max_seq_len=1024"]), tokenizer)
    graphdef, params = nnx.split(Transformer(cfg.model, rngs=nnx.Rngs(0)))
    evaluator = Evaluator(graphdef, cfg.model, tokenizer, examples, lambda p, e: p == e.answer, cfg.eval,
                          max_len=512, progress=False)
    lengths = [r.prompt_len for r in evaluator.prompts]
    assert lengths == prompt_lengths and len({bucket_length(n, 512) for n in lengths}) == 8  # the premise
    results = evaluator(params)
    assert evaluator.compiled_shapes() == 2
    assert [r["index"] for r in results["records"]] == list(range(9))

    one = grouped_eval_batches(evaluator.prompts, batch_size=9, pad_id=tokenizer.pad_id, max_len=512)[0]
    assert one["tokens"].shape == (9, 512)
    generate = evaluator._generate(0)
    out = jax.device_get(generate(params, one["tokens"], one["padding_mask"], jax.random.PRNGKey(0), None, None,
                                  one["index"]))
    by_index = {int(i): row for row, i in enumerate(one["index"])}
    for r in results["records"]:
        row = by_index[r["index"]]
        assert r["generated_tokens"] == int(out.lengths[row])
        assert r["generated"] == tokenizer.decode([int(t) for t in out.tokens[row][: out.lengths[row]]
                                                   if t != tokenizer.eos_id])
