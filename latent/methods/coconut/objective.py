"""Coconut's objective: next-token loss on the text after the continuous thoughts, plus an
optional thought-target loss (latent.thought_loss)."""

from __future__ import annotations

import jax.numpy as jnp
import optax

from latent.methods.losses import next_token_accuracy_sum, next_token_head_sums, next_token_loss_sum
from latent.nn.recurrence import continuous_thought_forward


def thought_target_sums(out, targets_BxK):
    """(loss sum, labelled count, correct count) of the logits of the position before each slot
    (`out.slot_input_logits`: the one whose hidden state becomes the slot's input) against
    `thought_targets` [B, K] (-1: no target)."""
    labelled_BxK = (targets_BxK >= 0).astype(jnp.float32)
    feeding_BxKxV = out.slot_input_logits
    losses_BxK = optax.softmax_cross_entropy_with_integer_labels(
        feeding_BxKxV.astype(jnp.float32), jnp.maximum(targets_BxK, 0)
    )
    correct_BxK = (jnp.argmax(feeding_BxKxV, -1) == targets_BxK) * labelled_BxK
    return jnp.sum(losses_BxK * labelled_BxK), jnp.sum(labelled_BxK), jnp.sum(correct_BxK)


def latent_objective(latent_grad: str = "full", thought_loss: float = 0.0, loss_chunk: int = 0):
    """Next-token loss on the suffix of a continuous-thought batch (latent.methods.coconut.curriculum):
    prefix/prefix_mask [B, P], latent_mask [B, K] (its width K is the static slot count),
    suffix/suffix_mask/suffix_loss_mask [B, S]; plus, with `thought_loss` > 0, that weight times
    the cross-entropy against `thought_targets` [B, K] (-1: none) of the logits of the position
    before each slot (<bot> for slot 0), whose hidden state is the slot's input; counted as that
    many labelled tokens. loss_chunk > 0 (train.loss_chunk): the suffix loss from its hidden
    states, that many positions at a time (latent.methods.losses.next_token_head_sums), so the
    suffix's [B, S, V] logits are never built (the suffix is labelled but for <eot> and padding,
    so the head runs at every suffix position)."""

    def objective(model, batch: dict):
        out = continuous_thought_forward(
            model, batch["prefix"], batch["prefix_mask"], jnp.sum(batch["latent_mask"], axis=1).astype(jnp.int32),
            batch["suffix"], batch["suffix_mask"], max_latent=batch["latent_mask"].shape[1], latent_grad=latent_grad,
        )
        if loss_chunk > 0:  # out.logits goes unused, and jit drops it
            loss_sum, count, correct = next_token_head_sums(
                model.logits, out.hidden, batch["suffix"], batch["suffix_loss_mask"], loss_chunk)
        else:
            loss_sum, count = next_token_loss_sum(out.logits, batch["suffix"], batch["suffix_loss_mask"])
            correct = next_token_accuracy_sum(out.logits, batch["suffix"], batch["suffix_loss_mask"])
        if thought_loss > 0 and out.latent_logits.shape[1]:
            thought_sum, thought_count, thought_correct = thought_target_sums(out, batch["thought_targets"])
            loss_sum += thought_loss * thought_sum
            count += thought_loss * thought_count
            correct += thought_loss * thought_correct
        return loss_sum, count, correct

    return objective
