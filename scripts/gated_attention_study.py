"""The gated-attention study (issue 25, part 1): three arms identical but for `model.attn_gate`
(none / headwise / elementwise), each at several learning rates, then the attention analysis of
each, a table, heatmaps, loss curves and a JSON of everything.

    python scripts/gated_attention_study.py --config gated_text --root runs/gated_study --cpu 0
    python scripts/gated_attention_study.py --config prosqa_cot --root runs/gated_study_prosqa --minutes 8 --cpu 0
    python scripts/gated_attention_study.py --config tiny --root /tmp/gs --steps 3 --lr-multipliers 1 -- task.n_train=64
    python scripts/gated_attention_study.py --config gated_text --root runs/gated_study --dry-run   # the commands only

Every run shares the preset (plus the overrides after `--`): model, data, seed, steps and
optimizer; an arm sets `model.attn_gate`, a learning-rate multiplier m sets `optimizer.lr` to m
times the preset's (`--lr-multipliers 1,2,4`). `--steps N` sets `train.steps`, `--minutes M`
`train.time_limit_minutes` (then the arms are equal in time, not in steps). Runs go one after
the other, each in its own process (`taskset -c N` with `--cpu N`), into
`<root>/<arm>_lr<m>x/`, logging to `train.log` and `attention.log` there; then
`eval.py --analysis attention` writes `attention.json` and its heatmap `attention.png` (layer x
head sink share) beside them. A run already done is skipped (a rerun resumes the study; an
interrupted training resumes from its checkpoint), so the study may be stopped at any time.

Written to `--root`: `study.md` (one table row per arm and learning rate, the heatmaps and loss
curves linked), `study.json` (everything: the commands, each run's analysis per layer and head,
its losses, spikes and wall time), `loss_lr<m>x.png` (training loss against step, the three arms
overlaid; validation loss as markers when the run logs it).

Definitions (the table's columns):
- valid loss: the attention analysis' next-token loss on the run's validation examples (a text
  corpus run: its validation windows, equal to its `eval_loss`); for a reasoning task the eval
  accuracy of the last evaluation is reported too;
- sink share: first-token attention share, mean over layers (each layer's is the mean over its
  heads), and the largest layer's with its index;
- max |act|: the largest |x| of the residual stream after any block, over layers;
- gate mean, gate < 0.1: the output gate's mean and its share of values below 0.1, mean over
  layers (empty for attn_gate=none);
- spikes: logged training losses above SPIKE_FACTOR (1.5) times the median of the SPIKE_WINDOW
  (10) logged losses before it (counted from the fourth logged loss on), with their steps;
- diverged: the run stopped on a non-finite loss (train.py's exit status 3) or logged one, or its
  last logged training loss is above its first.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ARMS = ("none", "headwise", "elementwise")
SPIKE_FACTOR, SPIKE_WINDOW, SPIKE_MIN_HISTORY = 1.5, 10, 3
DIVERGED_EXIT = 3  # train.py's exit status on a non-finite loss (latent.cli.user_errors)
POLL_S = 15.0


# ----------------------------------------------------------------------------- the plan


def parse_multipliers(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(not math.isfinite(v) or v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give positive numbers separated by commas, e.g. 1,2,4")
    return values


def multiplier_name(m: float) -> str:
    return f"lr{m:g}x"


def base_lr(config: str, overrides: list[str]) -> float:
    """optimizer.lr of the preset with the study's overrides (what multiplier 1 trains with)."""
    from latent.cli import user_errors
    from latent.config_io import apply_overrides, load_preset

    with user_errors():
        return apply_overrides(load_preset(config), overrides).optimizer.lr


def plan(args, overrides: list[str]) -> list[dict]:
    """One entry per run: its name, arm, multiplier, learning rate, workdir and both commands."""
    lr = base_lr(args.config, overrides)
    pin = ["taskset", "-c", str(args.cpu)] if args.cpu is not None else []
    budget = ([f"train.steps={args.steps}"] if args.steps is not None else []) + (
        [f"train.time_limit_minutes={args.minutes}"] if args.minutes is not None else [])
    runs = []
    for m in args.lr_multipliers:
        for arm in args.arms:
            name = f"{arm}_{multiplier_name(m)}"
            workdir = Path(args.root) / name
            train = [*pin, sys.executable, str(ROOT / "train.py"), "--config", args.config, "--workdir", str(workdir),
                     "--no-progress", *overrides, *budget, f"model.attn_gate={arm}", f"optimizer.lr={lr * m:.6g}"]
            analyse = [*pin, sys.executable, str(ROOT / "eval.py"), "--workdir", str(workdir), "--analysis", "attention",
                       "--out", str(workdir / "attention.json"), "--overwrite", "--no-progress"]
            runs.append({"name": name, "arm": arm, "lr_multiplier": m, "lr": float(f"{lr * m:.6g}"),
                         "workdir": str(workdir), "train_command": train, "analysis_command": analyse})
    return runs


# ----------------------------------------------------------------------------- running


def trained(workdir: Path) -> bool:
    """Training is over: train.py wrote its summary (finished, or stopped by the time limit), or
    the run diverged (diverged.json)."""
    if (workdir / "diverged.json").exists():
        return True
    summary = workdir / "summary.json"
    if not summary.exists():
        return False
    data = json.loads(summary.read_text())
    return data.get("stopped_by") in (None, "time_limit")


def analysed(workdir: Path) -> bool:
    return (workdir / "attention.json").exists() or (workdir / "attention_skipped.json").exists()


def last_logged(workdir: Path) -> dict:
    """The last training row of metrics.jsonl (step, loss), or {}."""
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return {}
    for line in reversed(path.read_text().splitlines()):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "loss" in row:
            return row
    return {}


def run_logged(command: list[str], log_path: Path, label: str, workdir: Path) -> int:
    """Run `command` with its output in `log_path`, printing progress (the last logged step and
    loss) every POLL_S seconds; its exit status."""
    started = time.monotonic()
    with log_path.open("a") as log:
        log.write(f"\n$ {shlex.join(command)}\n")
        log.flush()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        while process.poll() is None:
            try:
                process.wait(timeout=POLL_S)
            except subprocess.TimeoutExpired:
                row = last_logged(workdir)
                where = f"step {row['step']} loss {row['loss']:.4f}" if row else "starting"
                print(f"  {label}: {where} ({time.monotonic() - started:.0f} s)", flush=True)
    print(f"  {label}: exit {process.returncode} after {time.monotonic() - started:.0f} s (log: {log_path})", flush=True)
    return process.returncode


def run_one(run: dict, index: int, total: int) -> None:
    workdir = Path(run["workdir"])
    workdir.mkdir(parents=True, exist_ok=True)
    header = f"[{index}/{total}] {run['name']} (attn_gate={run['arm']}, lr={run['lr']:g})"
    if trained(workdir) and analysed(workdir):
        print(f"{header}: done, skipped", flush=True)
        return
    print(header, flush=True)
    if not trained(workdir):
        status = run_logged(run["train_command"], workdir / "train.log", "train", workdir)
        if status == DIVERGED_EXIT:
            tail = (workdir / "train.log").read_text().strip().splitlines()[-1:]
            (workdir / "diverged.json").write_text(json.dumps({"exit": status, "message": tail}, indent=2) + "\n")
        elif status != 0:
            raise SystemExit(f"error: training {run['name']} failed (exit {status}); see {workdir / 'train.log'}")
        elif not trained(workdir):  # stopped by a signal: checkpointed, not finished
            raise SystemExit(f"error: training {run['name']} stopped before its end (see {workdir / 'train.log'}); "
                             "rerun the study to resume it")
    if not analysed(workdir):
        from latent.cli import saved_steps

        if not saved_steps(workdir):  # diverged before its first checkpoint: nothing to analyse
            (workdir / "attention_skipped.json").write_text(json.dumps({"reason": "no checkpoint"}) + "\n")
            return
        status = run_logged(run["analysis_command"], workdir / "attention.log", "attention", workdir)
        if status != 0:
            raise SystemExit(f"error: the attention analysis of {run['name']} failed (exit {status}); "
                             f"see {workdir / 'attention.log'}")


# ----------------------------------------------------------------------------- the report


def read_metrics(workdir: Path) -> tuple[list[tuple[int, float]], list[dict]]:
    """(training (step, loss) in step order, evaluation rows) of a run's metrics.jsonl; a step
    logged twice (a resumed run) keeps its latest row."""
    path = workdir / "metrics.jsonl"
    losses, evals = {}, {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "loss" in row:
                losses[int(row["step"])] = float(row["loss"])
            elif any(k.startswith("eval_") for k in row):
                evals[int(row["step"])] = row
    return sorted(losses.items()), [evals[s] for s in sorted(evals)]


def loss_spikes(losses: list[tuple[int, float]], factor: float = SPIKE_FACTOR, window: int = SPIKE_WINDOW,
                min_history: int = SPIKE_MIN_HISTORY) -> list[int]:
    """Steps whose logged loss is above `factor` times the median of the `window` logged losses
    before it (from the (min_history + 1)-th logged loss on); a non-finite loss counts as a spike."""
    spikes = []
    for i, (step, loss) in enumerate(losses):
        history = [v for _, v in losses[max(0, i - window) : i] if math.isfinite(v)]
        if len(history) < min_history:
            continue
        history.sort()
        middle = len(history) // 2
        median = history[middle] if len(history) % 2 else 0.5 * (history[middle - 1] + history[middle])
        if not math.isfinite(loss) or loss > factor * median:
            spikes.append(step)
    return spikes


def diverged(losses: list[tuple[int, float]], stopped_non_finite: bool) -> bool:
    values = [v for _, v in losses]
    if stopped_non_finite or any(not math.isfinite(v) for v in values):
        return True
    return len(values) >= 2 and values[-1] > values[0]


def mean_of(values) -> float | None:
    return None if values is None else float(sum(values) / len(values))


def run_result(run: dict) -> dict:
    """Everything the report says about one run (read from its workdir)."""
    workdir = Path(run["workdir"])
    losses, evals = read_metrics(workdir)
    divergence = workdir / "diverged.json"
    attention_path = workdir / "attention.json"
    attention = json.loads(attention_path.read_text()) if attention_path.exists() else None
    summary_path = workdir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    result = {
        **{k: run[k] for k in ("name", "arm", "lr_multiplier", "lr", "workdir")},
        "commands": {"train": shlex.join(run["train_command"]), "analysis": shlex.join(run["analysis_command"])},
        "steps": losses[-1][0] if losses else 0, "wall_s": summary.get("wall_s"),
        "first_train_loss": losses[0][1] if losses else None, "last_train_loss": losses[-1][1] if losses else None,
        "train_loss": losses, "eval": evals,
        "spikes": loss_spikes(losses), "stopped_non_finite": divergence.exists(),
        "diverged": diverged(losses, divergence.exists()),
        "eval_accuracy": next((r["eval_accuracy"] for r in reversed(evals) if "eval_accuracy" in r), None),
        "attention": attention,
    }
    if attention is not None:
        per_layer = attention["per_layer"]
        sinks = per_layer["sink_share"]
        top = max(range(len(sinks)), key=lambda layer: sinks[layer])
        result |= {
            "valid_loss": attention["loss"], "sink_share_mean": mean_of(sinks), "sink_share_max": sinks[top],
            "sink_share_max_layer": top, "max_abs_activation": max(per_layer["max_abs_activation"]),
            "gate_mean": mean_of(per_layer["gate_mean"]), "small_gate_share": mean_of(per_layer["small_gate_share"]),
            "heatmap": attention.get("plot"),
        }
    return result


def fmt(value, spec: str = ".3f") -> str:
    return "" if value is None else format(value, spec)


def markdown(results: list[dict], args) -> str:
    lines = [
        f"# Gated-attention study: `{args.config}`", "",
        f"Arms: attn_gate {', '.join(args.arms)}; learning-rate multipliers {', '.join(f'{m:g}' for m in args.lr_multipliers)}. "
        f"Commands and definitions: `scripts/gated_attention_study.py` and `study.json`. Spike: a logged training loss "
        f"> {SPIKE_FACTOR}x the median of the {SPIKE_WINDOW} logged losses before it. Diverged: a non-finite loss, or "
        "the last logged training loss above the first.", "",
        "| arm | lr | steps | valid loss | eval acc | sink mean | sink max (layer) | max abs act | gate mean | gate < 0.1 "
        "| spikes | diverged |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        spikes = f"{len(r['spikes'])}" + (f" ({', '.join(map(str, r['spikes'][:6]))}{'...' if len(r['spikes']) > 6 else ''})"
                                         if r["spikes"] else "")
        sink_max = f"{fmt(r.get('sink_share_max'))} ({r['sink_share_max_layer']})" if "sink_share_max" in r else ""
        lines.append(
            f"| {r['arm']} | {r['lr_multiplier']:g}x ({r['lr']:g}) | {r['steps']} | {fmt(r.get('valid_loss'), '.4f')} "
            f"| {fmt(r['eval_accuracy'])} | {fmt(r.get('sink_share_mean'))} | {sink_max} "
            f"| {fmt(r.get('max_abs_activation'), '.4g')} | {fmt(r.get('gate_mean'))} | {fmt(r.get('small_gate_share'))} "
            f"| {spikes} | {'yes' if r['diverged'] else 'no'} |")
    lines += ["", "## Loss curves", ""]
    for m in args.lr_multipliers:
        lines.append(f"![training loss, lr {m:g}x](loss_{multiplier_name(m)}.png)")
    lines += ["", "## Sink share, layer x head", ""]
    for r in results:
        if r.get("heatmap"):  # the analysis draws it beside attention.json, in the run's directory under root
            lines.append(f"- {r['name']}: ![{r['name']}]({r['name']}/{Path(r['heatmap']).name})")
    return "\n".join(lines) + "\n"


def plot_losses(results: list[dict], m: float, out: Path) -> Path | None:
    """Training loss against step of each arm at multiplier `m`, validation loss as markers."""
    try:
        from matplotlib.figure import Figure

        figure = Figure(figsize=(6.5, 3.8), dpi=100, layout="constrained")
        axes = figure.subplots()
        for r in (r for r in results if r["lr_multiplier"] == m):
            steps = [s for s, v in r["train_loss"] if math.isfinite(v)]
            line, = axes.plot(steps, [v for _, v in r["train_loss"] if math.isfinite(v)], linewidth=1,
                              label=f"{r['arm']}{' (diverged)' if r['diverged'] else ''}")
            evaluated = [(e["step"], e["eval_loss"]) for e in r["eval"] if "eval_loss" in e]
            if evaluated:
                axes.plot(*zip(*evaluated), "o", color=line.get_color(), markersize=4)
            for spike in r["spikes"]:
                axes.axvline(spike, color=line.get_color(), alpha=0.25, linewidth=0.8)
        axes.set_yscale("log")
        axes.set_xlabel("step")
        axes.set_ylabel("training loss (dots: validation loss)")
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8)
        figure.suptitle(f"learning rate {m:g}x (vertical lines: spikes)")
        figure.savefig(out, format="png")
        return out
    except Exception as err:  # noqa: BLE001 - a picture is a by-product
        print(f"warning: could not draw {out}: {err}", file=sys.stderr)
        return None


def report(runs: list[dict], args) -> dict:
    root = Path(args.root)
    results = [run_result(run) for run in runs]
    for m in args.lr_multipliers:
        plot_losses(results, m, root / f"loss_{multiplier_name(m)}.png")
    study = {"config": args.config, "overrides": args.overrides, "arms": list(args.arms),
             "lr_multipliers": args.lr_multipliers, "steps": args.steps, "minutes": args.minutes,
             "spike": {"factor": SPIKE_FACTOR, "window": SPIKE_WINDOW, "min_history": SPIKE_MIN_HISTORY},
             "runs": results}
    (root / "study.json").write_text(json.dumps(study, indent=2) + "\n")
    (root / "study.md").write_text(markdown(results, args))
    return study


# ----------------------------------------------------------------------------- command line


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="gated_text", help="preset (or .py / config.json) every run shares")
    parser.add_argument("--root", required=True, help="directory of the study: one workdir per run, the report")
    parser.add_argument("--lr-multipliers", type=parse_multipliers, default=[1.0, 2.0, 4.0],
                        help="optimizer.lr multipliers, comma separated (default 1,2,4)")
    parser.add_argument("--arms", type=lambda t: [a for a in t.split(",") if a], default=list(ARMS),
                        help="attn_gate arms, comma separated (default none,headwise,elementwise)")
    parser.add_argument("--steps", type=int, default=None, help="train.steps of every run (default: the preset's)")
    parser.add_argument("--minutes", type=float, default=None, help="train.time_limit_minutes of every run")
    parser.add_argument("--cpu", type=int, default=None, help="pin every run to this core (taskset -c N)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("overrides", nargs="*", help="overrides every run shares (after --), e.g. task.n_train=64")
    args = parser.parse_args(argv)
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown or not args.arms:
        parser.error(f"--arms: {', '.join(unknown) or 'none given'}; choose from {', '.join(ARMS)}")
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be >= 1; got {args.steps}")
    if any(o.split("=")[0] in ("model.attn_gate", "optimizer.lr") for o in args.overrides):
        parser.error("model.attn_gate and optimizer.lr are what the study varies: set the base lr in the preset, "
                     "the arms with --arms and the multipliers with --lr-multipliers")
    return args


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    runs = plan(args, args.overrides)
    if args.dry_run:
        for run in runs:
            done = trained(Path(run["workdir"])) and analysed(Path(run["workdir"]))
            print(f"# {run['name']}{' (done: skipped)' if done else ''}")
            print(shlex.join(run["train_command"]))
            print(shlex.join(run["analysis_command"]))
        return None
    Path(args.root).mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    for index, run in enumerate(runs, 1):
        run_one(run, index, len(runs))
    study = report(runs, args)
    print((Path(args.root) / "study.md").read_text())
    print(f"wrote {Path(args.root) / 'study.md'}, study.json and the loss curves ({time.monotonic() - started:.0f} s)")
    return study


if __name__ == "__main__":
    main()
