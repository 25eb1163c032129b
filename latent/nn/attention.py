"""Causal self-attention: MHA/GQA/MQA, optional QKV bias and QK-norm, and the output gate.

Output gate (Qiu et al. 2025, position G1): `Y' = Y * sigmoid(X W_theta)` on each head's SDPA
output, before the heads are concatenated and projected. `W_theta` lives in the query
projection: its output is viewed per head as `[q (Dh) | gate (gate_width)]`, the layout of
Hugging Face Qwen3-Next (`q_proj(x).view(..., H, 2 * Dh).chunk(2)`), so checkpoints convert
without reshuffling. `headwise` uses one gate scalar per head (gate_width 1).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from latent.nn.dense import Dense
from latent.nn.norms import accumulation_dtype, make_norm
from latent.nn.positions import apply_rotary

# Masked logits take a large finite value, not -inf: a fully masked row (a left pad) then
# gives finite, ignorable outputs instead of NaNs that would poison gradients.
_MASKED = -1e30


class AttentionStats(NamedTuple):
    sink_share: jax.Array  # [] mean attention weight on each example's first real key
    gate_mean: jax.Array  # [] mean sigmoid gate value (NaN-free: 1.0 when there is no gate)


class Attention(nnx.Module):
    def __init__(self, cfg, *, rngs: nnx.Rngs):
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.resolved_kv_heads, cfg.resolved_head_dim
        self.gate_width = cfg.gate_width
        self.use_rope = cfg.positions == "rope"
        self.dtype = jnp.dtype(cfg.dtype)
        self.softmax_dtype = accumulation_dtype(self.dtype)

        def dense(in_features, out_features, axes, use_bias):
            return Dense(
                in_features,
                out_features,
                axes=axes,
                use_bias=use_bias,
                init_std=cfg.init_std,
                param_dtype=jnp.dtype(cfg.param_dtype),
                dtype=self.dtype,
                rngs=rngs,
            )

        H, K, Dh, D = cfg.n_heads, cfg.resolved_kv_heads, cfg.resolved_head_dim, cfg.d_model
        self.q_proj = dense(D, H * (Dh + self.gate_width), ("embed", "q_heads"), cfg.qkv_bias)
        self.k_proj = dense(D, K * Dh, ("embed", "kv_heads"), cfg.qkv_bias)
        self.v_proj = dense(D, K * Dh, ("embed", "kv_heads"), cfg.qkv_bias)
        self.o_proj = dense(H * Dh, D, ("q_heads", "embed"), cfg.out_bias)
        self.q_norm = make_norm(cfg, Dh) if cfg.qk_norm else None
        self.k_norm = make_norm(cfg, Dh) if cfg.qk_norm else None

    def __call__(
        self,
        x_BxTxD: jax.Array,
        *,
        rotary: tuple[jax.Array, jax.Array] | None,
        mask_BxTxS: jax.Array,
        kv_BxSxKxDh: tuple[jax.Array, jax.Array] | None = None,
        write_index: jax.Array | None = None,
        first_key_B: jax.Array | None = None,
        valid_query_BxT: jax.Array | None = None,
    ):
        """Returns (y [B,T,D], (k, v) written into the cache or the fresh ones, stats or None).

        With `kv_BxSxKxDh`, this chunk's keys/values are written at slot `write_index` and the
        queries attend over all S cache slots; otherwise over this chunk alone (S = T).
        Stats are computed when `first_key_B` (each example's first real key slot) is given.
        """
        B, T, _ = x_BxTxD.shape
        H, K, Dh, G = self.n_heads, self.n_kv_heads, self.head_dim, self.n_heads // self.n_kv_heads

        q_and_gate_BxTxHxQ = self.q_proj(x_BxTxD).reshape(B, T, H, Dh + self.gate_width)
        q_BxTxHxDh = q_and_gate_BxTxHxQ[..., :Dh]
        gate_BxTxHxW = q_and_gate_BxTxHxQ[..., Dh:]
        k_BxTxKxDh = self.k_proj(x_BxTxD).reshape(B, T, K, Dh)
        v_BxTxKxDh = self.v_proj(x_BxTxD).reshape(B, T, K, Dh)
        if self.q_norm is not None:
            q_BxTxHxDh = self.q_norm(q_BxTxHxDh)
            k_BxTxKxDh = self.k_norm(k_BxTxKxDh)
        if rotary is not None:
            q_BxTxHxDh = apply_rotary(q_BxTxHxDh, *rotary)
            k_BxTxKxDh = apply_rotary(k_BxTxKxDh, *rotary)

        if kv_BxSxKxDh is not None:
            k_cache, v_cache = kv_BxSxKxDh
            start = (0, write_index, 0, 0)
            k_BxSxKxDh = jax.lax.dynamic_update_slice(k_cache, k_BxTxKxDh.astype(k_cache.dtype), start)
            v_BxSxKxDh = jax.lax.dynamic_update_slice(v_cache, v_BxTxKxDh.astype(v_cache.dtype), start)
        else:
            k_BxSxKxDh, v_BxSxKxDh = k_BxTxKxDh, v_BxTxKxDh

        # Query head h reads kv head h // G (HF repeat_kv order), so split H as (K, G).
        q_BxTxKxGxDh = q_BxTxHxDh.reshape(B, T, K, G, Dh)
        logits_BxKxGxTxS = jnp.einsum(
            "btkgd,bskd->bkgts", q_BxTxKxGxDh, k_BxSxKxDh.astype(self.dtype)
        ).astype(self.softmax_dtype) * (Dh**-0.5)
        logits_BxKxGxTxS = jnp.where(mask_BxTxS[:, None, None], logits_BxKxGxTxS, _MASKED)
        probs_BxKxGxTxS = jax.nn.softmax(logits_BxKxGxTxS, axis=-1)
        out_BxTxKxGxDh = jnp.einsum(
            "bkgts,bskd->btkgd", probs_BxKxGxTxS.astype(self.dtype), v_BxSxKxDh.astype(self.dtype)
        )
        out_BxTxHxDh = out_BxTxKxGxDh.reshape(B, T, H, Dh)
        gate_values = None
        if self.gate_width:
            gate_values = jax.nn.sigmoid(gate_BxTxHxW.astype(self.softmax_dtype))
            out_BxTxHxDh = (out_BxTxHxDh.astype(self.softmax_dtype) * gate_values).astype(self.dtype)
        y_BxTxD = self.o_proj(out_BxTxHxDh.reshape(B, T, H * Dh))

        stats = None
        if first_key_B is not None:
            stats = _attention_stats(probs_BxKxGxTxS, gate_values, first_key_B, valid_query_BxT)
        return y_BxTxD, (k_BxSxKxDh, v_BxSxKxDh), stats


def _attention_stats(probs_BxKxGxTxS, gate_values, first_key_B, valid_query_BxT) -> AttentionStats:
    S = probs_BxKxGxTxS.shape[-1]
    first_key_BxS = jax.nn.one_hot(first_key_B, S, dtype=jnp.float32)
    sink_BxKxGxT = jnp.einsum("bkgts,bs->bkgt", probs_BxKxGxTxS, first_key_BxS)
    weight_BxT = valid_query_BxT.astype(jnp.float32)
    n_valid = jnp.maximum(weight_BxT.sum(), 1.0)
    sink_share = jnp.einsum("bkgt,bt->", sink_BxKxGxT, weight_BxT) / (n_valid * sink_BxKxGxT.shape[1] * sink_BxKxGxT.shape[2])
    if gate_values is None:
        gate_mean = jnp.ones((), jnp.float32)
    else:
        gate_mean = jnp.einsum("bthw,bt->", gate_values, weight_BxT) / (n_valid * gate_values.shape[2] * gate_values.shape[3])
    return AttentionStats(sink_share=sink_share, gate_mean=gate_mean)
