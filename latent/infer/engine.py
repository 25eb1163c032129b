"""Batched generation: prefill the left-padded prompts, then decode inside one jitted
`lax.while_loop` that carries the KV cache and stops when every example has emitted EOS."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from latent.infer.sampling import sample_tokens
from latent.nn import KVCache


@functools.lru_cache(maxsize=32)
def make_generate(graphdef, cfg, max_new_tokens: int, eos_id: int, pad_id: int, temperature: float, top_p: float):
    """A jitted `generate(params, prompt_BxP, prompt_mask_BxP, rng) -> (tokens_BxN, lengths_B)`.

    `lengths` counts generated tokens up to and including EOS (all N if none came).
    Compiles once per prompt-length bucket.
    """

    @jax.jit
    def generate(params, prompt_BxP, prompt_mask_BxP, rng):
        model = nnx.merge(graphdef, params)
        B, P = prompt_BxP.shape
        cache = KVCache.init(cfg, B, P + max_new_tokens)
        prefill = model(prompt_BxP, padding_mask=prompt_mask_BxP, cache=cache)
        generated_BxN = jnp.full((B, max_new_tokens), pad_id, jnp.int32)
        done_B = jnp.zeros((B,), bool)
        lengths_B = jnp.zeros((B,), jnp.int32)

        def keep_going(carry):
            t, _, _, done_B, _, _, _ = carry
            return (t < max_new_tokens) & ~jnp.all(done_B)

        def decode_one(carry):
            t, logits_BxV, cache, done_B, generated_BxN, lengths_B, rng = carry
            rng, step_rng = jax.random.split(rng)
            token_B = sample_tokens(logits_BxV, step_rng, temperature, top_p)
            token_B = jnp.where(done_B, pad_id, token_B)
            generated_BxN = generated_BxN.at[:, t].set(token_B)
            lengths_B = lengths_B + (~done_B).astype(jnp.int32)
            done_B = done_B | (token_B == eos_id)
            out = model(token_B[:, None], cache=cache)
            return t + 1, out.logits[:, -1], out.cache, done_B, generated_BxN, lengths_B, rng

        carry = (jnp.zeros((), jnp.int32), prefill.logits[:, -1], prefill.cache, done_B, generated_BxN, lengths_B, rng)
        _, _, _, _, generated_BxN, lengths_B, _ = jax.lax.while_loop(keep_going, decode_one, carry)
        return generated_BxN, lengths_B

    return generate
