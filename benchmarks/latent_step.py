"""Continuous-thought cost, as ratios measured in one run:

    python benchmarks/latent_step.py [--config prosqa_coconut] [--k 6] [--repeats 5]

1. Train step: Coconut batches at k latent slots (prefix pass + scan over k slots + suffix pass)
   against plain SFT steps on the same sequences with tokens in those k slots (one pass).
   Target from the issue: <= 1.5x.
2. Eval: examples/s decoding with k thoughts (policy fixed) against text-mode decoding of the
   same prompts with the same token budget.
Steps alternate (latent, plain, latent, ...) and the median of each is reported, so machine
noise hits both sides alike. Results go to benchmarks/results/latent_step.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import jax
import numpy as np

from latent import sharding
from latent.config_io import apply_overrides, load_preset
from latent.data.splits import fit_tokenizer, load_splits, resolve_vocab
from latent.eval.evaluator import Evaluator
from latent.methods.coconut import curriculum
from latent.methods.coconut.objective import latent_objective
from latent.methods.sft import sft_objective
from latent.train.loop import build_state
from latent.train.optimizer import make_optimizer
from latent.train.step import make_train_step


def as_plain(batch: dict, latent_id: int) -> dict:
    """The same sequences as one token batch: prefix | k <latent> tokens | suffix, loss on the suffix."""
    tokens = np.concatenate([batch["prefix"], np.where(batch["latent_mask"], latent_id, 0), batch["suffix"]], 1)
    mask = np.concatenate([batch["prefix_mask"], batch["latent_mask"], batch["suffix_mask"]], 1)
    loss_mask = np.concatenate(
        [np.zeros_like(batch["prefix_mask"]), np.zeros_like(batch["latent_mask"]), batch["suffix_loss_mask"]], 1
    )
    return {"tokens": tokens.astype(np.int32), "padding_mask": mask, "loss_mask": loss_mask}


def timed(fn, *args):
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="prosqa_coconut")
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--eval-examples", type=int, default=64)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "latent_step.json"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    cfg = apply_overrides(load_preset(args.config), args.overrides + ["task.n_train=400", "latent.mode=coconut"])
    train_examples, valid, task = load_splits(cfg)
    tokenizer = fit_tokenizer(train_examples, valid, cfg.task.format)
    cfg = resolve_vocab(cfg, tokenizer)
    records, _ = curriculum.tokenize_latent_examples(train_examples, tokenizer, cfg.task.max_len)
    widths = curriculum.batch_widths(records)
    stage = args.k  # k thoughts replace the first k steps
    batch = curriculum.collate_latent(
        records[: cfg.train.batch_size], [stage] * cfg.train.batch_size, tokenizer, cfg.latent, widths, n_slots=args.k
    )
    plain = as_plain(batch, tokenizer.id_of("<latent>"))

    mesh = sharding.make_mesh(cfg.mesh)
    optimizer, schedule = make_optimizer(cfg.optimizer, cfg.train.steps)
    graphdef, make_state, _, state_sh = build_state(cfg, mesh, optimizer)

    def jitted(objective):
        return jax.jit(make_train_step(graphdef, optimizer, schedule, objective=objective),
                       in_shardings=(state_sh, sharding.batch_sharding(mesh)),
                       out_shardings=(state_sh, sharding.replicated(mesh)))

    latent_step, plain_step = jitted(latent_objective("full")), jitted(sft_objective)
    state = make_state()
    timed(latent_step, state, batch)  # compile both
    timed(plain_step, state, plain)
    latent_s, plain_s = [], []
    for _ in range(args.repeats):
        latent_s.append(timed(latent_step, state, batch)[1])
        plain_s.append(timed(plain_step, state, plain)[1])
    train_ratio = statistics.median(latent_s) / statistics.median(plain_s)

    examples = valid[: args.eval_examples]
    eval_cfg = cfg.eval.__class__(**{**cfg.eval.__dict__, "batch_size": len(examples)})
    rates = {"fixed": [], "none": []}
    evaluators = {policy: Evaluator(graphdef, cfg.model, tokenizer, examples, task.score, eval_cfg, fmt=cfg.task.format,
                                    max_len=cfg.task.max_len, progress=False, policy=policy,
                                    latent_steps=args.k if policy == "fixed" else 0)
                  for policy in ("fixed", "none")}
    for policy in ("fixed", "none", "fixed", "none"):  # the first of each compiles
        rates[policy].append(evaluators[policy](state.params)["examples_per_s"])
    out = {
        "config": args.config, "k": args.k, "batch_size": cfg.train.batch_size,
        "widths": {"prefix": widths.prefix, "suffix": widths.suffix},
        "train_step_s": {"latent_median": statistics.median(latent_s), "plain_median": statistics.median(plain_s),
                         "latent_all": latent_s, "plain_all": plain_s},
        "latent_over_plain_step": train_ratio,
        "eval_examples_per_s": {"latent_k": rates["fixed"][-1], "text": rates["none"][-1]},
        "latent_over_text_eval_rate": rates["fixed"][-1] / rates["none"][-1],
        "note": "eval with random weights: text decoding runs to max_new_tokens; so does latent after its thoughts",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "train_step_s"}, indent=2))
    print(f"train step: latent {statistics.median(latent_s):.3f}s  plain {statistics.median(plain_s):.3f}s")


if __name__ == "__main__":
    main()
