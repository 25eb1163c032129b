"""A run directory read back for use: its config, tokenizer and parameters, never its optimizer.

    run = load_run("runs/default")             # the latest checkpoint, on one device
    model = nnx.merge(run.graphdef, run.params)
    apply = latent.nn.jitted_apply(run.graphdef)  # or, to run it many times: apply(run.params, tokens, mask)

Used by eval.py, train.init_from, the Abstract-CoT warm-up's span sampling, export, scripts and
benchmarks. Training resumes through `latent.train.loop`, which also restores the optimizer.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
from flax import nnx

from latent import sharding
from latent.config import Config, MeshConfig, ModelConfig
from latent.config_io import apply_overrides, from_dict, read_config_json
from latent.data.tokenizer import Tokenizer
from latent.errors import ConfigError, DamagedCheckpoint
from latent.nn import Transformer
from latent.nn.layer_layout import to_layout
from latent.run import checkpoint as ckpt


@dataclasses.dataclass(frozen=True)
class Run:
    """One checkpoint of a run directory, ready to evaluate or to start from."""

    cfg: Config  # as the run trained (upgraded by ckpt.as_trained), with the caller's overrides
    graphdef: Any  # nnx.GraphDef of the Transformer
    params: Any  # nnx.State, placed on the mesh it was loaded onto
    tokenizer: Tokenizer
    meta: dict  # the checkpoint's meta record: config, step, tokenizer, curriculum stage, ...
    step: int
    workdir: Path


def with_shardings(abstract_tree, shardings):
    """ShapeDtypeStructs of `abstract_tree` carrying `shardings`: a restore target."""
    return jax.tree.map(lambda leaf, sh: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sh), abstract_tree, shardings)


def abstract_model(model_cfg: ModelConfig, mesh, seed: int = 0):
    """(graphdef, abstract params, their shardings on `mesh`): the model's shapes, nothing allocated."""
    graphdef, params = nnx.split(nnx.eval_shape(lambda: Transformer(model_cfg, rngs=nnx.Rngs(seed))))
    return graphdef, params, sharding.param_shardings(params, mesh)


def one_device_mesh():
    """This process's first device (in a multi-process run every process loads its own copy)."""
    return sharding.make_mesh(MeshConfig(data=1, fsdp=1, tensor=1), devices=jax.local_devices()[:1])


def _restore_in_saved_layout(manager, step: int, model_cfg: ModelConfig, saved_scan_layers: bool, mesh, seed: int):
    """The checkpoint's params in the layout its run stored them (model.scan_layers of its own
    config: stacked or per layer), whatever layout `model_cfg` asks for; the caller converts."""
    _, abstract_params, params_sh = abstract_model(model_cfg.replace(scan_layers=saved_scan_layers), mesh, seed)
    params, _ = ckpt.restore_params(manager, with_shardings(abstract_params, params_sh), step)
    return params


def load_run(workdir, *, step: int | None = None, overrides=None, mesh=None) -> Run:
    """The checkpoint of `workdir` at `step` (default: the latest), its parameters restored onto
    `mesh` (default: one device). A damaged checkpoint is named with the steps left to choose.
    `overrides` may set another model.scan_layers than the run's: the parameters are read in the
    checkpoint's layout and converted (latent.nn.layer_layout)."""
    workdir = Path(workdir)
    config_path = workdir / "config.json"
    if not config_path.exists():
        raise ConfigError(f"{workdir} is not a run directory: no config.json (train with train.py --workdir {workdir})")
    cfg = from_dict(read_config_json(config_path))
    manager = ckpt.make_manager(workdir, cfg.checkpoint)
    step = manager.latest_step() if step is None else step
    if step is None:
        raise ConfigError(f"{workdir}/checkpoints holds no complete checkpoint")
    if step not in manager.all_steps():
        raise ConfigError(f"no checkpoint for step {step} in {workdir}; available: {sorted(manager.all_steps())}")
    try:
        meta = ckpt.read_meta(manager, step)
        saved = ckpt.config_of(meta)
        cfg = apply_overrides(saved, overrides or {})
        tokenizer = Tokenizer.from_json(meta["tokenizer"])
        mesh = mesh or one_device_mesh()
        graphdef, abstract_params, params_sh = abstract_model(cfg.model, mesh, cfg.train.seed)
        params = _restore_in_saved_layout(manager, step, cfg.model, saved.model.scan_layers, mesh, cfg.train.seed)
        params = jax.device_put(to_layout(params, cfg.model.scan_layers), params_sh)
    except DamagedCheckpoint as damaged:  # read-only here: say which steps are left, move nothing
        others = sorted(s for s in manager.all_steps() if s != step)
        hint = f"other checkpoints: steps {others} (eval.py --step N)" if others else "no other checkpoint"
        raise DamagedCheckpoint(damaged.directory, damaged.step, f"{damaged.reason}; {hint}") from None
    return Run(cfg=cfg, graphdef=graphdef, params=params, tokenizer=tokenizer, meta=meta, step=step, workdir=workdir)
