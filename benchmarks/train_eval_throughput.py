"""Train-step throughput and eval examples/s against batch size, measured in one run.

    python benchmarks/train_eval_throughput.py [--config prosqa_mini_cot] [--steps 20] [--eval-batches 8,32,128]

Prints tokens/s of the jitted train step (after compile) on real pipeline batches, and
examples/s of the jitted KV-cache decoding loop for each eval batch size, each as a ratio to
the smallest batch so machine noise largely cancels. Also reports compiles per distinct shape.
Results go to benchmarks/results/train_eval_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax

from latent import sharding
from latent.config_io import apply_overrides, load_preset
from latent.data import pipeline
from latent.data.splits import fit_tokenizer, load_splits, resolve_vocab
from latent.eval.evaluator import Evaluator
from latent.train.loop import build_state, count_traces
from latent.train.optimizer import make_optimizer
from latent.train.step import make_train_step


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="prosqa_mini_cot")  # a text CoT job: the benchmark builds text batches
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eval-batches", default="8,32,128")
    parser.add_argument("--eval-examples", type=int, default=128)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_eval_throughput.json"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    cfg = apply_overrides(load_preset(args.config), args.overrides + ["task.n_train=2000"])
    train_examples, valid, task = load_splits(cfg)
    tokenizer = fit_tokenizer(train_examples, valid, cfg.task.format)
    cfg = resolve_vocab(cfg, tokenizer)
    records, _ = pipeline.tokenize_examples(train_examples, tokenizer, cfg.task.format, cfg.task.max_len)
    batches = pipeline.train_batches(records, batch_size=cfg.train.batch_size, seed=0,
                                     pad_id=tokenizer.pad_id, max_len=cfg.task.max_len,
                                     group_window=cfg.train.length_grouping, bucket_multiple=cfg.train.length_bucket)
    mesh = sharding.make_mesh(cfg.mesh)
    optimizer, schedule = make_optimizer(cfg.optimizer, cfg.train.steps)
    graphdef, make_state, _, state_sh = build_state(cfg, mesh, optimizer)
    state = make_state()
    train_step, step_traces = count_traces(make_train_step(graphdef, optimizer, schedule))
    step_fn = jax.jit(train_step, in_shardings=(state_sh, sharding.batch_sharding(mesh)),
                      out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=(0,))

    warm = [next(batches) for _ in range(args.steps)]
    shapes = sorted({b["tokens"].shape[1] for b in warm})
    for length in shapes:  # compile every bucket first
        batch = next(b for b in warm if b["tokens"].shape[1] == length)
        state, metrics = step_fn(state, batch)
    jax.block_until_ready(metrics)
    tokens = 0
    start = time.perf_counter()
    for batch in warm:
        state, metrics = step_fn(state, batch)
        tokens += int(batch["padding_mask"].sum())
    jax.block_until_ready(metrics)
    train_s = time.perf_counter() - start
    result = {
        "config": args.config,
        "params": int(sum(x.size for x in jax.tree.leaves(state.params))),
        "train": {"steps": args.steps, "batch_size": cfg.train.batch_size, "real_tokens_per_s": tokens / train_s,
                  "s_per_step": train_s / args.steps, "bucket_lengths": shapes,
                  "compiles": step_traces()},
        "eval": [],
    }
    examples = valid[: args.eval_examples]
    for batch_size in [int(b) for b in args.eval_batches.split(",")]:
        eval_cfg = cfg.eval.__class__(**{**cfg.eval.__dict__, "batch_size": batch_size})
        evaluator = Evaluator(graphdef, cfg.model, tokenizer, examples, task.score, eval_cfg, fmt=cfg.task.format,
                              max_len=cfg.task.max_len, progress=False)
        evaluator(state.params)  # compiles every prompt-length bucket
        metrics = evaluator(state.params)
        result["eval"].append({"batch_size": batch_size, "examples_per_s": metrics["examples_per_s"],
                               "mean_generated_tokens": metrics["mean_generated_tokens"]})
    base = result["eval"][0]["examples_per_s"]
    for row in result["eval"]:
        row["ratio_to_smallest_batch"] = row["examples_per_s"] / base

    print(f"params {result['params']:,}; train step {result['train']['s_per_step']:.3f} s, "
          f"{result['train']['real_tokens_per_s']:.0f} real tokens/s; "
          f"{result['train']['compiles']} compiles for buckets {shapes}")
    print("eval batch | examples/s | x smallest batch")
    for row in result["eval"]:
        print(f"{row['batch_size']:10d} | {row['examples_per_s']:10.1f} | {row['ratio_to_smallest_batch']:.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
