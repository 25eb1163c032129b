"""Multi-process runs equal one process: 2 local processes x 4 CPU devices (jax.distributed on
localhost, gloo collectives) against 1 process x 8 devices, on the same 8-way data mesh.

Each process is a subprocess with its own XLA_FLAGS (the device count is fixed when JAX starts)
that runs `train.py`'s main with the multi-process flags, records the shape of every global batch
it placed, and prints its summary; process 0 alone writes metrics.jsonl, whose losses are compared.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from latent.data.pipeline import bucket_length
from tests.conftest import xla_flags
from tests.train.test_loop import ROOT, losses

WORKER = """
import functools, json, sys
sys.path.insert(0, ROOT_DIR)
spec = json.loads(sys.argv[1])
import numpy as np
from latent import sharding
from latent.train import loop

placed = []  # the shape of every global batch this process placed, in order
shard_rows = set()  # the rows of each block this process placed on one of its devices
global_batch = sharding.global_batch

def recording(host_array, batch_sharding):
    placed.append(list(np.shape(host_array)))
    array = global_batch(host_array, batch_sharding)
    shard_rows.update(shard.data.shape[0] for shard in array.addressable_shards)
    return array

sharding.global_batch = recording
if spec["stop_at_step"] is not None:  # stop (checkpoint and return) there, as if interrupted
    loop.train = functools.partial(loop.train, stop_at_step=spec["stop_at_step"])
import jax
if spec["script"] == "eval":
    import eval
    results = eval.main(spec["argv"])
    report = dict(eval={k: v for k, v in results.items() if k != "records"})
else:
    import train
    summary = train.main(spec["argv"])
    report = dict(placed=placed, shard_rows=sorted(shard_rows), step=summary["step"], eval=summary.get("eval"), batch_shapes=summary["batch_shapes"],
                  stopped_by=summary.get("stopped_by"))
print("WORKER " + json.dumps(dict(process=jax.process_index(), processes=jax.process_count(), devices=jax.device_count(),
                                  **report)))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_train(workdir, overrides, *, processes: int, devices: int, config="tiny", stop_at_step=None) -> list[dict]:
    """train.py in `processes` local processes of `devices` CPU devices each; each one's report."""
    argv = ["--config", config, "--workdir", str(workdir), "--no-progress", *overrides]
    return run_processes("train", argv, processes=processes, devices=devices, stop_at_step=stop_at_step)


def run_processes(script: str, argv, *, processes: int, devices: int, stop_at_step=None, worker=WORKER) -> list[dict]:
    """`script` (train or eval)'s main with `argv` in `processes` local processes of `devices` CPU
    devices each (`worker`: the program each runs, given its spec as argv[1]); each one's report."""
    return reports_of(start_processes(script, argv, processes=processes, devices=devices, stop_at_step=stop_at_step,
                                      worker=worker), devices)


def start_processes(script: str, argv, *, processes: int, devices: int, stop_at_step=None,
                    worker=WORKER) -> list[subprocess.Popen]:
    port = free_port()
    env = dict(os.environ, XLA_FLAGS=xla_flags(f"--xla_force_host_platform_device_count={devices}"),
               JAX_PLATFORMS="cpu")
    workers = []
    for index in range(processes):
        flags = ([] if processes == 1 else
                 ["--coordinator", f"localhost:{port}", "--num-processes", str(processes), "--process-id", str(index)])
        spec = json.dumps({"script": script, "argv": [*argv, *flags], "stop_at_step": stop_at_step})
        workers.append(subprocess.Popen([sys.executable, "-c", worker.replace("ROOT_DIR", repr(str(ROOT))), spec], cwd=ROOT, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return workers


def reports_of(workers: list[subprocess.Popen], devices: int, timeout: float = 300) -> list[dict]:
    """Each worker's report, once all have exited (status 0) within `timeout` seconds each."""
    processes, reports = len(workers), []
    try:
        for worker in workers:
            out, err = worker.communicate(timeout=timeout)
            assert worker.returncode == 0, err[-3000:]
            reports.append(json.loads(next(line for line in out.splitlines() if line.startswith("WORKER "))[7:]))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    assert [r["process"] for r in reports] == list(range(processes))
    assert all(r["processes"] == processes and r["devices"] == processes * devices for r in reports)
    return reports


def logged_once_per_step(workdir, steps: int) -> dict[int, float]:
    """The losses of metrics.jsonl, checking each step has one row: one process wrote it."""
    rows = [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    logged = [r["step"] for r in rows if "loss" in r]
    assert logged == list(range(1, steps + 1)), logged
    return losses(workdir)


def max_difference(a: dict, b: dict) -> float:
    assert sorted(a) == sorted(b)
    return max(abs(a[k] - b[k]) for k in a)


def alternating_lengths_data(directory: Path) -> tuple[Path, Path]:
    """Training examples whose even items are short (one 32-token bucket) and odd items long (the
    64 bucket): a process padding only its own records (every other one, as records were once
    split) or its own half of a batch could pick another bucket than the other process."""
    words = [f"w{i}" for i in range(12)]

    def example(i: int, long: bool) -> dict:
        n = 24 if long else 3
        question = " ".join(words[(i + j) % len(words)] for j in range(n)) + f" q{i % 7} ?"
        return {"question": question, "steps": [f"{words[i % 12]} is {words[(i + 1) % 12]} ."] * (3 if long else 1),
                "answer": words[(i + 2) % 12]}

    train_path, valid_path = directory / "train.jsonl", directory / "valid.jsonl"
    train_path.write_text("".join(json.dumps(example(i, long=i % 2 == 1)) + "\n" for i in range(64)))
    valid_path.write_text("".join(json.dumps(example(100 + i, long=i % 2 == 1)) + "\n" for i in range(4)))
    return train_path, valid_path


MESHES = {  # name: (overrides, the rows of each block a process places of a global batch of 8)
    "data8": (["mesh.data=8"], 1),  # the batch split over both processes' devices: 1 row each
    # the batch not split (data * fsdp = 1): each process places all of it on each of its devices,
    # and the vocabulary and MLP weights are split over the 8 devices of both processes
    "tensor8": (["mesh.data=1", "mesh.tensor=8"], 8),
}


@pytest.mark.slow
@pytest.mark.parametrize("mesh", list(MESHES))
def test_two_processes_equal_one_for_text_sft_with_one_bucket_per_global_batch(tmp_path, mesh):
    train_path, valid_path = alternating_lengths_data(tmp_path)
    mesh_overrides, rows = MESHES[mesh]
    overrides = [f"task.path={train_path}", f"task.valid_path={valid_path}", "train.steps=20", "train.log_every=1",
                 "train.checkpoint_every=20", "eval.max_new_tokens=8", "model.n_layers=1", *mesh_overrides]
    one = run_train(tmp_path / "one", overrides, processes=1, devices=8)
    two = run_train(tmp_path / "two", overrides, processes=2, devices=4)
    difference = max_difference(logged_once_per_step(tmp_path / "one", 20), logged_once_per_step(tmp_path / "two", 20))
    print(f"text SFT ({mesh}), 20 steps: max |loss(2 processes) - loss(1 process)| = {difference:.2e}")
    assert difference < 1e-5
    # every process placed the same global batches, so no process padded to its own bucket; and the
    # records were chosen so that split by process they would have (short: 32, long: 64)
    assert two[0]["placed"] == two[1]["placed"] == one[0]["placed"]
    assert len(two[0]["placed"]) == 20 * 3  # tokens, loss_mask, padding_mask per step
    assert two[0]["shard_rows"] == two[1]["shard_rows"] == one[0]["shard_rows"] == [rows]
    rows = [json.loads(line) for line in train_path.read_text().splitlines()]
    lengths = [len(" ".join([r["question"], *r["steps"], r["answer"]]).split()) for r in rows]
    assert bucket_length(max(lengths[0::2]), 256) != bucket_length(max(lengths[1::2]), 256)
    # the evaluation inside train() ran on both processes, from the params gathered whole, alike
    assert same_evaluation(two[0]["eval"], two[1]["eval"]) and same_evaluation(two[0]["eval"], one[0]["eval"])
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["step"] == 20


def same_evaluation(a: dict, b: dict) -> bool:
    keys = ("accuracy", "n", "mean_generated_tokens", "mean_reasoning_tokens", "mean_latent_steps")
    return all(a[k] == b[k] for k in keys)


# 40 examples / batch 8: 5 steps per epoch, one stage per epoch, so 12 steps cross two stage
# changes (at steps 5 and 10), which a clock counting per-process batches would put at 10 and 20.
LATENT = ["task.n_train=40", "train.batch_size=8", "train.steps=12", "train.log_every=1", "train.checkpoint_every=12",
          "latent.epochs_per_stage=1", "model.n_layers=1", "eval.max_new_tokens=8"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["coconut", "switch"])
def test_two_processes_equal_one_for_latent_runs_across_stage_changes(tmp_path, method):
    overrides = LATENT + ({"coconut": ["latent.mode=coconut", "latent.max_latent_stage=2", "latent.reset_optimizer=true"],
                           "switch": ["latent.mode=switch", "latent.switch_span=2"]}[method])
    one = run_train(tmp_path / "one", overrides, processes=1, devices=8)
    two = run_train(tmp_path / "two", overrides, processes=2, devices=4)
    difference = max_difference(logged_once_per_step(tmp_path / "one", 12), logged_once_per_step(tmp_path / "two", 12))
    print(f"{method}, 12 steps over stages 0-2: max |loss(2 processes) - loss(1 process)| = {difference:.2e}")
    assert difference < 1e-5
    assert two[0]["placed"] == two[1]["placed"] == one[0]["placed"]
    # the stage clock counts global batches: K (the stage's latent columns) moves at steps 5 and 10
    assert [k for _, k, _ in two[0]["batch_shapes"]] == [0, 1, 2]
    assert latent_columns(two[0], steps=12) == [0] * 5 + [1] * 5 + [2] * 2
    assert same_evaluation(two[0]["eval"], two[1]["eval"]) and same_evaluation(two[0]["eval"], one[0]["eval"])


@pytest.mark.slow
def test_two_processes_equal_one_for_rl_started_from_an_sft_run(tmp_path):
    """method=rl with train.init_from: both processes read the start's weights, sample the same
    rollouts (one global batch of B * G rows over the 8-way data mesh) and take the same updates
    as one process: equal losses and rewards, and each process's rollouts were placed alike."""
    run_train(tmp_path / "sft", ["train.steps=6", "train.checkpoint_every=6", "model.n_layers=1", "task.n_train=32",
                                 "eval.max_new_tokens=8", "eval.n_examples=8"], processes=1, devices=8)
    overrides = ["method=rl", f"train.init_from={tmp_path / 'sft'}", "rl.group_size=2", "rl.prompts_per_step=4",
                 "rl.max_new_tokens=8", "rl.inner_epochs=2", "task.n_train=32", "train.steps=4", "train.log_every=1",
                 "train.checkpoint_every=4", "eval.max_new_tokens=8", "eval.n_examples=8", "mesh.data=8"]
    one = run_train(tmp_path / "one", overrides, processes=1, devices=8)
    two = run_train(tmp_path / "two", overrides, processes=2, devices=4)
    metrics = {name: {r["step"]: r for r in map(json.loads, (tmp_path / name / "metrics.jsonl").read_text().splitlines())
                      if "loss" in r} for name in ("one", "two")}
    assert sorted(metrics["one"]) == sorted(metrics["two"]) == [1, 2, 3, 4]
    for step, row in metrics["one"].items():
        other = metrics["two"][step]
        assert other["reward_mean"] == row["reward_mean"] and other["generated_tokens"] == row["generated_tokens"], step
        assert abs(other["loss"] - row["loss"]) < 1e-5, (step, other["loss"], row["loss"])
    print("RL from an SFT run, 4 steps: max |loss(2) - loss(1)| = "
          f"{max(abs(metrics['two'][s]['loss'] - metrics['one'][s]['loss']) for s in metrics['one']):.2e}")
    assert two[0]["placed"] and two[0]["placed"] == two[1]["placed"] == one[0]["placed"]
    assert same_evaluation(two[0]["eval"], two[1]["eval"]) and same_evaluation(two[0]["eval"], one[0]["eval"])


def latent_columns(report, steps: int) -> list[int]:
    """K of each step's batch: the width of its latent_mask [B, K], the first array placed (a
    batch's arrays are placed in the order of their sorted keys)."""
    per_step = len(report["placed"]) // steps
    return [report["placed"][step * per_step][1] for step in range(steps)]


@pytest.mark.slow
def test_a_checkpoint_of_two_processes_resumes_on_one_and_evaluates_on_two(tmp_path):
    """2 processes train 6 of 12 steps and checkpoint; 1 process (8 devices) resumes it to the
    losses of an uninterrupted 1-process run. Then eval.py on 2 processes (each loads the
    checkpoint onto its own first device, decodes its share of the batches and gathers the others'
    records; process 0 writes) equals eval.py on 1."""
    overrides = ["train.steps=12", "train.log_every=1", "train.checkpoint_every=12", "eval.max_new_tokens=8",
                 "eval.n_examples=8", "model.n_layers=1"]
    run_train(tmp_path / "straight", overrides, processes=1, devices=8)
    first = run_train(tmp_path / "resumed", overrides, processes=2, devices=4, stop_at_step=6)
    assert [r["step"] for r in first] == [6, 6]
    second = run_train(tmp_path / "resumed", overrides, processes=1, devices=8)
    assert second[0]["step"] == 12
    difference = max_difference(logged_once_per_step(tmp_path / "straight", 12),
                                logged_once_per_step(tmp_path / "resumed", 12))
    print(f"resume on 1 process of a 2-process checkpoint: max |loss difference| = {difference:.2e}")
    assert difference < 1e-5

    # 3 batches of 3, 3 and 2 examples: process 0 decodes batches 0 and 2, process 1 batch 1
    argv = ["--workdir", str(tmp_path / "resumed"), "--no-progress", "--max-new-tokens", "8", "--n", "8",
            "--batch-size", "3"]
    alone = run_processes("eval", [*argv, "--out", str(tmp_path / "one.json")], processes=1, devices=8)
    both = run_processes("eval", [*argv, "--out", str(tmp_path / "two.json")], processes=2, devices=4)
    assert same_evaluation(both[0]["eval"], both[1]["eval"]) and same_evaluation(both[0]["eval"], alone[0]["eval"])
    assert [both[0]["eval"]["decoded_on_this_process"], both[1]["eval"]["decoded_on_this_process"]] == [5, 3]
    written = json.loads((tmp_path / "two.json").read_text())
    records_alone = json.loads((tmp_path / "one.json").read_text())["records"]
    assert written["checkpoint_step"] == 12 and [r["index"] for r in written["records"]] == list(range(8))
    assert [(r["generated"], r["correct"]) for r in written["records"]] == [(r["generated"], r["correct"]) for r in records_alone]


@pytest.mark.slow
def test_a_sigterm_to_one_process_stops_both_at_the_same_step_with_a_checkpoint(tmp_path):
    """A preemption signal may reach one host only: the processes agree at the next log step,
    all save that step's checkpoint together and exit 0."""
    import signal
    import time

    argv = ["--config", "tiny", "--workdir", str(tmp_path), "--no-progress", "train.steps=400", "train.log_every=1",
            "train.checkpoint_every=400", "model.n_layers=1"]
    workers = start_processes("train", argv, processes=2, devices=4)
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3) and time.monotonic() < deadline:
        assert all(w.poll() is None for w in workers), workers[0].stderr.read()[-3000:]
        time.sleep(0.2)
    workers[1].send_signal(signal.SIGTERM)
    reports = reports_of(workers, devices=4)
    assert [r["stopped_by"] for r in reports] == ["stop requested on another process", "SIGTERM"]
    step = reports[0]["step"]
    assert reports[1]["step"] == step < 400
    assert (tmp_path / "checkpoints" / str(step)).is_dir()
