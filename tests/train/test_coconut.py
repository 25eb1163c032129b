"""Coconut training through the real loop: one compile per stage (or one overall), exact
resume across stage changes and optimizer resets, latent evaluation, and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import tokenizers

from latent.config import ConfigError
from latent.config_io import apply_overrides, load_preset
from latent.data.tokenizer import Tokenizer
from latent.methods.coconut.curriculum import check_latent_tokens
from latent.train.loop import train
from tests.train.test_loop import ROOT, losses

# 40 examples / batch 8 = 5 steps per epoch = one stage every 5 steps; max stage 2. One layer:
# what these tests check (compiles per stage, exact resume, the evaluated thought counts) does not
# depend on depth, and a layer less halves every compile, trace and step.
COCONUT = [
    "latent.mode=coconut", "latent.epochs_per_stage=1", "latent.max_latent_stage=2", "task.n_train=40",
    "train.batch_size=8", "latent.reset_optimizer=true", "latent.uniform_prob=0.3", "train.log_every=1",
    "model.n_layers=1",
]


def coconut(*overrides):
    return apply_overrides(load_preset("tiny"), COCONUT + list(overrides))


@pytest.mark.slow
def test_one_compile_per_stage_and_one_overall_with_padding(tmp_path):
    # uniform_prob > 0 mixes stages, so every batch needs the top slot count: use 0 here.
    per_stage = train(coconut("train.steps=16", "latent.uniform_prob=0.0"), tmp_path / "a", progress=False)
    assert [k for _, k, _ in per_stage["batch_shapes"]] == [0, 1, 2]  # stages 0, 1, 2, 3 (3 > max: 2 slots)
    assert per_stage["train_step_compiles"] == 3
    once = train(coconut("train.steps=16", "latent.compile=once"), tmp_path / "b", progress=False)
    assert [k for _, k, _ in once["batch_shapes"]] == [2] and once["train_step_compiles"] == 1
    # Widths fitted to each batch (train.length_grouping): one compile per stage and width bucket.
    # The first 8 steps of the same 16-step schedule (stages 0 and 1, three widths): the widths
    # that equal the fixed ones reuse the programs compiled above from JAX's persistent cache.
    grouped = train(coconut("train.steps=16", "latent.uniform_prob=0.0", "train.length_grouping=2",
                            "train.length_bucket=32"), tmp_path / "c", progress=False, stop_at_step=8)
    assert sorted({k for _, k, _ in grouped["batch_shapes"]}) == [0, 1]  # stages 0 and 1
    assert len({p for p, k, _ in grouped["batch_shapes"] if k == 0}) > 1  # widths fitted to each batch
    assert all(p % 32 == 0 and s % 32 == 0 for p, _, s in grouped["batch_shapes"])
    assert grouped["train_step_compiles"] == len(grouped["batch_shapes"])


@pytest.mark.slow
def test_resume_across_stages_gives_identical_losses_and_latent_eval_runs(tmp_path):
    cfg = coconut("train.steps=16", "train.checkpoint_every=4")
    straight = train(cfg, tmp_path / "straight", progress=False)
    train(cfg, tmp_path / "resumed", progress=False, stop_at_step=7)  # mid-stage 1
    resumed = train(cfg, tmp_path / "resumed", progress=False)
    assert resumed["resumed_from"] == 7
    a, b = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert [a[s] for s in range(1, 17)] == [b[s] for s in range(1, 17)]
    assert straight["eval"]["mean_latent_steps"] == 2.0  # stage 3 > max stage 2: 2 thoughts

    def eval_cli(*args):
        return subprocess.run(
            [sys.executable, "eval.py", "--workdir", str(tmp_path / "straight"), "--no-progress", *args],
            cwd=ROOT, capture_output=True, text=True,
        )

    done = eval_cli("--latent-steps", "1", "--out", str(tmp_path / "one.json"))
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "one.json").read_text())
    assert result["mean_latent_steps"] == 1.0 and result["policy"] == "fixed"
    assert all(r["latent_steps"] == 1 for r in result["records"])
    too_many = eval_cli("--latent-steps", "3")
    assert too_many.returncode == 2 and "latent.max_latent_stage * latent.c_thought = 2" in too_many.stderr


def test_missing_latent_tokens_are_named():
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel({"<pad>": 0, "<eos>": 1, "a": 2}, unk_token="a"))
    tokenizer = Tokenizer(backend)
    model_cfg = load_preset("tiny").model
    with pytest.raises(ConfigError, match=r"lacks \['<bot>', '<eot>'\]"):
        check_latent_tokens(tokenizer, model_cfg)
    fitted = Tokenizer.fit_word_level(["a b"])
    with pytest.raises(ConfigError, match=r"model.vocab_size=2 has no embedding row"):
        check_latent_tokens(fitted, model_cfg.replace(vocab_size=2))


@pytest.mark.slow
def test_switch_run_compiles_per_stage_and_evaluates_with_the_model_policy(tmp_path):
    cfg = apply_overrides(load_preset("tiny"), [
        "latent.mode=switch", "latent.epochs_per_stage=1", "latent.switch_span=2", "task.n_train=40",
        "train.batch_size=8", "train.steps=16", "train.eval_every=16", "model.n_layers=1",
    ])
    summary = train(cfg, tmp_path, progress=False)
    assert [k for _, k, _ in summary["batch_shapes"]] == [0, 1, 2] and summary["train_step_compiles"] == 3
    assert summary["eval"]["policy"] == "model"
    assert 0 <= summary["eval"]["mean_latent_steps"] <= cfg.eval.max_latent_total


def test_evaluation_uses_the_stage_of_the_last_trained_batch():
    """A model evaluated right at a stage change decodes with the thoughts it was trained with."""
    from latent.data.splits import fit_tokenizer, load_splits
    from latent.methods.coconut import CoconutSource

    cfg = coconut("latent.uniform_prob=0.0")
    train_examples, valid, _ = load_splits(cfg)
    tokenizer = fit_tokenizer(train_examples, valid, "cot")
    source = CoconutSource(cfg, train_examples, tokenizer, cfg.train.batch_size)
    per_stage = len(source.records) // cfg.train.batch_size  # steps per epoch = per stage
    assert source.stage(per_stage) == 1  # the batch of step `per_stage` is the first of stage 1
    assert source.trained_stage(per_stage) == 0 and source.trained_stage(per_stage + 1) == 1
    assert source.eval_latent_steps(per_stage) == 0  # after `per_stage` steps, all of stage 0
    assert source.eval_latent_steps(per_stage + 1) == 1
