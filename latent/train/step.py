"""The train state and the pure, jitted `train_step(state, batch) -> (state, metrics)`."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from latent.train.optimizer import applied_learning_rate


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


def make_train_step(
    graphdef, optimizer: optax.GradientTransformation, schedule, grad_accum: int = 1, objective=None
):
    """Pure step over split params. With grad_accum > 1 the batch is cut into that many
    micro-batches scanned in sequence; the loss is the mean over all labelled tokens.
    `objective(model, batch) -> (loss sum, labelled count, correct count)`: the method's
    (latent.methods; its source's `objective`), default plain SFT's next-token loss."""
    if objective is None:
        from latent.methods.sft import sft_objective as objective

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
