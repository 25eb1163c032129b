"""A decode step's attention (one query per row) contracts the KV cache with dots (XLA's matmul
kernels), not elementwise products summed, and gives the same values as the batched-dot path up
to rounding."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latent.nn.attention import attention_weights, einsum_attention

B, S, H, K, DH = 3, 37, 4, 2, 8  # S = 37: a size no other dimension has, to find it in the HLO


def batched_dot_reference(q_BxTxHxDh, k_BxSxKxDh, v_BxSxKxDh, mask_BxTxS):
    """The general einsum path (what einsum_attention computed for every T before)."""
    B, T, H, Dh = q_BxTxHxDh.shape
    probs_BxKxGxTxS = attention_weights(q_BxTxHxDh, k_BxSxKxDh, mask_BxTxS)
    out = jnp.einsum("bkgts,bskd->btkgd", probs_BxKxGxTxS.astype(q_BxTxHxDh.dtype), v_BxSxKxDh)
    return out.reshape(B, T, H, Dh)


def inputs(dtype):
    q, k, v = (jax.random.normal(jax.random.PRNGKey(i), shape, jnp.float32).astype(dtype)
               for i, shape in enumerate([(B, 1, H, DH), (B, S, K, DH), (B, S, K, DH)]))
    mask = np.ones((B, 1, S), bool)
    mask[0, 0, :10] = False  # a left-padded row
    mask[1, 0, 30:] = False  # empty cache slots past the write index
    return q, k, v, jnp.asarray(mask)


@pytest.mark.parametrize("dtype, tolerance", [(jnp.float32, 1e-6), (jnp.bfloat16, 2e-2)])
def test_one_query_attention_equals_the_batched_dot_path(dtype, tolerance):
    q, k, v, mask = inputs(dtype)
    got = einsum_attention(q, k, v, mask)
    assert got.shape == (B, 1, H, DH) and got.dtype == dtype
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(batched_dot_reference(q, k, v, mask), np.float32),
                               atol=tolerance, rtol=tolerance)


def test_one_query_attention_contracts_the_cache_with_dots():
    """The query . keys and probs . values contractions are dot ops over the S cache slots. The
    products summed elementwise (the core before) compiled to no dot at all and ran 20x slower at
    8 heads x Dh 64, batch 32 on a CPU (77 vs 3.5 ms a layer), though they avoided the transposed
    copy of the cache that XLA CPU makes for a dot whose batch dims (b, k) are not leading."""
    q, k, v, mask = inputs(jnp.float32)
    hlo = jax.jit(einsum_attention).lower(q, k, v, mask).compile().as_text()
    dots = [line for line in hlo.splitlines() if re.search(r"= f32\[[^=]*\bdot\(", line)]
    assert len(dots) == 2, hlo  # logits [B, K, S, G] (XLA's layout) and the output [B, K, G, Dh]
    assert any(re.search(rf"f32\[[^\]]*\b{S}\b", line.split("dot(")[0]) for line in dots)
