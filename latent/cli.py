"""Shared command-line plumbing for train.py and eval.py: clear one-line errors, no tracebacks."""

from __future__ import annotations

import sys
from contextlib import contextmanager


@contextmanager
def user_errors():
    """Turn the errors a user can act on into `error: ...` and exit status 2."""
    from latent.config import ConfigError
    from latent.data.tasks import DataError
    from latent.models.hf import CheckpointError
    from latent.train.checkpoint import CheckpointMismatch
    from latent.train.loop import TrainingDiverged

    try:
        yield
    except (ConfigError, DataError, CheckpointError, CheckpointMismatch, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except TrainingDiverged as e:
        print(f"error: training diverged: {e}", file=sys.stderr)
        sys.exit(3)
