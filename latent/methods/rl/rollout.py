"""Rollouts: G samples per prompt from the jitted engine (latent.infer.engine), recorded with what
RL's policy terms cover and what a replay (latent.methods.rl.replay) needs to rebuild each sample.

    layout = RolloutLayout(policy="fixed", latent_steps=K, eot_id=eot)      # or abstract=vocab, ...
    generate = make_generate(graphdef, cfg, max_new_tokens, eos, pad, temperature, top_p,
                             group_size=G, **layout.engine_kwargs())
    rollouts = rollout(generate, params, prompt_BxP, prompt_mask_BxP, rng, layout=layout)

Arrays carry their shapes: B prompts, G samples per prompt, N = B * G rows, prompt-major (row
b * G + g is sample g of prompt b, as the engine and latent.methods.rl.objective order them),
P prompt columns (left-padded), T = max_new_tokens.

What the policy terms cover (`mask_NxT`): the emitted tokens up to and including EOS that the
sampler drew, i.e. not the tokens a policy or the constraint forced (the engine's
`Generation.forced`: a full span's <endabstract>, SWITCH's </swi>); their probability is not the
policy's choice. The log-probs (`logprobs_NxT`, pi_old) are the engine's: log pi at temperature 1
after the logits transform (renormalised inside an abstract span), whatever temperature, top-k or
top-p the samples were drawn with; 0 after the end and at a forced end.

The latent layout a replay needs: `layout` (static: the policy and its knobs, Coconut's compiled
thought slots K and <eot>, SWITCH's <swi> / </swi> and caps, the feedback, the abstract
constraint), `thoughts_N` (Coconut: the thoughts each row's prefill ran; SWITCH and the entropy
policy: the latent steps each row took in the loop), `latent_NxI` (SWITCH and the entropy
policy: the engine's `Generation.latent`, which loop iterations took a latent step, so where
each latent slot sits between the emitted tokens), `hidden_after_end_NxP` (Abstract-CoT's
bottleneck: the prompt positions hidden from the answer side once <endabstract> is emitted) and,
for HRPO, `hybrid_NxT` and `hidden_part_NxTxD` (the engine's Generation.hybrid and .hidden_part:
which emitted tokens were fed as the gated hybrid, and the constant h each was mixed with).
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp

from latent.infer.engine import FEEDBACKS
from latent.infer.policies import PolicyConfig, get_policy

# latent.infer.policies: text, Coconut's fixed thoughts, and the two that take latent steps between
# emitted tokens (SWITCH's model-opened spans, entropy switching), replayed from Rollouts.latent_NxI
LOOP_POLICIES = ("model", "entropy")
# ... and HRPO's, whose thinking tokens are fed as the gated hybrid (replayed from Rollouts.hidden_part_NxTxD)
REPLAYABLE_POLICIES = ("none", "fixed", *LOOP_POLICIES, "hrpo")


@dataclasses.dataclass(frozen=True)
class RolloutLayout:
    """How the engine decoded: the make_generate knobs a replay mirrors (static, hashable).

    policy: the switching policy (latent.infer.policies). latent_steps: policy fixed, the thought
    slots compiled after <bot> (K; a row's own count is Rollouts.thoughts_N). eot_id: fixed, <eot>.
    abstract / abstract_max: the constraint (an AbstractVocab and m_max; a PromptLayout's `engine`).
    model / entropy (LOOP_POLICIES): latent_budget, max_latent_total, max_switches (entropy),
    swi_id / swi_end_id (model), and `feedback`, what a latent step receives
    (latent.infer.engine.latent_input: "model", the model's trained rule, or "soft", p^T E).
    hrpo: answer_id, the answer marker that ends the thinking span. cache_dtype: the engine's KV
    cache storage (make_generate; the replay computes without a stored cache's rounding).
    """

    policy: str = "none"
    latent_steps: int = 0
    eot_id: int | None = None
    abstract: object = None  # latent.models.vocab.AbstractVocab
    abstract_max: int = 0
    latent_budget: int = 0
    max_latent_total: int = 0
    max_switches: int = 0
    swi_id: int | None = None
    swi_end_id: int | None = None
    feedback: str = "model"
    answer_id: int | None = None
    cache_dtype: str = "auto"  # the engine's KV cache storage (rl.cache_dtype)

    def __post_init__(self):
        if self.policy in REPLAYABLE_POLICIES:  # the engine's own checks of the knobs it reads
            get_policy(self.policy, self.policy_config())
        if self.abstract is not None and self.abstract_max <= 0:
            raise ValueError("constrained abstract decoding needs abstract_max > 0 (the longest abstract span)")
        if self.feedback not in FEEDBACKS:
            raise ValueError(f"feedback {self.feedback!r} is not one of {FEEDBACKS}")

    def policy_config(self) -> PolicyConfig:
        return PolicyConfig(latent_steps=self.latent_steps, latent_budget=self.latent_budget,
                            max_latent_total=self.max_latent_total, max_switches=self.max_switches,
                            eot_id=self.eot_id, swi_id=self.swi_id, swi_end_id=self.swi_end_id,
                            answer_id=self.answer_id)

    def engine_kwargs(self) -> dict:
        """The keyword arguments of latent.infer.engine.make_generate that decode this layout."""
        kwargs = dict(policy=self.policy, abstract=self.abstract, abstract_max=self.abstract_max,
                      cache_dtype=self.cache_dtype)
        if self.policy == "fixed":
            kwargs |= dict(latent_steps=self.latent_steps, eot_id=self.eot_id)
        if self.policy in LOOP_POLICIES:
            kwargs |= dict(latent_budget=self.latent_budget, max_latent_total=self.max_latent_total,
                           max_switches=self.max_switches, swi_id=self.swi_id, swi_end_id=self.swi_end_id,
                           feedback=self.feedback)
        if self.policy == "hrpo":
            kwargs |= dict(answer_id=self.answer_id)
        return kwargs


@flax.struct.dataclass
class Rollouts:
    """N sampled outputs of B prompts (module docstring). A pytree: jit and grad take it whole;
    `layout` and `group_size` are static."""

    prompt_NxP: jax.Array  # int32 each row's prompt (left-padded), repeated G times
    prompt_mask_NxP: jax.Array  # bool real prompt tokens
    tokens_NxT: jax.Array  # int32 emitted tokens, pad after the end
    mask_NxT: jax.Array  # bool the sampled tokens the policy terms cover: emitted, up to EOS, not forced
    logprobs_NxT: jax.Array  # float32 log pi_old of each emitted token (engine: temperature 1, constraint applied)
    lengths_N: jax.Array  # int32 emitted tokens, EOS included
    truncated_N: jax.Array  # bool stopped by a length limit before EOS
    thoughts_N: jax.Array  # int32 latent steps: Coconut's prefill thoughts, or those taken in the loop (model, entropy)
    hidden_after_end_NxP: jax.Array | None = None  # bool Abstract-CoT bottleneck: hidden after <endabstract>
    latent_NxI: jax.Array | None = None  # bool model / entropy: loop iteration i took a latent step (Generation.latent)
    # model policy: the drawn latent steps (the span could have closed and went on) and log pi_old of
    # each, log(1 - pi(</swi>)) (Generation.stayed, .stay_logprobs): policy terms beside the tokens
    stayed_NxI: jax.Array | None = None  # bool
    stay_logprobs_NxI: jax.Array | None = None  # float32
    hybrid_NxT: jax.Array | None = None  # bool hrpo: token t was fed as the gated hybrid (Generation.hybrid)
    hidden_part_NxTxD: jax.Array | None = None  # float32 hrpo: that hybrid's constant h (Generation.hidden_part)
    layout: RolloutLayout = flax.struct.field(pytree_node=False, default=RolloutLayout())
    group_size: int = flax.struct.field(pytree_node=False, default=1)

    @property
    def emitted_NxT(self) -> jax.Array:
        """bool: the positions that hold an emitted token (forced ones included)."""
        return jnp.arange(self.tokens_NxT.shape[1])[None, :] < self.lengths_N[:, None]

    @property
    def term_logprobs(self) -> jax.Array:
        """float32 [N, K]: log pi_old of every policy term: the T token positions, then (model
        policy) the I loop iterations' drawn latent steps. Masked by `term_mask`."""
        return with_stays(self.logprobs_NxT, self.stay_logprobs_NxI)

    @property
    def term_mask(self) -> jax.Array:
        """bool [N, K]: the terms drawn by the sampler: `mask_NxT`, then `stayed_NxI`."""
        return with_stays(self.mask_NxT, self.stayed_NxI)


def with_stays(tokens_NxT: jax.Array, stays_NxI: jax.Array | None) -> jax.Array:
    """A row's token terms followed by its drawn latent steps (the model policy's), as one axis."""
    return tokens_NxT if stays_NxI is None else jnp.concatenate([tokens_NxT, stays_NxI.astype(tokens_NxT.dtype)], 1)


def from_generation(generation, prompt_BxP, prompt_mask_BxP, *, layout: RolloutLayout = RolloutLayout(),
                    hidden_after_end_BxP=None) -> Rollouts:
    """The Rollouts of a Generation (latent.infer.engine) decoded from these prompts under
    `layout`; its B * G rows give the group size."""
    prompt_BxP = jnp.asarray(prompt_BxP, jnp.int32)
    prompts, rows = prompt_BxP.shape[0], generation.tokens.shape[0]
    if rows % prompts:
        raise ValueError(f"the generation has {rows} rows, not a multiple of the {prompts} prompts")
    group = rows // prompts
    repeat = lambda x: None if x is None else jnp.repeat(jnp.asarray(x), group, axis=0)
    emitted_NxT = jnp.arange(generation.tokens.shape[1])[None, :] < generation.lengths[:, None]
    loop = layout.policy in LOOP_POLICIES
    thoughts_N = generation.latent_steps if layout.policy == "fixed" or loop else jnp.zeros((rows,), jnp.int32)
    return Rollouts(
        prompt_NxP=repeat(prompt_BxP), prompt_mask_NxP=repeat(jnp.asarray(prompt_mask_BxP, bool)),
        tokens_NxT=generation.tokens, mask_NxT=emitted_NxT & ~generation.forced, logprobs_NxT=generation.logprobs,
        lengths_N=generation.lengths, truncated_N=generation.truncated, thoughts_N=thoughts_N.astype(jnp.int32),
        hidden_after_end_NxP=None if hidden_after_end_BxP is None else repeat(jnp.asarray(hidden_after_end_BxP, bool)),
        latent_NxI=generation.latent if loop else None, layout=layout, group_size=group,
        **(dict(stayed_NxI=generation.stayed, stay_logprobs_NxI=generation.stay_logprobs) if layout.policy == "model"
           else {}),
        hybrid_NxT=generation.hybrid, hidden_part_NxTxD=generation.hidden_part,
    )


def rollout(generate, params, prompt_BxP, prompt_mask_BxP, rng, *, layout: RolloutLayout = RolloutLayout(),
            hidden_after_end_BxP=None, latent_steps_B=None, example_ids_B=None) -> Rollouts:
    """Sample with a built `generate` (make_generate(..., group_size=G, **layout.engine_kwargs()))
    and record the Rollouts. latent_steps_B: Coconut's thoughts per prompt (at most
    layout.latent_steps); example_ids_B: stable ids for the per-example keys (the engine's)."""
    generation = generate(params, *engine_arguments(prompt_BxP, prompt_mask_BxP, rng, hidden_after_end_BxP=hidden_after_end_BxP,
                                                    latent_steps_B=latent_steps_B, example_ids_B=example_ids_B))
    return from_generation(generation, prompt_BxP, prompt_mask_BxP, layout=layout,
                           hidden_after_end_BxP=hidden_after_end_BxP)


def engine_arguments(prompt_BxP, prompt_mask_BxP, rng, *, hidden_after_end_BxP=None, latent_steps_B=None,
                     example_ids_B=None) -> tuple:
    """The arguments after the params of a built `generate`, in its order: what `rollout` passes it,
    and what tpu/aot.py lowers it with (RolloutSource.lower_rollout)."""
    return prompt_BxP, prompt_mask_BxP, rng, hidden_after_end_BxP, latent_steps_B, example_ids_B
