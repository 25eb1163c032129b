"""Dense projection with logical axis names kept as Param metadata (`axes`).

Sharding is applied later by mapping these names to mesh axes (latent.sharding); keeping
them as plain metadata means building a model never needs a mesh.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class Dense(nnx.Module):
    """y = x @ kernel + bias, kernel stored [in, out]."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        axes: tuple[str, str],
        use_bias: bool,
        init_std: float,
        param_dtype,
        dtype,
        rngs: nnx.Rngs,
    ):
        kernel_IxO = init_std * jax.random.normal(rngs.params(), (in_features, out_features), param_dtype)
        self.kernel = nnx.Param(kernel_IxO, axes=axes)
        self.bias = nnx.Param(jnp.zeros((out_features,), param_dtype), axes=axes[1:]) if use_bias else None
        self.dtype = dtype

    def __call__(self, x_BxTxI: jax.Array) -> jax.Array:
        y_BxTxO = x_BxTxI.astype(self.dtype) @ self.kernel[...].astype(self.dtype)
        if self.bias is not None:
            y_BxTxO = y_BxTxO + self.bias[...].astype(self.dtype)
        return y_BxTxO
