"""Batched generation with latent mode, in one jitted `lax.while_loop` that carries the KV cache.

Prompts are left-padded and prefilled; then every loop iteration advances each example by one
position, in the mode its own state machine is in:

  text    sample a token from the logits, emit it, feed its embedding;
  latent  emit nothing, feed `model.feed_back(hidden, logits)` of the previous position.

Policies (`policy`) decide when an example is in latent mode:

  none     text only.
  fixed    Coconut: the prompt ends with <bot>; `latent_steps` thoughts follow (run as part of
           the prefill), then <eot> is fed and decoding is text only. `generate(...,
           latent_steps_B=...)` gives each example its own count (at most `latent_steps`, the
           compiled slot count), as Coconut's curriculum gives an example with fewer steps than
           the stage fewer slots once every step is latent.
  model    SWITCH: the model enters latent mode by emitting <swi> and leaves it by predicting
           </swi> (greedy argmax at a latent position, so a span has at least one step) or on
           reaching `latent_budget` steps in the span, when </swi> is emitted for it.
  entropy  training-free (SwiReasoning-style): with H_t the entropy of the next-token
           distribution and H_ref its value at the last switch, text mode goes latent when
           H_t > H_ref (confidence falling) and latent mode returns to text when H_t < H_ref
           (confidence recovered) or after `latent_budget` steps; at most `max_switches`
           latent spans per example, then text only. H_ref starts at the first decoding step's H.

Constrained decoding (Abstract-CoT), with any policy, when `abstract` (an AbstractVocab) is
given: inside an abstract span, opened by emitting `<beginabstract>` or by a prompt that ends
with it, the logits are restricted to the abstract tokens plus `<endabstract>`, and
`<endabstract>` is forced once the span holds `abstract_max` tokens; outside a span decoding is
unconstrained. Each emitted token's log-probability is returned under the distribution it was
drawn from at temperature 1, renormalised over the allowed set (the policy pi of RL; a forced
end has log-prob 0). For Abstract-CoT's bottleneck, `generate(..., hidden_after_end_BxP)` marks
prompt positions (the verbal chain) that each example stops attending to from the moment it
emits `<endabstract>`: the answer side then reads the chain only through the span.

Per example the engine counts emitted tokens, abstract tokens and latent steps. An example
stops at EOS or after `max_new_tokens` emitted tokens; latent steps do not count against that
budget, but an example takes at most `max_new_tokens + max_latent_total` loop iterations.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from latent.infer.sampling import sample_tokens
from latent.nn import KVCache
from latent.nn.feedback import soft_embedding
from latent.nn.recurrence import continuous_thought_forward

POLICIES = ("none", "fixed", "model", "entropy")
TEXT, LATENT = 0, 1


class Generation(NamedTuple):
    tokens: jax.Array  # [B, N] emitted tokens, pad after the end
    lengths: jax.Array  # [B] emitted tokens up to and including EOS
    latent_steps: jax.Array  # [B] continuous thoughts taken (fixed: the prefill's thoughts too)
    switches: jax.Array  # [B] text<->latent mode changes before the example ended
    logprobs: jax.Array  # [B, N] float32 log pi(token) of each emitted token (0 after the end)
    abstract_tokens: jax.Array  # [B] tokens emitted inside abstract spans (delimiters excluded)


FEEDBACKS = ("model", "soft")


def latent_input(model, feedback: str, hidden_BxD: jax.Array, logits_BxV: jax.Array) -> jax.Array:
    """What a latent step receives: the model's own rule (`model.feedback`, what a latent run was
    trained with), or "soft", p^T E (SwiReasoning / Soft Thinking), for a model that never
    trained a feedback: a text model's raw hidden state is not an input embedding."""
    if feedback == "soft":
        soft_BxD = soft_embedding(logits_BxV, model.embed[...], model.cfg.feedback_temperature)
        return soft_BxD.astype(jnp.dtype(model.cfg.dtype))
    return model.feed_back(hidden_BxD, logits_BxV)


def entropy(logits_BxV: jax.Array) -> jax.Array:
    logp_BxV = jax.nn.log_softmax(logits_BxV.astype(jnp.float32), axis=-1)
    return -jnp.sum(jnp.exp(logp_BxV) * logp_BxV, axis=-1)


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
):
    """A jitted `generate(params, prompt_BxP, prompt_mask_BxP, rng, hidden_after_end_BxP=None,
    latent_steps_B=None) -> Generation` (latent_steps_B: int [B], policy fixed only).

    Compiles once per prompt-length bucket. See the module docstring for the policies and for
    constrained decoding (`abstract`: a latent.models.vocab.AbstractVocab; `abstract_max`: m_max).
    feedback: what the switching policies (model, entropy) feed a latent step (`latent_input`).
    """
    if feedback not in FEEDBACKS:
        raise ValueError(f"feedback {feedback!r} is not one of {FEEDBACKS}")
    if policy not in POLICIES:
        raise ValueError(f"switch policy {policy!r} is not one of {POLICIES}")
    if policy == "fixed" and (latent_steps < 0 or eot_id is None):
        raise ValueError("policy 'fixed' needs latent_steps >= 0 and eot_id (the <eot> token)")
    if policy == "model" and (swi_id is None or swi_end_id is None or latent_budget <= 0):
        raise ValueError("policy 'model' needs swi_id, swi_end_id and latent_budget > 0")
    if policy == "entropy" and latent_budget <= 0:
        raise ValueError("policy 'entropy' needs latent_budget > 0")
    if abstract is not None and abstract_max <= 0:
        raise ValueError("constrained abstract decoding needs abstract_max > 0 (the longest abstract span)")
    switching = policy in ("model", "entropy")
    max_latent_total = max_latent_total if switching else 0
    max_iterations = max_new_tokens + max_latent_total

    @jax.jit
    def generate(params, prompt_BxP, prompt_mask_BxP, rng, hidden_after_end_BxP=None, latent_steps_B=None) -> Generation:
        if hidden_after_end_BxP is not None and abstract is None:
            raise ValueError("hidden_after_end_BxP needs constrained abstract decoding (abstract=...)")
        model = nnx.merge(graphdef, params)
        B, P = prompt_BxP.shape
        if latent_steps_B is not None and policy != "fixed":
            raise ValueError("latent_steps_B (thoughts per example) needs policy 'fixed'")
        prefill_latents = latent_steps if policy == "fixed" else 0
        if latent_steps_B is None:
            latent_steps_B = jnp.full((B,), prefill_latents, jnp.int32)
        latent_steps_B = jnp.minimum(jnp.asarray(latent_steps_B, jnp.int32), prefill_latents)
        if policy == "fixed":
            prefill = continuous_thought_forward(
                model, prompt_BxP, prompt_mask_BxP, latent_steps_B,
                jnp.full((B, 1), eot_id, jnp.int32), jnp.ones((B, 1), bool),
                max_latent=prefill_latents, cache_len=P + prefill_latents + 1 + max_iterations,
            )
        else:
            cache = KVCache.init(cfg, B, P + max_iterations)
            prefill = model(prompt_BxP, padding_mask=prompt_mask_BxP, cache=cache)
        logits_BxV, hidden_BxD = prefill.logits[:, -1], prefill.hidden[:, -1]
        if hidden_after_end_BxP is not None:  # chain positions among the cache slots, built once
            hide_BxS = jnp.zeros(prefill.cache.key_mask.shape, bool).at[:, :P].set(hidden_after_end_BxP)

        zeros_B = jnp.zeros((B,), jnp.int32)
        state = dict(
            t=jnp.zeros((), jnp.int32), logits=logits_BxV, hidden=hidden_BxD, cache=prefill.cache,
            mode=zeros_B, span=zeros_B, switches=zeros_B, latent_total=zeros_B, lengths=zeros_B,
            done=jnp.zeros((B,), bool), tokens=jnp.full((B, max_new_tokens), pad_id, jnp.int32),
            ref_entropy=entropy(logits_BxV), rng=rng, logprobs=jnp.zeros((B, max_new_tokens), jnp.float32),
            in_abstract=jnp.zeros((B,), bool), abstract_count=zeros_B, abstract_total=zeros_B,
        )
        if abstract is not None:
            allowed_V = jnp.zeros((cfg.vocab_size,), bool).at[jnp.asarray((*abstract.ids, abstract.end_id))].set(True)
            state["in_abstract"] = prompt_BxP[:, -1] == abstract.begin_id  # left padding: last column is real

        def keep_going(s):
            return (s["t"] < max_iterations) & ~jnp.all(s["done"])

        def advance(s):
            rng, step_rng = jax.random.split(s["rng"])
            logits_BxV = s["logits"]
            if abstract is not None:  # inside a span: abstract tokens and the end delimiter only
                in_span_B = s["in_abstract"]
                forced_end_B = in_span_B & (s["abstract_count"] >= abstract_max)
                allowed_BxV = jnp.where(in_span_B[:, None], allowed_V[None], True)
                allowed_BxV = jnp.where(forced_end_B[:, None], jnp.arange(cfg.vocab_size)[None] == abstract.end_id, allowed_BxV)
                logits_BxV = jnp.where(allowed_BxV, logits_BxV, -jnp.inf)
            sampled_B = sample_tokens(logits_BxV, step_rng, temperature, top_p)
            mode_B, span_B, switches_B, ref_B = s["mode"], s["span"], s["switches"], s["ref_entropy"]
            latent_B = jnp.zeros((B,), bool)  # this iteration feeds a latent vector
            token_B = sampled_B
            if policy == "model":
                in_latent = mode_B == LATENT
                out_of_budget = (span_B >= latent_budget) | (s["latent_total"] >= max_latent_total)
                # The <swi> position itself is never trained to predict </swi> (a latent slot follows
                # it), so only a latent position's argmax can close the span: at least one step.
                predicts_end = (jnp.argmax(s["logits"], -1) == swi_end_id) & (span_B > 0)
                leave = in_latent & (predicts_end | out_of_budget)
                latent_B = in_latent & ~leave
                token_B = jnp.where(leave, swi_end_id, sampled_B)
                enter = ~in_latent & (token_B == swi_id) & (s["latent_total"] < max_latent_total)
                new_mode = jnp.where(leave, TEXT, jnp.where(enter, LATENT, mode_B))
                switches_B = switches_B + leave + enter
            elif policy == "entropy":
                h_B = entropy(s["logits"])
                in_latent = mode_B == LATENT
                can_switch = switches_B // 2 < max_switches  # in text mode switches = 2 x spans so far
                go_latent = ~in_latent & can_switch & (h_B > ref_B) & (s["latent_total"] < max_latent_total)
                go_text = in_latent & ((h_B < ref_B) | (span_B >= latent_budget) | (s["latent_total"] >= max_latent_total))
                latent_B = go_latent | (in_latent & ~go_text)
                new_mode = jnp.where(latent_B, LATENT, TEXT)
                switched = go_latent | go_text
                switches_B = switches_B + switched
                ref_B = jnp.where(switched, h_B, ref_B)
            else:
                new_mode = mode_B
            latent_B = latent_B & ~s["done"]
            switches_B = jnp.where(s["done"], s["switches"], switches_B)  # a finished example no longer switches
            emit_B = ~latent_B & ~s["done"]
            token_B = jnp.where(emit_B, token_B, pad_id)

            write_at_B = jnp.where(emit_B, s["lengths"], max_new_tokens)  # out of range: dropped
            tokens = s["tokens"].at[jnp.arange(B), write_at_B].set(token_B, mode="drop")
            logp_BxV = jax.nn.log_softmax(logits_BxV.astype(jnp.float32), axis=-1)
            logp_B = jnp.take_along_axis(logp_BxV, token_B[:, None], axis=1)[:, 0]
            logprobs = s["logprobs"].at[jnp.arange(B), write_at_B].set(logp_B, mode="drop")
            in_abstract_B, abstract_count_B = s["in_abstract"], s["abstract_count"]
            counted_B = jnp.zeros((B,), bool)  # an abstract token emitted inside a span
            if abstract is not None:
                opened_B = emit_B & (token_B == abstract.begin_id)
                closed_B = emit_B & in_abstract_B & (token_B == abstract.end_id)
                counted_B = emit_B & in_abstract_B & ~closed_B
                abstract_count_B = jnp.where(opened_B, 0, abstract_count_B + counted_B)
                in_abstract_B = (in_abstract_B | opened_B) & ~closed_B
            lengths_B = s["lengths"] + emit_B
            done_B = s["done"] | (emit_B & (token_B == eos_id)) | (lengths_B >= max_new_tokens)

            cache = s["cache"]
            if hidden_after_end_BxP is not None:  # from the fed <endabstract> on, the chain is hidden
                closed_now_B = emit_B & (token_B == abstract.end_id)
                cache = cache.replace(key_mask=cache.key_mask & ~(hide_BxS & closed_now_B[:, None]))
            if switching:
                embeds_Bx1xD = latent_input(model, feedback, s["hidden"], s["logits"])[:, None]
                out = model(token_B[:, None], embeds=embeds_Bx1xD, embed_mask=latent_B[:, None], cache=cache)
            else:
                out = model(token_B[:, None], cache=cache)
            span_B = jnp.where(latent_B, jnp.where(mode_B == LATENT, span_B + 1, 1), 0)
            return dict(
                t=s["t"] + 1, logits=out.logits[:, -1], hidden=out.hidden[:, -1], cache=out.cache,
                mode=new_mode, span=span_B, switches=switches_B, latent_total=s["latent_total"] + latent_B,
                lengths=lengths_B, done=done_B, tokens=tokens, ref_entropy=ref_B, rng=rng, logprobs=logprobs,
                in_abstract=in_abstract_B, abstract_count=abstract_count_B,
                abstract_total=s["abstract_total"] + counted_B,
            )

        final = jax.lax.while_loop(keep_going, advance, state)
        return Generation(
            tokens=final["tokens"], lengths=final["lengths"],
            latent_steps=final["latent_total"] + latent_steps_B, switches=final["switches"],
            logprobs=final["logprobs"], abstract_tokens=final["abstract_total"],
        )

    return generate

