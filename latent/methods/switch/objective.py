"""SWITCH's objective: the visible text, the span's boundary and a stay label on every latent slot."""

from __future__ import annotations

import jax.numpy as jnp
import optax

from latent.methods.coconut.objective import thought_target_sums
from latent.methods.losses import next_token_accuracy_sum, next_token_loss_sum
from latent.nn.recurrence import continuous_thought_forward


def switch_objective(stay_id: int, latent_grad: str = "full", thought_loss: float = 0.0):
    """SWITCH batches (latent.methods.switch.spans): next-token loss on the visible steps and <swi> of the
    prefix, on the first suffix token (</swi> or the first visible span token) predicted by the
    last latent slot (or by <swi> when there is none), and on the rest of the suffix. With
    `thought_loss` > 0, that weight times the thought-target loss of Coconut's objective
    (`thought_targets` [B, K]); a slot whose output carries a thought target has no stay label
    (the target, a word, is not </swi> either, so decoding stays in the span there too).

    stay_id: the token (`<latent>`) that every latent slot but an example's last predicts. The
    decoding engine's "model" policy leaves a span when a latent position draws </swi> (greedy: its argmax);
    without this label only the last slot is trained, its </swi> carries over to the slots
    before it, and decoding leaves every span after one thought (measured: 1.0 latent steps
    per answer on a 2-slot span).
    """

    def objective(model, batch: dict):
        n_latent_B = jnp.sum(batch["latent_mask"], axis=1).astype(jnp.int32)
        out = continuous_thought_forward(
            model, batch["prefix"], batch["prefix_mask"], n_latent_B, batch["suffix"], batch["suffix_mask"],
            max_latent=batch["latent_mask"].shape[1], latent_grad=latent_grad,
        )
        prefix_sum, prefix_count = next_token_loss_sum(out.prefix_logits, batch["prefix"], batch["prefix_loss_mask"])
        prefix_correct = next_token_accuracy_sum(out.prefix_logits, batch["prefix"], batch["prefix_loss_mask"])
        stay_sum = stay_count = stay_correct = 0.0
        if out.latent_logits.shape[1]:
            last_slot_B = jnp.maximum(n_latent_B - 1, 0)
            last_latent_BxV = jnp.take_along_axis(out.latent_logits, last_slot_B[:, None, None], axis=1)[:, 0]
            boundary_BxV = jnp.where((n_latent_B > 0)[:, None], last_latent_BxV, out.prefix_logits[:, -1])
            K = out.latent_logits.shape[1]
            stays_BxK = (jnp.arange(K)[None, :] < (n_latent_B - 1)[:, None]).astype(jnp.float32)
            if thought_loss > 0:
                targets_BxK = batch["thought_targets"]
                # latent_logits[:, k] feeds slot k + 1: a target there replaces the stay label
                stays_BxK = stays_BxK * jnp.pad(targets_BxK[:, 1:] < 0, ((0, 0), (0, 1)), constant_values=True)
                thought_sum, thought_count, thought_correct = thought_target_sums(out, targets_BxK)
                stay_sum = thought_loss * thought_sum
                stay_count = thought_loss * thought_count
                stay_correct = thought_loss * thought_correct
            stay_losses_BxK = optax.softmax_cross_entropy_with_integer_labels(
                out.latent_logits.astype(jnp.float32), jnp.full(stays_BxK.shape, stay_id, jnp.int32)
            )
            stay_sum += jnp.sum(stay_losses_BxK * stays_BxK)
            stay_count += jnp.sum(stays_BxK)
            stay_correct += jnp.sum((jnp.argmax(out.latent_logits, -1) == stay_id) * stays_BxK)
        else:
            boundary_BxV = out.prefix_logits[:, -1]
        first_B, first_weight_B = batch["suffix"][:, 0], batch["suffix_loss_mask"][:, 0].astype(jnp.float32)
        boundary_loss = jnp.sum(
            optax.softmax_cross_entropy_with_integer_labels(boundary_BxV.astype(jnp.float32), first_B) * first_weight_B
        )
        boundary_correct = jnp.sum((jnp.argmax(boundary_BxV, -1) == first_B) * first_weight_B)
        suffix_sum, suffix_count = next_token_loss_sum(out.logits, batch["suffix"], batch["suffix_loss_mask"])
        suffix_correct = next_token_accuracy_sum(out.logits, batch["suffix"], batch["suffix_loss_mask"])
        return (
            prefix_sum + stay_sum + boundary_loss + suffix_sum,
            prefix_count + stay_count + jnp.sum(first_weight_B) + suffix_count,
            prefix_correct + stay_correct + boundary_correct + suffix_correct,
        )

    return objective
