"""The real GSM8K-Aug validation file (../shared/data/gsm_valid.json, Coconut's layout) as a run's
`task.valid_path` with `task.name=gsm8k`: SFT trains on a training file and evaluates on it with
the numeric scorer, RL from that run evaluates on it the same way, and eval.py agrees."""

from __future__ import annotations

import json

import pytest

from latent.data.splits import load_splits
from latent.data.tasks import Example, load_examples
from latent.eval.run import evaluate_workdir
from latent.train.loop import train
from tests.conftest import tiny_run as tiny

N_EVAL = 4


@pytest.mark.slow
def test_gsm8k_validates_on_the_shared_file_in_sft_and_in_rl(tmp_path, shared_data):
    valid_path = shared_data("gsm_valid.json")
    valid = load_examples(valid_path)
    # a training file of other questions, in the same layout (its answers and steps are GSM8K's)
    rows = [{"question": "Once more: " + e.question, "steps": list(e.steps), "answer": e.answer} for e in valid[:48]]
    train_path = tmp_path / "train.json"
    train_path.write_text(json.dumps(rows))
    gsm = ("task.name=gsm8k", f"task.path={train_path}", f"task.valid_path={valid_path}", f"eval.n_examples={N_EVAL}",
           "eval.max_new_tokens=8")

    train_examples, valid_examples, scorer = load_splits(tiny(*gsm))
    assert len(train_examples) == 48 and valid_examples == valid and scorer.name == "numeric"
    assert scorer.score("1, 0 0 0", Example("q", (), "1000"))  # numbers as the word-level tokenizer writes them

    sft = train(tiny(*gsm, "train.steps=2", "train.eval_every=2"), tmp_path / "sft", progress=False)
    assert sft["eval"]["n"] == N_EVAL and sft["eval"]["scorer"] == "numeric"

    rl_args = ("method=rl", "rl.group_size=2", "rl.prompts_per_step=2", "rl.max_new_tokens=8",
               f"train.init_from={tmp_path / 'sft'}", "train.steps=2", "train.eval_every=2")
    rl = train(tiny(*gsm, *rl_args), tmp_path / "rl", progress=False)
    assert rl["eval"]["n"] == N_EVAL and rl["eval"]["scorer"] == "numeric"

    for workdir in ("sft", "rl"):
        results = evaluate_workdir(tmp_path / workdir, progress=False)
        assert results["data"] == "validation split" and results["scorer"] == "numeric" and results["n"] == N_EVAL
        assert [r["answer"] for r in results["records"]] == [e.answer for e in valid[:N_EVAL]]
        assert results["unknown_token_share"] == 0.0  # the run's tokenizer was fitted with the validation file
