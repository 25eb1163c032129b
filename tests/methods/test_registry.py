"""Each run's config selects one registered method, and a new method is one module: the
example method (tests/methods/example_pause.py, the README's) trains and evaluates through
train() with `method=pause` and nothing else changed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from latent.config import ConfigError
from latent.data.special_tokens import SPECIAL
from latent.data.splits import load_valid
from latent.data.tokenizer import Tokenizer
from latent.methods import METHODS, method_of, resolve_policy
from latent.train.loop import train
from tests.conftest import tiny_run as tiny
from tests.methods import example_pause


@pytest.mark.parametrize("overrides, name, policy", [
    ((), "sft", "none"),
    (("task.format=no_cot",), "sft", "none"),
    (("latent.mode=coconut",), "coconut", "fixed"),
    (("latent.mode=switch",), "switch", "model"),
    (("task.format=abstract",), "abstract_cot", "none"),
    (("task.format=abstract_bottleneck", "abstract.rounds=1"), "abstract_cot", "none"),
    (("abstract.rounds=2",), "abstract_cot", "none"),  # a warm-up writes its phases' formats itself
    (("task.format=codes",), "token_assorted", "none"),
    (("method=coconut",), "coconut", "fixed"),  # by name
])
def test_each_config_selects_its_method_and_decoding_policy(overrides, name, policy):
    cfg = tiny(*overrides)
    assert method_of(cfg).name == name and resolve_policy(cfg) == policy


def test_settings_of_two_methods_or_an_unknown_name_are_refused():
    with pytest.raises(ConfigError, match=r"more than one method: abstract_cot .*coconut .*pick one"):
        method_of(tiny("latent.mode=coconut", "task.format=abstract"))
    with pytest.raises(ConfigError, match=r"method='nope' is not a registered method; choose auto or one of \["):
        method_of(tiny("method=nope"))


def test_every_built_in_method_is_registered_once_with_a_selector():
    assert {"sft", "coconut", "switch", "abstract_cot", "token_assorted"} <= set(METHODS)
    assert all(m.selected_by for m in METHODS.values())


def test_a_new_method_is_one_module_run_by_name(tmp_path):
    """train() runs the example method: its batches and prompts hold the pauses after the question."""
    cfg = tiny("method=pause", "train.steps=2", "train.batch_size=4", "task.n_train=16", "task.n_valid=4",
               "eval.max_new_tokens=4", "train.eval_every=2", "train.checkpoint_every=2")
    seen = {}
    source = example_pause.Pause.source

    def spy_source(self, cfg, examples, tokenizer, batch_size):
        seen["source"] = source(self, cfg, examples, tokenizer, batch_size)
        seen["pause"] = tokenizer.id_of(SPECIAL.latent)
        return seen["source"]

    example_pause.Pause.source = spy_source
    try:
        summary = train(cfg, tmp_path, progress=False)
    finally:
        example_pause.Pause.source = source
    record = seen["source"].records[0]
    pauses = record.tokens[record.prompt_len - example_pause.PAUSES: record.prompt_len]
    assert list(pauses) == [seen["pause"]] * example_pause.PAUSES and not record.loss_mask[: record.prompt_len].any()
    assert summary["step"] == 2 and summary["eval"]["n"] == 4 and np.isfinite(summary["eval"]["accuracy"])
    assert json.loads((tmp_path / "config.json").read_text())["method"] == "pause"
    tokenizer = Tokenizer.from_file(tmp_path / "tokenizer.json")
    prompts, _ = METHODS["pause"].prompt_layout(cfg, tokenizer).tokenize(load_valid(cfg), tokenizer, cfg.task.max_len)
    assert all(list(p.tokens[-example_pause.PAUSES:]) == [seen["pause"]] * example_pause.PAUSES for p in prompts)


def test_a_keyed_round_one_without_a_warm_up_is_refused_before_anything_is_read(tmp_path):
    from latent.methods import method_of

    cfg = tiny("task.format=abstract", "abstract.round1=keyed")
    with pytest.raises(ConfigError, match=r"abstract.round1=keyed sets the warm-up's first z: it needs abstract.rounds >= 1"):
        method_of(cfg).run(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
