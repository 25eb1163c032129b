"""Switching policies: when an example decodes in latent mode. Each is one step function,

    step(state: DecodeState, sampled_B: int32 [B], cfg: PolicyConfig) -> Decision

called once per loop iteration with the token the sampler drew for every example (from the
transformed logits) and the loop state (whose `logits_BxV` are the model's own, untransformed).
It says, per example, whether this iteration emits a token (which one) or takes a latent step,
and how the mode changes. The engine applies the decision only to examples not done yet, counts
switches and latent steps, and does the feeding. Registered by name:

  none     text only.
  fixed    Coconut: the prompt ends with <bot>; `latent_steps` thoughts follow (run in the
           prefill, `thoughts_prefill`), then <eot> is fed and decoding is text only.
  model    SWITCH: <swi> emitted enters latent mode; </swi> drawn at a latent position (greedy:
           the argmax; a span has at least one step) or `latent_budget` steps in the span leave
           it, emitting </swi>. A drawn </swi> is a sampled token; a latent step where it could
           have been drawn is a drawn decision of probability 1 - pi(</swi>) (Generation.stayed).
  entropy  training-free (SwiReasoning-style): text goes latent when the next-token entropy H_t
           rises above H_ref, the entropy at the last switch (first: the first decoding step's);
           latent returns to text when H_t falls below it or after `latent_budget` steps; at most
           `max_switches` spans, then text only.
  hrpo     HRPO: every position emits a sampled token (a policy term), but inside the thinking
           span the next position's input is the gated hybrid of that token and the
           distribution it was drawn from (latent.nn.feedback.HRPOGate.hybrid; model.feedback
           must be hrpo). The span is everything emitted before the answer marker `answer_id`
           (the "###" that the CoT format writes before the answer, latent.data.tasks.formats):
           the marker and what follows it are fed as plain embeddings.

To add a policy: write a step function and `register_policy("name", step, latent_in_loop=...)`;
`make_generate(..., policy="name")` then decodes with it (the config's `eval.switch_policy`
and eval.py's --switch-policy list the built-in names only, latent.config.DecodePolicy). A
policy whose latent steps happen before the loop (as Coconut's) gives its own `prefill`
(called as `prompt_prefill` is, including `cache_dtype`, the dtype to allocate its KV cache in).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.struct
import jax
import jax.numpy as jnp

from latent.infer.state import LATENT, TEXT, Decision, DecodeState
from latent.nn import KVCache
from latent.nn.recurrence import continuous_thought_forward


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    """The knobs of the built-in policies (static: part of the compiled decoder's cache key)."""

    latent_steps: int = 0  # fixed: thought slots compiled after <bot>
    latent_budget: int = 0  # model, entropy: most latent steps in one span
    max_latent_total: int = 0  # model, entropy: most latent steps per example
    max_switches: int = 0  # entropy: most latent spans per example
    eot_id: int | None = None  # fixed: <eot>, fed after the thoughts
    swi_id: int | None = None  # model: <swi>
    swi_end_id: int | None = None  # model: </swi>
    answer_id: int | None = None  # hrpo: the answer marker, which ends the thinking span


def entropy(logits_BxV: jax.Array) -> jax.Array:
    logp_BxV = jax.nn.log_softmax(logits_BxV.astype(jnp.float32), axis=-1)
    return -jnp.sum(jnp.exp(logp_BxV) * logp_BxV, axis=-1)


# ----------------------------------------------------------------------------- step functions


def text_step(state: DecodeState, sampled_B: jax.Array, cfg: PolicyConfig) -> Decision:
    return Decision.emit(state, sampled_B)


def model_step(state: DecodeState, sampled_B: jax.Array, cfg: PolicyConfig) -> Decision:
    in_latent_B = state.mode_B == LATENT
    out_of_budget_B = (state.span_B >= cfg.latent_budget) | (state.latent_total_B >= cfg.max_latent_total)
    # The <swi> position itself is never trained to predict </swi> (a latent slot follows it), so
    # only a latent position can close the span: at least one step. There the sampler's draw
    # decides: </swi> closes the span (greedy: when it is the argmax), any other token goes on
    # with a latent step, a decision of probability 1 - pi(</swi>) (Decision.stayed_B).
    may_close_B = in_latent_B & (state.span_B > 0) & ~out_of_budget_B
    draws_end_B = may_close_B & (sampled_B == cfg.swi_end_id)
    forced_end_B = in_latent_B & out_of_budget_B
    leave_B = draws_end_B | forced_end_B
    token_B = jnp.where(leave_B, cfg.swi_end_id, sampled_B)
    enter_B = ~in_latent_B & (token_B == cfg.swi_id) & (state.latent_total_B < cfg.max_latent_total)
    return Decision(
        token_B=token_B, latent_B=in_latent_B & ~leave_B, forced_B=forced_end_B,
        mode_B=jnp.where(leave_B, TEXT, jnp.where(enter_B, LATENT, state.mode_B)),
        switched_B=leave_B | enter_B, ref_entropy_B=state.ref_entropy_B, stayed_B=may_close_B & ~draws_end_B,
    )


def entropy_step(state: DecodeState, sampled_B: jax.Array, cfg: PolicyConfig) -> Decision:
    entropy_B, ref_B = entropy(state.logits_BxV), state.ref_entropy_B
    in_latent_B = state.mode_B == LATENT
    latent_left_B = state.latent_total_B < cfg.max_latent_total
    spans_left_B = state.switches_B // 2 < cfg.max_switches  # in text mode switches = 2 x spans so far
    go_latent_B = ~in_latent_B & spans_left_B & (entropy_B > ref_B) & latent_left_B
    go_text_B = in_latent_B & ((entropy_B < ref_B) | (state.span_B >= cfg.latent_budget) | ~latent_left_B)
    latent_B = go_latent_B | (in_latent_B & ~go_text_B)
    switched_B = go_latent_B | go_text_B
    return Decision(
        token_B=sampled_B, latent_B=latent_B, forced_B=jnp.zeros_like(latent_B),
        mode_B=jnp.where(latent_B, LATENT, TEXT), switched_B=switched_B,
        ref_entropy_B=jnp.where(switched_B, entropy_B, ref_B),
    )


def hrpo_step(state: DecodeState, sampled_B: jax.Array, cfg: PolicyConfig) -> Decision:
    """Emit the sampled token; feed it as the hybrid while the answer marker is not emitted yet."""
    emitted_BxN = jnp.arange(state.tokens_BxN.shape[1])[None, :] < state.lengths_B[:, None]
    answered_B = jnp.any(emitted_BxN & (state.tokens_BxN == cfg.answer_id), axis=1)  # the marker emitted earlier
    return Decision.emit(state, sampled_B).replace(hybrid_B=~answered_B & (sampled_B != cfg.answer_id))


# ----------------------------------------------------------------------------- prefills


@flax.struct.dataclass
class Prefilled:
    """The prompt run through the model, before the loop's first iteration."""

    logits_BxV: jax.Array  # next-token logits at the last prompt (or prefill) position
    hidden_BxD: jax.Array
    cache: KVCache
    thoughts_B: jax.Array  # int32 latent steps taken in the prefill
    positions_B: jax.Array  # int32 sequence positions filled: real prompt tokens + prefill steps


def prompt_prefill(model, model_cfg, prompt_BxP, prompt_mask_BxP, latent_steps_B, cfg: PolicyConfig,
                   loop_slots: int, cache_dtype=None) -> Prefilled:
    """The prompt alone, with room in the cache for `loop_slots` more positions; the cache stores
    keys and values in `cache_dtype` (None: model_cfg.dtype)."""
    if latent_steps_B is not None:
        raise ValueError("latent_steps_B (thoughts per example) needs policy 'fixed'")
    B, P = prompt_BxP.shape
    # the prompt attends over its own P slots; the loop's slots are added after (KVCache.grow)
    out = model(prompt_BxP, padding_mask=prompt_mask_BxP, cache=KVCache.init(model_cfg, B, P, dtype=cache_dtype))
    return Prefilled(logits_BxV=out.logits[:, -1], hidden_BxD=out.hidden[:, -1], cache=out.cache.grow(loop_slots),
                     thoughts_B=jnp.zeros((B,), jnp.int32), positions_B=prompt_mask_BxP.sum(-1).astype(jnp.int32))


def thoughts_prefill(model, model_cfg, prompt_BxP, prompt_mask_BxP, latent_steps_B, cfg: PolicyConfig,
                     loop_slots: int, cache_dtype=None) -> Prefilled:
    """Coconut: prompt (ending in <bot>), each example's thoughts (`latent_steps_B`, at most
    cfg.latent_steps, the compiled slots; default all of them), then <eot>."""
    B, P = prompt_BxP.shape
    if latent_steps_B is None:
        latent_steps_B = jnp.full((B,), cfg.latent_steps, jnp.int32)
    thoughts_B = jnp.minimum(jnp.asarray(latent_steps_B, jnp.int32), cfg.latent_steps)
    out = continuous_thought_forward(
        model, prompt_BxP, prompt_mask_BxP, thoughts_B,
        jnp.full((B, 1), cfg.eot_id, jnp.int32), jnp.ones((B, 1), bool),
        max_latent=cfg.latent_steps, cache_len=P + cfg.latent_steps + 1, cache_dtype=cache_dtype,
    )  # the prefill attends over its own slots; the loop's are added after (KVCache.grow)
    positions_B = prompt_mask_BxP.sum(-1).astype(jnp.int32) + thoughts_B + 1  # + <eot>
    return Prefilled(logits_BxV=out.logits[:, -1], hidden_BxD=out.hidden[:, -1], cache=out.cache.grow(loop_slots),
                     thoughts_B=thoughts_B, positions_B=positions_B)


# ----------------------------------------------------------------------------- registry

PolicyStep = Callable[[DecodeState, jax.Array, PolicyConfig], Decision]


def needs_no_knobs(cfg: PolicyConfig) -> None:
    pass


@dataclasses.dataclass(frozen=True)
class Policy:
    step: PolicyStep
    # Takes latent steps inside the loop: the loop then feeds latent vectors, and each example may
    # take up to cfg.max_latent_total iterations beyond max_new_tokens.
    latent_in_loop: bool = False
    prefill: Callable[..., Prefilled] = prompt_prefill
    check: Callable[[PolicyConfig], None] = needs_no_knobs  # raises ValueError naming a missing knob
    # Feeds some emitted tokens as HRPO's gated hybrid (Decision.hybrid_B): the loop then records
    # where, and the hybrid's hidden part, for the RL replay (Generation.hybrid, .hidden_part).
    hybrid: bool = False


POLICIES: dict[str, Policy] = {}


def register_policy(name: str, step: PolicyStep, *, latent_in_loop: bool = False,
                    prefill: Callable[..., Prefilled] = prompt_prefill,
                    check: Callable[[PolicyConfig], None] | None = None, hybrid: bool = False) -> Policy:
    if latent_in_loop and hybrid:
        raise ValueError("a policy either takes latent steps in the loop or feeds hybrids, not both")
    policy = Policy(step=step, latent_in_loop=latent_in_loop, prefill=prefill, check=check or needs_no_knobs,
                    hybrid=hybrid)
    POLICIES[name] = policy
    return policy


def get_policy(name: str, cfg: PolicyConfig) -> Policy:
    if name not in POLICIES:
        raise ValueError(f"switch policy {name!r} is not one of {tuple(POLICIES)}")
    policy = POLICIES[name]
    policy.check(cfg)
    return policy


def _check_fixed(cfg: PolicyConfig) -> None:
    if cfg.latent_steps < 0 or cfg.eot_id is None:
        raise ValueError("policy 'fixed' needs latent_steps >= 0 and eot_id (the <eot> token)")


def _check_model(cfg: PolicyConfig) -> None:
    if cfg.swi_id is None or cfg.swi_end_id is None or cfg.latent_budget <= 0:
        raise ValueError("policy 'model' needs swi_id, swi_end_id and latent_budget > 0")


def _check_entropy(cfg: PolicyConfig) -> None:
    if cfg.latent_budget <= 0:
        raise ValueError("policy 'entropy' needs latent_budget > 0")


def _check_hrpo(cfg: PolicyConfig) -> None:
    if cfg.answer_id is None:
        raise ValueError("policy 'hrpo' needs answer_id (the answer marker that ends the thinking span)")


register_policy("none", text_step)
register_policy("fixed", text_step, prefill=thoughts_prefill, check=_check_fixed)
register_policy("model", model_step, latent_in_loop=True, check=_check_model)
register_policy("entropy", entropy_step, latent_in_loop=True, check=_check_entropy)
register_policy("hrpo", hrpo_step, hybrid=True, check=_check_hrpo)
