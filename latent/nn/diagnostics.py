"""Per-layer diagnostics of attention and the residual stream, recorded only when switched on.

    set_diagnostics(model, True)         # sets `diagnostics` on every module that records
    out = model(tokens, padding_mask=mask)
    layers = pop_diagnostics(model)      # LayerDiagnostics: [n_layers] and [n_layers, n_heads]; clears them

What the gated-attention paper measures (DESIGN.md, "Gated attention"): the attention sink (the
weight each real query puts on its example's first real key), the output gate's mean and its
share of near-zero values, and the largest activation of the residual stream after each block.

Modules record per call with `self.sow(Diagnostic, name, value)`: each Block its real queries
and max |x|, each Attention per-query, per-head values [B, T, H] (LayerDiagnostics reports both
the per-head pools and their mean over heads). Several calls before a pop (a prefill and decode
steps, the passes of a latent forward) are pooled over all their real queries. With the flag off
nothing is computed or stored. The flag is a static attribute, part of the graphdef, so a jitted
`nnx.merge(graphdef, state)` function compiles once per setting; inside `lax.scan` or
`while_loop` bodies keep it off (sown values would change the carried state). Within a jitted
function, pop there and return the LayerDiagnostics. `nnx.capture(model, Diagnostic)(...)`
returns the same State as `nnx.pop(model, Diagnostic)`; `summarize` reads either.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

SMALL_GATE = 0.1  # gate values below this count as "closed" (the paper's sparsity measure)


class Diagnostic(nnx.Intermediate):
    """A value sown for diagnostics only; never a parameter, never saved in a checkpoint."""


class LayerDiagnostics(NamedTuple):
    """Pooled over the real (unpadded) queries of every call since the last pop; [n_layers], and
    [n_layers, n_heads] per head (query head h = kv head * group + g, as the attention orders them)."""

    sink_share: jax.Array  # mean attention weight (over heads) on the example's first real key
    gate_mean: jax.Array  # mean output-gate value over heads and gate width (1.0 without a gate)
    small_gate_share: jax.Array  # share of gate values below SMALL_GATE (0.0 without a gate)
    max_abs_activation: jax.Array  # max |residual stream| after the block, over real positions
    sink_share_per_head: jax.Array  # each head's mean attention weight on the first real key
    gate_mean_per_head: jax.Array  # each head's mean gate value over its gate width (1.0 without a gate)
    small_gate_share_per_head: jax.Array  # each head's share of gate values below SMALL_GATE (0.0 without)


def set_diagnostics(model: nnx.Module, on: bool = True) -> None:
    """Switches recording on or off in every module of `model` that records."""
    model.set_attributes(diagnostics=on)


def pop_diagnostics(model: nnx.Module) -> LayerDiagnostics | None:
    """The diagnostics recorded in `model` since the last pop (None if none), removing them."""
    return summarize(nnx.pop(model, Diagnostic))


def first_key_share_per_head(probs_BxKxGxTxS: jax.Array, first_key_B: jax.Array) -> jax.Array:
    """[B, T, H]: each query's attention weight on its example's first real key, per query head
    (h = k * G + g)."""
    B, K, G, T, _ = probs_BxKxGxTxS.shape
    first_key_Bx1x1x1x1 = first_key_B[:, None, None, None, None]
    on_first_BxKxGxT = jnp.take_along_axis(probs_BxKxGxTxS, first_key_Bx1x1x1x1, axis=-1)[..., 0]
    return on_first_BxKxGxT.astype(jnp.float32).transpose(0, 3, 1, 2).reshape(B, T, K * G)


def first_key_share(probs_BxKxGxTxS: jax.Array, first_key_B: jax.Array) -> jax.Array:
    """[B, T]: each query's attention weight on its example's first real key, mean over heads."""
    return first_key_share_per_head(probs_BxKxGxTxS, first_key_B).mean(axis=-1)


def gate_summary_per_head(gate_BxTxHxW: jax.Array) -> tuple[jax.Array, jax.Array]:
    """([B, T, H] mean gate value, [B, T, H] share of gate values below SMALL_GATE), over each head's width."""
    gate_BxTxHxW = gate_BxTxHxW.astype(jnp.float32)
    return gate_BxTxHxW.mean(axis=3), (gate_BxTxHxW < SMALL_GATE).astype(jnp.float32).mean(axis=3)


def gate_summary(gate_BxTxHxW: jax.Array) -> tuple[jax.Array, jax.Array]:
    """([B, T] mean gate value, [B, T] share of gate values below SMALL_GATE), over heads and width."""
    mean_BxTxH, small_BxTxH = gate_summary_per_head(gate_BxTxHxW)
    return mean_BxTxH.mean(axis=2), small_BxTxH.mean(axis=2)


def pooled_over_real_queries(values_per_call, real_per_call) -> jax.Array:
    """Mean of per-query values [B, T, ...] over the real queries of all calls (0 when there are
    none): a [B, T] value gives a scalar, a per-head [B, T, H] one an [H] array."""
    def weighted_sum(v_BxTx_, r_BxT):
        r_BxTx_ = r_BxT.reshape(r_BxT.shape + (1,) * (v_BxTx_.ndim - 2))
        return jnp.sum(v_BxTx_ * r_BxTx_, axis=(0, 1))

    total = sum(weighted_sum(v, r) for v, r in zip(values_per_call, real_per_call))
    count = sum(jnp.sum(r_BxT) for r_BxT in real_per_call)
    return total / jnp.maximum(count, 1.0)


def per_layer_blocks(recorded: dict) -> dict:
    """`recorded` (path -> values per call) with a stacked block's values split into one block per
    layer: the stacked Block of model.scan_layers sows each call's values of all its layers at
    once, [L, ...] (its `real_query` is [L, B, T], a block's own [B, T]); layer i becomes block path
    + (i,), which sorts in layer order as the loop's `layers.i` paths do."""
    stacked = {path[:-1] for path, values in recorded.items() if path[-1] == "real_query" and values[0].ndim == 3}
    split = {}
    for path, values in recorded.items():
        block = next((b for b in stacked if path[: len(b)] == b), None)
        if block is None:
            split[path] = values
            continue
        for i in range(values[0].shape[0]):
            split[block + (i,) + path[len(block):]] = tuple(value[i] for value in values)
    return split


def summarize(state: nnx.State) -> LayerDiagnostics | None:
    """LayerDiagnostics from a State of Diagnostic values (nnx.pop or nnx.capture); None if empty.

    A block is any module path that recorded `real_query`; its attention's values sit under
    `<block>/attn`. Blocks come in path order (layers 0, 1, ...).
    """
    recorded = per_layer_blocks({tuple(path): variable.get_value() for path, variable in nnx.to_flat_state(state)})
    blocks = sorted(path[:-1] for path in recorded if path[-1] == "real_query")
    if not blocks:
        return None
    columns = {name: [] for name in LayerDiagnostics._fields}
    for block in blocks:
        real_per_call = [r_BxT.astype(jnp.float32) for r_BxT in recorded[block + ("real_query",)]]
        # Attention sows per-head [B, T, H] values; H is read from the sink share, sown on every call.
        sink_per_head_H = pooled_over_real_queries(recorded[block + ("attn", "first_key_share")], real_per_call)
        for column, sown, absent in (
            ("sink_share", "first_key_share", 0.0),
            ("gate_mean", "gate_mean", 1.0),  # no gate multiplies by 1
            ("small_gate_share", "small_gate_share", 0.0),
        ):
            values = recorded.get(block + ("attn", sown))
            per_head_H = (jnp.full_like(sink_per_head_H, absent) if values is None
                          else pooled_over_real_queries(values, real_per_call))
            # Every head pools the same queries with the same weight: the head mean is the pooled mean.
            columns[column].append(per_head_H.mean())
            columns[column + "_per_head"].append(per_head_H)
        columns["max_abs_activation"].append(jnp.max(jnp.stack(recorded[block + ("max_abs_activation",)])))
    return LayerDiagnostics(**{name: jnp.stack(column) for name, column in columns.items()})
