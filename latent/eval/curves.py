"""Training curves of a run directory as one PNG, drawn from its metrics.jsonl.

Reading the log (not the loop's memory) makes the picture span every invocation of a resumed
run. A step logged twice (a run that resumed from an earlier checkpoint and trained it again)
keeps its latest row, so the lines never run backwards.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from latent.eval.figures import save_png, warn_not_drawn

CURVES_FILE = "curves.png"


def read_rows(metrics_path: str | Path) -> list[dict]:
    """metrics.jsonl rows by step, the latest row for each (step, kind) kept; a torn last line
    (a run killed mid-write) is skipped."""
    latest: dict[tuple[int, bool], dict] = {}
    for line in Path(metrics_path).read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "step" in row:
            is_eval = any(key.startswith("eval_") for key in row)
            latest[(int(row["step"]), is_eval)] = row
    return [latest[key] for key in sorted(latest)]


def _series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    pairs = [(r["step"], float(r[key])) for r in rows
             if isinstance(r.get(key), (int, float)) and math.isfinite(float(r[key]))]
    return [s for s, _ in pairs], [v for _, v in pairs]


def panels_for(rows: list[dict]) -> list[tuple[tuple[str, ...], str, str]]:
    """(metric keys, y label, scale) of each panel: train loss, the rollouts' reward and accuracy
    when the run is an RL run (its rows log reward_mean), eval accuracy, learning rate; a language
    model's (eval_loss and no eval_accuracy): train and validation loss, learning rate."""
    language_model = any("eval_loss" in r for r in rows) and not any("eval_accuracy" in r for r in rows)
    if language_model:  # a text corpus run (latent.methods.lm): evaluated by its validation loss, decodes nothing
        return [(("loss", "eval_loss"), "loss", "log"), (("lr",), "learning rate", "linear")]
    panels = [(("loss",), "train loss", "log")]
    if any("reward_mean" in r for r in rows):
        panels.append((("reward_mean", "accuracy"), "rollout reward / accuracy", "linear"))
    return panels + [(("eval_accuracy",), "eval accuracy", "linear"), (("lr",), "learning rate", "linear")]


def write_curves(metrics_path: str | Path, out_path: str | Path) -> Path | None:
    """PNG of loss, (RL: rollout reward and accuracy,) eval accuracy and learning rate against
    step; None when there is no log.
    A picture is a by-product: a plotting failure is reported, never raised into training."""
    metrics_path, out_path = Path(metrics_path), Path(out_path)
    if not metrics_path.exists():
        return None
    try:
        return _draw(read_rows(metrics_path), out_path)
    except Exception as err:  # noqa: BLE001 - e.g. a broken matplotlib install must not stop a run
        warn_not_drawn(out_path, err)
        return None


def _draw(rows: list[dict], out_path: Path) -> Path:
    # Figure without pyplot: no global state and no display backend (Agg writes the PNG).
    from matplotlib.figure import Figure

    panels = panels_for(rows)
    figure = Figure(figsize=(6.5, 2.5 * len(panels)), dpi=100, layout="constrained")
    axes_list = figure.subplots(len(panels), 1, sharex=True)
    for axes, (keys, label, scale) in zip(axes_list, panels):
        drawn = False
        for key in keys:
            steps, values = _series(rows, key)
            if not steps:
                continue
            marker = "o" if key.startswith("eval_") else None
            axes.plot(steps, values, marker=marker, markersize=3, linewidth=1, label=key)
            drawn = True
            if scale == "log" and min(values) > 0 and max(values) > 10 * min(values):  # log only when it spans a decade
                axes.set_yscale("log")
        if not drawn:
            axes.text(0.5, 0.5, "not logged yet", ha="center", va="center", transform=axes.transAxes, color="gray")
        elif len(keys) > 1:
            axes.legend(fontsize=8)
        if keys == ("eval_accuracy",):
            axes.set_ylim(-0.02, 1.02)
        axes.set_ylabel(label)
        axes.grid(True, alpha=0.3)
    axes_list[-1].set_xlabel("step")
    figure.suptitle(f"training curves ({out_path.parent.name})")
    return save_png(figure, out_path)
