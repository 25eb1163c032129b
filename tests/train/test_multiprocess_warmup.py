"""The Abstract-CoT warm-up (abstract.rounds > 0) on 2 local processes x 4 CPU devices equals it on
1 process x 8 devices: the same span files byte for byte, each phase's losses within 1e-5; one
process writes the warm-up's own files, and the span sampling is split over the processes.

Each process runs `train.py`'s main (tests/train/test_multiprocess.py starts them) and records
which of the warm-up's files it wrote (write_text, or a .tmp renamed over one) and how many
prompts it decoded while sampling spans.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.train.test_multiprocess import logged_once_per_step, reports_of, same_evaluation, start_processes

WARMUP_WORKER = """
import json, pathlib, sys
sys.path.insert(0, ROOT_DIR)
spec = json.loads(sys.argv[1])

written = []  # every path this process wrote with write_text or renamed a file onto
write_text, rename = pathlib.Path.write_text, pathlib.Path.rename
def recording_write_text(self, *args, **kwargs):
    written.append(str(self))
    return write_text(self, *args, **kwargs)
def recording_rename(self, target):
    written.append(str(target))
    return rename(self, target)
pathlib.Path.write_text, pathlib.Path.rename = recording_write_text, recording_rename

from latent.methods.abstract_cot import warmup
decoded = []  # the rows of every batch this process decoded while sampling spans
make_generate = warmup.make_generate
def counting_make_generate(*args, **kwargs):
    generate = make_generate(*args, **kwargs)
    def counting(params, tokens, *rest):
        decoded.append(int(tokens.shape[0]))
        return generate(params, tokens, *rest)
    return counting
warmup.make_generate = counting_make_generate

import jax
import train
summary = train.main(spec["argv"])
print("WORKER " + json.dumps(dict(process=jax.process_index(), processes=jax.process_count(), devices=jax.device_count(),
                                  written=written, decoded=sum(decoded), phases=summary["phases"],
                                  stopped_by=summary.get("stopped_by"), stopped_at=summary.get("stopped_at"))))
"""

STEPS = 4  # per phase: one epoch of the 32 training questions in batches of 8
PHASES = [(r, phase) for r in (1, 2) for phase in ("bottleneck", "distill")]
SPAN_FILES = ["valid.jsonl", "round1/distill_spans.jsonl", "round2/bottleneck_spans.jsonl", "round2/distill_spans.jsonl"]


def questions_file(directory: Path) -> Path:
    """40 ProsQA-style questions: 32 to train on, 8 held out to <workdir>/valid.jsonl by the warm-up."""
    from latent.data.tasks import get_task

    path = directory / "questions.jsonl"
    path.write_text("".join(json.dumps({"question": e.question, "steps": list(e.steps), "answer": e.answer}) + "\n"
                            for e in get_task("prosqa_small").generate(40, seed=3)))
    return path


def overrides(data: Path) -> list[str]:
    return [f"task.path={data}", "task.valid_fraction=0.2", "abstract.rounds=2", "abstract.num_tokens=8",
            "abstract.max_tokens=4", f"train.steps={STEPS}", "train.log_every=1", f"train.checkpoint_every={STEPS}",
            "train.length_bucket=256", "model.n_layers=1", "mesh.data=8", "eval.batch_size=8", "eval.max_new_tokens=8"]


def run_warmup(workdir: Path, data: Path, *, processes: int, devices: int, extra=()) -> list[dict]:
    argv = ["--config", "tiny", "--workdir", str(workdir), "--no-progress", *overrides(data), *extra]
    workers = start_processes("train", argv, processes=processes, devices=devices, worker=WARMUP_WORKER)
    return reports_of(workers, devices, timeout=1200)


def warmup_files_written(report: dict, workdir: Path) -> list[str]:
    """The warm-up's own files among those a process wrote: in the workdir or a round directory
    (config.json, valid.jsonl, warmup.json, span files, their .tmp and .source.json), not in a phase's run."""
    names = []
    for path in map(Path, report["written"]):
        relative = path.relative_to(workdir) if path.is_relative_to(workdir) else None
        if relative is not None and (len(relative.parts) == 1 or
                                     (len(relative.parts) == 2 and relative.parts[0].startswith("round"))):
            names.append(relative.as_posix())
    return names


def phase_losses(workdir: Path) -> dict[tuple[int, str], dict[int, float]]:
    return {(r, phase): logged_once_per_step(workdir / f"round{r}" / phase, STEPS) for r, phase in PHASES}


def assert_same_warmup(one: Path, two: Path) -> None:
    """The span files byte for byte (their source records up to the workdir), each phase's losses within 1e-5."""
    for name in SPAN_FILES:
        assert (two / name).read_bytes() == (one / name).read_bytes(), name
        source = (one / name).with_name(Path(name).stem + ".source.json")
        if source.exists():
            other = (two / name).with_name(source.name)
            assert other.read_text() == source.read_text().replace(str(one), str(two)), name
    losses_one, losses_two = phase_losses(one), phase_losses(two)
    for key in losses_one:
        difference = max(abs(losses_two[key][s] - losses_one[key][s]) for s in losses_one[key])
        print(f"round {key[0]} {key[1]}: max |loss(2 processes) - loss(1 process)| = {difference:.2e}")
        assert difference < 1e-5, key
    summary = json.loads((two / "warmup.json").read_text())
    assert [(p["round"], p["phase"], p["step"]) for p in summary["phases"]] == [(r, ph, STEPS) for r, ph in PHASES]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The reference: the warm-up on 1 process x 8 devices (its data file and workdir)."""
    directory = tmp_path_factory.mktemp("warmup_one")
    data = questions_file(directory)
    report, = run_warmup(directory / "run", data, processes=1, devices=8)
    return data, directory / "run", report


@pytest.mark.slow
def test_two_process_warmup_equals_one_process(tmp_path, one_process):
    data, one, alone = one_process
    two = run_warmup(tmp_path / "run", data, processes=2, devices=4)
    assert_same_warmup(one, tmp_path / "run")
    # process 0 alone wrote the warm-up's files (every process writing them races on the .tmp rename)
    written = [warmup_files_written(report, tmp_path / "run") for report in two]
    assert "round2/distill_spans.jsonl" in written[0] and "warmup.json" in written[0]
    assert written[1] == []
    # the 3 samplings (32 prompts each) were split over the processes, batch j on process j mod 2
    assert alone["decoded"] == 3 * 32
    assert [report["decoded"] for report in two] == [3 * 16, 3 * 16]
    assert same_evaluation(two[0]["phases"][-1]["eval"], alone["phases"][-1]["eval"])
    assert same_evaluation(two[1]["phases"][-1]["eval"], alone["phases"][-1]["eval"])


@pytest.mark.slow
def test_two_process_warmup_stopped_by_its_time_limit_resumes(tmp_path, one_process):
    """Stopped by the time limit after the first step of round 1's bottleneck, on both processes
    together; rerun, it finishes as the uninterrupted warm-up did; run again, it reuses every phase
    and span file (nothing decoded, no span file rewritten)."""
    data, one, _ = one_process
    workdir = tmp_path / "run"
    stopped = run_warmup(workdir, data, processes=2, devices=4, extra=["train.time_limit_minutes=0.00001"])
    assert [r["stopped_by"] for r in stopped] == ["time_limit", "time_limit"]
    assert [r["stopped_at"] for r in stopped] == [{"round": 1, "phase": "bottleneck", "step": 1, "steps": STEPS}] * 2
    assert not (workdir / "round1" / "distill").exists()
    resumed = run_warmup(workdir, data, processes=2, devices=4)
    assert [r["stopped_by"] for r in resumed] == [None, None]
    assert_same_warmup(one, workdir)
    before = {p: p.stat().st_mtime_ns for p in workdir.rglob("*_spans.jsonl")}
    again = run_warmup(workdir, data, processes=2, devices=4)
    assert [r["decoded"] for r in again] == [0, 0]
    assert [[p["step"] for p in r["phases"]] for r in again] == [[STEPS] * 4] * 2
    assert {p: p.stat().st_mtime_ns for p in workdir.rglob("*_spans.jsonl")} == before
