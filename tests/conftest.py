"""Test setup: never reach a model hub; keep JAX on the CPU with float32 matmuls exact."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items):
    """Slow end-to-end tests first: with `pytest -n 2` a long test that starts last runs alone
    while the other worker idles, so starting the longest ones first shortens the whole run."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: order kept within each group
