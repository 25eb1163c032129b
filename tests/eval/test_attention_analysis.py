"""eval.py --analysis attention (latent.eval.attention): per-layer and per-head sink share and gate
statistics against numpy on the model's own projections, and the CLI end to end on a trained run."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from latent.errors import ConfigError
from latent.eval.analyses import standalone_analysis
from latent.eval.attention import attention_stats, diagnosed_graphdef, report
from latent.methods.sft import sft_objective
from latent.models import presets
from latent.nn import Transformer
from latent.nn.diagnostics import SMALL_GATE
from tests.conftest import eval_cli, tiny_run
from tests.conftest import tiny_model_fields as tiny
from tests.nn.attention_by_hand import first_layer_by_hand

PAD = 0


def left_padded(lengths_B, T, rng, vocab_size):
    """A collated batch like latent.data.pipeline.collate's: rows of `lengths_B` real tokens,
    left-padded to T, every real token labelled but the first."""
    real_BxT = np.arange(T)[None] >= (T - np.asarray(lengths_B))[:, None]
    tokens_BxT = np.where(real_BxT, rng.integers(1, vocab_size, (len(lengths_B), T)), PAD).astype(np.int32)
    loss_mask_BxT = real_BxT & ~np.eye(T, dtype=bool)[T - np.asarray(lengths_B)]
    return {"tokens": tokens_BxT, "padding_mask": real_BxT, "loss_mask": loss_mask_BxT}


def one_layer_by_hand(model, batches):
    """Per head, the mean softmax weight on the example's first real key over the real queries of
    all `batches` ([H]), and every real query's gate values ([N, H, W])."""
    per_batch = [first_layer_by_hand(model, b["tokens"], b["padding_mask"]) for b in batches]
    return np.concatenate([o for o, _ in per_batch]).mean(axis=0), np.concatenate([g for _, g in per_batch])


def sharp_one_layer_model(gate: str):
    """A 1-layer GPT-2-style model with large query weights: attention far from uniform, so one
    head's sink differs from another's, and gates spread over (0, 1)."""
    cfg = presets.gpt2(**tiny(n_layers=1))
    cfg = cfg if gate == "none" else presets.gated(cfg, gate)
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    q_proj = model.layers[0].attn.q_proj
    q_proj.kernel[...] = q_proj.kernel[...] * 60.0
    return model


def two_padded_batches(vocab_size):
    rng = np.random.default_rng(1)
    return [left_padded([7, 4, 2], 7, rng, vocab_size), left_padded([5], 6, rng, vocab_size)]


@pytest.mark.parametrize("gate", ["headwise", "elementwise"])
def test_per_head_sink_and_gate_equal_numpy_on_the_models_projections(gate):
    model = sharp_one_layer_model(gate)
    batches = two_padded_batches(model.cfg.vocab_size)
    graphdef, params = nnx.split(model)
    stats = attention_stats(graphdef, params, batches)

    sink_H, gates_NxHxW = one_layer_by_hand(model, batches)
    H = model.cfg.n_heads
    assert stats["sink_share_per_head"].shape == (1, H)
    np.testing.assert_allclose(stats["sink_share_per_head"][0], sink_H, rtol=1e-4)
    np.testing.assert_allclose(stats["sink_share"][0], sink_H.mean(), rtol=1e-4)
    assert np.ptp(sink_H) > 0.02  # the heads differ: a head-pooled value copied H times would fail
    np.testing.assert_allclose(stats["gate_mean_per_head"][0], gates_NxHxW.mean(axis=(0, 2)), rtol=1e-4)
    small_H = (gates_NxHxW < SMALL_GATE).mean(axis=(0, 2))
    np.testing.assert_allclose(stats["small_gate_share_per_head"][0], small_H, atol=1e-6)
    assert 0 < small_H.mean() < 1 and np.all((small_H >= 0) & (small_H <= 1))
    assert stats["queries"] == 7 + 4 + 2 + 5

    # The loss is the mean next-token cross-entropy over every labelled token of both batches.
    sums = [sft_objective(model, {k: jnp.asarray(v) for k, v in b.items()}) for b in batches]
    np.testing.assert_allclose(stats["loss"], sum(float(s[0]) for s in sums) / sum(float(s[1]) for s in sums),
                               rtol=1e-5)

    summary = report(stats, model.cfg, n=4, skipped=0)
    assert np.shape(summary["per_head"]["small_gate_share"]) == (1, H)
    np.testing.assert_allclose(summary["per_head"]["small_gate_share"][0], small_H, atol=1e-6)


def test_an_ungated_model_reports_no_gate():
    model = sharp_one_layer_model("none")
    batches = two_padded_batches(model.cfg.vocab_size)
    graphdef, params = nnx.split(model)
    stats = attention_stats(graphdef, params, batches)
    np.testing.assert_array_equal(stats["gate_mean_per_head"], 1.0)  # the diagnostics' neutral gate
    np.testing.assert_allclose(stats["sink_share_per_head"][0], one_layer_by_hand(model, batches)[0], rtol=1e-4)
    summary = report(stats, model.cfg, n=4, skipped=0)
    # The report says "no gate", not "a gate fully open".
    assert summary["attn_gate"] == "none"
    for name in ("gate_mean", "small_gate_share"):
        assert summary["per_layer"][name] is None and summary["per_head"][name] is None
    assert np.shape(summary["per_head"]["sink_share"]) == (1, model.cfg.n_heads)


def test_bad_inputs_are_named():
    with pytest.raises(ConfigError, match=r"known: \['attention', 'intervene', 'probe', 'steering'\]"):
        standalone_analysis("sinks")
    linear = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError, match="this run's model is a Linear"):
        diagnosed_graphdef(*nnx.split(linear))


def test_eval_py_analysis_attention_end_to_end(tmp_path, capsys):
    from latent.train.loop import train

    cfg = tiny_run("train.steps=2", "task.n_valid=6", "eval.max_new_tokens=4")
    train(cfg, tmp_path, progress=False)
    capsys.readouterr()
    results = eval_cli("--workdir", str(tmp_path), "--analysis", "attention", "--batch-size", "4")
    out = capsys.readouterr().out

    saved = json.loads((tmp_path / "attention_valid.json").read_text())
    assert saved == json.loads(json.dumps(results))
    L, H = cfg.model.n_layers, cfg.model.n_heads
    assert saved["analysis"] == "attention" and saved["checkpoint_step"] == 2 and saved["n"] == 6
    assert saved["attn_gate"] == cfg.model.attn_gate != "none"  # the tiny preset is gated
    for name in ("sink_share", "gate_mean", "small_gate_share"):
        values = np.asarray(saved["per_head"][name])
        assert values.shape == (L, H) and np.all((values >= 0) & (values <= 1)), name
        np.testing.assert_allclose(saved["per_layer"][name], values.mean(axis=1), rtol=1e-5)
    assert len(saved["per_layer"]["max_abs_activation"]) == L and min(saved["per_layer"]["max_abs_activation"]) > 0
    assert np.isfinite(saved["loss"]) and saved["loss"] > 0
    png = tmp_path / "attention_valid.png"
    assert saved["plot"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "max|x|" in out and f"n={saved['n']}" in out

    eval_cli("--workdir", str(tmp_path), "--analysis", "attention", "--n", "2")  # an earlier result is kept
    assert json.loads((tmp_path / "attention_valid.1.json").read_text())["n"] == 2
    assert (tmp_path / "attention_valid.1.png").exists() and saved == json.loads(
        (tmp_path / "attention_valid.json").read_text())

    for argv, message in ((("--analysis", "sinks"), "invalid choice: 'sinks' (choose from 'attention', 'intervene', 'probe', 'steering')"),
                          (("--analysis", "attention", "--temperature", "1"), "--temperature set how answers are decoded")):
        with pytest.raises(SystemExit) as refused:
            eval_cli("--workdir", str(tmp_path), *argv)
        assert refused.value.code == 2 and message in capsys.readouterr().err
