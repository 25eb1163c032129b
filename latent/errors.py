"""Every error a user can act on, in one place: the command-line scripts turn these into one
line (`error: ...`, exit status 2; a diverged run exits 3) instead of a traceback. Each message
names the field, file, step or tensor at fault. The modules that raise them import them from here."""

from __future__ import annotations

from pathlib import Path


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


class DataError(ValueError):
    """A data file that cannot be read as examples; the message says where and why."""


class CheckpointError(ValueError):
    """A checkpoint cannot be read as asked; the message names the file and tensor."""


class CheckpointMismatch(ValueError):
    """The workdir's checkpoint belongs to a different model; names the parameter."""


class DamagedCheckpoint(CheckpointError):
    """A complete (committed) checkpoint whose files cannot be read back; names the step."""

    def __init__(self, directory: Path, step: int, reason: str):
        self.directory, self.step, self.reason = Path(directory), int(step), reason
        super().__init__(f"checkpoint step {step} in {directory} is damaged: {reason}")


class TrainingDiverged(RuntimeError):
    """A non-finite loss or gradient; the message names the step."""


# What the command-line scripts report as `error: ...` with exit status 2 (TrainingDiverged: 3).
USER_ERRORS = (ConfigError, DataError, CheckpointError, CheckpointMismatch, FileNotFoundError, PermissionError)
