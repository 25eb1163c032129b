"""Checkpoints with orbax: train state + data-iterator state + resolved config + tokenizer.

orbax writes each step into a temporary directory and renames it when complete, so a run
killed mid-save resumes from the last complete checkpoint; `latest_step()` never sees a
partial one. The last `keep` checkpoints are kept, plus the best by the eval metric.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from flax import nnx
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from latent.config import Config, ModelConfig, from_dict, to_dict
from latent.nn import Transformer
from latent.nn.paths import param_path

CHECKPOINT_DIR = "checkpoints"


class CheckpointMismatch(ValueError):
    """The workdir's checkpoint belongs to a different model; names the parameter."""


def make_manager(workdir: str | Path, ckpt_cfg) -> ocp.CheckpointManager:
    policies = [pp.LatestN(n=ckpt_cfg.keep)]
    if ckpt_cfg.keep_best:
        metric = ckpt_cfg.best_metric
        policies.append(
            pp.BestN(
                get_metric_fn=lambda metrics: metrics[metric],
                reverse=ckpt_cfg.best_mode == "min",
                n=1,
                keep_checkpoints_without_metrics=False,
            )
        )
    options = ocp.CheckpointManagerOptions(
        preservation_policy=pp.AnyPreservationPolicy(policies),
        enable_async_checkpointing=ckpt_cfg.async_save,
        create=True,
    )
    return ocp.CheckpointManager(Path(workdir).absolute() / CHECKPOINT_DIR, options=options)


def save(
    manager, step: int, state, data_state: dict, cfg: Config, tokenizer_json: str, metrics=None, extra=None
) -> None:
    """`extra`: more JSON facts for the meta record (e.g. the curriculum stage)."""
    meta = {"config": to_dict(cfg), "step": int(step), "tokenizer": tokenizer_json, **(extra or {})}
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state),
            meta=ocp.args.JsonSave(meta),
        ),
        metrics=metrics,
        force=True,
    )


def read_meta(manager, step: int | None = None) -> dict:
    step = manager.latest_step() if step is None else step
    restored = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return restored["meta"]


def restore(manager, abstract_state, step: int | None = None):
    """(state placed by the shardings in `abstract_state`, data-iterator state, meta)."""
    step = manager.latest_step() if step is None else step
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore(),
            meta=ocp.args.JsonRestore(),
        ),
    )
    return restored["state"], restored["data"], restored["meta"]


def check_same_model(saved: ModelConfig, wanted: ModelConfig, where: str) -> None:
    """Raise CheckpointMismatch naming the first parameter whose shape differs."""
    if saved == wanted:
        return
    saved_shapes = _param_shapes(saved)
    wanted_shapes = _param_shapes(wanted)
    for name in sorted(set(saved_shapes) | set(wanted_shapes)):
        a, b = saved_shapes.get(name), wanted_shapes.get(name)
        if a != b:
            describe = lambda s: "absent" if s is None else list(s)  # noqa: E731
            changed = [
                f"model.{f.name}: {getattr(saved, f.name)!r} -> {getattr(wanted, f.name)!r}"
                for f in dataclasses.fields(saved)
                if getattr(saved, f.name) != getattr(wanted, f.name)
            ]
            raise CheckpointMismatch(
                f"{where} holds a checkpoint of a different model: parameter {name} is {describe(a)} there "
                f"but {describe(b)} in this config ({'; '.join(changed)}). Use another --workdir, or "
                "match the model config to the checkpoint (see config.json in the workdir)."
            )


# Fields a resumed run may change: they decide how long the run goes, how often it logs, evaluates
# and saves, how it decodes for evaluation, where arrays sit, and the padding multiple of text
# batches (masked, so the maths is the same). Anything else changes what is trained (the model's
# equations, the data and its order, the optimizer, the curriculum, the abstract layout), so a
# resume under a new value would continue the run as a different experiment. `train.init_from`
# is read only when a run starts: a resumed run continues from its own checkpoint.
# `abstract.*_steps` are the warm-up phases' `train.steps`.
RESUMABLE_FIELDS = (
    "model.family",  # the Hugging Face export format only
    "train.steps", "train.log_every", "train.eval_every", "train.checkpoint_every", "train.time_limit_minutes",
    "train.init_from", "train.length_bucket",
    "abstract.bottleneck_steps", "abstract.distill_steps",
    "eval.*", "checkpoint.*", "mesh.*",
)


def _resumable(key: str) -> bool:
    return any(key == allowed or (allowed.endswith(".*") and key.startswith(allowed[:-1])) for allowed in RESUMABLE_FIELDS)


def changed_fields(saved: Config, wanted: Config) -> list[str]:
    """`section.field: old -> new` for every field outside RESUMABLE_FIELDS that differs."""
    changes = []
    for section in dataclasses.fields(saved):
        old_section, new_section = getattr(saved, section.name), getattr(wanted, section.name)
        for field in dataclasses.fields(old_section):
            key = f"{section.name}.{field.name}"
            old, new = getattr(old_section, field.name), getattr(new_section, field.name)
            if old != new and not _resumable(key):
                changes.append(f"{key}: {old!r} -> {new!r}")
    return changes


def check_resumable(saved: Config, wanted: Config, where: str) -> None:
    """Raise CheckpointMismatch naming every field (old -> new) whose change would continue the
    run under different maths or data; RESUMABLE_FIELDS may change. Compare after resolve_vocab."""
    changes = changed_fields(saved, wanted)
    if changes:
        raise CheckpointMismatch(
            f"{where} holds a run trained under another config: {'; '.join(changes)}. These fields change what "
            "is trained; resume with the saved values (config.json in the workdir) or use another --workdir"
        )


def config_of(meta: dict) -> Config:
    return from_dict(meta["config"])


def model_config_of(meta: dict) -> ModelConfig:
    return config_of(meta).model


def _param_shapes(cfg: ModelConfig) -> dict[str, tuple]:
    abstract = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
    params = nnx.state(abstract, nnx.Param)
    shapes = {}
    for path, leaf in jax.tree.leaves_with_path(params):
        shapes[".".join(map(str, param_path(path)))] = tuple(leaf.shape)
    return shapes
