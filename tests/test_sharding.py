"""latent.sharding.make_mesh on CPU devices: a reshape of the device list, `data` outermost, one -1
resolved, an explicit smaller mesh on the first devices, bad shapes refused naming the fields.
(On compile-only TPU devices: tests/tpu/test_aot.py.)"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from latent import sharding
from latent.config import ConfigError, MeshConfig
from tests.conftest import xla_flags

ROOT = Path(__file__).resolve().parents[1]

MESHES_ON_8_CPU_DEVICES = r"""
import jax
from latent import sharding
from latent.config import MeshConfig

devices = jax.devices()
assert len(devices) == 8, devices
for data, fsdp, tensor, shape in [(-1, 1, 1, (8, 1, 1)), (2, 2, 2, (2, 2, 2)), (1, -1, 2, (1, 4, 2)), (4, 1, 1, (4, 1, 1))]:
    mesh = sharding.make_mesh(MeshConfig(data=data, fsdp=fsdp, tensor=tensor))
    assert mesh.axis_names == ("data", "fsdp", "tensor"), mesh.axis_names
    assert mesh.devices.shape == shape, (data, fsdp, tensor, mesh.devices.shape)
    # a reshape in jax.devices() order: the data index changes slowest, tensor fastest
    assert list(mesh.devices.flat) == devices[: mesh.devices.size], (shape, mesh.devices)
print("OK")
"""


def test_cpu_mesh_is_a_reshape_of_the_devices_with_data_outermost():
    env = dict(os.environ, XLA_FLAGS=xla_flags("--xla_force_host_platform_device_count=8"), JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", MESHES_ON_8_CPU_DEVICES], capture_output=True, text=True,
                            timeout=300, cwd=ROOT, env=env)
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize(
    "mesh, message",
    [
        (MeshConfig(data=-1, fsdp=-1), "at most one of mesh.data/fsdp/tensor may be -1"),
        (MeshConfig(data=2), r"mesh.data\*fsdp\*tensor = 2 \(mesh.data=2 mesh.fsdp=1 mesh.tensor=1\) but 1 cpu device"),
        (MeshConfig(data=0), "must be a positive int or -1"),
    ],
)
def test_mesh_errors_name_the_fields(mesh, message):
    with pytest.raises(ConfigError, match=message):
        sharding.make_mesh(mesh)


def test_mesh_shape_names_the_count_a_minus_one_cannot_divide():
    with pytest.raises(ConfigError, match=r"8 tpu devices are not divisible by 3 \(mesh.data=-1 mesh.fsdp=3"):
        sharding.mesh_shape(MeshConfig(fsdp=3), 8, "tpu")


ACTIVATIONS_CONSTRAINED_ON_8_CPU_DEVICES = r"""
import re
import jax, jax.numpy as jnp
from latent import sharding
from latent.config import MeshConfig

mesh = sharding.make_mesh(MeshConfig(data=1, fsdp=-1))
double = jax.jit(lambda x: sharding.constrain(x * 2, ("batch", None, None)))
x = jax.ShapeDtypeStruct((16, 4, 8), jnp.float32)
assert "sharding_constraint" not in double.lower(x).as_text()  # no context mesh: nothing
assert '[{"fsdp"}, {}, {}]' in sharding.InMesh(double, mesh).lower(x).as_text()
odd = jax.ShapeDtypeStruct((6, 4, 8), jnp.float32)  # 6 rows do not split 8 ways: replicated
assert '[{}, {}, {}]' in sharding.InMesh(double, mesh).lower(odd).as_text()

"""

STEP_CONSTRAINED = r"""
# train()'s own step: the residual stream after every block is split over the batch devices
from latent.config_io import apply_overrides, load_preset
from latent.data.splits import fit_tokenizer, load_splits, resolve_vocab
from latent.methods import method_of
from latent.run.load import with_shardings
from latent.train.loop import build_step

cfg = apply_overrides(load_preset("tiny"), ["mesh.data=1", "mesh.fsdp=-1", "train.batch_size=16"])
method = method_of(cfg)
train_examples, valid_examples, _ = load_splits(cfg)
tokenizer = fit_tokenizer(train_examples, valid_examples, cfg.task.format, cfg.abstract.num_tokens)
cfg = resolve_vocab(cfg, tokenizer)
source = method.source(cfg, train_examples, tokenizer, cfg.train.batch_size)
program = build_step(cfg, method, source, mesh)
batch = source.next(0)
state = with_shardings(program.abstract_state, program.state_sh)
shapes = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=program.batch_sh) for k, v in batch.items()}
text = program.step_fn.lower(state, shapes).as_text()
B, T = batch["tokens"].shape
residual = f'[{{"fsdp"}}, {{}}, {{}}]> : tensor<{B}x{T}x{cfg.model.d_model}xf32>'
n = sum(residual in line for line in text.splitlines() if "sharding_constraint" in line)
assert n >= 1 + cfg.model.n_layers, (n, [l for l in text.splitlines() if "sharding_constraint" in l][:5])
print("OK")
"""


def test_the_train_steps_activations_are_split_over_the_batch_devices():
    """Without constraints XLA's propagation chose how to place activations and, under 256-way FSDP,
    needed 117.6 GiB per chip where 6.3 GiB do (tpu/README.md): the model now constrains its
    residual stream by logical axes, resolved against the mesh train()'s step is lowered in."""
    env = dict(os.environ, XLA_FLAGS=xla_flags("--xla_force_host_platform_device_count=8"), JAX_PLATFORMS="cpu")
    code = ACTIVATIONS_CONSTRAINED_ON_8_CPU_DEVICES.split("# train()'s own step")[0] + STEP_CONSTRAINED
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout + result.stderr


STACKED_PARAMS_PLACED_ON_8_CPU_DEVICES = r"""
import jax
from flax import nnx
from latent import sharding
from latent.config import MeshConfig
from latent.models import presets
from latent.nn import Transformer
from latent.run.load import abstract_model
from tests.conftest import tiny_model_fields

mesh = sharding.make_mesh(MeshConfig(data=1, fsdp=4, tensor=2))
cfg = presets.llama(**tiny_model_fields(n_layers=3))
_, loop_params, loop_sh = abstract_model(cfg, mesh)
_, scan_params, scan_sh = abstract_model(cfg.replace(scan_layers=True), mesh)
per_layer = loop_sh["layers"][0]["attn"]["q_proj"]["kernel"].spec
stacked = scan_sh["layers"]["attn"]["q_proj"]["kernel"].spec
assert scan_params["layers"]["attn"]["q_proj"]["kernel"].shape[0] == 3
assert tuple(per_layer) != (None, None) and tuple(stacked) == (None, *per_layer), (per_layer, stacked)
# and real stacked arrays take those shardings
_, params = nnx.split(Transformer(cfg.replace(scan_layers=True), rngs=nnx.Rngs(0)))
placed = jax.device_put(params, scan_sh)
kernel = placed["layers"]["attn"]["q_proj"]["kernel"][...]
assert kernel.sharding.spec == stacked and len(kernel.sharding.device_set) == 8
print("OK")
"""


def test_stacked_layer_params_are_placed_with_a_leading_unsplit_layer_axis():
    """model.scan_layers stores a block's parameters stacked [L, ...]: their `axes` metadata gains a
    leading None, so each layer's slice is split over the mesh as the loop's per-layer Param is."""
    env = dict(os.environ, XLA_FLAGS=xla_flags("--xla_force_host_platform_device_count=8"), JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", STACKED_PARAMS_PLACED_ON_8_CPU_DEVICES], capture_output=True,
                            text=True, timeout=600, cwd=ROOT, env=env)
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout + result.stderr
