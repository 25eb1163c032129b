"""Where the tests find the real data files: `../shared/data` next to the checkout.

Locally a missing file skips its test; under CI (the `CI` environment variable set, as CI
services do) it fails, naming the path, so a CI run without the data cannot pass by skipping."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def running_in_ci(environ=os.environ) -> bool:
    return environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def shared_data_file(name: str, *, root: Path = SHARED_DATA, environ=os.environ) -> Path:
    """The path of real data file `name`; skips (locally) or fails (CI) when it is missing."""
    path = Path(root) / name
    if path.is_file():
        return path
    where = "the folder is absent" if not Path(root).is_dir() else "the folder exists without it"
    message = f"real data file {path} is missing ({where})"
    if running_in_ci(environ):
        pytest.fail(f"{message}; CI must provide {root}", pytrace=False)
    pytest.skip(message)
