"""scripts/gated_attention_study.py: the commands it runs, its spike and divergence rules, and a
whole tiny study (three arms, one learning rate, two steps) end to end."""

import json
import math
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import gated_attention_study as study  # noqa: E402


def test_dry_run_prints_the_exact_commands_and_runs_nothing(tmp_path, capsys):
    root = tmp_path / "study"
    assert study.main(["--config", "tiny", "--root", str(root), "--lr-multipliers", "1,2", "--steps", "5", "--cpu", "1",
                       "--dry-run", "--", "task.n_train=64"]) is None
    lines = capsys.readouterr().out.strip().splitlines()
    assert not root.exists()
    assert [line for line in lines if line.startswith("#")] == [
        f"# {arm}_lr{m}x" for m in (1, 2) for arm in ("none", "headwise", "elementwise")]
    commands = [shlex.split(line) for line in lines if not line.startswith("#")]
    python = sys.executable
    for i, (m, lr) in enumerate(((1, "0.003"), (2, "0.006"))):  # tiny's optimizer.lr is 3e-3
        for j, arm in enumerate(("none", "headwise", "elementwise")):
            workdir = str(root / f"{arm}_lr{m}x")
            train, analyse = commands[2 * (3 * i + j)], commands[2 * (3 * i + j) + 1]
            assert train == ["taskset", "-c", "1", python, str(ROOT / "train.py"), "--config", "tiny", "--workdir", workdir,
                             "--no-progress", "task.n_train=64", "train.steps=5", f"model.attn_gate={arm}",
                             f"optimizer.lr={lr}"]
            assert analyse == ["taskset", "-c", "1", python, str(ROOT / "eval.py"), "--workdir", workdir, "--analysis",
                               "attention", "--out", f"{workdir}/attention.json", "--overwrite", "--no-progress"]


def test_bad_flags_are_refused(capsys):
    for argv, message in ((["--lr-multipliers", "1,-2"], "--lr-multipliers: '1,-2': give positive numbers"),
                          (["--arms", "none,sigmoid"], "--arms: sigmoid"),
                          (["--", "optimizer.lr=1e-3"], "what the study varies")):
        with pytest.raises(SystemExit):
            study.main(["--root", "/tmp/unused", "--dry-run", *argv])
        assert message in capsys.readouterr().err


def test_spikes_and_divergence_follow_their_definitions():
    steady = [(5 * i, 4.0 - 0.1 * i) for i in range(1, 15)]
    assert study.loss_spikes(steady) == []
    # 3.2 > 1.5 x the median (2.0) of the 10 losses before it; the first three losses have too little history
    with_spike = [(1, 9.0), (2, 2.0), (3, 2.0), (4, 2.0), (5, 1.9), (6, 1.8), (7, 1.9), (8, 3.2), (9, 1.8)]
    assert study.loss_spikes(with_spike) == [8]
    assert study.loss_spikes([(1, 1.0), (2, 1.0), (3, 1.0), (4, 1.49), (5, 1.51)]) == [5]
    assert study.loss_spikes([(1, 1.0), (2, 1.0), (3, 1.0), (4, math.nan)]) == [4]
    assert not study.diverged(steady, stopped_non_finite=False)
    assert study.diverged(steady, stopped_non_finite=True)
    assert study.diverged([(1, 3.0), (2, 2.0), (3, 3.5)], stopped_non_finite=False)  # ends above its start
    assert study.diverged([(1, 3.0), (2, math.inf)], stopped_non_finite=False)


@pytest.mark.slow
def test_a_tiny_study_end_to_end(tmp_path, capsys):
    root = tmp_path / "study"
    argv = ["--config", "tiny", "--root", str(root), "--steps", "2", "--lr-multipliers", "2", "--",
            "task.name=text:verne", "model.vocab_size=320", "task.max_len=48", "eval.batch_size=8", "train.log_every=1"]
    result = study.main(argv)
    out = capsys.readouterr().out
    runs = {run["arm"]: run for run in result["runs"]}
    assert set(runs) == {"none", "headwise", "elementwise"} and "[3/3] elementwise_lr2x" in out
    for arm, run in runs.items():
        workdir = root / f"{arm}_lr2x"
        assert run["lr"] == 0.006 and run["steps"] == 2 and run["spikes"] == [] and not run["stopped_non_finite"]
        assert run["diverged"] == (run["last_train_loss"] > run["first_train_loss"])
        attention = json.loads((workdir / "attention.json").read_text())
        assert run["valid_loss"] == attention["loss"] and attention["attn_gate"] == arm
        np.testing.assert_allclose(run["valid_loss"], run["eval"][-1]["eval_loss"], rtol=2e-5)  # the LM loss
        assert run["sink_share_mean"] == pytest.approx(np.mean(attention["per_layer"]["sink_share"]))
        assert run["max_abs_activation"] == max(attention["per_layer"]["max_abs_activation"])
        assert (run["gate_mean"] is None) == (arm == "none")
        assert (workdir / "attention.png").exists() and (workdir / "train.log").exists()
    assert (root / "loss_lr2x.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((root / "study.json").read_text())
    assert [r["name"] for r in saved["runs"]] == ["none_lr2x", "headwise_lr2x", "elementwise_lr2x"]
    table = (root / "study.md").read_text()
    assert "| none | 2x (0.006) | 2 |" in table and "(elementwise_lr2x/attention.png)" in table

    study.main(argv)  # a second run skips every finished run
    assert capsys.readouterr().out.count("done, skipped") == 3
