"""CoT vs no-CoT vs Coconut vs SWITCH under one wall-clock budget, then a table.

    python scripts/latent_comparison.py --minutes 120 --root runs/comparison
    taskset -c 0 python scripts/latent_comparison.py --family tiny --minutes 20 --root runs/comparison_tiny
    python scripts/latent_comparison.py --minutes 0.5 --root /tmp/cmp --only cot coconut -- \
        task.n_train=200 train.batch_size=8 latent.epochs_per_stage=1 model.n_layers=1   # smoke test

Each arm trains in its own process (one at a time, so each has the machine to itself) with
`train.time_limit_minutes`; all arms share the Coconut preset's model, data and optimizer, so
only the reasoning format differs (`--family full` shown; `tiny` uses the `prosqa_tiny_*` presets:
the default job's fast model on small shortcut-free graphs, `prosqa_three_step`):

  cot      latent.mode=none, task.format=cot        (text chain of thought)
  no_cot   latent.mode=none, task.format=no_cot     (answer only)
  coconut  the `prosqa_coconut` preset              (continuous thoughts, curriculum)
  switch   the `prosqa_switch` preset               (model-switched latent span)
  abstract `prosqa_abstract` (tiny family only)     (Abstract-CoT warm-up; evaluated at its final phase)

`--family multiplication` compares cot / no_cot / abstract on 3 x 3 digit multiplication
(`multiplication_cot`, `multiplication_abstract`; no real file).

Pinning the whole script to one core (`taskset -c 0`) keeps the budget fair while other work
uses the other core; two invocations on two cores with the same `--root` and different
`--only` arms run in parallel and share one table (each finished arm leaves `<arm>.row.json`).

`--tag T` runs variants beside them: the arms become `ARM-T` (own workdir and row), e.g.
`--only coconut --tag mix latent.uniform_prob=0.3`.

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
ARM_ORDER = ["cot", "no_cot", "coconut", "switch", "abstract"]


def arms(family: str) -> dict[str, tuple[str, list[str]]]:
    """arm -> (preset, overrides). Within a family every arm shares model, data and optimizer."""
    if family == "multiplication":  # 3 x 3 digits: CoT against Abstract-CoT
        return {"cot": ("multiplication_cot", []), "no_cot": ("multiplication_cot", ["task.format=no_cot"]),
                "abstract": ("multiplication_abstract", [])}
    coconut, switch, cot_tokens = {
        "full": ("prosqa_coconut", "prosqa_switch", 96),  # real-size ProsQA graphs, d=128 x 4
        "tiny": ("prosqa_tiny_coconut", "prosqa_tiny_switch", 64),  # the default job's graphs and model
    }[family]
    family_arms = {
        "cot": (coconut, ["latent.mode=none", "task.format=cot", f"eval.max_new_tokens={cot_tokens}"]),
        "no_cot": (coconut, ["latent.mode=none", "task.format=no_cot"]),
        "coconut": (coconut, []),
        "switch": (switch, []),
    }
    if family == "tiny":
        family_arms["abstract"] = ("prosqa_abstract", [])  # the Abstract-CoT warm-up, 2 rounds
    return family_arms


def model_dir(workdir: Path) -> Path:
    """The run to evaluate: the warm-up's final phase for an Abstract-CoT arm, else the arm's own."""
    summary = workdir / "warmup.json"
    return Path(json.loads(summary.read_text())["final"]) if summary.exists() else workdir


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
    parser.add_argument("--family", default="full", choices=["full", "tiny", "multiplication"],
                        help="full: prosqa_coconut/prosqa_switch; tiny: prosqa_tiny_* and prosqa_abstract; "
                             "multiplication: multiplication_cot/multiplication_abstract")
    parser.add_argument("--only", nargs="*", default=None, choices=ARM_ORDER, help="arms to run (default: the family's)")
    parser.add_argument("--eval-only", action="store_true",
                        help="evaluate the arms' existing workdirs again without training (keeps a recorded train wall)")
    parser.add_argument("--tag", default="",
                        help="run the arms as variants named ARM-TAG (own workdirs and table rows), e.g. "
                             "--only coconut --tag mix latent.uniform_prob=0.3")
    parser.add_argument("overrides", nargs="*", help="key=value overrides applied to every arm")
    args = parser.parse_args()
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)

    family_arms = arms(args.family)
    unknown = [a for a in (args.only or []) if a not in family_arms]
    if unknown:
        parser.error(f"family {args.family} has no arm {unknown}; it has {list(family_arms)}")
    if args.family == "multiplication" and args.real.endswith("prosqa_valid.json"):
        args.real = ""  # no real multiplication file: the generated split only
    for arm in args.only or list(family_arms):
        preset, arm_overrides = family_arms[arm]
        arm = f"{arm}-{args.tag}" if args.tag else arm
        workdir = root / arm
        # A warm-up keeps its phases' own step counts (the time limit caps it; a phase it cuts short
        # stops the warm-up); the other arms train until the time limit.
        open_ended = [] if "abstract" in preset else ["train.steps=1000000"]
        overrides = arm_overrides + [f"train.time_limit_minutes={args.minutes}", *open_ended] + args.overrides
        previous_row = root / f"{arm}.row.json"
        train_s = json.loads(previous_row.read_text()).get("train_wall_s") if previous_row.exists() else None
        if not args.eval_only:
            train_s = run([sys.executable, "train.py", "--config", preset, "--workdir", str(workdir), "--no-progress",
                           *overrides], root / f"{arm}.train.log")
        row = {"preset": preset, "overrides": overrides, "train_wall_s": train_s}
        for split, data in (("valid", None), ("real", args.real)):
            if data is not None and not (data and Path(data).exists()):
                continue
            out = root / f"{arm}.{split}.json"
            cmd = [sys.executable, "eval.py", "--workdir", str(model_dir(workdir)), "--out", str(out), "--no-progress"]
            run(cmd + (["--data", data] if data else []), root / f"{arm}.{split}.log")
            result = json.loads(out.read_text())
            keys = ("accuracy", "n", "mean_generated_tokens", "mean_reasoning_tokens", "mean_latent_steps")
            row[split] = {k: result[k] for k in keys}
            row["checkpoint_step"] = result["checkpoint_step"]
        (root / f"{arm}.row.json").write_text(json.dumps(row, indent=2) + "\n")
        print(arm, json.dumps({k: v for k, v in row.items() if k != "overrides"}), flush=True)

    write_tables(root, f"Family {args.family}; budget: {args.minutes} min of training per arm.")


def write_tables(root: Path, title: str) -> str:
    """comparison.json and comparison.md from every `<arm>.row.json` under root; returns the table."""
    # every finished arm under root, so arms run by parallel invocations (one per core) share a table
    rows = {p.name.removesuffix(".row.json"): json.loads(p.read_text()) for p in root.glob("*.row.json")}
    rows = {arm: rows[arm] for arm in sorted(rows, key=lambda arm: (ARM_ORDER.index(arm.split("-")[0]), arm))}
    (root / "comparison.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        title,
        "",
        "| arm | steps | train wall | valid acc | valid tokens | valid reasoning | valid latent "
        "| real acc | real tokens | real reasoning | real latent |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for arm, row in rows.items():
        v, r = row.get("valid", {}), row.get("real", {})
        wall = row.get("train_wall_s")
        cells = [arm, row.get("checkpoint_step", "-"), "-" if wall is None else f"{wall / 60:.1f} min"]
        for part in (v, r):
            reasoning = part.get("mean_reasoning_tokens")
            cells += [f"{part['accuracy']:.1%} (n={part['n']})", f"{part['mean_generated_tokens']:.1f}",
                      "-" if reasoning is None else f"{reasoning:.1f}",
                      f"{part['mean_latent_steps']:.1f}"] if part else ["-"] * 4
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    table = "\n".join(lines) + "\n"
    (root / "comparison.md").write_text(table)
    print(table)
    return table


if __name__ == "__main__":
    main()
