"""Abstract-CoT training end to end on the `tiny` preset: init_from, the bottleneck run, and the
T-round warm-up (phases chained by their weights, on-policy spans, resume without resampling)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from latent.config import ConfigError
from latent.config_io import apply_overrides, load_preset
from latent.data.special_tokens import abstract_tokens
from latent.data.splits import load_splits
from latent.methods.abstract_cot.warmup import warmup
from latent.run import load_run
from latent.train.loop import train

ABSTRACT = ["abstract.num_tokens=8", "abstract.max_tokens=4"]
# One layer and one batch width (every batch padded to task.max_len=256): the warm-up's wiring
# does not depend on depth or padding, and each phase traces and compiles one train step, not two.
SMALL = ["model.n_layers=1", "train.length_bucket=256"]


def tiny(*overrides):
    return apply_overrides(load_preset("tiny"), ["task.n_train=48", "task.n_valid=8", *ABSTRACT, *SMALL, *overrides])


def _params(workdir):
    return jax.tree.leaves(load_run(workdir).params)


def test_init_from_starts_from_the_other_runs_weights_and_tokenizer(tmp_path):
    train(tiny("train.steps=4", "task.format=abstract_bottleneck"), tmp_path / "a", progress=False)
    # lr 0: the one step leaves the weights as they were loaded
    train(tiny("train.steps=1", "task.format=abstract", "optimizer.lr=0.0", f"train.init_from={tmp_path / 'a'}"),
          tmp_path / "b", progress=False)
    for a, b in zip(_params(tmp_path / "a"), _params(tmp_path / "b")):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert (tmp_path / "a" / "tokenizer.json").read_text() == (tmp_path / "b" / "tokenizer.json").read_text()
    with pytest.raises(ConfigError, match="train.init_from='nowhere' is not a run directory"):
        train(tiny("train.init_from=nowhere"), tmp_path / "c", progress=False)


@pytest.mark.slow
def test_two_round_warmup_chains_phases_samples_valid_spans_and_resumes(tmp_path):
    cfg = tiny("train.steps=4", "abstract.rounds=2", "task.n_valid=4")
    summary = warmup(cfg, tmp_path, progress=False)
    phases = [(p["round"], p["phase"]) for p in summary["phases"]]
    assert phases == [(1, "bottleneck"), (1, "distill"), (2, "bottleneck"), (2, "distill")]
    assert summary["final"] == str(tmp_path / "round2" / "distill")
    expected_init = [None, "round1/bottleneck", "round1/distill", "round2/bottleneck"]
    for phase, init in zip(summary["phases"], expected_init):
        run_cfg = json.loads((Path(phase["workdir"]) / "config.json").read_text())
        assert run_cfg["train"]["init_from"] == (None if init is None else str(tmp_path / init))
        assert run_cfg["task"]["format"] == ("abstract" if phase["phase"] == "distill" else "abstract_bottleneck")
    allowed = set(abstract_tokens(8))
    for name in ("round1/distill_spans.jsonl", "round2/bottleneck_spans.jsonl", "round2/distill_spans.jsonl"):
        rows = [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]
        assert len(rows) > 24  # nearly every training example got a span
        assert all(1 <= len(r["abstract"]) <= 4 and set(r["abstract"]) <= allowed for r in rows)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*_spans.jsonl")}
    again = warmup(cfg, tmp_path, progress=False)  # finished: nothing is sampled or trained again
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*_spans.jsonl")} == before
    assert [p["step"] for p in again["phases"]] == [4, 4, 4, 4]

    final_eval = summary["phases"][-1]["eval"]  # the distilled model, decoding from x alone
    assert final_eval["mean_reasoning_tokens"] <= 4 and final_eval["codebook"]["vocabulary_size"] == 8
    assert {t for t, _ in final_eval["codebook"]["top"]} <= allowed


@pytest.mark.parametrize("distill_z, distill_reads_chain", [("prompt", False), ("teacher", True)])
def test_distill_spans_are_sampled_from_the_prompt_or_from_the_chain_reader(tmp_path, monkeypatch, distill_z,
                                                                             distill_reads_chain):
    """The phase wiring alone (training and sampling stubbed): which model samples each span file,
    and whether it sees the chain c."""
    import latent.methods.abstract_cot.warmup as abstract_train
    import latent.train.loop as loop

    sampled = []

    def fake_sample_spans(run_dir, examples, *, with_cot, seed, progress=True):
        sampled.append((Path(run_dir).relative_to(tmp_path).as_posix(), with_cot))
        return [["<abs_0>"]] * len(examples)

    monkeypatch.setattr(abstract_train, "sample_spans", fake_sample_spans)
    monkeypatch.setattr(loop, "train", lambda cfg, workdir, progress=True: {"step": cfg.train.steps})
    warmup(tiny("train.steps=1", "abstract.rounds=2", f"abstract.distill_z={distill_z}"), tmp_path, progress=False)
    assert sampled == [
        ("round1/bottleneck", distill_reads_chain),  # round 1 distill
        ("round1/distill", True),  # round 2 bottleneck: always pi(z | x, c)
        ("round2/bottleneck", distill_reads_chain),  # round 2 distill
    ]
    with pytest.raises(ConfigError, match="abstract.distill_z='x' is not allowed"):
        tiny("abstract.distill_z=x")


def test_keyed_round1_trains_the_first_bottleneck_on_keyed_spans(tmp_path, monkeypatch):
    import latent.methods.abstract_cot.warmup as abstract_train
    import latent.train.loop as loop
    from latent.methods.abstract_cot.layouts import keyed_abstract

    trained = []
    monkeypatch.setattr(abstract_train, "sample_spans", lambda run_dir, examples, **kw: [["<abs_0>"]] * len(examples))
    monkeypatch.setattr(loop, "train", lambda cfg, workdir, progress=True: trained.append(cfg) or {"step": cfg.train.steps})
    cfg = tiny("train.steps=1", "abstract.rounds=1", "abstract.round1=keyed", "abstract.num_tokens=64")
    warmup(cfg, tmp_path, progress=False)
    span_file = tmp_path / "round1" / "bottleneck_spans.jsonl"
    assert trained[0].task.path == str(span_file)
    examples = load_splits(cfg.replace(task=dataclasses.replace(cfg.task, format="cot")))[0]
    rows = [json.loads(line) for line in span_file.read_text().splitlines()]
    assert [r["abstract"] for r in rows] == keyed_abstract(examples, 64, 4, cfg.train.seed)
    assert [r["question"] for r in rows] == [e.question for e in examples]


def test_each_phase_trains_for_its_own_step_count(tmp_path, monkeypatch):
    import latent.methods.abstract_cot.warmup as abstract_train
    import latent.train.loop as loop

    trained = []
    monkeypatch.setattr(abstract_train, "sample_spans", lambda run_dir, examples, **kw: [["<abs_0>"]] * len(examples))
    monkeypatch.setattr(loop, "train", lambda cfg, workdir, progress=True: trained.append(cfg) or {"step": cfg.train.steps})
    warmup(tiny("train.steps=7", "abstract.rounds=2", "abstract.distill_steps=3"), tmp_path, progress=False)
    assert [c.train.steps for c in trained] == [7, 3, 7, 3]  # bottleneck_steps 0: train.steps
    with pytest.raises(ConfigError, match="abstract.bottleneck_steps must be an int >= 0"):
        tiny("abstract.bottleneck_steps=-1")


def test_eval_of_a_keyed_warmup_reports_how_often_z_names_the_chain(tmp_path):
    from latent.data.splits import load_splits
    from latent.eval.run import evaluate_workdir
    from latent.methods.abstract_cot.analyses import keyed_spans_of
    from latent.methods.abstract_cot.layouts import keyed_abstract

    cfg = tiny("train.steps=2", "abstract.rounds=1", "abstract.round1=keyed", "abstract.num_tokens=64", "task.n_valid=4")
    warmup(cfg, tmp_path, progress=False)
    result = evaluate_workdir(tmp_path / "round1" / "distill", progress=False)
    train_examples, valid, _ = load_splits(cfg.replace(task=dataclasses.replace(cfg.task, format="cot")))
    keys = keyed_abstract(valid, 64, 4, cfg.train.seed, key_examples=train_examples)
    spans = [r["abstract"] for r in result["records"]]
    agreement = result["key_agreement"]
    assert agreement["n"] == 4
    assert agreement["exact_share"] == np.mean([s == keys[r["index"]] for s, r in zip(spans, result["records"])])
    assert len(agreement["position_agreement"]) == max(len(k) for k in keys)
    # the distill run's own config names a span file as its data; the key comes from the warm-up's
    distill_cfg = load_run(tmp_path / "round1" / "distill").cfg
    assert distill_cfg.task.path.endswith("distill_spans.jsonl")
    assert keyed_spans_of(tmp_path / "round1" / "distill", distill_cfg, valid) == keys
    plain = cfg.replace(abstract=dataclasses.replace(cfg.abstract, round1="random"))
    assert keyed_spans_of(tmp_path / "round1" / "distill", plain, valid) is None
    # the bottleneck phase also reports whether its answer reads z or the chain; distill runs do not
    bottleneck = evaluate_workdir(tmp_path / "round1" / "bottleneck", progress=False)
    fully_keyed = sum(set(k) <= set(abstract_tokens(64)) for k in keys)  # <unkeyed> spans are left out
    assert 0 < fully_keyed < 4  # both kinds occur here
    assert bottleneck["chain_leak"]["n"] == fully_keyed and 0.0 <= bottleneck["chain_leak"]["own"] <= 1.0
    assert "chain_leak" not in result


def test_a_phase_cut_short_stops_the_warmup_and_its_spans_are_never_reused(tmp_path, monkeypatch):
    """A phase stopped by the time limit (or a signal) is unfinished: the warm-up stops there, and
    a span file sampled from a model other than the finished previous phase is sampled again."""
    import latent.methods.abstract_cot.warmup as abstract_train
    import latent.train.loop as loop

    sampled, trained = [], []

    def fake_sample_spans(run_dir, examples, *, with_cot, seed, progress=True):
        sampled.append(Path(run_dir).relative_to(tmp_path).as_posix())
        return [["<abs_1>"]] * len(examples)

    def time_limited(cfg, workdir, progress=True):  # every phase runs out of time after 2 of its 5 steps
        trained.append(Path(workdir).relative_to(tmp_path).as_posix())
        return {"step": 2, "stopped_by": "time_limit"}

    monkeypatch.setattr(abstract_train, "sample_spans", fake_sample_spans)
    monkeypatch.setattr(loop, "train", time_limited)
    cfg = tiny("train.steps=5", "abstract.rounds=1", "train.time_limit_minutes=1")
    stopped = warmup(cfg, tmp_path, progress=False)
    assert trained == ["round1/bottleneck"] and sampled == []  # nothing sampled from the unfinished model
    assert stopped["stopped_by"] == "time_limit" and "final" not in stopped
    assert stopped["stopped_at"] == {"round": 1, "phase": "bottleneck", "step": 2, "steps": 5}

    # a span file left from an unfinished model (an older warm-up), with no record of its model
    stale = tmp_path / "round1" / "distill_spans.jsonl"
    stale.write_text(json.dumps({"question": "q", "steps": [], "answer": "a", "abstract": ["<abs_0>"]}) + "\n")
    monkeypatch.setattr(loop, "train", lambda cfg, workdir, progress=True: trained.append(cfg) or {"step": cfg.train.steps})
    finished = warmup(cfg, tmp_path, progress=False)
    assert "stopped_by" not in finished and finished["final"] == str(tmp_path / "round1" / "distill")
    assert sampled == ["round1/bottleneck"]  # the stale file was sampled again, from the finished phase
    assert all(json.loads(line)["abstract"] == ["<abs_1>"] for line in stale.read_text().splitlines())
    record = json.loads((tmp_path / "round1" / "distill_spans.source.json").read_text())
    assert record == {"sampled_by": str(tmp_path / "round1" / "bottleneck"), "step": 5}

    # the same file, now from the finished model, is reused by a rerun
    warmup(cfg, tmp_path, progress=False)
    assert sampled == ["round1/bottleneck"]


@pytest.mark.slow
def test_time_limited_phase_resumes_on_rerun(tmp_path):
    cfg = tiny("train.steps=3", "abstract.rounds=1")
    stopped = warmup(cfg.replace(train=dataclasses.replace(cfg.train, time_limit_minutes=0.00001)), tmp_path,
                     progress=False)
    assert stopped["stopped_at"]["phase"] == "bottleneck" and stopped["stopped_at"]["step"] == 1
    assert not (tmp_path / "round1" / "distill").exists()
    finished = warmup(cfg, tmp_path, progress=False)
    assert [p["step"] for p in finished["phases"]] == [3, 3]
    assert json.loads((tmp_path / "round1" / "distill_spans.source.json").read_text())["step"] == 3
    resumed = json.loads((tmp_path / "round1" / "bottleneck" / "metrics.jsonl").read_text().splitlines()[-1])
    assert resumed["step"] == 3


def test_phases_on_span_files_validate_on_the_part_held_out_of_the_users_file(tmp_path, monkeypatch):
    """A warm-up on `task.path`: every phase validates on the same held-out questions, never on a
    slice of a span file (span files hold training questions only); round 1 starts from
    train.init_from."""
    import latent.methods.abstract_cot.warmup as abstract_train
    import latent.train.loop as loop
    from latent.data.tasks import get_task, load_examples

    data = tmp_path / "mine.jsonl"
    data.write_text("".join(json.dumps({"question": e.question, "steps": list(e.steps), "answer": e.answer}) + "\n"
                            for e in get_task("prosqa_small").generate(60, seed=3)))
    trained = []
    monkeypatch.setattr(abstract_train, "sample_spans", lambda run_dir, examples, **kw: [["<abs_0>"]] * len(examples))
    monkeypatch.setattr(loop, "train", lambda cfg, workdir, progress=True: trained.append(cfg) or {"step": cfg.train.steps})
    cfg = tiny("train.steps=2", "abstract.rounds=2", f"task.path={data}", "task.valid_fraction=0.2",
               "train.init_from=runs/some_cot_run")
    warmup(cfg, tmp_path / "w", progress=False)
    held_out = {e.question for e in load_splits(cfg)[1]}
    assert len(held_out) == 8  # 20% of 60, at most task.n_valid=8
    assert trained[0].train.init_from == "runs/some_cot_run" and trained[1].train.init_from.endswith("bottleneck")
    for phase_cfg in trained:
        if phase_cfg.task.path == str(data):  # round 1's bottleneck: the file itself, the same fraction held out
            assert {e.question for e in load_splits(phase_cfg)[1]} == held_out
            continue
        assert phase_cfg.task.valid_path == str(tmp_path / "w" / "valid.jsonl")
        assert {e.question for e in load_examples(phase_cfg.task.valid_path)} == held_out
        assert not held_out & {e.question for e in load_examples(phase_cfg.task.path)}
    assert sum(c.task.path != str(data) for c in trained) == 3


def test_a_warmup_whose_data_file_is_missing_writes_nothing(tmp_path):
    with pytest.raises(Exception, match="missing.jsonl"):
        warmup(tiny("abstract.rounds=1", f"task.path={tmp_path / 'missing.jsonl'}"), tmp_path / "w", progress=False)
    assert not (tmp_path / "w").exists()
