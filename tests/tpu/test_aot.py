"""tpu/aot.py: a run's train step and decoding loop compiled, not run, for compile-only TPU devices
(libtpu, from the `test` extra), with per-device memory, FLOPs and collectives that add up; a model
too big for the chip refused with exit 1 naming the program, its peak and the HBM; bad input
refused with exit 2. And latent.sharding.make_mesh on TPU topologies (mesh_utils, slices on the
data axis).

The compiles run `python tpu/aot.py` as a user does, in a subprocess, without the suite's CPU
XLA_FLAGS and compilation cache (the TPU compiler sees what it sees for a user)."""

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

from latent.config import ConfigError, MeshConfig
from tests.tpu import ROOT, load_tpu_script

GIB = 2**30
# `tiny` with every weight's last two dims multiples of TPU's 8 x 128 tiles: XLA pads each array to
# whole tiles, which doubles the bytes of tiny's d=32 weights and would hide what the state costs
TILED_TINY = ["model.d_model=128", "model.d_ff=256", "model.n_kv_heads=4", "model.attn_gate=none", "model.vocab_size=256"]
# the Coconut preset at test size: 1 layer, 1 thought, a small split (each compile takes seconds)
SMALL_COCONUT = ["task.n_train=400", "task.n_valid=16", "train.batch_size=32", "eval.batch_size=16", "model.n_layers=1",
                 "latent.max_latent_stage=1"]


aot = load_tpu_script("aot")


def run_aot(*args, tmp_path) -> tuple[subprocess.CompletedProcess, dict | None]:
    out = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR")}
    result = subprocess.run([sys.executable, str(ROOT / "tpu" / "aot.py"), *args, "--out", str(out)],
                            capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env)
    return result, json.loads(out.read_text()) if out.exists() else None


def programs_of(report) -> dict:
    return {row["name"]: row for row in report["programs"]}


@pytest.fixture(scope="module")
def tiny_on_v5e(tmp_path_factory):
    return run_aot("--config", "tiny", "--topology", "v5e:2x4", *TILED_TINY, tmp_path=tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def coconut_on_two_v5p_slices(tmp_path_factory):
    return run_aot("--config", "prosqa_tiny_coconut", "--topology", "v5p:2x2x2", "--num-slices", "2", *SMALL_COCONUT,
                   "mesh.data=2", "mesh.fsdp=8", tmp_path=tmp_path_factory.mktemp("coconut"))


def check_sane(row, hbm_gib):
    assert row["fits"], row
    assert 0 < row["peak_bytes"] < hbm_gib * GIB, row
    assert row["peak_bytes"] >= row["argument_bytes"] + row["temp_bytes"], row
    assert row["flops"] > 0 and row["compile_s"] > 0, row


def test_tiny_text_step_and_decoding_compile_for_v5e(tiny_on_v5e):
    result, report = tiny_on_v5e
    assert result.returncode == 0, result.stdout + result.stderr
    assert (report["devices"], report["chips"], report["hbm_gib_checked"]) == (8, 8, 15.75)
    assert report["mesh"] == {"data": 8, "fsdp": 1, "tensor": 1}  # mesh.data=-1 took the 8 chips
    programs = programs_of(report)
    assert set(programs) == {"train_step", "generate"}
    step = programs["train_step"]
    check_sane(step, 15.75)
    check_sane(programs["generate"], 15.75)
    # data-parallel: every device holds the params and Adam's two moments whole (float32), plus its
    # rows of the batch and a few counters; the donated state comes back in the same buffers
    state_bytes = 3 * 4 * report["n_params"]
    assert state_bytes <= step["argument_bytes"] <= state_bytes + 16 * 1024, (step, report["n_params"])
    assert step["alias_bytes"] >= state_bytes
    # one device's share of ~6 FLOPs per parameter per token (forward and backward), with
    # attention and the loss on top: within a factor of 2 either way
    dense = 6 * report["n_params"] * report["batch_tokens"] / report["devices"]
    assert dense / 2 < step["flops"] < 2 * dense, (step["flops"], dense)
    assert step["collectives"].get("all-reduce", 0) >= 1, step["collectives"]  # the gradients' mean over data
    assert "tokens[8, 160]" in step["what"]  # the widest bucket of the split (tiny: task.max_len=256)
    assert "train_step" in result.stdout and "collectives in the HLO: all-reduce" in result.stdout


def test_coconut_latent_step_and_decoding_compile_for_two_v5p_slices(coconut_on_two_v5p_slices):
    result, report = coconut_on_two_v5p_slices
    assert result.returncode == 0, result.stdout + result.stderr
    assert (report["devices"], report["num_slices"], report["hbm_gib_checked"]) == (16, 2, 95.74)
    assert report["mesh"] == {"data": 2, "fsdp": 8, "tensor": 1}
    programs = programs_of(report)
    step, generate = programs["train_step"], programs["generate"]
    check_sane(step, 95.74)
    check_sane(generate, 95.74)
    assert "latent_mask[32, 1]" in step["what"]  # the last stage's thought slot
    assert "1 thoughts, policy fixed" in generate["what"]
    # FSDP over 8 devices: each holds a part of the params and moments, gathered for use
    assert step["argument_bytes"] < 3 * 4 * report["n_params"] / 2, (step, report["n_params"])
    assert step["collectives"].get("all-gather", 0) >= 1, step["collectives"]
    # 4 hosts: evaluation decodes on one chip of each from the gathered params, no collective
    assert "params on one chip per host" in generate["what"] and generate["collectives"] == {}
    assert generate["while_loops"] >= 1  # the decoding loop, whose FLOPs XLA counts once


def test_a_model_too_big_for_the_chip_exits_1_naming_program_peak_and_hbm(tmp_path):
    # ~2.1e9 float32 params, replicated by the data-parallel mesh with Adam's two moments: ~26 GB a chip
    result, report = run_aot("--config", "tiny", "--topology", "v5e:2x4", "--program", "train_step",
                             "model.d_model=8192", "model.d_ff=32768", tmp_path=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "does not fit v5e:2x4: train_step needs" in result.stderr
    assert "a device has 15.75 GiB of HBM" in result.stderr and "mesh.fsdp" in result.stderr
    (row,) = report["programs"]
    assert not row["fits"] and row["peak_bytes"] > 15.75 * GIB


def test_a_peak_over_a_smaller_hbm_bound_exits_1(tmp_path):
    result, report = run_aot("--config", "tiny", "--topology", "v5e:2x4", "--program", "train_step",
                             "--hbm-gib", "0.0001", tmp_path=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "train_step needs" in result.stderr and "a device has 0.0001 GiB of HBM" in result.stderr
    assert report["programs"][0]["peak_bytes"] > 0.0001 * GIB


# ----------------------------------------------------------------------------- bad input, in this process


@pytest.fixture
def quiet_env(monkeypatch):
    """The variables aot.py sets for libtpu are put back (or removed) after the test."""
    for key in ("TPU_SKIP_MDS_QUERY", "TPU_ACCELERATOR_TYPE", "TPU_WORKER_HOSTNAMES", "ALLOW_MULTIPLE_LIBTPU_LOAD"):
        monkeypatch.setenv(key, "")  # records the value before, which the teardown restores
        monkeypatch.delenv(key)


@pytest.mark.parametrize("topology", ["v9z:2x2", "v5e", "v5e:2x4x"])
def test_an_unknown_topology_name_lists_the_forms_that_work(topology, capsys, quiet_env):
    assert aot.main(["--config", "tiny", "--topology", topology]) == 2
    err = capsys.readouterr().err
    assert f"--topology {topology!r} is not a TPU topology" in err and "v5e:2x4, v5e:4x4" in err


def test_a_shape_libtpu_does_not_know_lists_the_forms_that_work(capsys, quiet_env):
    assert aot.main(["--config", "tiny", "--topology", "v5e:3x5"]) == 2
    err = capsys.readouterr().err
    assert "libtpu does not know TPU topology 'v5e:3x5'" in err and "v5p:2x2x2" in err


@pytest.mark.parametrize(
    "override, message",
    [
        ("mesh.data=3", r"mesh.data\*fsdp\*tensor = 3 \(mesh.data=3 mesh.fsdp=1 mesh.tensor=1\) does not cover "
                        r"v5e:2x4's 8 devices"),
        ("mesh.fsdp=3", r"8 tpu devices are not divisible by 3 \(mesh.data=-1 mesh.fsdp=3 mesh.tensor=1\)"),
    ],
)
def test_a_mesh_that_does_not_divide_the_topology_names_the_fields(override, message, capsys, quiet_env):
    assert aot.main(["--config", "tiny", "--topology", "v5e:2x4", override]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_without_libtpu_it_says_how_to_install_it(monkeypatch, capsys, quiet_env):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "libtpu" else find_spec(name, *a))
    assert aot.main(["--config", "tiny", "--topology", "v5e:2x4"]) == 2
    assert 'pip install -e ".[tpu]"' in capsys.readouterr().err


# ----------------------------------------------------------------------------- meshes on TPU topologies


def test_mesh_on_v5e_covers_every_chip_with_data_outermost(quiet_env):
    from latent import sharding

    topology = aot.compile_only_topology("v5e:2x4")
    assert topology.hosts == 2 and aot.compile_only_topology("v5e:2x4", chips_per_host="2x4").hosts == 1  # v5e-8 VM
    devices = topology.devices
    for mesh_cfg, shape in [(MeshConfig(), (8, 1, 1)), (MeshConfig(data=2, fsdp=2, tensor=2), (2, 2, 2)),
                            (MeshConfig(data=1, fsdp=-1, tensor=2), (1, 4, 2))]:
        mesh = sharding.make_mesh(mesh_cfg, devices)
        assert mesh.axis_names == ("data", "fsdp", "tensor") and mesh.devices.shape == shape
        assert sorted(d.id for d in mesh.devices.flat) == sorted(d.id for d in devices)


def test_mesh_over_two_v5p_slices_puts_the_slices_on_the_data_axis(quiet_env):
    from latent import sharding

    devices = aot.compile_only_topology("v5p:2x2x2", num_slices=2).devices
    assert len(devices) == 16 and {d.slice_index for d in devices} == {0, 1}
    mesh = sharding.make_mesh(MeshConfig(data=2, fsdp=8), devices)
    assert mesh.devices.shape == (2, 8, 1)
    assert [{d.slice_index for d in mesh.devices[i].flat} for i in range(2)] == [{0}, {1}]  # one slice per data row
    mesh = sharding.make_mesh(MeshConfig(), devices)  # all 16 data-parallel: the first 8 on slice 0
    assert [d.slice_index for d in mesh.devices[:, 0, 0]] == [0] * 8 + [1] * 8
    assert sorted(d.id for d in mesh.devices.flat) == sorted(d.id for d in devices)
    with pytest.raises(ConfigError, match=r"mesh.data=1 must be a multiple of the 2 TPU slices"):
        sharding.make_mesh(MeshConfig(data=1, fsdp=16), devices)


# ----------------------------------------------------------------------------- RL runs: rl_step and rollout

# an RL run at test size, without train.init_from (a compile reads only the config's model)
SMALL_RL = ["method=rl", "rl.group_size=2", "rl.prompts_per_step=4", "rl.max_new_tokens=16"]
RL_PROGRAMS = ["--program", "rl_step", "--program", "rollout"]


@pytest.fixture(scope="module")
def grpo_on_v5e(tmp_path_factory):
    return run_aot("--config", "tiny", "--topology", "v5e:2x4", *RL_PROGRAMS, *TILED_TINY, *SMALL_RL,
                   tmp_path=tmp_path_factory.mktemp("grpo"))


@pytest.mark.slow
def test_a_grpo_run_compiles_its_learning_step_and_rollouts_for_v5e(grpo_on_v5e):
    result, report = grpo_on_v5e
    assert result.returncode == 0, result.stdout + result.stderr
    programs = programs_of(report)
    assert set(programs) == {"rl_step", "rollout"}
    step, rollout = programs["rl_step"], programs["rollout"]
    check_sane(step, 15.75)
    check_sane(rollout, 15.75)
    # N = 4 prompts x 2 samples rows; the widest prompt bucket (160) and rl.max_new_tokens columns
    assert "prompt_NxP[8, 160]" in step["what"] and "tokens_NxT[8, 16]" in step["what"], step["what"]
    assert "advantage_N[8]" in step["what"] and "policy none" in step["what"]
    # data-parallel: the state (params and Adam's moments) whole on every device, donated, plus a row of rollouts
    state_bytes = 3 * 4 * report["n_params"]
    assert state_bytes <= step["argument_bytes"] <= state_bytes + 16 * 1024, (step, report["n_params"])
    assert step["alias_bytes"] >= state_bytes
    assert step["collectives"].get("all-reduce", 0) >= 1, step["collectives"]  # the gradients' mean over data
    # one update of ~6 FLOPs per parameter per prompt and new token, with attention and the loss on top
    assert report["batch_tokens"] == 8 * (160 + 16)
    dense = 6 * report["n_params"] * report["batch_tokens"] / report["devices"]
    assert dense / 2 < step["flops"] < 2 * dense, (step["flops"], dense)
    # the rollout samples with the params as trained (replicated here), the prompts and its key
    assert 4 * report["n_params"] <= rollout["argument_bytes"] < 4 * report["n_params"] + 64 * 1024, rollout
    assert "prompts [4, 160] x 2 samples, 16 new tokens" in rollout["what"] and rollout["while_loops"] >= 1
    assert "rl_step" in result.stdout and "rollout" in result.stdout


@pytest.mark.slow
def test_an_hrpo_run_compiles_with_its_hybrid_inputs_in_the_batch(tmp_path):
    result, report = run_aot("--config", "tiny", "--topology", "v5e:2x4", *RL_PROGRAMS, "--program", "reference",
                             *SMALL_RL, "model.feedback=hrpo", "rl.kl_coef=0.04", tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    programs = programs_of(report)
    check_sane(programs["rl_step"], 15.75)
    check_sane(programs["rollout"], 15.75)
    # rl.kl_coef: the frozen reference replays each batch of rollouts, a forward only (the step runs
    # forward and backward on the same rows), with a second copy of the params as its argument
    reference = programs["reference"]
    check_sane(reference, 15.75)
    assert reference["argument_bytes"] >= 4 * report["n_params"], reference
    assert 0 < reference["flops"] < programs["rl_step"]["flops"], (reference["flops"], programs["rl_step"]["flops"])
    assert "reference log-probs of 8 rollouts, policy hrpo" in reference["what"], reference["what"]
    what = programs["rl_step"]["what"]
    # the rollout's own fields: which tokens were fed as the hybrid, and the hidden part [N, T, D] each was mixed with
    assert "policy hrpo" in what and "hybrid_NxT[8, 16]" in what and "hidden_part_NxTxD[8, 16, 32]" in what, what
    assert "policy hrpo" in programs["rollout"]["what"]


def test_the_rl_step_compiled_is_build_steps_step_fn(monkeypatch, quiet_env):
    """aot lowers the step train() runs (traced once through build_step's step_fn), not a copy."""
    from latent.config_io import apply_overrides, load_preset
    from latent.train import loop

    build_step, built = loop.build_step, []

    def spy(*args, **kwargs):
        built.append(build_step(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(loop, "build_step", spy)  # aot imports it from latent.train.loop when it runs
    cfg = apply_overrides(load_preset("tiny"), [*SMALL_RL, "task.n_train=32", "task.n_valid=8"])
    run = aot.run_programs(cfg, aot.compile_only_topology("v5e:2x4"), None, ("rl_step",))
    assert [p.name for p in run.programs] == ["rl_step"]
    (program,) = built
    assert program.traces() == 1  # the lowering traced build_step's train step


def test_an_rl_run_has_no_train_step_and_a_train_step_run_no_rollout(capsys, quiet_env):
    assert aot.main(["--config", "tiny", "--topology", "v5e:2x4", "--program", "train_step", *SMALL_RL]) == 2
    assert "--program train_step: a method=rl run's programs are rl_step, rollout, generate" in capsys.readouterr().err
    assert aot.main(["--config", "tiny", "--topology", "v5e:2x4", "--program", "rollout"]) == 2
    assert "--program rollout: a method=sft run's programs are train_step, generate" in capsys.readouterr().err


def test_a_batch_of_rollouts_the_mesh_cannot_split_names_the_fields(capsys, quiet_env):
    assert aot.main(["--config", "tiny", "--topology", "v5e:2x4", *SMALL_RL, "rl.group_size=3"]) == 2
    assert "rl.prompts_per_step=4 x rl.group_size=3 = 12 rollouts must be divisible by data*fsdp=8" in capsys.readouterr().err


def test_the_reference_program_exists_only_with_a_kl_term():
    assert "reference" in aot.check_programs(None, True, "rl", kl=True)
    assert "reference" not in aot.check_programs(None, True, "rl", kl=False)
    with pytest.raises(aot.AotError, match=r"--program reference: a method=rl run's programs are rl_step, rollout, generate"):
        aot.check_programs(("reference",), True, "rl", kl=False)
