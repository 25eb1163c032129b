"""reasoning-gym tasks (latent/data/tasks/reasoning_gym.py): `task.name=rg:<dataset>` and weighted
mixes, generated deterministically, validation disjoint from training, scored by reasoning-gym's
own scorers through the word-level tokenizer's spacing, cached, refused by name when misspelled,
and trained and evaluated end to end."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from reasoning_gym import create_dataset

from latent.config import ConfigError
from latent.config_io import load_preset
from latent.data import splits
from latent.data.splits import fit_tokenizer, load_splits
from latent.data.tasks import check_task_name, cot_text, get_task
from latent.data.tasks.reasoning_gym import mix_order, undo_word_spacing
from latent.data.tasks.scoring import resolve_scorer
from latent.data.tokenizer import Tokenizer
from latent.methods.rl.rewards import rollout_rewards
from tests.conftest import tiny_run as tiny

ROOT = Path(__file__).resolve().parents[2]
SMALL = json.dumps({"chain_sum": {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2},
                    "leg_counting": {"min_animals": 2, "max_animals": 3, "max_instances": 9}})
MIX = "rg:chain_sum:2,leg_counting:1"


def _questions(examples):
    return [e.question for e in examples]


def test_generation_is_deterministic_a_prefix_and_seeded():
    task = get_task(MIX, options=SMALL)
    first = task.generate(30, seed=3)
    assert first == get_task(MIX, options=SMALL).generate(30, seed=3)
    assert task.generate(12, seed=3) == first[:12]
    assert _questions(task.generate(30, seed=4)) != _questions(first)
    # dataset d's k-th example is reasoning-gym's item k under the seed, as its own generator makes it
    chain_sum = [e for e in first if e.meta["rg_dataset"] == "chain_sum"]
    reference = create_dataset("chain_sum", seed=3, size=len(chain_sum), **json.loads(SMALL)["chain_sum"])
    assert [e.meta["rg_entry"] for e in chain_sum] == [reference[k] for k in range(len(chain_sum))]
    assert [e.question for e in chain_sum] == [reference[k]["question"].strip() for k in range(len(chain_sum))]


def test_generation_does_not_depend_on_the_interpreters_hash_seed():
    """Another process, with another string-hash seed, generates the same examples."""
    code = ("import json, sys; from latent.data.tasks import get_task; "
            f"print(json.dumps([e.question for e in get_task({MIX!r}, options=sys.argv[1]).generate(20, seed=5)]))")
    env = dict(os.environ, PYTHONHASHSEED="12345", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code, SMALL], capture_output=True, text=True, env=env, check=True)
    assert json.loads(out.stdout) == _questions(get_task(MIX, options=SMALL).generate(20, seed=5))


def test_the_validation_split_is_disjoint_from_training(tmp_path, monkeypatch):
    monkeypatch.setenv(splits.CACHE_ENV, str(tmp_path / "cache"))
    # One-digit sums of two terms: 200 questions in all, so the two seeds' items do share questions...
    few = json.dumps({"chain_sum": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}})
    cfg = tiny("task.name=rg:chain_sum", f"task.options={few}", "task.n_train=300", "task.n_valid=40")
    task = get_task("rg:chain_sum", options=few)
    raw_train = task.generate(300, seed=cfg.task.seed)
    raw_valid = task.generate(40, seed=cfg.task.seed + splits.VALID_SEED_OFFSET)
    assert set(_questions(raw_train)) & set(_questions(raw_valid))
    assert [e.meta["rg_entry"]["metadata"]["source_index"] for e in raw_valid] == list(range(40))
    # ...and load_splits keeps training to the questions validation does not ask
    train, valid, scorer = load_splits(cfg)
    assert valid == raw_valid and scorer.name == "reasoning_gym"
    assert not set(_questions(train)) & set(_questions(valid))
    assert train == [e for e in raw_train if e.question not in set(_questions(raw_valid))]


def _decoded(tokenizer: Tokenizer, text: str) -> str:
    return tokenizer.decode(tokenizer.encode(text))


@pytest.mark.parametrize("dataset, options", [
    ("chain_sum", {}), ("leg_counting", {}), ("syllogism", {}), ("gsm_symbolic", {}), ("basic_arithmetic", {}),
    ("family_relationships", {}), ("decimal_chain_sum", {}), ("time_intervals", {}),
])
def test_the_scorer_is_reasoning_gyms_own_on_right_wrong_and_partial_answers(dataset, options):
    task = get_task(f"rg:{dataset}", options=json.dumps({dataset: options}) if options else None)
    examples = task.generate(12, seed=11)
    judge = create_dataset(dataset, seed=0, size=1, **options)
    cases = {}
    for e in examples:
        answer = e.meta["rg_entry"]["answer"]
        cases[e] = [answer, f"{answer} apples", f"The answer is {answer}", "7", "-12", "Yes", "No", "apples", ""]
    tokenizer = Tokenizer.fit_word_level([t for e, texts in cases.items() for t in [*cot_text(e), *texts]])
    credits = []
    for e, texts in cases.items():
        entry = e.meta["rg_entry"]
        for text in texts:
            expected = judge.score_answer(text, entry)
            # as written (a tokenizer that writes text as it was), and as the word-level tokenizer writes it
            assert task.credit(text, e) == pytest.approx(expected), (text, entry["answer"])
            assert task.credit(_decoded(tokenizer, text), e) == pytest.approx(expected), (text, entry["answer"])
            assert task.score(text, e) == (task.credit(text, e) >= 1.0)
            credits.append(expected)
        assert task.score(_decoded(tokenizer, entry["answer"]), e)  # the reference, after the tokenizer, is right
    assert 1.0 in credits and 0.0 in credits


def test_the_word_level_spacing_is_undone_where_it_can_only_mean_one_thing():
    assert undo_word_spacing("- 1 2 3") == "-123"
    assert undo_word_spacing("x = - 4. 2 5") == "x = -4.25"
    assert undo_word_spacing("5 - 4") == "5 - 4" and undo_word_spacing("( 5 ) - 4") == "( 5 ) - 4"  # subtractions
    assert undo_word_spacing("The answer is - 2 1 6 9") == "The answer is -2169"
    assert undo_word_spacing("(- 3 )") == "(-3 )"
    assert undo_word_spacing("mother - in - law") == "mother-in-law"
    assert undo_word_spacing("0 0: 3 4: 2 8") == "00:34:28"


def test_accuracy_counts_full_credit_and_rl_rewards_read_the_partial_credit():
    task = get_task("rg:chain_sum")
    example = task.generate(1, seed=2)[0]
    answer = example.answer
    scorer = resolve_scorer("auto", [example], task)
    assert scorer.name == "reasoning_gym"
    texts = [f"### {answer}", f"### {answer} apples", "### 0.5 nothing", "no marker"]
    assert scorer.credit(f"{answer} apples", example) == pytest.approx(len(answer) / len(f"{answer} apples"))

    class RL:
        reward_correct, reward_format, reward_length = 1.0, 0.0, 0.0

    parts = rollout_rewards(texts, [example] * 4, scorer.score, RL, [3, 4, 4, 2], scorer.credit)
    assert list(parts["correct"]) == [1.0, 0.0, 0.0, 0.0]
    assert parts["reward"][0] == 1.0 and 0 < parts["reward"][1] < 1 and parts["reward"][2] == 0.0
    binary = rollout_rewards(texts, [example] * 4, scorer.score, RL, [3, 4, 4, 2])
    assert list(binary["reward"]) == list(binary["correct"])
    exact = resolve_scorer("exact", [example])  # a scorer without partial credit rewards 1 or 0
    assert exact.credit(f"{answer} apples", example) == 0.0 and exact.credit(answer, example) == 1.0


def test_mix_proportions_follow_the_weights():
    examples = get_task("rg:chain_sum:3,leg_counting:1,syllogism:2", options=SMALL).generate(600, seed=0)
    counts = Counter(e.meta["rg_dataset"] for e in examples)
    assert counts == {"chain_sum": 300, "leg_counting": 100, "syllogism": 200}
    for n in (1, 7, 50, 333):  # every prefix holds each share to within one example
        prefix = Counter(mix_order([3.0, 1.0, 2.0], n))
        assert all(abs(prefix[d] - n * w / 6) < 1 for d, w in enumerate([3.0, 1.0, 2.0]))
    halves = Counter(e.meta["rg_dataset"] for e in get_task("rg:chain_sum,syllogism:1.0").generate(300, seed=1))
    assert halves == {"chain_sum": 150, "syllogism": 150}  # a missing weight is 1


def test_steps_are_written_where_they_are_cheap_and_check_out():
    for e in get_task("rg:chain_sum").generate(30, seed=0):
        first = e.meta["rg_entry"]["metadata"]["expression"].split(" ")[0]
        assert e.steps[0].startswith(first + " ") and e.steps[-1].endswith(f"= {e.answer}")
        assert all(eval(step.replace("=", "==")) for step in e.steps)  # each partial sum is right
    for e in get_task("rg:leg_counting").generate(30, seed=0):
        assert len(e.steps) == len(e.meta["rg_entry"]["metadata"]["animals"]) and e.steps[-1].endswith(f"= {e.answer}")
    for e in get_task("rg:gsm_symbolic").generate(10, seed=0):
        assert e.steps and not any("####" in s for s in e.steps)
    assert all(e.steps == () for e in get_task("rg:syllogism").generate(10, seed=0))


def test_the_split_cache_keeps_entries_and_scoring_and_is_keyed_by_the_options(tmp_path, monkeypatch):
    monkeypatch.setenv(splits.CACHE_ENV, str(tmp_path / "cache"))
    task = get_task(MIX, options=SMALL)
    made = splits.generate_cached(MIX, task, 20, 7)
    task.generate = lambda n, seed: pytest.fail("read from the cache, not generated again")
    cached = splits.generate_cached(MIX, task, 20, 7)
    assert cached == made and [e.meta["rg_entry"] for e in cached] == [e.meta["rg_entry"] for e in made]
    fresh = get_task(MIX, options=SMALL)
    assert all(fresh.score(e.answer, e) and not fresh.score("-99999", e) for e in cached)
    for e in cached:  # the stored entry also survives JSON (tuples come back as lists) and scores the same
        entry = json.loads(json.dumps(e.meta["rg_entry"]))
        judge = create_dataset(e.meta["rg_dataset"], seed=0, size=1)
        assert judge.score_answer(e.answer, entry) == judge.score_answer(e.answer, e.meta["rg_entry"]) == 1.0
    other = get_task(MIX, options=json.dumps({"chain_sum": {"max_terms": 4}}))
    default = get_task(MIX)
    paths = {splits.split_cache_path(t.cache_key, 20, 7) for t in (task, other, default)}
    assert len(paths) == 3 and all(":" not in p.name and "," not in p.name for p in paths)


def test_a_misspelled_dataset_is_refused_naming_the_field_and_the_close_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"task\.name='rg:chain_sun': 'chain_sun' is not a reasoning-gym dataset; "
                                          r"close ones: chain_sum"):
        load_splits(tiny("task.name=rg:chain_sun"))
    with pytest.raises(ConfigError, match=r"--data='rg:leg_countin'.*close ones: leg_counting"):
        check_task_name("rg:leg_countin", "--data")
    with pytest.raises(ConfigError, match=r"'qqqqqq' is not a reasoning-gym dataset; the \d+ datasets: .*chain_sum"):
        check_task_name("rg:qqqqqq")
    for bad, message in [("rg:chain_sum:0", "the weight of chain_sum must be a number > 0; got '0'"),
                         ("rg:chain_sum:-1", "must be a number > 0"), ("rg:chain_sum:x", "got 'x'"),
                         ("rg:chain_sum:nan", "got 'nan'"), ("rg:chain_sum,chain_sum", "names chain_sum twice"),
                         ("rg:", "names an empty dataset"), ("rg:composite", "write the mix in the name")]:
        with pytest.raises(ConfigError, match=r"task\.name=.*" + message.replace("(", r"\(").replace(")", r"\)")):
            get_task(bad)
    err = subprocess.run([sys.executable, "train.py", "--config", "tiny", "--workdir", str(tmp_path / "w"),
                          "--no-progress", "task.name=rg:chain_sun"], cwd=ROOT, capture_output=True, text=True).stderr
    assert "error: task.name='rg:chain_sun'" in err and "chain_sum" in err and not (tmp_path / "w").exists()


def test_bad_options_are_refused_naming_the_field():
    from latent.config_io import apply_overrides

    cases = [
        ('{"chain_sum": {"max_term": 3}}', r"task\.options: chain_sum has no option 'max_term' \(close: max_terms"),
        ('{"chain_sum": {"seed": 3}}', r"task\.options: chain_sum's 'seed' is set by task\.seed"),
        ('{"chain_sum": {"size": 3}}', r"'size' is set by task\.n_train"),
        ('{"leg_counting": {}}', r"task\.options sets options of 'leg_counting', which task\.name='rg:chain_sum' does not"),
        ('{"chain_sum": {"min_terms": 5, "max_terms": 3}}', r"task\.options: reasoning-gym refuses chain_sum's options.*"
                                                           r"max_terms must be >= min_terms"),
    ]
    for options, message in cases:
        with pytest.raises(ConfigError, match=message):
            load_splits(tiny("task.name=rg:chain_sum", f"task.options={options}"))
    for options in ("{not json", '["chain_sum"]', '{"chain_sum": 3}'):
        with pytest.raises(ConfigError, match=r"task\.options"):
            apply_overrides(tiny(), [f"task.options={options}"])
    # options and name in either order on the command line; options on a task that takes none is refused
    assert apply_overrides(tiny(), [f"task.options={SMALL}", f"task.name={MIX}"]).task.options == SMALL
    with pytest.raises(ConfigError, match=r"task\.options sets the generator options of a reasoning-gym task.*"
                                          r"task\.name='prosqa_small' takes none"):
        load_splits(tiny(f"task.options={SMALL}"))


def test_the_preset_mix_fits_its_lengths_and_its_validation_words_occur_in_training(tmp_path, monkeypatch):
    monkeypatch.setenv(splits.CACHE_ENV, "")
    cfg = load_preset("rg_mix")
    train, valid, scorer = load_splits(cfg.replace(task=dataclasses.replace(cfg.task, n_train=5000)))
    assert scorer.name == "reasoning_gym" and {e.meta["rg_dataset"] for e in valid} == {
        "chain_sum", "leg_counting", "syllogism"}
    tokenizer = fit_tokenizer(train, [], cfg.task.format)  # the training split alone
    unk = tokenizer.token_to_id("<unk>")
    for e in valid:
        ids = [i for text in cot_text(e) for i in tokenizer.encode(text)]
        assert unk not in ids and len(ids) <= cfg.task.max_len and len(tokenizer.encode(cot_text(e)[1])) < 96
        assert scorer.score(_decoded(tokenizer, e.answer), e)
    answers = Counter(e.answer for e in valid if e.meta["rg_dataset"] == "syllogism")
    assert set(answers) == {"Yes", "No"} and min(answers.values()) >= 0.35 * sum(answers.values())  # balanced


@pytest.mark.slow
def test_a_tiny_run_on_an_rg_mix_trains_and_evaluates(tmp_path):
    from latent.eval.run import evaluate_workdir
    from latent.train.loop import train

    cfg = tiny(f"task.name={MIX}", f"task.options={SMALL}", "task.n_train=64", "task.n_valid=6", "train.steps=3",
               "train.eval_every=3", "eval.max_new_tokens=8", "task.format=no_cot")
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["step"] == 3 and summary["eval"]["n"] == 6
    assert set(summary["eval"]["per_dataset"]) == {"chain_sum", "leg_counting"}
    assert sum(d["n"] for d in summary["eval"]["per_dataset"].values()) == 6
    results = evaluate_workdir(tmp_path / "run", progress=False)
    assert results["scorer"] == "reasoning_gym" and results["n"] == 6 and results["unknown_token_share"] == 0.0
    assert results["accuracy"] == summary["eval"]["accuracy"]
    # eval.py --data on the run's own task name generates it with the run's options
    again = evaluate_workdir(tmp_path / "run", data=MIX, progress=False)
    assert [r["answer"] for r in again["records"]] == [r["answer"] for r in results["records"]]
