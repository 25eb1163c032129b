"""A/B timing of candidate changes to the fwd+bwd step of benchmarks/forward_backward.py.

Each variant is the benchmark's step with one or more changes. A change is a monkeypatch of a
`latent.nn` method (applied only while tracing), a different loss, or an XLA compiler option.
All variants are compiled up front and then timed round-robin in one process, so drifts in
machine speed (a shared host, other jobs) hit them all alike. Each is reported relative to the
first one.

    python benchmarks/step_variants.py                                   # the default set
    python benchmarks/step_variants.py --variants base,fused_mlp,fused_mlp+shift_loss+rope_half
    python benchmarks/step_variants.py --variants base,canon=3 --batch 16 --seq 128 \
        --shape="--d-model 64 --layers 4 --heads 4 --kv-heads 2 --d-ff 192 --vocab 64"   # default job

Changes (join with '+'):
  base          the benchmark step as is (logits[:, :-1] sliced loss)
  fused_mlp     SwiGLU with gate_proj|up_proj concatenated into one [D, 2F] matmul
  fused_qkv     q|k|v projections as one matmul (attention otherwise as latent's)
  rope_half     RoPE with half-width cos/sin and no split/concatenate of the pass-through part
  shift_loss    cross-entropy on all T positions against tokens rolled by one, last one masked
  relu          SwiGLU with relu instead of silu (not equivalent: shows what silu costs)
  gate=KIND     attention output gate none|headwise|elementwise (default: --gate)
  canon=N       a Canon layer of N taps before each attention (model.canon; latent/nn/canon.py)
  no_row_guard  attention without the guard for query rows that see no key (Attention.attend)
  fwd           forward (loss) only
  xla:NAME=VAL  an XLA compiler option, e.g. xla:xla_cpu_experimental_ynn_fusion_type=

The patches copy the math of latent/nn as of this writing. If latent/nn changes, a patched
variant may no longer match it; the script checks that each equivalent variant's loss matches
base's.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
import typing
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
from flax import nnx

_ROOT = Path(__file__).resolve().parents[1]

import forward_backward as fb  # noqa: E402  (beside this file: python puts its folder on sys.path)

import latent.nn.attention as attention_module  # noqa: E402 (after the device flags are set)
import latent.nn.mlp as mlp_module  # noqa: E402 (after the device flags are set)
from latent.config import AttnGate  # noqa: E402 (after the device flags are set)

DEFAULT = "base,fused_mlp,fused_qkv,rope_half,shift_loss,fused_mlp+shift_loss+rope_half,relu,gate=none,fwd"
NOT_EQUIVALENT = ("relu", "gate=", "canon=", "fwd")  # variants whose loss differs from base by design


# ----------------------------------------------------------------------------- patches


def _fused_swiglu(self, x_BxTxD):
    kernel_DxF2 = jnp.concatenate([self.gate_proj.kernel[...], self.up_proj.kernel[...]], axis=1)
    gate_BxTxF, up_BxTxF = jnp.split(x_BxTxD @ kernel_DxF2, 2, axis=-1)
    return self.down_proj(jax.nn.silu(gate_BxTxF) * up_BxTxF)


def _relu_swiglu(self, x_BxTxD):
    return self.down_proj(jax.nn.relu(self.gate_proj(x_BxTxD)) * self.up_proj(x_BxTxD))


def _rope_half(x_BxTxHxD, cos_BxTxR, sin_BxTxR):
    rotary_dim = cos_BxTxR.shape[-1]
    half = rotary_dim // 2
    cos, sin = cos_BxTxR[:, :, None, :half], sin_BxTxR[:, :, None, :half]
    x1, x2 = x_BxTxHxD[..., :half], x_BxTxHxD[..., half:rotary_dim]
    parts = [x1 * cos - x2 * sin, x2 * cos + x1 * sin]
    if rotary_dim < x_BxTxHxD.shape[-1]:
        parts.append(x_BxTxHxD[..., rotary_dim:])
    return jnp.concatenate(parts, axis=-1)


def _fused_qkv_projections(original_call):
    """Wraps Attention.__call__ so q/k/v come from one matmul (via temporary Dense stand-ins)."""

    class _Precomputed:
        def __init__(self, value):
            self.value = value

        def __call__(self, _x):
            return self.value

    def call(self, x_BxTxD, **kwargs):
        kernels = [self.q_proj.kernel[...], self.k_proj.kernel[...], self.v_proj.kernel[...]]
        widths = [k.shape[1] for k in kernels]
        y = x_BxTxD @ jnp.concatenate(kernels, axis=1)
        q, k, v = jnp.split(y, [widths[0], widths[0] + widths[1]], axis=-1)
        saved = self.q_proj, self.k_proj, self.v_proj
        try:
            object.__setattr__(self, "q_proj", _Precomputed(q))
            object.__setattr__(self, "k_proj", _Precomputed(k))
            object.__setattr__(self, "v_proj", _Precomputed(v))
            return original_call(self, x_BxTxD, **kwargs)
        finally:
            for name, module in zip(("q_proj", "k_proj", "v_proj"), saved):
                object.__setattr__(self, name, module)

    return call


def _attend_unguarded(self, q_BxTxHxDh, k, v, mask_BxTxS, core):
    """The core on the mask as given: no guard for rows that see no key (the layer before 9f0e4df)."""
    return core(q_BxTxHxDh, k, v, mask_BxTxS).astype(self.dtype)


PATCHES = {
    "fused_mlp": (mlp_module.SwiGLU, "__call__", lambda: _fused_swiglu),
    "relu": (mlp_module.SwiGLU, "__call__", lambda: _relu_swiglu),
    "rope_half": (attention_module, "apply_rotary", lambda: _rope_half),
    "fused_qkv": (attention_module.Attention, "__call__",
                  lambda: _fused_qkv_projections(attention_module.Attention.__call__)),
    "no_row_guard": (attention_module.Attention, "attend", lambda: _attend_unguarded),
}


@contextlib.contextmanager
def _patched(names):
    saved = []
    try:
        for name in names:
            owner, attr, make = PATCHES[name]
            replacement = make()
            saved.append((owner, attr, getattr(owner, attr)))
            setattr(owner, attr, replacement)
        yield
    finally:
        for owner, attr, value in reversed(saved):
            setattr(owner, attr, value)


# ----------------------------------------------------------------------------- losses


def _sliced_loss(model, tokens_BxT):
    logits = model(tokens_BxT).logits
    return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], tokens_BxT[:, 1:]).mean()


def _shifted_loss(model, tokens_BxT):
    logits = model(tokens_BxT).logits
    B, T = tokens_BxT.shape
    weights_T = (jnp.arange(T) < T - 1).astype(jnp.float32)
    losses_BxT = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.roll(tokens_BxT, -1, axis=1))
    return jnp.sum(losses_BxT * weights_T) / (B * (T - 1))


# ----------------------------------------------------------------------------- variants


def build_variant(spec: str, args) -> dict:
    gate, canon, loss, grad, patches, options = args.gate, 0, _sliced_loss, True, [], {}
    for part in spec.split("+"):
        if part == "base":
            continue
        if part.startswith("gate="):
            gate = part.split("=", 1)[1]
        elif part.startswith("canon="):
            canon = int(part.split("=", 1)[1])
        elif part == "shift_loss":
            loss = _shifted_loss
        elif part == "fwd":
            grad = False
        elif part.startswith("xla:"):
            name, _, value = part[4:].partition("=")
            options[name] = {"true": True, "false": False}.get(value.lower(), value)
        elif part in PATCHES:
            patches.append(part)
        else:
            raise SystemExit(f"unknown change {part!r} in variant {spec!r}; see --help")
    cfg_args = fb.parse_args(["--gate", gate, "--batch", str(args.batch), "--seq", str(args.seq), *args.shape.split()])
    cfg = fb.build_config(cfg_args).replace(canon=canon)
    graphdef, params = nnx.split(fb.Transformer(cfg, rngs=nnx.Rngs(0)), nnx.Param)
    flops = fb.analytic_flops(cfg, fb.count_params(cfg, params)["matmul"], args.batch, args.seq)["total"]

    def loss_fn(params, tokens):
        return loss(nnx.merge(graphdef, params), tokens)

    fn = jax.jit(jax.value_and_grad(loss_fn) if grad else loss_fn)
    tokens = jax.random.randint(jax.random.key(1), (args.batch, args.seq), 0, cfg.vocab_size, jnp.int32)
    with _patched(patches):
        compiled = fn.lower(params, tokens).compile(compiler_options=options or None)
    out = jax.block_until_ready(compiled(params, tokens))
    value = float(out[0] if grad else out)
    return dict(run=lambda: jax.block_until_ready(compiled(params, tokens)),
                flops=flops if grad else flops / 3, loss=value)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default=DEFAULT)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--gate", default="elementwise", choices=typing.get_args(AttnGate))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--shape", default="", help='model size flags of forward_backward.py, e.g. "--d-model 64 --layers 4"')
    args = p.parse_args(argv)
    names = args.variants.split(",")
    variants = {}
    for name in names:
        variants[name] = build_variant(name, args)
        print(f"compiled {name:36s} loss {variants[name]['loss']:.6f}", file=sys.stderr, flush=True)
    base_loss = variants[names[0]]["loss"]
    for name in names:
        if not any(tag in name for tag in NOT_EQUIVALENT) and abs(variants[name]["loss"] - base_loss) > 1e-4:
            print(f"warning: {name} loss {variants[name]['loss']:.6f} != {names[0]} {base_loss:.6f}; "
                  "the patch may no longer match latent/nn", file=sys.stderr)
    for v in variants.values():  # warm-up
        v["run"]()
    times = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names:
            t0 = time.perf_counter()
            variants[name]["run"]()
            times[name].append(time.perf_counter() - t0)
        print(f"  round {r + 1}/{args.rounds}: " + " ".join(f"{n}={times[n][-1] * 1e3:.0f}ms" for n in names),
              file=sys.stderr, flush=True)
    first = statistics.median(times[names[0]])
    width = max(len(n) for n in names)
    print(f"{'variant':<{width}}  {'median ms':>9}  {'best ms':>8}  {'vs ' + names[0]:>10}  {'GFLOP/s':>8}")
    for name in names:
        med = statistics.median(times[name])
        print(f"{name:<{width}}  {med * 1e3:9.0f}  {min(times[name]) * 1e3:8.0f}  {med / first:10.3f}  "
              f"{variants[name]['flops'] / med / 1e9:8.1f}")


if __name__ == "__main__":
    main()
