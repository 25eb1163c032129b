"""Multi-process runs: starting `jax.distributed`, and which process writes the run's files.

A run on several hosts (a TPU pod slice, GPUs under SLURM, or several processes on one machine)
is one JAX process per host, all running the same `train.py` / `eval.py`. They must call
`jax.distributed.initialize()` before any JAX computation; `initialize(...)` here decides whether
and how:

- flags: `--coordinator HOST:PORT --num-processes N --process-id I` (all three), as for local
  processes on one machine; cluster auto-detection is then switched off;
- else the environment, in two cases only, where JAX reads the rest itself:
  SLURM with more than one task (`SLURM_JOB_ID` and `SLURM_NTASKS` > 1: `srun`), and a Cloud TPU
  VM (libtpu installed and TPU chips on this host, `/dev/accel*` or `/dev/vfio/<n>`: JAX asks the
  VM's metadata for the workers, so a single-host VM is one process);
- else nothing: a single process, unchanged.

Every process computes the same steps on its share of the global arrays; `is_writer()` (process
0) alone writes config.json, metrics, plots and summaries, while orbax checkpoint saves are called
by every process (orbax coordinates them).
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os

from latent.errors import ConfigError


def add_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("multi-process (one process per host; SLURM and Cloud TPU are detected)")
    group.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                       help="address of process 0's coordinator service (jax.distributed)")
    group.add_argument("--num-processes", type=int, default=None, metavar="N", help="processes in the run")
    group.add_argument("--process-id", type=int, default=None, metavar="I", help="this process's index, 0..N-1")


def from_flags(args) -> dict | None:
    """jax.distributed.initialize's arguments from the three flags; None when none is given.
    ConfigError naming the flags when only some are, or they do not fit together."""
    given = {"--coordinator": args.coordinator, "--num-processes": args.num_processes, "--process-id": args.process_id}
    if all(v is None for v in given.values()):
        return None
    missing = [flag for flag, v in given.items() if v is None]
    if missing:
        raise ConfigError(f"a multi-process run needs --coordinator, --num-processes and --process-id; missing {missing}")
    if args.num_processes < 1 or not 0 <= args.process_id < args.num_processes:
        raise ConfigError(f"--process-id must be in 0..{args.num_processes - 1} (--num-processes "
                          f"{args.num_processes}); got {args.process_id}")
    if ":" not in args.coordinator:
        raise ConfigError(f"--coordinator is HOST:PORT (process 0's host); got {args.coordinator!r}")
    return dict(coordinator_address=args.coordinator, num_processes=args.num_processes, process_id=args.process_id,
                cluster_detection_method="deactivate")


def cluster_in_environment(environ=os.environ) -> str | None:
    """'slurm' or 'tpu' when this process is one of a cluster JAX detects by itself, else None."""
    if "SLURM_JOB_ID" in environ and int(environ.get("SLURM_NTASKS", environ.get("SLURM_NPROCS", "1")) or 1) > 1:
        return "slurm"
    if importlib.util.find_spec("libtpu") is not None and (glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")):
        return "tpu"
    return None


def initialize(args=None, environ=os.environ) -> bool:
    """Start jax.distributed when the flags (`args`, from `add_flags`) or the environment say this
    is a multi-process run; True if it was started. Call it before any JAX computation."""
    import jax

    kwargs = from_flags(args) if args is not None else None
    if kwargs is None and cluster_in_environment(environ) is None:
        return False
    try:
        jax.distributed.initialize(**(kwargs or {}))
    except RuntimeError as err:
        where = f"the coordinator {kwargs['coordinator_address']}" if kwargs else "the cluster's coordinator"
        raise ConfigError(f"jax.distributed could not start with {where}: {str(err).strip().splitlines()[0]}") from None
    return True


def is_writer() -> bool:
    """Whether this process writes the run's files (process 0; a single process always does)."""
    import jax

    return jax.process_index() == 0


def any_process(*flags: bool) -> tuple[bool, ...]:
    """For each flag, whether it holds on any process: a collective, so every process must call
    it at the same point of the run (a single process answers at once)."""
    import jax

    if jax.process_count() == 1:
        return tuple(bool(f) for f in flags)
    import numpy as np
    from jax.experimental import multihost_utils

    gathered_PxF = multihost_utils.process_allgather(np.asarray([bool(f) for f in flags]))
    return tuple(bool(v) for v in np.any(gathered_PxF, axis=0))


def gather_json(items: list) -> list[list]:
    """Every process's `items` (JSON-serialisable), in process order, on every process: a
    collective, so all processes call it at the same point (a single process gets [items]).
    Bytes travel as a padded uint8 array, since process_allgather moves arrays only."""
    import jax

    if jax.process_count() == 1:
        return [items]
    import json

    import numpy as np
    from jax.experimental import multihost_utils

    as_python = lambda value: value.tolist() if isinstance(value, (np.ndarray, np.generic)) else str(value)  # noqa: E731
    payload = np.frombuffer(json.dumps(items, default=as_python).encode(), np.uint8)
    sizes_P = multihost_utils.process_allgather(np.asarray([payload.size], np.int64)).reshape(-1)
    padded = np.zeros(int(sizes_P.max()), np.uint8)
    padded[: payload.size] = payload
    gathered_PxL = multihost_utils.process_allgather(padded)
    return [json.loads(bytes(row[:size]).decode()) for row, size in zip(np.asarray(gathered_PxL), sizes_P)]


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier `name` (nothing in a single-process run)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _identity(tree):
    return tree


def on_this_process(tree):
    """`tree` with every array whole on this process's first device: arrays spread over several
    processes (params sharded over a multi-host mesh) are gathered in one collective, so every
    process must call it; a tree whose arrays are all on this process comes back as it is. Lets a
    multi-process run decode (evaluate) on each process from the same params."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    spread = [leaf for leaf in jax.tree.leaves(tree) if not getattr(leaf, "is_fully_addressable", True)]
    if not spread:
        return tree
    whole = jax.jit(_identity, out_shardings=NamedSharding(spread[0].sharding.mesh, PartitionSpec()))(tree)
    return jax.tree.map(lambda leaf: leaf.addressable_data(0), whole)
