"""Continuous-thought recurrence (Coconut) inside one jitted forward.

A latent batch is `prefix | K latent slots | suffix`:

    prefix  [B, P]  left-padded: question, "\\n", <bot>        (the last column is <bot> for all)
    latents K slots: slot i of example b is real when i < n_latent[b]; the rest are masked
    suffix  [B, S]  right-padded: <eot>, the remaining steps, "### answer", <eos>

Slot i's input embedding is `model.feed_back(h, logits)` of the position before it (the last
prefix position for slot 0). The forward is a prefix pass that fills a KV cache, a `lax.scan`
over the K slots (one position each, extending the cache), and one suffix pass over the cache:
K + 2 model calls of one trace each, against Coconut's K + 1 full-sequence passes.

Masked slots write keys nobody sees and do not advance an example's position ids, so examples
with fewer latents line up with the rest of the batch without changing their numbers.

`latent_grad` chooses how far gradients run back through the fed-back vectors:
  "full"         through the whole chain (Coconut);
  "truncate(n)"  only through the last n feedbacks of each example;
  "detach"       never (each fed-back vector is a constant; its slot still trains the
                 layers that read it).

For the analyses that look inside (latent.eval): `slot_inputs` / `replace_slots` put given
vectors in place of chosen slots' fed-back inputs (causal interventions: zeros, noise, another
example's thought), `return_residuals` returns the residual stream after every block at every
position, and `residual_add` steers it (both as the Transformer's own arguments).
"""

from __future__ import annotations

import re
from typing import NamedTuple

import jax
import jax.numpy as jnp

from latent.nn.kv_cache import KVCache

_TRUNCATE = re.compile(r"^truncate\((\d+)\)$")


def parse_latent_grad(spec: str) -> int | None:
    """How many trailing feedbacks keep their gradient: None for all ("full"), 0 for "detach"."""
    if spec == "full":
        return None
    if spec == "detach":
        return 0
    match = _TRUNCATE.match(spec)
    if match:
        return int(match.group(1))
    raise ValueError(f"latent_grad must be 'full', 'detach' or 'truncate(n)' with n >= 0; got {spec!r}")


class LatentOutput(NamedTuple):
    logits: jax.Array  # [B, S, V] of the suffix: position j predicts suffix token j + 1
    hidden: jax.Array  # [B, S, D] of the suffix, post-final-norm
    prefix_logits: jax.Array  # [B, P, V]
    latent_logits: jax.Array  # [B, K, V]: slot i's next-token logits (the last real one predicts suffix[0])
    latent_hidden: jax.Array  # [B, K, D]: post-final-norm hidden state at each slot
    cache: KVCache
    slot_inputs: jax.Array | None = None  # [B, K, D]: the input embedding each slot received
    # The residual stream after each block (return_residuals), [L, B, length, D] each:
    prefix_residuals: jax.Array | None = None
    latent_residuals: jax.Array | None = None  # [L, B, K, D]
    suffix_residuals: jax.Array | None = None

    @property
    def slot_input_logits(self) -> jax.Array:
        """[B, K, V]: the logits of the position whose hidden state is slot j's input (<bot>, the
        last prefix column, for slot 0; slot j - 1 after it). The last slot's own output is
        neither fed back nor decoded."""
        return jnp.concatenate([self.prefix_logits[:, -1:], self.latent_logits[:, :-1]], axis=1)


def continuous_thought_forward(
    model,
    prefix_BxP: jax.Array,
    prefix_mask_BxP: jax.Array,
    n_latent_B: jax.Array,
    suffix_BxS: jax.Array,
    suffix_mask_BxS: jax.Array,
    *,
    max_latent: int,
    latent_grad: str = "full",
    cache_len: int | None = None,
    cache_dtype=None,
    slot_inputs: jax.Array | None = None,
    replace_slots: jax.Array | None = None,
    residual_add: jax.Array | None = None,
    return_residuals: bool = False,
) -> LatentOutput:
    """Runs `prefix | latents | suffix` with recurrence; `max_latent` (K) is static.

    cache_len: KV-cache slots to allocate (default P + K + S; larger leaves room to decode on).
    cache_dtype: the cache's storage dtype (default the model's compute dtype; decoding may store
      bfloat16, latent.infer.engine).
    slot_inputs: float [B, K, D] and replace_slots: bool [B, K], together: slot i of example b
      receives slot_inputs[b, i] instead of its fed-back vector where replace_slots[b, i]; the
      recurrence then goes on from what that slot computes.
    residual_add, return_residuals: the Transformer's hooks, applied to every call (prefix, each
      slot, suffix); the residuals come back per part.
    """
    B, P = prefix_BxP.shape
    S = suffix_BxS.shape[1]
    K = int(max_latent)
    keep_last = parse_latent_grad(latent_grad)
    replace_BxK = _check_replacement(slot_inputs, replace_slots, (B, K, model.cfg.d_model))
    hooks = dict(residual_add=residual_add, return_residuals=return_residuals)
    cache = KVCache.init(model.cfg, B, cache_len or P + K + S, dtype=cache_dtype)
    prefix = model(prefix_BxP, padding_mask=prefix_mask_BxP, cache=cache, **hooks)
    hidden_BxD, logits_BxV = prefix.hidden[:, -1], prefix.logits[:, -1]

    def latent_step(carry, i):
        cache, hidden_BxD, logits_BxV = carry
        embed_BxD = model.feed_back(hidden_BxD, logits_BxV)
        if keep_last is not None:  # feedbacks before the example's last `keep_last` are constants
            keeps_grad_B = i >= n_latent_B - keep_last
            embed_BxD = jnp.where(keeps_grad_B[:, None], embed_BxD, jax.lax.stop_gradient(embed_BxD))
        if replace_BxK is not None:
            embed_BxD = jnp.where(replace_BxK[:, i, None], slot_inputs[:, i].astype(embed_BxD.dtype), embed_BxD)
        active_B = i < n_latent_B
        out = model(embeds=embed_BxD[:, None], padding_mask=active_B[:, None], cache=cache, **hooks)
        # An example past its last latent keeps the state it had (its slots are masked anyway).
        hidden_BxD = jnp.where(active_B[:, None], out.hidden[:, 0], hidden_BxD)
        logits_BxV = jnp.where(active_B[:, None], out.logits[:, 0], logits_BxV)
        residuals_LxBxD = out.residuals[:, :, 0] if return_residuals else None
        return (out.cache, hidden_BxD, logits_BxV), (out.hidden[:, 0], out.logits[:, 0], embed_BxD, residuals_LxBxD)

    (cache, _, _), (latent_hidden_KxBxD, latent_logits_KxBxV, inputs_KxBxD, residuals_KxLxBxD) = jax.lax.scan(
        latent_step, (prefix.cache, hidden_BxD, logits_BxV), jnp.arange(K)
    )
    suffix = model(suffix_BxS, padding_mask=suffix_mask_BxS, cache=cache, **hooks)
    return LatentOutput(
        logits=suffix.logits,
        hidden=suffix.hidden,
        prefix_logits=prefix.logits,
        latent_logits=jnp.swapaxes(latent_logits_KxBxV, 0, 1),
        latent_hidden=jnp.swapaxes(latent_hidden_KxBxD, 0, 1),
        cache=suffix.cache,
        slot_inputs=jnp.swapaxes(inputs_KxBxD, 0, 1),
        prefix_residuals=prefix.residuals,
        latent_residuals=None if residuals_KxLxBxD is None else jnp.transpose(residuals_KxLxBxD, (1, 2, 0, 3)),
        suffix_residuals=suffix.residuals,
    )


def _check_replacement(slot_inputs, replace_slots, shape):
    """replace_slots as bool [B, K], after checking both are given with their shapes; None if neither."""
    if slot_inputs is None and replace_slots is None:
        return None
    if slot_inputs is None or replace_slots is None:
        raise ValueError("pass slot_inputs [batch, K, d_model] and replace_slots bool [batch, K] together")
    if tuple(slot_inputs.shape) != shape:
        raise ValueError(f"slot_inputs must have shape {list(shape)} [batch, K, d_model]; got {list(slot_inputs.shape)}")
    if tuple(replace_slots.shape) != shape[:2]:
        raise ValueError(f"replace_slots must have shape {list(shape[:2])} [batch, K]; got {list(replace_slots.shape)}")
    return jnp.asarray(replace_slots).astype(bool)


def naive_continuous_thought_logits(
    model,
    prefix_BxP,
    prefix_mask_BxP,
    n_latent_B,
    suffix_BxS,
    suffix_mask_BxS,
    *,
    max_latent: int,
    latent_grad: str = "full",
) -> jax.Array:
    """The reference: Coconut's recipe of one full-sequence pass per latent, no cache.

    Builds the whole `prefix | K slots | suffix` sequence, fills slot i from a full forward over
    the sequence as it stands, then runs a last full pass. Returns the logits of the whole
    sequence [B, P + K + S, V].
    Slow by design (K + 1 passes over everything); used by tests to pin the fast path down.
    """
    B, P = prefix_BxP.shape
    K = int(max_latent)
    keep_last = parse_latent_grad(latent_grad)
    slots_K = jnp.arange(K)
    active_BxK = slots_K[None, :] < n_latent_B[:, None]
    tokens_BxT = jnp.concatenate([prefix_BxP, jnp.zeros((B, K), prefix_BxP.dtype), suffix_BxS], axis=1)
    mask_BxT = jnp.concatenate([prefix_mask_BxP, active_BxK, suffix_mask_BxS], axis=1)
    embed_mask_BxT = jnp.zeros(tokens_BxT.shape, bool).at[:, P : P + K].set(True)
    embeds_BxTxD = jnp.zeros((*tokens_BxT.shape, model.cfg.d_model), jnp.dtype(model.cfg.dtype))
    # The position whose hidden state feeds slot i: the last real position before it.
    for i in range(K):
        out = model(tokens_BxT, embeds=embeds_BxTxD, embed_mask=embed_mask_BxT, padding_mask=mask_BxT)
        last_real_B = jnp.max(jnp.where(mask_BxT[:, : P + i], jnp.arange(P + i)[None, :], -1), axis=1)
        take = lambda x: jnp.take_along_axis(x, last_real_B[:, None, None], axis=1)[:, 0]  # noqa: B023 (used in this iteration)
        embed_BxD = model.feed_back(take(out.hidden), take(out.logits))
        if keep_last is not None:
            keeps_grad_B = i >= n_latent_B - keep_last
            embed_BxD = jnp.where(keeps_grad_B[:, None], embed_BxD, jax.lax.stop_gradient(embed_BxD))
        embeds_BxTxD = embeds_BxTxD.at[:, P + i].set(embed_BxD)
    out = model(tokens_BxT, embeds=embeds_BxTxD, embed_mask=embed_mask_BxT, padding_mask=mask_BxT)
    return out.logits  # [B, P + K + S, V]; the suffix's are [:, P + K:]
