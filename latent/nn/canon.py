"""Canon layer (Allen-Zhu 2025, "Physics of Language Models: Part 4.1"): a residual causal
depthwise convolution over the last few positions, here on the normalised attention input:

    y[t] = x[t] + sum_{j=1..n} w_j * x[t - j]        (w_j in R^D, one weight per channel)

Plain attention learns an induction head ("attend to the token after X") only once one layer has
learned to copy each token's predecessor forward and a later layer to match on it; on small
models that takes thousands of steps, and ProsQA's chain is made of such lookups ("Tom is a" ->
the object of the statement about Tom). With the predecessors already mixed into every
position, the query and the key of a single layer can match on them directly.

Positions that are not real tokens (pads) contribute zeros, so a left-padded row computes what
it would alone. The window does not see `attention_mask`: it mixes neighbours by position.
During cached decoding the last n (masked) inputs of each layer are carried in the KV cache.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class Canon(nnx.Module):
    def __init__(self, d_model: int, width: int, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        # torch.nn.Conv1d's default init for a depthwise kernel of width + 1 taps: U(+-1/sqrt(k)).
        # Not zero: the query-side and key-side taps each get gradient only once the other is
        # non-zero, so a zero start sits on a saddle (measured: no learning in 1,500 steps).
        bound = (width + 1) ** -0.5
        self.width = width
        self.weight = nnx.Param(
            jax.random.uniform(rngs.params(), (width, d_model), param_dtype, -bound, bound),
            axes=(None, "embed"),
        )

    def __call__(
        self, x_BxTxD: jax.Array, real_BxT: jax.Array, window_BxNxD: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """Returns (y [B, T, D], the last n masked inputs [B, n, D] for the next chunk).

        window_BxNxD: the last n masked inputs before this chunk (zeros, or None, at the start).
        """
        B, T, D = x_BxTxD.shape
        n = self.width
        if window_BxNxD is None:
            window_BxNxD = jnp.zeros((B, n, D), x_BxTxD.dtype)
        real_x_BxTxD = jnp.where(real_BxT[:, :, None], x_BxTxD, 0)
        extended_BxExD = jnp.concatenate([window_BxNxD.astype(x_BxTxD.dtype), real_x_BxTxD], axis=1)
        w_NxD = self.weight[...].astype(x_BxTxD.dtype)
        y_BxTxD = x_BxTxD
        for lag in range(1, n + 1):
            y_BxTxD = y_BxTxD + w_NxD[lag - 1] * extended_BxExD[:, n - lag : n - lag + T]
        return y_BxTxD, extended_BxExD[:, T:]
