"""Rotary position embeddings (with a partial rotary fraction) and position ids for padded batches."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def rotary_cos_sin(
    positions_BxT: jax.Array, rotary_dim: int, theta: float, dtype=jnp.float32
) -> tuple[jax.Array, jax.Array]:
    """cos/sin tables [B, T, rotary_dim] in the non-interleaved (`rotate_half`) layout of HF Llama."""
    inv_freq_R = 1.0 / (theta ** (jnp.arange(0, rotary_dim, 2, dtype=dtype) / rotary_dim))
    angles_BxTxR = positions_BxT.astype(dtype)[..., None] * inv_freq_R
    angles_BxTxRD = jnp.concatenate([angles_BxTxR, angles_BxTxR], axis=-1)
    return jnp.cos(angles_BxTxRD), jnp.sin(angles_BxTxRD)


def apply_rotary(x_BxTxHxD: jax.Array, cos_BxTxR: jax.Array, sin_BxTxR: jax.Array) -> jax.Array:
    """Rotates the first R channels of each head; the rest pass through (partial rotary)."""
    rotary_dim = cos_BxTxR.shape[-1]
    x_rot, x_pass = x_BxTxHxD[..., :rotary_dim], x_BxTxHxD[..., rotary_dim:]
    precision = jnp.promote_types(x_BxTxHxD.dtype, cos_BxTxR.dtype)
    x1, x2 = jnp.split(x_rot.astype(precision), 2, axis=-1)
    rotated_half = jnp.concatenate([-x2, x1], axis=-1)
    cos, sin = cos_BxTxR[:, :, None, :], sin_BxTxR[:, :, None, :]
    x_rot = (x_rot.astype(precision) * cos + rotated_half * sin).astype(x_BxTxHxD.dtype)
    return jnp.concatenate([x_rot, x_pass], axis=-1)


def positions_from_padding(padding_mask_BxT: jax.Array, seen_B: jax.Array | None = None) -> jax.Array:
    """Position ids counting from `seen` (real tokens already in the cache; default 0) at each
    example's first real token of this chunk.

    A pad takes the position of the last real token before it, or 0 when none precedes it, so
    left-padded batches line up as Coconut expects (pads get 0).
    """
    counts_BxT = jnp.cumsum(padding_mask_BxT.astype(jnp.int32), axis=1) - 1
    if seen_B is not None:
        counts_BxT = counts_BxT + seen_B[:, None].astype(jnp.int32)
    return jnp.maximum(counts_BxT, 0)


def learned_position_rows(positions_BxT: jax.Array, table_len: int) -> jax.Array:
    """Rows of a learned position table (`model.max_seq_len` rows) for `positions`.

    A position past the table takes its last row. jnp.take's default for an out-of-range index
    under jit fills NaN, which made every logit NaN without an error; clamping keeps the output
    finite, but the model never trained at those rows, so runs are checked beforehand
    (latent.config.check_positions_fit names the fields) and should never rely on this.
    """
    return jnp.clip(positions_BxT, 0, table_len - 1)
