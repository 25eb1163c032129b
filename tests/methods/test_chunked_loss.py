"""train.loss_chunk: the next-token loss from hidden states, with the head only at labelled
positions and a chunk at a time, equals the full-logits loss (sums and gradients), trains to the
same losses, and compiles to a step that keeps far less memory."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from latent.data import pipeline
from latent.methods.losses import next_token_head_sums
from latent.methods.sft import sft_objective
from latent.models import presets
from latent.nn.transformer import Transformer
from tests.conftest import tiny_model_fields


def tiny_model(**fields):
    return Transformer(presets.qwen3(**tiny_model_fields(**fields)), rngs=nnx.Rngs(0))


def left_padded_batch(vocab: int, lengths, prompt_lens, T: int, seed: int = 0, multiple: int = 8):
    """A collated batch of random records (prompt unlabelled, the rest labelled), with its
    label_positions."""
    rng = np.random.default_rng(seed)
    records = []
    for i, (n, p) in enumerate(zip(lengths, prompt_lens)):
        loss_mask = np.zeros(n, bool)
        loss_mask[p:] = True
        records.append(pipeline.Record(rng.integers(0, vocab, n).astype(np.int32), loss_mask, p, i))
    return pipeline.collate(records, pad_id=0, max_len=T, multiple=multiple, with_label_positions=True)


def sums_and_grads(objective, model, batch):
    graphdef, params = nnx.split(model, nnx.Param)

    def loss(params):
        loss_sum, count, correct = objective(nnx.merge(graphdef, params), batch)
        return loss_sum, (count, correct)

    (loss_sum, (count, correct)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return (float(loss_sum), float(count), float(correct)), grads


def assert_same(reference, other):
    (sums_a, grads_a), (sums_b, grads_b) = reference, other
    np.testing.assert_allclose(sums_b, sums_a, rtol=1e-5)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(grads_a), jax.tree.leaves(grads_b)):
        scale = float(jnp.max(jnp.abs(a)))
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=1e-5 * scale,
                                   err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("chunk", [1, 5, 8, 1000])
def test_chunked_head_at_labels_equals_the_full_logits_loss(tied, chunk):
    """Loss sum, count, correct count and every gradient, for a tied and an untied head, chunks
    that divide K, that do not (padding), of one position and wider than K (no scan)."""
    model = tiny_model(tie_embeddings=tied)
    batch = left_padded_batch(61, lengths=[20, 13, 32, 7], prompt_lens=[12, 5, 20, 6], T=32)
    assert batch["label_positions"].shape == (4, 16)  # 12 labelled next tokens at most, bucketed by 8
    reference = sums_and_grads(sft_objective, model, batch)
    assert reference[0][1] == 8 + 8 + 12 + 1
    chunked = sums_and_grads(lambda m, b: sft_objective(m, b, loss_chunk=chunk), model, batch)
    assert_same(reference, chunked)
    everywhere = {k: v for k, v in batch.items() if k != "label_positions"}  # the head at every position
    assert_same(reference, sums_and_grads(lambda m, b: sft_objective(m, b, loss_chunk=chunk), model, everywhere))


def test_an_attention_mask_passes_through_the_chunked_path():
    """Abstract-CoT's bottleneck objective hands sft_objective an attention mask: the same sums
    and gradients with it on the new path."""
    model = tiny_model()
    batch = left_padded_batch(61, lengths=[20, 16], prompt_lens=[8, 4], T=24)
    hide_BxTxS = np.random.default_rng(1).random((2, 24, 24)) < 0.2
    hide_BxTxS[:, :, -1] = False
    mask = jnp.asarray(~hide_BxTxS | np.eye(24, dtype=bool)[None])  # every query still sees itself
    reference = sums_and_grads(lambda m, b: sft_objective(m, b, attention_mask=mask), model, batch)
    assert_same(reference, sums_and_grads(lambda m, b: sft_objective(m, b, attention_mask=mask, loss_chunk=4),
                                          model, batch))


@pytest.mark.parametrize("overrides", [["latent.mode=switch"], ["method=rl", "train.init_from=/nowhere"]])
def test_methods_whose_losses_read_logits_refuse_the_field(overrides):
    from latent.config import ConfigError
    from latent.methods import method_of
    from tests.conftest import tiny_run

    cfg = tiny_run(*overrides, "train.loss_chunk=16")
    with pytest.raises(ConfigError, match="train.loss_chunk=16 does nothing under"):
        method_of(cfg).check(cfg)


def test_accuracy_counts_only_labelled_positions_the_same_way():
    """Row 0 continues its prompt greedily (every prediction right), row 1 is random (about none):
    both paths count the same correct tokens."""
    model = tiny_model()
    batch = left_padded_batch(61, lengths=[24, 24], prompt_lens=[4, 10], T=24)
    forward = jax.jit(lambda tokens: model(tokens).logits)
    for t in range(3, 23):  # token t + 1 of row 0 := the model's argmax at t
        batch["tokens"][0, t + 1] = int(jnp.argmax(forward(jnp.asarray(batch["tokens"]))[0, t]))
    (_, count, correct), _ = sums_and_grads(sft_objective, model, batch)
    (_, count_c, correct_c), _ = sums_and_grads(lambda m, b: sft_objective(m, b, loss_chunk=3), model, batch)
    assert count == 20 + 14 and 20 <= correct < count
    assert (count_c, correct_c) == (count, correct)


def test_label_positions_are_the_predicting_positions():
    loss_mask = np.array([[0, 0, 1, 1, 0, 1], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]], bool)
    np.testing.assert_array_equal(
        pipeline.label_positions(loss_mask, 6), [[1, 2, 4, -1, -1, -1], [0, 1, 2, 3, 4, -1], [-1] * 6])
    assert pipeline.label_width(loss_mask, 4) == 6  # 5 labelled next tokens, bucketed to 8, capped at T
    with pytest.raises(ValueError, match="row 1 has 5 labelled next tokens"):
        pipeline.label_positions(loss_mask, 4)


def test_the_model_skips_its_head_when_asked():
    model = tiny_model()
    tokens = jnp.ones((2, 5), jnp.int32)
    out, hidden_only = model(tokens), model(tokens, with_logits=False)
    assert hidden_only.logits is None
    np.testing.assert_array_equal(hidden_only.hidden, out.hidden)
    loss_sum, count, _ = next_token_head_sums(model.logits, out.hidden, tokens, jnp.ones((2, 5), bool), 2)
    assert count == 8 and np.isfinite(float(loss_sum))


@pytest.mark.slow
def test_chunking_cuts_the_compiled_steps_temp_memory():
    """The compiler's own count (memory_analysis, on CPU too) of the whole train step's temporaries
    at vocab 8192, every position labelled (so only chunking can save): chunks of 16 positions keep
    well under half of what [B, T, V] logits and their gradient take (measured 0.16x)."""
    from latent.config import OptimizerConfig
    from latent.train.optimizer import make_optimizer
    from latent.train.step import init_state, make_train_step

    model = tiny_model(vocab_size=8192, max_seq_len=128)
    graphdef, params = nnx.split(model, nnx.Param)
    optimizer, schedule = make_optimizer(OptimizerConfig(), 10)
    state = init_state(params, optimizer)
    batch = left_padded_batch(8192, lengths=[128] * 4, prompt_lens=[1] * 4, T=128, multiple=16)
    assert batch["label_positions"].shape == (4, 128)

    def temp_bytes(objective):
        step = jax.jit(make_train_step(graphdef, optimizer, schedule, objective=objective))
        return step.lower(state, batch).compile().memory_analysis().temp_size_in_bytes

    full, chunked = temp_bytes(sft_objective), temp_bytes(lambda m, b: sft_objective(m, b, loss_chunk=16))
    assert full > 4 * 128 * 8192 * 4  # the float32 logits alone
    assert chunked < 0.5 * full


def metric_rows(workdir, name) -> dict[int, float]:
    import json
    from pathlib import Path

    rows = [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r[name] for r in rows if name in r}


def assert_same_run(off_dir, on_dir, steps: int):
    """Loss, accuracy and gradient norm at every step within 1e-5."""
    for name in ("loss", "token_accuracy", "grad_norm"):
        off, on = metric_rows(off_dir, name), metric_rows(on_dir, name)
        assert sorted(off) == sorted(on) == list(range(1, steps + 1)), name
        np.testing.assert_allclose([on[s] for s in off], [off[s] for s in off], rtol=1e-5, err_msg=name)


@pytest.mark.slow
def test_a_run_trains_to_the_same_losses_with_the_chunked_head_at_labels(tmp_path):
    """train.py's loop on the tiny preset: the same losses at every step with train.loss_chunk on
    and off, and each batch shape pairs its length with a narrower label width."""
    from latent.train.loop import train
    from tests.train.test_loop import tiny

    runs = {}
    for chunk in (0, 16):
        cfg = tiny("train.steps=6", "train.log_every=1", "train.checkpoint_every=100", f"train.loss_chunk={chunk}")
        runs[chunk] = train(cfg, tmp_path / str(chunk), progress=False)
    assert_same_run(tmp_path / "0", tmp_path / "16", 6)
    assert all(len(key) == 1 for key in runs[0]["batch_shapes"])
    assert all(len(key) == 2 and key[1] < key[0] for key in runs[16]["batch_shapes"]), runs[16]["batch_shapes"]


@pytest.mark.slow
def test_a_coconut_run_trains_to_the_same_losses_with_the_chunked_suffix_loss(tmp_path):
    """Coconut's suffix loss from hidden states, across a stage change (stage 1 from step 6)."""
    from latent.train.loop import train
    from tests.train.test_coconut import coconut

    for chunk in (0, 8):
        cfg = coconut("train.steps=7", "latent.uniform_prob=0.0", "train.checkpoint_every=100",
                      f"train.loss_chunk={chunk}")
        summary = train(cfg, tmp_path / str(chunk), progress=False)
        assert [k for _, k, _ in summary["batch_shapes"]] == [0, 1]
    assert_same_run(tmp_path / "0", tmp_path / "8", 7)
