"""Config: one source of defaults, dotted overrides with type checks, dict round trip."""

import dataclasses

import pytest

from latent.config import Config, ConfigError, ModelConfig
from latent.config_io import apply_overrides, from_dict, to_dict


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
    ("task.scorer=bogus", r"task.scorer='bogus' is not allowed; choose one of \('auto', 'exact', 'numeric', 'choice'\)"),
    ("optimizer.lr_scale=feedback", r"optimizer.lr_scale: 'feedback' is not REGEX:FACTOR"),
    ("optimizer.lr_scale=feedback:x", r"optimizer.lr_scale: the factor of 'feedback' must be a number >= 0; got 'x'"),
    ("optimizer.lr_scale=(:2", r"optimizer.lr_scale: '\(' is not a regular expression"),
    ("rl.group_size=1", r"rl.group_size=1 is too small for rl.advantage=grpo: a group advantage compares"),
    ("rl.aggregation=sequence", r"rl.aggregation='sequence' is not allowed; choose one of \('token_mean', 'sequence_mean', 'sequence_sum'\)"),
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
    with pytest.raises(dataclasses.FrozenInstanceError):
        ModelConfig().d_model = 3


def test_every_preset_in_configs_loads_and_round_trips():
    from pathlib import Path

    from latent.config_io import load_preset

    names = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "configs").glob("*.py"))
    assert "prosqa_abstract_keyed" in names and "default" in names and "prosqa_coconut_gpt2" in names
    for name in names:
        cfg = load_preset(name)
        assert from_dict(to_dict(cfg)) == cfg, name


def test_a_corrupt_config_json_names_its_file_and_line(tmp_path):
    from latent.config_io import load_preset
    from latent.run import load_run

    (tmp_path / "config.json").write_text('{\n  "model": {\n    "d_model": 32,,\n  }\n}\n')
    with pytest.raises(ConfigError, match=rf"{tmp_path / 'config.json'}:3: invalid JSON"):
        load_run(tmp_path)
    with pytest.raises(ConfigError, match=rf"{tmp_path / 'config.json'}:3: invalid JSON"):
        load_preset(str(tmp_path / "config.json"))


BOOL_KEYS = ["train.steps", "train.seed", "model.d_model", "latent.c_thought", "eval.n_examples", "mesh.data",
             "optimizer.lr", "model.rope_theta", "train.time_limit_minutes", "rl.group_size", "rl.clip_high"]


@pytest.mark.parametrize("key", BOOL_KEYS)
def test_a_bool_is_refused_where_a_number_is_declared(key, tmp_path):
    """True is an int to Python: train.steps=True must not run one step, on any path in."""
    import dataclasses

    from latent.config_io import load_preset

    section, name = key.split(".")
    message = rf"{key} takes an? (int|number); got '?true'?"
    with pytest.raises(ConfigError, match=message):  # the command line
        apply_overrides(Config(), [f"{key}=true"])
    with pytest.raises(ConfigError, match=message.replace("true", "True")):  # a dict of overrides
        apply_overrides(Config(), {key: True})
    with pytest.raises(ConfigError, match=message.replace("true", "True")):  # a run's config.json
        from_dict({section: {name: True}})
    with pytest.raises(ConfigError, match=message.replace("true", "True")):  # code: presets, replace
        dataclasses.replace(getattr(Config(), section), **{name: True})
    preset = tmp_path / "bool_preset.py"
    preset.write_text(
        "import dataclasses\nfrom latent.config import Config\n\n\ndef get_config():\n    cfg = Config()\n"
        f"    return cfg.replace({section}=dataclasses.replace(cfg.{section}, {name}=True))\n"
    )
    with pytest.raises(ConfigError, match=message.replace("true", "True")):  # a preset file
        load_preset(str(preset))


@pytest.mark.parametrize("section, fields, message", [
    ("train", {"seed": 1.5}, r"train.seed takes an int; got 1.5"),
    ("optimizer", {"lr": "3e-4"}, r"optimizer.lr takes a number; got '3e-4'"),
    ("task", {"path": 3}, r"task.path takes a string; got 3"),
    ("task", {"format": "cots"}, r"task.format='cots' is not allowed; choose one of \('cot', 'no_cot', 'abstract', "),
    ("model", {"family": "bert"}, r"model.family='bert' is not allowed; choose one of \('gpt2', 'llama'"),
    ("eval", {"switch_policy": "greedy"}, r"eval.switch_policy='greedy' is not allowed; choose one of \('auto', 'none'"),
    ("eval", {"top_k": -1}, r"eval.top_k must be an int >= 0 \(0: off\); got -1"),
    ("eval", {"top_k": 2.0}, r"eval.top_k takes an int; got 2.0"),
    ("model", {"canon": -1}, r"model.canon must be an int >= 0 \(previous positions mixed in\); got -1"),
    ("model", {"rotary_fraction": 0.0}, r"model.rotary_fraction must be in \(0, 1\]; got 0.0"),
    ("task", {"valid_fraction": 1.0}, r"task.valid_fraction must be in \[0, 1\); got 1.0"),
    ("train", {"time_limit_minutes": 0}, r"train.time_limit_minutes must be > 0 or None; got 0"),
    ("train", {"new_token_init": "copy:"}, r"train.new_token_init must be random, mean, copy:<token> or None; got 'copy:'"),
    ("latent", {"switch_span": 0}, r"latent.switch_span must be a positive int; got 0"),
    ("latent", {"uniform_prob": 1.5}, r"latent.uniform_prob must be in \[0, 1\]; got 1.5"),
    ("latent", {"latent_grad": "truncate(x)"}, r"latent.latent_grad must be full, detach or truncate\(n\); got 'truncate\(x\)'"),
    ("abstract", {"distill_steps": -1}, r"abstract.distill_steps must be an int >= 0 \(0: train.steps\); got -1"),
    ("rl", {"group_size": 1, "advantage": "rloo"}, r"rl.group_size=1 is too small for rl.advantage=rloo"),
    ("rl", {"group_size": 0, "advantage": "dr_grpo"}, r"rl.group_size=0 is too small for rl.advantage=dr_grpo"),
    ("rl", {"advantage": "gae"}, r"rl.advantage='gae' is not allowed; choose one of \('grpo', 'dr_grpo', 'rloo'\)"),
    ("rl", {"loss": "ppo"}, r"rl.loss='ppo' is not allowed; choose one of \('clip', 'gppo'\)"),
    ("rl", {"clip_low": -0.1}, r"rl.clip_low must be >= 0; got -0.1"),
    ("rl", {"clip_high": -0.28}, r"rl.clip_high must be >= 0; got -0.28"),
    ("rl", {"inner_epochs": 0}, r"rl.inner_epochs must be a positive int; got 0"),
    ("rl", {"kl_coef": -0.01}, r"rl.kl_coef must be >= 0; got -0.01"),
    ("rl", {"entropy_coef": -0.01}, r"rl.entropy_coef must be >= 0; got -0.01"),
    ("rl", {"temperature": 0.0}, r"rl.temperature must be > 0; got 0.0"),
    ("rl", {"top_p": 0.0}, r"rl.top_p must be in \(0, 1\]; got 0.0"),
    ("rl", {"max_new_tokens": 0}, r"rl.max_new_tokens must be a positive int; got 0"),
    ("rl", {"prompts_per_step": 0}, r"rl.prompts_per_step must be a positive int; got 0"),
    ("rl", {"adv_eps": 0.0}, r"rl.adv_eps must be > 0; got 0.0"),
])
def test_each_section_checks_its_fields_when_built(section, fields, message):
    import dataclasses

    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(getattr(Config(), section), **fields)


def test_a_section_of_the_wrong_kind_is_refused():
    from latent.config import EvalConfig

    with pytest.raises(ConfigError, match=r"config section 'train' takes a TrainConfig"):
        Config(train=EvalConfig())


def test_literal_choices_parse_from_the_command_line():
    cfg = apply_overrides(Config(), ["eval.switch_policy=entropy", "task.format=codes", "model.family=qwen3",
                                     "latent.latent_grad=truncate(2)", "train.new_token_init=copy:<<",
                                     "rl.advantage=rloo", "rl.loss=gppo", "rl.aggregation=sequence_sum"])
    assert (cfg.eval.switch_policy, cfg.task.format, cfg.model.family) == ("entropy", "codes", "qwen3")
    assert (cfg.latent.latent_grad, cfg.train.new_token_init) == ("truncate(2)", "copy:<<")
    assert (cfg.rl.advantage, cfg.rl.loss, cfg.rl.aggregation) == ("rloo", "gppo", "sequence_sum")


def test_module_registries_hold_the_config_choices():
    """Each set of choices is written once, as a Literal alias in latent.config; a module that
    dispatches on a choice by name keeps exactly those names."""
    from typing import get_args

    from latent.config import Advantage, DecodePolicy, Family, FeedbackRule, LossAggregation, PolicyLoss, ScorerName
    from latent.data.tasks.scoring import SCORE_FUNCTIONS
    from latent.infer.policies import POLICIES
    from latent.methods.rl.objective import ADVANTAGES, AGGREGATIONS, POLICY_LOSSES
    from latent.models.presets import FAMILY_TRAITS
    from latent.nn.feedback import FEEDBACKS

    assert set(FEEDBACKS) == set(get_args(FeedbackRule))
    assert set(POLICIES) == set(get_args(DecodePolicy))
    assert {"auto", *SCORE_FUNCTIONS} == set(get_args(ScorerName))
    assert set(FAMILY_TRAITS) == set(get_args(Family))
    assert set(ADVANTAGES) == set(get_args(Advantage))
    assert set(POLICY_LOSSES) == set(get_args(PolicyLoss))
    assert set(AGGREGATIONS) == set(get_args(LossAggregation))


def test_a_config_saved_before_the_rl_section_loads_with_its_defaults(tmp_path):
    """A run's config.json from before issue 23 has no `rl`: it loads (as a preset and as a
    checkpoint's config), gets RLConfig's defaults, and resuming it changes nothing."""
    import json

    from latent.config import RLConfig
    from latent.config_io import load_preset
    from latent.run.checkpoint import changed_fields, config_of

    saved = to_dict(apply_overrides(Config(), ["model.n_layers=3", "rl.group_size=4"]))
    del saved["rl"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    for cfg in (from_dict(saved), load_preset(str(tmp_path / "config.json")), config_of({"config": saved})):
        assert cfg.rl == RLConfig() and cfg.model.n_layers == 3
        assert from_dict(to_dict(cfg)) == cfg
        assert changed_fields(cfg, apply_overrides(Config(), ["model.n_layers=3"])) == []
