"""Replay: the training forward of RL. A teacher-forced pass of the current model over each
rollout (latent.methods.rl.rollout) recomputes log pi of every emitted token, differentiably in
the params: the `logp` of latent.methods.rl.objective.policy_loss. Under the params that made the
rollouts it equals the engine's log-probs (tests/methods/test_rl_replay.py: within 1e-5 in
float32), so the first inner step's ratio is 1.

What the engine did, position by position, and what the replay does in one pass:

  text (policy none)    one forward over [prompt; generated] (left-padded prompt, right-padded
                        output: position ids count real tokens, as the KV-cached loop's do); the
                        logits at prompt column P - 1 + t predict generated token t.
  Coconut (fixed)       latent.nn.recurrence.continuous_thought_forward over prompt (ending in
                        <bot>), each row's `thoughts_N` thoughts, then [<eot>; generated]: the
                        prefill the engine ran, with the generated text as the suffix. Suffix
                        position t (<eot> at 0) predicts generated token t. `latent_grad` (full,
                        truncate(n), detach) is how far gradients run back through the thoughts.
  abstract constraint   the engine's transform (latent.infer.constrained.AbstractConstraint) on
                        every position at once: the span state before each token (in a span,
                        its count) is replayed from the prompt's last token and the generated
                        tokens with the constraint's own `track`, and the transform reads only
                        that state. Inside a span log pi is renormalised over the abstract tokens
                        and <endabstract>; a forced end is 0. Abstract-CoT's bottleneck
                        (`hidden_after_end_NxP`) hides those prompt positions from the query at
                        the first emitted <endabstract> and every query after it, as the engine's
                        key mask does from that token on.
  SWITCH (model), entropy  (Switch-GRPO) the engine's loop again, teacher-forced: the prompt
                        prefilled into a KV cache of the engine's length, then one position per
                        loop iteration, in a `lax.scan`: where the rollout's `latent_NxI` says the
                        iteration took a latent step, the slot's input is
                        latent.infer.engine.latent_input (layout.feedback: the model's trained
                        rule, or "soft") of the previous position's hidden state and logits,
                        recomputed under the current params; elsewhere the next emitted token (a
                        pad once the row is done). The logits each iteration decided on predict
                        the token it emitted. Gradients run back through the slots; `latent_grad`
                        applies per span, each span being one recurrence chain: truncate(n) keeps
                        the last n feedbacks of every span, detach none (Coconut's single span
                        gives latent.nn.recurrence's rule). This costs one model call per
                        iteration, as decoding did.
  HRPO (hrpo)           the text forward, in which each token the rollout fed as the gated hybrid
                        (`hybrid_NxT`: the thinking span) has the input a*E[x] + sqrt(1 - a^2) *
                        (i * h), recomputed under the current params (latent.nn.feedback.HRPOGate:
                        gradients reach W_r, W_i, Lambda and the embedding) with the rollout's h
                        (`hidden_part_NxTxD`) as a constant, as the paper feeds the hidden part back
                        (no BPTT through the previous position's logits). One parallel pass.

Log-probs are returned at every emitted position (0 after the end); the loss takes them on
`rollouts.mask_NxT`. SWITCH's </swi> is drawn at a latent position (a
sampled token, in the mask) or forced by the budget (Generation.forced: outside it). Where it could
have been drawn and was not, the span went on: a drawn decision of log-probability
log(1 - pi(</swi>)) under the logits that iteration decided on (`Replayed.stay_logprobs`, beside
the engine's Generation.stay_logprobs). `Replayed.term_logprobs` puts the tokens' and those
decisions' log-probs on one axis, as `Rollouts.term_logprobs` and `.term_mask` do.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from latent.infer.constrained import AbstractConstraint
from latent.infer.engine import check_hybrid_feedback, latent_input, stay_logprob
from latent.methods.rl.rollout import LOOP_POLICIES, REPLAYABLE_POLICIES, Rollouts, with_stays
from latent.nn import KVCache
from latent.nn.recurrence import continuous_thought_forward, parse_latent_grad


class Replayed(NamedTuple):
    logprobs: jax.Array  # [N, T] float32 log pi of each emitted token (0 after the end)
    entropy: jax.Array  # [N, T] float32 entropy of the policy at each emitted position (0 after the end)
    stay_logprobs: jax.Array | None = None  # [N, I] float32 model policy: log(1 - pi(</swi>)) where stayed, else 0

    @property
    def term_logprobs(self) -> jax.Array:
        """[N, K]: the tokens' log pi, then the drawn latent steps' (Rollouts.term_logprobs' layout)."""
        return with_stays(self.logprobs, self.stay_logprobs)

    @property
    def term_entropy(self) -> jax.Array:
        """[N, K]: the tokens' entropies, then 0 at the latent steps (no entropy bonus there)."""
        return with_stays(self.entropy, None if self.stay_logprobs is None else jnp.zeros_like(self.stay_logprobs))


class _SpanState(NamedTuple):
    """The span fields of latent.infer.state.DecodeState, all the constraint reads and writes."""

    in_abstract_B: jax.Array
    abstract_count_B: jax.Array
    abstract_total_B: jax.Array


def span_states(constraint: AbstractConstraint, prompt_NxP: jax.Array, tokens_NxT: jax.Array,
                emitted_NxT: jax.Array) -> _SpanState:
    """Each position's span state before its token was chosen ([N, T] fields), as the engine's
    loop carried it: opened by the prompt's last token, then the constraint's `track` per token."""
    rows = prompt_NxP.shape[0]
    zeros_N = jnp.zeros((rows,), jnp.int32)
    start = _SpanState(constraint.opened_by_prompt(prompt_NxP), zeros_N, zeros_N)

    def step(state, token_and_emit):
        token_N, emit_N = token_and_emit
        return _SpanState(**constraint.track(state, token_N, emit_N)), state

    _, before_TxN = jax.lax.scan(step, start, (tokens_NxT.T, emitted_NxT.T))
    return jax.tree.map(lambda x: x.T, before_TxN)


def _bottleneck_mask(rollouts: Rollouts, emitted_NxT: jax.Array) -> jax.Array:
    """bool [N, L, L] over [prompt; generated] (L = P + T): False where a query at or after the
    first emitted <endabstract> would read a hidden prompt position."""
    end_id = rollouts.layout.abstract.end_id
    closed_NxT = jnp.cumsum(emitted_NxT & (rollouts.tokens_NxT == end_id), axis=1) > 0
    rows, prompt_len = rollouts.prompt_NxP.shape
    hides_query_NxL = jnp.concatenate([jnp.zeros((rows, prompt_len), bool), closed_NxT], axis=1)
    hidden_key_NxL = jnp.concatenate([rollouts.hidden_after_end_NxP, jnp.zeros_like(closed_NxT)], axis=1)
    return ~(hides_query_NxL[:, :, None] & hidden_key_NxL[:, None, :])


def _not_replayable(policy: str) -> NotImplementedError:
    return NotImplementedError(f"replay of policy {policy!r} rollouts is not written; replayable: {REPLAYABLE_POLICIES}")


def hybrid_inputs(model, rollouts: Rollouts) -> tuple[jax.Array, jax.Array]:
    """(inputs [N, T, D] in model.cfg.dtype, a float32 [N, T, D]): HRPO's gated hybrid of each
    emitted token and the rollout's h, under `model`'s gate; used where `rollouts.hybrid_NxT`."""
    if rollouts.hybrid_NxT is None or rollouts.hidden_part_NxTxD is None:
        raise ValueError("policy 'hrpo' rollouts need hybrid_NxT and hidden_part_NxTxD (Generation.hybrid, "
                         ".hidden_part) to be replayed")
    check_hybrid_feedback(model.cfg, "hrpo")
    hidden_part_NxTxD = jax.lax.stop_gradient(rollouts.hidden_part_NxTxD)  # the paper's constant: no BPTT
    mixed_NxTxD, a_NxTxD = model.feedback.hybrid(rollouts.tokens_NxT, hidden_part_NxTxD, model.embed[...])
    return mixed_NxTxD.astype(jnp.dtype(model.cfg.dtype)), a_NxTxD


def gate_metrics(model, rollouts: Rollouts) -> dict[str, jax.Array]:
    """HRPO's gate under `model`: `hrpo_a`, the mean token weight a over the hybrid-fed positions
    (and channels), and `hrpo_token_weight`, the mean sigmoid(Lambda)^8 (a at r = 1; 0.99 at
    init). Both start near 1 (all token embedding) and fall as the gate moves to hidden features."""
    _, a_NxTxD = hybrid_inputs(model, rollouts)
    hybrid_NxT = rollouts.hybrid_NxT & rollouts.emitted_NxT
    a_mean = jnp.sum(jnp.where(hybrid_NxT, a_NxTxD.mean(-1), 0.0)) / jnp.maximum(jnp.sum(hybrid_NxT), 1)
    return {"hrpo_a": a_mean, "hrpo_token_weight": jnp.mean(model.feedback.token_weight())}


def span_ends_in(latent_NxI: jax.Array) -> jax.Array:
    """int32 [N, I]: at a latent iteration, how many latent steps of its span remain counting it
    (1 at the span's last step); 0 at the others."""
    def back(after_N, latent_N):
        here_N = jnp.where(latent_N, after_N + 1, 0)
        return here_N, here_N

    _, left_IxN = jax.lax.scan(back, jnp.zeros(latent_NxI.shape[:1], jnp.int32), latent_NxI.T, reverse=True)
    return left_IxN.T


def loop_logits(model, rollouts: Rollouts, *, latent_grad: str = "full") -> jax.Array:
    """float32 [N, T, V]: the engine's loop replayed with each row's interleaving (module
    docstring: SWITCH, entropy); the logits that chose each emitted token."""
    return loop_replay(model, rollouts, latent_grad=latent_grad)[0]


def loop_replay(model, rollouts: Rollouts, *, latent_grad: str = "full") -> tuple[jax.Array, jax.Array]:
    """(float32 [N, T, V] the logits that chose each emitted token, [N, I, V] the logits each loop
    iteration decided on, in the model's dtype): `loop_logits`, with the second for the latent
    steps' decisions."""
    layout, latent_NxI = rollouts.layout, rollouts.latent_NxI
    if latent_NxI is None:
        raise ValueError(f"policy {layout.policy!r} rollouts need latent_NxI (Generation.latent) to be replayed")
    if rollouts.hidden_after_end_NxP is not None:
        raise NotImplementedError(f"policy {layout.policy!r} rollouts with a bottleneck (hidden_after_end) are not replayable")
    prompt_NxP, tokens_NxT = rollouts.prompt_NxP, rollouts.tokens_NxT
    rows, prompt_len = prompt_NxP.shape
    steps, iterations = tokens_NxT.shape[1], latent_NxI.shape[1]
    latent_NxI = latent_NxI.astype(bool)
    # A row is active for its first (emitted + latent) iterations; the active non-latent ones emit in order.
    active_NxI = jnp.arange(iterations)[None, :] < (rollouts.lengths_N + latent_NxI.sum(1))[:, None]
    emit_NxI = active_NxI & ~latent_NxI
    index_NxI = jnp.cumsum(emit_NxI, axis=1) - 1
    token_NxI = jnp.where(emit_NxI, jnp.take_along_axis(tokens_NxT, jnp.clip(index_NxI, 0, steps - 1), axis=1), 0)
    keep_last = parse_latent_grad(latent_grad)
    keeps_grad_NxI = jnp.ones_like(latent_NxI) if keep_last is None else span_ends_in(latent_NxI) <= keep_last

    prefill = model(prompt_NxP, padding_mask=rollouts.prompt_mask_NxP,
                    cache=KVCache.init(model.cfg, rows, prompt_len + iterations))

    def iteration(carry, xs):
        cache, hidden_NxD, logits_NxV = carry
        token_N, latent_N, keeps_grad_N = xs
        embed_NxD = latent_input(model, layout.feedback, hidden_NxD, logits_NxV)
        embed_NxD = jnp.where(keeps_grad_N[:, None], embed_NxD, jax.lax.stop_gradient(embed_NxD))
        out = model(token_N[:, None], embeds=embed_NxD[:, None], embed_mask=latent_N[:, None], cache=cache)
        return (out.cache, out.hidden[:, -1], out.logits[:, -1]), logits_NxV

    start = (prefill.cache, prefill.hidden[:, -1], prefill.logits[:, -1])
    _, decided_IxNxV = jax.lax.scan(iteration, start, (token_NxI.T, latent_NxI.T, keeps_grad_NxI.T))
    # The iteration that emitted token t of each row (past the end: 0, masked by the caller).
    at_NxT = jnp.zeros((rows, steps), jnp.int32).at[
        jnp.arange(rows)[:, None], jnp.where(emit_NxI, index_NxI, steps)
    ].set(jnp.broadcast_to(jnp.arange(iterations, dtype=jnp.int32), (rows, iterations)), mode="drop")
    decided_NxIxV = jnp.swapaxes(decided_IxNxV, 0, 1)
    return jnp.take_along_axis(decided_NxIxV, at_NxT[:, :, None], axis=1).astype(jnp.float32), decided_NxIxV


def next_token_logits(model, rollouts: Rollouts, *, latent_grad: str = "full") -> jax.Array:
    """float32 [N, T, V]: the model's logits (before any transform) that chose each generated token."""
    layout = rollouts.layout
    prompt_NxP, tokens_NxT = rollouts.prompt_NxP, rollouts.tokens_NxT
    rows, prompt_len = prompt_NxP.shape
    steps = tokens_NxT.shape[1]
    emitted_NxT = rollouts.emitted_NxT
    if layout.policy in ("none", "hrpo"):
        sequence_NxL = jnp.concatenate([prompt_NxP, tokens_NxT], axis=1)
        real_NxL = jnp.concatenate([rollouts.prompt_mask_NxP, emitted_NxT], axis=1)
        attention = None if rollouts.hidden_after_end_NxP is None else _bottleneck_mask(rollouts, emitted_NxT)
        hybrid = {}
        if layout.policy == "hrpo":  # the thinking tokens' inputs are the gated hybrid
            embeds_NxTxD, _ = hybrid_inputs(model, rollouts)
            no_NxP = jnp.zeros(prompt_NxP.shape, bool)
            hybrid = dict(embeds=jnp.concatenate([jnp.zeros((*prompt_NxP.shape, model.cfg.d_model), embeds_NxTxD.dtype),
                                                  embeds_NxTxD], axis=1),
                          embed_mask=jnp.concatenate([no_NxP, rollouts.hybrid_NxT & emitted_NxT], axis=1))
        logits_NxLxV = model(sequence_NxL, padding_mask=real_NxL, attention_mask=attention, **hybrid).logits
        return logits_NxLxV[:, prompt_len - 1 : prompt_len - 1 + steps].astype(jnp.float32)
    if layout.policy == "fixed":
        if rollouts.hidden_after_end_NxP is not None:
            raise NotImplementedError("Coconut rollouts with a bottleneck (hidden_after_end) are not replayable")
        eot_Nx1 = jnp.full((rows, 1), layout.eot_id, tokens_NxT.dtype)
        suffix_NxS = jnp.concatenate([eot_Nx1, tokens_NxT], axis=1)
        suffix_mask_NxS = jnp.concatenate([jnp.ones((rows, 1), bool), emitted_NxT], axis=1)
        out = continuous_thought_forward(
            model, prompt_NxP, rollouts.prompt_mask_NxP, rollouts.thoughts_N, suffix_NxS, suffix_mask_NxS,
            max_latent=layout.latent_steps, latent_grad=latent_grad,
        )
        return out.logits[:, :steps].astype(jnp.float32)
    if layout.policy in LOOP_POLICIES:
        return loop_logits(model, rollouts, latent_grad=latent_grad)
    raise _not_replayable(layout.policy)


def policy_logits(logits_NxTxV: jax.Array, rollouts: Rollouts) -> jax.Array:
    """The logits after the engine's transform: the abstract constraint, position-wise."""
    layout = rollouts.layout
    if layout.abstract is None:
        return logits_NxTxV
    constraint = AbstractConstraint(layout.abstract, layout.abstract_max)
    states = span_states(constraint, rollouts.prompt_NxP, rollouts.tokens_NxT, rollouts.emitted_NxT)
    rows, steps, vocab = logits_NxTxV.shape
    flat = jax.tree.map(lambda x: x.reshape(rows * steps), states)
    return constraint(flat, logits_NxTxV.reshape(rows * steps, vocab)).reshape(rows, steps, vocab)


def replay(model, rollouts: Rollouts, *, latent_grad: str = "full") -> Replayed:
    """log pi and the policy's entropy at each emitted token of `rollouts`, under `model` (module
    docstring). latent_grad: the gradient through the latent slots (latent.nn.recurrence): Coconut's
    thoughts, or each SWITCH / entropy span."""
    if rollouts.layout.policy not in REPLAYABLE_POLICIES:
        raise _not_replayable(rollouts.layout.policy)
    stay_logp_NxI = None
    if rollouts.stayed_NxI is not None:  # the model policy: the drawn latent steps' log(1 - pi(</swi>)) too
        token_logits_NxTxV, decided_NxIxV = loop_replay(model, rollouts, latent_grad=latent_grad)
        end_logp_NxI = jax.nn.log_softmax(decided_NxIxV.astype(jnp.float32), axis=-1)[..., rollouts.layout.swi_end_id]
        stay_logp_NxI = jnp.where(rollouts.stayed_NxI, stay_logprob(end_logp_NxI), 0.0)
    else:
        token_logits_NxTxV = next_token_logits(model, rollouts, latent_grad=latent_grad)
    logits_NxTxV = policy_logits(token_logits_NxTxV, rollouts)
    logp_NxTxV = jax.nn.log_softmax(logits_NxTxV, axis=-1)
    emitted_NxT = rollouts.emitted_NxT
    logp_NxT = jnp.take_along_axis(logp_NxTxV, rollouts.tokens_NxT[..., None], axis=-1)[..., 0]
    # Disallowed tokens have log pi = -inf and pi = 0: they add 0 (not nan) to the entropy and its gradient.
    allowed_NxTxV = jnp.isfinite(logits_NxTxV)
    plogp_NxTxV = jnp.exp(logp_NxTxV) * jnp.where(allowed_NxTxV, logp_NxTxV, 0.0)
    entropy_NxT = -jnp.sum(plogp_NxTxV, axis=-1)
    return Replayed(logprobs=jnp.where(emitted_NxT, logp_NxT, 0.0), entropy=jnp.where(emitted_NxT, entropy_NxT, 0.0),
                    stay_logprobs=stay_logp_NxI)


def replay_logprobs(model, rollouts: Rollouts, *, latent_grad: str = "full") -> jax.Array:
    """float32 [N, T]: log pi of each emitted token under `model` (0 after the end): `replay`'s."""
    return replay(model, rollouts, latent_grad=latent_grad).logprobs
