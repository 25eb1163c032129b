"""Causal self-attention: MHA/GQA/MQA, optional QKV bias and QK-norm, and the output gate.

One layer, two parts. `Attention` holds everything that does not depend on how attention is
computed: the projections, QK-norm, rotary, KV-cache writes, the output gate and o_proj. The
scaled-dot-product core, `softmax(q k^T / sqrt(Dh)) v` under a boolean mask, is a plain function
picked by `model.attention_impl` from `SDPA_CORES`:
- `einsum`: explicit logits and softmax (in at least float32); the reference on any backend.
- `dot_product`: `jax.nn.dot_product_attention`, which may pick a fused kernel on GPU/TPU.

Adding a core: write `def my_core(q_BxTxHxDh, k_BxSxKxDh, v_BxSxKxDh, mask_BxTxS) -> out_BxTxHxDh`
honouring the `SdpaCore` contract below, add it to `SDPA_CORES` under a name, and add that name
to `AttentionImpl` in latent/config.py (config validation reads it). The equality tests in
tests/nn/test_attention_impl.py take every registered core.

The KV cache is stored head-major, [B, K, S, Dh] (latent.nn.kv_cache). A decode step (one query
per row) runs the core's entry in `DECODE_CORES`, which reads that layout as stored; a core without
one, and any chunk of several queries, gets the cache transposed to [B, S, K, Dh].

Output gate (Qiu et al. 2025, position G1): `Y' = Y * sigmoid(X W_theta)` on each head's SDPA
output, before the heads are concatenated and projected. `W_theta` lives in the query
projection: its output is viewed per head as `[q (Dh) | gate (gate_width)]`, the layout of
Hugging Face Qwen3-Next (`q_proj(x).view(..., H, 2 * Dh).chunk(2)`), so checkpoints convert
without reshuffling. `headwise` uses one gate scalar per head (gate_width 1).

Diagnostics (latent.nn.diagnostics): with `diagnostics` set, each call sows per-query values
for each head: the weight on the example's first real key, and the gate's mean and share below 0.1.
"""

from __future__ import annotations

from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from latent.nn.dense import Dense
from latent.nn.diagnostics import Diagnostic, first_key_share_per_head, gate_summary_per_head
from latent.nn.norms import accumulation_dtype, make_norm
from latent.nn.positions import apply_rotary

# Masked logits take a large finite value, not -inf, so a row whose every key is masked still
# gives a finite softmax (diagnostics call `attention_weights` on the caller's mask as is).
_MASKED = -1e30


class SdpaCore(Protocol):
    """softmax(q k^T / sqrt(Dh)) v, each query over the keys its mask row allows.

    q [B, T, H, Dh]; k, v [B, S, K, Dh]; all in the compute dtype; H a multiple of K, query head
    h reads kv head h // (H // K) (Hugging Face repeat_kv order). mask [B, T, S] bool, True where
    the query may attend; every row has at least one True (the caller guarantees it). Returns
    [B, T, H, Dh] in the compute dtype.
    """

    def __call__(self, q_BxTxHxDh, k_BxSxKxDh, v_BxSxKxDh, mask_BxTxS) -> jax.Array: ...


def attention_weights(q_BxTxHxDh: jax.Array, k_BxSxKxDh: jax.Array, mask_BxTxS: jax.Array) -> jax.Array:
    """[B, K, G, T, S] softmax weights, in at least float32; query head h = k * G + g."""
    B, T, H, Dh = q_BxTxHxDh.shape
    K = k_BxSxKxDh.shape[2]
    q_BxTxKxGxDh = q_BxTxHxDh.reshape(B, T, K, H // K, Dh)
    logits_BxKxGxTxS = jnp.einsum("btkgd,bskd->bkgts", q_BxTxKxGxDh, k_BxSxKxDh)
    logits_BxKxGxTxS = logits_BxKxGxTxS.astype(accumulation_dtype(q_BxTxHxDh.dtype)) * (Dh**-0.5)
    logits_BxKxGxTxS = jnp.where(mask_BxTxS[:, None, None], logits_BxKxGxTxS, _MASKED)
    return jax.nn.softmax(logits_BxKxGxTxS, axis=-1)


def einsum_attention(q_BxTxHxDh, k_BxSxKxDh, v_BxSxKxDh, mask_BxTxS) -> jax.Array:
    B, T, H, Dh = q_BxTxHxDh.shape
    K = k_BxSxKxDh.shape[2]
    q_BxTxKxGxDh = q_BxTxHxDh.reshape(B, T, K, H // K, Dh)
    out_BxTxKxGxDh = _softmax_attention(q_BxTxKxGxDh, k_BxSxKxDh, v_BxSxKxDh, mask_BxTxS)
    return out_BxTxKxGxDh.reshape(B, T, H, Dh)


@jax.custom_vjp
def _softmax_attention(q_BxTxKxGxDh, k_BxSxKxDh, v_BxSxKxDh, mask_BxTxS) -> jax.Array:
    """softmax(q k^T / sqrt(Dh)) v of the einsum core, with a hand-written backward.

    The forward is `attention_weights` and the product with v, unchanged. Autodiff's backward
    walks back through every step that built the [B, K, G, T, S] weights (the softmax's own
    reductions, the mask's select, the scaling), each a pass over that array, the largest of
    the layer. This one makes two: the weights' gradient `dp = dout v^T`, then the logits'
    `p * (dp - rowsum(p * dp)) / sqrt(Dh)`, with rowsum(p * dp) taken as rowsum(out * dout) over
    Dh instead of S (out = p v) in float32; under bfloat16 `out` holds rounded probabilities, so
    the sum is over S. p is kept as accumulated (float32). Masked keys have p = 0, so they get no
    gradient, as before.
    """
    return _softmax_attention_fwd(q_BxTxKxGxDh, k_BxSxKxDh, v_BxSxKxDh, mask_BxTxS)[0]


def _softmax_attention_fwd(q_BxTxKxGxDh, k_BxSxKxDh, v_BxSxKxDh, mask_BxTxS):
    B, T, K, G, Dh = q_BxTxKxGxDh.shape
    dtype = q_BxTxKxGxDh.dtype
    probs_acc_BxKxGxTxS = attention_weights(q_BxTxKxGxDh.reshape(B, T, K * G, Dh), k_BxSxKxDh, mask_BxTxS)
    out_BxTxKxGxDh = jnp.einsum("bkgts,bskd->btkgd", probs_acc_BxKxGxTxS.astype(dtype), v_BxSxKxDh)
    return out_BxTxKxGxDh, (q_BxTxKxGxDh, k_BxSxKxDh, v_BxSxKxDh, mask_BxTxS, probs_acc_BxKxGxTxS, out_BxTxKxGxDh)


def _softmax_attention_bwd(residuals, dout_BxTxKxGxDh):
    q_BxTxKxGxDh, k_BxSxKxDh, v_BxSxKxDh, mask_BxTxS, probs_acc_BxKxGxTxS, out_BxTxKxGxDh = residuals
    dtype, acc = q_BxTxKxGxDh.dtype, accumulation_dtype(q_BxTxKxGxDh.dtype)
    scale = q_BxTxKxGxDh.shape[-1] ** -0.5
    dv_BxSxKxDh = jnp.einsum("bkgts,btkgd->bskd", probs_acc_BxKxGxTxS.astype(dtype), dout_BxTxKxGxDh)
    dprobs_BxKxGxTxS = jnp.einsum("btkgd,bskd->bkgts", dout_BxTxKxGxDh, v_BxSxKxDh, preferred_element_type=acc)
    if dtype == acc:  # out = p v exactly as p is kept: rowsum(p * dp) = rowsum(out * dout), over Dh not S
        row_BxTxKxG = jnp.sum(out_BxTxKxGxDh * dout_BxTxKxGxDh, axis=-1)
        row_BxKxGxTx1 = jnp.transpose(row_BxTxKxG, (0, 2, 3, 1))[..., None]
    else:
        # `out` was computed from probabilities rounded to bfloat16, which do not sum to 1: the rows
        # of dlogits would not sum to zero, and where dp is nearly equal over the keys (values that
        # share a component) `dp - row` cancels into that error. Sum over S, unrounded.
        row_BxKxGxTx1 = jnp.sum(probs_acc_BxKxGxTxS * dprobs_BxKxGxTxS, axis=-1, keepdims=True)
    dlogits_BxKxGxTxS = (probs_acc_BxKxGxTxS * (dprobs_BxKxGxTxS - row_BxKxGxTx1) * scale).astype(dtype)
    dq_BxTxKxGxDh = jnp.einsum("bkgts,bskd->btkgd", dlogits_BxKxGxTxS, k_BxSxKxDh)
    dk_BxSxKxDh = jnp.einsum("bkgts,btkgd->bskd", dlogits_BxKxGxTxS, q_BxTxKxGxDh)
    mask_cotangent = np.zeros(mask_BxTxS.shape, jax.dtypes.float0)
    return dq_BxTxKxGxDh, dk_BxSxKxDh, dv_BxSxKxDh, mask_cotangent


_softmax_attention.defvjp(_softmax_attention_fwd, _softmax_attention_bwd)


def one_query_attention(q_Bx1xHxDh, k_BxKxSxDh, v_BxKxSxDh, mask_Bx1xS) -> jax.Array:
    """The SDPA core of a decode step (one query per row) on the head-major KV cache
    [B, K, S, Dh]: two dots whose batch dims (b, k) lead in every operand, the layout XLA's CPU
    dot wants, so neither copies the cache. Read [B, S, K, Dh], XLA copied the whole cache
    transposed at every layer of every decode step (3.5 vs 1.25 ms a layer, batch 32, 8 heads x
    Dh 64, 167 slots). Accumulates in at least float32; the einsum core's values up to rounding."""
    B, _, H, Dh = q_Bx1xHxDh.shape
    K = k_BxKxSxDh.shape[1]
    acc = accumulation_dtype(q_Bx1xHxDh.dtype)
    q_BxKxGxDh = q_Bx1xHxDh.reshape(B, K, H // K, Dh).astype(acc)
    logits_BxKxGxS = jnp.einsum("bkgd,bksd->bkgs", q_BxKxGxDh, k_BxKxSxDh.astype(acc)) * (Dh**-0.5)
    logits_BxKxGxS = jnp.where(mask_Bx1xS[:, None], logits_BxKxGxS, _MASKED)
    probs_BxKxGxS = jax.nn.softmax(logits_BxKxGxS, axis=-1).astype(q_Bx1xHxDh.dtype).astype(acc)
    out_BxKxGxDh = jnp.einsum("bkgs,bksd->bkgd", probs_BxKxGxS, v_BxKxSxDh.astype(acc))
    return out_BxKxGxDh.astype(q_Bx1xHxDh.dtype).reshape(B, 1, H, Dh)


def dot_product_attention(q_BxTxHxDh, k_BxSxKxDh, v_BxSxKxDh, mask_BxTxS) -> jax.Array:
    # implementation=None lets JAX choose (XLA today, a fused kernel where it supports the shapes).
    return jax.nn.dot_product_attention(
        q_BxTxHxDh, k_BxSxKxDh, v_BxSxKxDh, mask=mask_BxTxS[:, None], implementation=None
    )


SDPA_CORES: dict[str, SdpaCore] = {"einsum": einsum_attention, "dot_product": dot_product_attention}
# The decode-step core of an SDPA core, reading the head-major cache [B, K, S, Dh] as stored. A core
# without one gets the cache transposed to [B, S, K, Dh] (a copy of it at every step).
DECODE_CORES = {"einsum": one_query_attention}


def _swap_heads_and_slots(x: jax.Array) -> jax.Array:
    """[B, S, K, Dh] <-> [B, K, S, Dh]."""
    return jnp.swapaxes(x, 1, 2)


def _write_chunk(cache_BxKxSxDh: jax.Array, chunk_BxTxKxDh: jax.Array, write_index: jax.Array) -> jax.Array:
    """The head-major cache with this chunk's keys (or values) written at slots write_index + [0, T)."""
    chunk_BxKxTxDh = _swap_heads_and_slots(chunk_BxTxKxDh).astype(cache_BxKxSxDh.dtype)
    return jax.lax.dynamic_update_slice(cache_BxKxSxDh, chunk_BxKxTxDh, (0, 0, write_index, 0))


def make_attention(cfg, *, rngs: nnx.Rngs) -> Attention:
    """The attention layer of `cfg`, its SDPA core chosen by `cfg.attention_impl`."""
    if cfg.attention_impl not in SDPA_CORES:
        raise ValueError(
            f"model.attention_impl={cfg.attention_impl!r} has no SDPA core; registered in "
            f"latent.nn.attention.SDPA_CORES: {sorted(SDPA_CORES)}"
        )
    return Attention(cfg, rngs=rngs)


class Attention(nnx.Module):
    def __init__(self, cfg, *, rngs: nnx.Rngs):
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.resolved_kv_heads, cfg.resolved_head_dim
        self.gate_width = cfg.gate_width
        self.dtype = jnp.dtype(cfg.dtype)
        self.softmax_dtype = accumulation_dtype(self.dtype)
        self.sdpa_core = SDPA_CORES[cfg.attention_impl]
        self.decode_core = DECODE_CORES.get(cfg.attention_impl)
        self.diagnostics = False  # latent.nn.diagnostics.set_diagnostics switches it on

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
        kv_BxKxSxDh: tuple[jax.Array, jax.Array] | None = None,
        write_index: jax.Array | None = None,
    ):
        """Returns (y [B,T,D], (k, v) written into the cache [B, K, S, Dh], or this chunk's own
        [B, T, K, Dh]).

        With `kv_BxKxSxDh` (the head-major KVCache layout), this chunk's keys/values are written at
        slot `write_index` and the queries attend over all S cache slots; otherwise over this chunk
        alone (S = T). `mask_BxTxS` is True where a query may attend (causal, padding and any custom mask).
        """
        B, T, _ = x_BxTxD.shape
        H, K, Dh = self.n_heads, self.n_kv_heads, self.head_dim

        q_and_gate_BxTxHxQ = self.q_proj(x_BxTxD).reshape(B, T, H, Dh + self.gate_width)
        q_BxTxHxDh = q_and_gate_BxTxHxQ[..., :Dh]
        gate_logits_BxTxHxW = q_and_gate_BxTxHxQ[..., Dh:]
        k_BxTxKxDh = self.k_proj(x_BxTxD).reshape(B, T, K, Dh)
        v_BxTxKxDh = self.v_proj(x_BxTxD).reshape(B, T, K, Dh)
        if self.q_norm is not None:
            q_BxTxHxDh = self.q_norm(q_BxTxHxDh)
            k_BxTxKxDh = self.k_norm(k_BxTxKxDh)
        if rotary is not None:
            q_BxTxHxDh = apply_rotary(q_BxTxHxDh, *rotary)
            k_BxTxKxDh = apply_rotary(k_BxTxKxDh, *rotary)
        q_BxTxHxDh = q_BxTxHxDh.astype(self.dtype)

        if kv_BxKxSxDh is None:
            new_kv = k_BxTxKxDh, v_BxTxKxDh
            keys_BxSxKxDh, values_BxSxKxDh = k_BxTxKxDh.astype(self.dtype), v_BxTxKxDh.astype(self.dtype)
            out_BxTxHxDh = self.attend(q_BxTxHxDh, keys_BxSxKxDh, values_BxSxKxDh, mask_BxTxS, self.sdpa_core)
        else:
            new_kv = tuple(_write_chunk(cache, chunk_BxTxKxDh, write_index)
                           for cache, chunk_BxTxKxDh in zip(kv_BxKxSxDh, (k_BxTxKxDh, v_BxTxKxDh)))
            keys_BxKxSxDh, values_BxKxSxDh = (x.astype(self.dtype) for x in new_kv)
            keys_BxSxKxDh = None  # the decode core reads the cache as stored: no transpose
            if T == 1 and self.decode_core is not None:
                out_BxTxHxDh = self.attend(q_BxTxHxDh, keys_BxKxSxDh, values_BxKxSxDh, mask_BxTxS, self.decode_core)
            else:  # a chunk (prefill) is compute-bound: the general cores read the cache transposed back
                keys_BxSxKxDh, values_BxSxKxDh = map(_swap_heads_and_slots, (keys_BxKxSxDh, values_BxKxSxDh))
                out_BxTxHxDh = self.attend(q_BxTxHxDh, keys_BxSxKxDh, values_BxSxKxDh, mask_BxTxS, self.sdpa_core)

        gate_BxTxHxW = None
        if self.gate_width:
            gate_BxTxHxW = jax.nn.sigmoid(gate_logits_BxTxHxW.astype(self.softmax_dtype))
            out_BxTxHxDh = (out_BxTxHxDh.astype(self.softmax_dtype) * gate_BxTxHxW).astype(self.dtype)
        y_BxTxD = self.o_proj(out_BxTxHxDh.reshape(B, T, H * Dh))

        if self.diagnostics:
            if keys_BxSxKxDh is None:  # a decode step's keys, transposed for the record only
                keys_BxSxKxDh = _swap_heads_and_slots(keys_BxKxSxDh)
            self._record(q_BxTxHxDh, keys_BxSxKxDh, mask_BxTxS, gate_BxTxHxW)
        return y_BxTxD, new_kv

    def attend(self, q_BxTxHxDh, k, v, mask_BxTxS, core: SdpaCore) -> jax.Array:
        """`core` (an SDPA core, k and v [B, S, K, Dh], or a decode core, [B, K, S, Dh]) on rows that
        may all see a key. A query that may see none (a left pad before any real token) has no softmax, and cores disagree there (XLA averages all values,
        a fused kernel may return NaN or zeros): the core sees such rows fully open and their
        outputs are zeroed, finite, the same for every core, and no NaN can reach a gradient."""
        sees_a_key_BxT = mask_BxTxS.any(axis=-1)
        core_mask_BxTxS = mask_BxTxS | ~sees_a_key_BxT[..., None]
        out_BxTxHxDh = core(q_BxTxHxDh, k, v, core_mask_BxTxS)
        return jnp.where(sees_a_key_BxT[..., None, None], out_BxTxHxDh, 0).astype(self.dtype)

    def _record(self, q_BxTxHxDh, k_BxSxKxDh, mask_BxTxS, gate_BxTxHxW):
        """Sows per-query diagnostics; the Block sows which queries are real, for the averages.

        The weights are recomputed here rather than taken from the core: a fused core never
        materialises them, and every core then reports the same numbers. The first real key of
        an example is the first slot any query of this call may see, which under the causal and
        padding masks is its first real token.
        """
        probs_BxKxGxTxS = attention_weights(q_BxTxHxDh, k_BxSxKxDh, mask_BxTxS)
        first_key_B = jnp.argmax(mask_BxTxS.any(axis=1), axis=1)
        # Per head, not pooled: the gated-attention study reads the sink of each head (eval.py
        # --analysis attention); summarize pools them.
        self.sow(Diagnostic, "first_key_share", first_key_share_per_head(probs_BxKxGxTxS, first_key_B))
        if gate_BxTxHxW is not None:
            gate_mean_BxTxH, small_gate_share_BxTxH = gate_summary_per_head(gate_BxTxHxW)
            self.sow(Diagnostic, "gate_mean", gate_mean_BxTxH)
            self.sow(Diagnostic, "small_gate_share", small_gate_share_BxTxH)
