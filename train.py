"""Train a model: `python train.py [--config PRESET|FILE] [--workdir DIR] [key.sub=value ...]`.

With no arguments it trains the `default` preset in runs/default (a small gated-attention
decoder, CoT SFT on generated ProsQA-style graphs) and then evaluates it. Running it again on
the same workdir resumes from the last checkpoint. The config's method (latent.methods) runs the
job: one training run, or for Abstract-CoT with `abstract.rounds` > 0 the warm-up
(latent.methods.abstract_cot.warmup): 2 runs per round under <workdir>/round<r>/.
It ends with one line (accuracy, tokens, thoughts, step, wall time; a text corpus run: its
validation loss and perplexity); the full summary goes to
<workdir>/summary.json.

Multi-process (one process per host): `--coordinator HOST:PORT --num-processes N --process-id I`,
or nothing under SLURM (srun) and on Cloud TPU VMs, which JAX detects (latent.distributed).
train.batch_size stays the global batch; process 0 writes the run's files.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from latent import distributed, signals
from latent.cli import saved_steps, user_errors

SUMMARY_FILE = "summary.json"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="default", help="preset name in configs/, a .py file, or a config.json")
    parser.add_argument("--workdir", default=None, help="run directory (default: runs/<preset>)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs still go to metrics.jsonl)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.steps=100 model.attn_gate=headwise")
    distributed.add_flags(parser)
    args = parser.parse_args(argv)
    with user_errors():
        distributed.initialize(args)  # before any JAX computation; a single process: nothing

    started = time.perf_counter()
    signals.catch_ctrl_c()  # a Ctrl-C that Python swallows in setup is raised again before any step
    try:
        summary, workdir = _run(args)
    except KeyboardInterrupt:  # Ctrl-C before the loop took over the signals (data, tokenizer, compile):
        print(interrupted_in_setup(_workdir(args)), file=sys.stderr)
        sys.exit(130)
    summary.setdefault("wall_s", time.perf_counter() - started)
    if distributed.is_writer():
        report = Path(workdir) / SUMMARY_FILE
        report.write_text(json.dumps(summary, indent=2, default=str) + "\n")
        print(headline(summary))
        print(f"full report: {report}")
    return summary


def _run(args):
    with user_errors():
        from latent.config_io import apply_overrides, load_preset
        from latent.methods import method_of
        from latent.train.init_from import check_init_from

        cfg = apply_overrides(load_preset(args.config), args.overrides)
        workdir = _workdir(args)
        method = method_of(cfg)
        method.check(cfg)
        if not has_started(workdir, cfg):  # a resume reads its own run directory only, never train.init_from
            check_init_from(cfg, args.overrides)  # before any data is read; a Hugging Face init_from sets the model
        try:
            return method.run(cfg, workdir, progress=not args.no_progress), workdir
        except KeyboardInterrupt:  # outside a training loop: e.g. while a warm-up samples spans
            note = method.interrupted_note(cfg)
            if note is not None:
                print(note, file=sys.stderr)
                sys.exit(130)
            raise


def _workdir(args) -> str:
    return args.workdir or f"runs/{args.config.replace('/', '_').removesuffix('.py')}"


def has_started(workdir, cfg) -> bool:
    """Whether `workdir` already holds a checkpoint of this run (for an Abstract-CoT warm-up, of
    its first phase, `round1/bottleneck`; Method.started): then the run resumes from it and never
    reads init_from."""
    from latent.methods import method_of

    return any(saved_steps(directory) for directory in method_of(cfg).started(cfg, workdir))


def interrupted_in_setup(workdir) -> str:
    """What a Ctrl-C before the first step left: nothing for a new run; a resumed run's last checkpoint."""
    steps = saved_steps(workdir)
    if not steps:
        return "interrupted before the first step; nothing saved"
    return f"interrupted before training resumed; no new checkpoint (the last one is step {steps[-1]})"


def headline(summary: dict) -> str:
    """One line: the last evaluation's accuracy and token counts, steps and wall time."""
    phases = summary.get("phases")
    last = phases[-1] if phases else summary  # a warm-up: its last phase run
    evaluation = last.get("eval") or {}
    parts = []
    if "accuracy" in evaluation:
        parts.append(f"accuracy {100 * evaluation['accuracy']:.1f}% (n={evaluation.get('n')})")
        parts.append(f"generated tokens {evaluation.get('mean_generated_tokens', float('nan')):.1f}")
        parts.append(f"reasoning tokens {evaluation.get('mean_reasoning_tokens', float('nan')):.1f}")
        parts.append(f"thoughts {evaluation.get('mean_latent_steps', float('nan')):.1f}")
    elif "loss" in evaluation:  # a language model (task.name=text:...): decodes nothing
        from latent.eval.lm_loss import one_line

        parts.append(one_line(evaluation))
    else:
        parts.append("not evaluated yet")
    where = f"round {last['round']} {last['phase']} " if phases else ""
    parts.append(f"{where}step {last.get('step')}")
    minutes, seconds = divmod(int(round(summary["wall_s"])), 60)
    parts.append(f"wall {minutes}:{seconds:02d}")
    if summary.get("stopped_by"):
        parts.append(f"stopped by {summary['stopped_by']}: rerun the same command to resume")
    return " | ".join(parts)


if __name__ == "__main__":
    main()
