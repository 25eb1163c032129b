"""The training loop: config -> task/tokenizer -> grain batches -> sharded train_step -> checkpoints.

Resumable to the same numbers (params, optimizer state, step and the data iterator are all in
the checkpoint), stops cleanly on SIGTERM/SIGINT with a checkpoint, and refuses to checkpoint
a non-finite state.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from latent import distributed, sharding, signals
from latent.config import Config, ConfigError
from latent.config_io import to_dict
from latent.data.splits import fit_run_tokenizer, load_splits, load_valid, resolve_vocab, run_scorer
from latent.data.tokenizer import Tokenizer
from latent.errors import TrainingDiverged  # noqa: F401 (raised here; importable from the loop)
from latent.eval.curves import CURVES_FILE, write_curves
from latent.eval.evaluator import Evaluator
from latent.methods import check_run_positions, evaluator_for, method_of
from latent.nn import Transformer
from latent.run import checkpoint as ckpt
from latent.run.load import abstract_model, with_shardings
from latent.train import init_from as init_source
from latent.train.optimizer import reset_moments, run_optimizer
from latent.train.step import TrainState, init_state, make_train_step

# ----------------------------------------------------------------------------- state


def build_state(cfg: Config, mesh, optimizer):
    """(graphdef, make_state, abstract state, state shardings): the train state is created by
    `make_state()` directly with its shardings (never materialised on one device)."""
    graphdef, abstract_params, params_sh = abstract_model(cfg.model, mesh, cfg.train.seed)

    def init_params():
        return nnx.split(Transformer(cfg.model, rngs=nnx.Rngs(cfg.train.seed)))[1]

    abstract_state = jax.eval_shape(lambda: init_state(init_params(), optimizer))
    opt_sh = sharding.matching_shardings(abstract_state.opt_state, abstract_params, params_sh, mesh)
    state_sh = TrainState(step=sharding.replicated(mesh), params=params_sh, opt_state=opt_sh)
    make = jax.jit(lambda: init_state(init_params(), optimizer), out_shardings=state_sh)
    return graphdef, make, abstract_state, state_sh


class StepProgram(NamedTuple):
    """A run's train step as `train()` runs it, and what it is built from (`build_step`)."""

    step_fn: Any  # jax.jit of (state, batch) -> (state, metrics), the state donated, in `mesh` (sharding.InMesh)
    traces: Callable[[], int]  # how often step_fn was traced: one compile per batch shape
    graphdef: Any
    optimizer: Any
    schedule: Any
    make_state: Callable  # () -> a fresh TrainState, created sharded
    abstract_state: TrainState  # ShapeDtypeStructs: nothing allocated
    state_sh: TrainState  # the state's shardings
    batch_sh: Any  # the batch's sharding: the leading (batch) axis split over data and fsdp


def build_step(cfg: Config, method, source, mesh) -> StepProgram:
    """The jitted train step of run `cfg` on `mesh`: the source's objective under
    latent.train.step's update (or the source's own update rule: RL's inner epochs), with the
    state's and the batch's shardings. `train()` runs it; tpu/aot.py compiles it for a TPU
    topology without running it."""
    optimizer, schedule = run_optimizer(cfg, method.updates_per_step(cfg))
    graphdef, make_state, abstract_state, state_sh = build_state(cfg, mesh, optimizer)
    batch_sh = sharding.batch_sharding(mesh, ndim=1)  # the leading (batch) axis split, any rank: RL batches hold [N] arrays
    make_step = getattr(source, "make_train_step", None)  # a method's own update rule (RL: rl.inner_epochs updates)
    if make_step is None:
        update = make_train_step(graphdef, optimizer, schedule, cfg.optimizer.grad_accum, objective=source.objective)
    else:
        update = make_step(graphdef, optimizer, schedule)
    train_step, traces = count_traces(update)
    step_fn = sharding.InMesh(jax.jit(
        train_step,
        in_shardings=(state_sh, batch_sh),
        out_shardings=(state_sh, sharding.replicated(mesh)),
        donate_argnums=(0,),
    ), mesh)  # the model's activation constraints resolve to `mesh`
    return StepProgram(step_fn, traces, graphdef, optimizer, schedule, make_state, abstract_state, state_sh, batch_sh)


def check_batch_divides(cfg: Config, mesh) -> None:
    """ConfigError unless train.batch_size splits evenly over the mesh's batch devices and the
    micro-batches of optimizer.grad_accum; for RL, also its batch of rollouts (rl.prompts_per_step x
    rl.group_size rows), which the learning step's batch sharding splits the same way."""
    n_batch_shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if cfg.train.batch_size % (n_batch_shards * cfg.optimizer.grad_accum):
        raise ConfigError(
            f"train.batch_size={cfg.train.batch_size} must be divisible by data*fsdp={n_batch_shards} "
            f"times optimizer.grad_accum={cfg.optimizer.grad_accum}"
        )
    rollouts = cfg.rl.prompts_per_step * cfg.rl.group_size
    if method_of(cfg).name == "rl" and rollouts % n_batch_shards:
        raise ConfigError(f"rl.prompts_per_step={cfg.rl.prompts_per_step} x rl.group_size={cfg.rl.group_size} = "
                          f"{rollouts} rollouts must be divisible by data*fsdp={n_batch_shards}")


def restore_state(manager, abstract_state, state_sh, step: int):
    """(train state, data-iterator state, meta) of checkpoint `step`, placed by `state_sh`."""
    params, opt_state, data_state, meta = ckpt.restore(
        manager, with_shardings(abstract_state.params, state_sh.params),
        with_shardings(abstract_state.opt_state, state_sh.opt_state), step,
    )
    state = TrainState(step=jax.device_put(np.int32(meta["step"]), state_sh.step), params=params, opt_state=opt_state)
    return state, data_state, meta


def load_init(cfg: Config, mesh):
    """(cfg, params, tokenizer, record) to start from train.init_from: a run directory's latest
    checkpoint (restored onto `mesh`) or a Hugging Face model directory, with the tokens the run
    needs added (latent.train.init_from)."""
    from latent.train.init_from import load_start

    return load_start(cfg, mesh)


# ----------------------------------------------------------------------------- logging


METRICS_FILE = "metrics.jsonl"


class MetricsLog:
    """metrics.jsonl (one JSON object per logged step) plus TensorBoard when tensorboardX exists.

    Every row carries `time` (unix seconds) and `elapsed_s` (since `started_at`, the start of
    this invocation), so the rows of a resumed run can be placed on the wall clock. Written by
    one process of a multi-process run (`enabled`); the others' rows would be the same."""

    CLOCK_KEYS = ("time", "elapsed_s")

    def __init__(self, workdir: Path, started_at: float | None = None, enabled: bool = True):
        self.path = workdir / METRICS_FILE
        self.started_at = time.time() if started_at is None else started_at
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        try:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(str(workdir / "tensorboard"))
        except ImportError:
            pass

    def write(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        now = time.time()
        row = {"step": int(step), "time": round(now, 3), "elapsed_s": round(now - self.started_at, 3),
               **{k: _to_json(v) for k, v in metrics.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for key, value in row.items():
                if key != "step" and key not in self.CLOCK_KEYS and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, step)
            self.writer.flush()

    def close(self):
        if self.writer is not None:
            self.writer.close()


def _to_json(value):
    value = np.asarray(value).item() if hasattr(value, "shape") else value
    return float(value) if isinstance(value, (np.floating, float)) else value


class StopRequest:
    """SIGTERM/SIGINT set a flag; the loop checkpoints at the next step boundary and exits."""

    def __init__(self):
        self.signal_name = None
        self._previous = {}

    def __enter__(self):
        signals.raise_pending()  # a Ctrl-C in setup that Python swallowed stops the run here, before any step
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# ----------------------------------------------------------------------------- the loop


def train(cfg: Config, workdir: str | Path, *, progress: bool = True, stop_at_step: int | None = None) -> dict:
    """Train (or resume) in `workdir`; returns a summary with the final eval metrics.

    stop_at_step: checkpoint and return at this step as if interrupted (resume continues).
    """
    workdir = Path(workdir)
    started_at = time.time()
    writer = distributed.is_writer()  # process 0 writes the run's files; every process saves checkpoints
    progress = progress and writer
    # Nothing is written to the workdir before the data, the tokenizer and the batch source are
    # ready: a missing data file or a Ctrl-C during setup leaves a fresh workdir empty.
    manager = ckpt.make_manager(workdir, cfg.checkpoint) if (workdir / ckpt.CHECKPOINT_DIR).is_dir() else None
    resume_step = manager.latest_step() if manager is not None else None

    mesh = sharding.make_mesh(cfg.mesh)
    init_params = init_record = None
    if resume_step is not None:  # a damaged checkpoint is set aside for the previous one
        meta, resume_step = ckpt.latest_intact(manager, lambda step: ckpt.read_meta(manager, step), resume_step)
    if resume_step is not None:
        tokenizer = Tokenizer.from_json(meta["tokenizer"])
        if init_source.read_kind(workdir) is not None:  # its model came from train.init_from's config
            cfg = cfg.replace(model=init_source.adopt_model(cfg.model, ckpt.model_config_of(meta)))
        cfg = resolve_vocab(cfg, tokenizer)
        ckpt.check_same_model(ckpt.model_config_of(meta), cfg.model, str(workdir))
        ckpt.check_resumable(ckpt.config_of(meta), cfg, str(workdir))  # before config.json is rewritten
        check_fits(cfg, tokenizer)
        if resume_step >= cfg.train.steps:  # finished: no training data, no optimizer, no train step
            summary = _evaluate_finished(cfg, workdir, manager, resume_step, tokenizer, mesh, progress)
            if summary is not None:
                return summary
            resume_step = manager.latest_step()  # its last checkpoint was damaged and set aside

    method = method_of(cfg)
    method.check(cfg)
    train_examples, valid_examples, scorer = load_splits(cfg, check_file=method.check_file(cfg))
    if resume_step is None:
        if cfg.train.init_from:
            cfg, init_params, tokenizer, init_record = load_init(cfg, mesh)
        else:
            tokenizer = fit_run_tokenizer(cfg, train_examples, valid_examples)
            cfg = resolve_vocab(cfg, tokenizer)
        check_fits(cfg, tokenizer)

    check_batch_divides(cfg, mesh)
    source = method.source(cfg, train_examples, tokenizer, cfg.train.batch_size)  # global batches, the same on every process

    signals.raise_pending()  # a Ctrl-C during setup that Python swallowed: still nothing written
    workdir.mkdir(parents=True, exist_ok=True)
    if writer:
        if init_record is not None:
            init_source.write_record(workdir, init_record)
        (workdir / "config.json").write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
        tokenizer.save(workdir / "tokenizer.json")
    manager = manager or ckpt.make_manager(workdir, cfg.checkpoint)

    program = build_step(cfg, method, source, mesh)
    graphdef, optimizer, abstract_state, state_sh = program.graphdef, program.optimizer, program.abstract_state, program.state_sh
    if resume_step is not None:
        restored, resume_step = ckpt.latest_intact(
            manager, lambda step: restore_state(manager, abstract_state, state_sh, step), resume_step
        )
    if resume_step is not None:
        state, data_state, _ = restored
        source.set_state(data_state)
        if hasattr(source, "restore_param_trees"):  # trees it keeps in each checkpoint (RL: the KL reference)
            source.restore_param_trees(lambda names: ckpt.restore_param_trees(
                manager, with_shardings(abstract_state.params, state_sh.params), names, resume_step))
    else:
        state = program.make_state()
        if init_params is not None:  # weights from train.init_from; optimizer state stays fresh
            state = state.replace(params=jax.device_put(init_params, state_sh.params))
    step_fn, batch_sh = program.step_fn, program.batch_sh

    log = MetricsLog(workdir, started_at, enabled=writer)
    start_step = int(state.step)
    evaluator = make_evaluator(cfg, graphdef, tokenizer, valid_examples, scorer, progress,
                               source.eval_latent_steps(start_step, valid_examples))
    summary = {"workdir": str(workdir), "resumed_from": resume_step, "dropped_long_examples": source.dropped}

    def save(step, metrics=None):
        extra = {"stage": source.trained_stage(step), "eval_latent_steps": source.eval_latent_steps(step)}
        trees = source.param_trees() if hasattr(source, "param_trees") else None
        ckpt.save(manager, step, state.params, state.opt_state, source.get_state(), cfg, tokenizer.to_json(), metrics,
                  extra, trees)

    reset_opt_state = jax.jit(lambda opt_state, params: reset_moments(optimizer, opt_state, params),
                              out_shardings=state_sh.opt_state, donate_argnums=(0,))

    bar = tqdm(total=cfg.train.steps, initial=start_step, desc="train", unit="step", disable=not progress)
    pending = None  # (step, metrics on device, real tokens): fetched a step late so the host never waits
    window = {"tokens": 0.0, "start": time.perf_counter()}
    step = start_step
    seen_shapes: set[tuple] = set()
    time_limit_s = None if cfg.train.time_limit_minutes is None else 60.0 * cfg.train.time_limit_minutes
    started = time.perf_counter()
    with StopRequest() as stop:
        try:
            while step < cfg.train.steps:
                if cfg.latent.reset_optimizer and step > 0 and source.stage(step) != source.stage(step - 1):
                    state = state.replace(opt_state=reset_opt_state(state.opt_state, state.params))  # a new stage
                # a source that samples from the model being trained (RL rollouts) is handed its params
                batch = source.next(step, state.params) if getattr(source, "needs_params", False) else source.next(step)
                seen_shapes.add(source.shape_key(batch))
                n_tokens = source.real_tokens(batch)
                batch = jax.tree.map(lambda v: sharding.global_batch(v, batch_sh), batch)
                state, metrics = step_fn(state, batch)
                step += 1
                if pending is not None:
                    _check_and_log(pending, log, cfg, window, bar)
                host_metrics = source.host_metrics() if hasattr(source, "host_metrics") else {}
                pending = (step, metrics | host_metrics, n_tokens)
                out_of_time = time_limit_s is not None and time.perf_counter() - started >= time_limit_s
                stopping = stop.signal_name  # read once: a signal landing later in this step waits for the next
                if jax.process_count() > 1:  # the clock and a signal reach processes apart; they must stop together
                    stopping, out_of_time = _agree_to_stop(stopping, out_of_time, step % cfg.train.log_every == 0)
                at_eval = step % cfg.train.eval_every == 0 or step == cfg.train.steps or out_of_time
                if stop_at_step is not None and step >= stop_at_step and not stopping:
                    stopping = "stop_at_step"
                at_save = step % cfg.train.checkpoint_every == 0 or at_eval or stopping
                if at_save:
                    _check_and_log(pending, log, cfg, window, bar)  # never checkpoint a non-finite state
                    pending = None
                    eval_metrics = None
                    if at_eval and not stopping:
                        eval_metrics = _run_eval(evaluator, state.params, scorer, source.eval_latent_steps(step, valid_examples))
                        log.write(step, {f"eval_{k}": v for k, v in eval_metrics.items() if k != "records"})
                        if writer:
                            write_curves(log.path, workdir / CURVES_FILE)
                        summary["eval"] = {k: v for k, v in eval_metrics.items() if k != "records"}
                    save(step, _best_metrics(cfg, eval_metrics))
                if out_of_time and not stopping and step < cfg.train.steps:  # at the last step it is done
                    stopping = "time_limit"
                if stopping:
                    manager.wait_until_finished()
                    if writer:
                        bar.write(f"{stopping}: checkpoint saved at step {step}; rerun the same command to resume",
                                  file=sys.stderr)
                    summary["stopped_by"] = stopping
                    break
            if pending is not None:
                _check_and_log(pending, log, cfg, window, bar)
        finally:
            manager.wait_until_finished()
            bar.close()
            log.close()
    if writer:
        write_curves(log.path, workdir / CURVES_FILE)
    summary["step"] = step
    summary["train_step_compiles"] = program.traces()
    summary["batch_shapes"] = sorted(seen_shapes)  # (length,) for text; (P, K, S) for latent batches
    return summary


def _agree_to_stop(stopping: str | None, out_of_time: bool, at_log_step: bool) -> tuple[str | None, bool]:
    """(stop reason, out of time) shared by every process of a multi-process run, so that all save
    and stop at the same step: compared at log steps (one small collective), else (None, False), so
    a signal or the time limit is acted on at the next log step."""
    if not at_log_step:
        return None, False
    anyone_stopping, anyone_out_of_time = distributed.any_process(stopping is not None, out_of_time)
    if anyone_stopping and stopping is None:
        stopping = "stop requested on another process"
    return stopping, anyone_out_of_time


def _check_and_log(pending, log, cfg, window, bar) -> None:
    step, metrics, n_tokens = pending
    metrics = jax.device_get(metrics)
    window["tokens"] += n_tokens
    if not (math.isfinite(float(metrics["loss"])) and math.isfinite(float(metrics["grad_norm"]))):
        raise TrainingDiverged(
            f"step {step}: loss={float(metrics['loss'])} grad_norm={float(metrics['grad_norm'])} is not finite; "
            "stopped without checkpointing this state (the last checkpoint is intact)"
        )
    if step % cfg.train.log_every == 0 or step == cfg.train.steps:
        elapsed = time.perf_counter() - window["start"]
        row = {k: float(v) for k, v in metrics.items()}
        row["tokens_per_s"] = window["tokens"] / elapsed if elapsed > 0 else 0.0
        log.write(step, row)
        bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}")
        window["tokens"], window["start"] = 0.0, time.perf_counter()
    bar.update(step - bar.n)


def _best_metrics(cfg, eval_metrics):
    if not eval_metrics or cfg.checkpoint.best_metric not in eval_metrics:
        return None
    return {cfg.checkpoint.best_metric: float(eval_metrics[cfg.checkpoint.best_metric])}


def count_traces(fn):
    """(fn, traces()): `fn` counting how often it is traced. Under jax.jit a function is traced
    once per new input shape (then compiled), so this counts the train step's compiles."""
    traced = []

    def counted(*args):
        traced.append(1)
        return fn(*args)

    return counted, lambda: len(traced)


def check_fits(cfg: Config, tokenizer: Tokenizer) -> None:
    """The model's vocabulary holds the tokenizer's, and a learned position table every sequence."""
    if tokenizer.vocab_size > cfg.model.vocab_size:
        raise ConfigError(
            f"model.vocab_size={cfg.model.vocab_size} is smaller than the tokenizer's {tokenizer.vocab_size} tokens"
        )
    check_run_positions(cfg)


def _evaluate_finished(cfg: Config, workdir: Path, manager, step: int, tokenizer, mesh, progress: bool) -> dict | None:
    """A rerun of a finished run: evaluate its last checkpoint, restoring the parameters only
    (no training data read, no optimizer state). None when that checkpoint turned out damaged
    and the intact one before it is unfinished (set aside; the caller resumes training)."""
    graphdef, abstract_params, params_sh = abstract_model(cfg.model, mesh, cfg.train.seed)
    target = with_shardings(abstract_params, params_sh)
    restored, step = ckpt.latest_intact(manager, lambda s: ckpt.restore_params(manager, target, s), step)
    if step is None or step < cfg.train.steps:
        return None
    params, meta = restored
    valid_examples = load_valid(cfg)
    scorer = run_scorer(cfg, valid_examples)
    latent_steps = method_of(cfg).checkpoint_latent_steps(cfg, meta, valid_examples)
    evaluator = make_evaluator(cfg, graphdef, tokenizer, valid_examples, scorer, progress, latent_steps)
    metrics = _run_eval(evaluator, params, scorer, latent_steps)
    if distributed.is_writer():
        write_curves(workdir / METRICS_FILE, workdir / CURVES_FILE)
    return {"workdir": str(workdir), "resumed_from": step, "step": step,
            "eval": {k: v for k, v in metrics.items() if k != "records"}}


def make_evaluator(cfg, graphdef, tokenizer, examples, scorer, progress, latent_steps=0) -> Evaluator:
    """The run's validation Evaluator, built once per run (prompts tokenized, generate built).
    Training's evaluations analyse what was decoded; the analyses that run the model again
    (chain_leak) and need the warm-up's keys (key_agreement) are eval.py's."""
    return evaluator_for(cfg, graphdef, tokenizer, examples, scorer, latent_steps=latent_steps, progress=progress,
                         model_passes=False)


def _run_eval(evaluator: Evaluator, params, scorer, latent_steps=0) -> dict:
    """Evaluate `params`; in a multi-process run every process decodes every example from the
    params gathered whole onto its first device (the same results on each; process 0 writes them)."""
    return evaluator(distributed.on_this_process(params), latent_steps=latent_steps) | {"scorer": scorer.name}
