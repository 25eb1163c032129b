"""Feed-forward blocks: SwiGLU (Llama/Qwen) and GELU (GPT-2)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from latent.nn.dense import Dense


class SwiGLU(nnx.Module):
    """down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        dense = _dense_factory(cfg, rngs)
        self.gate_proj = dense(cfg.d_model, cfg.d_ff, ("embed", "mlp"))
        self.up_proj = dense(cfg.d_model, cfg.d_ff, ("embed", "mlp"))
        self.down_proj = dense(cfg.d_ff, cfg.d_model, ("mlp", "embed"))

    def __call__(self, x_BxTxD: jax.Array) -> jax.Array:
        hidden_BxTxF = jax.nn.silu(self.gate_proj(x_BxTxD)) * self.up_proj(x_BxTxD)
        return self.down_proj(hidden_BxTxF)


class GeluMLP(nnx.Module):
    """proj(gelu(fc(x))); GPT-2 uses the tanh approximation ("gelu_new")."""

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        dense = _dense_factory(cfg, rngs)
        self.fc = dense(cfg.d_model, cfg.d_ff, ("embed", "mlp"))
        self.proj = dense(cfg.d_ff, cfg.d_model, ("mlp", "embed"))
        self.approximate = cfg.gelu_approximate

    def __call__(self, x_BxTxD: jax.Array) -> jax.Array:
        return self.proj(jax.nn.gelu(self.fc(x_BxTxD), approximate=self.approximate))


def make_mlp(cfg, *, rngs: nnx.Rngs) -> SwiGLU | GeluMLP:
    return SwiGLU(cfg, rngs=rngs) if cfg.mlp == "swiglu" else GeluMLP(cfg, rngs=rngs)


def _dense_factory(cfg, rngs):
    def dense(in_features, out_features, axes):
        return Dense(
            in_features,
            out_features,
            axes=axes,
            use_bias=cfg.mlp_bias,
            init_std=cfg.init_std,
            param_dtype=jnp.dtype(cfg.param_dtype),
            dtype=jnp.dtype(cfg.dtype),
            rngs=rngs,
        )

    return dense
