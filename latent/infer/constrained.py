"""Constrained abstract decoding (Abstract-CoT) as a logits transform.

Inside an abstract span (opened by emitting `<beginabstract>`, or by a prompt that ends with it)
only the abstract tokens and `<endabstract>` may be drawn, and `<endabstract>` is forced once the
span holds `max_tokens` abstract tokens; outside a span nothing changes. The transformed logits
are the policy: an RL ratio or KL under constrained decoding uses their softmax, renormalised
over the allowed set (a forced end has probability 1).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from latent.infer.state import DecodeState


@dataclasses.dataclass(frozen=True)
class AbstractConstraint:
    vocab: object  # latent.models.vocab.AbstractVocab
    max_tokens: int  # m_max: the longest span

    def opened_by_prompt(self, prompt_BxP: jax.Array) -> jax.Array:
        """bool [B]: the prompt ends with <beginabstract> (left padding: the last column is real)."""
        return prompt_BxP[:, -1] == self.vocab.begin_id

    def forced_end(self, state: DecodeState) -> jax.Array:
        """bool [B]: the span is full, so this step's token is `<endabstract>`, forced (log pi 0)."""
        return state.in_abstract_B & (state.abstract_count_B >= self.max_tokens)

    def __call__(self, state: DecodeState, logits_BxV: jax.Array) -> jax.Array:
        """The logits with what may not be drawn at -inf. Reads only the state's span fields
        (`in_abstract_B`, `abstract_count_B`), so it applies position-wise to any batch of
        positions whose span state is known (latent.methods.rl.replay does)."""
        vocab_size = logits_BxV.shape[-1]
        allowed_V = jnp.zeros((vocab_size,), bool).at[jnp.asarray((*self.vocab.ids, self.vocab.end_id))].set(True)
        in_span_B = state.in_abstract_B
        forced_end_B = self.forced_end(state)
        allowed_BxV = jnp.where(in_span_B[:, None], allowed_V[None], True)
        only_end_1xV = jnp.arange(vocab_size)[None] == self.vocab.end_id
        allowed_BxV = jnp.where(forced_end_B[:, None], only_end_1xV, allowed_BxV)
        return jnp.where(allowed_BxV, logits_BxV, -jnp.inf)

    def track(self, state: DecodeState, token_B: jax.Array, emit_B: jax.Array) -> dict[str, jax.Array]:
        """The span fields of the state after emitting `token_B` where `emit_B`."""
        in_span_B, count_B = state.in_abstract_B, state.abstract_count_B
        opened_B = emit_B & (token_B == self.vocab.begin_id)
        closed_B = emit_B & in_span_B & (token_B == self.vocab.end_id)
        counted_B = emit_B & in_span_B & ~closed_B  # an abstract token emitted inside a span
        return dict(
            in_abstract_B=(in_span_B | opened_B) & ~closed_B,
            abstract_count_B=jnp.where(opened_B, 0, count_B + counted_B),
            abstract_total_B=state.abstract_total_B + counted_B,
        )
