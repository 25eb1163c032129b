"""What model.scan_layers buys: compile time against depth, and what it costs per step.

    python benchmarks/scan_layers.py                          # d=128, layers 4 8 16 32, batch 8 x 128
    python benchmarks/scan_layers.py --layers 4 8 --steps 3   # quicker

For each depth the same gradient program as remat.py (jit(value_and_grad(next-token loss)) over
all parameters, a gated Llama-style decoder) is built twice on the same weights: blocks as a
Python loop (model.scan_layers=false) and as one lax.scan (true). For each it measures
- trace + lower: `jax.jit(...).lower(params, tokens)` (Python tracing of the blocks, StableHLO);
- compile: `.compile()` of that lowering (XLA);
- step: the compiled step's median wall time over --steps calls (after one warm-up call), the
  two settings called alternately so machine noise hits both alike.
Reported as scan / loop ratios measured in one run; JAX's persistent compilation cache is off so
every compile is a real one. Results go to benchmarks/results/scan_layers.json with the load
average before and after (the development VM is shared: read the ratios, not the seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from latent.models import presets
from latent.nn import Transformer

SETTINGS = ("loop", "scan")


def gradient_program(cfg):
    """(jit(value_and_grad(loss)), params) for a model of `cfg`; params from nnx.Rngs(0)."""
    graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))

    def loss(p, tokens_BxT):
        logits_BxTxV = nnx.merge(graphdef, p)(tokens_BxT).logits
        logprobs_BxTxV = jax.nn.log_softmax(logits_BxTxV[:, :-1].astype(jnp.float32))
        return -jnp.mean(jnp.take_along_axis(logprobs_BxTxV, tokens_BxT[:, 1:, None], axis=-1))

    return jax.jit(jax.value_and_grad(loss)), params


def seconds(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def measure_depth(base, n_layers: int, tokens_BxT, steps: int) -> dict:
    compiled, row = {}, {}
    for setting in SETTINGS:
        cfg = base.replace(n_layers=n_layers, scan_layers=setting == "scan")
        step, params = gradient_program(cfg)
        lowered, lower_s = seconds(step.lower, params, tokens_BxT)
        executable, compile_s = seconds(lowered.compile)
        jax.block_until_ready(executable(params, tokens_BxT))  # warm-up
        compiled[setting] = (executable, params)
        row[setting] = {"lower_s": lower_s, "compile_s": compile_s, "hlo_chars": len(lowered.as_text()), "step_s": []}
    for _ in range(steps):  # alternate the settings: noise lands on both
        for setting in SETTINGS:
            executable, params = compiled[setting]
            _, step_s = seconds(lambda e, p: jax.block_until_ready(e(p, tokens_BxT)), executable, params)
            row[setting]["step_s"].append(step_s)
    for setting in SETTINGS:
        row[setting]["step_median_s"] = statistics.median(row[setting]["step_s"])
    for key in ("lower_s", "compile_s", "hlo_chars", "step_median_s"):
        row[f"{key}_scan_over_loop"] = row["scan"][key] / row["loop"][key]
    return row


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "scan_layers.json"))
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_compilation_cache", False)  # every compile a real one
    base = presets.gated(presets.llama(vocab_size=args.vocab, d_model=args.d_model, n_layers=1, n_heads=args.heads,
                                       d_ff=4 * args.d_model, max_seq_len=args.seq), "elementwise")
    tokens_BxT = jax.random.randint(jax.random.PRNGKey(0), (args.batch, args.seq), 0, args.vocab)
    report = {"model": {"d_model": args.d_model, "n_heads": args.heads, "vocab": args.vocab, "d_ff": 4 * args.d_model},
              "batch": args.batch, "seq": args.seq, "steps": args.steps, "backend": jax.default_backend(),
              "jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", ""),
              "load_before": os.getloadavg(), "depths": {}}
    print(f"{'layers':>6}  {'lower loop/scan s':>18} {'ratio':>6}  {'compile loop/scan s':>20} {'ratio':>6}  "
          f"{'step loop/scan ms':>18} {'ratio':>6}", flush=True)
    for n_layers in args.layers:
        row = measure_depth(base, n_layers, tokens_BxT, args.steps)
        report["depths"][n_layers] = row
        loop, scan = row["loop"], row["scan"]
        print(f"{n_layers:>6}  {loop['lower_s']:8.2f} /{scan['lower_s']:8.2f} {row['lower_s_scan_over_loop']:6.2f}  "
              f"{loop['compile_s']:9.2f} /{scan['compile_s']:9.2f} {row['compile_s_scan_over_loop']:6.2f}  "
              f"{1e3 * loop['step_median_s']:8.1f} /{1e3 * scan['step_median_s']:8.1f} "
              f"{row['step_median_s_scan_over_loop']:6.2f}", flush=True)
    report["load_after"] = os.getloadavg()
    print(f"load average before {report['load_before'][0]:.1f}, after {report['load_after'][0]:.1f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
