"""The training loop: config -> task/tokenizer -> grain batches -> sharded train_step -> checkpoints.

Resumable to the same numbers (params, optimizer, step, RNG and the data iterator are all in
the checkpoint), stops cleanly on SIGTERM/SIGINT with a checkpoint, and refuses to checkpoint
a non-finite state.
"""

from __future__ import annotations

import json
import math
import signal
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from latent.config import Config, ConfigError, check_run_positions, to_dict
from latent.data import pipeline
from latent.data.tasks import get_task, load_examples
from latent.data.abstract import ABSTRACT_FORMATS
from latent.data.special_tokens import DEFAULT_NUM_ABSTRACT, SPECIAL
from latent.data.tokenizer import Tokenizer
from latent.eval.evaluate import evaluate, resolve_feedback, resolve_policy
from latent.nn import Transformer
from latent.train import checkpoint as ckpt
from latent.train import sharding
from latent.train.optimizer import make_optimizer, reset_moments
from latent.train.sources import make_source
from latent.train.step import TrainState, init_state, make_train_step


class TrainingDiverged(RuntimeError):
    """A non-finite loss or gradient; the message names the step."""


# ----------------------------------------------------------------------------- data


# The validation split is generated from its own seed, derived from the task seed.
VALID_SEED_OFFSET = 1_000_003


def load_valid(cfg: Config, task):
    if cfg.task.valid_path:
        return load_examples(cfg.task.valid_path)
    return task.generate(cfg.task.n_valid, seed=cfg.task.seed + VALID_SEED_OFFSET)


def load_splits(cfg: Config):
    """(train examples, valid examples, task used for scoring); train never repeats a valid question."""
    task = get_task(cfg.task.name)
    if cfg.task.path:
        train = load_examples(cfg.task.path)
    else:
        train = task.generate(cfg.task.n_train, seed=cfg.task.seed)
    valid = load_valid(cfg, task)
    held_out = {e.question for e in valid}
    train = [e for e in train if e.question not in held_out]
    return train, valid, task


def fit_tokenizer(train, valid, fmt: str, num_abstract: int = DEFAULT_NUM_ABSTRACT) -> Tokenizer:
    texts = []
    for example in list(train) + list(valid):
        prompt, target = pipeline.format_example(example, fmt)
        texts += [prompt, target]
    return Tokenizer.fit_word_level(texts, num_abstract=max(num_abstract, DEFAULT_NUM_ABSTRACT))


def resolve_vocab(cfg: Config, tokenizer: Tokenizer) -> Config:
    """Grow model.vocab_size to fit the tokenizer (rounded up to 64 for matmul-friendly shapes)."""
    needed = -(-tokenizer.vocab_size // 64) * 64
    if cfg.model.vocab_size >= tokenizer.vocab_size:
        return cfg
    return cfg.replace(model=cfg.model.replace(vocab_size=needed))


# ----------------------------------------------------------------------------- state


def build_state(cfg: Config, mesh, optimizer):
    """Train state created directly with its shardings (never materialised on one device)."""
    abstract_model = nnx.eval_shape(lambda: Transformer(cfg.model, rngs=nnx.Rngs(cfg.train.seed)))
    graphdef, abstract_params = nnx.split(abstract_model)
    params_sh = sharding.param_shardings(abstract_params, mesh)

    def init_params():
        return nnx.split(Transformer(cfg.model, rngs=nnx.Rngs(cfg.train.seed)))[1]

    abstract_state = jax.eval_shape(lambda: init_state(init_params(), optimizer, cfg.train.seed))
    opt_sh = sharding.matching_shardings(abstract_state.opt_state, abstract_params, params_sh, mesh)
    state_sh = TrainState(
        step=sharding.replicated(mesh), params=params_sh, opt_state=opt_sh, rng=sharding.replicated(mesh)
    )
    make = jax.jit(lambda: init_state(init_params(), optimizer, cfg.train.seed), out_shardings=state_sh)
    return graphdef, make, abstract_state, state_sh


def load_init(init_from: str, mesh):
    """(model config, params, tokenizer) of the latest checkpoint of run directory `init_from`,
    restored straight onto this run's mesh."""
    from latent.eval.run import load_run  # eval.run builds on this module

    if not (Path(init_from) / "config.json").exists():
        raise ConfigError(f"train.init_from={init_from!r} is not a run directory: no config.json")
    try:
        init_cfg, _, state, tokenizer, _, _ = load_run(init_from, mesh=mesh)
    except ConfigError as err:
        raise ConfigError(f"train.init_from={init_from!r}: {err}") from None
    return init_cfg.model, state.params, tokenizer


def grow_for_abstract(cfg: Config, params, tokenizer: Tokenizer, known_rows: int):
    """Add the abstract vocabulary to an initial model that lacks it (rows by abstract.init)."""
    from latent.models.vocab import add_abstract_vocabulary, init_token_rows, resize_vocab

    vocab = add_abstract_vocabulary(tokenizer, cfg.abstract.num_tokens)
    model_cfg, params = resize_vocab(cfg.model, params, tokenizer.vocab_size, seed=cfg.train.seed)
    params = init_token_rows(params, vocab.all_ids, cfg.abstract.init, jax.random.PRNGKey(cfg.train.seed),
                             init_std=model_cfg.init_std, reference_rows=known_rows)
    return cfg.replace(model=model_cfg), params


def abstract_with_shardings(abstract_tree, shardings):
    return jax.tree.map(
        lambda leaf, sh: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sh), abstract_tree, shardings
    )


# ----------------------------------------------------------------------------- logging


class MetricsLog:
    """metrics.jsonl (one JSON object per logged step) plus TensorBoard when tensorboardX exists."""

    def __init__(self, workdir: Path):
        self.path = workdir / "metrics.jsonl"
        self.writer = None
        try:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(str(workdir / "tensorboard"))
        except ImportError:
            pass

    def write(self, step: int, metrics: dict) -> None:
        row = {"step": int(step), **{k: _to_json(v) for k, v in metrics.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
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
    workdir.mkdir(parents=True, exist_ok=True)
    manager = ckpt.make_manager(workdir, cfg.checkpoint)
    resume_step = manager.latest_step()

    train_examples, valid_examples, task = load_splits(cfg)
    mesh = sharding.make_mesh(cfg.mesh)
    init_params = None
    if resume_step is not None:
        meta = ckpt.read_meta(manager, resume_step)
        tokenizer = Tokenizer.from_json(meta["tokenizer"])
        cfg = resolve_vocab(cfg, tokenizer)
        ckpt.check_same_model(ckpt.model_config_of(meta), cfg.model, str(workdir))
        ckpt.check_resumable(ckpt.config_of(meta), cfg, str(workdir))  # before config.json is rewritten
    elif cfg.train.init_from:
        init_model, init_params, tokenizer = load_init(cfg.train.init_from, mesh)
        cfg = resolve_vocab(cfg, tokenizer)
        ckpt.check_same_model(init_model, cfg.model, f"train.init_from={cfg.train.init_from}")
        if cfg.task.format in ABSTRACT_FORMATS and tokenizer.token_to_id(SPECIAL.end_abstract) is None:
            cfg, init_params = grow_for_abstract(cfg, init_params, tokenizer, known_rows=tokenizer.vocab_size)
    else:
        tokenizer = fit_tokenizer(train_examples, valid_examples, cfg.task.format, cfg.abstract.num_tokens)
        cfg = resolve_vocab(cfg, tokenizer)
    if tokenizer.vocab_size > cfg.model.vocab_size:
        raise ConfigError(
            f"model.vocab_size={cfg.model.vocab_size} is smaller than the tokenizer's {tokenizer.vocab_size} tokens"
        )
    check_run_positions(cfg, resolve_policy(cfg))  # a learned position table must hold every sequence
    (workdir / "config.json").write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
    tokenizer.save(workdir / "tokenizer.json")

    batch_size = cfg.train.batch_size
    n_batch_shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if batch_size % (n_batch_shards * cfg.optimizer.grad_accum):
        raise ConfigError(
            f"train.batch_size={batch_size} must be divisible by data*fsdp={n_batch_shards} "
            f"times optimizer.grad_accum={cfg.optimizer.grad_accum}"
        )
    source = make_source(cfg, train_examples, tokenizer, batch_size // jax.process_count())

    optimizer, schedule = make_optimizer(cfg.optimizer, cfg.train.steps)
    graphdef, make_state, abstract_state, state_sh = build_state(cfg, mesh, optimizer)
    if resume_step is not None:
        state, data_state, _ = ckpt.restore(manager, abstract_with_shardings(abstract_state, state_sh), resume_step)
        source.set_state(data_state)
    else:
        state = make_state()
        if init_params is not None:  # weights from train.init_from; optimizer state stays fresh
            state = state.replace(params=jax.device_put(init_params, state_sh.params))
    batch_sh = sharding.batch_sharding(mesh)
    step_fn = jax.jit(
        make_train_step(graphdef, optimizer, schedule, cfg.optimizer.grad_accum, objective=source.objective),
        in_shardings=(state_sh, batch_sh),
        out_shardings=(state_sh, sharding.replicated(mesh)),
        donate_argnums=(0,),
    )

    log = MetricsLog(workdir)
    start_step = int(state.step)
    summary = {"workdir": str(workdir), "resumed_from": resume_step, "dropped_long_examples": source.dropped}
    if start_step >= cfg.train.steps:
        metrics = _run_eval(cfg, graphdef, state, tokenizer, valid_examples, task, progress,
                            source.eval_latent_steps(start_step, valid_examples))
        summary["eval"] = {k: v for k, v in metrics.items() if k != "records"}
        summary["step"] = start_step
        log.close()
        return summary

    def save(step, metrics=None):
        extra = {"stage": source.trained_stage(step), "eval_latent_steps": source.eval_latent_steps(step)}
        ckpt.save(manager, step, state, source.get_state(), cfg, tokenizer.to_json(), metrics, extra)

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
                batch = source.next(step)
                seen_shapes.add(source.shape_key(batch))
                n_tokens = source.real_tokens(batch)
                batch = {k: jax.make_array_from_process_local_data(batch_sh, v) for k, v in batch.items()}
                state, metrics = step_fn(state, batch)
                step += 1
                if pending is not None:
                    _check_and_log(pending, log, cfg, window, bar)
                pending = (step, metrics, n_tokens)
                out_of_time = time_limit_s is not None and time.perf_counter() - started >= time_limit_s
                at_eval = step % cfg.train.eval_every == 0 or step == cfg.train.steps or out_of_time
                if stop_at_step is not None and step >= stop_at_step and not stop.signal_name:
                    stop.signal_name = "stop_at_step"
                at_save = step % cfg.train.checkpoint_every == 0 or at_eval or stop.signal_name
                if at_save:
                    _check_and_log(pending, log, cfg, window, bar)  # never checkpoint a non-finite state
                    pending = None
                    eval_metrics = None
                    if at_eval and not stop.signal_name:
                        eval_metrics = _run_eval(cfg, graphdef, state, tokenizer, valid_examples, task, progress,
                                                 source.eval_latent_steps(step, valid_examples))
                        log.write(step, {f"eval_{k}": v for k, v in eval_metrics.items() if k != "records"})
                        summary["eval"] = {k: v for k, v in eval_metrics.items() if k != "records"}
                    save(step, _best_metrics(cfg, eval_metrics))
                if out_of_time and not stop.signal_name:
                    stop.signal_name = "time_limit"
                if stop.signal_name:
                    manager.wait_until_finished()
                    bar.write(f"{stop.signal_name}: checkpoint saved at step {step}; exiting")
                    summary["stopped_by"] = stop.signal_name
                    break
            if pending is not None:
                _check_and_log(pending, log, cfg, window, bar)
        finally:
            manager.wait_until_finished()
            bar.close()
            log.close()
    summary["step"] = step
    summary["train_step_compiles"] = step_fn._cache_size()
    summary["batch_shapes"] = sorted(seen_shapes)  # (length,) for text; (P, K, S) for latent batches
    return summary


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


def _run_eval(cfg, graphdef, state, tokenizer, examples, task, progress, latent_steps=0):
    return evaluate(
        graphdef, state.params, cfg.model, tokenizer, examples, task.score, cfg.eval,
        fmt=cfg.task.format, max_len=cfg.task.max_len, seed=cfg.train.seed, progress=progress,
        policy=resolve_policy(cfg), latent_steps=latent_steps, abstract_cfg=cfg.abstract, feedback=resolve_feedback(cfg),
    )

