"""tpu/launch.py: the exact gcloud commands of a single-host v5e-8 and a multi-host v5e-32, printed
by --dry-run with nothing run; one-line errors naming the flag; overrides reaching train.py intact.

The script is loaded from its file (it is a script, not a package) and run in this process; gcloud
is never needed: a dry run must not start any process, and the runs below replace subprocess.run."""

import os
import shlex
import subprocess
import tempfile

import pytest

from tests.tpu import ROOT, load_tpu_script

launch = load_tpu_script("launch")


@pytest.fixture(autouse=True)
def no_processes(monkeypatch):
    """Any process started by the script fails the test, unless a test installs its own runner."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a process was started: {args}")

    for name in ("run", "Popen", "call", "check_call", "check_output"):
        monkeypatch.setattr(subprocess, name, refuse)
    monkeypatch.setattr(os, "system", refuse)


def dry_run(capsys, *argv):
    assert launch.main([*argv[:1], "--dry-run", *argv[1:]]) == 0
    out, err = capsys.readouterr()
    return out.splitlines(), err


def expected_all(name, accelerator, zone="us-west4-a", train_args=""):
    archive = os.path.join(tempfile.gettempdir(), f"{name}-code.tar.gz")
    setup = ("set -e; command -v python3.11 >/dev/null || { sudo apt-get -o DPkg::Lock::Timeout=600 update -qq && "
             "sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq python3.11 python3.11-venv; }; "
             "mkdir -p latent; tar -xzf latent.tar.gz -C latent; "
             "test -x latent-venv/bin/python || python3.11 -m venv latent-venv; "
             'cd latent; ../latent-venv/bin/pip install -q -e ".[tpu]"')
    train = f"cd latent && ../latent-venv/bin/python train.py --config default --workdir runs/{name} --no-progress"
    return [
        f"gcloud compute tpus tpu-vm create {name} --zone={zone} --accelerator-type={accelerator} "
        "--version=v2-alpha-tpuv5-lite",
        f"git -C {shlex.quote(str(ROOT))} archive --format=tar.gz --output={shlex.quote(archive)} HEAD",
        f"gcloud compute tpus tpu-vm scp {shlex.quote(archive)} {name}:latent.tar.gz --zone={zone} --worker=all",
        f"gcloud compute tpus tpu-vm ssh {name} --zone={zone} --worker=all --command {shlex.quote(setup)}",
        f"gcloud compute tpus tpu-vm ssh {name} --zone={zone} --worker=all --command {shlex.quote(train + train_args)}",
        "mkdir -p runs",
        f"gcloud compute tpus tpu-vm scp {name}:latent/runs/{name} runs --zone={zone} --worker=0 --recurse",
        f"gcloud compute tpus tpu-vm delete {name} --zone={zone} --quiet",
    ]


def test_v5e_8_single_host_all_steps(capsys):
    lines, err = dry_run(capsys, "all", "--name", "latent-v5e8", "--zone", "us-west4-a", "--accelerator", "v5litepod-8")
    assert lines == expected_all("latent-v5e8", "v5litepod-8")
    assert err == ""  # one host: no multi-host note


def test_v5e_32_multi_host_runs_train_on_every_worker(capsys):
    lines, err = dry_run(capsys, "all", "--name", "latent-v5e32", "--zone", "us-west4-a",
                         "--accelerator", "v5litepod-32", "--", "mesh.data=4", "mesh.fsdp=8")
    assert lines == expected_all("latent-v5e32", "v5litepod-32", train_args=" mesh.data=4 mesh.fsdp=8")
    assert "v5litepod-32 is 8 hosts" in err
    assert launch.accelerator("v5litepod-32").hosts == 8 and launch.accelerator("v5litepod-8").hosts == 1
    assert launch.accelerator("v5p-8").hosts == 1 and launch.accelerator("v5p-16").hosts == 2


def test_single_steps_project_and_flags(capsys):
    common = ["--name", "n1", "--zone", "europe-west4-b", "--project", "my-proj"]
    lines, _ = dry_run(capsys, "create", *common, "--accelerator", "v6e-8", "--spot")
    assert lines == ["gcloud compute tpus tpu-vm create n1 --zone=europe-west4-b --project=my-proj "
                     "--accelerator-type=v6e-8 --version=v2-alpha-tpuv6e --spot"]
    lines, _ = dry_run(capsys, "fetch", *common, "--workdir", "/mnt/shared/runs/a", "--dest", "back")
    assert lines == ["mkdir -p back", "gcloud compute tpus tpu-vm scp n1:/mnt/shared/runs/a back "
                     "--zone=europe-west4-b --project=my-proj --worker=0 --recurse"]
    lines, _ = dry_run(capsys, "delete", *common)
    assert lines == ["gcloud compute tpus tpu-vm delete n1 --zone=europe-west4-b --project=my-proj --quiet"]


def test_overrides_reach_train_py_quoted(capsys):
    overrides = ['task.options={"chain_sum": {"max_terms": 3}}', "task.path=my data/it's.jsonl", "train.steps=$HOME"]
    lines, _ = dry_run(capsys, "train", "--name", "n1", "--zone", "z", "--config", "prosqa_coconut", "--", *overrides)
    (line,) = lines
    gcloud = shlex.split(line)
    assert gcloud[:8] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "n1", "--zone=z", "--worker=all"]
    assert gcloud[8] == "--command" and len(gcloud) == 10
    remote = shlex.split(gcloud[9])  # what the worker's shell splits the command into
    assert remote == ["cd", "latent", "&&", "../latent-venv/bin/python", "train.py", "--config", "prosqa_coconut",
                      "--workdir", "runs/n1", "--no-progress", *overrides]


@pytest.mark.parametrize(("argv", "flag"), [
    (["create", "--name", "n1", "--zone", "z", "--accelerator", "v5e-8"], "--accelerator"),
    (["all", "--name", "n1", "--zone", "z", "--accelerator", "v5litepod-12"], "--accelerator"),
    (["create", "--name", "n1", "--zone", "z", "--accelerator", "tpu"], "--accelerator"),
    (["create", "--zone", "z", "--accelerator", "v5litepod-8"], "--name"),
    (["train", "--name", "Bad_Name", "--zone", "z"], "--name"),
    (["train", "--name", "n1"], "--zone"),
    (["all", "--name", "n1", "--zone", "z"], "--accelerator"),
    (["fetch", "--name", "n1", "--zone", "z", "--workdir", "gs://bucket/run"], "--workdir"),
])
def test_bad_input_is_one_line_naming_the_flag(capsys, argv, flag):
    with pytest.raises(SystemExit) as exit_info:
        launch.main([*argv, "--dry-run"])
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1 and flag in err, err


def test_overrides_only_for_train(capsys):
    with pytest.raises(SystemExit):
        launch.main(["delete", "--name", "n1", "--zone", "z", "--", "train.steps=1"])
    assert "only 'train' and 'all' take them" in capsys.readouterr().err


def test_run_executes_the_printed_commands_and_stops_at_a_failure(monkeypatch, capsys):
    argv = ["all", "--name", "n1", "--zone", "z", "--accelerator", "v5litepod-8"]
    launch.main([*argv, "--dry-run"])
    printed = capsys.readouterr().out.splitlines()
    ran = []

    def fake_run(command, **kwargs):
        ran.append(shlex.join(command))
        failing = command[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"] and "train.py" in command[-1]
        return subprocess.CompletedProcess(command, 3 if failing else 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert launch.main(argv) == 3
    assert ran == printed[:5]  # create, archive, copy, install, train: then it stops
    err = capsys.readouterr().err
    assert "train failed (exit status 3)" in err
    assert "python tpu/launch.py delete --name n1 --zone z" in err  # the VM is still up: how to delete it


def test_missing_gcloud_is_one_line(monkeypatch, capsys):
    def no_gcloud(command, **kwargs):
        raise FileNotFoundError(command[0])

    monkeypatch.setattr(subprocess, "run", no_gcloud)
    assert launch.main(["delete", "--name", "n1", "--zone", "z"]) == 127
    assert "gcloud not found" in capsys.readouterr().err
