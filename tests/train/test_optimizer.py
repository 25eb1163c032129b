"""The optimizer reset at a Coconut stage change: fresh Adam moments, the schedule on the global step."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from latent.config import OptimizerConfig
from latent.run import load_run
from latent.train.loop import train
from latent.train.optimizer import learning_rate_schedule, make_optimizer
from tests.conftest import tiny_run
from tests.train.test_coconut import coconut


def test_reset_zeroes_the_moments_and_keeps_the_schedule_count():
    from latent.train.optimizer import applied_learning_rate, reset_moments

    optimizer, schedule = make_optimizer(OptimizerConfig(lr=1.0, warmup_steps=10, schedule="constant"), 100)
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros((2,))}
    grads = {"w": jnp.full((3, 2), 0.5), "b": jnp.full((2,), -1.0)}
    opt_state = optimizer.init(params)
    for _ in range(4):
        _, opt_state = optimizer.update(grads, opt_state, params)
    reset = reset_moments(optimizer, opt_state, params)
    adam = [n for n in jax.tree.leaves(reset, is_leaf=lambda n: isinstance(n, optax.ScaleByAdamState))
            if isinstance(n, optax.ScaleByAdamState)][0]
    assert int(adam.count) == 0 and all(float(jnp.abs(m).max()) == 0 for m in jax.tree.leaves(adam.mu))
    assert float(applied_learning_rate(schedule, reset)) == pytest.approx(0.4)  # step 4 of a 10-step warm-up
    updates, _ = optimizer.update(grads, reset, params)
    # Adam's first step after a reset moves every weight by about lr (its bias-corrected m / sqrt(v) is sign(g))
    assert float(jnp.abs(updates["b"]).min()) == pytest.approx(0.4, rel=1e-3)


@pytest.mark.slow
def test_the_step_after_a_stage_change_updates_the_weights_at_the_global_learning_rate(tmp_path):
    # 5 steps per stage; a 6-step warm-up, so a schedule restarted at the reset would apply lr 0.
    cfg = coconut("train.steps=7", "optimizer.warmup_steps=10", "optimizer.schedule=constant",
                  "train.checkpoint_every=1", "checkpoint.keep=10", "latent.uniform_prob=0.0")
    train(cfg, tmp_path, progress=False)
    at_reset, after = load_run(tmp_path, step=5), load_run(tmp_path, step=6)
    meta5 = at_reset.meta
    assert meta5["stage"] == 0
    moved = [float(np.abs(np.asarray(a) - np.asarray(b)).max())
             for a, b in zip(jax.tree.leaves(at_reset.params), jax.tree.leaves(after.params))]
    assert max(moved) > 0, "the first update of the new stage left every weight unchanged"
    rows = {r["step"]: r for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
            if "lr" in r}
    global_lr = float(learning_rate_schedule(cfg.optimizer, cfg.train.steps)(5))
    assert global_lr > 0 and rows[6]["lr"] == pytest.approx(global_lr)  # the update from step 5 to 6


def test_a_rewarm_after_reset_is_exactly_the_old_restarted_constant_schedule():
    """latent.reset_warmup_steps=W with a constant schedule warmed over W steps updates exactly as
    re-initialising the whole optax chain did (the measured presets' recipe before the fix)."""
    from latent.train.optimizer import applied_learning_rate, reset_moments

    opt_cfg = OptimizerConfig(lr=0.1, warmup_steps=4, schedule="constant", weight_decay=0.1)
    new, schedule = make_optimizer(opt_cfg, 100, rewarm_steps=4)
    old, _ = make_optimizer(opt_cfg, 100)
    params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(3, 2), "b": jnp.ones((2,))}
    grads = [jax.tree.map(lambda p, k=k: jnp.sin(p * (k + 1)), params) for k in range(20)]
    state_new, state_old = new.init(params), old.init(params)
    for k in range(20):
        if k == 7:  # a stage change
            state_new, state_old = reset_moments(new, state_new, params), old.init(params)
        up_new, state_new = new.update(grads[k], state_new, params)
        up_old, state_old = old.update(grads[k], state_old, params)
        np.testing.assert_allclose(np.asarray(up_new["w"]), np.asarray(up_old["w"]), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(np.asarray(up_new["b"]), np.asarray(up_old["b"]), rtol=1e-6, atol=1e-9)
    assert float(applied_learning_rate(schedule, reset_moments(new, state_new, params))) == 0.0
    assert float(applied_learning_rate(schedule, state_new)) == pytest.approx(0.1)


def test_lr_scale_multiplies_the_matched_parameters_updates_and_only_theirs():
    """optimizer.lr_scale="feedback:100" on a model with HRPO's gate: each update of the gate's
    parameters is 100x the plain optimizer's (AdamW's update is linear in lr, decay included),
    every other parameter's is the plain one's; paths are those of the model's nnx State."""
    from flax import nnx

    from latent.nn.transformer import Transformer

    cfg = tiny_run("model.feedback=hrpo").model
    params = nnx.state(Transformer(cfg, rngs=nnx.Rngs(0)), nnx.Param)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.3) + 0.01 * p, params)
    plain_cfg = OptimizerConfig(lr=1e-3, warmup_steps=0, schedule="constant", weight_decay=0.1)
    scaled_cfg = dataclasses.replace(plain_cfg, lr_scale="feedback:100")
    updates = {}
    for name, opt_cfg in (("plain", plain_cfg), ("scaled", scaled_cfg)):
        optimizer, _ = make_optimizer(opt_cfg, 10)
        opt_state = optimizer.init(params)
        for _ in range(2):
            step_updates, opt_state = optimizer.update(grads, opt_state, params)
        updates[name] = dict(jax.tree_util.tree_leaves_with_path(step_updates))
    matched = 0
    for path, plain in updates["plain"].items():
        factor = 100.0 if "feedback" in jax.tree_util.keystr(path) else 1.0
        matched += factor == 100.0
        np.testing.assert_allclose(updates["scaled"][path], factor * plain, rtol=1e-6)
    assert matched == 5  # log_a, w_r and w_i's kernels and biases


def test_lr_scale_refuses_a_pattern_that_matches_no_parameter():
    from latent.errors import ConfigError

    optimizer, _ = make_optimizer(OptimizerConfig(lr_scale="feedbak:100"), 10)
    with pytest.raises(ConfigError, match=r"optimizer.lr_scale: 'feedbak' matches no parameter; the parameters are .*embed"):
        optimizer.init({"embed": jnp.ones((4, 2)), "feedback": {"log_a": jnp.ones(2)}})
