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
) -> LatentOutput:
    """Runs `prefix | latents | suffix` with recurrence; `max_latent` (K) is static.

    cache_len: KV-cache slots to allocate (default P + K + S; larger leaves room to decode on).
    """
    B, P = prefix_BxP.shape
    S = suffix_BxS.shape[1]
    K = int(max_latent)
    keep_last = parse_latent_grad(latent_grad)
    cache = KVCache.init(model.cfg, B, cache_len or P + K + S)
    prefix = model(prefix_BxP, padding_mask=prefix_mask_BxP, cache=cache)
    hidden_BxD, logits_BxV = prefix.hidden[:, -1], prefix.logits[:, -1]

    def latent_step(carry, i):
        cache, hidden_BxD, logits_BxV = carry
        embed_BxD = model.feed_back(hidden_BxD, logits_BxV)
        if keep_last is not None:  # feedbacks before the example's last `keep_last` are constants
            keeps_grad_B = i >= n_latent_B - keep_last
            embed_BxD = jnp.where(keeps_grad_B[:, None], embed_BxD, jax.lax.stop_gradient(embed_BxD))
        active_B = i < n_latent_B
        out = model(embeds=embed_BxD[:, None], padding_mask=active_B[:, None], cache=cache)
        # An example past its last latent keeps the state it had (its slots are masked anyway).
        hidden_BxD = jnp.where(active_B[:, None], out.hidden[:, 0], hidden_BxD)
        logits_BxV = jnp.where(active_B[:, None], out.logits[:, 0], logits_BxV)
        return (out.cache, hidden_BxD, logits_BxV), (out.hidden[:, 0], out.logits[:, 0])

    (cache, _, _), (latent_hidden_KxBxD, latent_logits_KxBxV) = jax.lax.scan(
        latent_step, (prefix.cache, hidden_BxD, logits_BxV), jnp.arange(K)
    )
    suffix = model(suffix_BxS, padding_mask=suffix_mask_BxS, cache=cache)
    return LatentOutput(
        logits=suffix.logits,
        hidden=suffix.hidden,
        prefix_logits=prefix.logits,
        latent_logits=jnp.swapaxes(latent_logits_KxBxV, 0, 1),
        latent_hidden=jnp.swapaxes(latent_hidden_KxBxD, 0, 1),
        cache=suffix.cache,
    )


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
