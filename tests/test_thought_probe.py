"""scripts/thought_probe.py: its per-slot bookkeeping reads the position that feeds each slot, in
Coconut's and in SWITCH's layout."""

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latent.config import LatentConfig
from latent.data.tasks import get_task
from latent.data.tokenizer import Tokenizer
from latent.eval.states import latent_batches
from latent.methods.coconut import curriculum
from latent.methods.switch import spans as switch
from latent.nn.recurrence import LatentOutput

_SPEC = importlib.util.spec_from_file_location(
    "thought_probe", Path(__file__).resolve().parents[1] / "scripts" / "thought_probe.py")
thought_probe = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(thought_probe)


@pytest.mark.parametrize("mode", ["coconut", "switch"])
def test_an_oracle_names_every_step_result_and_a_shifted_one_none(monkeypatch, mode):
    examples = [e for e in get_task("prosqa_small").generate(30, seed=1) if len(e.steps) == 3][:6]
    tokenizer = Tokenizer.fit_word_level([e.question + " " + " ".join(e.steps) + " " + e.answer for e in examples])
    cfg = LatentConfig(mode=mode, c_thought=2, max_latent_stage=3, pad_latent_to_max=True, switch_start=1, switch_span=2)
    stage, V = 2, tokenizer.vocab_size
    if mode == "coconut":
        records, _ = curriculum.tokenize_latent_examples(examples, tokenizer, max_len=512)
        K, batches = latent_batches(records, tokenizer, cfg, stage, batch_size=100)
    else:
        spans = [switch.fixed_span(3, 1, 2)] * len(examples)
        records, _ = switch.tokenize_switch_examples(examples, tokenizer, 512, spans)
        K, batches = latent_batches(records, tokenizer, cfg, stage, batch_size=100)
    assert K == 4 and len(batches) == 1
    targets_BxK = np.maximum(batches[0]["thought_targets"], 0)

    def fake_forward(feeding_shift):
        def forward(model, prefix, prefix_mask, n_latent, suffix, suffix_mask, *, max_latent):
            feeding = jax.nn.one_hot(np.roll(targets_BxK, feeding_shift, axis=1), V)  # slot j's input names...
            return LatentOutput(
                logits=jax.nn.one_hot(jnp.concatenate([suffix[:, 1:], suffix[:, :1]], 1), V),
                hidden=None, prefix_logits=jnp.broadcast_to(feeding[:, :1], (*prefix.shape, V)),
                latent_logits=jnp.concatenate([feeding[:, 1:], feeding[:, :1]], 1), latent_hidden=None, cache=None,
            )
        return forward

    monkeypatch.setattr(thought_probe, "continuous_thought_forward", fake_forward(0))
    oracle = thought_probe.probe(None, K, batches)
    assert oracle["slots_naming_step_result"] == [None, 1.0, None, 1.0] and oracle["suffix_all_right"] == 1.0
    monkeypatch.setattr(thought_probe, "continuous_thought_forward", fake_forward(1))
    shifted = thought_probe.probe(None, K, batches)
    assert shifted["slots_naming_step_result"][1] < 0.5 and shifted["n"] == len(records)
