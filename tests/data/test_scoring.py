"""Scorers that fit the data (latent.data.tasks.scoring) and the gsm8k file task."""

from __future__ import annotations

from pathlib import Path

import pytest

from latent.config import ConfigError
from latent.data.splits import fit_tokenizer
from latent.data.tasks import Example, get_task, load_examples
from latent.data.tasks.scoring import infer_scorer, resolve_scorer

REAL_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def real_file(name: str) -> Path:
    path = REAL_DATA / name
    if not path.is_file():
        pytest.skip(f"real data file {path} not present")
    return path


def scorer(name: str):
    return resolve_scorer(name, [])


def test_numeric_forgives_form_exact_does_not():
    four = Example("What is 2 + 2?", (), "4")
    assert scorer("numeric").score("4.0", four) and not scorer("exact").score("4.0", four)
    thousand = Example("q", (), "1000")
    for prediction in ("1,000", "1000.", "$1000", "1, 0 0 0", "1 0 0 0", "1000.0000001"):
        assert scorer("numeric").score(prediction, thousand), prediction
    for prediction in ("1001", "100", "1000 apples", "", "one thousand"):
        assert not scorer("numeric").score(prediction, thousand), prediction
    assert scorer("numeric").score("5", Example("q", (), "$5"))
    assert not scorer("numeric").score("0.001", Example("q", (), "0"))


def test_choice_takes_one_named_option_only():
    example = Example("Every wumpus is a yumpus. Tom is a wumpus. Is Tom a yumpus or zumpus?", (), "Tom is a yumpus.")
    choice, exact = scorer("choice"), scorer("exact")
    for right in ("Tom is a yumpus.", "yumpus", "Tom is yumpus"):
        assert choice.score(right, example), right
    for wrong in ("Tom is a zumpus.", "Tom is a wumpus.", "Tom is a yumpus or zumpus.", ""):
        assert not choice.score(wrong, example), wrong
    assert exact.score("Tom is a yumpus", example) and not exact.score("Tom is yumpus", example)
    true_false = Example("Alex is a tumpus. True or false: Alex is happy.", (), "True")
    assert choice.score("true", true_false)
    assert not choice.score("Maybe", true_false) and not choice.score("True or false", true_false)


def test_auto_fits_the_file():
    assert infer_scorer(load_examples(real_file("gsm_valid.json"))) == "numeric"
    assert infer_scorer(load_examples(real_file("prosqa_valid.json"))) == "exact"
    words = [Example("q", (), answer) for answer in ("Tom is a lempus.", "True", "12")]
    assert infer_scorer(words) == "exact"
    assert resolve_scorer("auto", words).name == "exact"
    assert resolve_scorer("auto", words, get_task("multiplication_3x3")).name == "digits"  # a task's own
    assert resolve_scorer("choice", words, get_task("prosqa_small")).name == "choice"  # explicit wins
    with pytest.raises(ConfigError, match="task.scorer='fuzzy'"):
        resolve_scorer("fuzzy", words)


def test_gsm8k_reads_a_file_scores_numbers_and_has_no_generator():
    task = get_task("gsm8k", path=real_file("gsm_valid.json"))
    assert task.scorer_name == "numeric" and len(task.examples) == 500
    for example in task.examples:  # its own answers, and what a word-level model writes for them
        assert task.score(example.answer, example)
        assert task.score(example.answer + ".0", example)
    with pytest.raises(ConfigError, match="gsm8k has no generator.*task.path"):
        get_task("gsm8k")


def test_gsm8k_steps_and_answers_tokenize_with_the_word_level_fitter():
    examples = load_examples(real_file("gsm_valid.json"))
    train, valid = examples[:450], examples[450:]
    tokenizer = fit_tokenizer(train, [], "cot")  # fitted on training text only
    unk = tokenizer.token_to_id("<unk>")
    step_ids = tokenizer.encode("<<4-2=2>> <<2/.5=4>> <<100*3=300>>")
    assert unk not in step_ids
    pieces = [tokenizer.backend.id_to_token(i) for i in tokenizer.encode("<<4-2=2>>")]
    assert pieces == ["<<", "4", "-", "2", "=", "2", ">>"]
    for example in valid:  # every held-out answer is encodable and reads back as its number
        ids = tokenizer.encode(example.answer)
        assert unk not in ids, example.answer
        assert get_task("gsm8k", path=real_file("gsm_valid.json")).score(tokenizer.decode(ids), example)

