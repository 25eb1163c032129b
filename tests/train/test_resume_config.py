"""A resumed run continues under the config it was trained with: only RESUMABLE_FIELDS may
change on the command line; a config no device mesh or no training example fits is one line and
exit status 2 (through train.py, as a user meets it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from latent.config_io import apply_overrides, load_preset
from latent.run import checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[2]
QUICK = ("train.steps=2", "train.checkpoint_every=2", "eval.n_examples=2", "eval.max_new_tokens=2")


def run_train(workdir, *overrides):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--config", "tiny", "--workdir", str(workdir), "--no-progress",
         *overrides],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )


def test_changed_fields_names_what_changes_the_run_and_lets_the_rest_through():
    saved = load_preset("tiny")
    allowed = apply_overrides(saved, ["train.steps=99", "train.eval_every=7", "eval.max_new_tokens=3",
                                      "checkpoint.keep=9", "mesh.data=1", "train.time_limit_minutes=5"])
    assert ckpt.changed_fields(saved, allowed) == []
    changed = apply_overrides(saved, ["model.rope_theta=500.0", "model.feedback=soft", "latent.c_thought=2",
                                      "task.format=no_cot", "optimizer.lr=0.5", "train.steps=99"])
    assert ckpt.changed_fields(saved, changed) == [
        f"model.rope_theta: {saved.model.rope_theta!r} -> 500.0",
        "model.feedback: 'identity' -> 'soft'",
        "task.format: 'cot' -> 'no_cot'",
        f"optimizer.lr: {saved.optimizer.lr!r} -> 0.5",
        "latent.c_thought: 1 -> 2",
    ]


@pytest.mark.slow
def test_resume_refuses_changed_maths_and_accepts_more_steps(tmp_path):
    first = run_train(tmp_path, *QUICK)
    assert first.returncode == 0, first.stderr[-3000:]
    config_before = (tmp_path / "config.json").read_text()

    refused = run_train(tmp_path, *QUICK, "model.rope_theta=500.0", "train.steps=4")
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "Traceback" not in refused.stderr
    assert "model.rope_theta" in refused.stderr and "-> 500.0" in refused.stderr
    assert (tmp_path / "config.json").read_text() == config_before

    resumed = run_train(tmp_path, *QUICK, "train.steps=4")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())  # train.py prints one line; the report is here
    assert summary["resumed_from"] == 2 and summary["step"] == 4
    assert json.loads((tmp_path / "config.json").read_text())["train"]["steps"] == 4


@pytest.mark.slow
@pytest.mark.parametrize("overrides, names", [
    (("mesh.data=3",), "mesh.data=3"),
    (("mesh.data=0",), "mesh.data=0"),
    (("latent.mode=coconut", "task.max_len=12"), "task.max_len=12"),
    (("task.max_len=5",), "task.max_len=5"),
])
def test_configs_that_cannot_run_are_one_line_and_exit_2(tmp_path, overrides, names):
    result = run_train(tmp_path, *QUICK, *overrides)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and names in result.stderr
