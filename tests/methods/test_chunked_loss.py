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
