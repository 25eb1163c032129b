"""Runs that start from another run (train.init_from=<run directory>): through the command line a
resume reads its own directory only, and a run that was itself started from a Hugging Face model
is a valid source (its model config, vocabulary grown by the method's tokens, comes with it)."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from latent.config_io import apply_overrides, load_preset
from latent.data.tasks import get_task

ROOT = Path(__file__).resolve().parents[2]


def _train_cli():
    sys.path.insert(0, str(ROOT))
    import train as train_cli

    return train_cli


@pytest.mark.slow
def test_a_resume_through_the_cli_does_not_need_the_init_from_directory(tmp_path):
    train_cli = _train_cli()
    base = ["--config", "tiny", "--no-progress"]
    data = ["task.n_train=40", "task.n_valid=4", "eval.max_new_tokens=4"]
    train_cli.main([*base, "--workdir", str(tmp_path / "a"), *data, "train.steps=2"])
    start_b = [*base, "--workdir", str(tmp_path / "b"), *data, f"train.init_from={tmp_path / 'a'}"]
    train_cli.main([*start_b, "train.steps=2"])
    (tmp_path / "a").rename(tmp_path / "a_moved")  # resuming reads the run directory only
    summary = train_cli.main([*start_b, "train.steps=3"])
    assert summary["resumed_from"] == 2 and summary["step"] == 3


@pytest.mark.slow
def test_a_run_started_from_hugging_face_is_itself_a_source_and_resumes_without_either(tmp_path):
    """Coconut's recipe: a CoT run on GPT-2, then `latent.first_stage=1 train.init_from=<that run>`,
    both under the same preset (whose vocab_size=50257 the first run grew)."""
    from latent import sharding
    from latent.run import load_run
    from latent.train import init_from
    from latent.train.loop import train
    from tests.models.test_pretrained import hf_directory, task_texts, write_coconut_json

    examples = get_task("prosqa_small").generate(44, seed=3)
    hf_directory("gpt2", tmp_path / "gpt2", task_texts())
    data = [f"task.path={write_coconut_json(tmp_path / 'train.json', examples[:40])}",
            f"task.valid_path={write_coconut_json(tmp_path / 'valid.json', examples[40:])}",
            "train.batch_size=8", "optimizer.grad_accum=1", "task.max_len=200", "eval.max_new_tokens=4",
            "eval.batch_size=4", "checkpoint.async_save=false", "latent.max_latent_stage=2"]
    cot = apply_overrides(load_preset("prosqa_coconut_gpt2"),
                          [*data, f"train.init_from={tmp_path / 'gpt2'}", "train.steps=2"])
    with pytest.warns(UserWarning, match="model section comes from its config.json"):
        train(cot, tmp_path / "cot", progress=False)

    coconut_args = [*data, f"train.init_from={tmp_path / 'cot'}", "latent.first_stage=1"]
    coconut = apply_overrides(load_preset("prosqa_coconut_gpt2"), [*coconut_args, "train.steps=2"])
    start_cfg, start_params, _, _ = init_from.load_start(coconut, sharding.make_mesh(coconut.mesh))
    cot_run = load_run(tmp_path / "cot")
    cot_cfg = cot_run.cfg
    assert start_cfg.model == cot_cfg.model and cot_cfg.model.vocab_size != 50257
    for ours, theirs in zip(jax.tree.leaves(start_params), jax.tree.leaves(cot_run.params)):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))

    with pytest.warns(UserWarning, match="model section comes from its config.json"):
        assert train(coconut, tmp_path / "coconut", progress=False, stop_at_step=1)["step"] == 1
    (tmp_path / "cot").rename(tmp_path / "cot_moved")
    (tmp_path / "gpt2").rename(tmp_path / "gpt2_moved")
    summary = _train_cli().main(["--config", "prosqa_coconut_gpt2", "--workdir", str(tmp_path / "coconut"),
                                 "--no-progress", *coconut_args, "train.steps=2"])
    assert summary["resumed_from"] == 1 and summary["step"] == 2


def test_a_warmup_that_trained_its_first_phase_resumes_without_reading_init_from(tmp_path):

    train_cli = _train_cli()
    warm = apply_overrides(load_preset("tiny"), ["abstract.rounds=1"])
    plain = load_preset("tiny")
    assert not train_cli.has_started(tmp_path, warm)
    (tmp_path / "round1" / "bottleneck" / "checkpoints" / "4").mkdir(parents=True)
    assert train_cli.has_started(tmp_path, warm)  # its checkpoints live in its first phase
    assert not train_cli.has_started(tmp_path, plain)
    (tmp_path / "checkpoints" / "2").mkdir(parents=True)
    assert train_cli.has_started(tmp_path, plain)
