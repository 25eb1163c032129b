"""Checkpoints: retention (the latest `keep` plus the best by the eval metric), the item layout
(params and optimizer state apart, so evaluation restores parameters alone) and checkpoints
written under earlier layouts."""

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from latent.config import CheckpointConfig, Config
from latent.run import checkpoint as ckpt
from latent.train.step import TrainState, init_state


def _manager(tmp_path, **kw):
    return ckpt.make_manager(tmp_path, CheckpointConfig(**{"keep": 3, "async_save": False, **kw}))


def test_keeps_latest_n_and_best(tmp_path):
    manager = _manager(tmp_path, keep=2, keep_best=True, best_metric="accuracy")
    accuracy = {2: 0.9, 4: 0.5, 6: 0.6}
    for step in range(1, 8):
        metrics = {"accuracy": accuracy[step]} if step in accuracy else None
        ckpt.save(manager, step, {"w": jnp.full((3,), float(step))}, {"m": jnp.full((2,), -float(step))},
                  {"next_index": step}, Config(), "{}", metrics)
    manager.wait_until_finished()
    assert sorted(manager.all_steps()) == [2, 6, 7]
    params, opt_state, data, meta = ckpt.restore(manager, {"w": jnp.zeros((3,))}, {"m": jnp.zeros((2,))}, 2)
    assert float(params["w"][0]) == 2.0 and float(opt_state["m"][0]) == -2.0
    assert data == {"next_index": 2} and meta["step"] == 2


def _saved_keys(manager, step, item):
    return set(ocp.PyTreeCheckpointHandler().metadata(manager.directory / str(step) / item).tree)


@flax.struct.dataclass
class StateWithUnreadKey:  # the one-item layout with the PRNG key nothing read (before issue 21)
    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array


def _legacy_save(manager, step, state):
    """A checkpoint as written before params and optimizer state were separate items."""
    meta = {"config": {}, "step": step, "tokenizer": "{}"}
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave({"i": step}),
                                               meta=ocp.args.JsonSave(meta)), force=True)


def test_params_and_optimizer_state_are_separate_items_and_every_earlier_layout_still_restores(tmp_path):
    """TrainState carried a PRNG key that nothing read (issue 21), and one `state` item held
    params and optimizer state together (before issue 22): both layouts must still resume."""
    optimizer = optax.adamw(1e-3)
    params = {"w": jnp.arange(3.0)}
    state = init_state(params, optimizer)
    assert {f.name for f in dataclasses.fields(TrainState)} == {"step", "params", "opt_state"}
    moved = optax.apply_updates(params, optimizer.update({"w": jnp.ones(3)}, state.opt_state, params)[0])
    manager = _manager(tmp_path)
    ckpt.save(manager, 1, moved, state.opt_state, {"i": 1}, Config(), "{}")
    _legacy_save(manager, 2, StateWithUnreadKey(jnp.int32(2), moved, state.opt_state, jax.random.PRNGKey(7)))
    _legacy_save(manager, 3, TrainState(step=jnp.int32(3), params=moved, opt_state=state.opt_state))
    manager.wait_until_finished()
    assert ckpt.saved_items(manager, 1) == {"params", "opt_state", "data", "meta"}
    assert _saved_keys(manager, 1, "params") == {"w"}
    assert _saved_keys(manager, 2, "state") == {"step", "params", "opt_state", "rng"}

    for step in (1, 2, 3):
        restored_params, opt_state, data, meta = ckpt.restore(manager, params, state.opt_state, step)
        np.testing.assert_array_equal(restored_params["w"], moved["w"])
        assert jax.tree.structure(opt_state) == jax.tree.structure(state.opt_state) and meta["step"] == step
        only_params, _ = ckpt.restore_params(manager, params, step)
        np.testing.assert_array_equal(only_params["w"], moved["w"])


def test_a_target_leaf_the_checkpoint_lacks_is_an_error_not_a_silent_init(tmp_path):
    manager = _manager(tmp_path)
    ckpt.save(manager, 1, {"w": jnp.ones(3)}, {"m": jnp.ones(3)}, {}, Config(), "{}")
    _legacy_save(manager, 2, {"step": jnp.int32(2), "params": {"w": jnp.ones(3)}, "opt_state": {"m": jnp.ones(3)}})
    manager.wait_until_finished()
    for step in (1, 2):
        with pytest.raises(Exception, match="b"):
            ckpt.restore_params(manager, {"w": jnp.zeros(3), "b": jnp.zeros(2)}, step)
        with pytest.raises(Exception, match="b"):
            ckpt.restore(manager, {"w": jnp.zeros(3), "b": jnp.zeros(2)}, {"m": jnp.zeros(3)}, step)


def test_a_params_restore_reads_no_optimizer_state(tmp_path, monkeypatch):
    """Evaluation, train.init_from and span sampling restore parameters only: no optimizer array
    is read or allocated, under the current layout and the one-item layout before it."""
    manager = _manager(tmp_path)
    ckpt.save(manager, 1, {"w": jnp.ones(3)}, {"m": jnp.ones(3)}, {}, Config(), "{}")
    _legacy_save(manager, 2, {"step": jnp.int32(2), "params": {"w": jnp.ones(3)}, "opt_state": {"m": jnp.ones(3)}})
    manager.wait_until_finished()
    requested = []
    real_manager_restore, real_tree_restore = ocp.CheckpointManager.restore, ocp.PyTreeCheckpointHandler.restore

    def manager_restore(self, step, args=None, **kw):
        requested.extend(f"item:{name}" for name in args.keys())
        return real_manager_restore(self, step, args=args, **kw)

    def tree_restore(self, directory, args=None, **kw):
        requested.extend(f"subtree:{key}" for key in (args.item or {}))
        return real_tree_restore(self, directory, args=args, **kw)

    monkeypatch.setattr(ocp.CheckpointManager, "restore", manager_restore)
    monkeypatch.setattr(ocp.PyTreeCheckpointHandler, "restore", tree_restore)
    for step in (1, 2):
        requested.clear()
        params, meta = ckpt.restore_params(manager, {"w": jnp.zeros(3)}, step)
        assert float(params["w"][0]) == 1.0 and meta["step"] == step
        assert requested and not any("opt_state" in r for r in requested), requested
    requested.clear()
    ckpt.restore(manager, {"w": jnp.zeros(3)}, {"m": jnp.zeros(3)}, 1)
    assert "item:opt_state" in requested  # the spy sees an optimizer read when there is one
