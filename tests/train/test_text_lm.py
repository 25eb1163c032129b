"""A language model on a text corpus (task.name=text:..., latent.methods.lm) through train(), train.py
and eval.py: its evaluations report the validation windows' loss, equal to a hand computation."""

import json
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from latent.run import load_run
from tests.conftest import tiny_run

ROOT = Path(__file__).resolve().parents[2]


def text_run(*overrides):
    return tiny_run("task.name=text:verne", "model.vocab_size=320", "task.max_len=48", "train.steps=3",
                    "train.eval_every=3", "eval.batch_size=8", *overrides)


def hand_loss(run) -> float:
    """The mean next-token cross-entropy of the validation regions, in numpy: the regions' tokens
    with EOS after each, cut into windows of max_len starting every max_len - 1 tokens, each
    window run alone (no padding), every token but a window's first a target."""
    from latent.data.splits import load_valid

    tokenizer, T = run.tokenizer, run.cfg.task.max_len
    stream = [t for region in load_valid(run.cfg) for t in [*tokenizer.encode(region.question), tokenizer.eos_id]]
    model = nnx.merge(run.graphdef, run.params)
    total, count = 0.0, 0
    for start in range(0, len(stream) - 1, T - 1):
        window = np.asarray(stream[start : start + T], np.int32)
        logits_TxV = np.asarray(jax.device_get(model(window[None]).logits[0]), np.float64)
        log_probs_TxV = logits_TxV - np.log(np.exp(logits_TxV - logits_TxV.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
            - logits_TxV.max(-1, keepdims=True)
        total -= log_probs_TxV[np.arange(len(window) - 1), window[1:]].sum()
        count += len(window) - 1
    assert count == len(stream) - 1  # every token but the first is a target once
    return total / count


@pytest.mark.slow
def test_training_evaluates_the_validation_loss_and_the_attention_analysis_reads_it(tmp_path, capsys):
    from latent.train.loop import train

    summary = train(text_run(), tmp_path, progress=False)
    evaluation = summary["eval"]
    run = load_run(tmp_path)
    assert run.step == 3 and evaluation["scorer"] == "none" and "accuracy" not in evaluation
    loss = hand_loss(run)
    np.testing.assert_allclose(evaluation["loss"], loss, rtol=2e-5)
    np.testing.assert_allclose(evaluation["perplexity"], np.exp(loss), rtol=1e-4)
    assert evaluation["n"] == 2 and evaluation["windows"] > 8  # 2 of verne's 15 regions validate
    eval_rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if "eval_loss" in line]
    assert [row["step"] for row in eval_rows] == [3] and eval_rows[0]["eval_loss"] == evaluation["loss"]

    sys.path.insert(0, str(ROOT))
    import eval as cli

    attention = cli.main(["--workdir", str(tmp_path), "--analysis", "attention", "--no-progress"])
    np.testing.assert_allclose(attention["loss"], loss, rtol=2e-5)
    assert attention["target_tokens"] == evaluation["target_tokens"]
    assert np.asarray(attention["per_head"]["sink_share"]).shape == (2, 4)
    results = cli.main(["--workdir", str(tmp_path), "--no-progress"])  # eval.py without an analysis: the loss
    np.testing.assert_allclose(results["loss"], loss, rtol=2e-5)
    assert "valid loss" in capsys.readouterr().out


@pytest.mark.slow
def test_train_py_on_a_text_corpus_reports_its_loss(tmp_path, capsys):
    sys.path.insert(0, str(ROOT))
    import train as cli

    summary = cli.main(["--config", "tiny", "--workdir", str(tmp_path), "--no-progress", "task.name=text:verne",
                        "model.vocab_size=320", "task.max_len=48", "train.steps=2", "train.eval_every=2"])
    line = capsys.readouterr().out
    assert f"valid loss {summary['eval']['loss']:.4f}" in line and "step 2" in line
    assert (tmp_path / "curves.png").exists()
