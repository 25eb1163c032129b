"""Config: one source of defaults, dotted overrides with type checks, dict round trip."""

import pytest

from latent.config import Config, ConfigError, ModelConfig, apply_overrides, from_dict, to_dict


def test_overrides_parse_by_declared_type():
    cfg = apply_overrides(Config(), [
        "train.steps=7", "train.batch_size=3", "train.seed=5", "train.checkpoint_every=2", "train.eval_every=4",
        "task.path=data/x.jsonl", "optimizer.lr=3e-4", "model.attn_gate=headwise", "model.tie_embeddings=true",
        "model.n_kv_heads=2", "eval.n_examples=none",
    ])
    assert (cfg.train.steps, cfg.train.batch_size, cfg.train.seed) == (7, 3, 5)
    assert (cfg.train.checkpoint_every, cfg.train.eval_every) == (2, 4)
    assert cfg.task.path == "data/x.jsonl" and cfg.optimizer.lr == 3e-4
    assert cfg.model.attn_gate == "headwise" and cfg.model.tie_embeddings is True
    assert cfg.model.n_kv_heads == 2 and cfg.eval.n_examples is None


def test_derived_sizes_follow_later_overrides():
    cfg = apply_overrides(Config(), ["model.d_model=128", "model.n_heads=2"])
    assert cfg.model.resolved_head_dim == 64 and cfg.model.resolved_kv_heads == 2


@pytest.mark.parametrize("override, message", [
    ("train.stepz=3", r"unknown config key 'train.stepz'; allowed here: train.steps, train.batch_size"),
    ("train.steps=abc", r"train.steps takes an int; got 'abc'"),
    ("train.steps=1.5", r"train.steps takes an int; got '1.5'"),
    ("model.attn_gate=always", r"model.attn_gate='always' is not allowed; choose one of \('none', 'headwise', 'elementwise'\)"),
    ("model.tie_embeddings=maybe", r"model.tie_embeddings takes true or false"),
    ("train=3", r"config key 'train' is a section"),
    ("bogus.x=1", r"unknown config key 'bogus.x'; allowed here: model.\*, task.\*"),
    ("train.steps", r"must look like key.sub=value"),
    ("model.n_heads=3", r"model.d_model=64 is not divisible by model.n_heads=3"),
    ("latent.first_stage=-1", r"latent.first_stage must be an int >= 0; got -1"),
    ("latent.stage0_epochs=0", r"latent.stage0_epochs must be a positive int or None; got 0"),
])
def test_bad_overrides_name_the_key_and_what_is_allowed(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(Config(), [override])


def test_thought_loss_must_not_be_negative():
    with pytest.raises(ConfigError, match=r"latent.thought_loss must be >= 0; got -1.0"):
        apply_overrides(Config(), ["latent.mode=switch", "latent.thought_loss=-1.0"])
    # text runs ignore latent.*: the comparison's CoT arm is the Coconut preset with latent.mode=none
    assert apply_overrides(Config(), ["latent.thought_loss=1.0"]).latent.thought_loss == 1.0


def test_dict_round_trip_and_unknown_keys():
    cfg = apply_overrides(Config(), ["model.n_layers=3", "task.path=a.json"])
    assert from_dict(to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match=r"unknown config key 'model.n_layer'"):
        from_dict({"model": {"n_layer": 3}})


def test_model_config_is_frozen():
    with pytest.raises(Exception):
        ModelConfig().d_model = 3


def test_every_preset_in_configs_loads_and_round_trips():
    from pathlib import Path

    from latent.config import load_preset

    names = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "configs").glob("*.py"))
    assert "prosqa_abstract_keyed" in names and "default" in names and "prosqa_coconut_gpt2" in names
    for name in names:
        cfg = load_preset(name)
        assert from_dict(to_dict(cfg)) == cfg, name


def test_a_corrupt_config_json_names_its_file_and_line(tmp_path):
    from latent.config import load_preset
    from latent.run import load_run

    (tmp_path / "config.json").write_text('{\n  "model": {\n    "d_model": 32,,\n  }\n}\n')
    with pytest.raises(ConfigError, match=rf"{tmp_path / 'config.json'}:3: invalid JSON"):
        load_run(tmp_path)
    with pytest.raises(ConfigError, match=rf"{tmp_path / 'config.json'}:3: invalid JSON"):
        load_preset(str(tmp_path / "config.json"))
