"""Evaluation examples/s against batch size for a Coconut-style decode, float32 and bfloat16
KV cache, with the decoding loops each evaluation compiled, measured in one run.

    taskset -c 0 python benchmarks/eval_throughput.py [--config prosqa_coconut] [--batches 1,8,32] [--examples 64]
        [--breakdown] [key=value overrides, e.g. model.d_model=512 model.n_layers=6]

An Evaluator (the one train.py and eval.py use) decodes `--examples` validation questions of the
preset's task with policy fixed: `question <bot>`, `--thoughts` continuous thoughts, `<eot>`, then
up to `--new-tokens` greedy tokens, on a randomly initialised model (speed does not depend on the
weights, except where a row emits EOS early: mean_generated_tokens says how many it wrote). Each
evaluation runs twice, the first compiling; the second is timed. `prompt_share` is the time of a
batch-32 evaluation with one new token over the full one: the prompt pass and thoughts. Ratios to
batch 1 of the same run largely cancel the machine's load (printed from `uptime`). `--breakdown`
times, for each batch size, the same evaluation without thoughts and one new token (the prompt
pass) and with thoughts and one new token, and reports ms per example in the prompt pass, the
thoughts and the decode steps, and one decode step of the whole batch.
Results go to benchmarks/results/eval_throughput.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
from pathlib import Path

import jax
from flax import nnx

from latent.config_io import apply_overrides, load_preset
from latent.data.splits import fit_tokenizer, load_splits, resolve_vocab
from latent.eval.evaluator import Evaluator
from latent.infer.engine import make_generate
from latent.nn import Transformer


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def timed_evaluation(graphdef, params, cfg, tokenizer, examples, score, args, *, new_tokens=None, thoughts=None,
                     **eval_changes) -> dict:
    """One evaluator: compile (first call), then the timed call; its examples/s and compiles."""
    new_tokens = args.new_tokens if new_tokens is None else new_tokens
    thoughts = args.thoughts if thoughts is None else thoughts
    eval_cfg = dataclasses.replace(cfg.eval, max_new_tokens=new_tokens, **eval_changes)
    make_generate.cache_clear()  # a jitted generate of its own, so its compiles are this evaluator's
    evaluator = Evaluator(graphdef, cfg.model, tokenizer, examples, score, eval_cfg, fmt=cfg.task.format,
                          max_len=cfg.task.max_len, progress=False, policy="fixed", latent_steps=thoughts)
    evaluator(params)
    metrics = evaluator(params)
    return {"examples_per_s": metrics["examples_per_s"], "compiles": evaluator.compiled_shapes(),
            "batch_shapes": sorted({tuple(b["tokens"].shape) for b in evaluator.batches}),
            "mean_generated_tokens": metrics["mean_generated_tokens"]}


def breakdown(graphdef, params, cfg, tokenizer, examples, score, args, run) -> dict:
    """Where a batch size's time goes, per example: the prompt pass (no thoughts, one new token),
    the thoughts (with them, one new token, less the prompt pass) and the decode steps (the rest);
    and one decode step of the whole batch (the decoding's time over its steps)."""
    one = dict(new_tokens=1, batch_size=run["batch_size"], cache_dtype=run["cache_dtype"])
    prompt = timed_evaluation(graphdef, params, cfg, tokenizer, examples, score, args, thoughts=0, **one)
    thoughts = timed_evaluation(graphdef, params, cfg, tokenizer, examples, score, args, **one)
    prompt_ms, with_thoughts_ms, full_ms = (1e3 / r["examples_per_s"] for r in (prompt, thoughts, run))
    batches = -(-len(examples) // run["batch_size"])
    steps = max(run["mean_generated_tokens"] - 1, 1)  # at most; a batch runs to its longest row
    return {"batch_size": run["batch_size"], "prompt_ms": prompt_ms, "thoughts_ms": with_thoughts_ms - prompt_ms,
            "decode_ms": full_ms - with_thoughts_ms,
            "decode_step_ms": (full_ms - with_thoughts_ms) * len(examples) / batches / steps}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="prosqa_coconut")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--cache-dtypes", default="float32,bfloat16")
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--thoughts", type=int, default=6)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--breakdown", action="store_true",
                        help="also time each batch size's prompt pass and thoughts alone (two more evaluations each)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "eval_throughput.json"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    cfg = apply_overrides(load_preset(args.config), ["task.n_train=200", f"task.n_valid={args.examples}", *args.overrides])
    train_examples, valid, task = load_splits(cfg)
    tokenizer = fit_tokenizer(train_examples, valid, cfg.task.format)
    cfg = resolve_vocab(cfg, tokenizer)
    graphdef, params = nnx.split(Transformer(cfg.model, rngs=nnx.Rngs(0)))
    examples = valid[: args.examples]
    batches = [int(b) for b in args.batches.split(",")]
    result = {"config": args.config, "overrides": args.overrides, "examples": len(examples), "thoughts": args.thoughts,
              "new_tokens": args.new_tokens, "params": int(sum(x.size for x in jax.tree.leaves(params))),
              "cpus": os.cpu_count(), "load_before": load(), "runs": []}
    for cache_dtype in args.cache_dtypes.split(","):
        for batch_size in batches:
            row = timed_evaluation(graphdef, params, cfg, tokenizer, examples, task.score, args,
                                   batch_size=batch_size, cache_dtype=cache_dtype)
            result["runs"].append({"cache_dtype": cache_dtype, "batch_size": batch_size, **row})
            print(f"{cache_dtype:9s} batch {batch_size:3d}: {row['examples_per_s']:7.2f} examples/s, "
                  f"{row['compiles']} compiles {row['batch_shapes']}", flush=True)
    largest = max(batches)
    full = next(r for r in result["runs"] if r["batch_size"] == largest)
    prompt_only = timed_evaluation(graphdef, params, cfg, tokenizer, examples, task.score, args, new_tokens=1,
                                   batch_size=largest, cache_dtype=full["cache_dtype"])
    result["prompt_share"] = full["examples_per_s"] / prompt_only["examples_per_s"]
    if args.breakdown:
        result["breakdown"] = [breakdown(graphdef, params, cfg, tokenizer, examples, task.score, args, run)
                               for run in result["runs"] if run["cache_dtype"] == full["cache_dtype"]]
    result["load_after"] = load()
    for run in result["runs"]:
        base = next(r for r in result["runs"] if r["cache_dtype"] == run["cache_dtype"] and r["batch_size"] == min(batches))
        run["ratio_to_batch_1"] = run["examples_per_s"] / base["examples_per_s"]
    print("cache     | batch | examples/s | x batch 1 | compiles")
    for run in result["runs"]:
        print(f"{run['cache_dtype']:9s} | {run['batch_size']:5d} | {run['examples_per_s']:10.2f} | "
              f"{run['ratio_to_batch_1']:9.2f} | {run['compiles']}")
    print(f"prompt pass and thoughts: {result['prompt_share']:.0%} of a batch-{largest} evaluation")
    for row in result.get("breakdown", []):
        print(f"batch {row['batch_size']:3d} ms per example: prompt pass {row['prompt_ms']:.1f}, thoughts "
              f"{row['thoughts_ms']:.1f}, decoding {row['decode_ms']:.1f}; one decode step of the batch "
              f"{row['decode_step_ms']:.2f} ms")
    print(f"load before: {result['load_before']}\nload after:  {result['load_after']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
