"""AdamW with warmup + cosine (or constant) schedule and global-norm clipping, from optax."""

from __future__ import annotations

import jax
import optax


def learning_rate_schedule(opt_cfg, total_steps: int) -> optax.Schedule:
    warmup = max(0, min(opt_cfg.warmup_steps, total_steps - 1))
    if opt_cfg.schedule == "constant":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, opt_cfg.lr, max(warmup, 1)), optax.constant_schedule(opt_cfg.lr)],
            [warmup],
        )
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=opt_cfg.lr,
        warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1),
        end_value=opt_cfg.lr * opt_cfg.min_lr_ratio,
    )


def reset_moments(optimizer: optax.GradientTransformation, opt_state, params):
    """A fresh optimizer state (Adam moments and bias-correction count at zero), as Coconut resets
    its optimizer at each stage, but with the learning-rate schedule's count kept where it was:
    the schedule runs on the global step, so a reset never restarts the warm-up from lr 0."""
    fresh = optimizer.init(params)
    is_schedule = lambda node: isinstance(node, optax.ScaleByScheduleState)  # noqa: E731
    return jax.tree.map(lambda new, old: old if is_schedule(new) else new, fresh, opt_state, is_leaf=is_schedule)


def applied_learning_rate(schedule: optax.Schedule, opt_state) -> jax.Array:
    """The learning rate the next update applies: the schedule at the count held in `opt_state`."""
    counts = [node.count for node in jax.tree.leaves(opt_state, is_leaf=lambda n: isinstance(n, optax.ScaleByScheduleState))
              if isinstance(node, optax.ScaleByScheduleState)]
    if len(counts) != 1:
        raise ValueError(f"expected one learning-rate schedule in the optimizer state; found {len(counts)}")
    return schedule(counts[0])


def make_optimizer(opt_cfg, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Weight decay applies to matrices (kernels, embeddings) only, not to norms and biases."""
    schedule = learning_rate_schedule(opt_cfg, total_steps)
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)  # noqa: E731
    adamw = optax.adamw(
        schedule, b1=opt_cfg.b1, b2=opt_cfg.b2, eps=opt_cfg.eps, weight_decay=opt_cfg.weight_decay, mask=decay_mask
    )
    if opt_cfg.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(opt_cfg.grad_clip), adamw), schedule
    return adamw, schedule
