"""AdamW with warmup + cosine (or constant) schedule and global-norm clipping, from optax."""

from __future__ import annotations

import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from latent.config import parse_lr_scale
from latent.errors import ConfigError
from latent.nn.paths import param_path


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


class RewarmState(NamedTuple):
    count: jax.Array  # [] int32: updates since the last optimizer reset (capped at `length`)
    length: jax.Array  # [] int32: updates the re-warm takes


def rewarm_after_reset(steps: int) -> optax.GradientTransformation:
    """Scales every update by min(1, k / steps), k the updates since the last optimizer reset:
    the learning rate warms up again after a reset the way optax's linear warm-up does (0 at
    the reset step). It starts warm (k = steps); `reset_moments` sets k to 0. With a constant
    schedule whose warm-up is `steps` long this is exactly what restarting the schedule did."""

    def init(params):
        del params
        return RewarmState(count=jnp.asarray(steps, jnp.int32), length=jnp.asarray(steps, jnp.int32))

    def update(updates, state, params=None):
        del params
        factor = rewarm_factor(state)
        updates = jax.tree.map(lambda u: (u * factor).astype(u.dtype), updates)
        return updates, state._replace(count=jnp.minimum(state.count + 1, state.length))

    return optax.GradientTransformation(init, update)


def rewarm_factor(state: RewarmState) -> jax.Array:
    return jnp.minimum(state.count.astype(jnp.float32) / state.length.astype(jnp.float32), 1.0)


def reset_moments(optimizer: optax.GradientTransformation, opt_state, params):
    """A fresh optimizer state (Adam moments and bias-correction count at zero), as Coconut resets
    its optimizer at each stage, but with the learning-rate schedule's count kept where it was:
    the schedule runs on the global step, so a reset never restarts the warm-up from lr 0 (a
    re-warm, `latent.reset_warmup_steps`, starts over instead)."""
    fresh = optimizer.init(params)
    is_kept = lambda node: isinstance(node, (optax.ScaleByScheduleState, RewarmState))  # noqa: E731
    pick = lambda new, old: old._replace(count=jnp.zeros_like(old.count)) if isinstance(new, RewarmState) else (  # noqa: E731
        old if isinstance(new, optax.ScaleByScheduleState) else new)
    return jax.tree.map(pick, fresh, opt_state, is_leaf=is_kept)


def _stacked_hint(names: list[str]) -> str:
    """Under model.scan_layers the blocks' parameters are stacked: their paths carry no layer index."""
    if any(re.match(r"layers\.[^\d.]", name) for name in names):
        return (" (model.scan_layers stores the blocks stacked: `layers.attn...` with no layer index, so a rule "
                "applies to every layer)")
    return ""


def scale_by_path(rules: tuple[tuple[str, float], ...]) -> optax.GradientTransformation:
    """Multiplies each parameter's update by the factor of the first (regex, factor) rule whose
    regex finds its dotted path (optimizer.lr_scale), 1 when none does: a per-parameter learning
    rate that keeps one schedule and one Adam. Stateless; init refuses a rule that matches no
    parameter (a typo would otherwise silently train at the base rate)."""
    compiled = [(re.compile(pattern), factor) for pattern, factor in rules]
    dotted = lambda path: ".".join(str(name) for name in param_path(path))  # noqa: E731

    def factor_of(path) -> float:
        return next((factor for regex, factor in compiled if regex.search(dotted(path))), 1.0)

    def init(params):
        names = [dotted(path) for path, _ in jax.tree_util.tree_leaves_with_path(params)]
        for regex, _ in compiled:
            if not any(regex.search(name) for name in names):
                shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
                raise ConfigError(f"optimizer.lr_scale: {regex.pattern!r} matches no parameter; the parameters are "
                                  f"{shown}{_stacked_hint(names)}")
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        scaled = jax.tree_util.tree_map_with_path(lambda path, u: (u * factor_of(path)).astype(u.dtype), updates)
        return scaled, state

    return optax.GradientTransformation(init, update)


def _states(opt_state, kind) -> list:
    return [node for node in jax.tree.leaves(opt_state, is_leaf=lambda n: isinstance(n, kind)) if isinstance(node, kind)]


def applied_learning_rate(schedule: optax.Schedule, opt_state) -> jax.Array:
    """The learning rate the next update applies: the schedule at the count held in `opt_state`,
    times the re-warm factor after an optimizer reset."""
    counts = [node.count for node in _states(opt_state, optax.ScaleByScheduleState)]
    if len(counts) != 1:
        raise ValueError(f"expected one learning-rate schedule in the optimizer state; found {len(counts)}")
    lr = schedule(counts[0])
    for rewarm in _states(opt_state, RewarmState):
        lr = lr * rewarm_factor(rewarm)
    return lr


def run_optimizer(cfg, updates_per_step: int = 1) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optimizer of a run's config (the same in training and when its checkpoints are restored);
    its schedule spans train.steps * updates_per_step updates (RL: rl.inner_epochs per step)."""
    rewarm = cfg.latent.reset_warmup_steps if cfg.latent.reset_optimizer else 0
    return make_optimizer(cfg.optimizer, cfg.train.steps * updates_per_step, rewarm_steps=rewarm)


def make_optimizer(opt_cfg, total_steps: int, rewarm_steps: int = 0) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Weight decay applies to matrices (kernels, embeddings) only, not to norms and biases.
    optimizer.lr_scale: per-parameter factors on the updates (`scale_by_path`).
    rewarm_steps > 0: the learning rate warms up again over that many steps after each optimizer
    reset (`rewarm_after_reset`)."""
    schedule = learning_rate_schedule(opt_cfg, total_steps)
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)  # noqa: E731
    adamw = optax.adamw(
        schedule, b1=opt_cfg.b1, b2=opt_cfg.b2, eps=opt_cfg.eps, weight_decay=opt_cfg.weight_decay, mask=decay_mask
    )
    parts = ([optax.clip_by_global_norm(opt_cfg.grad_clip)] if opt_cfg.grad_clip > 0 else []) + [adamw]
    if opt_cfg.lr_scale is not None:
        parts.append(scale_by_path(parse_lr_scale(opt_cfg.lr_scale)))
    if rewarm_steps > 0:
        parts.append(rewarm_after_reset(rewarm_steps))
    return (parts[0] if len(parts) == 1 else optax.chain(*parts)), schedule
