"""A table and a figure of RL runs against the SFT runs they started from (issue 23's report).

    python scripts/rl_report.py runs/s23/switch_grpo runs/s23/hrpo --out docs/results/rl_runs

For each RL run directory (`method=rl`), read from its own files:
- where it started (`init_from.json`) and that start's last evaluation (its metrics.jsonl);
- the `rl.*` settings that differ from the defaults, `latent.latent_grad` when not `full`, and
  `optimizer.lr` (with `optimizer.lr_scale` when set);
- its evaluations: the first and the last (accuracy, generated / reasoning tokens, latent steps);
- its rollouts' reward, accuracy and generated tokens, averaged over the first and the last
  tenth of its steps; HRPO's gate (`hrpo_token_weight`, `hrpo_a`) at the start and the end;
- steps and wall time (the last logged `elapsed_s`).

Writes `<out>.md` (a markdown table), `<out>.json` and `<out>.png` (validation accuracy and
rollout reward against step, one line per run). Runs still going are read as they stand.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from latent.config import RLConfig  # noqa: E402
from latent.eval.curves import read_rows  # noqa: E402

EVAL_KEYS = {"accuracy": "eval_accuracy", "tokens": "eval_mean_generated_tokens",
             "reasoning": "eval_mean_reasoning_tokens", "latent": "eval_mean_latent_steps"}


def _evals(rows: list[dict]) -> list[dict]:
    return [{"step": r["step"], **{k: r.get(key) for k, key in EVAL_KEYS.items()}} for r in rows if "eval_accuracy" in r]


def _window_mean(rows: list[dict], key: str, last: bool) -> float | None:
    values = [r[key] for r in rows if key in r and "loss" in r]
    if not values:
        return None
    n = max(1, len(values) // 10)
    return statistics.fmean(values[-n:] if last else values[:n])


def _changed_settings(config: dict) -> list[str]:
    defaults = vars(RLConfig())
    changed = [f"rl.{k}={v}" for k, v in config.get("rl", {}).items() if k in defaults and defaults[k] != v]
    if config.get("latent", {}).get("latent_grad", "full") != "full":
        changed.append(f"latent.latent_grad={config['latent']['latent_grad']}")
    if config.get("model", {}).get("feedback") == "hrpo":
        changed.append("model.feedback=hrpo")
    changed.append(f"optimizer.lr={config['optimizer']['lr']}")
    if config["optimizer"].get("lr_scale"):
        changed.append(f"optimizer.lr_scale={config['optimizer']['lr_scale']}")
    return changed


def summarize(run: Path) -> dict:
    rows = read_rows(run / "metrics.jsonl")
    config = json.loads((run / "config.json").read_text())
    init = json.loads((run / "init_from.json").read_text())
    start_rows = read_rows(Path(init["path"]) / "metrics.jsonl") if (Path(init["path"]) / "metrics.jsonl").exists() else []
    start_evals = _evals(start_rows)
    evals = _evals(rows)
    steps = [r for r in rows if "loss" in r]
    return {
        "run": str(run), "started_from": init["path"], "settings": _changed_settings(config),
        "steps": steps[-1]["step"] if steps else 0, "wall_s": max((r.get("elapsed_s", 0) for r in rows), default=0),
        "start_eval": start_evals[-1] if start_evals else None,
        "first_eval": evals[0] if evals else None, "last_eval": evals[-1] if evals else None,
        "best_eval": max(evals, key=lambda e: e["accuracy"]) if evals else None,
        **{f"{key}_{when}": _window_mean(rows, key, when == "last")
           for key in ("reward_mean", "accuracy", "generated_tokens", "hrpo_token_weight", "hrpo_a", "entropy")
           for when in ("first", "last")},
        "evals": evals,
        "rewards": [(r["step"], r["reward_mean"]) for r in steps if "reward_mean" in r],
    }


def _fmt(value, pattern="{:.1f}") -> str:
    return "-" if value is None else pattern.format(value)


def table(summaries: list[dict]) -> str:
    lines = ["| run | settings | steps (wall) | start: accuracy, tokens | last eval: accuracy, tokens, latent steps "
             "| best eval | rollout reward first -> last | gate token weight first -> last |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in summaries:
        start, last, best = s["start_eval"] or {}, s["last_eval"] or {}, s["best_eval"] or {}
        lines.append(
            f"| `{Path(s['run']).name}` | {', '.join(f'`{c}`' for c in s['settings'])} "
            f"| {s['steps']:,} ({s['wall_s'] / 60:.0f} min) "
            f"| {_fmt(start.get('accuracy'), '{:.1%}')}, {_fmt(start.get('tokens'))} "
            f"| {_fmt(last.get('accuracy'), '{:.1%}')}, {_fmt(last.get('tokens'))}, {_fmt(last.get('latent'))} "
            f"| {_fmt(best.get('accuracy'), '{:.1%}')} (step {best.get('step', '-')}) "
            f"| {_fmt(s['reward_mean_first'], '{:.3f}')} -> {_fmt(s['reward_mean_last'], '{:.3f}')} "
            f"| {_fmt(s['hrpo_token_weight_first'], '{:.4f}')} -> {_fmt(s['hrpo_token_weight_last'], '{:.4f}')} |")
    return "\n".join(lines) + "\n"


SMOOTHING = 10  # logged reward points in the figure's running mean


def figure(summaries: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (acc_ax, reward_ax) = plt.subplots(1, 2, figsize=(13, 4.5))
    for i, s in enumerate(summaries):
        name = Path(s["run"]).name
        style = dict(color=plt.cm.tab20(i % 20), linestyle=("-", "--", ":")[(i // 20) % 3])  # 20 distinct colours
        start = (s["start_eval"] or {}).get("accuracy")
        evals = ([(0, start)] if start is not None else []) + [(e["step"], e["accuracy"]) for e in s["evals"]]
        if evals:
            acc_ax.plot(*zip(*evals), marker="o", label=name, **style)
        if s["rewards"]:
            steps, rewards = (np.asarray(v, float) for v in zip(*s["rewards"]))
            window = min(len(rewards), SMOOTHING)  # one batch's reward is noise: a running mean shows the trend
            smoothed = np.convolve(rewards, np.ones(window) / window, mode="valid")
            reward_ax.plot(steps[window - 1:], smoothed, label=name, **style)
    acc_ax.set(xlabel="RL step (0: the SFT start)", ylabel="validation accuracy", title="accuracy")
    reward_ax.set(xlabel="RL step", ylabel="mean rollout reward", title=f"reward (running mean of {SMOOTHING} logged steps)")
    acc_ax.grid(alpha=0.3)
    reward_ax.grid(alpha=0.3)
    reward_ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="RL run directories")
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.md, OUT.json and OUT.png")
    args = parser.parse_args(argv)
    missing = [str(run) for run in args.runs if not (run / "init_from.json").exists()]
    if missing:
        parser.error(f"not RL run directories (no init_from.json): {', '.join(missing)}")
    summaries = [summarize(run) for run in args.runs]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(table(summaries))
    args.out.with_suffix(".json").write_text(json.dumps(summaries, indent=2) + "\n")
    figure(summaries, args.out.with_suffix(".png"))
    print(table(summaries), end="")


if __name__ == "__main__":
    main()
