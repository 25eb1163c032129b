"""Evaluate a trained run: `python eval.py --workdir DIR [--data FILE.json|FILE.jsonl|TASK] [--out results.json]`.

Without --data it evaluates on the run's own validation split. Prints accuracy, n,
mean_generated_tokens and examples_per_s, and writes them with per-example records as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from latent.cli import user_errors


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a run directory written by train.py")
    parser.add_argument("--data", default=None, help="JSON/JSONL file or task name (default: the run's validation split)")
    parser.add_argument("--out", default=None, help="results JSON (default: <workdir>/eval_<data>.json)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--temperature", type=float, default=None, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--n", type=int, default=None, help="evaluate the first n examples only")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    with user_errors():
        from latent.eval.run import evaluate_workdir

        overrides = {
            "eval.batch_size": args.batch_size, "eval.max_new_tokens": args.max_new_tokens,
            "eval.temperature": args.temperature, "eval.top_p": args.top_p, "eval.n_examples": args.n,
        }
        results = evaluate_workdir(
            args.workdir, data=args.data, step=args.step,
            overrides={k: v for k, v in overrides.items() if v is not None}, progress=not args.no_progress,
        )
        name = Path(args.data).stem if args.data else "valid"
        out = Path(args.out) if args.out else Path(args.workdir) / f"eval_{name}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
    headline = {k: results[k] for k in ("accuracy", "n", "mean_generated_tokens", "examples_per_s", "checkpoint_step")}
    print(json.dumps(headline, indent=2))
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
