"""Checkpoint retention: the latest `keep` plus the best by the eval metric."""

import jax.numpy as jnp

from latent.config import CheckpointConfig, Config
from latent.train import checkpoint as ckpt


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
