"""One device mesh (data, fsdp, tensor) and logical-axis rules that place every array on it.

Parameters carry logical axis names as metadata (`axes`, set where each module creates them);
a short rule table maps those names to mesh axes. A dimension that the mesh axes do not divide
is replicated instead, so tiny test models shard on any mesh.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from latent.config import ConfigError
from latent.nn.paths import param_path

MESH_AXES = ("data", "fsdp", "tensor")

# logical axis -> mesh axes. Batch splits over data and fsdp (FSDP shards params over the batch
# devices too); weights shard their model dimension over fsdp and their heads/MLP over tensor.
LOGICAL_RULES: dict[str | None, tuple[str, ...] | None] = {
    "batch": ("data", "fsdp"),
    "vocab": ("tensor",),
    "embed": ("fsdp",),
    "mlp": ("tensor",),
    "q_heads": ("tensor",),
    "kv_heads": ("tensor",),
    "norm": None,
    None: None,
}


def make_mesh(mesh_cfg, devices=None) -> Mesh:
    """Mesh of shape (data, fsdp, tensor); one -1 entry takes the remaining devices. A shape
    that the devices cannot fill is a ConfigError naming mesh.data/fsdp/tensor."""
    devices = jax.devices() if devices is None else devices
    shape = [mesh_cfg.data, mesh_cfg.fsdp, mesh_cfg.tensor]
    if any(isinstance(size, bool) or not isinstance(size, int) or (size <= 0 and size != -1) for size in shape):
        raise ConfigError(f"mesh: each of mesh.data/fsdp/tensor must be a positive int or -1; got {_describe(shape)}")
    if shape.count(-1) > 1:
        raise ConfigError(f"mesh: at most one of mesh.data/fsdp/tensor may be -1; got {_describe(shape)}")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if len(devices) % known:
            raise ConfigError(f"mesh: {len(devices)} devices are not divisible by {known} ({_describe(shape)})")
        shape[shape.index(-1)] = len(devices) // known
    if -1 not in shape and math.prod(shape) < len(devices):
        devices = devices[: math.prod(shape)]  # an explicit smaller mesh uses the first devices
    if math.prod(shape) != len(devices):
        raise ConfigError(
            f"mesh: mesh.data*fsdp*tensor = {math.prod(shape)} ({_describe(shape)}) "
            f"but {len(devices)} device(s) are available ({jax.default_backend()})"
        )
    grid = np.asarray(devices).reshape(shape)
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * 3)


def _describe(shape) -> str:
    return " ".join(f"mesh.{axis}={size}" for axis, size in zip(MESH_AXES, shape))


def logical_to_spec(axes, shape, mesh: Mesh, rules=LOGICAL_RULES) -> P:
    spec = []
    used: set[str] = set()
    for name, size in zip(axes, shape):
        mesh_axes = rules.get(name)
        if mesh_axes is None:
            spec.append(None)
            continue
        mesh_axes = tuple(a for a in mesh_axes if a not in used and mesh.shape[a] > 1)
        if not mesh_axes or size % math.prod(mesh.shape[a] for a in mesh_axes):
            spec.append(None)
            continue
        used.update(mesh_axes)
        spec.append(mesh_axes if len(mesh_axes) > 1 else mesh_axes[0])
    return P(*spec)


def param_shardings(params: nnx.State, mesh: Mesh):
    """NamedShardings with the same tree structure as `params` (arrays or ShapeDtypeStructs)."""
    variables = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nnx.Variable))
    leaves, treedef = jax.tree.flatten(params)
    if len(variables) != len(leaves):
        raise ValueError("param_shardings expects one array per nnx.Variable")
    shardings = []
    for variable, leaf in zip(variables, leaves):
        axes = variable.get_metadata().get("axes") or (None,) * leaf.ndim
        shardings.append(NamedSharding(mesh, logical_to_spec(axes, leaf.shape, mesh)))
    return jax.tree.unflatten(treedef, shardings)


def matching_shardings(tree, reference, reference_shardings, mesh: Mesh):
    """Shardings for `tree` (e.g. optimizer state): a leaf whose key path ends with a reference
    leaf's path and has its shape takes that leaf's sharding; anything else is replicated."""
    by_path = {}
    for (path, leaf), sharding in zip(jax.tree.leaves_with_path(reference), jax.tree.leaves(reference_shardings)):
        by_path[param_path(path)] = (leaf.shape, sharding)
    replicated = NamedSharding(mesh, P())

    def pick(path, leaf):
        names = param_path(path)
        for start in range(len(names)):
            match = by_path.get(names[start:])
            if match is not None and tuple(match[0]) == tuple(leaf.shape):
                return match[1]
        return replicated

    return jax.tree.map_with_path(pick, tree)


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    return NamedSharding(mesh, P(LOGICAL_RULES["batch"], *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def global_batch(host_array, sharding: NamedSharding) -> jax.Array:
    """The global jax.Array of `host_array`, the whole global batch, which every process holds
    alike (the same draw, padded to the same shape): each process places only the blocks of its
    own devices (`addressable_devices_indices_map`), so which rows a process feeds follows the
    mesh, not `B // process_count`. When the batch axes do not span processes, each process
    places the whole batch."""
    host_array = np.asarray(host_array)
    blocks = sharding.addressable_devices_indices_map(host_array.shape)
    shards = jax.device_put([host_array[index] for index in blocks.values()], list(blocks))
    return jax.make_array_from_single_device_arrays(host_array.shape, sharding, shards)
