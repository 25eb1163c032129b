"""Every registered SDPA core (model.attention_impl) against the einsum reference: logits and
gradients on GQA/MQA, gated and ungated layers, left padding, a custom attention mask and cached
decoding; and the contract the shared attention layer gives a core."""

from __future__ import annotations

import typing

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from latent.config import AttentionImpl, Config, ConfigError
from latent.config_io import apply_overrides
from latent.models import presets
from latent.nn import SDPA_CORES, Attention, KVCache, Transformer, make_attention, rotary_cos_sin
from tests.conftest import tiny_model_fields as tiny

OTHER_CORES = sorted(set(SDPA_CORES) - {"einsum"})
TOL = dict(atol=1e-5, rtol=1e-5)


MODELS = {
    "llama-gqa-ungated": lambda: presets.llama(**tiny()),
    "llama-mqa-headwise": lambda: presets.gated(presets.llama(**tiny(n_kv_heads=1)), "headwise"),
    "qwen3_next-gqa-elementwise": lambda: presets.qwen3_next(**tiny()),  # QK-norm, partial rotary
    "gpt2-mha-ungated": lambda: presets.gpt2(**tiny(n_kv_heads=4)),  # learned positions, biases
}


def pair(cfg, impl):
    """(forward of einsum, forward of `impl`, shared params): the same weights, two cores."""
    reference = Transformer(cfg, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(reference)
    other_graphdef, _ = nnx.split(Transformer(cfg.replace(attention_impl=impl), rngs=nnx.Rngs(0)))
    return graphdef, other_graphdef, params


def loss_and_logits(graphdef, params, tokens, real, **kwargs):
    logits = nnx.merge(graphdef, params)(tokens, padding_mask=real, **kwargs).logits
    next_real = real[:, 1:] & real[:, :-1]
    log_probs = jax.nn.log_softmax(logits[:, :-1])
    picked = jnp.take_along_axis(log_probs, tokens[:, 1:, None], axis=-1)[..., 0]
    return -jnp.sum(picked * next_real) / jnp.sum(next_real), logits


def assert_same_forward_and_gradients(cfg, impl, tokens, real, **kwargs):
    graphdef, other_graphdef, params = pair(cfg, impl)
    grad_fn = jax.jit(jax.value_and_grad(loss_and_logits, argnums=1, has_aux=True), static_argnums=0)
    (loss, logits), grads = grad_fn(graphdef, params, tokens, real, **kwargs)
    (other_loss, other_logits), other_grads = grad_fn(other_graphdef, params, tokens, real, **kwargs)
    assert np.all(np.isfinite(logits)) and np.all(np.isfinite(other_logits))
    # All positions, pads included: a query that sees no key gives the same zeros in every core.
    np.testing.assert_allclose(other_logits, logits, **TOL)
    np.testing.assert_allclose(other_loss, loss, **TOL)
    flat, other_flat = nnx.to_flat_state(grads), nnx.to_flat_state(other_grads)
    for (path, grad), (_, other_grad) in zip(flat, other_flat):
        assert np.all(np.isfinite(other_grad[...])), path
        np.testing.assert_allclose(other_grad[...], grad[...], **TOL, err_msg=str(path))
    return grads


def left_padded_batch(cfg, B=3, T=9):
    tokens = jax.random.randint(jax.random.key(1), (B, T), 0, cfg.vocab_size)
    real = jnp.arange(T)[None] >= jnp.array([0, 3, 6])[:B, None]
    return tokens, real


@pytest.mark.parametrize("impl", OTHER_CORES)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_cores_agree_on_a_left_padded_batch(name, impl):
    cfg = MODELS[name]()
    tokens, real = left_padded_batch(cfg)
    grads = assert_same_forward_and_gradients(cfg, impl, tokens, real)
    q_grad = grads["layers"][0]["attn"]["q_proj"]["kernel"][...]
    assert np.abs(q_grad).max() > 1e-6  # the comparison above is not between two zeros


@pytest.mark.parametrize("impl", OTHER_CORES)
@pytest.mark.parametrize("name", ["llama-gqa-ungated", "qwen3_next-gqa-elementwise"])
def test_cores_agree_under_a_bottleneck_attention_mask(name, impl):
    """The answer (slots 6..) may not see the chain (slots 3..5): Abstract-CoT's bottleneck."""
    cfg = MODELS[name]()
    tokens, real = left_padded_batch(cfg, B=2)
    T = tokens.shape[1]
    chain_T, answer_T = (jnp.arange(T) >= 3) & (jnp.arange(T) < 6), jnp.arange(T) >= 6
    hidden_TxS = answer_T[:, None] & chain_T[None, :]
    attention_mask = jnp.broadcast_to(~hidden_TxS, (2, T, T))
    assert_same_forward_and_gradients(cfg, impl, tokens, real, attention_mask=attention_mask)
    # The mask changes the answer's logits, so both cores are exercised with it.
    graphdef, _, params = pair(cfg, impl)
    masked = loss_and_logits(graphdef, params, tokens, real, attention_mask=attention_mask)[1]
    unmasked = loss_and_logits(graphdef, params, tokens, real)[1]
    assert not np.allclose(masked[:, 6:], unmasked[:, 6:], atol=1e-4)


@pytest.mark.parametrize("impl", OTHER_CORES)
@pytest.mark.parametrize("name", ["llama-mqa-headwise", "qwen3_next-gqa-elementwise"])
def test_cores_agree_in_cached_decoding(name, impl):
    """A prefill then one-token steps with the KV cache: every core, every step, as einsum and as
    one full forward."""
    cfg = MODELS[name]()
    tokens, real = left_padded_batch(cfg)
    B, T = tokens.shape
    graphdef, other_graphdef, params = pair(cfg, impl)

    @jax.jit
    def step(params, tokens, real, cache):
        return {
            "einsum": nnx.merge(graphdef, params)(tokens, padding_mask=real, cache=cache[0]),
            impl: nnx.merge(other_graphdef, params)(tokens, padding_mask=real, cache=cache[1]),
        }

    caches = (KVCache.init(cfg, B, 12), KVCache.init(cfg, B, 12))
    logits = {"einsum": [], impl: []}
    for start, stop in ((0, 5),) + tuple((t, t + 1) for t in range(5, T)):
        out = step(params, tokens[:, start:stop], real[:, start:stop], caches)
        caches = (out["einsum"].cache, out[impl].cache)
        for key in logits:
            logits[key].append(out[key].logits)
    decoded = {key: np.concatenate(chunks, axis=1) for key, chunks in logits.items()}
    np.testing.assert_allclose(decoded[impl], decoded["einsum"], **TOL)
    full = nnx.merge(graphdef, params)(tokens, padding_mask=real).logits
    np.testing.assert_allclose(decoded[impl][real], np.asarray(full)[real], atol=2e-5)


@pytest.mark.parametrize("impl", sorted(SDPA_CORES))
def test_a_query_that_sees_no_key_gives_zeros_and_finite_gradients(impl):
    """A fully masked row (a left pad before any real token): the core never receives it (the
    spy checks every row it gets has a visible key) and the layer's output there is o_proj(0)."""
    cfg = presets.gated(presets.llama(**tiny(qkv_bias=True, out_bias=True, attention_impl=impl)))
    attn = Attention(cfg, rngs=nnx.Rngs(0))
    attn.o_proj.bias[...] = jax.random.normal(jax.random.key(3), attn.o_proj.bias[...].shape)
    rows_seen = []

    def spy(q, k, v, mask_BxTxS):
        rows_seen.append(mask_BxTxS.any(axis=-1))
        return SDPA_CORES[impl](q, k, v, mask_BxTxS)

    attn.sdpa_core = spy
    B, T = 2, 5
    x = jax.random.normal(jax.random.key(2), (B, T, cfg.d_model))
    real = jnp.arange(T)[None] >= jnp.array([[0], [2]])
    mask_BxTxS = jnp.tril(jnp.ones((T, T), bool))[None] & real[:, None, :]
    rotary = rotary_cos_sin(jnp.maximum(jnp.cumsum(real, 1) - 1, 0), cfg.rotary_dim, cfg.rope_theta)

    def total(x):
        y, _ = attn(x, rotary=rotary, mask_BxTxS=mask_BxTxS)
        return jnp.sum(y**2), y

    (_, y), dx = jax.value_and_grad(total, has_aux=True)(x)
    assert all(bool(rows.all()) for rows in rows_seen)
    np.testing.assert_allclose(y[1, :2], jnp.broadcast_to(attn.o_proj.bias[...], (2, cfg.d_model)), atol=1e-6)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
    np.testing.assert_array_equal(dx[1, :2], 0.0)  # the pads' inputs reach nothing


@pytest.mark.parametrize("impl", OTHER_CORES)
def test_cores_agree_in_bfloat16(impl):
    cfg = presets.qwen3_next(**tiny(dtype="bfloat16"))
    tokens, real = left_padded_batch(cfg)
    graphdef, other_graphdef, params = pair(cfg, impl)
    logits = loss_and_logits(graphdef, params, tokens, real)[1]
    other_logits = loss_and_logits(other_graphdef, params, tokens, real)[1]
    assert np.all(np.isfinite(other_logits))
    np.testing.assert_allclose(other_logits, logits, atol=2e-2)


def test_every_registered_core_is_a_config_choice_and_others_are_refused():
    assert set(SDPA_CORES) == set(typing.get_args(AttentionImpl))
    cfg = apply_overrides(Config(), ["model.attention_impl=dot_product"])
    assert cfg.model.attention_impl == "dot_product"
    assert make_attention(cfg.model, rngs=nnx.Rngs(0)).sdpa_core is SDPA_CORES["dot_product"]
    with pytest.raises(ConfigError, match=r"model\.attention_impl='flash' is not allowed"):
        apply_overrides(Config(), ["model.attention_impl=flash"])
    with pytest.raises(ConfigError, match=r"model\.attention_impl='flash' is not allowed"):
        presets.llama(attention_impl="flash")
