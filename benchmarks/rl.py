"""RL costs, as ratios measured in one run (issue 23, part 4):

    python benchmarks/rl.py                      # the default job's model, random weights
    python benchmarks/rl.py --quick              # a tiny model, a few seconds per part
    python benchmarks/rl.py --skip-loop          # parts 1 and 2 only

1. Rollout throughput against batch size. For each policy (text; Coconut's fixed thoughts;
   entropy-switched latent spans) and each number of prompts B, a jitted `make_generate` with
   G samples per prompt decodes B * G rows of `--max-new-tokens` (random weights and no EOS:
   every row runs to the cap). Reported: emitted tokens/s, latent steps/s, and rows/s. The
   policies take turns inside each repeat, so machine drift hits them alike; the median repeat
   is kept.
2. Replay cost. The jitted gradient of the replayed log-probs (what an RL update computes) for
   a latent rollout, against a text rollout of equal length: the Coconut rollout takes K thoughts
   then T - K tokens, the entropy rollout interleaves latent steps in its T loop iterations, and
   the text rollout emits T tokens. Reported as latent / text time ratios.
3. A step's split between rollout and learning in `train()` itself: a short SFT run of the
   default preset, then `method=rl` from it; metrics.jsonl's `rollout_s` and `learn_s`
   (latent.methods.rl.method) give the median rollout share of a step.

Results go to benchmarks/results/rl.json (or --out). Random weights make the rates those of
a model that never stops early: a trained model's rollouts end at EOS, sooner.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from latent.config_io import apply_overrides, load_preset
from latent.infer.engine import make_generate
from latent.methods.rl.replay import replay_logprobs
from latent.methods.rl.rollout import RolloutLayout, rollout
from latent.models import presets
from latent.nn import Transformer

PAD, BOT, EOT, NEVER = 0, 1, 2, -1  # NEVER: an EOS id no sample draws, so every row runs to the cap


def model_config(quick: bool):
    """The default job's model (configs/default.py) at a fixed vocabulary, or a tiny one."""
    if quick:
        return presets.llama(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, max_seq_len=256)
    return apply_overrides(load_preset("default"), ["model.vocab_size=256"]).model


def layouts(thoughts: int, budget: int) -> dict[str, RolloutLayout]:
    return {
        "text": RolloutLayout(policy="none"),
        "coconut": RolloutLayout(policy="fixed", latent_steps=thoughts, eot_id=EOT),
        "entropy": RolloutLayout(policy="entropy", latent_budget=budget, max_latent_total=4 * budget, max_switches=4),
    }


def timed(fn, *args):
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - start


def prompts_for(n: int, length: int, vocab: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    prompt_BxP = rng.integers(3, vocab, size=(n, length)).astype(np.int32)
    prompt_BxP[:, -1] = BOT  # Coconut's prompt ends with <bot>; the others read it as a token
    return jnp.asarray(prompt_BxP)


def rollout_throughput(graphdef, params, model_cfg, args) -> list[dict]:
    """Part 1: rows, tokens and latent steps per second for each policy and number of prompts."""
    rows = []
    for prompts in args.prompts:
        prompt_BxP = prompts_for(prompts, args.prompt_len, model_cfg.vocab_size)
        mask_BxP = jnp.ones_like(prompt_BxP, bool)
        thoughts_B = jnp.full((prompts,), args.thoughts, jnp.int32)
        runs = {}
        for name, layout in layouts(args.thoughts, args.budget).items():
            generate = make_generate(graphdef, model_cfg, args.max_new_tokens, NEVER, PAD, 1.0, 1.0,
                                     group_size=args.group_size, **layout.engine_kwargs())
            call = functools.partial(rollout, generate, params, prompt_BxP, mask_BxP, jax.random.PRNGKey(0), layout=layout,
                                     latent_steps_B=thoughts_B if layout.policy == "fixed" else None)
            timed(call)  # compile
            runs[name] = {"call": call, "seconds": []}
        for _ in range(args.repeats):  # policies in turn within each repeat
            for run in runs.values():
                out, seconds = timed(run["call"])
                run["seconds"].append(seconds)
                run["tokens"], run["latent"] = int(np.sum(out.lengths_N)), int(np.sum(out.thoughts_N))
        for name, run in runs.items():
            seconds = statistics.median(run["seconds"])
            n_rows = prompts * args.group_size
            rows.append({"policy": name, "prompts": prompts, "rows": n_rows, "seconds": seconds,
                         "tokens_per_s": run["tokens"] / seconds, "latent_steps_per_s": run["latent"] / seconds,
                         "rows_per_s": n_rows / seconds, "latent_steps": run["latent"], "tokens": run["tokens"]})
            print(f"rollout {name:8s} B={prompts:3d} x G={args.group_size}: {rows[-1]['tokens_per_s']:9,.0f} tokens/s "
                  f"{rows[-1]['latent_steps_per_s']:9,.0f} latent steps/s ({seconds:.3f} s)", file=sys.stderr, flush=True)
    return rows


def replay_cost(graphdef, params, model_cfg, args) -> dict:
    """Part 2: the gradient of the replayed log-probs, latent rollouts against a text rollout."""
    prompts = args.replay_prompts
    prompt_BxP = prompts_for(prompts, args.prompt_len, model_cfg.vocab_size, seed=1)
    mask_BxP = jnp.ones_like(prompt_BxP, bool)
    T = args.max_new_tokens
    # equal lengths: text emits T tokens; Coconut K thoughts then T - K tokens; entropy T loop iterations
    cases = {
        "text": (layouts(args.thoughts, args.budget)["text"], T, None),
        "coconut": (layouts(args.thoughts, args.budget)["coconut"], T - args.thoughts,
                    jnp.full((prompts,), args.thoughts, jnp.int32)),
        "entropy": (layouts(args.thoughts, args.budget)["entropy"], T, None),
    }
    grads, recorded = {}, {}
    for name, (layout, new_tokens, thoughts_B) in cases.items():
        generate = make_generate(graphdef, model_cfg, new_tokens, NEVER, PAD, 1.0, 1.0, group_size=args.group_size,
                                 max_total_tokens=args.prompt_len + T if layout.policy == "entropy" else 0, **layout.engine_kwargs())
        rollouts = rollout(generate, params, prompt_BxP, mask_BxP, jax.random.PRNGKey(1), layout=layout,
                           latent_steps_B=thoughts_B)
        recorded[name] = {"tokens": int(np.sum(rollouts.lengths_N)), "latent_steps": int(np.sum(rollouts.thoughts_N))}
        loss = lambda p, r: jnp.sum(replay_logprobs(nnx.merge(graphdef, p), r) * r.mask_NxT)
        grads[name] = (jax.jit(jax.grad(loss)), rollouts)
        timed(grads[name][0], params, rollouts)  # compile
    seconds = {name: [] for name in grads}
    for _ in range(args.repeats):
        for name, (fn, rollouts) in grads.items():
            seconds[name].append(timed(fn, params, rollouts)[1])
    medians = {name: statistics.median(s) for name, s in seconds.items()}
    for name in medians:
        print(f"replay grad {name:8s}: {medians[name] * 1e3:8.1f} ms  {recorded[name]}", file=sys.stderr, flush=True)
    return {"seconds_median": medians, "rollouts": recorded, "rows": prompts * args.group_size,
            "coconut_over_text": medians["coconut"] / medians["text"],
            "entropy_over_text": medians["entropy"] / medians["text"]}


def step_split(args) -> dict:
    """Part 3: train() itself, SFT then RL from it; the median share of a step spent in rollouts."""
    from latent.train.loop import train

    sft_args = ["train.steps=60", "train.eval_every=60", "train.checkpoint_every=60", "task.n_train=2000",
                "task.n_valid=32", "eval.n_examples=16"]
    rl_args = ["method=rl", f"train.steps={args.rl_steps}", f"train.eval_every={args.rl_steps}",
               f"train.checkpoint_every={args.rl_steps}", "train.log_every=1", "task.n_train=2000", "task.n_valid=32",
               "eval.n_examples=16", f"rl.group_size={args.group_size}", f"rl.max_new_tokens={args.max_new_tokens}"]
    preset = "tiny" if args.quick else "default"
    with tempfile.TemporaryDirectory(prefix="latent-rl-bench-") as tmp:
        sft_dir, rl_dir = Path(tmp) / "sft", Path(tmp) / "rl"
        train(apply_overrides(load_preset(preset), sft_args), sft_dir, progress=False)
        train(apply_overrides(load_preset(preset), [*rl_args, f"train.init_from={sft_dir}"]), rl_dir, progress=False)
        rows = [json.loads(line) for line in (rl_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "learn_s" in r][1:]  # the first learn_s holds the update's compile
    split = {"preset": preset, "rl_steps": args.rl_steps, "steps_measured": len(steps),
             "rollout_s_median": statistics.median(r["rollout_s"] for r in steps),
             "learn_s_median": statistics.median(r["learn_s"] for r in steps),
             "rollout_share_median": statistics.median(r["rollout_share"] for r in steps)}
    print(f"step split ({preset}): rollout {split['rollout_s_median']:.3f} s, learn {split['learn_s_median']:.3f} s, "
          f"rollout share {split['rollout_share_median']:.2f}", file=sys.stderr, flush=True)
    return split


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tiny model and small batches")
    parser.add_argument("--prompts", type=int, nargs="+", default=None, help="prompts per rollout batch (B)")
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--prompt-len", type=int, default=48)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--thoughts", type=int, default=6, help="Coconut's thoughts")
    parser.add_argument("--budget", type=int, default=4, help="the entropy policy's latent steps per span")
    parser.add_argument("--replay-prompts", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rl-steps", type=int, default=12)
    parser.add_argument("--skip-loop", action="store_true", help="skip part 3 (train() SFT then RL)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    args.prompts = args.prompts or ([2, 4] if args.quick else [4, 8, 16, 32])
    if args.quick:
        args.repeats, args.rl_steps = min(args.repeats, 3), min(args.rl_steps, 4)

    model_cfg = model_config(args.quick)
    graphdef, params = nnx.split(Transformer(model_cfg, rngs=nnx.Rngs(0)))
    report = {"model": {k: getattr(model_cfg, k) for k in ("d_model", "n_layers", "n_heads", "vocab_size")},
              "group_size": args.group_size, "prompt_len": args.prompt_len, "max_new_tokens": args.max_new_tokens,
              "thoughts": args.thoughts, "repeats": args.repeats, "backend": jax.default_backend(),
              "devices": jax.device_count()}
    report["rollout"] = rollout_throughput(graphdef, params, model_cfg, args)
    report["replay"] = replay_cost(graphdef, params, model_cfg, args)
    if not args.skip_loop:
        report["step_split"] = step_split(args)
    default_out = Path(__file__).parent / "results" / ("rl_quick.json" if args.quick else "rl.json")
    out = Path(args.out or default_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "rollout"}, indent=2))
    return report


if __name__ == "__main__":
    main()
