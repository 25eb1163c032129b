"""One device mesh (data, fsdp, tensor) and logical-axis rules that place every array on it.

Parameters carry logical axis names as metadata (`axes`, set where each module creates them);
a short rule table maps those names to mesh axes. A dimension that the mesh axes do not divide
is replicated instead, so tiny test models shard on any mesh.

Activations are placed the same way: the model constrains its residual stream and logits by
logical axes (`constrain`), resolved against the context mesh that `InMesh` sets around the
train step's calls and lowerings. Without them XLA's propagation chooses, and under wide FSDP
it chose badly (tpu/README.md). Outside a context mesh (decoding, tests) `constrain` does nothing.
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
    that the devices cannot fill is a ConfigError naming mesh.data/fsdp/tensor. The devices are
    laid out by `device_grid`: by the TPU's physical links on TPU, by reshape on CPU."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(mesh_cfg, len(devices), devices[0].platform)
    if math.prod(shape) < len(devices):  # an explicit smaller mesh: the first devices, in their order
        grid = np.asarray(devices[: math.prod(shape)]).reshape(shape)  # (mesh_utils lays out whole slices)
    else:
        grid = device_grid(shape, devices)
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * 3)


def mesh_shape(mesh_cfg, n_devices: int, platform: str = "") -> list[int]:
    """[data, fsdp, tensor] with a -1 resolved against `n_devices` (of `platform`, for messages);
    ConfigError when they do not fit (an explicit shape may use fewer devices than there are)."""
    shape = [mesh_cfg.data, mesh_cfg.fsdp, mesh_cfg.tensor]
    if any(isinstance(size, bool) or not isinstance(size, int) or (size <= 0 and size != -1) for size in shape):
        raise ConfigError(f"mesh: each of mesh.data/fsdp/tensor must be a positive int or -1; got {_describe(shape)}")
    if shape.count(-1) > 1:
        raise ConfigError(f"mesh: at most one of mesh.data/fsdp/tensor may be -1; got {_describe(shape)}")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if n_devices % known:
            raise ConfigError(f"mesh: {n_devices} {platform} devices are not divisible by {known} ({_describe(shape)})")
        shape[shape.index(-1)] = n_devices // known
    if math.prod(shape) > n_devices:
        raise ConfigError(
            f"mesh: mesh.data*fsdp*tensor = {math.prod(shape)} ({_describe(shape)}) "
            f"but {n_devices} {platform} device(s) are available"
        )
    return shape


def device_grid(shape, devices) -> np.ndarray:
    """`devices` as an array of `shape` (data, fsdp, tensor), `data` outermost.

    TPU: `mesh_utils.create_device_mesh` maps the axes onto the chips' physical torus, so the
    innermost axis (tensor, the most traffic) runs along direct links; over several slices
    (multi-slice, joined by the slower data-center network) `create_hybrid_device_mesh` puts
    the slices on the data axis, whose gradient all-reduce is the one collective per step. GPU:
    mesh_utils orders by device id. CPU and a single device: a plain reshape of the device list (and
    TPU devices that are single cores, which mesh_utils refuses: by device id)."""
    devices = list(devices)
    platform = devices[0].platform
    if platform == "cpu" or len(devices) == 1:
        return np.asarray(devices).reshape(shape)
    from jax.experimental import mesh_utils

    slices = sorted({getattr(d, "slice_index", 0) for d in devices})
    if len(slices) > 1:
        if shape[0] % len(slices):
            raise ConfigError(
                f"mesh: mesh.data={shape[0]} must be a multiple of the {len(slices)} TPU slices: the data axis "
                f"spans the slices ({_describe(shape)})"
            )
        per_slice = (shape[0] // len(slices), shape[1], shape[2])
        return mesh_utils.create_hybrid_device_mesh(per_slice, (len(slices), 1, 1), devices=devices)
    try:
        return mesh_utils.create_device_mesh(shape, devices=devices)
    except (ValueError, NotImplementedError):  # an axis no physical one fits (64 on a 16x16 torus)
        pass
    except AssertionError:  # mesh_utils wants one device per chip; libtpu's compile-only v4 shows each core
        return np.asarray(sorted(devices, key=lambda d: d.id)).reshape(shape)
    try:  # lets one mesh axis take parts of two torus axes
        return mesh_utils.create_device_mesh(shape, devices=devices, allow_split_physical_axes=True)
    except (ValueError, NotImplementedError) as err:
        raise ConfigError(f"mesh: {_describe(shape)} cannot be laid out on these {len(devices)} {platform} devices "
                          f"({devices[0].device_kind}): {err}") from None


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


def constrain(x: jax.Array, axes: tuple) -> jax.Array:
    """`x` constrained to the sharding its logical `axes` map to on the context mesh (jax.set_mesh,
    as InMesh sets it); unchanged without one, or on a mesh without latent's axes."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or not set(MESH_AXES) <= set(mesh.axis_names) or math.prod(mesh.shape.values()) == 1:
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_spec(axes, x.shape, mesh))


class InMesh:
    """A jitted function whose calls and lowerings run with `mesh` as the context mesh, so the
    activation constraints inside it (`constrain`) resolve to that mesh."""

    def __init__(self, jitted, mesh: Mesh):
        self.jitted, self.mesh = jitted, mesh

    def __call__(self, *args, **kwargs):
        with jax.set_mesh(self.mesh):
            return self.jitted(*args, **kwargs)

    def lower(self, *args, **kwargs):
        with jax.set_mesh(self.mesh):
            return self.jitted.lower(*args, **kwargs)


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
