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
