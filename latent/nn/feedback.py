"""Thought feedbacks: what a latent slot receives as its input embedding.

Continuous-thought recurrence runs the decoder on a slot whose input is a function of the
previous position's post-final-norm hidden state `h` (and, for some rules, its next-token
distribution `p = softmax(logits / tau)` over the embedding table `E` [V, D]):

  identity  e = h                                               Coconut (Hao et al. 2024)
  codi      e = LN(W2 GELU(W1 h))                               CODI's projection
  soft      e = p^T E                                           Soft Thinking / SwiReasoning
  hrpo      e = a*x + sqrt(1 - a^2) * (i * p^T E / |p|)         HRPO's gated hybrid
            x = E[argmax p], r = sigmoid(W_r x), i = sigmoid(W_i x), a = sigmoid(Lambda)^(8 r)
            (HRPO's rollouts feed it after every sampled thinking token x_t, with x = E[x_t]:
            HRPOGate.hybrid, the engine's `hrpo` policy)
  later     e = (W h) / |W h| * mean_v |E_v|, W initialised to I  LaTER: realigned to the input
                                                                  embeddings' space and scale

Every rule maps [B, D] (plus logits [B, V] and the table) to [B, D]; the ones with weights are
nnx modules that live inside the Transformer (their parameters are checkpointed with it).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from latent.nn.dense import Dense
from latent.nn.norms import LayerNorm

# a = sigmoid(Lambda)^(8 r); HRPO starts at sigmoid(Lambda)^8 = model.hrpo_start_token_weight (0.99:
# almost all token embedding, as the paper)
HRPO_EXPONENT = 8.0


def _dense_kwargs(cfg, rngs):
    return dict(use_bias=True, init_std=cfg.init_std, param_dtype=jnp.dtype(cfg.param_dtype),
                dtype=jnp.dtype(cfg.dtype), rngs=rngs)


def soft_embedding(logits_BxV: jax.Array, embed_VxD: jax.Array, temperature: float) -> jax.Array:
    """p^T E with p = softmax(logits / temperature): the expected next-token embedding."""
    probs_BxV = jax.nn.softmax(logits_BxV.astype(jnp.float32) / temperature, axis=-1)
    return (probs_BxV @ embed_VxD.astype(jnp.float32)).astype(embed_VxD.dtype)


class Feedback(nnx.Module):
    """Base: `feedback(hidden_BxD, logits_BxV, embed_VxD) -> embeds_BxD`."""

    def __call__(self, hidden_BxD, logits_BxV, embed_VxD):
        raise NotImplementedError


class IdentityFeedback(Feedback):
    def __call__(self, hidden_BxD, logits_BxV, embed_VxD):
        return hidden_BxD


class CODIProjection(Feedback):
    """LN(W2 GELU(W1 h)) with a d_model-wide hidden layer, as in CODI."""

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        kw = _dense_kwargs(cfg, rngs)
        self.w1 = Dense(cfg.d_model, cfg.d_model, axes=("embed", "mlp"), **kw)
        self.w2 = Dense(cfg.d_model, cfg.d_model, axes=("mlp", "embed"), **kw)
        self.norm = LayerNorm(cfg.d_model, eps=cfg.norm_eps, param_dtype=jnp.dtype(cfg.param_dtype))

    def __call__(self, hidden_BxD, logits_BxV, embed_VxD):
        return self.norm(self.w2(jax.nn.gelu(self.w1(hidden_BxD), approximate=False)))


class SoftFeedback(Feedback):
    def __init__(self, cfg):
        self.temperature = cfg.feedback_temperature

    def __call__(self, hidden_BxD, logits_BxV, embed_VxD):
        return soft_embedding(logits_BxV, embed_VxD, self.temperature)


class HRPOGate(Feedback):
    """HRPO's gated hybrid of a token's embedding x and the normalised soft embedding h = p^T E / |p|.

    As a latent step's feedback (`__call__`: Coconut's recurrence, the engine's latent steps) no
    token is sampled, so x is the greedy token's, E[argmax p]. HRPO's own rollouts sample x_t and
    feed `hybrid(x_t, h)` with h from the distribution x_t was drawn from (the engine's `hrpo`
    policy, latent.infer.policies); its RL replay feeds the rollout's h back as a constant."""

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        kw = _dense_kwargs(cfg, rngs)
        self.w_r = Dense(cfg.d_model, cfg.d_model, axes=("embed", "mlp"), **kw)
        self.w_i = Dense(cfg.d_model, cfg.d_model, axes=("embed", "mlp"), **kw)
        base = cfg.hrpo_start_token_weight ** (1.0 / HRPO_EXPONENT)
        self.log_a = nnx.Param(  # Lambda, with sigmoid(Lambda) = base in every channel
            jnp.full((cfg.d_model,), math.log(base / (1.0 - base)), jnp.dtype(cfg.param_dtype)), axes=("norm",)
        )
        self.temperature = cfg.feedback_temperature

    def hidden_part(self, logits_BxV: jax.Array, embed_VxD: jax.Array) -> jax.Array:
        """float32 [..., D]: h = p^T E / |p|, p = softmax(logits / tau)."""
        probs_BxV = jax.nn.softmax(logits_BxV.astype(jnp.float32) / self.temperature, axis=-1)
        return (probs_BxV @ embed_VxD.astype(jnp.float32)) / jnp.linalg.norm(probs_BxV, axis=-1, keepdims=True)

    def token_weight(self, r_BxD: jax.Array | float = 1.0) -> jax.Array:
        """a = sigmoid(Lambda)^(8 r), computed in log space: log a = 8 r log sigmoid(Lambda)."""
        return jnp.exp(HRPO_EXPONENT * r_BxD * jax.nn.log_sigmoid(self.log_a[...].astype(jnp.float32)))

    def hybrid(self, token_ids_B: jax.Array, hidden_part_BxD: jax.Array, embed_VxD: jax.Array):
        """(e, a), float32 [..., D] each: e = a*x + sqrt(1 - a^2) * (i * h) with x = E[token],
        r = sigmoid(W_r x), i = sigmoid(W_i x), a = sigmoid(Lambda)^(8 r). Leading axes are free
        (the engine's [B], the replay's [N, T])."""
        token_BxD = jnp.take(embed_VxD, token_ids_B, axis=0).astype(jnp.float32)
        r_BxD = jax.nn.sigmoid(self.w_r(token_BxD).astype(jnp.float32))
        i_BxD = jax.nn.sigmoid(self.w_i(token_BxD).astype(jnp.float32))
        a_BxD = self.token_weight(r_BxD)
        mixed_BxD = a_BxD * token_BxD + jnp.sqrt(jnp.clip(1.0 - a_BxD**2, 0.0)) * (i_BxD * hidden_part_BxD)
        return mixed_BxD, a_BxD

    def __call__(self, hidden_BxD, logits_BxV, embed_VxD):
        greedy_B = jnp.argmax(logits_BxV.astype(jnp.float32), axis=-1)
        mixed_BxD, _ = self.hybrid(greedy_B, self.hidden_part(logits_BxV, embed_VxD), embed_VxD)
        return mixed_BxD.astype(embed_VxD.dtype)


class LaTERRealign(Feedback):
    """A learned map back to the input-embedding space (identity at init), rescaled so the
    fed-back vector has the token embeddings' mean norm."""

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        self.realign = nnx.Param(jnp.eye(cfg.d_model, dtype=jnp.dtype(cfg.param_dtype)), axes=("embed", "mlp"))

    def __call__(self, hidden_BxD, logits_BxV, embed_VxD):
        x_BxD = hidden_BxD.astype(jnp.float32) @ self.realign[...].astype(jnp.float32)
        target_norm = jnp.mean(jnp.linalg.norm(embed_VxD.astype(jnp.float32), axis=-1))
        scale_Bx1 = target_norm / jnp.maximum(jnp.linalg.norm(x_BxD, axis=-1, keepdims=True), 1e-6)
        return (x_BxD * scale_Bx1).astype(hidden_BxD.dtype)


# model.feedback -> the rule's module; the names are latent.config.FeedbackRule's (tests/test_config.py)
FEEDBACKS: dict[str, Callable[..., Feedback]] = {
    "identity": lambda cfg, *, rngs: IdentityFeedback(),
    "codi": CODIProjection,
    "soft": lambda cfg, *, rngs: SoftFeedback(cfg),
    "hrpo": HRPOGate,
    "later": LaTERRealign,
}


def make_feedback(cfg, *, rngs: nnx.Rngs) -> Feedback:
    if cfg.feedback not in FEEDBACKS:
        raise ValueError(f"model.feedback={cfg.feedback!r} is not one of {tuple(FEEDBACKS)}")
    return FEEDBACKS[cfg.feedback](cfg, rngs=rngs)
