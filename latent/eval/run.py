"""Evaluate a run directory's checkpoint on its validation split, a data file, or a task."""

from __future__ import annotations

import json
from pathlib import Path

import jax

from latent.config import ConfigError, apply_overrides, from_dict
from latent.data.curriculum import eval_latent_steps_per_example
from latent.data.tasks import get_task, load_examples
from latent.data.tokenizer import Tokenizer
from latent.eval.evaluate import evaluate, resolve_feedback, resolve_policy
from latent.train import checkpoint as ckpt
from latent.train import sharding
from latent.train.loop import VALID_SEED_OFFSET, abstract_with_shardings, build_state, load_valid
from latent.train.optimizer import make_optimizer


def load_run(workdir, *, step=None, overrides=None, mesh=None):
    """(config, graphdef, train state, tokenizer, checkpoint meta, step) of a run directory's
    checkpoint (default: the latest), restored onto `mesh` (default: one device)."""
    workdir = Path(workdir)
    config_path = workdir / "config.json"
    if not config_path.exists():
        raise ConfigError(f"{workdir} is not a run directory: no config.json (train with train.py --workdir {workdir})")
    cfg = from_dict(json.loads(config_path.read_text()))
    manager = ckpt.make_manager(workdir, cfg.checkpoint)
    step = manager.latest_step() if step is None else step
    if step is None:
        raise ConfigError(f"{workdir}/checkpoints holds no complete checkpoint")
    if step not in manager.all_steps():
        raise ConfigError(f"no checkpoint for step {step} in {workdir}; available: {sorted(manager.all_steps())}")
    meta = ckpt.read_meta(manager, step)
    cfg = apply_overrides(from_dict(meta["config"]), overrides or {})
    tokenizer = Tokenizer.from_json(meta["tokenizer"])
    if mesh is None:
        mesh = sharding.make_mesh(cfg.mesh.__class__(data=1, fsdp=1, tensor=1), devices=jax.devices()[:1])
    optimizer, _ = make_optimizer(cfg.optimizer, cfg.train.steps)
    graphdef, _, abstract_state, state_sh = build_state(cfg, mesh, optimizer)
    state, _, _ = ckpt.restore(manager, abstract_with_shardings(abstract_state, state_sh), step)
    return cfg, graphdef, state, tokenizer, meta, step


def checkpoint_latent_steps(cfg, meta, examples):
    """The checkpoint's own thoughts: for a Coconut run, what its curriculum stage gave each of
    `examples` in training; else the count its meta records (0 for a text run)."""
    if cfg.latent.mode == "coconut" and "stage" in meta:
        return eval_latent_steps_per_example(int(meta["stage"]), examples, cfg.latent)
    return int(meta.get("eval_latent_steps", 0))


def check_latent_steps(cfg, latent_steps: int) -> None:
    """--latent-steps: one count for every example, within what the run trained."""
    if latent_steps < 0:
        raise ConfigError(f"--latent-steps must be >= 0; got {latent_steps}")
    top = cfg.latent.max_latent_stage * cfg.latent.c_thought
    if cfg.latent.mode != "none" and latent_steps > top:
        raise ConfigError(
            f"--latent-steps {latent_steps} is above the run's maximum latent.max_latent_stage * latent.c_thought = {top}"
        )


def keyed_spans_of(workdir, cfg, examples):
    """For a phase of a keyed Abstract-CoT warm-up (`<warmup>/round<r>/<phase>` with
    abstract.round1=keyed), the z that the warm-up's key gives each of `examples`, keyed by the
    warm-up's own training examples as round 1 was; None for any other run."""
    from latent.data.abstract import ABSTRACT_FORMATS
    from latent.train.abstract import keyed_spans

    warmup_config = Path(workdir).resolve().parents[1] / "config.json"
    if cfg.abstract.round1 != "keyed" or cfg.task.format not in ABSTRACT_FORMATS or not warmup_config.exists():
        return None
    return keyed_spans(from_dict(json.loads(warmup_config.read_text())), examples)


def evaluate_workdir(
    workdir, *, data=None, step=None, overrides=None, progress=True, latent_steps=None, plot_path=None
) -> dict:
    """Evaluates a checkpoint of `workdir` (default: the latest).

    latent_steps: continuous thoughts to decode every example with; None takes the checkpoint's
    own (0 for a text run; for a Coconut run what its curriculum stage gave each example).
    """
    cfg, graphdef, state, tokenizer, meta, step = load_run(workdir, step=step, overrides=overrides)
    task = get_task(cfg.task.name)
    if data is None:
        examples = load_valid(cfg, task)
        source = "validation split"
    elif Path(data).suffix in (".json", ".jsonl"):
        examples = load_examples(data)
        source = str(data)
    else:
        task = get_task(data)
        examples = task.generate(cfg.task.n_valid, seed=cfg.task.seed + VALID_SEED_OFFSET)
        source = f"task {data}"
    if latent_steps is None:
        latent_steps = checkpoint_latent_steps(cfg, meta, examples)
    else:
        check_latent_steps(cfg, latent_steps)
    keys = keyed_spans_of(workdir, cfg, examples)
    results = evaluate(
        graphdef, state.params, cfg.model, tokenizer, examples, task.score, cfg.eval,
        fmt=cfg.task.format, max_len=cfg.task.max_len, seed=cfg.train.seed, progress=progress,
        policy=resolve_policy(cfg), latent_steps=latent_steps, abstract_cfg=cfg.abstract, plot_path=plot_path,
        keyed_spans=keys, feedback=resolve_feedback(cfg),
    )
    if cfg.task.format == "abstract_bottleneck":  # does the answer read z, or c through z's positions?
        from latent.eval.bottleneck import chain_leak, model_predictor

        n = cfg.eval.n_examples
        results["chain_leak"] = chain_leak(
            model_predictor(graphdef, state.params), tokenizer, examples[:n], None if keys is None else keys[:n],
            num_tokens=cfg.abstract.num_tokens, max_len=cfg.task.max_len,
            batch_size=cfg.eval.batch_size,
        )
    results["checkpoint_step"] = int(step)
    results["data"] = source
    return results
