"""Token choice from logits: greedy (first index on ties), temperature, nucleus (top-p)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def sample_tokens(logits_BxV: jax.Array, rng: jax.Array, temperature: float, top_p: float) -> jax.Array:
    """int32 [B]. temperature 0 is greedy argmax; top_p < 1 keeps the smallest set of most likely
    tokens whose probability reaches top_p (always at least the most likely one)."""
    if temperature == 0.0:
        return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
    scaled_BxV = logits_BxV.astype(jnp.float32) / temperature
    if top_p < 1.0:
        sorted_BxV = jnp.sort(scaled_BxV, axis=-1)[:, ::-1]
        probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
        mass_before_BxV = jnp.cumsum(probs_BxV, axis=-1) - probs_BxV
        kept_BxV = mass_before_BxV < top_p
        threshold_B = jnp.min(jnp.where(kept_BxV, sorted_BxV, jnp.inf), axis=-1)
        scaled_BxV = jnp.where(scaled_BxV >= threshold_B[:, None], scaled_BxV, -jnp.inf)
    return jax.random.categorical(rng, scaled_BxV, axis=-1).astype(jnp.int32)
