"""Training throughput of two git revisions, measured alternately in one run.

    python benchmarks/revisions.py --base facc39f                    # the default job, 3 rounds
    python benchmarks/revisions.py --base HEAD~3 --head HEAD --rounds 5 -- latent.mode=coconut

Each revision is checked out into a temporary worktree. `train.py` runs there in a fresh
process and a fresh workdir: `--steps` steps of `--config`, plus any overrides after `--`. The
revisions take turns, base first, then head, for each round, so both see the same machine
drift. Every row of metrics.jsonl carries `tokens_per_s`, the real tokens over the time of the
steps since the previous row; evaluation and checkpointing fall outside those windows. The
first row holds the compile, so it is dropped; a run's rate is the median of the rows left.

The report gives each revision's median rate over the rounds and the head/base ratio of each
round (1.0: same speed; below 1: head is slower). It is written to --out as JSON. The two
revisions must understand the same config keys. Run it on a quiet machine: the numbers are only
as good as the cores are free.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def worktree(rev: str, root: Path) -> Path:
    """A detached checkout of `rev` under `root` (removed with the temporary directory)."""
    path = root / rev.replace("/", "_").replace("~", "-")
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(path), rev],
                   check=True, capture_output=True, text=True)
    return path


def run_rate(checkout: Path, workdir: Path, args) -> dict:
    """One training run in `checkout`: the median tokens/s over its logged windows after the first."""
    cmd = [sys.executable, str(checkout / "train.py"), "--config", args.config, "--workdir", str(workdir),
           "--no-progress", f"train.steps={args.steps}", f"train.log_every={args.log_every}",
           f"train.eval_every={args.steps}", f"train.checkpoint_every={args.steps}",
           f"eval.n_examples={args.eval_examples}", *args.overrides]
    env = {"PYTHONPATH": str(checkout), "PATH": "/usr/bin:/bin"} | _passthrough_env()
    done = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{checkout.name}: train.py failed:\n{done.stderr[-3000:]}")
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r][1:]
    return {"tokens_per_s": statistics.median(rates), "windows": len(rates),
            "loss_at_end": next(r["loss"] for r in reversed(rows) if "loss" in r)}


def _passthrough_env() -> dict:
    import os

    keys = ("HOME", "XLA_FLAGS", "JAX_PLATFORMS", "LATENT_CACHE_DIR", "TMPDIR")
    return {k: os.environ[k] for k in keys if k in os.environ}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the revision to compare against (a commit, tag or branch)")
    parser.add_argument("--head", default="HEAD")
    parser.add_argument("--config", default="default")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--eval-examples", type=int, default=8, help="the one evaluation at the end: kept short")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "revisions.json"))
    parser.add_argument("overrides", nargs="*", help="config overrides for both revisions (after --)")
    args = parser.parse_args(argv)

    revs = {"base": args.base, "head": args.head}
    commits = {k: subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", v], check=True, capture_output=True,
                                 text=True).stdout.strip() for k, v in revs.items()}
    results = {"base": [], "head": []}
    with tempfile.TemporaryDirectory(prefix="latent-revisions-") as tmp:
        root = Path(tmp)
        checkouts = {k: worktree(v, root) for k, v in revs.items()}
        try:
            for r in range(args.rounds):
                for side in ("base", "head"):
                    result = run_rate(checkouts[side], root / f"run_{side}_{r}", args)
                    results[side].append(result)
                    print(f"round {r + 1}/{args.rounds} {side} {commits[side]}: {result['tokens_per_s']:,.0f} tokens/s "
                          f"(loss at step {args.steps}: {result['loss_at_end']:.6f})", file=sys.stderr, flush=True)
        finally:
            for path in checkouts.values():
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)], capture_output=True)
    ratios = [h["tokens_per_s"] / b["tokens_per_s"] for b, h in zip(results["base"], results["head"])]
    report = {
        "base": commits["base"], "head": commits["head"], "config": args.config, "steps": args.steps,
        "overrides": args.overrides,
        "base_tokens_per_s": statistics.median(r["tokens_per_s"] for r in results["base"]),
        "head_tokens_per_s": statistics.median(r["tokens_per_s"] for r in results["head"]),
        "head_over_base_per_round": ratios, "head_over_base_median": statistics.median(ratios),
        "same_final_loss": all(b["loss_at_end"] == h["loss_at_end"] for b, h in zip(results["base"], results["head"])),
        "runs": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"head {commits['head']} / base {commits['base']}: tokens/s ratio per round "
          + ", ".join(f"{x:.3f}" for x in ratios) + f" (median {report['head_over_base_median']:.3f}); "
          f"same final loss: {report['same_final_loss']}")
    return report


if __name__ == "__main__":
    main()
