"""Data-side user errors stop train.py / eval.py with one `error:` line and exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(script: str, *argv) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(ROOT / script), *map(str, argv)], capture_output=True, text=True,
                            timeout=600, cwd=ROOT)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    return result


def train_tiny(workdir, *overrides) -> str:
    return run("train.py", "--config", "tiny", "--workdir", workdir, "--no-progress", *overrides).stderr


def test_unknown_task_name_lists_the_known_ones(tmp_path):
    err = train_tiny(tmp_path, "task.name=foo")
    assert "error: task.name='foo' is not a known task" in err and "prosqa_small" in err and "gsm8k" in err
    err = run("eval.py", "--workdir", tmp_path, "--data", "foo").stderr
    assert "error: --data='foo' is not a known task" in err and "prontoqa" in err


def test_gsm8k_without_a_file(tmp_path):
    err = train_tiny(tmp_path, "task.name=gsm8k")
    assert "error: task gsm8k has no generator" in err and "task.path" in err


@pytest.mark.slow
@pytest.mark.parametrize(
    "abstract,message",
    [
        (5, "field 'abstract' must be a list of abstract token strings"),
        (["<abs_1>", 3], "field 'abstract' must be a list of strings"),
        (["<abs_1>", "<abs_999>"], "field 'abstract': unknown abstract token '<abs_999>'"),
        ("<abs_1> oops", "field 'abstract' holds 'oops'"),
    ],
)
def test_malformed_abstract_field_names_file_item_and_field(tmp_path, abstract, message):
    good = {"question": "Every wumpus is a yumpus. Tom is a wumpus. Is Tom a yumpus or zumpus?",
            "steps": ["Tom is a wumpus.", "Every wumpus is a yumpus."], "answer": "Tom is a yumpus.",
            "abstract": ["<abs_1>", "<abs_2>"]}
    rows = [dict(good, question=f"{good['question']} ({i})") for i in range(12)]
    rows[3]["abstract"] = abstract
    data = tmp_path / "spans.json"
    data.write_text(json.dumps(rows))
    err = train_tiny(tmp_path / "run", f"task.path={data}", "task.format=abstract")
    assert f"error: {data}: item 3: {message}" in err
    jsonl = tmp_path / "spans.jsonl"
    jsonl.write_text("\n" + "".join(json.dumps(r) + "\n" for r in rows))  # a blank first line
    err = train_tiny(tmp_path / "run2", f"task.path={jsonl}", "task.format=abstract")
    assert f"error: {jsonl}: line 5: {message}" in err


def test_no_training_examples_left_after_length_filter(tmp_path):
    err = train_tiny(tmp_path, "task.max_len=12", "task.n_train=30")
    assert "error: no training examples left: all 30 were longer than task.max_len=12 tokens" in err
    assert len(err.strip().splitlines()) == 1
