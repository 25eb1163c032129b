"""Runs whose sequences would run past a learned position table (model.max_seq_len) are refused
before training and before decoding, naming the fields and their numbers; rotary models are not
bounded by max_seq_len."""

from __future__ import annotations

import pytest

from latent.config import ConfigError, EvalConfig
from latent.config_io import apply_overrides
from latent.eval.evaluator import Evaluator
from latent.methods import check_run_positions
from latent.train.loop import train
from tests.conftest import tiny_run as tiny


def test_training_refuses_a_learned_table_shorter_than_its_sequences(tmp_path):
    cfg = tiny("model.positions=learned", "model.max_seq_len=100", "task.max_len=64", "eval.max_new_tokens=40")
    with pytest.raises(ConfigError, match=r"model.max_seq_len=100 \(learned positions\) is shorter than the longest "
                                          r"evaluation sequence: task.max_len=64 \+ eval.max_new_tokens=40 = 104"):
        train(cfg, tmp_path, progress=False)
    assert not (tmp_path / "config.json").exists()


def test_coconut_counts_its_thoughts_and_switch_its_spans():
    coconut = tiny("model.positions=learned", "model.max_seq_len=74", "task.max_len=64", "eval.max_new_tokens=4",
                   "latent.mode=coconut", "latent.max_latent_stage=3", "latent.c_thought=2")
    with pytest.raises(ConfigError, match=r"evaluation sequence: .* \+ latent steps \+ <eot>=7 = 75"):
        check_run_positions(coconut, "fixed")
    check_run_positions(apply_overrides(coconut, ["model.max_seq_len=75"]), "fixed")  # fits exactly
    short = apply_overrides(coconut, ["model.max_seq_len=69", "eval.max_new_tokens=1"])
    with pytest.raises(ConfigError, match=r"training sequence: task.max_len=64 \+ latent.max_latent_stage\*latent.c_thought=6 = 70"):
        check_run_positions(short, "fixed")
    switch = apply_overrides(coconut, ["model.max_seq_len=75", "latent.mode=switch", "eval.max_latent_total=20"])
    with pytest.raises(ConfigError, match=r"eval.max_latent_total=20 = 88"):
        check_run_positions(switch, "model")
    check_run_positions(apply_overrides(coconut, ["model.positions=rope", "model.max_seq_len=16"]), "fixed")


def test_evaluate_refuses_before_decoding():
    model_cfg = tiny("model.positions=learned", "model.max_seq_len=64").model
    with pytest.raises(ConfigError, match=r"task.max_len=60 \+ eval.max_new_tokens=4 \+ latent steps \+ <eot>=4 = 68"):
        Evaluator(None, model_cfg, None, [], None, EvalConfig(max_new_tokens=4), max_len=60, policy="fixed",
                  latent_steps=3)
