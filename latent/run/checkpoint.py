"""Checkpoints with orbax: train state + data-iterator state + resolved config + tokenizer.

orbax writes each step into a temporary directory and renames it when complete, so a run
killed mid-save resumes from the last complete checkpoint; `latest_step()` never sees a
partial one. The last `keep` checkpoints are kept, plus the best by the eval metric.

A committed checkpoint can still be damaged afterwards (a truncated copy, a full disk): its
restore then raises DamagedCheckpoint naming the step. `set_aside` moves such a step out of
`checkpoints/` into `checkpoints_damaged/` (never deleting it), so that orbax neither lists it
as the latest nor garbage-collects or overwrites it when the run saves that step again.
"""

from __future__ import annotations

import dataclasses
import gc
import io
import logging
import re
import shutil
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from latent import distributed
from latent.config import Config, ModelConfig
from latent.config_io import from_dict, to_dict
from latent.errors import CheckpointMismatch, DamagedCheckpoint  # noqa: F401 (raised here; importable as ckpt.*)
from latent.nn import Transformer
from latent.nn.paths import param_path

CHECKPOINT_DIR = "checkpoints"
DAMAGED_DIR = "checkpoints_damaged"
# The items of each step directory, beside "data" (the data iterator) and "meta" (config, step,
# tokenizer). Checkpoints written before issue 22 hold one LEGACY_STATE_ITEM (step, params,
# opt_state and, in some, a PRNG key nothing read) instead of the two.
PARAMS_ITEM = "params"
OPT_STATE_ITEM = "opt_state"
LEGACY_STATE_ITEM = "state"


# Errors of a checkpoint read that say nothing about its files: raised as they are, never taken
# for damage (a checkpoint set aside for them would be lost to the run for no reason).
NOT_DAMAGE = (PermissionError, MemoryError)


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
    manager, step: int, params, opt_state, data_state: dict, cfg: Config, tokenizer_json: str, metrics=None,
    extra=None, param_trees: dict | None = None,
) -> None:
    """Save `params` and `opt_state` as separate items (so evaluation and train.init_from restore
    the parameters alone), the data-iterator state and the meta record (config, step, tokenizer;
    `extra`: more JSON facts, e.g. the curriculum stage). `opt_state` None: no optimizer item.
    `param_trees`: more trees shaped like the params, one item each (RL: the KL's frozen reference),
    read back by `restore_param_trees`."""
    meta = {"config": to_dict(cfg), "step": int(step), "tokenizer": tokenizer_json, **(extra or {})}
    items = {PARAMS_ITEM: ocp.args.StandardSave(params), "data": ocp.args.JsonSave(data_state),
             "meta": ocp.args.JsonSave(meta)}
    if opt_state is not None:
        items[OPT_STATE_ITEM] = ocp.args.StandardSave(opt_state)
    for name, tree in (param_trees or {}).items():
        if name in items or name == LEGACY_STATE_ITEM:
            raise ValueError(f"a checkpoint item named {name!r} would replace the run's own")
        items[name] = ocp.args.StandardSave(tree)
    manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)


def read_meta(manager, step: int | None = None) -> dict:
    step = manager.latest_step() if step is None else step
    try:
        with _quiet_orbax(Path(manager.directory) / str(step)):
            restored = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    except NOT_DAMAGE:
        raise
    except Exception as err:  # a committed step whose JSON cannot be read is damaged
        raise DamagedCheckpoint(Path(manager.directory), step, _first_line(err)) from None
    return restored["meta"]


def saved_items(manager, step: int) -> set[str]:
    """The items of a step directory: {params, opt_state, data, meta}, or {state, data, meta} for
    a checkpoint written before params and optimizer state were split."""
    step_dir = Path(manager.directory) / str(step)
    return {p.name for p in step_dir.iterdir() if p.is_dir()} if step_dir.is_dir() else set()


def restore_params(manager, abstract_params, step: int | None = None):
    """(params placed by the shardings in `abstract_params`, meta): the parameters alone, no
    optimizer state read or allocated (evaluation, train.init_from, span sampling)."""
    step = manager.latest_step() if step is None else step

    def read():
        if LEGACY_STATE_ITEM in saved_items(manager, step):
            state_dir = Path(manager.directory) / str(step) / LEGACY_STATE_ITEM
            return _read_partial(state_dir, {"params": abstract_params})["params"], read_meta(manager, step)
        restored = manager.restore(
            step, args=ocp.args.Composite(**{PARAMS_ITEM: ocp.args.StandardRestore(abstract_params)},
                                          meta=ocp.args.JsonRestore())
        )
        return restored[PARAMS_ITEM], restored["meta"]

    return _reading(manager, step, read)


def restore(manager, abstract_params, abstract_opt_state, step: int | None = None):
    """(params, optimizer state, data-iterator state, meta) of `step` (default: the latest),
    placed by the shardings in the abstract trees. Checkpoints written before the split (one
    `state` item, some with a PRNG key nothing read) still restore."""
    step = manager.latest_step() if step is None else step

    def read():
        if LEGACY_STATE_ITEM in saved_items(manager, step):
            state_dir = Path(manager.directory) / str(step) / LEGACY_STATE_ITEM
            state = _read_partial(state_dir, {"params": abstract_params, "opt_state": abstract_opt_state})
            rest = manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()))
            return state["params"], state["opt_state"], rest["data"], rest["meta"]
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                **{PARAMS_ITEM: ocp.args.StandardRestore(abstract_params),
                   OPT_STATE_ITEM: ocp.args.StandardRestore(abstract_opt_state)},
                data=ocp.args.JsonRestore(),
                meta=ocp.args.JsonRestore(),
            ),
        )
        return restored[PARAMS_ITEM], restored[OPT_STATE_ITEM], restored["data"], restored["meta"]

    return _reading(manager, step, read)


def restore_param_trees(manager, abstract_params, names, step: int) -> dict:
    """{name: tree} of the `names` that `save(param_trees=...)` wrote at `step`, each placed like
    `abstract_params` (the same structure); a name the step does not hold is left out."""
    wanted = [name for name in names if name in saved_items(manager, step)]
    if not wanted:
        return {}

    def read():
        args = {name: ocp.args.StandardRestore(abstract_params) for name in wanted}
        return manager.restore(step, args=ocp.args.Composite(**args))

    restored = _reading(manager, step, read)
    return {name: restored[name] for name in wanted}


def _reading(manager, step: int, read):
    """read(), with a failure whose cause is the step's files raised as DamagedCheckpoint (any
    other failure, e.g. files that read but not into the target, is raised as it is)."""
    try:
        with _quiet_orbax(Path(manager.directory) / str(step)):
            return read()
    except (*NOT_DAMAGE, CheckpointMismatch, DamagedCheckpoint):
        raise
    except Exception as err:
        reason = damage_of(manager, step)
        if reason is None:
            raise
        raise DamagedCheckpoint(Path(manager.directory), step, reason) from err


def _read_partial(item_dir: Path, target: dict) -> dict:
    """The subtrees `target` names (top-level keys) of a saved pytree item, leaving the others
    (an optimizer state, a retired PRNG key) unread; a target leaf the item lacks is an error
    (orbax's partial restore would hand the target's own leaf back)."""
    handler = ocp.PyTreeCheckpointHandler()
    saved = set(ocp.tree.to_flat_dict(handler.metadata(item_dir).tree, sep="."))
    wanted = ocp.tree.to_flat_dict(ocp.tree.serialize_tree(target, keep_empty_nodes=True), sep=".")
    missing = sorted(name for name in wanted if name not in saved)
    if missing:
        raise CheckpointMismatch(f"{item_dir} holds no {missing[0]} ({len(missing)} of the wanted arrays are missing): "
                                 "it was written for another model or optimizer")
    return handler.restore(
        item_dir,
        args=ocp.args.PyTreeRestore(
            target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True
        ),
    )


def damage_of(manager, step: int) -> str | None:
    """Why `step`'s files cannot be read back, or None when they all can.

    Reads every saved array (of every array item) as a host numpy array in the structure it was saved with, so a
    restore that failed only because the target differs (another optimizer, another model) is
    not mistaken for damage. Called only after a restore failed: it costs a second full read."""
    step_dir = Path(manager.directory) / str(step)
    try:
        with _quiet_orbax(step_dir):
            read_meta(manager, step)
            manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))
            handler = ocp.PyTreeCheckpointHandler()
            for item in sorted(saved_items(manager, step) & {PARAMS_ITEM, OPT_STATE_ITEM, LEGACY_STATE_ITEM}):
                saved = handler.metadata(step_dir / item).tree
                as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), saved)
                handler.restore(step_dir / item, args=ocp.args.PyTreeRestore(restore_args=as_numpy))
    except DamagedCheckpoint as damaged:
        return damaged.reason
    except NOT_DAMAGE:
        raise
    except Exception as err:
        return _first_line(err)
    return None


def latest_intact(manager, read, step: int | None = None):
    """(read(step), step) for the latest step at or before `step` whose files read back; each
    damaged step after it is then set aside (one line on stderr says which, and where it went).
    When every step is damaged nothing is moved: DamagedCheckpoint names them and what to do
    (the user decides whether to start afresh). (None, None) when there is no step at all."""
    step = manager.latest_step() if step is None else step
    candidates = sorted((s for s in manager.all_steps() if step is not None and s <= step), reverse=True)
    damaged_steps: list[DamagedCheckpoint] = []
    for candidate in candidates:
        try:
            result = read(candidate)
        except DamagedCheckpoint as damaged:
            if damaged.directory != Path(manager.directory):
                raise  # another run's checkpoint (e.g. train.init_from): not ours to move
            damaged_steps.append(damaged)
            continue
        if damaged_steps and distributed.is_writer():  # one process moves them (a shared run directory)
            for damaged in damaged_steps:
                where = set_aside(damaged)
                print(f"warning: {damaged}; moved it to {where}; resuming from step {candidate}", file=sys.stderr)
        if damaged_steps:
            distributed.barrier("damaged checkpoints set aside")
            manager.reload()
        return result, candidate
    if damaged_steps:
        raise _none_intact(damaged_steps)
    return None, None


def _none_intact(damaged_steps: list[DamagedCheckpoint]) -> DamagedCheckpoint:
    latest, directory = damaged_steps[0], damaged_steps[0].directory
    others = sorted(d.step for d in damaged_steps[1:])
    also = f"; steps {others} are damaged too" if others else ""
    return DamagedCheckpoint(
        directory, latest.step,
        f"{latest.reason}{also}; no intact checkpoint is left to resume from. To start afresh, move "
        f"{directory} aside (or train in another --workdir); nothing was moved",
    )


def set_aside(damaged: DamagedCheckpoint) -> Path:
    """Move the damaged step out of `checkpoints/` into `checkpoints_damaged/` beside it (kept
    for inspection; never deleted). Returns where it went."""
    source = damaged.directory / str(damaged.step)
    target = damaged.directory.parent / DAMAGED_DIR / str(damaged.step)
    suffix = 1
    while target.exists():  # the same step damaged again after an earlier set-aside
        target = target.with_name(f"{damaged.step}.{suffix}")
        suffix += 1
    target.parent.mkdir(exist_ok=True)
    shutil.move(str(source), str(target))
    return target


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    line = text[0] if text else type(err).__name__
    return line if len(line) <= 300 else line[:297] + "..."


@contextmanager
def _quiet_orbax(directory: Path):
    """orbax logs every failed read of a restore before raising, and the reads still in flight
    when it gives up print one 'Event loop is closed' traceback each as they land (dozens for one
    truncated file, from several threads at once, so their lines interleave), and asyncio logs
    their tasks' errors when they are collected; the caller reports the one line that matters.
    What else reaches stderr in the meantime is passed on."""
    loggers = [logging.getLogger(name) for name in ("absl", "orbax", "asyncio")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    real_stderr, captured = sys.stderr, io.StringIO()
    sys.stderr = captured
    try:
        yield
    except BaseException:
        _wait_until_quiet(captured)  # let the reads in flight land while stderr is still captured
        gc.collect()  # their abandoned tasks report 'exception was never retrieved' now, to a quiet logger
        _drop_abandoned_reads_at_exit(directory)
        raise
    finally:
        sys.stderr = real_stderr
        real_stderr.write(_without_closed_loop_tracebacks(captured.getvalue()))
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


# What marks a late report of a read that a failed restore abandoned: orbax's read coroutine, or the
# directory of a checkpoint whose restore failed (tensorstore's errors name the file they read).
_ABANDONED_READ_MARKS: set[str] = {"_read_array_index"}


def _is_abandoned_read(text: str) -> bool:
    return any(mark in text for mark in _ABANDONED_READ_MARKS) or "RuntimeError: Event loop is closed" in text


def _exception_text(exc_type, exc_value, exc_traceback) -> str:
    return "".join(traceback.format_exception(exc_type, exc_value, exc_traceback)) if exc_type else ""


class _DropAbandonedReads(logging.Filter):
    """asyncio logs 'Task exception was never retrieved' for each read a failed restore abandoned,
    whenever its task is collected (seconds later on a loaded machine): drop those (only those)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _is_abandoned_read(record.getMessage() + _exception_text(*(record.exc_info or (None,) * 3)))


def _drop_abandoned_reads_at_exit(directory: Path) -> None:
    """The reads a failed restore of `directory` abandoned keep failing after the restore has
    raised: their coroutines are closed at exit ('Exception ignored in: <coroutine ...>'), asyncio
    logs their tasks' errors when they are collected, and tensorstore reports a read that lands
    after its loop closed as an unraisable error or from its own thread, each naming the file. The
    restore's one-line error has said all of it: drop those reports (only those: any other error,
    or one about another directory, still prints) for the rest of the process."""
    _ABANDONED_READ_MARKS.add(str(Path(directory).resolve()))
    _ABANDONED_READ_MARKS.add(str(directory))
    previous_unraisable = sys.unraisablehook
    if getattr(previous_unraisable, "drops_abandoned_reads", False):
        return
    logging.getLogger("asyncio").addFilter(_DropAbandonedReads())

    def unraisable_hook(unraisable):
        about = getattr(getattr(unraisable, "object", None), "__qualname__", "") + repr(getattr(unraisable, "object", None))
        text = about + _exception_text(unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback)
        if not _is_abandoned_read(text):
            previous_unraisable(unraisable)

    previous_thread_hook = threading.excepthook

    def thread_hook(args):
        if not _is_abandoned_read(_exception_text(args.exc_type, args.exc_value, args.exc_traceback)):
            previous_thread_hook(args)

    unraisable_hook.drops_abandoned_reads = True
    sys.unraisablehook, threading.excepthook = unraisable_hook, thread_hook


def _wait_until_quiet(captured: io.StringIO, quiet_s: float = 1.0, most_s: float = 10.0) -> None:
    deadline, size, last_change = time.monotonic() + most_s, -1, time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - last_change < quiet_s:
        if len(captured.getvalue()) != size:
            size, last_change = len(captured.getvalue()), time.monotonic()
        time.sleep(0.05)


# The lines of an asyncio 'Event loop is closed' traceback, matched one by one: tracebacks printed
# by several threads at once interleave line by line.
_CLOSED_LOOP_LINE = re.compile(
    r"Traceback \(most recent call last\):|RuntimeError: Event loop is closed|\s+File \".*asyncio/.*"
    r"|\s+(self\._check_closed\(\)|raise RuntimeError\('Event loop is closed'\)|\S.*call_soon.*)"
)


def _without_closed_loop_tracebacks(text: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True) if not _CLOSED_LOOP_LINE.fullmatch(line.rstrip("\n")))


def check_same_model(saved: ModelConfig, wanted: ModelConfig, where: str) -> None:
    """Raise CheckpointMismatch naming the first parameter whose shape differs (or the layout:
    model.scan_layers stores the blocks stacked, and the optimizer state has the params' layout)."""
    if saved == wanted:
        return
    if saved.scan_layers != wanted.scan_layers:
        layout = lambda scan: "stacked, model.scan_layers=true" if scan else "per layer, model.scan_layers=false"  # noqa: E731
        raise CheckpointMismatch(
            f"{where} stores its parameters and optimizer state {layout(saved.scan_layers)}; a resume cannot "
            f"change the layout to {layout(wanted.scan_layers)}: resume with model.scan_layers="
            f"{str(saved.scan_layers).lower()}, or start a new run from this one (train.init_from={where} "
            f"model.scan_layers={str(wanted.scan_layers).lower()} converts the weights)"
        )
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
        if not dataclasses.is_dataclass(old_section):  # a top-level value (`method`)
            if old_section != new_section and not _resumable(section.name):
                changes.append(f"{section.name}: {old_section!r} -> {new_section!r}")
            continue
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


def as_trained(config: dict) -> dict:
    """A saved config as its run used it: one saved before task.valid_fraction existed validated a
    task.path run on the generator's split (valid_fraction=0), not on a held-out part of the file."""
    task = config.get("task", {})
    if task.get("path") and not task.get("valid_path") and "valid_fraction" not in task:
        return {**config, "task": {**task, "valid_fraction": 0.0}}
    return config


def config_of(meta: dict) -> Config:
    """The config a checkpoint's run trained under (older saved configs upgraded by `as_trained`)."""
    return from_dict(as_trained(meta["config"]))


def model_config_of(meta: dict) -> ModelConfig:
    return config_of(meta).model


def _param_shapes(cfg: ModelConfig) -> dict[str, tuple]:
    abstract = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
    params = nnx.state(abstract, nnx.Param)
    shapes = {}
    for path, leaf in jax.tree.leaves_with_path(params):
        shapes[".".join(map(str, param_path(path)))] = tuple(leaf.shape)
    return shapes
