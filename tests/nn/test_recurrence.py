"""Continuous-thought recurrence: the cached scan equals Coconut's N+1 full passes, in loss and
gradients, for every feedback rule and gradient mode; feedback modules do what they say."""

from __future__ import annotations

import typing

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from latent.config import FeedbackRule
from latent.methods.losses import next_token_loss_sum
from latent.models import presets
from latent.nn import Transformer
from latent.nn.recurrence import continuous_thought_forward, naive_continuous_thought_logits, parse_latent_grad

K = 3


def tiny_cfg(**overrides):
    fields = dict(vocab_size=53, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, max_seq_len=64)
    fields.update(overrides)
    return presets.gated(presets.qwen3(**fields))


def latent_batch(cfg, seed=0):
    """3 examples: prefixes of 6/4/2 real tokens (left-padded to 6), 3/1/0 latents, suffixes of
    5/3/4 real tokens (right-padded to 5); the first suffix token is unlabelled (it is <eot>)."""
    rng = np.random.default_rng(seed)
    B, P, S = 3, 6, 5
    prefix = rng.integers(2, cfg.vocab_size, (B, P)).astype(np.int32)
    prefix_mask = np.arange(P)[None, :] >= P - np.array([6, 4, 2])[:, None]
    prefix = np.where(prefix_mask, prefix, 0)
    suffix = rng.integers(2, cfg.vocab_size, (B, S)).astype(np.int32)
    suffix_mask = np.arange(S)[None, :] < np.array([5, 3, 4])[:, None]
    suffix = np.where(suffix_mask, suffix, 0)
    loss_mask = suffix_mask.copy()
    loss_mask[:, 0] = False
    n_latent = np.array([3, 1, 0], np.int32)
    return tuple(jnp.asarray(x) for x in (prefix, prefix_mask, n_latent, suffix, suffix_mask, loss_mask))


def losses_and_grads(cfg, latent_grad, fast: bool):
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    prefix, prefix_mask, n_latent, suffix, suffix_mask, loss_mask = latent_batch(cfg)

    def loss(params):
        m = nnx.merge(graphdef, params)
        if fast:
            logits = continuous_thought_forward(
                m, prefix, prefix_mask, n_latent, suffix, suffix_mask, max_latent=K, latent_grad=latent_grad
            ).logits
        else:
            logits = naive_continuous_thought_logits(
                m, prefix, prefix_mask, n_latent, suffix, suffix_mask, max_latent=K, latent_grad=latent_grad
            )[:, prefix.shape[1] + K :]
        total, count = next_token_loss_sum(logits, suffix, loss_mask)
        return total / count

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    return float(value), grads


def max_abs_diff(a, b):
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize(
    "overrides",
    [dict(feedback=f, feedback_temperature=0.7) for f in typing.get_args(FeedbackRule)]
    # The Canon window rides in the cache through the latent scan; masked slots (example 2 has
    # no latents, example 1 one of three) must not enter any position's window.
    + [dict(canon=2)],
    ids=lambda o: o.get("feedback", f"canon{o.get('canon')}"),
)
def test_scan_with_cache_equals_n_plus_one_full_passes(overrides):
    cfg = tiny_cfg(**overrides)
    fast_loss, fast_grads = losses_and_grads(cfg, "full", fast=True)
    naive_loss, naive_grads = losses_and_grads(cfg, "full", fast=False)
    assert abs(fast_loss - naive_loss) <= 1e-5
    assert max_abs_diff(fast_grads, naive_grads) <= 1e-5


@pytest.mark.parametrize("latent_grad", ["detach", "truncate(1)", "truncate(2)"])
def test_gradient_modes_match_the_reference_and_differ_from_full(latent_grad):
    cfg = tiny_cfg()
    fast_loss, fast_grads = losses_and_grads(cfg, latent_grad, fast=True)
    naive_loss, naive_grads = losses_and_grads(cfg, latent_grad, fast=False)
    _, full_grads = losses_and_grads(cfg, "full", fast=True)
    assert abs(fast_loss - naive_loss) <= 1e-5
    assert max_abs_diff(fast_grads, naive_grads) <= 1e-5
    assert max_abs_diff(fast_grads, full_grads) > 1e-6  # the chain is cut somewhere


def test_zero_latents_equal_plain_forward_over_prefix_and_suffix():
    cfg = tiny_cfg()
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    prefix, prefix_mask, _, suffix, suffix_mask, _ = latent_batch(cfg)
    out = continuous_thought_forward(
        model, prefix, prefix_mask, jnp.zeros(3, jnp.int32), suffix, suffix_mask, max_latent=K
    )
    plain = model(jnp.concatenate([prefix, suffix], 1), padding_mask=jnp.concatenate([prefix_mask, suffix_mask], 1))
    real = np.asarray(suffix_mask)
    np.testing.assert_allclose(
        np.asarray(out.logits)[real], np.asarray(plain.logits[:, prefix.shape[1]:])[real], atol=1e-5
    )


def test_parse_latent_grad():
    assert parse_latent_grad("full") is None
    assert parse_latent_grad("detach") == 0
    assert parse_latent_grad("truncate(4)") == 4
    with pytest.raises(ValueError, match="latent_grad must be"):
        parse_latent_grad("truncate(-1)")


def test_hrpo_gate_starts_on_token_embeddings():
    cfg = tiny_cfg(feedback="hrpo")
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    logits = jax.random.normal(jax.random.key(1), (4, cfg.vocab_size))
    hidden = jax.random.normal(jax.random.key(2), (4, cfg.d_model))
    token = model.embed[...][jnp.argmax(logits, -1)]
    fed = model.feed_back(hidden, logits)
    # a = sigmoid(Lambda)^(8 r) >= 0.99 at init, so the token embedding dominates.
    cos = jnp.sum(fed * token, -1) / (jnp.linalg.norm(fed, axis=-1) * jnp.linalg.norm(token, axis=-1))
    assert float(jnp.min(cos)) > 0.9
    a_min = float(jax.nn.sigmoid(model.feedback.log_a[...]).min()) ** 8
    assert a_min == pytest.approx(0.99, abs=1e-6)  # model.hrpo_start_token_weight's default


def test_hrpo_gate_starts_at_the_configured_token_weight():
    model = Transformer(tiny_cfg(feedback="hrpo", hrpo_start_token_weight=0.5), rngs=nnx.Rngs(0))
    np.testing.assert_allclose(np.asarray(model.feedback.token_weight()), 0.5, rtol=1e-5)


def test_soft_feedback_is_the_expected_embedding_and_later_has_the_embedding_norm():
    cfg = tiny_cfg(feedback="soft", feedback_temperature=0.5)
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    logits = jax.random.normal(jax.random.key(1), (2, cfg.vocab_size))
    expected = jax.nn.softmax(logits / 0.5) @ model.embed[...]
    np.testing.assert_allclose(model.feed_back(jnp.zeros((2, cfg.d_model)), logits), expected, atol=1e-6)

    model = Transformer(tiny_cfg(feedback="later"), rngs=nnx.Rngs(0))
    fed = model.feed_back(10.0 * jax.random.normal(jax.random.key(2), (2, cfg.d_model)), logits)
    mean_norm = jnp.mean(jnp.linalg.norm(model.embed[...], axis=-1))
    np.testing.assert_allclose(jnp.linalg.norm(fed, axis=-1), mean_norm, rtol=1e-5)
