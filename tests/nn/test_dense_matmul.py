"""latent.nn.dense.matmul: `x @ kernel` whose derivative lays the weight gradient out for XLA's
CPU matmul library; same values as plain autodiff, every derivative mode still works."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from latent.nn import dense
from latent.nn.dense import matmul


def _inputs(x_shape, dtype=jnp.float32):
    x = jax.random.normal(jax.random.key(0), x_shape, dtype)
    kernel = jax.random.normal(jax.random.key(1), (x_shape[-1], 24), dtype)
    cotangent = jax.random.normal(jax.random.key(2), (*x_shape[:-1], 24), dtype)
    return x, kernel, cotangent


@pytest.mark.parametrize("x_shape", [(7, 16), (3, 5, 16)])
def test_gradients_equal_plain_autodiff(x_shape):
    x, kernel, cotangent = _inputs(x_shape)
    ours = jax.vjp(matmul, x, kernel)
    plain = jax.vjp(jnp.matmul, x, kernel)
    np.testing.assert_array_equal(ours[0], plain[0])
    for got, want in zip(ours[1](cotangent), plain[1](cotangent)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_float64_derivatives_match_finite_differences_in_both_modes():
    with jax.enable_x64(True):
        x, kernel, _ = _inputs((3, 5, 16), jnp.float64)
        check_grads(matmul, (x, kernel), order=2, modes=["fwd", "rev"])


def test_gradient_of_one_operand_only():
    x, kernel, cotangent = _inputs((3, 5, 16))
    loss = lambda x, kernel: jnp.sum(matmul(x, kernel) * cotangent)  # noqa: E731
    np.testing.assert_allclose(jax.grad(loss, 0)(x, kernel), cotangent @ kernel.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        jax.grad(loss, 1)(x, kernel), x.reshape(-1, 16).T @ cotangent.reshape(-1, 24), rtol=1e-5, atol=1e-5
    )


def _weight_gradient_contractions() -> list[list[int]]:
    """The left operands' contracting axes of every dot in the compiled weight gradient."""
    x = jnp.zeros((8, 64, 128))
    kernel = jnp.zeros((128, 256))
    cotangent = jnp.zeros((8, 64, 256))
    grad = jax.jit(jax.grad(lambda x, kernel, cotangent: jnp.sum(matmul(x, kernel) * cotangent), argnums=1))
    hlo = grad.lower(x, kernel, cotangent).compile().as_text()
    contracted = [[int(a) for a in axes.split(",")] for axes in re.findall(r"lhs_contracting_dims=\{([\d,]+)\}", hlo)]
    assert contracted, "no dot in the compiled gradient"
    return contracted


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the layout concerns XLA's CPU backend")
def test_weight_gradient_dot_contracts_the_left_operands_last_axis(monkeypatch):
    """XLA's CPU backend runs a dot on its fast matmul library only when the left operand
    contracts its last axis; autodiff's `x^T @ dy` contracts axis 0 of both (the rows)."""
    monkeypatch.setattr(dense, "WEIGHT_GRADIENT_COPY", None)  # follow the backend: CPU here
    contracted = _weight_gradient_contractions()
    assert all(0 not in axes for axes in contracted), f"a dot contracts the left operand's axis 0: {contracted}"


def test_without_the_copy_the_weight_gradient_is_plain_autodiff(monkeypatch):
    """TPU and GPU (and tpu/aot.py's compiles for TPU) keep autodiff's one dot over the rows."""
    monkeypatch.setattr(dense, "WEIGHT_GRADIENT_COPY", False)
    assert any(0 in axes for axes in _weight_gradient_contractions())
    x, kernel, cotangent = _inputs((3, 5, 16))
    ours = jax.vjp(matmul, x, kernel)[1](cotangent)
    plain = jax.vjp(jnp.matmul, x, kernel)[1](cotangent)
    for got, want in zip(ours, plain):
        np.testing.assert_array_equal(got, want)
