"""What a newcomer hits on the command line: a damaged checkpoint, Ctrl-C during setup, a missing
data file, the closing report, and the training curves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from latent.run import checkpoint as ckpt
from latent.train.loop import train
from tests.conftest import tiny_run as tiny

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _cli(script, *args, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=env)


def _truncate_largest_array_file(step_dir: Path) -> Path:
    """A partial copy: the largest data file of the step's parameters cut to a fraction."""
    largest = max((p for p in (step_dir / ckpt.PARAMS_ITEM).rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    size = largest.stat().st_size
    with largest.open("r+b") as f:
        f.truncate(size // 10)
    return largest


@pytest.mark.slow
def test_damaged_latest_checkpoint_is_named_set_aside_and_training_resumes_from_the_previous(tmp_path):
    sys.path.insert(0, str(ROOT))
    import eval as eval_cli

    workdir = tmp_path / "run"
    train(tiny("train.steps=4", "train.checkpoint_every=2"), workdir, progress=False)
    assert ckpt.make_manager(workdir, tiny().checkpoint).all_steps() == [2, 4]
    damaged_file = _truncate_largest_array_file(workdir / ckpt.CHECKPOINT_DIR / "4")
    damaged_bytes = damaged_file.read_bytes()

    evaluated = _cli("eval.py", "--workdir", str(workdir), "--no-progress")
    assert evaluated.returncode == 2, evaluated.stderr[-3000:]
    assert "Traceback" not in evaluated.stderr
    assert evaluated.stderr.count("\n") == 1 and evaluated.stderr.startswith("error: checkpoint step 4 ")
    assert "damaged" in evaluated.stderr and "steps [2]" in evaluated.stderr
    assert damaged_file.read_bytes() == damaged_bytes  # eval only reads
    results = eval_cli.main(["--workdir", str(workdir), "--step", "2", "--no-progress", "--max-new-tokens", "4"])
    assert results["checkpoint_step"] == 2

    trained = _cli("train.py", "--config", "tiny", "--workdir", str(workdir), "--no-progress",
                   "train.steps=6", "train.checkpoint_every=2")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "Traceback" not in trained.stderr
    warnings = [line for line in trained.stderr.splitlines() if "damaged" in line]
    assert len(warnings) == 1 and "checkpoint step 4" in warnings[0] and "resuming from step 2" in warnings[0]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["resumed_from"] == 2 and summary["step"] == 6
    # the damaged step is kept, moved out of orbax's reach (no garbage collection, no overwrite)
    kept = workdir / ckpt.DAMAGED_DIR / "4" / damaged_file.relative_to(workdir / ckpt.CHECKPOINT_DIR / "4")
    assert kept.read_bytes() == damaged_bytes
    assert ckpt.make_manager(workdir, tiny().checkpoint).all_steps() == [4, 6]

    # the report: one headline line and where the full summary is, not pages of JSON
    lines = trained.stdout.strip().splitlines()
    assert len(lines) == 2, trained.stdout
    assert lines[0].startswith("accuracy ") and "generated tokens" in lines[0] and "reasoning tokens" in lines[0]
    assert "thoughts" in lines[0] and "step 6" in lines[0] and "wall " in lines[0]
    assert lines[1] == f"full report: {workdir / 'summary.json'}"


@pytest.mark.slow
def test_when_every_checkpoint_is_damaged_training_refuses_and_moves_nothing(tmp_path):
    workdir = tmp_path / "run"
    train(tiny("train.steps=2"), workdir, progress=False)
    assert ckpt.make_manager(workdir, tiny().checkpoint).all_steps() == [2]
    damaged_file = _truncate_largest_array_file(workdir / ckpt.CHECKPOINT_DIR / "2")
    damaged_bytes = damaged_file.read_bytes()

    trained = _cli("train.py", "--config", "tiny", "--workdir", str(workdir), "--no-progress", "train.steps=4")
    assert trained.returncode == 2, trained.stderr[-3000:]
    assert "Traceback" not in trained.stderr
    assert trained.stderr.count("\n") == 1 and trained.stderr.startswith("error: checkpoint step 2 "), trained.stderr
    assert "damaged" in trained.stderr and "to start afresh, move" in trained.stderr.lower()
    # nothing moved, nothing trained: the user decides
    assert damaged_file.read_bytes() == damaged_bytes
    assert ckpt.make_manager(workdir, tiny().checkpoint).all_steps() == [2]
    assert not (workdir / ckpt.DAMAGED_DIR).exists() and not (workdir / "summary.json").exists()


def test_a_read_error_that_is_not_about_the_files_is_not_taken_for_damage(tmp_path):
    class Unreadable:  # a manager whose reads are refused by the file system
        directory = tmp_path / ckpt.CHECKPOINT_DIR

        def restore(self, step, args=None):
            raise PermissionError(13, "Permission denied", str(self.directory / str(step)))

    with pytest.raises(PermissionError):
        ckpt.read_meta(Unreadable(), 2)
    with pytest.raises(PermissionError):
        ckpt.damage_of(Unreadable(), 2)


def test_a_missing_data_file_leaves_no_trace_in_a_fresh_workdir(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        train(tiny(f"task.path={tmp_path}/nope.json"), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    # and nothing that was there before is removed
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "notes.txt").write_text("mine")
    with pytest.raises(FileNotFoundError):
        train(tiny(f"task.path={tmp_path}/nope.json"), tmp_path / "old", progress=False)
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == ["notes.txt"]


@pytest.mark.slow
def test_ctrl_c_during_setup_is_one_line_without_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    workdir = tmp_path / "run"
    # 100,000 generated graphs: setup takes far longer than the 8 s before the interrupt
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "--config", "tiny", "--workdir", str(workdir), "--no-progress",
         "task.n_train=100000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
    )
    time.sleep(8)  # well past the imports (a Ctrl-C there is Python's own traceback), well before the data is ready
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    assert err.strip() == "interrupted before the first step; nothing saved"
    assert not workdir.exists()


def test_a_ctrl_c_that_lands_in_a_finaliser_still_stops_the_run_before_its_first_step(tmp_path):
    """Python ignores an exception raised in a __del__ or a gc callback; CI saw a Ctrl-C land in
    jax's gc callback while data was generated, and the run went on (exit 0, or past the test's
    timeout while it generated 100,000 graphs)."""
    from latent import signals

    class FinalizedDuringSetup:
        def __del__(self):  # what SIGINT does when it arrives while this runs
            signal.getsignal(signal.SIGINT)(signal.SIGINT, sys._getframe())

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGALRM)}
    signals.catch_ctrl_c()
    try:
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            FinalizedDuringSetup()  # collected at once: a KeyboardInterrupt raised in there would be "ignored"
            while time.monotonic() - started < 30:  # setup work that asks nothing: it must be interrupted
                time.sleep(0.01)
        assert time.monotonic() - started < 10
        with pytest.raises(KeyboardInterrupt):  # the same, lost for good (no timer): raised before anything is written
            signals._pending = True
            train(tiny("train.steps=3"), tmp_path / "run", progress=False)
        assert not (tmp_path / "run").exists()
    finally:
        signals.clear()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_ctrl_c_in_the_setup_of_a_resumed_run_names_its_last_checkpoint(tmp_path):
    sys.path.insert(0, str(ROOT))
    import train as train_cli

    assert train_cli.interrupted_in_setup(tmp_path / "new") == "interrupted before the first step; nothing saved"
    for name in ("2", "4", "6.orbax-checkpoint-tmp-1"):  # two saved steps and a save in progress
        (tmp_path / "run" / ckpt.CHECKPOINT_DIR / name).mkdir(parents=True)
    message = train_cli.interrupted_in_setup(tmp_path / "run")
    assert "nothing saved" not in message and "resumed" in message and "the last one is step 4" in message


def test_metrics_rows_carry_wall_clock_and_the_run_draws_its_curves(tmp_path):
    before = time.time()
    train(tiny("train.steps=3", "train.log_every=1", "train.eval_every=3"), tmp_path, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 3]  # three train rows, one eval row
    for row in rows:
        assert before <= row["time"] <= time.time()
        assert 0 <= row["elapsed_s"] <= row["time"] - before + 1e-3
    assert [r["elapsed_s"] for r in rows] == sorted(r["elapsed_s"] for r in rows)
    assert "eval_accuracy" in rows[-1]
    curves = tmp_path / "curves.png"
    assert curves.read_bytes()[:8] == PNG_MAGIC and curves.stat().st_size > 5000


def test_curves_keep_the_latest_row_of_a_step_trained_twice(tmp_path):
    from latent.eval.curves import read_rows, write_curves

    log = tmp_path / "metrics.jsonl"
    rows = [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}, {"step": 2, "eval_accuracy": 0.5},
            {"step": 2, "loss": 2.5}, {"step": 3, "loss": 1.0}]  # a resume from step 1 trained step 2 again
    log.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 4, "lo')  # and a torn last line
    kept = read_rows(log)
    assert [(r["step"], r.get("loss")) for r in kept] == [(1, 3.0), (2, 2.5), (2, None), (3, 1.0)]
    assert write_curves(log, tmp_path / "curves.png").read_bytes()[:8] == PNG_MAGIC
    assert write_curves(tmp_path / "absent.jsonl", tmp_path / "none.png") is None


def test_late_reports_of_a_failed_restores_reads_are_dropped_and_other_errors_still_print(tmp_path):
    """A failed restore's abandoned reads keep failing after its one-line error: tensorstore reports
    a read that lands late as an unraisable error of its own callback, or from a thread, naming the
    file (this printed 6 more lines after `error: ...` in a loaded CI run). Those are dropped; an
    error about anything else still prints."""
    damaged = tmp_path / "run" / "checkpoints" / "2"
    script = f"""
import sys, threading
from pathlib import Path
from latent.run import checkpoint as ckpt

damaged = Path({str(damaged)!r})
try:
    with ckpt._quiet_orbax(damaged):
        raise ValueError("the restore fails")
except ValueError:
    pass

def late_read():
    raise ValueError(f'DATA_LOSS: Error reading "{{damaged}}/params/": Requested byte range [1, 9) is not valid')

def other_failure():
    raise ValueError("an unrelated thread failed")

class LateCallback:  # not a coroutine (tensorstore's future callback): its error is unraisable
    def __init__(self, fail):
        self.fail = fail

    def __del__(self):
        self.fail()

def closed_loop():
    raise RuntimeError("Event loop is closed")

for target in (late_read, other_failure):
    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
LateCallback(late_read)
LateCallback(closed_loop)
print("done", file=sys.stderr)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"})
    assert result.returncode == 0, result.stderr
    assert "Requested byte range" not in result.stderr and "Event loop is closed" not in result.stderr, result.stderr
    assert "an unrelated thread failed" in result.stderr and result.stderr.rstrip().endswith("done")
