"""What the decoding loop carries (`DecodeState`) and what a switching policy decides (`Decision`).

Shapes: B rows (with group_size G, every sample of every prompt is a row), N = max_new_tokens,
V the vocabulary, D the model width.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from latent.nn import KVCache

TEXT, LATENT = 0, 1  # an example's mode (`DecodeState.mode_B`)


@flax.struct.dataclass
class DecodeState:
    """The `lax.while_loop` carry. Iteration t reads `logits_BxV`, chooses for each example a
    token to emit or a latent step to take, feeds it, and stores what the model predicts next."""

    iteration: jax.Array  # [] int32 loop iterations taken
    # Model outputs at each example's last fed position: what the next iteration decides on.
    logits_BxV: jax.Array  # float32, before any logits transform (policies read the model's own)
    hidden_BxD: jax.Array  # after the final norm: what a latent step feeds back
    cache: KVCache
    keys_B: jax.Array  # each row's PRNG key (latent.infer.sampling.example_keys): raw uint32 [B, 2] or typed [B]
    # Latent mode (switching policies).
    mode_B: jax.Array  # int32 TEXT or LATENT
    span_B: jax.Array  # int32 latent steps in the current latent span (0 in text mode)
    switches_B: jax.Array  # int32 text<->latent mode changes so far
    latent_total_B: jax.Array  # int32 latent steps taken in the loop
    ref_entropy_B: jax.Array  # float32 entropy at the last switch (the entropy policy's H_ref)
    # Output.
    tokens_BxN: jax.Array  # int32 emitted tokens, pad after the end
    logprobs_BxN: jax.Array  # float32 log pi: the policy's distribution, temperature 1, constraint applied
    sample_logprobs_BxN: jax.Array  # float32 log q: the distribution actually drawn from (0: greedy, forced)
    forced_BxN: jax.Array  # bool: the token was forced (a policy's </swi>, a full span's <endabstract>), not drawn
    lengths_B: jax.Array  # int32 tokens emitted so far
    positions_B: jax.Array  # int32 sequence positions filled: real prompt tokens, prefill thoughts, loop steps
    done_B: jax.Array  # bool: EOS emitted or a length limit reached; a done example only feeds pads
    # Constrained abstract decoding (latent.infer.constrained).
    in_abstract_B: jax.Array  # bool inside an abstract span
    abstract_count_B: jax.Array  # int32 abstract tokens in the current span
    abstract_total_B: jax.Array  # int32 abstract tokens emitted in all spans (delimiters excluded)
    # The interleaving (Generation.latent): True where iteration i took a latent step; None: not recorded.
    latent_BxI: jax.Array | None = None  # bool [B, I], I = the loop's most iterations
    # Drawn latent steps (Generation.stayed, .stay_logprobs): where a span could have been closed by
    # drawing </swi> and the sampler drew something else, so the span went on, with log pi of that.
    stayed_BxI: jax.Array | None = None  # bool [B, I]
    stay_logprobs_BxI: jax.Array | None = None  # float32 [B, I] log(1 - pi(</swi>)) where stayed, else 0
    # HRPO (Generation.hybrid, .hidden_part): where an emitted token was fed as the gated hybrid,
    # and the hybrid's hidden part h there (zeros elsewhere); None: a policy that feeds no hybrid.
    hybrid_BxN: jax.Array | None = None  # bool [B, N]
    hidden_part_BxNxD: jax.Array | None = None  # float32 [B, N, D]


@flax.struct.dataclass
class Decision:
    """One iteration's choice for every example, made by a switching policy's step function. The
    engine applies it only to examples not done yet."""

    token_B: jax.Array  # int32 the token emitted where the example does not take a latent step
    latent_B: jax.Array  # bool: feed a latent vector this iteration, emit nothing
    forced_B: jax.Array  # bool: token_B is the policy's choice, not the sampler's draw
    mode_B: jax.Array  # int32 TEXT or LATENT after this iteration
    switched_B: jax.Array  # bool: the mode changed this iteration (counted in switches_B)
    ref_entropy_B: jax.Array  # float32 the entropy policy's H_ref after this iteration
    # bool: a latent step taken because the sampler did not draw </swi> where it could close the
    # span: a drawn decision, of probability 1 - pi(</swi>) (the model policy); None: none such
    stayed_B: jax.Array | None = None
    # HRPO: feed the emitted token as the gated hybrid (latent.nn.feedback.HRPOGate.hybrid) rather
    # than its embedding; read only under a policy registered with `hybrid=True`.
    hybrid_B: jax.Array | None = None  # bool

    @classmethod
    def emit(cls, state: DecodeState, sampled_B: jax.Array) -> Decision:
        """Emit the sampled token and change nothing else: the text-only decision."""
        no_B = jnp.zeros_like(state.done_B)
        return cls(token_B=sampled_B, latent_B=no_B, forced_B=no_B, mode_B=state.mode_B, switched_B=no_B,
                   ref_entropy_B=state.ref_entropy_B)
