"""The einsum core's hand-written backward (latent.nn.attention._softmax_attention) against
autodiff of its own forward formula, on GQA with causal and left-padding masks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from latent.nn.attention import attention_weights, einsum_attention


def autodiff_reference(q_BxTxHxDh, k_BxSxKxDh, v_BxSxKxDh, mask_BxTxS):
    """The core's forward written out, differentiated by JAX (the backward before the custom rule)."""
    B, T, H, Dh = q_BxTxHxDh.shape
    probs_BxKxGxTxS = attention_weights(q_BxTxHxDh, k_BxSxKxDh, mask_BxTxS).astype(q_BxTxHxDh.dtype)
    return jnp.einsum("bkgts,bskd->btkgd", probs_BxKxGxTxS, v_BxSxKxDh).reshape(B, T, H, Dh)


def inputs(dtype, B=2, T=7, H=4, K=2, Dh=8):
    kq, kk, kv, kc = jax.random.split(jax.random.key(0), 4)
    q = jax.random.normal(kq, (B, T, H, Dh), dtype)
    k = jax.random.normal(kk, (B, T, K, Dh), dtype)
    v = jax.random.normal(kv, (B, T, K, Dh), dtype)
    cotangent = jax.random.normal(kc, (B, T, H, Dh), dtype)
    real_BxT = jnp.arange(T)[None, :] >= jnp.array([0, 3])[:, None]  # the second row left-padded by 3
    mask_BxTxS = jnp.tril(jnp.ones((T, T), bool))[None] & real_BxT[:, None, :]
    mask_BxTxS = mask_BxTxS | ~mask_BxTxS.any(-1, keepdims=True)  # every row sees a key (Attention.attend)
    return q, k, v, mask_BxTxS, cotangent


@pytest.mark.parametrize("dtype,tol", [(jnp.float64, 1e-12), (jnp.float32, 2e-6)])
def test_backward_equals_autodiff_of_the_forward(dtype, tol):
    with jax.enable_x64(dtype == jnp.float64):
        q, k, v, mask, cotangent = inputs(dtype)
        out, backward = jax.vjp(lambda q, k, v: einsum_attention(q, k, v, mask), q, k, v)
        want_out, want_backward = jax.vjp(lambda q, k, v: autodiff_reference(q, k, v, mask), q, k, v)
        np.testing.assert_array_equal(out, want_out)
        for got, want in zip(backward(cotangent), want_backward(cotangent)):
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def test_float64_gradients_match_finite_differences():
    with jax.enable_x64(True):
        q, k, v, mask, _ = inputs(jnp.float64)
        check_grads(lambda q, k, v: einsum_attention(q, k, v, mask), (q, k, v), order=1, modes=["rev"])


def test_masked_keys_get_no_gradient():
    q, k, v, mask, cotangent = inputs(jnp.float32)
    cotangent = cotangent.at[1, :3].set(0)  # pad queries see every key; Attention.attend zeroes their outputs
    _, backward = jax.vjp(lambda k, v: einsum_attention(q, k, v, mask), k, v)
    dk, dv = backward(cotangent)
    # the second example's first 3 slots are pads: no real query attends to them
    np.testing.assert_array_equal(dk[1, :3], 0)
    np.testing.assert_array_equal(dv[1, :3], 0)


def test_bfloat16_backward_is_as_accurate_as_autodiffs_when_values_share_a_component():
    """rowsum(p * dp) is taken as rowsum(out * dout): both sides must be accumulated in float32,
    or in bfloat16 the rows of dlogits stop summing to zero, and when the values share a component
    (sinks, large activations: dp nearly equal over the keys) the subtraction cancels into that
    rounding error (q and k gradients 2-4x further from float64 than autodiff's)."""
    with jax.enable_x64(True):
        q, k, v, mask, cotangent = inputs(jnp.float64, B=2, T=64, H=4, K=2, Dh=32)
        v = 0.3 * v + 4.0  # a component every value shares
        q, k, v, cotangent = (x.astype(jnp.bfloat16).astype(jnp.float64) for x in (q, k, v, cotangent))
        _, exact = jax.vjp(lambda q, k, v: autodiff_reference(q, k, v, mask), q, k, v)
        exact_dq, exact_dk, _ = exact(cotangent)
        low = lambda x: x.astype(jnp.bfloat16)  # noqa: E731
        _, ours = jax.vjp(lambda q, k, v: einsum_attention(q, k, v, mask), low(q), low(k), low(v))
        _, autodiff = jax.vjp(lambda q, k, v: autodiff_reference(q, k, v, mask), low(q), low(k), low(v))
        error = lambda got, want: float(jnp.max(jnp.abs(got.astype(jnp.float64) - want)) / jnp.max(jnp.abs(want)))  # noqa: E731
        ours_dq, ours_dk, _ = ours(low(cotangent))
        auto_dq, auto_dk, _ = autodiff(low(cotangent))
        assert error(ours_dq, exact_dq) <= 1.5 * error(auto_dq, exact_dq)
        assert error(ours_dk, exact_dk) <= 1.5 * error(auto_dk, exact_dk)
