"""Abstract-CoT warm-up by policy iteration: T rounds, each two ordinary (resumable) runs.

    round r, phase 1  bottleneck  SFT on [x; c; z; y], the answer blind to c, loss on z and y;
                                  z random in round 1 (latent.methods.abstract_cot.layouts; or keyed: tokens
                                  naming each step's result, abstract.round1), later sampled
                                  on-policy from pi_abs(z | x, c) by the previous round's model
    round r, phase 2  distill     SFT on [x; z'; y] with z' ~ pi_abs(z' | x) sampled from the
                                  prompt alone by the phase-1 model (self-distillation); with
                                  abstract.distill_z="teacher", z' ~ pi_abs(z' | x, c) instead

Each phase starts from the previous phase's weights (train.init_from) with a fresh optimizer,
writes its sampled spans as a JSONL file beside it (`abstract` per example) and trains for
`abstract.bottleneck_steps` / `abstract.distill_steps` steps (0: `train.steps`). With
`train.time_limit_minutes` the whole warm-up, sampling included, keeps to that budget: each
phase may use all that is left when it starts. A phase stopped before its last step (the time
limit, SIGTERM/SIGINT) stops the warm-up there (`stopped_by`, `stopped_at` in the summary):
the next phase's spans are sampled only from a finished model. The final model is
`<workdir>/round<T>/distill`; evaluate it with `eval.py --workdir` (constrained decoding).
Running again resumes: finished phases are reused, and so is a span file whose
`<name>.source.json` names the finished model (run directory and step) that sampled it; any
other span file is sampled again.

On several processes (latent.distributed) every process runs the same warm-up: the phases
train as one run does, each span sampling is split over the processes (batch j on process
j mod P, as evaluation is) and gathered, and process 0 alone writes the warm-up's files, the
others waiting at a barrier until they are written; the spans equal one process's, since
example i samples with its own key whatever process decodes it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from latent import distributed
from latent.config import Config, ConfigError
from latent.config_io import to_dict
from latent.data.pipeline import eval_batches
from latent.infer.engine import make_generate
from latent.methods.abstract_cot import layouts as abstract_data
from latent.methods.abstract_cot.layouts import keyed_spans

SUMMARY_FILE = "warmup.json"  # written when the warm-up finishes: its phases and the final run


def phase_config(cfg: Config, phase: str, data_path: str | None, init_from: str | None, minutes: float | None,
                 valid_path: str | None = None) -> Config:
    """The ordinary run of one warm-up phase ("bottleneck" or "distill"). A span file
    (`data_path`) holds training examples only, so a phase that trains on one validates on the
    warm-up's own split: `valid_path` (the part held out of the user's `task.path`, written by
    `warmup`), or the generated task's split."""
    fmt = {"bottleneck": "abstract_bottleneck", "distill": "abstract"}[phase]
    steps = getattr(cfg.abstract, f"{phase}_steps") or cfg.train.steps
    task = dataclasses.replace(cfg.task, format=fmt)
    if data_path:
        task = dataclasses.replace(task, path=data_path, valid_fraction=0.0,
                                   valid_path=cfg.task.valid_path or valid_path)
        if cfg.task.path and not task.valid_path:
            raise ConfigError(f"phase {phase} trains on {data_path}: it needs the warm-up's validation file")
    return cfg.replace(
        task=task,
        train=dataclasses.replace(cfg.train, steps=steps, init_from=init_from, time_limit_minutes=minutes),
        abstract=dataclasses.replace(cfg.abstract, rounds=0),  # a phase is an ordinary run
    )


def sample_spans(run_dir: Path, examples, *, with_cot: bool, seed: int, progress: bool = True) -> list[list[str]]:
    """One abstract span per example, sampled at temperature 1 under the abstract constraint by
    the model of `run_dir`, from x + c (`with_cot`) or from x alone; [] for a prompt too long.
    On several processes a collective: each decodes every P-th batch (each loads the model whole
    onto its first device) and all get every span."""
    from latent.models.vocab import abstract_vocab_of
    from latent.run import load_run

    run = load_run(run_dir)
    cfg, graphdef, tokenizer = run.cfg, run.graphdef, run.tokenizer
    vocab = abstract_vocab_of(tokenizer, cfg.abstract.num_tokens)
    fmt = "abstract_bottleneck" if with_cot else "abstract"
    records, _ = abstract_data.tokenize_abstract_prompts(examples, tokenizer, fmt, cfg.task.max_len, open_span=True)
    generate = make_generate(
        graphdef, cfg.model, cfg.abstract.max_tokens + 1, tokenizer.eos_id, tokenizer.pad_id, 1.0, 1.0,
        abstract=vocab, abstract_max=cfg.abstract.max_tokens,
    )
    # example i samples with a key of (seed, i), whatever its batch and whichever process decodes it
    rng = jax.random.PRNGKey(seed)
    process, processes = jax.process_index(), jax.process_count()
    batches = eval_batches(records, batch_size=cfg.eval.batch_size, pad_id=tokenizer.pad_id, max_len=cfg.task.max_len)
    mine = [batch for j, batch in enumerate(batches) if j % processes == process]
    sampled_here = []  # (example index, its span) for this process's batches
    bar = tqdm(total=sum(len(b["index"]) for b in mine), desc=f"sample z ({'x, c' if with_cot else 'x'})", unit="ex",
               disable=not progress, leave=False)
    for batch in mine:
        out = jax.device_get(generate(run.params, batch["tokens"], batch["padding_mask"], rng, None, None, batch["index"]))
        for row, index in enumerate(batch["index"]):
            ids = [int(t) for t in out.tokens[row, : out.lengths[row]]]
            sampled_here.append((int(index), abstract_data.span_tokens(ids, vocab, tokenizer, opened=True)))
        bar.update(len(batch["index"]))
    bar.close()
    spans: list[list[str]] = [[] for _ in examples]
    for part in distributed.gather_json(sampled_here):  # every process's share, on every process
        for index, span in part:
            spans[index] = span
    return spans


def write_span_file(path: Path, examples, spans, source: dict | None = None) -> int:
    """JSONL of the examples with their sampled spans (those with an empty span are left out);
    written to a temporary file first so an interrupted write is never mistaken for a done one.
    `source` (the sampling model's run directory and step) goes to `<name>.source.json` beside
    it, written first, so a file whose model changed since is resampled, never reused."""
    rows = [  # spans None: the examples as they are (a validation file)
        {"question": e.question, "steps": list(e.steps), "answer": e.answer}
        | ({"abstract": span} if span is not None else {})
        for e, span in zip(examples, spans) if span or span is None
    ]
    if source is not None:
        _source_path(path).write_text(json.dumps(source) + "\n")
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.rename(path)
    return len(rows)


def warmup(cfg: Config, workdir: str | Path, *, progress: bool = True) -> dict:
    """Run (or resume) the T-round warm-up in `workdir`; returns a summary of every phase.
    On several processes every process calls it; process 0 writes the files."""
    from latent.train.loop import train

    if cfg.abstract.rounds <= 0:
        raise ConfigError("abstract.rounds must be >= 1 for the warm-up")
    workdir = Path(workdir)
    writer = distributed.is_writer()
    progress = progress and writer
    train_examples, valid_examples = _splits(cfg)  # before anything is written: a bad file leaves no workdir
    valid_path = None if valid_examples is None else str(workdir / "valid.jsonl")
    if writer:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
        if valid_path is not None:
            write_span_file(Path(valid_path), valid_examples, [None] * len(valid_examples))
    distributed.barrier("abstract warm-up: config and validation file written")
    summary = {"workdir": str(workdir), "phases": []}
    previous = None  # the finished run directory whose weights the next phase starts from
    previous_step = None  # and the step it finished at (its spans must come from that model)
    started = time.perf_counter()
    for r in range(1, cfg.abstract.rounds + 1):
        round_dir = workdir / f"round{r}"
        if writer:
            round_dir.mkdir(exist_ok=True)
        distill_with_cot = cfg.abstract.distill_z == "teacher"
        for phase, with_cot in (("bottleneck", True), ("distill", distill_with_cot)):
            run_dir = round_dir / phase
            done_step = _finished_step(run_dir, phase_config(cfg, phase, None, None, None))
            data_path = None
            sample_s = 0.0
            if done_step is not None:
                pass  # finished: nothing to sample or train
            elif previous is None and cfg.abstract.round1 == "keyed":  # round 1's z names each step's result
                data_path = round_dir / f"{phase}_spans.jsonl"
                if writer and not data_path.exists():
                    write_span_file(data_path, train_examples, keyed_spans(cfg, train_examples, train_examples))
                distributed.barrier(f"abstract warm-up: round {r} {phase} keyed spans written")
            elif previous is not None:  # on-policy spans from the previous phase's finished model
                data_path = round_dir / f"{phase}_spans.jsonl"
                source = {"sampled_by": str(previous), "step": previous_step}
                # sampling is a collective: every process samples if any finds the file stale
                if distributed.any_process(_span_source(data_path) != source)[0]:
                    _refuse_stale_run(run_dir, data_path)
                    t0 = time.perf_counter()
                    spans = sample_spans(previous, train_examples, with_cot=with_cot, seed=cfg.train.seed + r, progress=progress)
                    if writer:
                        kept = write_span_file(data_path, train_examples, spans, source)
                    distributed.barrier(f"abstract warm-up: round {r} {phase} spans written")  # before any reads them
                    sample_s = time.perf_counter() - t0
                    if progress:
                        print(f"round {r} {phase}: {kept} spans sampled by {previous} (step {previous_step}) in {sample_s:.0f} s")
            minutes = None  # all the budget left (sampling included); a phase that runs out stops the warm-up
            if cfg.train.time_limit_minutes is not None:
                minutes = max(cfg.train.time_limit_minutes - (time.perf_counter() - started) / 60, 0.01)
            init_from = str(previous) if previous else cfg.train.init_from  # round 1 starts from train.init_from
            phase_cfg = phase_config(cfg, phase, str(data_path) if data_path else None, init_from, minutes, valid_path)
            result = {"step": done_step} if done_step is not None else train(phase_cfg, run_dir, progress=progress)
            summary["phases"].append({
                "round": r, "phase": phase, "workdir": str(run_dir), "sample_s": sample_s,
                "step": result.get("step"), "eval": result.get("eval"),
            })
            if result.get("stopped_by") is not None:  # a preemption or the time limit: rerunning resumes this phase
                summary["stopped_by"] = result["stopped_by"]
                summary["stopped_at"] = {"round": r, "phase": phase, "step": result.get("step"),
                                         "steps": phase_cfg.train.steps}
                summary["wall_s"] = time.perf_counter() - started
                return summary  # the next phase's spans come only from a finished model
            previous, previous_step = run_dir, result.get("step")
    summary["final"] = str(previous)
    summary["wall_s"] = time.perf_counter() - started
    if writer:
        (workdir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=_jsonable) + "\n")
    return summary


def _splits(cfg: Config):
    """(training examples, validation examples to write or None). A warm-up on the user's
    `task.path` without a `task.valid_path` writes the part held out of that file to
    `<workdir>/valid.jsonl`, which every phase that trains on a span file validates on (the span
    files hold training questions only); a generated task's phases validate on its generated split."""
    from latent.data.splits import load_splits

    train_examples, valid_examples, _ = load_splits(cfg.replace(task=dataclasses.replace(cfg.task, format="cot")))
    return train_examples, (valid_examples if cfg.task.path and not cfg.task.valid_path else None)


def _span_source(data_path: Path) -> dict | None:
    """Which model (run directory and step) sampled a span file; None when unknown or absent."""
    record = _source_path(data_path)
    if not data_path.exists() or not record.exists():
        return None
    try:
        return json.loads(record.read_text())
    except json.JSONDecodeError:
        return None


def _source_path(data_path: Path) -> Path:
    return data_path.with_name(data_path.stem + ".source.json")


def _refuse_stale_run(run_dir: Path, data_path: Path) -> None:
    """A phase that already trained on a span file we are about to replace (spans sampled from
    an unfinished model, by an older version of this warm-up) cannot simply resume on new data."""
    from latent.run import checkpoint as ckpt

    if (run_dir / ckpt.CHECKPOINT_DIR).is_dir() and any((run_dir / ckpt.CHECKPOINT_DIR).iterdir()):
        raise ConfigError(
            f"{run_dir} trained on {data_path}, whose spans were not sampled from the finished previous phase; "
            f"move {run_dir} and {data_path} aside and rerun to resample and retrain that phase"
        )


def _finished_step(run_dir: Path, cfg: Config) -> int | None:
    """The step of a phase run that already reached train.steps (None: still to train)."""
    from latent.run import checkpoint as ckpt

    if not (run_dir / "config.json").exists():
        return None
    step = ckpt.make_manager(run_dir, cfg.checkpoint).latest_step()
    return step if step is not None and step >= cfg.train.steps else None


def _jsonable(value):
    return value.item() if isinstance(value, np.generic) else str(value)
