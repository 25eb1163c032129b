"""RL costs, as ratios measured in one run (issue 23, part 4):

    python benchmarks/rl.py                      # the default job's model, random weights
    python benchmarks/rl.py --quick              # a tiny model, a few seconds per part
    python benchmarks/rl.py --skip-loop          # parts 1 and 2 only

Five decoding policies: text; Coconut's fixed thoughts; entropy-switched latent spans; SWITCH's
model-opened spans (policy `model`, "switch" here: the model emits <swi>, takes latent steps and
closes with </swi>, drawn at each latent position where the span may close, else forced by the
budget); HRPO (policy `hrpo`: every sampled token before the answer marker is fed back as the
gated hybrid of its embedding and the hidden part, latent.nn.feedback.HRPOGate).

Random weights would give a `model`-policy rollout almost no span (<swi> is drawn at 1/V), so the
SWITCH case runs a copy of the params whose output-head column of <swi> is k u: u the unit mean of
the final hidden states over a probe of random prompts, k chosen (bisection) so that the mean
pi(<swi>) over the probe's positions is `--swi-rate` (the model has no output bias; a hidden
state's projection on u varies with its token, so the rate is a mean, some tokens opening spans
far more often than others, and decoded positions are not the probe's: the realised rate is
reported beside it). Nothing else changes; </swi> keeps its random-weight probability,
so most spans run to `--budget` steps and close by a forced </swi> (the drawn decisions,
log(1 - pi(</swi>)), are computed at every step all the same; the record counts drawn closes). What the rollouts did is counted
from their record, not from the knobs: latent steps per row (`thoughts_N`), spans opened, the
realised opening rate (spans over the text-mode positions where a span could open) and drawn
closes. Both switching policies cap a row at 4 x budget latent steps (entropy: 4 spans).
HRPO runs its own model, the same config with `model.feedback=hrpo` (its own graphdef and params:
the gate's W_r, W_i and Lambda besides, at their init, token weight 0.99), and an answer marker
no sample draws (-1, as the EOS), so every emitted token is fed as the hybrid; its hybrid-fed
tokens are counted from the record (`hybrid_NxT`). Its latent steps are 0: a hybrid position
emits a token.

1. Rollout throughput against batch size. For each policy and each number of prompts B, a jitted
   `make_generate` with G samples per prompt decodes B * G rows of `--max-new-tokens` (random
   weights and no EOS: every row runs to the cap). Reported: emitted tokens/s, latent steps/s,
   rows/s and the record's counts. The policies take turns inside each repeat, so machine drift
   hits them alike; the median repeat is kept.
2. Replay cost. The jitted gradient of the replayed policy terms (what an RL update computes: the
   tokens' log-probs, and SWITCH's drawn latent steps') for a latent rollout, against a text
   rollout of equal length: the Coconut rollout takes K thoughts then T - K tokens, the entropy
   and SWITCH rollouts interleave latent steps in their T loop iterations (tokens + latent steps
   = T; the replay scans every iteration of the record, T + 4 x budget here, idle ones too, as
   RL's does), the HRPO and text rollouts emit T tokens. Reported as latent / text time ratios.
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
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from latent.config_io import apply_overrides, load_preset
from latent.infer.engine import make_generate
from latent.methods.rl.replay import replay
from latent.methods.rl.rollout import LOOP_POLICIES, RolloutLayout, Rollouts, rollout
from latent.models import presets
from latent.nn import Transformer

PAD, BOT, EOT, SWI, SWI_END = 0, 1, 2, 3, 4
NEVER = -1  # an EOS (and HRPO answer marker) id no sample draws, so every row runs to the cap
FIRST_TEXT = 5  # prompts draw from [FIRST_TEXT, V): no special id among them
POLICIES = ("text", "coconut", "entropy", "switch", "hrpo")


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
        "switch": RolloutLayout(policy="model", latent_budget=budget, max_latent_total=4 * budget, swi_id=SWI,
                                swi_end_id=SWI_END),
        "hrpo": RolloutLayout(policy="hrpo", answer_id=NEVER),
    }


class Case(NamedTuple):  # not a dataclass: the import test loads this file outside sys.modules
    """One policy's model and layout: SWITCH and HRPO run models of their own (module docstring)."""

    graphdef: object
    params: object
    cfg: object
    layout: RolloutLayout


def timed(fn, *args):
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - start


def prompts_for(n: int, length: int, vocab: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    prompt_BxP = rng.integers(FIRST_TEXT, vocab, size=(n, length)).astype(np.int32)
    prompt_BxP[:, -1] = BOT  # Coconut's prompt ends with <bot>; the others read it as a token
    return jnp.asarray(prompt_BxP)


def lean_towards_swi(graphdef, params, model_cfg, rate: float, prompt_len: int) -> tuple[object, dict]:
    """(params, calibration): a copy of `params` whose <swi> head column is k u, with u the unit
    mean hidden state over a probe of 16 random prompts and k the scale at which the mean
    pi(<swi>) over the probe's positions is `rate` (module docstring)."""
    model = nnx.clone(nnx.merge(graphdef, params))  # merge shares the arrays' holders: edit a copy
    if model.lm_head is None:
        raise ValueError("the SWITCH case sets <swi>'s output-head column: it needs an untied head")
    out = model(prompts_for(16, prompt_len, model_cfg.vocab_size, seed=2))
    hidden_MxD = np.asarray(out.hidden, np.float64).reshape(-1, model_cfg.d_model)
    logits_MxV = np.asarray(out.logits, np.float64).reshape(-1, model_cfg.vocab_size)
    others_MxV = np.delete(logits_MxV, SWI, axis=1)
    others_M = np.log(np.exp(others_MxV - others_MxV.max(1, keepdims=True)).sum(1)) + others_MxV.max(1)
    mean_D = hidden_MxD.mean(0)
    u_D = mean_D / np.linalg.norm(mean_D)
    projection_M = hidden_MxD @ u_D
    # pi(<swi>) = sigmoid(k u.h - logsumexp of the other logits): exact for the probe, monotone in k
    pi_M = lambda k: 1.0 / (1.0 + np.exp(others_M - k * projection_M))  # noqa: E731
    low, high = 0.0, 1.0
    while pi_M(high).mean() < rate:
        low, high = high, 2 * high
    for _ in range(60):
        low, high = ((low + high) / 2, high) if pi_M((low + high) / 2).mean() < rate else (low, (low + high) / 2)
    k = (low + high) / 2
    model.lm_head[...] = model.lm_head[...].at[:, SWI].set(jnp.asarray(k * u_D, model.lm_head[...].dtype))
    quartiles = np.quantile(pi_M(k), [0.25, 0.5, 0.75])
    calibration = {"swi_rate": rate, "scale": k, "probe_positions": len(projection_M),
                   "probe_mean_pi": float(pi_M(k).mean()), "probe_pi_quartiles": [float(q) for q in quartiles]}
    return nnx.split(model)[1], calibration


def cases(graphdef, params, model_cfg, args) -> tuple[dict[str, Case], dict]:
    """Each policy's Case; the SWITCH params' calibration."""
    switch_params, calibration = lean_towards_swi(graphdef, params, model_cfg, args.swi_rate, args.prompt_len)
    hrpo_cfg = model_cfg.replace(feedback="hrpo")
    hrpo_graphdef, hrpo_params = nnx.split(Transformer(hrpo_cfg, rngs=nnx.Rngs(0)))
    models = {"switch": (graphdef, switch_params, model_cfg), "hrpo": (hrpo_graphdef, hrpo_params, hrpo_cfg)}
    return {name: Case(*models.get(name, (graphdef, params, model_cfg)), layout)
            for name, layout in layouts(args.thoughts, args.budget).items()}, calibration


def record(rollouts: Rollouts) -> dict:
    """What the rollouts did, counted from their record: tokens, latent steps (in all, and per
    row), and per policy the spans opened, the realised opening rate and drawn closes (SWITCH) or
    the hybrid-fed tokens (HRPO)."""
    lengths_N, thoughts_N = np.asarray(rollouts.lengths_N), np.asarray(rollouts.thoughts_N)
    counts = {"tokens": int(lengths_N.sum()), "latent_steps": int(thoughts_N.sum()),
              "latent_steps_per_row": float(thoughts_N.mean())}
    layout = rollouts.layout
    if rollouts.latent_NxI is not None:
        latent_NxI = np.asarray(rollouts.latent_NxI, bool)
        before_NxI = np.pad(latent_NxI[:, :-1], ((0, 0), (1, 0)))  # the previous iteration was latent
        counts["spans"] = int((latent_NxI & ~before_NxI).sum())
    if layout.policy == "model":
        # A text-mode iteration emits and does not follow a latent step (that one closes a span); a
        # span can open there while the row is under its latent cap.
        iterations = latent_NxI.shape[1]
        active_NxI = np.arange(iterations)[None] < (lengths_N + latent_NxI.sum(1))[:, None]
        taken_before_NxI = np.cumsum(latent_NxI, 1) - latent_NxI
        could_open_NxI = active_NxI & ~latent_NxI & ~before_NxI & (taken_before_NxI < layout.max_latent_total)
        # A span's close is the token emitted right after its last latent step (a </swi> drawn in
        # text mode is a plain token, not counted); drawn if the mask covers it, else forced.
        closes_NxI = active_NxI & ~latent_NxI & before_NxI
        emitted_at_NxI = np.cumsum(active_NxI & ~latent_NxI, 1) - 1  # the token index an emitting iteration wrote
        rows_C, iterations_C = np.nonzero(closes_NxI)
        drawn_C = np.asarray(rollouts.mask_NxT)[rows_C, emitted_at_NxI[rows_C, iterations_C]]
        counts |= {"open_rate": counts["spans"] / max(int(could_open_NxI.sum()), 1),
                   "drawn_closes": int(drawn_C.sum()), "forced_closes": int((~drawn_C).sum())}
    if rollouts.hybrid_NxT is not None:
        hybrid_NxT = np.asarray(rollouts.hybrid_NxT & rollouts.emitted_NxT)
        counts |= {"hybrid_tokens": int(hybrid_NxT.sum()), "hybrid_share": float(hybrid_NxT.sum() / lengths_N.sum())}
    return counts


def describe(counts: dict) -> str:
    extra = [f"{counts['latent_steps_per_row']:.1f} latent/row"]
    if "open_rate" in counts:
        extra.append(f"{counts['spans']} spans, open rate {counts['open_rate']:.2f}, "
                     f"{counts['drawn_closes']} drawn / {counts['forced_closes']} forced </swi>")
    if "hybrid_tokens" in counts:
        extra.append(f"{counts['hybrid_tokens']} hybrid-fed ({counts['hybrid_share']:.2f} of tokens)")
    return "; ".join(extra)


def rollout_throughput(policies: dict[str, Case], args) -> list[dict]:
    """Part 1: rows, tokens and latent steps per second for each policy and number of prompts."""
    rows = []
    for prompts in args.prompts:
        prompt_BxP = prompts_for(prompts, args.prompt_len, policies["text"].cfg.vocab_size)
        mask_BxP = jnp.ones_like(prompt_BxP, bool)
        thoughts_B = jnp.full((prompts,), args.thoughts, jnp.int32)
        runs = {}
        for name, case in policies.items():
            layout = case.layout
            generate = make_generate(case.graphdef, case.cfg, args.max_new_tokens, NEVER, PAD, 1.0, 1.0,
                                     group_size=args.group_size, **layout.engine_kwargs())
            call = functools.partial(rollout, generate, case.params, prompt_BxP, mask_BxP, jax.random.PRNGKey(0),
                                     layout=layout, latent_steps_B=thoughts_B if layout.policy == "fixed" else None)
            timed(call)  # compile
            runs[name] = {"call": call, "seconds": []}
        for _ in range(args.repeats):  # policies in turn within each repeat
            for run in runs.values():
                out, seconds = timed(run["call"])
                run["seconds"].append(seconds)
                run["out"] = out  # the same keys every repeat: the same rollouts
        for name, run in runs.items():
            seconds = statistics.median(run["seconds"])
            n_rows = prompts * args.group_size
            counts = record(run["out"])
            rows.append({"policy": name, "prompts": prompts, "rows": n_rows, "seconds": seconds,
                         "tokens_per_s": counts["tokens"] / seconds, "latent_steps_per_s": counts["latent_steps"] / seconds,
                         "rows_per_s": n_rows / seconds, **counts})
            print(f"rollout {name:8s} B={prompts:3d} x G={args.group_size}: {rows[-1]['tokens_per_s']:9,.0f} tokens/s "
                  f"{rows[-1]['latent_steps_per_s']:9,.0f} latent steps/s ({seconds:.3f} s; {describe(counts)})",
                  file=sys.stderr, flush=True)
    return rows


def replay_cost(policies: dict[str, Case], args) -> dict:
    """Part 2: the gradient of the replayed policy terms, latent rollouts against a text rollout."""
    prompts = args.replay_prompts
    prompt_BxP = prompts_for(prompts, args.prompt_len, policies["text"].cfg.vocab_size, seed=1)
    mask_BxP = jnp.ones_like(prompt_BxP, bool)
    T = args.max_new_tokens
    # equal lengths: text and HRPO emit T tokens; Coconut K thoughts then T - K tokens; entropy and
    # SWITCH T loop iterations (max_total_tokens caps the positions at prompt + T)
    new_tokens = {"coconut": T - args.thoughts}
    grads, recorded = {}, {}
    for name, case in policies.items():
        layout = case.layout
        loop = layout.policy in LOOP_POLICIES
        generate = make_generate(case.graphdef, case.cfg, new_tokens.get(name, T), NEVER, PAD, 1.0, 1.0,
                                 group_size=args.group_size, max_total_tokens=args.prompt_len + T if loop else 0,
                                 **layout.engine_kwargs())
        thoughts_B = jnp.full((prompts,), args.thoughts, jnp.int32) if layout.policy == "fixed" else None
        rollouts = rollout(generate, case.params, prompt_BxP, mask_BxP, jax.random.PRNGKey(1), layout=layout,
                           latent_steps_B=thoughts_B)
        recorded[name] = record(rollouts)

        def loss(params, rollouts, graphdef=case.graphdef):  # RL's terms: SWITCH's drawn latent steps too
            return jnp.sum(replay(nnx.merge(graphdef, params), rollouts).term_logprobs * rollouts.term_mask)

        grads[name] = (jax.jit(jax.grad(loss)), case.params, rollouts)
        timed(grads[name][0], case.params, rollouts)  # compile
    seconds = {name: [] for name in grads}
    for _ in range(args.repeats):
        for name, (fn, params, rollouts) in grads.items():
            seconds[name].append(timed(fn, params, rollouts)[1])
    medians = {name: statistics.median(s) for name, s in seconds.items()}
    for name in medians:
        print(f"replay grad {name:8s}: {medians[name] * 1e3:8.1f} ms  {recorded[name]}", file=sys.stderr, flush=True)
    return {"seconds_median": medians, "rollouts": recorded, "rows": prompts * args.group_size,
            **{f"{name}_over_text": medians[name] / medians["text"] for name in POLICIES if name != "text"}}


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
    parser.add_argument("--budget", type=int, default=4, help="the switching policies' latent steps per span")
    parser.add_argument("--swi-rate", type=float, default=0.15,
                        help="SWITCH: the mean pi(<swi>) its head column is calibrated to (module docstring)")
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
    policies, calibration = cases(graphdef, params, model_cfg, args)
    report = {"model": {k: getattr(model_cfg, k) for k in ("d_model", "n_layers", "n_heads", "vocab_size")},
              "group_size": args.group_size, "prompt_len": args.prompt_len, "max_new_tokens": args.max_new_tokens,
              "thoughts": args.thoughts, "latent_budget": args.budget, "max_latent_total": 4 * args.budget,
              "repeats": args.repeats, "backend": jax.default_backend(), "devices": jax.device_count(),
              "switch_calibration": calibration, "hrpo_answer_id": NEVER}
    report["rollout"] = rollout_throughput(policies, args)
    report["replay"] = replay_cost(policies, args)
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
