"""CoT vs no-CoT vs Coconut vs SWITCH under one wall-clock budget, then a table.

    python scripts/latent_comparison.py --minutes 120 --root runs/comparison
    taskset -c 0 python scripts/latent_comparison.py --family tiny --minutes 20 --root runs/comparison_tiny
    python scripts/latent_comparison.py --minutes 0.5 --root /tmp/cmp --only cot coconut -- \
        task.n_train=200 train.batch_size=8 latent.epochs_per_stage=1 model.n_layers=1   # smoke test

Each arm trains in its own process (one at a time, so each has the machine to itself) with
`train.time_limit_minutes`; all arms share the Coconut preset's model, data and optimizer, so
only the reasoning format differs (`--family full` shown; `tiny` uses the `prosqa_tiny_*` presets:
the default job's small graphs and fast model):

  cot      latent.mode=none, task.format=cot        (text chain of thought)
  no_cot   latent.mode=none, task.format=no_cot     (answer only)
  coconut  the `prosqa_coconut` preset              (continuous thoughts, curriculum)
  switch   the `prosqa_switch` preset               (model-switched latent span)

Pinning the whole script to one core (`taskset -c 0`) keeps the budget fair while other work
uses the other core; two invocations on two cores with the same `--root` and different
`--only` arms run in parallel and share one table (each finished arm leaves `<arm>.row.json`).

Then each is evaluated on its generated validation split and on `--real` (default: the real
ProsQA validation file). Results: `<root>/comparison.json` and `<root>/comparison.md`
(accuracy, mean generated tokens, mean latent steps, training steps reached, wall time).

The Coconut curriculum must reach its last stage inside the budget for its number to mean
"Coconut": pass `latent.epochs_per_stage=...` (or `task.n_train=...`) after `--` to size it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# family -> (Coconut preset, SWITCH preset, CoT decoding length)
FAMILIES = {
    "full": ("prosqa_coconut", "prosqa_switch", 96),  # real-size ProsQA graphs, d=128 x 4
    "tiny": ("prosqa_tiny_coconut", "prosqa_tiny_switch", 64),  # the default job's graphs and model
}


def arms(family: str) -> dict[str, tuple[str, list[str]]]:
    coconut, switch, cot_tokens = FAMILIES[family]
    return {
        "cot": (coconut, ["latent.mode=none", "task.format=cot", f"eval.max_new_tokens={cot_tokens}"]),
        "no_cot": (coconut, ["latent.mode=none", "task.format=no_cot"]),
        "coconut": (coconut, []),
        "switch": (switch, []),
    }


def run(cmd: list[str], log: Path) -> float:
    start = time.perf_counter()
    with log.open("w") as f:
        done = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {done.returncode}); see {log}")
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, required=True, help="training budget per arm")
    parser.add_argument("--root", default="runs/comparison")
    parser.add_argument("--real", default=str(ROOT.parent / "shared" / "data" / "prosqa_valid.json"))
    parser.add_argument("--family", default="full", choices=list(FAMILIES),
                        help="full: prosqa_coconut/prosqa_switch; tiny: prosqa_tiny_coconut/prosqa_tiny_switch")
    parser.add_argument("--only", nargs="*", default=["cot", "no_cot", "coconut", "switch"],
                        choices=["cot", "no_cot", "coconut", "switch"])
    parser.add_argument("--eval-only", action="store_true",
                        help="evaluate the arms' existing workdirs again without training (train wall: '-')")
    parser.add_argument("overrides", nargs="*", help="key=value overrides applied to every arm")
    args = parser.parse_args()
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)

    family_arms = arms(args.family)
    for arm in args.only:
        preset, arm_overrides = family_arms[arm]
        workdir = root / arm
        overrides = arm_overrides + [f"train.time_limit_minutes={args.minutes}", "train.steps=1000000"] + args.overrides
        train_s = None
        if not args.eval_only:
            train_s = run([sys.executable, "train.py", "--config", preset, "--workdir", str(workdir), "--no-progress",
                           *overrides], root / f"{arm}.train.log")
        row = {"preset": preset, "overrides": overrides, "train_wall_s": train_s}
        for split, data in (("valid", None), ("real", args.real)):
            if data is not None and not Path(data).exists():
                continue
            out = root / f"{arm}.{split}.json"
            cmd = [sys.executable, "eval.py", "--workdir", str(workdir), "--out", str(out), "--no-progress"]
            run(cmd + (["--data", data] if data else []), root / f"{arm}.{split}.log")
            result = json.loads(out.read_text())
            row[split] = {k: result[k] for k in ("accuracy", "n", "mean_generated_tokens", "mean_latent_steps")}
            row["checkpoint_step"] = result["checkpoint_step"]
        (root / f"{arm}.row.json").write_text(json.dumps(row, indent=2) + "\n")
        print(arm, json.dumps({k: v for k, v in row.items() if k != "overrides"}), flush=True)

    # every finished arm under root, so arms run by parallel invocations (one per core) share a table
    order = ["cot", "no_cot", "coconut", "switch"]
    rows = {p.name.split(".")[0]: json.loads(p.read_text()) for p in root.glob("*.row.json")}
    rows = {arm: rows[arm] for arm in sorted(rows, key=order.index)}
    (root / "comparison.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        f"Family {args.family}; budget: {args.minutes} min of training per arm.",
        "",
        "| arm | steps | train wall | valid acc | valid tokens | valid latent | real acc | real tokens | real latent |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for arm, row in rows.items():
        v, r = row.get("valid", {}), row.get("real", {})
        wall = row.get("train_wall_s")
        cells = [arm, row.get("checkpoint_step", "-"), "-" if wall is None else f"{wall / 60:.1f} min"]
        for part in (v, r):
            cells += [f"{part['accuracy']:.1%} (n={part['n']})", f"{part['mean_generated_tokens']:.1f}",
                      f"{part['mean_latent_steps']:.1f}"] if part else ["-", "-", "-"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    (root / "comparison.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
