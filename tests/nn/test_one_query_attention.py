"""A decode step (one query per row) reads the head-major KV cache [B, K, S, Dh] as stored: the
compiled step makes no transposed copy of it (XLA's CPU dot wants its batch dims (b, k) leading,
and with the cache stored [B, S, K, Dh] it copied the whole cache at every layer of every step),
and its values equal the general attention path's."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from latent.models import presets
from latent.nn import KVCache, Transformer
from latent.nn.attention import einsum_attention, one_query_attention
from tests.conftest import tiny_model_fields as tiny

B, S, H, K, DH = 3, 37, 4, 2, 8  # S = 37: a size no other dimension has, to find it in the HLO


def inputs(dtype):
    q, k, v = (jax.random.normal(jax.random.PRNGKey(i), shape, jnp.float32).astype(dtype)
               for i, shape in enumerate([(B, 1, H, DH), (B, K, S, DH), (B, K, S, DH)]))
    mask = np.ones((B, 1, S), bool)
    mask[0, 0, :10] = False  # a left-padded row
    mask[1, 0, 30:] = False  # empty cache slots past the write index
    return q, k, v, jnp.asarray(mask)


@pytest.mark.parametrize("dtype, tolerance", [(jnp.float32, 1e-6), (jnp.bfloat16, 2e-2)])
def test_one_query_attention_equals_the_general_path(dtype, tolerance):
    q, k_BxKxSxDh, v_BxKxSxDh, mask = inputs(dtype)
    got = one_query_attention(q, k_BxKxSxDh, v_BxKxSxDh, mask)
    general = einsum_attention(q, jnp.swapaxes(k_BxKxSxDh, 1, 2), jnp.swapaxes(v_BxKxSxDh, 1, 2), mask)
    assert got.shape == (B, 1, H, DH) and got.dtype == dtype
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(general, np.float32),
                               atol=tolerance, rtol=tolerance)


def decode_step(scan_layers: bool):
    """(jitted decode step of a tiny model donating its cache, params, a prompt-filled cache)."""
    cfg = presets.llama(**tiny(max_seq_len=S, scan_layers=scan_layers))
    graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))

    def step(params, token_Bx1, cache):
        out = nnx.merge(graphdef, params)(token_Bx1, cache=cache)
        return out.logits, out.cache

    prompt_BxP = jax.random.randint(jax.random.PRNGKey(1), (B, 5), 0, cfg.vocab_size)
    padding_BxP = jnp.ones((B, 5), bool).at[0, :2].set(False)  # a left-padded row
    cache = nnx.merge(graphdef, params)(prompt_BxP, padding_mask=padding_BxP, cache=KVCache.init(cfg, B, S)).cache
    return jax.jit(step, donate_argnums=2), graphdef, params, cache


@pytest.mark.parametrize("scan_layers", [False, True])
def test_decode_step_makes_no_transposed_copy_of_the_cache(scan_layers):
    step, _, params, cache = decode_step(scan_layers)
    token_Bx1 = jnp.ones((B, 1), jnp.int32)
    hlo = step.lower(params, token_Bx1, cache).compile().as_text()
    # a cache-sized result (S slots of Dh) that reorders dimensions: a transpose, alone or fused
    # (the scan's stacking copies keep the layout, and are no transposes)
    reorders = [line for line in hlo.splitlines()
                if re.search(rf"= f32\[[^\]]*\b{S}\b[^\]]*\b{DH}\]", line) and "transpose" in line.split("metadata")[0]]
    assert not reorders, "\n".join(reorders)
    dots = [line for line in hlo.splitlines() if re.search(r"= f32\[[^=]*\bdot\(", line)]
    assert any(re.search(rf"f32\[[^\]]*\b{S}\b", line.split("dot(")[0]) for line in dots)  # logits over S slots


def test_decode_step_equals_the_full_forward():
    """The cached decode step's logits are the uncached forward's at the same position."""
    step, graphdef, params, cache = decode_step(scan_layers=False)
    prompt_BxP = jax.random.randint(jax.random.PRNGKey(1), (B, 5), 0, 61)
    padding_BxP = jnp.ones((B, 5), bool).at[0, :2].set(False)
    token_Bx1 = jnp.full((B, 1), 7, jnp.int32)
    logits_Bx1xV, _ = step(params, token_Bx1, cache)
    full = nnx.merge(graphdef, params)(jnp.concatenate([prompt_BxP, token_Bx1], axis=1),
                                       padding_mask=jnp.concatenate([padding_BxP, jnp.ones((B, 1), bool)], axis=1))
    np.testing.assert_allclose(np.asarray(logits_Bx1xV[:, 0]), np.asarray(full.logits[:, -1]), atol=1e-5, rtol=1e-5)
