"""The jitted forward over split params, the idiom of code that runs one model many times:

    graphdef, params = nnx.split(model)                  # once
    apply = jitted_apply(graphdef)                       # once: one compile per input shape
    out = apply(params, tokens_BxT, padding_mask_BxT)    # a ModelOutput (logits, hidden, cache)

The compiled function takes the params as an argument, so other params of the same model (a
later checkpoint, another seed) run in it without a new trace.
"""

from __future__ import annotations

import jax
from flax import nnx


def jitted_apply(graphdef):
    """A jitted `apply(params, tokens_BxT, padding_mask_BxT=None, **kwargs) -> ModelOutput`: the
    Transformer `graphdef` describes, merged with `params` (its nnx.State) and called on the
    tokens. kwargs: the Transformer's other keyword arguments (embeds, embed_mask, positions,
    attention_mask, cache), arrays, a KVCache or None; each new shape or None-ness compiles once."""

    @jax.jit
    def apply(params, tokens_BxT, padding_mask_BxT=None, **kwargs):
        return nnx.merge(graphdef, params)(tokens_BxT, padding_mask=padding_mask_BxT, **kwargs)

    return apply
