"""Test setup: never reach a model hub; keep JAX on the CPU with float32 matmuls exact."""

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Generated splits are cached by task, count, seed and generator source (latent.data.splits): the
# tests share one cache, out of the user's ~/.cache, so each split is generated once per machine.
os.environ.setdefault("LATENT_CACHE_DIR", str(Path(tempfile.gettempdir()) / "latent-test-cache"))

from tests.shared_data import shared_data_file  # after the environment is set


def pytest_collection_modifyitems(config, items):
    """Slow end-to-end tests first: with `pytest -n 2` a long test that starts last runs alone
    while the other worker idles, so starting the longest ones first shortens the whole run."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: order kept within each group


@pytest.fixture
def shared_data():
    """`shared_data(name)` -> path of a real data file in ../shared/data (tests/shared_data.py):
    skips locally when it is missing, fails under CI."""
    return shared_data_file
