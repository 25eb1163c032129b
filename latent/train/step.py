"""The train state and the pure, jitted `train_step(state, batch) -> (state, metrics)`."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from latent.data.abstract import bottleneck_attention_mask
from latent.nn.recurrence import continuous_thought_forward
from latent.train.optimizer import applied_learning_rate
from latent.train.losses import next_token_accuracy_sum, next_token_loss_sum


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # [] int32: optimizer steps taken
    params: Any  # nnx.State of the model's Params
    opt_state: Any
    # No PRNG key: no objective draws randomness inside the step (Coconut's uniform_prob draws are
    # host-side, seeded by (train.seed, step), so a resume repeats them). Checkpoints written before
    # this held an unread `rng` leaf; checkpoint.restore leaves it on disk.


def init_state(params, optimizer: optax.GradientTransformation) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))


def sft_objective(model, batch: dict, attention_mask=None):
    """Next-token loss on a token batch: tokens/padding_mask/loss_mask [B, T].
    Returns (loss sum, labelled tokens, correctly predicted labelled tokens)."""
    out = model(batch["tokens"], padding_mask=batch["padding_mask"], attention_mask=attention_mask)
    loss_sum, count = next_token_loss_sum(out.logits, batch["tokens"], batch["loss_mask"])
    return loss_sum, count, next_token_accuracy_sum(out.logits, batch["tokens"], batch["loss_mask"])


def bottleneck_objective(model, batch: dict):
    """Abstract-CoT's bottlenecked SFT on [x; c; z; y] (latent.data.abstract): `segments` [B, T]
    become an attention mask that hides the verbal chain from the answer side; the loss covers z
    and y (loss_mask)."""
    return sft_objective(model, batch, attention_mask=bottleneck_attention_mask(batch["segments"]))


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


def latent_objective(latent_grad: str = "full", thought_loss: float = 0.0):
    """Next-token loss on the suffix of a continuous-thought batch (latent.data.curriculum):
    prefix/prefix_mask [B, P], latent_mask [B, K] (its width K is the static slot count),
    suffix/suffix_mask/suffix_loss_mask [B, S]; plus, with `thought_loss` > 0, that weight times
    the cross-entropy against `thought_targets` [B, K] (-1: none) of the logits of the position
    before each slot (<bot> for slot 0), whose hidden state is the slot's input; counted as that
    many labelled tokens."""

    def objective(model, batch: dict):
        out = continuous_thought_forward(
            model, batch["prefix"], batch["prefix_mask"], jnp.sum(batch["latent_mask"], axis=1).astype(jnp.int32),
            batch["suffix"], batch["suffix_mask"], max_latent=batch["latent_mask"].shape[1], latent_grad=latent_grad,
        )
        loss_sum, count = next_token_loss_sum(out.logits, batch["suffix"], batch["suffix_loss_mask"])
        correct = next_token_accuracy_sum(out.logits, batch["suffix"], batch["suffix_loss_mask"])
        if thought_loss > 0 and out.latent_logits.shape[1]:
            thought_sum, thought_count, thought_correct = thought_target_sums(out, batch["thought_targets"])
            loss_sum += thought_loss * thought_sum
            count += thought_loss * thought_count
            correct += thought_loss * thought_correct
        return loss_sum, count, correct

    return objective


def switch_objective(stay_id: int, latent_grad: str = "full", thought_loss: float = 0.0):
    """SWITCH batches (latent.data.switch): next-token loss on the visible steps and <swi> of the
    prefix, on the first suffix token (</swi> or the first visible span token) predicted by the
    last latent slot (or by <swi> when there is none), and on the rest of the suffix. With
    `thought_loss` > 0, that weight times the thought-target loss of `latent_objective`
    (`thought_targets` [B, K]); a slot whose output carries a thought target has no stay label
    (the target, a word, is not </swi> either, so decoding stays in the span there too).

    stay_id: the token (`<latent>`) that every latent slot but an example's last predicts. The
    decoding engine's "model" policy leaves a span when a latent position's argmax is </swi>;
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


def make_train_step(
    graphdef, optimizer: optax.GradientTransformation, schedule, grad_accum: int = 1, objective=sft_objective
):
    """Pure step over split params. With grad_accum > 1 the batch is cut into that many
    micro-batches scanned in sequence; the loss is the mean over all labelled tokens.
    `objective(model, batch) -> (loss sum, labelled count, correct count)`."""

    def micro_loss(params, micro):
        loss_sum, count, correct = objective(nnx.merge(graphdef, params), micro)
        return loss_sum, (count, correct)

    grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        if grad_accum == 1:
            (loss_sum, (count, correct)), grads = grad_fn(state.params, batch)
        else:
            micro_batches = jax.tree.map(
                lambda x: x.reshape(grad_accum, x.shape[0] // grad_accum, *x.shape[1:]), batch
            )

            def accumulate(carry, micro):
                (loss_sum, (count, correct)), grads = grad_fn(state.params, micro)
                total = jax.tree.map(jnp.add, carry, (loss_sum, count, correct, grads))
                return total, None

            zeros = (0.0, 0.0, 0.0, jax.tree.map(jnp.zeros_like, state.params))
            (loss_sum, count, correct, grads), _ = jax.lax.scan(accumulate, zeros, micro_batches)
        count = jnp.maximum(count, 1.0)
        grads = jax.tree.map(lambda g: g / count, grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": loss_sum / count,
            "token_accuracy": correct / count,
            "grad_norm": optax.global_norm(grads),
            "lr": applied_learning_rate(schedule, state.opt_state),  # what this update used
            "labelled_tokens": count,
        }
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return train_step
