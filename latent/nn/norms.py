"""RMSNorm (plain and zero-centred) and LayerNorm, computed in float32 as the HF references do."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def accumulation_dtype(dtype) -> jnp.dtype:
    """float32 for low-precision inputs; float64 stays float64 (gradient checks)."""
    return jnp.promote_types(dtype, jnp.float32)


class RMSNorm(nnx.Module):
    """x / rms(x) * w, or * (1 + w) when zero_centered (Qwen3-Next, Gemma): w then starts at 0."""

    def __init__(self, dim: int, *, eps: float, zero_centered: bool = False, param_dtype=jnp.float32):
        init = jnp.zeros if zero_centered else jnp.ones
        self.scale = nnx.Param(init((dim,), param_dtype), axes=("norm",))
        self.eps = eps
        self.zero_centered = zero_centered

    def __call__(self, x: jax.Array) -> jax.Array:
        precision = accumulation_dtype(x.dtype)
        x32 = x.astype(precision)
        x_hat = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        scale = self.scale[...].astype(precision)
        if self.zero_centered:
            scale = 1.0 + scale
        return (x_hat * scale).astype(x.dtype)


class LayerNorm(nnx.Module):
    def __init__(self, dim: int, *, eps: float, param_dtype=jnp.float32):
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype), axes=("norm",))
        self.bias = nnx.Param(jnp.zeros((dim,), param_dtype), axes=("norm",))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        precision = accumulation_dtype(x.dtype)
        x32 = x.astype(precision)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        x_hat = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
        return (x_hat * self.scale[...].astype(precision) + self.bias[...].astype(precision)).astype(x.dtype)


def make_norm(cfg, dim: int | None = None) -> RMSNorm | LayerNorm:
    """The norm a ModelConfig asks for, over `dim` (default d_model)."""
    dim = cfg.d_model if dim is None else dim
    param_dtype = jnp.dtype(cfg.param_dtype)
    if cfg.norm == "layer":
        return LayerNorm(dim, eps=cfg.norm_eps, param_dtype=param_dtype)
    return RMSNorm(dim, eps=cfg.norm_eps, zero_centered=cfg.norm_zero_centered, param_dtype=param_dtype)
