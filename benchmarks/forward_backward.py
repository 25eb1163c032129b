"""Forward+backward throughput of a ~25M-parameter decoder against this machine's matmul peak.

One run measures:

1. The float32 matmul peak: a jitted `a @ b` on square float32 matrices (default n = 2048 and
   4096), 2 * n^3 FLOPs each, timed after warm-up with `block_until_ready`; the best FLOP/s
   over sizes and repeats is the peak.
2. One training step's forward+backward (no optimizer update) of a `latent.nn.Transformer`:
   `graphdef, params = nnx.split(model, nnx.Param)` once, a pure
   `loss(params, tokens)` that merges the graph inside and computes next-token cross-entropy
   (`optax.softmax_cross_entropy_with_integer_labels` on `model(tokens).logits`), and
   `jax.jit(jax.value_and_grad(loss))`. After compile + warm-up, `--steps` steps are timed
   one by one (each blocked on); the median and the best are reported.
3. The FLOPs of that step, two ways:

   analytic = 6 * N_mm * B * T                      weight matmuls, fwd (2) + bwd (4)
            + 3 * (2 * 2 * B * T^2 * H * Dh) * L    attention scores q.k and probs.v, fwd + bwd

   where N_mm counts the parameters that take part in a matmul: every Dense kernel (q with its
   fused gate columns, k, v, o, the MLP projections) plus the LM head (the embedding table again
   when tied); the input embedding lookup is a gather and is left out, as are biases, norms,
   softmax, RoPE and the loss (all O(B*T*D) or O(B*T*V), not matmuls). The attention term
   counts the full T x T score matrix, since the implementation computes it before masking.
   H is n_heads, Dh head_dim, L n_layers.

   xla = `jitted.lower(params, tokens).compile().cost_analysis()["flops"]`, XLA's own count of
   the compiled program (it includes elementwise work, so it is expected to be a little higher).

   Achieved FLOP/s = analytic FLOPs / step time; the report gives it as a fraction of the peak
   (the best matmul rate seen anywhere in the run) and, as "paired", the median over steps of
   step FLOP/s / the FLOP/s of a warm `--pair-matmul` matmul timed just before that step.

Run from the repository root:

    python benchmarks/forward_backward.py            # ~25.7M params, batch 8, seq 256
    python benchmarks/forward_backward.py --quick    # tiny smoke run

The machine may be shared (tests running) and its matmul rate drifts between runs: the peak is
the best of all matmul timings, the step is reported as best and median, the paired fraction
follows the machine's speed step by step, and the load average before and after is recorded in
the JSON. Each step's CPU time of this process (user and system, `getrusage`) is recorded too:
it moves less than wall time when other jobs share the core, and the system part is mostly
page faults on the step's freshly allocated temporaries (`GLIBC_TUNABLES`, recorded with
`XLA_FLAGS`, changes it). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
import typing
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

_ROOT = Path(__file__).resolve().parents[1]

from latent.config import AttnGate  # noqa: E402 (after the device flags are set)
from latent.models import presets  # noqa: E402 (after the device flags are set)
from latent.nn import Transformer  # noqa: E402 (after the device flags are set)

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover - tqdm is a dependency, but keep the script usable
    tqdm = None

DEFAULT_OUT = _ROOT / "benchmarks" / "results" / "forward_backward.json"


# ----------------------------------------------------------------------------- helpers


def _progress(iterable, desc: str, total: int, last_time=None):
    """tqdm on a terminal; otherwise one line per item (with its time when `last_time` is given)."""
    if tqdm is not None and sys.stderr.isatty():
        bar = tqdm(iterable, desc=desc, total=total, leave=False)
        for item in bar:
            yield item
            if last_time is not None:
                bar.set_postfix_str(f"{last_time() * 1e3:.1f} ms")
        return
    for i, item in enumerate(iterable):
        yield item
        extra = f" {last_time() * 1e3:.1f} ms" if last_time is not None else ""
        print(f"  {desc} {i + 1}/{total}{extra}", file=sys.stderr, flush=True)


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _fmt_flops(x: float | None) -> str:
    return "n/a" if x is None else f"{x / 1e9:,.1f} GFLOP/s"


def _xla_flops(compiled) -> float | None:
    """The 'flops' entry of XLA's cost analysis (a dict, or a list of dicts on older jax)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - some backends do not implement it
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return float(cost["flops"])


# ----------------------------------------------------------------------------- 1. matmul peak


def matmul_peak(sizes: list[int], repeats: int) -> dict:
    matmul = jax.jit(lambda a, b: a @ b)
    rows = []
    for n in sizes:
        ka, kb = jax.random.split(jax.random.key(n))
        a = jax.random.normal(ka, (n, n), jnp.float32)
        b = jax.random.normal(kb, (n, n), jnp.float32)
        matmul(a, b).block_until_ready()  # compile
        matmul(a, b).block_until_ready()  # warm-up
        times = []
        for _ in _progress(range(repeats), f"matmul {n}", repeats, lambda: times[-1]):  # noqa: B023 (read during the loop)
            t0 = time.perf_counter()
            matmul(a, b).block_until_ready()
            times.append(time.perf_counter() - t0)
        flops = 2.0 * n**3
        rows.append(
            dict(n=n, flops=flops, best_s=min(times), median_s=statistics.median(times),
                 best_flops_per_s=flops / min(times), median_flops_per_s=flops / statistics.median(times))
        )
    best = max(rows, key=lambda r: r["best_flops_per_s"])
    return dict(sizes=rows, peak_flops_per_s=best["best_flops_per_s"], peak_at_n=best["n"])


# ----------------------------------------------------------------------------- 2. model step


def build_config(args):
    cfg = presets.llama(
        vocab_size=args.vocab,
        d_model=args.d_model,
        n_layers=args.layers,
        n_heads=args.heads,
        n_kv_heads=args.kv_heads or args.heads,
        d_ff=args.d_ff,
        max_seq_len=args.seq,
    )
    if args.gate != "none":
        cfg = presets.gated(cfg, args.gate)
    return cfg


def count_params(cfg, params) -> dict:
    """Exact parameter counts from the nnx state, and the subset that enters matmuls."""
    total = matmul = embed = 0
    for path, variable in nnx.to_flat_state(params):
        size = int(np.prod(variable.get_value().shape))
        total += size
        if path[-1] == "embed":
            embed = size
        elif path[-1] in ("kernel", "lm_head"):  # Dense kernels and the untied output head
            matmul += size
    if cfg.tie_embeddings:  # the embedding table is the LM head too
        matmul += embed
    return dict(total=int(total), matmul=int(matmul), embed=int(embed))


def _head_dim(cfg) -> int:
    return cfg.resolved_head_dim


def _kv_heads(cfg) -> int:
    return cfg.resolved_kv_heads


def analytic_flops(cfg, n_matmul_params: int, batch: int, seq: int) -> dict:
    tokens = batch * seq
    weights = 6 * n_matmul_params * tokens
    attn_fwd = 2 * 2 * batch * seq**2 * cfg.n_heads * _head_dim(cfg) * cfg.n_layers
    attention = 3 * attn_fwd
    return dict(weights=float(weights), attention=float(attention), total=float(weights + attention))


def make_step(graphdef):
    def loss_fn(params, tokens_BxT):
        model = nnx.merge(graphdef, params)
        logits_BxTxV = model(tokens_BxT).logits
        losses = optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV[:, :-1], tokens_BxT[:, 1:])
        return losses.mean()

    return jax.jit(jax.value_and_grad(loss_fn))


def time_step(args, cfg) -> dict:
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    del model
    counts = count_params(cfg, params)
    tokens = jax.random.randint(jax.random.key(1), (args.batch, args.seq), 0, cfg.vocab_size, jnp.int32)

    step = make_step(graphdef)
    t0 = time.perf_counter()
    compiled = step.lower(params, tokens).compile()
    compile_s = time.perf_counter() - t0
    xla = _xla_flops(compiled)

    # A reference matmul timed right before each step: the machine's speed drifts (shared host,
    # other processes), so the ratio of neighbouring measurements is steadier than either alone.
    pair_n = args.pair_matmul
    if pair_n:
        matmul = jax.jit(lambda a, b: a @ b)
        a = jax.random.normal(jax.random.key(2), (pair_n, pair_n), jnp.float32)
        b = jax.random.normal(jax.random.key(3), (pair_n, pair_n), jnp.float32)
        matmul(a, b).block_until_ready()

    for _ in range(args.warmup):
        jax.block_until_ready(compiled(params, tokens))
    times, pair_times, cpu_user, cpu_sys = [], [], [], []
    loss = None
    for _ in _progress(range(args.steps), "fwd+bwd", args.steps, lambda: times[-1]):
        if pair_n:  # run twice, time the second: the first after a step pays for cold caches
            matmul(a, b).block_until_ready()
            t0 = time.perf_counter()
            matmul(a, b).block_until_ready()
            pair_times.append(time.perf_counter() - t0)
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        loss, grads = compiled(params, tokens)
        jax.block_until_ready((loss, grads))
        times.append(time.perf_counter() - t0)
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu_user.append(usage1.ru_utime - usage0.ru_utime)
        cpu_sys.append(usage1.ru_stime - usage0.ru_stime)
    return dict(params=counts, compile_s=compile_s, xla_flops=xla, times_s=times,
                best_s=min(times), median_s=statistics.median(times), loss=float(loss),
                pair_n=pair_n, pair_times_s=pair_times, cpu_user_s=cpu_user, cpu_sys_s=cpu_sys)


# ----------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--steps", type=int, default=20, help="timed fwd+bwd steps (after warm-up)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps after compiling")
    p.add_argument("--d-model", type=int, default=512)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=None, help="default: --heads (MHA)")
    p.add_argument("--d-ff", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--gate", choices=typing.get_args(AttnGate), default="elementwise")
    p.add_argument("--matmul-sizes", type=int, nargs="+", default=[2048, 4096])
    p.add_argument("--matmul-repeats", type=int, default=5)
    p.add_argument("--skip-peak", action="store_true", help="do not run the matmul-peak phase")
    p.add_argument("--pair-matmul", type=int, default=2048, metavar="N",
                   help="time an NxN matmul right before each step (0: off); see 'paired' in the README")
    p.add_argument("--precision", choices=("default", "highest", "high", "float32", "bfloat16", "tensorfloat32"),
                   default=None, help="wrap everything in jax.default_matmul_precision(...)")
    p.add_argument("--quick", action="store_true", help="tiny config and few repeats: a smoke run")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON result path")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.seq, args.steps, args.warmup = 2, 32, 3, 1
        args.d_model, args.layers, args.heads, args.d_ff, args.vocab = 64, 2, 4, 128, 256
        args.matmul_sizes, args.matmul_repeats = [256, 512], 2
        args.pair_matmul = min(args.pair_matmul, 256)
        if args.out == DEFAULT_OUT:
            args.out = DEFAULT_OUT.with_name("forward_backward_quick.json")
    return args


def run(args) -> dict:
    cfg = build_config(args)
    load_before = _loadavg()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.device_count()} device), "
          f"{os.cpu_count()} CPUs, load avg {load_before}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, "
          f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}")

    peak = None if args.skip_peak else matmul_peak(args.matmul_sizes, args.matmul_repeats)
    step = time_step(args, cfg)
    flops = analytic_flops(cfg, step["params"]["matmul"], args.batch, args.seq)
    F = flops["total"]

    paired = None
    if step["pair_n"]:
        mm_flops = 2.0 * step["pair_n"] ** 3
        mm_fps = [mm_flops / t for t in step["pair_times_s"]]
        ratios = [(F / t) / m for t, m in zip(step["times_s"], mm_fps)]
        paired = dict(n=step["pair_n"], times_s=step["pair_times_s"], best_flops_per_s=max(mm_fps),
                      median_flops_per_s=statistics.median(mm_fps),
                      median_ratio=statistics.median(ratios), best_ratio=max(ratios), ratios=ratios)
    # The peak is the best matmul rate seen anywhere in the run (peak phase and paired matmuls).
    candidates = ([peak["peak_flops_per_s"]] if peak else []) + ([paired["best_flops_per_s"]] if paired else [])
    peak_fps = max(candidates) if candidates else None
    best_fps = F / step["best_s"]
    median_fps = F / step["median_s"]
    result = dict(
        config=dict(batch=args.batch, seq=args.seq, steps=args.steps, d_model=cfg.d_model, n_layers=cfg.n_layers,
                    n_heads=cfg.n_heads, n_kv_heads=_kv_heads(cfg), head_dim=_head_dim(cfg), d_ff=cfg.d_ff,
                    vocab_size=cfg.vocab_size, attn_gate=cfg.attn_gate, family=cfg.family, dtype=cfg.dtype,
                    precision=args.precision, quick=args.quick),
        env=dict(jax=jax.__version__, backend=jax.default_backend(), cpu_count=os.cpu_count(),
                 affinity=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                 machine=platform.machine(), processor=_cpu_model(), xla_flags=os.environ.get("XLA_FLAGS", ""),
                 glibc_tunables=os.environ.get("GLIBC_TUNABLES", ""),
                 load_before=load_before, load_after=_loadavg()),
        params=step["params"],
        matmul_peak=peak,
        paired_matmul=paired,
        peak_flops_per_s=peak_fps,
        step=dict(compile_s=step["compile_s"], best_s=step["best_s"], median_s=step["median_s"],
                  times_s=step["times_s"], loss=step["loss"],
                  cpu_user_median_s=statistics.median(step["cpu_user_s"]),
                  cpu_sys_median_s=statistics.median(step["cpu_sys_s"]),
                  cpu_user_s=step["cpu_user_s"], cpu_sys_s=step["cpu_sys_s"]),
        flops=dict(analytic=flops, xla=step["xla_flops"],
                   xla_over_analytic=(step["xla_flops"] / F) if step["xla_flops"] else None),
        achieved=dict(best_flops_per_s=best_fps, median_flops_per_s=median_fps,
                      best_fraction_of_peak=(best_fps / peak_fps) if peak_fps else None,
                      median_fraction_of_peak=(median_fps / peak_fps) if peak_fps else None),
    )
    return result


def print_table(r: dict) -> None:
    c, p, s, f, a = r["config"], r["params"], r["step"], r["flops"], r["achieved"]
    rows = []
    if r["matmul_peak"]:
        for m in r["matmul_peak"]["sizes"]:
            rows.append((f"matmul {m['n']}^2 f32", f"{m['best_s'] * 1e3:.1f} ms best",
                         f"{_fmt_flops(m['best_flops_per_s'])} (median {_fmt_flops(m['median_flops_per_s'])})"))
    pm = r["paired_matmul"]
    if pm:
        rows.append((f"paired matmul {pm['n']}^2", f"{len(pm['times_s'])} runs",
                     f"{_fmt_flops(pm['best_flops_per_s'])} best (median {_fmt_flops(pm['median_flops_per_s'])})"))
    if r["peak_flops_per_s"]:
        rows.append(("matmul peak (best)", _fmt_flops(r["peak_flops_per_s"]), "best over all matmul timings"))
    rows += [
        ("model", f"{c['family']} gate={c['attn_gate']}",
         f"D={c['d_model']} L={c['n_layers']} H={c['n_heads']}/{c['n_kv_heads']} Dh={c['head_dim']} "
         f"F={c['d_ff']} V={c['vocab_size']} {c['dtype']}"),
        ("params", f"{p['total']:,}", f"matmul params {p['matmul']:,}; embedding {p['embed']:,}"),
        ("batch x seq", f"{c['batch']} x {c['seq']}", f"{c['batch'] * c['seq']:,} tokens/step"),
        ("compile", f"{s['compile_s']:.1f} s", ""),
        ("fwd+bwd step", f"{s['best_s'] * 1e3:.1f} ms best", f"{s['median_s'] * 1e3:.1f} ms median of {c['steps']}"),
        ("step CPU time", f"{(s['cpu_user_median_s'] + s['cpu_sys_median_s']) * 1e3:.1f} ms median",
         f"user {s['cpu_user_median_s'] * 1e3:.1f} + system {s['cpu_sys_median_s'] * 1e3:.1f} ms (page faults)"),
        ("FLOPs/step analytic", f"{f['analytic']['total'] / 1e9:.2f} GFLOP",
         f"weights {f['analytic']['weights'] / 1e9:.2f} + attention {f['analytic']['attention'] / 1e9:.2f}"),
        ("FLOPs/step XLA", "n/a" if f["xla"] is None else f"{f['xla'] / 1e9:.2f} GFLOP",
         "" if f["xla_over_analytic"] is None else f"{f['xla_over_analytic']:.3f} x analytic"),
        ("achieved", _fmt_flops(a["best_flops_per_s"]) + " best", f"median {_fmt_flops(a['median_flops_per_s'])}"),
    ]
    if a["best_fraction_of_peak"] is not None:
        rows.append(("fraction of peak", f"{a['best_fraction_of_peak']:.1%} best",
                     f"{a['median_fraction_of_peak']:.1%} median step / best matmul (aim >= 70%)"))
    if pm:
        rows.append(("paired fraction", f"{pm['median_ratio']:.1%} median",
                     f"{pm['best_ratio']:.1%} best; each step / the matmul timed just before it"))
    w0 = max(len(x[0]) for x in rows)
    w1 = max(len(x[1]) for x in rows)
    print()
    for name, v1, v2 in rows:
        print(f"{name:<{w0}}  {v1:<{w1}}  {v2}".rstrip())


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.precision:
        with jax.default_matmul_precision(args.precision):
            result = run(args)
    else:
        result = run(args)
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return result


if __name__ == "__main__":
    main()
