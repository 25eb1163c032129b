"""Batched generation with latent mode, in one jitted `lax.while_loop` that carries the KV cache.

Prompts are left-padded and prefilled; then every loop iteration advances each example by one
position, in the mode its own state machine is in:

  text    sample a token from the logits, emit it, feed its embedding;
  latent  emit nothing, feed `model.feed_back(hidden, logits)` of the previous position;
  hybrid  (HRPO, policy hrpo) sample a token x_t, emit it, feed the gated hybrid of E[x_t] and
          h = p^T E / |p| (p = softmax(logits / model.feedback_temperature), the logits x_t was
          drawn from): latent.nn.feedback.HRPOGate.hybrid.

One iteration (`advance`), on the typed loop state (latent.infer.state.DecodeState):

  1. logits transform: constrained abstract decoding (latent.infer.constrained), when `abstract`
     (an AbstractVocab) is given: inside a span only abstract tokens and `<endabstract>`, the end
     forced after `abstract_max` tokens;
  2. sampling (latent.infer.sampling): greedy at temperature 0, else temperature, top-k, top-p,
     each example with its own key;
  3. the switching policy's step function (latent.infer.policies: none, fixed, model, entropy,
     hrpo, or one registered by a fork) decides, per example, to emit a token or take a latent
     step (and, under hrpo, whether the emitted token is fed as HRPO's hybrid);
  4. bookkeeping (lengths, spans, log-probs, limits) and one model call that feeds every example.

Log-probs, per emitted token (0 after the end):
  logprobs         log pi(token): softmax of the model's logits at temperature 1 after the
                   logits transform, i.e. renormalised over the allowed set inside an abstract
                   span (a forced end: 0). Temperature, top-k and top-p are left out: this is the
                   policy an RL trainer's teacher-forced replay recomputes (rho = 1 at the first
                   inner step).
  sample_logprobs  log q(token) under the distribution the token was actually drawn from: the
                   transformed logits divided by the temperature, cut by top-k and top-p and
                   renormalised; 0 for greedy decoding and for a token a policy or the
                   constraint forced.
  forced           True where the token was not drawn by the sampler but forced: by the
                   switching policy (the model policy's </swi>, `Decision.forced_B`) or by the
                   constraint (<endabstract> once a span holds `abstract_max` tokens). RL's policy
                   terms leave these out. Neither log-prob marks them: a forced end's is 0, but so
                   may be a drawn token's whose probability rounds to 1, and the model policy's
                   forced </swi> keeps log pi(</swi>) of the latent position at the budget.
  stayed, stay_logprobs  the model policy's drawn latent steps: where the span could have closed
                   (</swi> drawn) and went on, with log(1 - pi(</swi>)) there (RL's policy terms).

Randomness is per example: row r's key is fold_in(fold_in(rng, example_ids_B[r]), g), g the
sample's index in its group, and iteration t draws with fold_in(that key, t). An example's
samples therefore do not depend on which other examples share its batch, nor on the batch size.

Groups (RL rollouts): with `group_size` G each prompt is decoded G times, each copy with its own
key. Outputs have B*G rows, prompt-major: row b*G + g is sample g of prompt b, so
`x.reshape(B, G, ...)` groups them.

Limits. An example stops at EOS; after `max_new_tokens` emitted tokens (latent steps do not count
against that budget, but an example takes at most `max_new_tokens + max_latent_total` loop
iterations); or, with `max_total_tokens` > 0, once its sequence fills that many positions: real
prompt tokens, Coconut's prefill thoughts and <eot>, emitted tokens and latent steps (a prompt
already that long emits nothing). `truncated` marks every example that stopped at a limit
before emitting EOS.

The interleaving (`latent`, [B, I] bool, I = the loop's most iterations): True where loop
iteration i of a row took a latent step. A row's first `lengths + (latent steps in the loop)`
iterations are active and the rest idle (done, or the loop ended), so its active iterations
that are not latent emit its tokens in order: [prompt; one position per active iteration] is the
exact sequence the row was decoded as, which an RL replay (latent.methods.rl.replay) rebuilds.
Coconut's prefill thoughts are not loop iterations (all False).

HRPO's record (policy hrpo; None under the others): `hybrid` [B, N] marks the emitted tokens that
were fed as the hybrid (the thinking span, EOS left out) and `hidden_part` [B, N, D] holds each
one's h (zeros elsewhere), which the RL replay feeds back as a constant.

For Abstract-CoT's bottleneck, `generate(..., hidden_after_end_BxP)` marks prompt positions (the
verbal chain) that each example stops attending to from the moment it emits `<endabstract>`: the
answer side then reads the chain only through the span.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from latent.config import check_positions_fit
from latent.errors import ConfigError
from latent.infer.constrained import AbstractConstraint
from latent.infer.policies import PolicyConfig, entropy, get_policy
from latent.infer.sampling import check_sampling, example_keys, sample_per_example, step_keys
from latent.infer.state import LATENT, DecodeState
from latent.nn.feedback import soft_embedding


class Generation(NamedTuple):
    """What `generate` returns; B rows = prompts x group_size, prompt-major (row b*G + g)."""

    tokens: jax.Array  # [B, N] int32 emitted tokens, pad after the end
    lengths: jax.Array  # [B] int32 emitted tokens up to and including EOS
    latent_steps: jax.Array  # [B] int32 continuous thoughts taken (fixed: the prefill's thoughts too)
    switches: jax.Array  # [B] int32 text<->latent mode changes before the example ended
    logprobs: jax.Array  # [B, N] float32 log pi(token) of each emitted token (0 after the end)
    abstract_tokens: jax.Array  # [B] int32 tokens emitted inside abstract spans (delimiters excluded)
    sample_logprobs: jax.Array  # [B, N] float32 log q(token) under the distribution drawn from
    truncated: jax.Array  # [B] bool stopped by a length limit before emitting EOS
    forced: jax.Array  # [B, N] bool the emitted token was forced (policy or constraint), not drawn
    latent: jax.Array  # [B, I] bool loop iteration i took a latent step (I = the most loop iterations)
    # [B, I] bool: iteration i's latent step was drawn: the span could have closed (the sampler
    # drawing </swi>) and went on (the model policy; False elsewhere); its log pi is stay_logprobs
    stayed: jax.Array
    stay_logprobs: jax.Array  # [B, I] float32 log(1 - pi(</swi>)) where stayed, 0 elsewhere
    # HRPO (policy hrpo), else None. hidden_part costs B * N * D float32 (64 rows x 512 tokens x
    # d_model 2048: 268 MB), carried with the rollouts (RL fetches them to the host) to the update.
    hybrid: jax.Array | None = None  # [B, N] bool emitted token t was fed as the gated hybrid
    hidden_part: jax.Array | None = None  # [B, N, D] float32 that hybrid's h = p^T E / |p| (0 elsewhere)


def emitted_ids(tokens_N, length: int, eos_id: int) -> list[int]:
    """One generation's emitted token ids (its first `length`), EOS left out: what is decoded to text."""
    return [int(t) for t in tokens_N[:length] if t != eos_id]


def stay_logprob(end_logp_B: jax.Array) -> jax.Array:
    """log(1 - pi(</swi>)) from log pi(</swi>): the log-probability of not drawing it. Kept finite
    where pi(</swi>) rounds to 1 (the replay computes it the same way)."""
    return jnp.log1p(-jnp.minimum(jnp.exp(end_logp_B), 1.0 - 1e-7))


FEEDBACKS = ("model", "soft")
CACHE_DTYPES = ("auto", "float32", "bfloat16")


def resolve_cache_dtype(cfg, cache_dtype: str) -> jnp.dtype:
    """The KV cache's storage dtype: "auto" is the model's compute dtype (what it always was)."""
    if cache_dtype not in CACHE_DTYPES:
        raise ValueError(f"cache_dtype {cache_dtype!r} is not one of {CACHE_DTYPES}")
    return jnp.dtype(cfg.dtype if cache_dtype == "auto" else cache_dtype)


def latent_input(model, feedback: str, hidden_BxD: jax.Array, logits_BxV: jax.Array) -> jax.Array:
    """What a latent step receives: the model's own rule (`model.feedback`, what a latent run was
    trained with), or "soft", p^T E (SwiReasoning / Soft Thinking), for a model that never
    trained a feedback: a text model's raw hidden state is not an input embedding."""
    if feedback == "soft":
        soft_BxD = soft_embedding(logits_BxV, model.embed[...], model.cfg.feedback_temperature)
        return soft_BxD.astype(jnp.dtype(model.cfg.dtype))
    return model.feed_back(hidden_BxD, logits_BxV)


def hybrid_input(model, token_B: jax.Array, logits_BxV: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(input embedding [B, D] in model.cfg.dtype, h float32 [B, D]): HRPO's gated hybrid of the
    sampled `token_B` and h = p^T E / |p| of the `logits_BxV` it was drawn from."""
    gate, embed_VxD = model.feedback, model.embed[...]
    hidden_part_BxD = gate.hidden_part(logits_BxV, embed_VxD)
    mixed_BxD, _ = gate.hybrid(token_B, hidden_part_BxD, embed_VxD)
    return mixed_BxD.astype(jnp.dtype(model.cfg.dtype)), hidden_part_BxD


def check_hybrid_feedback(cfg, policy: str) -> None:
    """A policy that feeds HRPO's hybrid needs the model's gate (model.feedback=hrpo): ConfigError."""
    if cfg.feedback != "hrpo":
        raise ConfigError(f"policy {policy!r} feeds HRPO's gated hybrid: it needs model.feedback='hrpo' "
                         f"(this model has {cfg.feedback!r})")


@functools.lru_cache(maxsize=32)
def make_generate(
    graphdef,
    cfg,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    temperature: float,
    top_p: float,
    *,
    top_k: int = 0,
    group_size: int = 1,
    max_total_tokens: int = 0,
    policy: str = "none",
    latent_steps: int = 0,
    latent_budget: int = 0,
    max_latent_total: int = 0,
    max_switches: int = 0,
    eot_id: int | None = None,
    swi_id: int | None = None,
    swi_end_id: int | None = None,
    abstract=None,
    abstract_max: int = 0,
    feedback: str = "model",
    answer_id: int | None = None,
    cache_dtype: str = "auto",
):
    """A jitted `generate(params, prompt_BxP, prompt_mask_BxP, rng, hidden_after_end_BxP=None,
    latent_steps_B=None, example_ids_B=None) -> Generation`.

    latent_steps_B: int [B], policy fixed only: each example's thoughts (at most `latent_steps`,
    the compiled slot count), as Coconut's curriculum gives an example with fewer steps than the
    stage fewer slots once every step is latent. example_ids_B: int [B] naming each prompt for
    its PRNG key (default 0..B-1); give stable ids (e.g. dataset indices) for samples that do
    not depend on batching. With group_size G the outputs have B*G rows (module docstring).

    Sampling: temperature 0 is greedy; top_k 0 and top_p 1 are off. max_total_tokens 0: no cap;
    with learned positions it may not pass model.max_seq_len (ConfigError, a ValueError).
    Compiles once per prompt-length bucket. See the module docstring for the loop, limits and
    log-probs, latent.infer.policies for the policies (`policy`, and the knobs of PolicyConfig),
    latent.infer.constrained for `abstract` (an AbstractVocab) and `abstract_max` (m_max).
    feedback: what the switching policies (model, entropy) feed a latent step (`latent_input`).
    answer_id: policy hrpo, the answer marker that ends the thinking span.
    cache_dtype: the KV cache's storage dtype ("auto": the model's compute dtype, cfg.dtype;
    "bfloat16" halves the bytes every decode step reads; attention upcasts the keys and values
    to the compute dtype).
    """
    if feedback not in FEEDBACKS:
        raise ValueError(f"feedback {feedback!r} is not one of {FEEDBACKS}")
    check_sampling(temperature, top_p, top_k)
    cache_dtype = resolve_cache_dtype(cfg, cache_dtype)
    if not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size (samples per prompt) must be an int >= 1; got {group_size!r}")
    if not isinstance(max_total_tokens, int) or max_total_tokens < 0:
        raise ValueError(f"max_total_tokens must be an int >= 0 (0: no cap); got {max_total_tokens!r}")
    if max_total_tokens:  # a learned position table has no rows past model.max_seq_len
        check_positions_fit(cfg, {"max_total_tokens": max_total_tokens}, "the generation cap")
    policy_cfg = PolicyConfig(latent_steps=latent_steps, latent_budget=latent_budget, max_latent_total=max_latent_total,
                              max_switches=max_switches, eot_id=eot_id, swi_id=swi_id, swi_end_id=swi_end_id,
                              answer_id=answer_id)
    switching = get_policy(policy, policy_cfg)
    if switching.hybrid:
        check_hybrid_feedback(cfg, policy)
    if abstract is not None and abstract_max <= 0:
        raise ValueError("constrained abstract decoding needs abstract_max > 0 (the longest abstract span)")
    constraint = AbstractConstraint(abstract, abstract_max) if abstract is not None else None
    max_iterations = max_new_tokens + (max_latent_total if switching.latent_in_loop else 0)
    if max_total_tokens:  # every iteration fills a position: a capped example stops sooner
        max_iterations = min(max_iterations, max_total_tokens)

    @jax.jit
    def generate(params, prompt_BxP, prompt_mask_BxP, rng, hidden_after_end_BxP=None, latent_steps_B=None,
                 example_ids_B=None) -> Generation:
        if hidden_after_end_BxP is not None and abstract is None:
            raise ValueError("hidden_after_end_BxP needs constrained abstract decoding (abstract=...)")
        model = nnx.merge(graphdef, params)
        prompts = prompt_BxP.shape[0]
        if example_ids_B is None:
            example_ids_B = jnp.arange(prompts)
        sample_index_B = jnp.tile(jnp.arange(group_size), prompts)
        if group_size > 1:  # prompt-major: row b*G + g is sample g of prompt b
            prompt_BxP, prompt_mask_BxP, example_ids_B, hidden_after_end_BxP, latent_steps_B = (
                None if x is None else jnp.repeat(jnp.asarray(x), group_size, axis=0)
                for x in (prompt_BxP, prompt_mask_BxP, example_ids_B, hidden_after_end_BxP, latent_steps_B)
            )
        B, P = prompt_BxP.shape
        prefill = switching.prefill(model, cfg, prompt_BxP, prompt_mask_BxP, latent_steps_B, policy_cfg,
                                    loop_slots=max_iterations, cache_dtype=cache_dtype)
        if hidden_after_end_BxP is not None:  # chain positions among the cache slots, built once
            hide_BxS = jnp.zeros(prefill.cache.key_mask.shape, bool).at[:, :P].set(hidden_after_end_BxP)

        zeros_B = jnp.zeros((B,), jnp.int32)
        no_B = jnp.zeros((B,), bool)
        state = DecodeState(
            iteration=jnp.zeros((), jnp.int32), logits_BxV=prefill.logits_BxV, hidden_BxD=prefill.hidden_BxD,
            cache=prefill.cache, keys_B=example_keys(rng, jnp.asarray(example_ids_B, jnp.int32), sample_index_B),
            mode_B=zeros_B, span_B=zeros_B, switches_B=zeros_B, latent_total_B=zeros_B,
            ref_entropy_B=entropy(prefill.logits_BxV),
            tokens_BxN=jnp.full((B, max_new_tokens), pad_id, jnp.int32),
            logprobs_BxN=jnp.zeros((B, max_new_tokens), jnp.float32),
            sample_logprobs_BxN=jnp.zeros((B, max_new_tokens), jnp.float32),
            forced_BxN=jnp.zeros((B, max_new_tokens), bool),
            lengths_B=zeros_B, positions_B=prefill.positions_B,
            done_B=prefill.positions_B >= max_total_tokens if max_total_tokens else no_B,
            in_abstract_B=constraint.opened_by_prompt(prompt_BxP) if constraint else no_B,
            abstract_count_B=zeros_B, abstract_total_B=zeros_B,
            latent_BxI=jnp.zeros((B, max_iterations), bool), stayed_BxI=jnp.zeros((B, max_iterations), bool),
            stay_logprobs_BxI=jnp.zeros((B, max_iterations), jnp.float32),
            hybrid_BxN=jnp.zeros((B, max_new_tokens), bool) if switching.hybrid else None,
            hidden_part_BxNxD=jnp.zeros((B, max_new_tokens, cfg.d_model), jnp.float32) if switching.hybrid else None,
        )

        def keep_going(s: DecodeState):
            return (s.iteration < max_iterations) & ~jnp.all(s.done_B)

        def advance(s: DecodeState) -> DecodeState:
            logits_BxV = constraint(s, s.logits_BxV) if constraint else s.logits_BxV
            sampled_B, sample_logp_B = sample_per_example(
                logits_BxV, step_keys(s.keys_B, s.iteration), temperature, top_p, top_k
            )
            decision = switching.step(s, sampled_B, policy_cfg)
            active_B = ~s.done_B
            latent_B = decision.latent_B & active_B  # this iteration feeds a latent vector
            emit_B = ~decision.latent_B & active_B
            token_B = jnp.where(emit_B, decision.token_B, pad_id)

            write_at_B = jnp.where(emit_B, s.lengths_B, max_new_tokens)  # out of range: dropped
            rows_B = jnp.arange(B)
            tokens_BxN = s.tokens_BxN.at[rows_B, write_at_B].set(token_B, mode="drop")
            logp_BxV = jax.nn.log_softmax(logits_BxV.astype(jnp.float32), axis=-1)
            logp_B = jnp.take_along_axis(logp_BxV, token_B[:, None], axis=1)[:, 0]
            logprobs_BxN = s.logprobs_BxN.at[rows_B, write_at_B].set(logp_B, mode="drop")
            sample_logp_B = jnp.where(decision.forced_B, 0.0, sample_logp_B)
            sample_logprobs_BxN = s.sample_logprobs_BxN.at[rows_B, write_at_B].set(sample_logp_B, mode="drop")
            forced_B = decision.forced_B | (constraint.forced_end(s) if constraint else False)
            forced_BxN = s.forced_BxN.at[rows_B, write_at_B].set(forced_B, mode="drop")
            spans = constraint.track(s, token_B, emit_B) if constraint else {}
            stayed = {}
            if decision.stayed_B is not None:  # a drawn latent step: log(1 - pi(</swi>)), the span went on
                stayed_B = latent_B & decision.stayed_B
                stay_logp_B = stay_logprob(logp_BxV[:, policy_cfg.swi_end_id])
                stayed = dict(stayed_BxI=s.stayed_BxI.at[:, s.iteration].set(stayed_B),
                              stay_logprobs_BxI=s.stay_logprobs_BxI.at[:, s.iteration].set(
                                  jnp.where(stayed_B, stay_logp_B, 0.0)))

            lengths_B = s.lengths_B + emit_B
            positions_B = s.positions_B + active_B  # a token or a latent vector: one position
            done_B = s.done_B | (emit_B & (token_B == eos_id)) | (lengths_B >= max_new_tokens)
            if max_total_tokens:
                done_B = done_B | (positions_B >= max_total_tokens)

            hybrid = {}
            if switching.hybrid:  # HRPO: where the emitted token is fed as the hybrid, and its h
                hybrid_B = decision.hybrid_B & emit_B & (token_B != eos_id)
                hybrid_embeds_BxD, hidden_part_BxD = hybrid_input(model, token_B, s.logits_BxV)
                hybrid = dict(
                    hybrid_BxN=s.hybrid_BxN.at[rows_B, write_at_B].set(hybrid_B, mode="drop"),
                    hidden_part_BxNxD=s.hidden_part_BxNxD.at[rows_B, write_at_B].set(
                        jnp.where(hybrid_B[:, None], hidden_part_BxD, 0.0), mode="drop"),
                )

            cache = s.cache
            if hidden_after_end_BxP is not None:  # from the fed <endabstract> on, the chain is hidden
                closed_now_B = emit_B & (token_B == abstract.end_id)
                cache = cache.replace(key_mask=cache.key_mask & ~(hide_BxS & closed_now_B[:, None]))
            if switching.latent_in_loop:
                embeds_Bx1xD = latent_input(model, feedback, s.hidden_BxD, s.logits_BxV)[:, None]
                out = model(token_B[:, None], embeds=embeds_Bx1xD, embed_mask=latent_B[:, None], cache=cache)
            elif switching.hybrid:
                out = model(token_B[:, None], embeds=hybrid_embeds_BxD[:, None], embed_mask=hybrid_B[:, None], cache=cache)
            else:
                out = model(token_B[:, None], cache=cache)
            return s.replace(
                iteration=s.iteration + 1, logits_BxV=out.logits[:, -1], hidden_BxD=out.hidden[:, -1], cache=out.cache,
                mode_B=decision.mode_B, span_B=jnp.where(latent_B, jnp.where(s.mode_B == LATENT, s.span_B + 1, 1), 0),
                switches_B=s.switches_B + (decision.switched_B & active_B),  # a finished example no longer switches
                latent_total_B=s.latent_total_B + latent_B, ref_entropy_B=decision.ref_entropy_B,
                tokens_BxN=tokens_BxN, logprobs_BxN=logprobs_BxN, sample_logprobs_BxN=sample_logprobs_BxN,
                forced_BxN=forced_BxN, latent_BxI=s.latent_BxI.at[:, s.iteration].set(latent_B),
                lengths_B=lengths_B, positions_B=positions_B, done_B=done_B, **spans, **stayed, **hybrid,
            )

        final = jax.lax.while_loop(keep_going, advance, state)
        last_B = jnp.take_along_axis(final.tokens_BxN, jnp.maximum(final.lengths_B - 1, 0)[:, None], axis=1)[:, 0]
        ended_by_eos_B = (final.lengths_B > 0) & (last_B == eos_id)
        return Generation(
            tokens=final.tokens_BxN, lengths=final.lengths_B,
            latent_steps=final.latent_total_B + prefill.thoughts_B, switches=final.switches_B,
            logprobs=final.logprobs_BxN, abstract_tokens=final.abstract_total_B,
            sample_logprobs=final.sample_logprobs_BxN, truncated=~ended_by_eos_B, forced=final.forced_BxN,
            latent=final.latent_BxI, stayed=final.stayed_BxI, stay_logprobs=final.stay_logprobs_BxI,
            hybrid=final.hybrid_BxN, hidden_part=final.hidden_part_BxNxD,
        )

    return generate
