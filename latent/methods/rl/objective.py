"""The GRPO family's objective as pure, jittable functions: group advantages and the policy loss
(../shared/DESIGN.md, "On-policy RL"; settings in latent.config.RLConfig).

Arrays carry their shapes: B prompts, G outputs sampled per prompt, N = B * G rows, prompt-major
(row b * G + g is output g of prompt b: `advantages(...).reshape(-1)`), T token positions. A
row's mask marks the tokens its policy sampled (text, `<swi>`, `</swi>`, the answer, EOS); the
prompt, latent slots and padding are 0 and add nothing.

Advantages, over the G rewards r_1..r_G of one prompt (one A_i for every token of output i):

    grpo     A_i = (r_i - mean r) / (std r + eps)        std: the population std (ddof 0)
    dr_grpo  A_i = r_i - mean r
    rloo     A_i = r_i - mean_{j != i} r_j               = G / (G - 1) * (r_i - mean r)

Policy loss, per sampled token t of output i, with rho = pi_theta / pi_old = exp(logp - old_logp)
and the bounds lo = 1 - clip_low, hi = 1 + clip_high:

    clip     l = -min(rho A, clip(rho, lo, hi) A)
    gppo     the same value; where clip's term is clipped, -sg(b / rho) * rho * A instead of -b A
             (b the bound it crossed), so its gradient is -b A grad log pi, not 0 (Klear-Reasoner)
    + kl_coef * k3,  k3 = exp(ref - logp) - (ref - logp) - 1     (>= 0; KL(pi || pi_ref) in expectation)
    - entropy_coef * H                                          (H: the token's policy entropy)

A token is clipped when the min picks the clipped term strictly: A > 0 and rho > hi, or A < 0 and
rho < lo. Every token term is aggregated the same way (`aggregate`, as verl does), over the n
rows that hold at least one token (padding rows count for nothing):

    sequence_mean  (1/n) sum_i (1/|o_i|) sum_t l_it          GRPO
    token_mean     sum_i sum_t l_it / sum_i |o_i|            DAPO's token-level mean
    sequence_sum   (1/n) sum_i sum_t l_it / max_tokens       Dr.GRPO: no length normalisation

pi_old's and pi_ref's log-probs and the advantages are constants: their gradients are stopped here.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

# ----------------------------------------------------------------------------- advantages


def _centred(rewards_BxG: jax.Array) -> jax.Array:
    """r - mean r, computed from r - r_1 so that a group of equal rewards gives exactly 0: a
    float32 mean of eight rewards of 0.9 is not 0.9, and grpo would scale the rounding error up
    to an advantage of about 0.06."""
    shifted_BxG = rewards_BxG - rewards_BxG[:, :1]
    return shifted_BxG - jnp.mean(shifted_BxG, axis=1, keepdims=True)


def _grpo(rewards_BxG: jax.Array, eps: float) -> jax.Array:
    centred_BxG = _centred(rewards_BxG)
    std_Bx1 = jnp.sqrt(jnp.mean(jnp.square(centred_BxG), axis=1, keepdims=True))
    return centred_BxG / (std_Bx1 + eps)


def _dr_grpo(rewards_BxG: jax.Array, eps: float) -> jax.Array:
    return _centred(rewards_BxG)


def _rloo(rewards_BxG: jax.Array, eps: float) -> jax.Array:
    # r_i - (sum r - r_i) / (G - 1) = G / (G - 1) * (r_i - mean r)
    group = rewards_BxG.shape[1]
    return group / (group - 1) * _centred(rewards_BxG)


# rl.advantage (latent.config.Advantage) -> (rewards_BxG, eps) -> adv_BxG
ADVANTAGES: dict[str, Callable[[jax.Array, float], jax.Array]] = {"grpo": _grpo, "dr_grpo": _dr_grpo, "rloo": _rloo}


def advantages(rewards_BxG: jax.Array, kind: str = "grpo", eps: float = 1e-6) -> jax.Array:
    """adv_BxG of each output against the other outputs of its prompt (module docstring):
    grpo (r - mean) / (std + eps), dr_grpo r - mean, rloo r - mean of the other G - 1. A group
    whose rewards are all equal gets 0 under each. `kind` is static under jit."""
    if kind not in ADVANTAGES:
        raise ValueError(f"unknown advantage {kind!r}; choose one of {sorted(ADVANTAGES)}")
    if rewards_BxG.ndim != 2 or rewards_BxG.shape[1] < 2:
        raise ValueError(f"rewards must be [B, G] with G >= 2 outputs per prompt; got shape {rewards_BxG.shape}")
    return ADVANTAGES[kind](rewards_BxG, eps)


# ----------------------------------------------------------------------------- the policy loss

POLICY_LOSSES = ("clip", "gppo")  # rl.loss (latent.config.PolicyLoss)
AGGREGATIONS = ("token_mean", "sequence_mean", "sequence_sum")  # rl.aggregation (latent.config.LossAggregation)


def token_log_ratio(logp_NxT: jax.Array, old_logp_NxT: jax.Array, mask_NxT: jax.Array) -> jax.Array:
    """log rho = logp - old_logp on sampled tokens, 0 elsewhere (so exp never sees a padding
    position's arbitrary log-probs). pi_old is a constant: its gradient is stopped."""
    return jnp.where(mask_NxT.astype(bool), logp_NxT - jax.lax.stop_gradient(old_logp_NxT), 0.0)


def k3_kl(logp_NxT: jax.Array, ref_logp_NxT: jax.Array, mask_NxT: jax.Array) -> jax.Array:
    """Schulman's k3 estimator of KL(pi || pi_ref) per sampled token: exp(d) - d - 1 with
    d = ref_logp - logp (>= 0, 0 where the two agree); 0 off the mask. pi_ref is a constant."""
    d_NxT = jnp.where(mask_NxT.astype(bool), jax.lax.stop_gradient(ref_logp_NxT) - logp_NxT, 0.0)
    return jnp.exp(d_NxT) - d_NxT - 1.0


def aggregate(token_NxT: jax.Array, mask_NxT: jax.Array, aggregation: str, max_tokens: int | None = None) -> jax.Array:
    """One scalar from per-token terms (module docstring): sequence_mean (1/n) sum_i mean_t,
    token_mean sum / all tokens, sequence_sum (1/n) sum_i sum_t / max_tokens; n = rows with at
    least one token. Off-mask entries are ignored, whatever they hold."""
    mask_NxT = mask_NxT.astype(bool)
    masked_NxT = jnp.where(mask_NxT, token_NxT, 0.0)
    lengths_N = jnp.sum(mask_NxT, axis=1).astype(token_NxT.dtype)
    rows = jnp.maximum(jnp.sum(lengths_N > 0), 1).astype(token_NxT.dtype)
    if aggregation == "token_mean":
        return jnp.sum(masked_NxT) / jnp.maximum(jnp.sum(lengths_N), 1.0)
    if aggregation == "sequence_mean":
        return jnp.sum(jnp.sum(masked_NxT, axis=1) / jnp.maximum(lengths_N, 1.0)) / rows
    if aggregation == "sequence_sum":
        if max_tokens is None or max_tokens <= 0:
            raise ValueError(f"aggregation='sequence_sum' divides by max_tokens (rl.max_new_tokens); got {max_tokens!r}")
        return jnp.sum(masked_NxT) / (rows * max_tokens)
    raise ValueError(f"unknown aggregation {aggregation!r}; choose one of {AGGREGATIONS}")


def token_mean(token_NxT: jax.Array, mask_NxT: jax.Array) -> jax.Array:
    """The mean over sampled tokens (metrics)."""
    return aggregate(token_NxT, mask_NxT, "token_mean")


def policy_loss(
    logp_NxT: jax.Array,
    old_logp_NxT: jax.Array,
    adv_N: jax.Array,
    mask_NxT: jax.Array,
    *,
    loss: str = "clip",
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    aggregation: str = "sequence_mean",
    max_tokens: int | None = None,
    ref_logp_NxT: jax.Array | None = None,
    kl_coef: float = 0.0,
    entropy_NxT: jax.Array | None = None,
    entropy_coef: float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(loss, metrics) of N sampled outputs (module docstring for the formulas).

    logp_NxT: log pi_theta of each sampled token under the params being trained (the gradient
        flows through it); old_logp_NxT: log pi_old, what the rollout recorded; adv_N: each
        output's advantage (`advantages(...).reshape(-1)`); mask_NxT: 1 on sampled tokens.
    loss: clip or gppo; clip_low / clip_high: the ratio's range [1 - clip_low, 1 + clip_high].
    aggregation: sequence_mean, token_mean or sequence_sum (which divides by `max_tokens`).
    ref_logp_NxT: log pi_ref (the frozen reference), for the k3 KL term weighted by kl_coef.
    entropy_NxT: each position's policy entropy (a function of the params), for the bonus
        -entropy_coef * H.
    loss, aggregation and max_tokens are static under jit; the coefficients may be traced.

    metrics: pg_loss (the policy term alone, aggregated), clip_fraction (share of sampled tokens
    whose ratio was clipped in the direction that matters for their advantage), ratio_mean; kl
    (mean k3) with a reference; entropy (mean H) with entropies. Means are over sampled tokens.
    """
    if loss not in POLICY_LOSSES:
        raise ValueError(f"unknown policy loss {loss!r}; choose one of {POLICY_LOSSES}")
    if ref_logp_NxT is None and _nonzero(kl_coef):
        raise ValueError(f"kl_coef={kl_coef} needs the reference's log-probs (ref_logp_NxT)")
    if entropy_NxT is None and _nonzero(entropy_coef):
        raise ValueError(f"entropy_coef={entropy_coef} needs the policy's entropies (entropy_NxT)")
    dtype = logp_NxT.dtype
    sampled_NxT = mask_NxT.astype(bool)
    adv_Nx1 = jax.lax.stop_gradient(adv_N).astype(dtype)[:, None]

    ratio_NxT = jnp.exp(token_log_ratio(logp_NxT, old_logp_NxT, sampled_NxT))
    low, high = 1.0 - clip_low, 1.0 + clip_high
    bound_NxT = jax.lax.stop_gradient(jnp.clip(ratio_NxT, low, high))
    clipped_NxT = sampled_NxT & (((adv_Nx1 > 0) & (ratio_NxT > high)) | ((adv_Nx1 < 0) & (ratio_NxT < low)))
    if loss == "clip":
        clipped_term_NxT = bound_NxT * adv_Nx1
    else:  # gppo: the clipped value, with the gradient of bound * log pi
        clipped_term_NxT = jax.lax.stop_gradient(bound_NxT / ratio_NxT) * ratio_NxT * adv_Nx1
    surrogate_NxT = jnp.where(clipped_NxT, clipped_term_NxT, ratio_NxT * adv_Nx1)

    token_loss_NxT = -surrogate_NxT
    metrics = {
        "pg_loss": aggregate(-surrogate_NxT, sampled_NxT, aggregation, max_tokens),
        "clip_fraction": token_mean(clipped_NxT.astype(dtype), sampled_NxT),
        "ratio_mean": token_mean(ratio_NxT, sampled_NxT),
    }
    if ref_logp_NxT is not None:
        kl_NxT = k3_kl(logp_NxT, ref_logp_NxT, sampled_NxT)
        token_loss_NxT = token_loss_NxT + kl_coef * kl_NxT
        metrics["kl"] = token_mean(kl_NxT, sampled_NxT)
    if entropy_NxT is not None:
        token_loss_NxT = token_loss_NxT - entropy_coef * entropy_NxT
        metrics["entropy"] = token_mean(entropy_NxT, sampled_NxT)
    total = aggregate(token_loss_NxT, sampled_NxT, aggregation, max_tokens)
    return total, jax.lax.stop_gradient(metrics)


def _nonzero(coef) -> bool:
    """Whether a coefficient asks for its term: a non-zero number, or any array (traced or not)."""
    return isinstance(coef, jax.Array) or coef != 0
