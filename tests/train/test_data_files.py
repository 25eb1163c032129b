"""A run on a data file validates on the file's own held-out split and scores it by the file's
rules; eval.py agrees with training on both, never overwrites a result file, records how it
sampled and warns when the data does not fit the run's vocabulary."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from latent.config_io import apply_overrides
from latent.data.splits import load_splits, load_valid
from latent.data.tasks import get_task, load_examples
from latent.methods import evaluator_for
from latent.run import checkpoint as ckpt
from latent.train import loop
from latent.train.loop import train
from tests.conftest import tiny_run as tiny

ROOT = Path(__file__).resolve().parents[2]
REAL_DATA = ROOT.parent / "shared" / "data"


def write_jsonl(path: Path, examples) -> Path:
    rows = [{"question": e.question, "steps": list(e.steps), "answer": e.answer} for e in examples]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def prosqa_file(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("data") / "mine.jsonl", get_task("prosqa_small").generate(40, seed=5))


def test_file_without_valid_path_holds_out_a_seeded_split(prosqa_file):
    file_questions = [e.question for e in load_examples(prosqa_file)]
    cfg = tiny(f"task.path={prosqa_file}")
    train_examples, valid, scorer = load_splits(cfg)
    assert len(valid) == 4 and len(train_examples) == 36  # task.valid_fraction=0.1 of 40
    assert {e.question for e in valid} <= set(file_questions)
    assert not {e.question for e in valid} & {e.question for e in train_examples}
    assert load_valid(cfg) == valid == load_splits(cfg)[1]  # eval.py's split is training's
    assert scorer.name == "exact"
    capped = load_splits(tiny(f"task.path={prosqa_file}", "task.valid_fraction=0.5", "task.n_valid=3"))[1]
    assert len(capped) == 3
    reseeded = load_splits(tiny(f"task.path={prosqa_file}", "task.seed=7"))[1]
    assert reseeded != valid
    on_generator = load_splits(tiny(f"task.path={prosqa_file}", "task.valid_fraction=0"))
    assert len(on_generator[0]) == 40 and not {e.question for e in on_generator[1]} & set(file_questions)


def test_numeric_file_is_scored_as_numbers(tmp_path):
    rows = [{"question": f"What is {i} + {i}?", "steps": [f"<<{i}+{i}={2 * i}>>"], "answer": str(2 * i)}
            for i in range(30)]
    data = tmp_path / "sums.json"
    data.write_text(json.dumps(rows))
    _, valid, scorer = load_splits(tiny(f"task.path={data}"))
    assert scorer.name == "numeric"
    assert scorer.score(valid[0].answer + ".0", valid[0])
    assert load_splits(tiny(f"task.path={data}", "task.scorer=exact"))[2].name == "exact"
    _, _, gsm = load_splits(tiny("task.name=gsm8k", f"task.path={data}"))
    assert gsm.name == "numeric"


@pytest.fixture(scope="module")
def file_run(prosqa_file, tmp_path_factory):
    """A 2-step tiny run on `prosqa_file` (no valid_path); the examples its final eval scored."""
    workdir = tmp_path_factory.mktemp("run")
    cfg = tiny(f"task.path={prosqa_file}", "train.steps=2", "train.checkpoint_every=2", "eval.max_new_tokens=6")
    evaluated = []

    def spy(*args, **kwargs):
        evaluator = evaluator_for(*args, **kwargs)
        call = evaluator.__call__

        def spied(params, **kw):
            evaluated.append(list(evaluator.examples))
            return call(params, **kw)

        return spied

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "evaluator_for", spy)
        summary = train(cfg, workdir, progress=False)
    return workdir, cfg, summary, evaluated


def eval_cli(*argv):
    sys.path.insert(0, str(ROOT))
    import eval as cli

    return cli.main([*argv, "--no-progress", "--max-new-tokens", "6"])


@pytest.mark.slow
def test_run_and_eval_py_score_the_files_held_out_split(file_run, prosqa_file):
    workdir, cfg, summary, evaluated = file_run
    assert len(evaluated) == 1
    questions = [e.question for e in evaluated[0]]
    train_questions = {e.question for e in load_splits(cfg)[0]}
    assert set(questions) <= {e.question for e in load_examples(prosqa_file)}
    assert not set(questions) & train_questions
    assert summary["eval"]["scorer"] == "exact" and summary["eval"]["n"] == len(questions)
    results = eval_cli("--workdir", str(workdir), "--out", str(workdir / "own.json"))
    assert [r["question"] for r in results["records"]] == questions
    assert results["scorer"] == "exact" and results["data"] == "validation split"


@pytest.mark.slow
def test_eval_py_keeps_earlier_results_and_records_its_settings(file_run, capsys):
    workdir = file_run[0]
    first = eval_cli("--workdir", str(workdir))
    saved = (workdir / "eval_valid.json").read_text()
    second = eval_cli("--workdir", str(workdir), "--temperature", "1.0", "--top-p", "0.9", "--top-k", "5", "--n", "2",
                      "--cache-dtype", "bfloat16")
    err = capsys.readouterr().err
    assert (workdir / "eval_valid.json").read_text() == saved  # not overwritten
    assert json.loads((workdir / "eval_valid.1.json").read_text())["n"] == second["n"] == 2
    assert "writing eval_valid.1.json" in err
    settings = json.loads((workdir / "eval_valid.1.json").read_text())["settings"]
    assert settings == {"step": 2, "temperature": 1.0, "top_p": 0.9, "top_k": 5, "n": 2, "max_new_tokens": 6,
                        "switch_policy": "none", "latent_steps": 0, "seed": 0, "scorer": "exact",
                        "batch_size": 16, "cache_dtype": "bfloat16"}
    assert first["settings"]["temperature"] == 0.0 and first["settings"]["top_k"] == 0
    with pytest.raises(SystemExit) as refused:
        eval_cli("--workdir", str(workdir), "--top-k", "-1")
    assert refused.value.code == 2 and "eval.top_k must be an int >= 0 (0: off); got -1" in capsys.readouterr().err
    eval_cli("--workdir", str(workdir), "--overwrite", "--n", "1")
    assert json.loads((workdir / "eval_valid.json").read_text())["n"] == 1
    assert not (workdir / "eval_valid.2.json").exists()


@pytest.mark.slow
def test_eval_py_on_another_tasks_file_warns_of_unknown_tokens(file_run, capsys):
    gsm = REAL_DATA / "gsm_valid.json"
    if not gsm.is_file():
        pytest.skip(f"{gsm} not present")
    workdir = file_run[0]
    results = eval_cli("--workdir", str(workdir), "--data", str(gsm), "--n", "4")
    err = capsys.readouterr().err
    assert results["scorer"] == "numeric"  # the scorer that fits GSM8K, not the run's exact
    assert results["unknown_token_share"] > 0.5
    assert "warning:" in err and "unknown to the run's tokenizer" in err
    own = eval_cli("--workdir", str(workdir), "--n", "2")
    assert own["unknown_token_share"] == 0.0 and "warning:" not in capsys.readouterr().err


@pytest.mark.slow
def test_best_checkpoint_is_the_best_under_the_files_scorer(tmp_path, monkeypatch):
    """Step 2 answers "4.0" (right as a number, wrong as words), step 4 half "4" and half "5":
    the file's numeric scorer makes step 2 the best, which the manager must keep."""
    rows = [{"question": f"What is 2 + 2 ? ( {i} )", "steps": ["<<2+2=4>>"], "answer": "4"} for i in range(40)]
    data = tmp_path / "four.json"
    data.write_text(json.dumps(rows))
    calls = []

    class FakeEvaluator:
        def __init__(self, examples, score):
            self.examples, self.score = examples, score

        def __call__(self, params, **kwargs):
            examples, score = self.examples, self.score
            calls.append(len(calls))
            predictions = ["4.0"] * len(examples) if len(calls) == 1 else ["4", "5"] * (len(examples) // 2)
            correct = [bool(score(p, e)) for p, e in zip(predictions, examples)]
            return {"accuracy": sum(correct) / len(correct), "n": len(correct)}

    monkeypatch.setattr(loop, "evaluator_for",
                        lambda cfg, graphdef, tokenizer, examples, scorer, **kwargs: FakeEvaluator(examples, scorer.score))
    cfg = tiny(f"task.path={data}", "train.steps=4", "train.eval_every=2", "train.checkpoint_every=2",
               "checkpoint.keep=1")
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["eval"]["scorer"] == "numeric" and summary["eval"]["accuracy"] == 0.5
    manager = ckpt.make_manager(tmp_path / "run", cfg.checkpoint)
    assert sorted(manager.all_steps()) == [2, 4]  # the latest, and the best: 1.0 at step 2
    calls.clear()  # the same answers judged as words: step 4 (0.5) is the best, step 2 (0.0) goes
    words = train(apply_overrides(cfg, ["task.scorer=exact"]), tmp_path / "words", progress=False)
    assert words["eval"]["scorer"] == "exact"
    assert sorted(ckpt.make_manager(tmp_path / "words", cfg.checkpoint).all_steps()) == [4]


def test_a_run_saved_before_valid_fraction_keeps_its_generated_split():
    from latent.config_io import from_dict, to_dict
    from latent.run.checkpoint import as_trained

    saved = to_dict(tiny("task.path=old.jsonl"))
    del saved["task"]["valid_fraction"]
    assert from_dict(as_trained(saved)).task.valid_fraction == 0.0
    assert from_dict(as_trained(to_dict(tiny("task.path=new.jsonl")))).task.valid_fraction == 0.1


def test_resuming_a_run_saved_before_valid_fraction_is_refused_rather_than_dropping_a_tenth_of_its_data():
    """A resume reads the saved config as its run used it: today's default valid_fraction=0.1 would
    take a tenth of the file out of training under the saved iterator; the change is named."""
    import pytest

    from latent.config_io import to_dict
    from latent.run.checkpoint import CheckpointMismatch, check_resumable, config_of

    saved = to_dict(tiny("task.path=old.jsonl"))
    del saved["task"]["valid_fraction"]
    with pytest.raises(CheckpointMismatch, match=r"task\.valid_fraction: 0\.0 -> 0\.1"):
        check_resumable(config_of({"config": saved}), tiny("task.path=old.jsonl"), "runs/old")
    check_resumable(config_of({"config": saved}), tiny("task.path=old.jsonl", "task.valid_fraction=0"), "runs/old")


def test_a_file_task_without_a_validation_split_says_what_is_missing(prosqa_file):
    from latent.config import ConfigError

    cfg = tiny("task.name=gsm8k", f"task.path={prosqa_file}", "task.valid_fraction=0")
    with pytest.raises(ConfigError, match=r"task.valid_path=FILE.json, or set task.valid_fraction > 0") as err:
        load_valid(cfg)
    assert "give it a GSM8K file" not in str(err.value)  # task.path is given


@pytest.mark.slow
def test_eval_py_tokenizes_each_prompt_once(file_run, monkeypatch):
    """The unknown-token share is read off the Evaluator's tokenized prompts: eval.py encodes no
    prompt a second time for it."""
    from latent.data.tasks.formats import prompt_text
    from latent.data.tokenizer import Tokenizer

    workdir, cfg = file_run[0], file_run[1]
    encoded, encode, encode_batch = [], Tokenizer.encode, Tokenizer.encode_batch

    def counted_batch(self, texts):
        texts = list(texts)
        encoded.extend(texts)
        return encode_batch(self, texts)

    monkeypatch.setattr(Tokenizer, "encode", lambda self, text: encoded.append(text) or encode(self, text))
    monkeypatch.setattr(Tokenizer, "encode_batch", counted_batch)
    results = eval_cli("--workdir", str(workdir), "--n", "2", "--out", str(workdir / "once.json"))
    prompts = [prompt_text(e) for e in load_valid(cfg)[:2]]
    assert [r["question"] for r in results["records"]] == [e.question for e in load_valid(cfg)[:2]]
    assert [encoded.count(p) for p in prompts] == [1, 1]
    assert results["unknown_token_share"] == 0.0
