"""Run `train.py` on a Cloud TPU VM or pod slice from this machine, through `gcloud`.

    python tpu/launch.py all --name N --zone Z --accelerator v5litepod-8 [--config PRESET] [-- key=value ...]
    python tpu/launch.py create|setup|train|fetch|delete --name N --zone Z ...   (one step at a time)

Steps (`all` runs them in this order and stops at the first that fails):
- create: the TPU VM (`gcloud compute tpus tpu-vm create`).
- setup: ships this checkout's committed code (`git archive` of `--ref`, HEAD by default) to every
  worker, makes a Python venv there and `pip install -e ".[tpu]"` (jax with its pinned libtpu).
- train: `python train.py --config C --workdir W --no-progress [overrides]` on every worker at once.
- fetch: copies the run directory from worker 0 into `--dest` (`runs/` here).
- delete: the TPU VM.

`--dry-run` prints each command, one a line, shell-quoted, and runs nothing. Everything after `--`
is passed to train.py as config overrides (`-- train.steps=100 mesh.data=8`).

The run directory (`--workdir`, default `runs/<name>`) is a path on the workers: relative paths are
inside the checkout (`~/latent`). It is not a gs:// bucket, because train.py's run directory is a
local path (pathlib) today. A multi-host slice needs it on storage every worker mounts at the same
path, since every host writes its own shards of each checkpoint (see tpu/README.md).

Only the standard library: this runs on a laptop that has gcloud and nothing of the project.
"""

import argparse
import dataclasses
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REMOTE_CHECKOUT = "latent"  # on each worker, relative to the login directory (gcloud ssh starts there)
REMOTE_VENV = "latent-venv"  # beside the checkout, so that a second `setup` keeps it and the runs
REMOTE_ARCHIVE = "latent.tar.gz"
STEPS = ("create", "setup", "train", "fetch", "delete")


@dataclasses.dataclass(frozen=True)
class TpuGeneration:
    prefix: str  # gcloud's accelerator-type prefix: <prefix>-<count>
    runtime_version: str  # the TPU VM image made for this generation
    cores_per_chip: int  # the count in a v5p name is TensorCores (2 a chip); in v5e and v6e names, chips
    sizes: tuple[int, ...] | None  # the counts gcloud offers; None: any multiple of 8


# Single-host VMs hold up to 8 chips (v5e, v6e) or 4 (v5p); bigger slices are made of 4-chip hosts.
GENERATIONS = {
    gen.prefix: gen
    for gen in (
        TpuGeneration("v5litepod", "v2-alpha-tpuv5-lite", 1, (1, 4, 8, 16, 32, 64, 128, 256)),
        TpuGeneration("v6e", "v2-alpha-tpuv6e", 1, (1, 4, 8, 16, 32, 64, 128, 256)),
        TpuGeneration("v5p", "v2-alpha-tpuv5", 2, None),
    )
}
ACCELERATOR_FORMS = "v5litepod-N (v5e), v6e-N or v5p-N, e.g. v5litepod-8 or v5litepod-32"


@dataclasses.dataclass(frozen=True)
class Accelerator:
    name: str  # as gcloud spells it, e.g. v5litepod-32
    generation: TpuGeneration
    chips: int

    @property
    def hosts(self) -> int:
        single_host_chips = 4 if self.generation.prefix == "v5p" else 8
        return 1 if self.chips <= single_host_chips else self.chips // 4


def accelerator(name: str) -> Accelerator:
    """An accelerator type gcloud accepts, or an error saying which forms it takes (for argparse's `type=`)."""
    prefix, _, count = name.rpartition("-")
    if prefix == "v5e":
        raise argparse.ArgumentTypeError(f"{name}: gcloud calls v5e 'v5litepod', write v5litepod-{count}")
    generation = GENERATIONS.get(prefix)
    count = int(count) if count.isdigit() else 0
    if generation is None or not (count in generation.sizes if generation.sizes else count > 0 and count % 8 == 0):
        raise argparse.ArgumentTypeError(f"{name} is not a TPU accelerator type this script knows: {ACCELERATOR_FORMS}")
    return Accelerator(name, generation, count // generation.cores_per_chip)


def tpu_name(name: str) -> str:
    if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name):
        raise argparse.ArgumentTypeError(f"{name!r}: lowercase letters, digits and '-', starting with a letter")
    return name


def workdir(path: str) -> str:
    if "://" in path:
        raise argparse.ArgumentTypeError(
            f"{path}: a path on the workers, not a bucket (train.py's run directory is a local path today)")
    return path


# ----------------------------------------------------------------------------- commands
# Each step is a list of commands, each command an argv list: run as is, or printed by --dry-run.


def gcloud_tpu_vm(verb: str, args, *positionals: str, flags: Sequence[str] = ()) -> list[str]:
    """`gcloud compute tpus tpu-vm VERB POSITIONALS --zone=Z [--project=P] FLAGS`: the shared flags, in one place."""
    project = [f"--project={args.project}"] if args.project else []
    return ["gcloud", "compute", "tpus", "tpu-vm", verb, *positionals, f"--zone={args.zone}", *project, *flags]


def on_all_workers(args, remote_command: str) -> list[str]:
    # --worker=all starts the command on every worker at the same time (gcloud runs the ssh sessions
    # concurrently), which is what a multi-host slice needs: each host runs one JAX process and they
    # meet in jax.distributed.initialize().
    return gcloud_tpu_vm("ssh", args, args.name, flags=["--worker=all", "--command", remote_command])


def local_archive(args) -> str:
    return os.path.join(tempfile.gettempdir(), f"{args.name}-code.tar.gz")


def remote_run_dir(args) -> str:
    """The run directory as scp names it on worker 0 (relative paths are from the login directory)."""
    return args.workdir if os.path.isabs(args.workdir) else f"{REMOTE_CHECKOUT}/{args.workdir}"


def create_commands(args) -> list[list[str]]:
    version = args.version or args.accelerator.generation.runtime_version
    flags = [f"--accelerator-type={args.accelerator.name}", f"--version={version}", *(["--spot"] if args.spot else [])]
    return [gcloud_tpu_vm("create", args, args.name, flags=flags)]


def setup_commands(args) -> list[list[str]]:
    python = args.python
    install = "; ".join([
        "set -e",
        # TPU VM images ship an older Python than the project's 3.11: add it from the OS packages if missing.
        f"command -v {python} >/dev/null || {{ sudo apt-get -o DPkg::Lock::Timeout=600 update -qq && "
        f"sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq {python} {python}-venv; }}",
        f"mkdir -p {REMOTE_CHECKOUT}",
        f"tar -xzf {REMOTE_ARCHIVE} -C {REMOTE_CHECKOUT}",
        f"test -x {REMOTE_VENV}/bin/python || {python} -m venv {REMOTE_VENV}",
        f"cd {REMOTE_CHECKOUT}",
        # the [tpu] extra pins jax[tpu] to the version tested here, which pins its libtpu
        f'../{REMOTE_VENV}/bin/pip install -q -e ".[tpu]"',
    ])
    return [
        # committed code only: the run then names a commit, and nothing of runs/ or caches travels
        ["git", "-C", str(ROOT), "archive", "--format=tar.gz", f"--output={local_archive(args)}", args.ref],
        gcloud_tpu_vm("scp", args, local_archive(args), f"{args.name}:{REMOTE_ARCHIVE}", flags=["--worker=all"]),
        on_all_workers(args, install),
    ]


def train_commands(args) -> list[list[str]]:
    # The same command on every worker. On a multi-host slice JAX finds the other hosts by itself:
    # jax.distributed.initialize() with no arguments reads the Cloud TPU metadata (coordinator,
    # process count and index), so no coordinator flags are passed here.
    train = [f"../{REMOTE_VENV}/bin/python", "train.py", "--config", args.config, "--workdir", args.workdir,
             "--no-progress", *args.overrides]
    return [on_all_workers(args, f"cd {REMOTE_CHECKOUT} && {shlex.join(train)}")]


def fetch_commands(args) -> list[list[str]]:
    # worker 0 is process 0, the one that writes the run's config, metrics and reports
    return [["mkdir", "-p", args.dest],
            gcloud_tpu_vm("scp", args, f"{args.name}:{remote_run_dir(args)}", args.dest,
                          flags=["--worker=0", "--recurse"])]


def delete_commands(args) -> list[list[str]]:
    return [gcloud_tpu_vm("delete", args, args.name, flags=["--quiet"])]  # --quiet: no "are you sure" prompt


COMMANDS = {"create": create_commands, "setup": setup_commands, "train": train_commands, "fetch": fetch_commands,
            "delete": delete_commands}


# ----------------------------------------------------------------------------- command line


class OneLineErrors(argparse.ArgumentParser):
    """argparse, but a mistake is one line naming the flag (no usage block), exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def add_options(parser: argparse.ArgumentParser, step: str) -> None:
    steps = STEPS if step == "all" else (step,)
    parser.add_argument("--name", required=True, type=tpu_name, help="the TPU VM's name")
    parser.add_argument("--zone", required=True, help="e.g. us-west4-a (v5e), us-east5-b, europe-west4-b")
    parser.add_argument("--project", help="Google Cloud project (default: gcloud's configured one)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    if "create" in steps:
        parser.add_argument("--accelerator", required=True, type=accelerator, help=ACCELERATOR_FORMS)
        parser.add_argument("--version", help="TPU VM runtime version (default: the generation's own)")
        parser.add_argument("--spot", action="store_true", help="a Spot VM: cheaper, may be preempted")
    if "setup" in steps:
        parser.add_argument("--ref", default="HEAD", help="the git revision shipped to the workers (default HEAD)")
        parser.add_argument("--python", default="python3.11", help="interpreter for the workers' venv")
    if "train" in steps:
        parser.add_argument("--config", default="default", help="train.py --config (a preset, or a file in the repo)")
    if "train" in steps or "fetch" in steps:
        parser.add_argument("--workdir", type=workdir, help="run directory on the workers (default runs/<name>)")
    if "fetch" in steps:
        parser.add_argument("--dest", default="runs", help="local folder the run directory is copied into")


def parse(argv: Sequence[str]) -> argparse.Namespace:
    argv = list(argv)
    # Overrides go after `--` untouched: argparse would otherwise read `key=value` as a subcommand.
    overrides = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    parser = OneLineErrors(prog="tpu/launch.py", description=__doc__.split("\n\n")[0])
    steps = parser.add_subparsers(dest="step", required=True, metavar="{all,create,setup,train,fetch,delete}")
    for step in ("all", *STEPS):
        add_options(steps.add_parser(step, help=f"run {'every step' if step == 'all' else step}"), step)
    args = parser.parse_args(own)
    if overrides and args.step not in ("train", "all"):
        parser.error(f"overrides after -- go to train.py: only 'train' and 'all' take them, not '{args.step}'")
    args.overrides = overrides
    if hasattr(args, "workdir") and args.workdir is None:
        args.workdir = f"runs/{args.name}"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    steps = STEPS if args.step == "all" else (args.step,)
    if "create" in steps and args.accelerator.hosts > 1:
        print(f"note: {args.accelerator.name} is {args.accelerator.hosts} hosts: train.py runs on each, and the "
              "run directory must be storage all of them mount at one path (tpu/README.md)", file=sys.stderr)
    plan = [(step, command) for step in steps for command in COMMANDS[step](args)]
    if args.dry_run:
        for _, command in plan:
            print(shlex.join(command))
        return 0
    for step, command in plan:
        print("+", shlex.join(command), file=sys.stderr, flush=True)
        try:
            returncode = subprocess.run(command).returncode
        except FileNotFoundError:
            print(f"tpu/launch.py: {command[0]} not found: install it (gcloud: the Google Cloud CLI)", file=sys.stderr)
            returncode = 127
        if returncode != 0:
            print(f"tpu/launch.py: {step} failed (exit status {returncode})", file=sys.stderr)
            if args.step == "all" and step != "create":
                delete = ["python", "tpu/launch.py", "delete", "--name", args.name, "--zone", args.zone,
                          *(["--project", args.project] if args.project else [])]
                print(f"the TPU VM {args.name} is still up, and billed: look or fetch, then {shlex.join(delete)}",
                      file=sys.stderr)
            return returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
