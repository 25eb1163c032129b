"""Checkpoint retention: the latest `keep` plus the best by the eval metric."""

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
from latent.train import checkpoint as ckpt
from latent.train.step import TrainState, init_state


def test_keeps_latest_n_and_best(tmp_path):
    manager = ckpt.make_manager(tmp_path, CheckpointConfig(keep=2, keep_best=True, best_metric="accuracy", async_save=False))
    accuracy = {2: 0.9, 4: 0.5, 6: 0.6}
    for step in range(1, 8):
        metrics = {"accuracy": accuracy[step]} if step in accuracy else None
        ckpt.save(manager, step, {"w": jnp.full((3,), float(step))}, {"next_index": step}, Config(), "{}", metrics)
    manager.wait_until_finished()
    assert sorted(manager.all_steps()) == [2, 6, 7]
    state, data, meta = ckpt.restore(manager, {"w": jnp.zeros((3,))}, 2)
    assert float(state["w"][0]) == 2.0 and data == {"next_index": 2} and meta["step"] == 2


def _state_keys(manager, step):
    return set(ocp.PyTreeCheckpointHandler().metadata(manager.directory / str(step) / ckpt.STATE_ITEM).tree)


def test_the_train_state_saves_no_unread_key_and_old_checkpoints_with_one_still_restore(tmp_path):
    """TrainState carried a PRNG key that nothing read (issue 21); checkpoints written with it
    must still resume."""

    @flax.struct.dataclass
    class StateWithUnreadKey:  # the layout saved before
        step: jax.Array
        params: Any
        opt_state: Any
        rng: jax.Array

    optimizer = optax.adamw(1e-3)
    params = {"w": jnp.arange(3.0)}
    state = init_state(params, optimizer)
    assert {f.name for f in dataclasses.fields(TrainState)} == {"step", "params", "opt_state"}
    manager = ckpt.make_manager(tmp_path, CheckpointConfig(keep=3, async_save=False))
    ckpt.save(manager, 1, state.replace(step=jnp.int32(1)), {"next_index": 1}, Config(), "{}")
    moved = optax.apply_updates(params, optimizer.update({"w": jnp.ones(3)}, state.opt_state, params)[0])
    old = StateWithUnreadKey(jnp.int32(2), moved, state.opt_state, jax.random.PRNGKey(7))
    ckpt.save(manager, 2, old, {"next_index": 2}, Config(), "{}")
    manager.wait_until_finished()
    assert _state_keys(manager, 1) == {"step", "params", "opt_state"}
    assert _state_keys(manager, 2) == {"step", "params", "opt_state", "rng"}

    restored, data, _ = ckpt.restore(manager, state, 2)
    assert isinstance(restored, TrainState) and int(restored.step) == 2 and data == {"next_index": 2}
    np.testing.assert_array_equal(restored.params["w"], moved["w"])


def test_a_target_leaf_the_checkpoint_lacks_is_an_error_not_a_silent_init(tmp_path):
    manager = ckpt.make_manager(tmp_path, CheckpointConfig(keep=3, async_save=False))
    ckpt.save(manager, 1, {"w": jnp.ones(3)}, {}, Config(), "{}")
    manager.wait_until_finished()
    with pytest.raises(Exception, match="b"):
        ckpt.restore(manager, {"w": jnp.zeros(3), "b": jnp.zeros(2)}, 1)
