"""scripts/recall_probe.py: the recall sequences are laid out as documented, and a run trains."""

import importlib.util
from pathlib import Path

import numpy as np

_SPEC = importlib.util.spec_from_file_location(
    "recall_probe", Path(__file__).resolve().parents[1] / "scripts" / "recall_probe.py")
recall_probe = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(recall_probe)


def test_every_asked_key_is_followed_by_its_listed_value():
    seq_BxT = recall_probe.recall_batch(np.random.default_rng(0), batch_size=4, pairs=5)
    assert seq_BxT.shape == (4, 20)
    for row in seq_BxT:
        listed = dict(zip(row[0:10:2], row[1:10:2]))
        assert len(listed) == 5 and all(k < 30 <= v < 60 for k, v in listed.items())
        asked = list(zip(row[10::2], row[11::2]))
        assert sorted(k for k, _ in asked) == sorted(listed) and all(listed[k] == v for k, v in asked)


def test_gap_puts_fillers_between_each_key_and_its_value():
    seq_BxT = recall_probe.recall_batch(np.random.default_rng(0), batch_size=3, pairs=4, gap=2)
    assert seq_BxT.shape == (3, 32)
    for row in seq_BxT:
        groups = row.reshape(8, 4)
        np.testing.assert_array_equal(groups[:, 1:3], np.broadcast_to([60, 61], (8, 2)))
        listed = dict(zip(groups[:4, 0], groups[:4, 3]))
        assert all(listed[k] == v for k, v in zip(groups[4:, 0], groups[4:, 3]))


def test_a_short_run_prints_its_progress(capsys):
    recall_probe.main(["--layers", "1", "--steps", "4", "--log-every", "2", "--batch-size", "4", "--gap", "2"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["step 2", "step 4"]
