"""The RL train step: rl.inner_epochs optimizer updates on one batch of rollouts, in one jitted call.

A step of an RL run is one batch of rollouts (B prompts x G outputs) and mu = rl.inner_epochs
updates on it; the learning-rate schedule and the optimizer count updates. The rollouts' own
log-probs are pi_old for all mu updates, so the first update is at ratio 1 and the later ones
are clipped against it. Taking all mu inside one step keeps every checkpoint at a batch boundary.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx


def make_rl_step(graphdef, optimizer: optax.GradientTransformation, schedule, objective, inner_epochs: int = 1):
    """`train_step(state, batch) -> (state, metrics)`. objective(model, batch) -> (loss, metrics):
    the loss to minimise and a dict of scalars. Metrics are the mean over the mu updates, plus
    `loss_first` (the first update's loss, at ratio 1), `grad_norm` and `lr` (the first update's rate)."""
    from latent.train.optimizer import applied_learning_rate

    def loss_fn(params, batch):
        return objective(nnx.merge(graphdef, params), batch)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def update(carry, batch):
        params, opt_state = carry
        (loss, metrics), grads = grad_fn(params, batch)
        updates, new_opt_state = optimizer.update(grads, opt_state, params)
        lr = applied_learning_rate(schedule, opt_state)
        out = metrics | {"loss": loss, "grad_norm": optax.global_norm(grads), "lr": lr}
        return (optax.apply_updates(params, updates), new_opt_state), out

    def train_step(state, batch: dict):
        (params, opt_state), per_update = jax.lax.scan(
            lambda carry, _: update(carry, batch), (state.params, state.opt_state), None, length=inner_epochs
        )
        metrics = {k: jnp.mean(v) for k, v in per_update.items()}
        metrics["loss_first"] = per_update["loss"][0]
        metrics["lr"] = per_update["lr"][0]
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return train_step
