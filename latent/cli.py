"""Shared command-line plumbing for train.py and eval.py: clear one-line errors, no tracebacks."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

# latent.run.checkpoint.CHECKPOINT_DIR, not imported: orbax takes seconds to import, and
# saved_steps also answers while a Ctrl-C interrupts the imports.
CHECKPOINT_DIR = "checkpoints"


def saved_steps(workdir) -> list[int]:
    """The steps a run directory holds checkpoints for (orbax names each step's directory by
    its number; a save in progress has a longer name), without reading them."""
    directory = Path(workdir) / CHECKPOINT_DIR
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


@contextmanager
def user_errors():
    """Turn the errors a user can act on into `error: ...` and exit status 2."""
    from latent.errors import USER_ERRORS, TrainingDiverged

    try:
        yield
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except TrainingDiverged as e:
        print(f"error: training diverged: {e}", file=sys.stderr)
        sys.exit(3)
