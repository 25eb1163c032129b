"""latent/distributed.py: when train.py and eval.py start jax.distributed, and the flags' errors.
(Runs of several processes: tests/train/test_multiprocess.py.)"""

from __future__ import annotations

import argparse

import jax
import pytest

from latent import distributed
from latent.errors import ConfigError


def flags(*argv: str):
    parser = argparse.ArgumentParser()
    distributed.add_flags(parser)
    return parser.parse_args(list(argv))


def test_no_flags_and_no_cluster_is_a_single_process_left_alone():
    assert distributed.from_flags(flags()) is None
    assert distributed.cluster_in_environment({}) is None
    assert distributed.initialize(flags(), environ={}) is False  # jax.distributed not started
    assert distributed.is_writer() and distributed.any_process(True, False) == (True, False)
    tree = {"w": jax.numpy.ones(3)}
    assert distributed.on_this_process(tree) is tree  # nothing to gather


def test_the_three_flags_give_the_coordinator_and_switch_detection_off():
    kwargs = distributed.from_flags(flags("--coordinator", "10.0.0.2:1234", "--num-processes", "4", "--process-id", "3"))
    assert kwargs == dict(coordinator_address="10.0.0.2:1234", num_processes=4, process_id=3,
                          cluster_detection_method="deactivate")


@pytest.mark.parametrize("argv, message", [
    (("--coordinator", "localhost:1234"), r"missing \['--num-processes', '--process-id'\]"),
    (("--num-processes", "2", "--process-id", "0"), r"missing \['--coordinator'\]"),
    (("--coordinator", "localhost:1234", "--num-processes", "2", "--process-id", "2"), r"--process-id must be in 0\.\.1"),
    (("--coordinator", "localhost", "--num-processes", "2", "--process-id", "0"), "HOST:PORT"),
])
def test_incomplete_or_inconsistent_flags_are_named(argv, message):
    with pytest.raises(ConfigError, match=message):
        distributed.from_flags(flags(*argv))


def test_slurm_with_several_tasks_is_detected_and_one_task_is_not():
    assert distributed.cluster_in_environment({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "8"}) == "slurm"
    assert distributed.cluster_in_environment({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}) is None  # salloc; python train.py
    assert distributed.cluster_in_environment({"SLURM_NTASKS": "8"}) is None  # not inside a job


def test_train_py_refuses_half_the_flags_before_any_jax_work(capsys):
    import train

    with pytest.raises(SystemExit) as exit_:
        train.main(["--coordinator", "localhost:1234", "--num-processes", "2"])
    assert exit_.value.code == 2
    assert "missing ['--process-id']" in capsys.readouterr().err
