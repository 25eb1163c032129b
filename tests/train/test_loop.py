"""The training spine end to end on the `tiny` preset: exact resume, interrupts, divergence,
bad inputs that must not cost a checkpoint, and one compile per shape bucket."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from latent.config_io import apply_overrides
from latent.data.tasks import DataError
from latent.run import checkpoint as ckpt
from latent.train.loop import TrainingDiverged, train
from tests.conftest import tiny_run as tiny
from tests.conftest import xla_flags

ROOT = Path(__file__).resolve().parents[2]


def losses(workdir) -> dict[int, float]:
    rows = [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def checkpoint_files(workdir) -> dict[str, float]:
    root = Path(workdir) / ckpt.CHECKPOINT_DIR
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_resume_gives_identical_losses(tmp_path):
    cfg = tiny("train.steps=40", "train.checkpoint_every=10", "train.log_every=1")
    straight = train(cfg, tmp_path / "straight", progress=False)
    assert straight["step"] == 40
    first = train(cfg, tmp_path / "resumed", progress=False, stop_at_step=20)
    assert first["step"] == 20
    second = train(cfg, tmp_path / "resumed", progress=False)
    assert second["resumed_from"] == 20 and second["step"] == 40
    a, b = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert sorted(a) == sorted(b) == list(range(1, 41))
    assert [a[s] for s in range(1, 41)] == [b[s] for s in range(1, 41)]
    assert a[40] < a[1]  # and it learns


def test_time_limit_evaluates_saves_and_resumes(tmp_path):
    cfg = tiny("train.steps=30", "train.time_limit_minutes=0.00001")  # expires during the first step
    stopped = train(cfg, tmp_path, progress=False)
    assert stopped["stopped_by"] == "time_limit" and stopped["step"] == 1
    assert "accuracy" in stopped["eval"]
    assert ckpt.make_manager(tmp_path, cfg.checkpoint).latest_step() == 1
    resumed = train(tiny("train.steps=30"), tmp_path, progress=False)
    assert resumed["resumed_from"] == 1 and resumed["step"] == 30 and "stopped_by" not in resumed


def test_a_time_limit_reached_on_the_last_step_is_a_finished_run(tmp_path):
    # a warm-up phase reported as stopped would stop the warm-up after a finished phase
    done = train(tiny("train.steps=1", "train.time_limit_minutes=0.00001"), tmp_path, progress=False)
    assert done["step"] == 1 and "stopped_by" not in done


@pytest.mark.slow
def test_one_compile_per_shape_bucket(tmp_path):
    summary = train(tiny("train.steps=12", "train.log_every=1"), tmp_path, progress=False)
    assert summary["train_step_compiles"] == len(summary["batch_shapes"])
    assert all(length % 32 == 0 for (length,) in summary["batch_shapes"])


MESHES = {  # name: (data, fsdp, tensor) on 8 fake CPU devices
    "one": (1, 1, 1),
    "data4_fsdp2": (4, 2, 1),
    "data2_tensor4": (2, 1, 4),
    "fsdp4_tensor2": (1, 4, 2),
}


@pytest.mark.slow
def test_sharded_runs_match_single_device_and_split_weights_over_their_axes(tmp_path):
    """8 fake CPU devices (one subprocess, as the device count is fixed when JAX starts): data x
    fsdp, data x tensor and fsdp x tensor meshes against one device give the same losses within
    1e-5, and the trained parameters (as handed to the checkpoint) are really split: a mesh that
    silently replicated its weights would still match the losses, so each weight's sharding must
    name the mesh axes its logical axes map to, and its local shard must be that fraction of it."""
    script = f"""
import json, sys
sys.path.insert(0, {str(ROOT)!r})
import jax
assert jax.device_count() == 8, jax.devices()
from tests.train.test_loop import MESHES, tiny, losses
from latent.nn.paths import param_path
from latent.run import checkpoint
from latent.train.loop import train

placements = {{}}
save = checkpoint.save

def recording_save(manager, step, params, *args, **kwargs):  # the live training parameters' placement
    placements.clear()
    for path, leaf in jax.tree.leaves_with_path(params):
        spec = [None if s is None else [s] if isinstance(s, str) else list(s) for s in leaf.sharding.spec]
        spec += [None] * (leaf.ndim - len(spec))
        placements[".".join(map(str, param_path(path)))] = dict(
            spec=spec, shape=list(leaf.shape), shard=list(leaf.addressable_shards[0].data.shape))
    return save(manager, step, params, *args, **kwargs)

checkpoint.save = recording_save
report = {{}}
for name, (data, fsdp, tensor) in MESHES.items():
    workdir = {str(tmp_path)!r} + "/" + name
    mesh = [f"mesh.data={{data}}", f"mesh.fsdp={{fsdp}}", f"mesh.tensor={{tensor}}"]
    # bucket 160: every batch pads to one width (one train step compile per mesh, not two); one
    # checkpoint (step 12), whose save records the placement
    train(tiny("train.steps=12", "train.log_every=1", "eval.max_new_tokens=8", "train.length_bucket=160",
               "train.checkpoint_every=12", *mesh), workdir, progress=False)
    report[name] = dict(losses=losses(workdir), params=dict(placements))
print(json.dumps(report))
"""
    env = dict(os.environ, XLA_FLAGS=xla_flags("--xla_force_host_platform_device_count=8"), JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    one = report["one"]["losses"]
    assert sorted(one, key=int) == [str(s) for s in range(1, 13)]
    for name, (data, fsdp, tensor) in MESHES.items():
        losses_ = report[name]["losses"]
        assert sorted(losses_) == sorted(one), name
        np.testing.assert_allclose([losses_[k] for k in one], [one[k] for k in one], atol=1e-5, rtol=0, err_msg=name)

        sizes = {"data": data, "fsdp": fsdp, "tensor": tensor}
        params = report[name]["params"]
        expected = {  # weight: the mesh axis of each dimension (dims of 1 device stay unsplit)
            "layers.0.attn.q_proj.kernel": ("fsdp", "tensor"),  # (embed, q_heads)
            "layers.1.attn.k_proj.kernel": ("fsdp", "tensor"),  # (embed, kv_heads)
            "layers.0.attn.o_proj.kernel": ("tensor", "fsdp"),  # (q_heads, embed)
            "layers.1.mlp.down_proj.kernel": ("tensor", "fsdp"),  # (mlp, embed)
            "embed": ("tensor", "fsdp"),  # (vocab, embed)
        }
        for weight, axes in expected.items():
            placed = params[weight]
            want = [[axis] if sizes[axis] > 1 else None for axis in axes]
            assert placed["spec"] == want, (name, weight, placed)
            assert placed["shard"] == [n // sizes[axis] for n, axis in zip(placed["shape"], axes)], (name, weight, placed)
        used = {axis for placed in params.values() for dim in placed["spec"] if dim for axis in dim}
        assert used == {axis for axis in ("fsdp", "tensor") if sizes[axis] > 1}, (name, used)


def _start_training(workdir, *overrides):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "--config", "tiny", "--workdir", str(workdir), "--no-progress",
         "train.steps=100000", "train.log_every=1", *overrides],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait_for_step(workdir, step, proc, timeout=180):
    deadline = time.time() + timeout
    metrics = Path(workdir) / "metrics.jsonl"
    while time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= step:
            return
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read()[-3000:])
        time.sleep(0.2)
    raise AssertionError(f"training did not reach step {step}")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_a_checkpoint_and_exits_cleanly(tmp_path, sig):
    proc = _start_training(tmp_path, "train.checkpoint_every=100000")
    _wait_for_step(tmp_path, 5, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["stopped_by"] == signal.Signals(sig).name
    manager = ckpt.make_manager(tmp_path, tiny().checkpoint)
    assert manager.latest_step() == summary["step"] >= 5
    assert f"checkpoint saved at step {summary['step']}; rerun the same command to resume" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_sigkill_resumes_from_last_complete_checkpoint(tmp_path):
    proc = _start_training(tmp_path, "train.checkpoint_every=3")
    _wait_for_step(tmp_path, 11, proc)
    proc.kill()
    proc.wait()
    # A save cut off mid-write leaves only a temporary directory; it must never be picked.
    partial = tmp_path / ckpt.CHECKPOINT_DIR / "99999.orbax-checkpoint-tmp-1"
    partial.mkdir(parents=True)
    (partial / "junk").write_text("half a checkpoint")
    manager = ckpt.make_manager(tmp_path, tiny().checkpoint)
    last = manager.latest_step()
    assert last is not None and last % 3 == 0 and last < 99999
    summary = train(tiny(f"train.steps={last + 2}", "train.log_every=1"), tmp_path, progress=False)
    assert summary["resumed_from"] == last and summary["step"] == last + 2


@pytest.mark.slow
def test_divergence_stops_with_the_step_and_keeps_last_good_checkpoint(tmp_path):
    cfg = tiny("optimizer.lr=1e12", "optimizer.grad_clip=0", "optimizer.warmup_steps=0",
               "train.checkpoint_every=1", "train.steps=50", "task.n_train=64")
    with pytest.raises(TrainingDiverged, match=r"step \d+: loss=.* is not finite"):
        train(cfg, tmp_path, progress=False)
    manager = ckpt.make_manager(tmp_path, cfg.checkpoint)
    step = manager.latest_step()
    assert step is not None
    import jax

    from latent import sharding
    from latent.train.loop import build_state, restore_state
    from latent.train.optimizer import make_optimizer

    resolved = apply_overrides(cfg, {"model.vocab_size": ckpt.model_config_of(ckpt.read_meta(manager)).vocab_size})
    mesh = sharding.make_mesh(resolved.mesh)
    _, _, abstract, shardings = build_state(resolved, mesh, make_optimizer(resolved.optimizer, 50)[0])
    state, _, _ = restore_state(manager, abstract, shardings, step)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))


def test_unknown_key_on_the_command_line(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--config", "tiny", "--workdir", str(tmp_path), "train.stepz=3"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "unknown config key 'train.stepz'" in result.stderr and "Traceback" not in result.stderr


def test_missing_data_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        train(tiny(f"task.path={tmp_path}/nope.json"), tmp_path / "run", progress=False)


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    data = tmp_path / "train.jsonl"
    good = json.dumps({"question": "Is Tom a wumpus?", "steps": ["Tom is a wumpus."], "answer": "Tom is a wumpus."})
    data.write_text(good + "\n" + good + "\n{not json\n")
    with pytest.raises(DataError, match=r"train\.jsonl.*line 3"):
        train(tiny(f"task.path={data}"), tmp_path / "run", progress=False)


@pytest.mark.slow
def test_checkpoint_of_another_shape_is_refused_and_kept(tmp_path):
    train(tiny("train.steps=2", "train.checkpoint_every=1"), tmp_path, progress=False)
    before = checkpoint_files(tmp_path)
    config_before = (tmp_path / "config.json").read_text()
    with pytest.raises(ckpt.CheckpointMismatch, match=r"parameter .*d_model: 32 -> 48"):
        train(tiny("train.steps=4", "model.d_model=48"), tmp_path, progress=False)
    assert checkpoint_files(tmp_path) == before
    assert (tmp_path / "config.json").read_text() == config_before


@pytest.mark.slow
def test_eval_cli_on_own_split_a_file_and_errors(tmp_path, capsys):
    sys.path.insert(0, str(ROOT))
    import eval as eval_cli

    train(tiny("train.steps=3", "train.checkpoint_every=3"), tmp_path / "run", progress=False)
    again = train(tiny("train.steps=3", "train.checkpoint_every=3"), tmp_path / "run", progress=False)
    assert again["resumed_from"] == 3 and again["eval"]["n"] == 16  # a finished run only evaluates
    results = eval_cli.main(["--workdir", str(tmp_path / "run"), "--no-progress", "--max-new-tokens", "8"])
    for key in ("accuracy", "n", "mean_generated_tokens", "examples_per_s"):
        assert key in results
    assert results["n"] == 16 and results["data"] == "validation split"
    assert 0 < results["mean_generated_tokens"] <= 8
    assert {"index", "prediction", "correct"} <= set(results["records"][0])
    saved = json.loads((tmp_path / "run" / "eval_valid.json").read_text())
    assert saved["accuracy"] == results["accuracy"]
    # the one-line report: accuracy, cost per answer, and the one-statement guess to beat (ProsQA graphs)
    baseline = results["chain_analysis"]["no_path_baseline_accuracy"]
    printed = capsys.readouterr().out
    assert f"accuracy {100 * results['accuracy']:.1f}% (n=16)" in printed
    assert f"the no-path guess (one statement, no reasoning) scores {100 * baseline:.1f}%" in printed
    assert f'"no_path_baseline_accuracy": {baseline}' in printed

    data = tmp_path / "two.jsonl"
    rows = [{"question": "Every wumpus is a yumpus. Tom is a wumpus. Is Tom a yumpus or zumpus?",
             "steps": ["Tom is a wumpus.", "Every wumpus is a yumpus."], "answer": "Tom is a yumpus."}] * 2
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "res.json"
    results = eval_cli.main(["--workdir", str(tmp_path / "run"), "--data", str(data), "--out", str(out),
                             "--no-progress", "--max-new-tokens", "4", "--temperature", "1.0", "--top-p", "0.9"])
    assert results["n"] == 2 and out.exists()

    with pytest.raises(SystemExit) as exit_info:
        eval_cli.main(["--workdir", str(tmp_path / "nothing")])
    assert exit_info.value.code == 2
    assert "no config.json" in capsys.readouterr().err


def test_the_trace_counter_counts_one_trace_per_new_input_shape():
    import jax
    import jax.numpy as jnp

    from latent.train.loop import count_traces

    fn, traces = count_traces(lambda x: x * 2)
    jitted = jax.jit(fn)
    for length in (3, 3, 4, 3, 5, 4):
        jitted(jnp.ones(length))
    assert traces() == 3


@pytest.mark.slow
def test_the_validation_split_is_tokenized_once_per_run(tmp_path, monkeypatch):
    """The loop builds its Evaluator once: three evaluations, one tokenization of the prompts; a
    rerun of the finished run builds one to evaluate its last checkpoint."""
    from latent.data import pipeline

    tokenized, real = [], pipeline.tokenize_examples  # prompt_only: the Evaluator's (the batch source's are whole)
    monkeypatch.setattr(pipeline, "tokenize_examples",
                        lambda *a, **k: (tokenized.append(1) if k.get("prompt_only") else None) or real(*a, **k))
    cfg = tiny("train.steps=3", "train.eval_every=1", "train.checkpoint_every=3", "eval.max_new_tokens=4")
    summary = train(cfg, tmp_path, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "eval_accuracy" in r] == [1, 2, 3]
    assert len(tokenized) == 1 and summary["eval"]["n"] == 16
    again = train(cfg, tmp_path, progress=False)
    assert again["resumed_from"] == 3 and again["eval"]["n"] == 16 and len(tokenized) == 2


@pytest.mark.slow
def test_bfloat16_compute_trains_like_float32_with_float32_weights(tmp_path):
    """model.dtype=bfloat16 (the TPU setting; params stay float32): the run learns, its loss curve
    follows the float32 run's to bf16's precision, and what it saves and evaluates is float32
    weights. Also with remat, which changes the values only by bf16 rounding, and decodes in the
    engine's while_loop (remat once mutated Params there)."""
    from latent.run import load_run

    base = ("train.steps=60", "train.log_every=10", "train.checkpoint_every=60", "train.eval_every=60",
            "eval.n_examples=16")
    curves = {}
    for name, extra in (("f32", ()), ("bf16", ("model.dtype=bfloat16",)),
                        ("bf16_remat", ("model.dtype=bfloat16", "model.remat=full"))):
        result = train(tiny(*base, *extra), tmp_path / name, progress=False)
        curves[name] = losses(tmp_path / name)
        assert result["eval"]["n"] == 16
    steps = sorted(curves["f32"])
    for name in ("bf16", "bf16_remat"):
        assert sorted(curves[name]) == steps and all(np.isfinite(list(curves[name].values())))
        assert curves[name][steps[-1]] < 0.7 * curves[name][steps[0]]  # it learns
        for step in steps:  # bf16 activations: ~3 significant digits per op, a few percent over 60 steps
            assert abs(curves[name][step] - curves["f32"][step]) < 0.05 * curves["f32"][step], (name, step)
    # remat moves where XLA rounds intermediates to bf16 (measured 1.6e-4 relative); float32: 1e-6 (test_remat)
    np.testing.assert_allclose(list(curves["bf16_remat"].values()), list(curves["bf16"].values()), rtol=1e-3)
    run = load_run(tmp_path / "bf16")
    dtypes = {str(leaf.dtype) for leaf in jax.tree.leaves(run.params)}
    assert dtypes == {"float32"} and run.cfg.model.dtype == "bfloat16"
