"""Evaluate a trained run: `python eval.py --workdir DIR [--data FILE.json|FILE.jsonl|TASK] [--out results.json]`.

Without --data it evaluates on the run's own validation split. Prints accuracy, n,
mean_generated_tokens, mean_reasoning_tokens, mean_latent_steps and examples_per_s, and writes
them with per-example records as JSON. Abstract runs also report how the abstract vocabulary is
used (rank-frequency power-law fit, with a log-log plot next to the JSON); a phase of a keyed
warm-up reports `key_agreement` (does z still name the chain?), and a bottleneck run
`chain_leak` (does its answer read z, or the chain through z's positions?). A Coconut run
decodes with its checkpoint's number of continuous thoughts unless --latent-steps says otherwise.

`--analysis NAME` runs a standalone analysis instead of decoding (latent.eval.analyses.STANDALONE):
`attention` reads the full text of the examples with the decoder's diagnostics on and writes the
attention sink, output gate and max activation per layer and head to <workdir>/attention_<data>.json,
a layer x head heatmap of the sink beside it (.png), and prints a table (latent.eval.attention);
`probe` fits linear probes of the node each reasoning step reaches on the states of every latent
slot (Coconut, SWITCH) or written step (CoT) and layer, with a shuffled-label control and
Coconut's frontier masses, to <workdir>/probe_<data>.json and .png (latent.eval.probe);
`intervene` replaces each latent step's thought of a Coconut/SWITCH run (zeros, noise, another
example's, a node's embedding), or swaps an Abstract-CoT run's z between questions, and reports the
answer's accuracy and logit difference per step (latent.eval.interventions);
`steering` reads, per layer, the concept "is the right option the first-named?" at the answer
position, its direction (class-mean difference, probe weight), separability (held-out probe
accuracy) and steerability (the slope of P(first option) against alpha when alpha * direction is
added there), over EVERY checkpoint of the run up to --step (default: the latest), with the
directions' cosines between checkpoints, layer x checkpoint heatmaps and entropy trends
(latent.eval.steering); `--steer-concept node` reads instead a CoT run's node identity at each
written step's node position (steered towards another node of the graph, P(target) against alpha),
`--steer-concept mode` a SWITCH run's latent slots against its text positions (P(<swi>) before the
span against alpha).
Under several processes each runs the analysis whole, and process 0 writes and prints it.

Multi-process: the flags of train.py (`--coordinator HOST:PORT --num-processes N --process-id I`,
or SLURM / Cloud TPU detected); every process loads the checkpoint onto its first local device
and decodes every example, and process 0 writes and prints the results.
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from pathlib import Path

from latent import distributed
from latent.cli import user_errors
from latent.config import CacheDType, DecodePolicy, ScorerName
from latent.eval.analyses import STANDALONE

# Flags that only decoding reads: refused with --analysis, which decodes nothing.
DECODING_FLAGS = ("max_new_tokens", "temperature", "top_p", "top_k", "latent_steps", "switch_policy", "latent_budget",
                  "max_switches", "scorer", "cache_dtype")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a run directory written by train.py")
    parser.add_argument("--data", default=None, help="JSON/JSONL file or task name (default: the run's validation split)")
    parser.add_argument(
        "--out", default=None,
        help="results JSON (default: <workdir>/eval_<data>.json, or eval_<data>.<k>.json when that exists)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace <workdir>/eval_<data>.json if it exists")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--temperature", type=float, default=None, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling (1 = off)")
    parser.add_argument("--top-k", type=int, default=None, help="sample from the k most likely tokens (0 = off)")
    parser.add_argument("--n", type=int, default=None, help="evaluate the first n examples only")
    parser.add_argument(
        "--latent-steps", type=int, default=None,
        help="continuous thoughts after <bot> (default: the checkpoint's curriculum stage; 0 = plain text)",
    )
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--switch-policy", choices=typing.get_args(DecodePolicy), default=None,
        help="latent mode while decoding (default: the run's own: fixed for Coconut, none for text)",
    )
    parser.add_argument("--latent-budget", type=int, default=None, help="most latent steps per span (model, entropy)")
    parser.add_argument("--max-switches", type=int, default=None, help="most latent spans per example (entropy)")
    parser.add_argument(
        "--cache-dtype", choices=typing.get_args(CacheDType), default=None,
        help="the decoding KV cache's storage (auto: the model's dtype; bfloat16 halves what each step reads)",
    )
    parser.add_argument(
        "--scorer", choices=typing.get_args(ScorerName), default=None,
        help="how answers are judged (default: the run's task.scorer; auto: the one that fits the data)",
    )
    parser.add_argument(
        "--analysis", choices=sorted(STANDALONE), default=None,
        help="run this analysis instead of decoding (it reads --data, --step, --n, --batch-size, --out)",
    )
    parser.add_argument(
        "--steer-concept", choices=("option", "node", "mode"), default=None,
        help="--analysis steering's concept: option (is the right option the first-named; the default), node "
             "(the node a written step reaches: CoT runs), mode (latent slots against text positions: SWITCH runs)",
    )
    distributed.add_flags(parser)
    args = parser.parse_args(argv)
    if args.steer_concept is not None and args.analysis != "steering":
        parser.error("--steer-concept picks --analysis steering's concept; it needs --analysis steering")
    if args.analysis is not None:
        decoding = [f"--{name.replace('_', '-')}" for name in DECODING_FLAGS if getattr(args, name) is not None]
        if decoding:
            parser.error(f"{', '.join(decoding)} set how answers are decoded; --analysis {args.analysis} decodes none")
        with user_errors():
            return run_analysis(args)

    with user_errors():
        distributed.initialize(args)  # before any JAX computation; a single process: nothing
        from latent.eval.run import evaluate_workdir

        overrides = {
            "eval.batch_size": args.batch_size, "eval.max_new_tokens": args.max_new_tokens,
            "eval.temperature": args.temperature, "eval.top_p": args.top_p, "eval.top_k": args.top_k,
            "eval.n_examples": args.n, "eval.switch_policy": args.switch_policy, "eval.latent_budget": args.latent_budget,
            "eval.max_switches": args.max_switches, "eval.cache_dtype": args.cache_dtype, "task.scorer": args.scorer,
        }
        writer = distributed.is_writer()
        out = Path(args.out) if args.out else default_output(args.workdir, args.data, args.overwrite or not writer)
        if writer:
            out.parent.mkdir(parents=True, exist_ok=True)
        results = evaluate_workdir(
            args.workdir, data=args.data, step=args.step,
            overrides={k: v for k, v in overrides.items() if v is not None}, progress=writer and not args.no_progress,
            latent_steps=args.latent_steps, plot_path=out.with_suffix(".rank_frequency.png") if writer else None,
        )
        if not writer:
            return results
        out.write_text(json.dumps(results, indent=2) + "\n")
    if "accuracy" not in results:  # a language model (task.name=text:...): its validation loss, nothing decoded
        from latent.eval.lm_loss import one_line as loss_line

        print(json.dumps({k: v for k, v in results.items() if not isinstance(v, (dict, list))}, indent=2))
        print(loss_line(results))
        print(f"wrote {out}")
        return results
    keys = ("accuracy", "scorer", "n", "mean_generated_tokens", "mean_reasoning_tokens", "mean_latent_steps",
            "examples_per_s", "checkpoint_step")
    headline = {k: results[k] for k in keys}
    if "codebook" in results:  # abstract runs: how the abstract vocabulary is used
        headline["codebook"] = {k: results["codebook"][k] for k in ("used", "exponent", "r2", "perplexity", "plot")}
    for key in ("key_agreement", "chain_leak"):  # a keyed warm-up's phases; a bottleneck run
        if key in results:
            headline[key] = results[key]
    baseline = (results.get("chain_analysis") or {}).get("no_path_baseline_accuracy")
    if baseline is not None:  # graph questions: what answering from one statement, without a path, scores
        headline["no_path_baseline_accuracy"] = baseline
    print(json.dumps(headline, indent=2))
    print(one_line(results, baseline))
    print(f"wrote {out}")
    return results


def run_analysis(args) -> dict:
    """`--analysis NAME`: the standalone analysis on the checkpoint, its JSON at --out (default
    <workdir>/<NAME>_<data>.json), its figures beside it, its table printed."""
    distributed.initialize(args)
    from latent.eval.analyses import standalone_analysis
    from latent.eval.run import analyse_workdir

    writer = distributed.is_writer()
    out = (Path(args.out) if args.out
           else default_output(args.workdir, args.data, args.overwrite or not writer, prefix=args.analysis))
    if writer:
        out.parent.mkdir(parents=True, exist_ok=True)
    overrides = {"eval.batch_size": args.batch_size, "eval.n_examples": args.n}
    results = analyse_workdir(
        args.workdir, args.analysis, out=out, data=args.data, step=args.step,
        overrides={k: v for k, v in overrides.items() if v is not None}, progress=writer and not args.no_progress,
        options=analysis_options(args),
    )
    if not writer:
        return results
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(standalone_analysis(args.analysis, **analysis_options(args)).table(results))
    print(f"wrote {out}" + (f" and {results['plot']}" if results.get("plot") else ""))
    return results


def analysis_options(args) -> dict:
    """The analysis's own flags that were given (--steer-concept for steering)."""
    return {"concept": args.steer_concept} if args.steer_concept is not None else {}


def one_line(results: dict, baseline: float | None) -> str:
    """The point of a run in one line: accuracy, what each answer cost, and the bar to clear."""
    line = (f"accuracy {100 * results['accuracy']:.1f}% (n={results['n']}) with "
            f"{results['mean_generated_tokens']:.1f} generated tokens ({results['mean_reasoning_tokens']:.1f} before "
            f"the answer) and {results['mean_latent_steps']:.1f} continuous thoughts per answer")
    if baseline is not None:
        line += f"; the no-path guess (one statement, no reasoning) scores {100 * baseline:.1f}%"
    return line


def default_output(workdir, data, overwrite: bool, prefix: str = "eval") -> Path:
    """<workdir>/<prefix>_<data>.json; when that exists (and not `overwrite`) the first free
    <prefix>_<data>.<k>.json, so an earlier evaluation is never lost. prefix: eval, or the analysis."""
    name = f"{prefix}_{Path(data).stem if data else 'valid'}"
    out = Path(workdir) / f"{name}.json"
    k = 1
    while out.exists() and not overwrite:
        out, k = Path(workdir) / f"{name}.{k}.json", k + 1
    if k > 1:
        print(f"{name}.json exists in {workdir}: writing {out.name} (--overwrite replaces it)", file=sys.stderr)
    return out


if __name__ == "__main__":
    main()
