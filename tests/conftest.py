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
# Many tests train or decode the same tiny programs in fresh jit closures (a resumed run, a second
# train() call, a subprocess): JAX's persistent compilation cache lets them reuse the compiled
# executables across tests, workers and subprocesses instead of compiling each again.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(tempfile.gettempdir()) / "latent-test-jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# The suite's time is mostly XLA compiling tiny CPU programs, not running them: LLVM at -O0 and
# XLA's classic (non-MLIR) fusion emitters compile a tiny model's programs about 5x faster (a
# 2-layer continuous-thought forward and backward: 8.8 -> 1.6 s of CPU; a tiny Coconut run's 8
# programs: 32 -> 6 s) and run them somewhat slower. No fast-math either way: results agree with
# the default flags to float32 rounding (gradients within 6e-8 of each other on that forward and
# backward). A user's own XLA_FLAGS are left as they are.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
os.environ.setdefault("XLA_FLAGS", TEST_XLA_FLAGS)

from tests.shared_data import shared_data_file  # noqa: E402 (after the environment is set)


def xla_flags(*flags: str) -> str:
    """XLA_FLAGS for a test's subprocess: the suite's own plus `flags`."""
    return " ".join([os.environ.get("XLA_FLAGS", ""), *flags]).strip()

# ----------------------------------------------------------------------------- shared tiny things
# Imported by test modules (`from tests.conftest import tiny_run`) and, through them, by the
# scripts some tests run in a subprocess, so they are plain functions rather than fixtures.


def tiny_run(*overrides):
    """The `tiny` preset (a small decoder on generated graphs) with dotted overrides."""
    from latent.config_io import apply_overrides, load_preset

    return apply_overrides(load_preset("tiny"), list(overrides))


def tiny_model_fields(**overrides) -> dict:
    """Fields of a 2-layer, d=32 GQA decoder for `latent.models.presets.<family>(**fields)`."""
    return dict(vocab_size=61, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, max_seq_len=32) | overrides


def eval_cli(*argv):
    """eval.py's main on `argv`, without progress bars (the repository root put on sys.path)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import eval as cli

    return cli.main([*argv, "--no-progress"])


def word_tokenizer(examples, num_abstract: int = 0):
    """A word-level tokenizer fitted to the CoT texts of `examples`."""
    from latent.data.tasks import cot_text
    from latent.data.tokenizer import Tokenizer

    return Tokenizer.fit_word_level([text for e in examples for text in cot_text(e)], num_abstract=num_abstract)


def pytest_collection_modifyitems(config, items):
    """Slow end-to-end tests first: with `pytest -n 2` a long test that starts last runs alone
    while the other worker idles, so starting the longest ones first shortens the whole run."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: order kept within each group


@pytest.fixture
def shared_data():
    """`shared_data(name)` -> path of a real data file in ../shared/data (tests/shared_data.py):
    skips locally when it is missing, fails under CI."""
    return shared_data_file
