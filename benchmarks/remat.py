"""What model.remat saves: the compiled gradient step's memory and FLOPs, per remat setting.

    python benchmarks/remat.py                               # a d=512 x 8 decoder, batch 8 x 1024
    python benchmarks/remat.py --d-model 256 --layers 8 --seq 64 --vocab 256 --batch 32 \
        --out benchmarks/results/remat_cpu.json               # the committed numbers

For each of model.remat = none / full / dots, jit(value_and_grad(next-token loss)) is lowered and
compiled (not run) for one batch, and XLA's own accounting is read: `memory_analysis()` (temp
bytes: the activations the backward keeps, plus scratch) and `cost_analysis()` (FLOPs, which
grow by the recomputed forward). Compile-time numbers, so they are exact for this backend and
need no quiet machine; they are per device, for the CPU here (a TPU's numbers come from
tpu/aot.py). Reported as ratios against remat=none.

Measured here (results/remat_cpu.json, d=256 x 8, batch 32 x 64, CPU): temp 636 MiB with none,
580 MiB (0.91x) with full or dots; FLOPs 1.26x (full) and 1.01x (dots). XLA's CPU backend keeps
most of its temporaries either way, so the CPU says little about memory. On a TPU the same
setting is what fits a model: `tpu/aot.py ... model.remat=full` (tpu/README.md, the 1.1e9 table).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from latent.models import presets
from latent.nn import Transformer

SETTINGS = ("none", "full", "dots")


def compiled_costs(cfg, batch: int, seq: int) -> dict:
    model = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))  # shapes only: nothing allocated
    graphdef, params = nnx.split(model)

    def loss(p, tokens_BxT):
        logits_BxTxV = nnx.merge(graphdef, p)(tokens_BxT).logits
        logprobs_BxTxV = jax.nn.log_softmax(logits_BxTxV[:, :-1].astype(jnp.float32))
        return -jnp.mean(jnp.take_along_axis(logprobs_BxTxV, tokens_BxT[:, 1:, None], axis=-1))

    tokens_BxT = jax.ShapeDtypeStruct((batch, seq), jnp.int32)
    compiled = jax.jit(jax.value_and_grad(loss)).lower(params, tokens_BxT).compile()
    memory, cost = compiled.memory_analysis(), compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return {"temp_bytes": int(memory.temp_size_in_bytes), "argument_bytes": int(memory.argument_size_in_bytes),
            "output_bytes": int(memory.output_size_in_bytes), "flops": float(cost.get("flops", 0.0))}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "remat.json"))
    args = parser.parse_args(argv)
    base = presets.gated(presets.llama(vocab_size=args.vocab, d_model=args.d_model, n_layers=args.layers,
                                       n_heads=args.heads, d_ff=4 * args.d_model, max_seq_len=args.seq), "elementwise")
    report = {"model": {"d_model": args.d_model, "n_layers": args.layers, "n_heads": args.heads, "vocab": args.vocab},
              "batch": args.batch, "seq": args.seq, "backend": jax.default_backend(), "settings": {}}
    for remat in SETTINGS:
        report["settings"][remat] = compiled_costs(base.replace(remat=remat), args.batch, args.seq)
    plain = report["settings"]["none"]
    for remat, row in report["settings"].items():
        row["temp_over_none"] = row["temp_bytes"] / plain["temp_bytes"]
        row["flops_over_none"] = row["flops"] / plain["flops"] if plain["flops"] else None
        print(f"remat={remat:5s} temp {row['temp_bytes'] / 2**20:9.1f} MiB ({row['temp_over_none']:.2f}x)  "
              f"flops {row['flops']:.3e} ({row['flops_over_none'] or float('nan'):.2f}x)", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
