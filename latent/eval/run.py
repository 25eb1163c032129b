"""Evaluate a run directory's checkpoint on its validation split, a data file, or a task."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from latent.config import ConfigError
from latent.data.special_tokens import SPECIAL
from latent.data.splits import VALID_SEED_OFFSET, generate_cached, load_valid, named_task, run_scorer
from latent.data.tasks import check_task_name, get_task, load_examples
from latent.data.tasks.scoring import resolve_scorer
from latent.methods import evaluator_for, method_of, resolve_policy
from latent.run import load_run

# Above this share of <unk> prompt tokens the data does not fit the run's vocabulary: warn.
UNKNOWN_TOKEN_WARNING = 0.05



def check_latent_steps(cfg, latent_steps: int) -> None:
    """--latent-steps: one count for every example, within what the run trained (Method.max_thoughts)."""
    if latent_steps < 0:
        raise ConfigError(f"--latent-steps must be >= 0; got {latent_steps}")
    top = method_of(cfg).max_thoughts(cfg)
    if top is not None and latent_steps > top:
        raise ConfigError(
            f"--latent-steps {latent_steps} is above the run's maximum latent.max_latent_stage * latent.c_thought = {top}"
        )


def evaluate_workdir(
    workdir, *, data=None, step=None, overrides=None, progress=True, latent_steps=None, plot_path=None
) -> dict:
    """Evaluates a checkpoint of `workdir` (default: the latest).

    latent_steps: continuous thoughts to decode every example with; None takes the checkpoint's
    own (0 for a text run; for a Coconut run what its curriculum stage gave each example).
    """
    run, examples, scorer, source = _run_and_examples(workdir, data, step, overrides)
    cfg, graphdef, params, tokenizer, meta, step = run.cfg, run.graphdef, run.params, run.tokenizer, run.meta, run.step
    if latent_steps is None:
        latent_steps = method_of(cfg).checkpoint_latent_steps(cfg, meta, examples)
    else:
        check_latent_steps(cfg, latent_steps)
    evaluator = evaluator_for(
        cfg, graphdef, tokenizer, examples, scorer, latent_steps=latent_steps, progress=progress,
        task=_task_of(cfg, data), workdir=workdir, plot_path=plot_path,
    )
    unknown_share = unknown_token_share(tokenizer, evaluator.question_tokens())
    if unknown_share > UNKNOWN_TOKEN_WARNING:
        print(f"warning: {unknown_share:.0%} of the prompt tokens of {source} are unknown to the run's tokenizer "
              "(<unk>): this data does not fit the run's vocabulary, so its accuracy says little", file=sys.stderr)
    results = evaluator(params)
    results["checkpoint_step"] = int(step)
    results["data"] = source
    results["scorer"] = scorer.name
    results["unknown_token_share"] = unknown_share
    results["settings"] = {  # what produced these numbers, to compare result files by
        "step": int(step), "temperature": cfg.eval.temperature, "top_p": cfg.eval.top_p, "top_k": cfg.eval.top_k,
        "n": cfg.eval.n_examples, "max_new_tokens": cfg.eval.max_new_tokens, "switch_policy": resolve_policy(cfg),
        "latent_steps": latent_steps, "seed": cfg.train.seed, "scorer": scorer.name, "batch_size": cfg.eval.batch_size,
        "cache_dtype": cfg.eval.cache_dtype,
    }
    return results


def analyse_workdir(workdir, name: str, *, out, data=None, step=None, overrides=None, progress=True,
                    options=None) -> dict:
    """Runs the standalone analysis `name` (latent.eval.analyses.STANDALONE) on a checkpoint of
    `workdir` (default: the latest), loaded params-only, and on the examples an evaluation would
    read (`data`, eval.n_examples); its figures go next to `out`. Returns its summary with the
    checkpoint step, data and analysis name. `options`: the analysis's own settings (its constructor's)."""
    from latent.eval.analyses import standalone_analysis

    analysis = standalone_analysis(name, **(options or {}))  # an unknown name or option fails before the slow restore
    run, examples, scorer, source = _run_and_examples(workdir, data, step, overrides)
    analysis.scorer = scorer  # an analysis that decodes judges answers as an evaluation of `data` would
    summary = analysis.standalone(run, examples, out=Path(out), progress=progress)
    return {"analysis": name, "checkpoint_step": int(run.step), "data": source} | summary


def _run_and_examples(workdir, data, step, overrides):
    """(the params-only Run of checkpoint `step` of `workdir`, its examples to evaluate (the first
    eval.n_examples), their scorer, a description): `data` a task name is checked before the slow
    restore."""
    if data is not None and not _is_data_file(data):
        check_task_name(data, "--data")
    run = load_run(workdir, step=step, overrides=overrides)
    examples, scorer, source = examples_to_evaluate(run.cfg, data)
    if run.cfg.eval.n_examples is not None:
        examples = examples[: run.cfg.eval.n_examples]
    return run, examples, scorer, source


def examples_to_evaluate(cfg, data):
    """(examples, scorer, description) of `data`: None (the run's validation split, scored as in
    training), a .json/.jsonl file (scored by task.scorer, under auto the scorer that fits its
    answers) or a task name (its generated validation split and, under auto, its own scorer)."""
    if data is None:
        examples = load_valid(cfg)
        return examples, run_scorer(cfg, examples), "validation split"
    if _is_data_file(data):
        examples = load_examples(data)
        return examples, resolve_scorer(cfg.task.scorer, examples), str(data)
    # evaluate_workdir has named an unknown --data before the restore; the run's own task keeps its task.options
    task = named_task(cfg) if data == cfg.task.name else get_task(data)
    examples = generate_cached(data, task, cfg.task.n_valid, cfg.task.seed + VALID_SEED_OFFSET)
    return examples, resolve_scorer(cfg.task.scorer, examples, task), f"task {data}"


def _task_of(cfg, data) -> str:
    """The task whose questions `data` holds, as far as the run knows: a task name, else the run's."""
    return data if data is not None and not _is_data_file(data) else cfg.task.name


def _is_data_file(data) -> bool:
    """--data names a file (an existing one, a .json/.jsonl name, or a path), not a task."""
    path = Path(data)
    return path.suffix in (".json", ".jsonl", ".ndjson") or path.is_file() or len(path.parts) > 1


def unknown_token_share(tokenizer, prompts: Sequence[np.ndarray]) -> float:
    """Share of the tokens of `prompts` (token ids, e.g. the Evaluator's `question_tokens()`, which
    it tokenized once) that are <unk> (0 for a tokenizer without one)."""
    unk = tokenizer.token_to_id(SPECIAL.unk)
    total = sum(len(ids) for ids in prompts)
    if unk is None or not total:
        return 0.0
    return sum(int(np.count_nonzero(np.asarray(ids) == unk)) for ids in prompts) / total
