"""Vector-quantised codebook with EMA updates (VQ-VAE / Token-Assorted style discrete latents).

A vector x [D] is replaced by its nearest code c_k of a codebook [K, D]. The forward pass is
pure (`quantize`, `VectorQuantizer.__call__`); learning the codebook is a separate, explicit
step (`update_codebook`, `VectorQuantizer.ema_update`) that keeps exponential moving averages
of each code's cluster size and vector sum, as in VQ-VAE-2 / Sonnet's VectorQuantizerEMA:

  count_k <- decay * count_k + (1 - decay) * n_k               n_k = #vectors assigned to k
  sum_k   <- decay * sum_k   + (1 - decay) * sum_{x -> k} x
  c_k      = sum_k / smooth(count)_k,  smooth(count) = (count + eps) / (n + K eps) * n, n = sum(count)

The codebook is therefore not an `nnx.Param`: an optimizer built over Params never touches it,
and the encoder only sees it through the straight-through estimator and the commitment loss.
Every function here is free of Python branching on values, so it runs under `jax.jit`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

# Distances and per-code sums must not drop to bf16/TF32 matmuls on accelerators: a nearest
# code is decided by small differences between large squared norms.
_HIGHEST = jax.lax.Precision.HIGHEST


class CodebookStat(nnx.Variable):
    """EMA state of a codebook: updated by `ema_update`, never by the optimizer."""


class VQOutput(NamedTuple):
    quantized: jax.Array  # [..., D] x's dtype; equals the codes' vectors, gradient passes straight to x
    codes: jax.Array  # [...] int32 index of the nearest code
    commitment_loss: jax.Array  # [] float32 beta * mean over valid vectors and dims of (x - sg(q))^2
    encodings_counts_K: jax.Array  # [K] float32 valid vectors assigned to each code in this batch


class VQStats(NamedTuple):
    ema_count_K: jax.Array  # [K] unsmoothed EMA cluster sizes
    ema_sum_KxD: jax.Array  # [K, D] EMA of the sum of the vectors assigned to each code
    codebook_KxD: jax.Array  # [K, D] ema_sum / laplace_smooth(ema_count)


def _flatten(x_XxD: jax.Array, mask_X: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """[..., D] and an optional [...] mask -> [N, D] and a bool [N] (all True without a mask)."""
    x_NxD = x_XxD.reshape(-1, x_XxD.shape[-1])
    if mask_X is None:
        return x_NxD, jnp.ones((x_NxD.shape[0],), bool)
    if mask_X.shape != x_XxD.shape[:-1]:
        raise ValueError(f"mask shape {mask_X.shape} must equal x's leading shape {x_XxD.shape[:-1]}")
    return x_NxD, mask_X.reshape(-1).astype(bool)


def laplace_smooth(count_K: jax.Array, eps: float) -> jax.Array:
    """(count + eps) / (n + K eps) * n: keeps the total n, lifts empty clusters off zero."""
    n = jnp.sum(count_K)
    return (count_K + eps) / (n + count_K.shape[0] * eps) * n


def nearest_codes(x_NxD: jax.Array, codebook_KxD: jax.Array) -> jax.Array:
    """argmin_k ||x - c_k||^2 as int32 [N]; ties go to the lowest index (jnp.argmin's rule)."""
    x_NxD = x_NxD.astype(jnp.float32)
    codebook_KxD = codebook_KxD.astype(jnp.float32)
    # ||x||^2 - 2 x.c + ||c||^2 avoids materialising the [N, K, D] differences
    dist_NxK = (
        jnp.sum(x_NxD**2, axis=-1, keepdims=True)
        - 2.0 * jnp.matmul(x_NxD, codebook_KxD.T, precision=_HIGHEST)
        + jnp.sum(codebook_KxD**2, axis=-1)[None, :]
    )
    return jnp.argmin(dist_NxK, axis=-1).astype(jnp.int32)


def quantize(x: jax.Array, codebook_KxD: jax.Array, mask: jax.Array | None = None, *, beta: float) -> VQOutput:
    """Nearest-code quantisation of x [..., D]; `mask` [...] marks valid vectors.

    Padded vectors (mask False) still get a code and a quantized vector, but they add nothing to
    the commitment loss (whose mean runs over valid vectors only) or to the counts, and they may
    hold NaNs without poisoning either or their gradients.
    """
    x_NxD, mask_N = _flatten(x, mask)
    num_codes, dim = codebook_KxD.shape
    codebook_KxD = jax.lax.stop_gradient(codebook_KxD)  # the codebook learns by EMA, not by this loss
    # zero the padding *before* any arithmetic, so NaNs there cannot leak into values or gradients
    safe_NxD = jnp.where(mask_N[:, None], x_NxD, 0).astype(jnp.float32)
    codes_N = nearest_codes(x_NxD, codebook_KxD)
    q_NxD = jnp.take(codebook_KxD, codes_N, axis=0).astype(jnp.float32)
    # straight-through: the forward value is q, the gradient wrt x is the identity
    quantized_NxD = x_NxD + jax.lax.stop_gradient(q_NxD.astype(x_NxD.dtype) - x_NxD)
    sq_err_N = jnp.sum((safe_NxD - q_NxD) ** 2, axis=-1)
    num_valid = jnp.sum(mask_N.astype(jnp.float32))
    loss = beta * jnp.sum(jnp.where(mask_N, sq_err_N, 0.0)) / (jnp.maximum(num_valid, 1.0) * dim)
    counts_K = jnp.sum(jax.nn.one_hot(codes_N, num_codes, dtype=jnp.float32) * mask_N[:, None], axis=0)
    return VQOutput(
        quantized=quantized_NxD.reshape(x.shape),
        codes=codes_N.reshape(x.shape[:-1]),
        commitment_loss=loss,
        encodings_counts_K=counts_K,
    )


def batch_code_stats(
    x: jax.Array, codes: jax.Array, mask: jax.Array | None = None, *, num_codes: int, axis_name=None
) -> tuple[jax.Array, jax.Array]:
    """Per-code count n_k [K] and vector sum [K, D] of the valid vectors of this batch.

    With `axis_name` (inside `shard_map`) both are psum'd over that mesh axis, so every shard
    sees the global batch statistics.
    """
    x_NxD, mask_N = _flatten(jax.lax.stop_gradient(x), mask)
    onehot_NxK = jax.nn.one_hot(codes.reshape(-1), num_codes, dtype=jnp.float32) * mask_N[:, None]
    safe_NxD = jnp.where(mask_N[:, None], x_NxD, 0).astype(jnp.float32)  # 0 * NaN would still be NaN
    counts_K = jnp.sum(onehot_NxK, axis=0)
    sums_KxD = jnp.matmul(onehot_NxK.T, safe_NxD, precision=_HIGHEST)
    if axis_name is not None:
        counts_K, sums_KxD = jax.lax.psum((counts_K, sums_KxD), axis_name)
    return counts_K, sums_KxD


def update_codebook(
    stats: VQStats,
    x: jax.Array,
    codes: jax.Array,
    mask: jax.Array | None = None,
    *,
    decay: float,
    eps: float,
    axis_name=None,
) -> VQStats:
    """One EMA step of the codebook from a batch x [..., D] already assigned to `codes` [...].

    count <- decay count + (1 - decay) n_k; sum <- decay sum + (1 - decay) sum_{x -> k} x;
    codebook = sum / laplace_smooth(count). The stored count stays unsmoothed.

    `axis_name`: psum the batch statistics over this axis; needed only inside `shard_map`. Under
    plain `jax.jit` with a data-sharded batch (Auto mesh axes, as `latent.sharding` builds)
    the sums over the batch are already global (XLA inserts the all-reduce), so leave it None.
    """
    num_codes = stats.codebook_KxD.shape[0]
    counts_K, sums_KxD = batch_code_stats(x, codes, mask, num_codes=num_codes, axis_name=axis_name)
    ema_count_K = decay * stats.ema_count_K + (1.0 - decay) * counts_K
    ema_sum_KxD = decay * stats.ema_sum_KxD + (1.0 - decay) * sums_KxD
    codebook_KxD = ema_sum_KxD / laplace_smooth(ema_count_K, eps)[:, None]
    return VQStats(ema_count_K, ema_sum_KxD, codebook_KxD.astype(stats.codebook_KxD.dtype))


def split_dead_codes(
    stats: VQStats, rng: jax.Array, *, dead_threshold: float, eps: float, noise_scale: float
) -> tuple[VQStats, jax.Array]:
    """Restart dead codes as copies of the most used code; returns (stats, #restarted int32).

    Dead: ema_count_k < dead_threshold * sum(ema_count), excluding the most used code m.
    With R dead codes, the pool P = count_m + sum of the dead counts is shared equally by m and
    the R restarted codes (P / (R + 1) each, so the total count is unchanged: with R = 1 this
    halves m's count). m keeps its vector; restarted code j becomes c_m + noise, with noise
    ~ N(0, (noise_scale * std(codebook))^2) per entry. Each touched code's EMA sum is set to
    vector * laplace_smooth(new counts), so `codebook = sum / smooth(count)` still holds and m's
    sum is split in the same proportion as its count. With no dead code nothing changes.
    """
    count_K, sum_KxD, codebook_KxD = stats
    num_codes = count_K.shape[0]
    top = jnp.argmax(count_K)
    is_top_K = jnp.arange(num_codes) == top
    dead_K = (count_K < dead_threshold * jnp.sum(count_K)) & ~is_top_K
    num_dead = jnp.sum(dead_K.astype(jnp.int32))
    touched_K = dead_K | (is_top_K & (num_dead > 0))
    share = (count_K[top] + jnp.sum(jnp.where(dead_K, count_K, 0.0))) / (num_dead + 1).astype(count_K.dtype)
    new_count_K = jnp.where(touched_K, share, count_K)
    noise_KxD = noise_scale * jnp.std(codebook_KxD) * jax.random.normal(rng, codebook_KxD.shape, codebook_KxD.dtype)
    new_codebook_KxD = jnp.where(dead_K[:, None], codebook_KxD[top][None, :] + noise_KxD, codebook_KxD)
    new_sum_KxD = jnp.where(touched_K[:, None], new_codebook_KxD * laplace_smooth(new_count_K, eps)[:, None], sum_KxD)
    return VQStats(new_count_K, new_sum_KxD, new_codebook_KxD), num_dead


def codebook_usage(counts_K: jax.Array, *, dead_threshold: float = 0.0) -> dict[str, jax.Array]:
    """Usage of a codebook from per-code counts (batch counts or EMA counts), p = counts / sum.

    perplexity = exp(H(p)) (K when uniform, 1 when one code takes everything);
    dead_fraction = share of codes with p_k <= dead_threshold (default 0: codes never used);
    max_share = max_k p_k.
    """
    counts_K = counts_K.astype(jnp.float32)
    p_K = counts_K / jnp.maximum(jnp.sum(counts_K), 1e-30)
    entropy = -jnp.sum(jax.scipy.special.xlogy(p_K, p_K))  # 0 log 0 = 0
    return dict(
        perplexity=jnp.exp(entropy),
        dead_fraction=jnp.mean((p_K <= dead_threshold).astype(jnp.float32)),
        max_share=jnp.max(p_K),
    )


class VectorQuantizer(nnx.Module):
    """Codebook of `num_codes` vectors of size `dim`, learned by EMA with dead-code restarts.

    `__call__` is pure; call `ema_update(x, out.codes, mask)` in the training step (under
    `nnx.jit`) to move the codebook, and `restart_dead_codes(rng)` every so often.
    """

    def __init__(
        self,
        num_codes: int,
        dim: int,
        *,
        beta: float = 0.25,
        decay: float = 0.99,
        eps: float = 1e-5,
        dead_threshold: float = 1e-3,
        restart_noise: float = 1e-2,
        rngs: nnx.Rngs,
    ):
        codebook_KxD = jax.random.normal(rngs.params(), (num_codes, dim), jnp.float32) / math.sqrt(dim)
        self.codebook_KxD = CodebookStat(codebook_KxD)
        # every code starts as a cluster of size 1 centred on itself: no division by zero at
        # the first update, and the initial vectors fade out at the EMA rate
        self.ema_count_K = CodebookStat(jnp.ones((num_codes,), jnp.float32))
        self.ema_sum_KxD = CodebookStat(codebook_KxD)
        self.num_codes, self.dim = num_codes, dim
        self.beta, self.decay, self.eps = beta, decay, eps
        self.dead_threshold, self.restart_noise = dead_threshold, restart_noise

    @property
    def stats(self) -> VQStats:
        return VQStats(self.ema_count_K[...], self.ema_sum_KxD[...], self.codebook_KxD[...])

    def _set_stats(self, stats: VQStats) -> None:
        self.ema_count_K[...] = stats.ema_count_K
        self.ema_sum_KxD[...] = stats.ema_sum_KxD
        self.codebook_KxD[...] = stats.codebook_KxD

    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> VQOutput:
        return quantize(x, self.codebook_KxD[...], mask, beta=self.beta)

    def ema_update(self, x: jax.Array, codes: jax.Array, mask: jax.Array | None = None, *, axis_name=None) -> None:
        """EMA step in place (see `update_codebook`; `axis_name` only inside `shard_map`)."""
        stats = update_codebook(self.stats, x, codes, mask, decay=self.decay, eps=self.eps, axis_name=axis_name)
        self._set_stats(stats)

    def restart_dead_codes(self, rng: jax.Array) -> jax.Array:
        """Split the most used code into the dead ones in place (see `split_dead_codes`)."""
        stats, num_restarted = split_dead_codes(
            self.stats, rng, dead_threshold=self.dead_threshold, eps=self.eps, noise_scale=self.restart_noise
        )
        self._set_stats(stats)
        return num_restarted
