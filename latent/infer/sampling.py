"""Token choice from logits: greedy (first index on ties), temperature, top-k, nucleus (top-p),
with one PRNG key per example.

The distribution a draw comes from is `sampling_logits`: the logits divided by the temperature,
then cut to the k most likely tokens, then to the nucleus of what is left (as Hugging Face's
warpers order them). Every cut keeps the most likely token and breaks ties by the lower index, so
top_k=1, or a top_p below the top token's probability, draws exactly what greedy argmax picks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def check_sampling(temperature: float, top_p: float, top_k: int) -> None:
    if not temperature >= 0.0:
        raise ValueError(f"temperature must be >= 0 (0: greedy); got {temperature!r}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] (1: off); got {top_p!r}")
    if not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an int >= 0 (0: off); got {top_k!r}")


def _most_likely_first(scores_BxV: jax.Array) -> jax.Array:
    """Token ids by decreasing score, the lower id first among equal scores."""
    return jnp.argsort(-scores_BxV, axis=-1, stable=True)


def _scatter_to_vocab(kept_sorted_BxV: jax.Array, order_BxV: jax.Array) -> jax.Array:
    rows_Bx1 = jnp.arange(order_BxV.shape[0])[:, None]
    return jnp.zeros_like(kept_sorted_BxV).at[rows_Bx1, order_BxV].set(kept_sorted_BxV)


def sampling_logits(logits_BxV: jax.Array, temperature: float, top_p: float = 1.0, top_k: int = 0) -> jax.Array:
    """float32 [B, V]: the logits of the distribution a sample is drawn from (temperature > 0),
    -inf outside the kept set. top_k > 0 keeps the k most likely tokens; top_p < 1 then keeps the
    smallest set of most likely tokens whose renormalised probability reaches top_p."""
    scaled_BxV = logits_BxV.astype(jnp.float32) / temperature
    vocab = scaled_BxV.shape[-1]
    if 0 < top_k < vocab:
        _, top_BxK = jax.lax.top_k(scaled_BxV, top_k)  # lax.top_k lists the lower index first on ties
        rows_Bx1 = jnp.arange(scaled_BxV.shape[0])[:, None]
        kept_BxV = jnp.zeros(scaled_BxV.shape, bool).at[rows_Bx1, top_BxK].set(True)
        scaled_BxV = jnp.where(kept_BxV, scaled_BxV, -jnp.inf)
    if top_p < 1.0:
        order_BxV = _most_likely_first(scaled_BxV)
        probs_sorted_BxV = jax.nn.softmax(jnp.take_along_axis(scaled_BxV, order_BxV, axis=-1), axis=-1)
        mass_before_BxV = jnp.cumsum(probs_sorted_BxV, axis=-1) - probs_sorted_BxV
        kept_BxV = _scatter_to_vocab(mass_before_BxV < top_p, order_BxV)  # the first always: 0 < top_p
        scaled_BxV = jnp.where(kept_BxV, scaled_BxV, -jnp.inf)
    return scaled_BxV


def sample_tokens(logits_BxV: jax.Array, rng: jax.Array, temperature: float, top_p: float, top_k: int = 0) -> jax.Array:
    """int32 [B] from one key for the whole batch. temperature 0 is greedy argmax."""
    if temperature == 0.0:
        return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
    return jax.random.categorical(rng, sampling_logits(logits_BxV, temperature, top_p, top_k), axis=-1).astype(jnp.int32)


def sample_per_example(
    logits_BxV: jax.Array, keys_B: jax.Array, temperature: float, top_p: float = 1.0, top_k: int = 0
) -> tuple[jax.Array, jax.Array]:
    """(token_B int32, logprob_B float32): example b draws with its own key keys_B[b], so its draw
    does not depend on the other rows. logprob_B is the token's log-probability under the
    distribution it was drawn from (`sampling_logits`); greedy draws from a point mass: 0."""
    if temperature == 0.0:
        return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32), jnp.zeros(logits_BxV.shape[:1], jnp.float32)
    drawn_from_BxV = sampling_logits(logits_BxV, temperature, top_p, top_k)
    token_B = jax.vmap(jax.random.categorical)(keys_B, drawn_from_BxV).astype(jnp.int32)
    logp_BxV = jax.nn.log_softmax(drawn_from_BxV, axis=-1)
    return token_B, jnp.take_along_axis(logp_BxV, token_B[:, None], axis=-1)[:, 0]


def example_keys(rng: jax.Array, example_ids_B: jax.Array, sample_index_B: jax.Array) -> jax.Array:
    """One key per row: fold_in(fold_in(rng, example id), sample index). A row's key depends only
    on the seed, its example and which of the example's samples it is, never on the batch."""
    fold = jax.vmap(jax.random.fold_in, in_axes=(0, 0))
    per_example_B = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, example_ids_B)
    return fold(per_example_B, sample_index_B)


def step_keys(keys_B: jax.Array, iteration: jax.Array) -> jax.Array:
    """Each row's key for one loop iteration (every row advances one position per iteration, so
    the iteration names the same point of an example's decoding in any batch)."""
    return jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys_B, iteration)
