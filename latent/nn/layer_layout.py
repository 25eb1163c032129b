"""The two layouts of the decoder blocks' parameters, and converters between them.

Per layer (the Python loop, `model.scan_layers=false`): `layers.0.attn.q_proj.kernel`, ... one
subtree per block. Stacked (`model.scan_layers=true`): `layers.attn.q_proj.kernel` with a leading
[L] axis, the layout `jax.lax.scan` runs over; a stacked Param's `axes` metadata (latent.sharding)
gains a leading None for the layer axis (the layers are never split over devices).

    stacked = stack_layer_params(params, n_layers)   # per layer -> stacked
    params = unstack_layer_params(stacked)           # stacked -> per layer (exact inverse)
    params = to_layout(params, scan_layers=True)     # whichever it was

They work on nnx.State trees (Variables keep their metadata) and on plain nested dicts of arrays.
Everything that carries a params-only tree between runs or formats (train.init_from, load_run,
Hugging Face import/export) converts through them; a resume restores the run's own layout.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

LAYERS = "layers"


def _is_variable(x) -> bool:
    return isinstance(x, nnx.Variable)


def _raw(tree) -> Mapping:
    """The nested mapping of `tree` (an nnx.State keeps plain dicts below its top node)."""
    return tree.raw_mapping if isinstance(tree, nnx.State) else tree


def _like(tree, mapping: dict):
    """`mapping` as the container type of `tree` (an nnx.State stays a State at the top)."""
    return nnx.State(mapping) if isinstance(tree, nnx.State) else dict(mapping)


def _stack_leaves(*leaves):
    if not _is_variable(leaves[0]):
        return jnp.stack(leaves)
    stacked = leaves[0].replace(jnp.stack([leaf.get_value() for leaf in leaves]))
    axes = leaves[0].get_metadata().get("axes")
    if axes is not None:
        stacked.set_metadata(axes=(None, *axes))
    return stacked


def _layer_of(leaf, i: int):
    if not _is_variable(leaf):
        return leaf[i]
    one = leaf.replace(leaf.get_value()[i])
    axes = leaf.get_metadata().get("axes")
    if axes is not None:
        one.set_metadata(axes=tuple(axes[1:]))
    return one


def stack_states(states):
    """One tree from per-layer trees of one structure: every leaf stacked on a leading [L] axis."""
    return jax.tree.map(_stack_leaves, *states, is_leaf=_is_variable)


def layer_slice(stacked, i: int):
    """Layer `i`'s tree of a stacked one (the per-layer tree stack_states took it from)."""
    return jax.tree.map(lambda leaf: _layer_of(leaf, i), stacked, is_leaf=_is_variable)


def is_stacked(params) -> bool:
    """True when `params[layers]` is one stacked subtree, False when it holds one per layer index."""
    layers = _raw(params)[LAYERS]
    return not all(isinstance(key, int) or (isinstance(key, str) and key.isdigit()) for key in layers.keys())


def n_stacked_layers(params) -> int:
    return jax.tree.leaves(_raw(params)[LAYERS])[0].shape[0]


def stack_layer_params(params, n_layers: int):
    """A per-layer tree (`layers.0...`, ..., `layers.{n_layers-1}...`) in the stacked layout."""
    raw = _raw(params)
    keys = sorted(raw[LAYERS].keys(), key=int)
    if [int(k) for k in keys] != list(range(n_layers)):
        raise ValueError(f"expected the parameters of layers 0..{n_layers - 1}; got layers {keys}")
    return _like(params, {**raw, LAYERS: stack_states([raw[LAYERS][k] for k in keys])})


def unstack_layer_params(params):
    """A stacked tree (`layers...` with a leading [L] axis) in the per-layer layout."""
    raw = _raw(params)
    per_layer = {i: layer_slice(raw[LAYERS], i) for i in range(n_stacked_layers(params))}
    return _like(params, {**raw, LAYERS: per_layer})


def to_layout(params, scan_layers: bool):
    """`params` (either layout) in the layout of a model with `model.scan_layers=scan_layers`."""
    if LAYERS not in _raw(params):
        return params
    if is_stacked(params) == scan_layers:
        return params
    if scan_layers:
        return stack_layer_params(params, len(_raw(params)[LAYERS]))
    return unstack_layer_params(params)
