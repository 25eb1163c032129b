"""No config field silently does nothing: SWITCH refuses Coconut's curriculum knobs, and the
entropy policy feeds a text model p^T E (SwiReasoning) instead of its raw hidden states."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from latent.config import ConfigError
from latent.config_io import apply_overrides
from latent.data.splits import fit_tokenizer, resolve_vocab
from latent.data.tasks import get_task
from latent.eval.evaluator import Evaluator
from latent.infer import engine
from latent.methods import resolve_feedback, resolve_policy
from latent.methods.switch import SwitchSource
from latent.nn import Transformer
from tests.conftest import tiny_run as tiny


@pytest.mark.parametrize("field, value", [("uniform_prob", "0.3"), ("max_latent_stage", "3"),
                                          ("pad_latent_to_max", "true")])
def test_switch_refuses_coconut_only_fields(field, value):
    examples = get_task("prosqa_small").generate(8, seed=0)
    tokenizer = fit_tokenizer(examples, [], "cot")
    cfg = resolve_vocab(tiny("latent.mode=switch"), tokenizer)
    SwitchSource(cfg, examples, tokenizer, batch_size=4)  # the defaults are fine
    with pytest.raises(ConfigError, match=rf"latent.{field}=.* does nothing under latent.mode=switch"):
        SwitchSource(apply_overrides(cfg, [f"latent.{field}={value}"]), examples, tokenizer, batch_size=4)


def test_entropy_policy_feeds_a_text_model_soft_embeddings(monkeypatch):
    cfg = tiny("eval.switch_policy=entropy", "eval.max_new_tokens=6", "eval.latent_budget=2")
    assert resolve_policy(cfg) == "entropy" and resolve_feedback(cfg) == "soft"
    assert resolve_feedback(apply_overrides(cfg, ["latent.mode=coconut"])) == "model"  # its trained rule
    examples = get_task("prosqa_small").generate(4, seed=0)
    tokenizer = fit_tokenizer(examples, [], "cot")
    cfg = resolve_vocab(cfg, tokenizer)
    model = Transformer(cfg.model, rngs=nnx.Rngs(3))
    embed_VxD = np.asarray(model.embed[...], np.float64)
    fed = []  # (hidden, logits, what the latent step received) of every decoding iteration

    def recording_input(model, feedback, hidden_BxD, logits_BxV):
        out_BxD = original(model, feedback, hidden_BxD, logits_BxV)
        jax.debug.callback(lambda *xs: fed.append([np.asarray(x, np.float64) for x in xs]), hidden_BxD, logits_BxV, out_BxD)
        return out_BxD

    original = engine.latent_input
    monkeypatch.setattr(engine, "latent_input", recording_input)
    engine.make_generate.cache_clear()
    graphdef, params = nnx.split(model)
    results = Evaluator(graphdef, cfg.model, tokenizer, examples, lambda p, e: False, cfg.eval,
                        max_len=cfg.task.max_len, progress=False, policy=resolve_policy(cfg),
                        feedback=resolve_feedback(cfg))(params)
    engine.make_generate.cache_clear()
    assert results["mean_latent_steps"] > 0 and fed  # latent steps were taken
    for hidden_BxD, logits_BxV, out_BxD in fed:
        z_BxV = logits_BxV / cfg.model.feedback_temperature
        p_BxV = np.exp(z_BxV - z_BxV.max(-1, keepdims=True))
        p_BxV /= p_BxV.sum(-1, keepdims=True)
        np.testing.assert_allclose(out_BxD, p_BxV @ embed_VxD, atol=1e-5)
        assert not np.allclose(out_BxD, hidden_BxD)
