"""An Evaluator is built once: it tokenizes its prompts and builds its jitted generate at
construction, and evaluating new params re-uses both (nothing traced again); the analyses
beyond accuracy are switched on by the task and the method (`latent.methods.analyses_for`)."""

from __future__ import annotations

import pytest
from flax import nnx

from latent.config_io import apply_overrides, load_preset
from latent.data import pipeline
from latent.data.splits import fit_tokenizer, resolve_vocab
from latent.data.tasks import get_task
from latent.data.tasks.scoring import resolve_scorer
from latent.eval import evaluator as evaluator_module
from latent.infer import engine
from latent.methods import analyses_for, evaluator_for
from latent.nn import Transformer


def tiny(*overrides):
    return apply_overrides(load_preset("tiny"), list(overrides))


def counting(fn, calls: list):
    def counted(*args, **kwargs):
        calls.append(1)
        return fn(*args, **kwargs)

    return counted


def test_an_evaluator_tokenizes_and_compiles_once_for_any_number_of_evaluations(monkeypatch):
    task = get_task("prosqa_small")
    examples = task.generate(6, seed=0)
    tokenizer = fit_tokenizer(examples, [], "cot")
    cfg = resolve_vocab(tiny("eval.max_new_tokens=4", "eval.batch_size=4"), tokenizer)
    graphdef, params = nnx.split(Transformer(cfg.model, rngs=nnx.Rngs(0)))
    other_params = nnx.split(Transformer(cfg.model, rngs=nnx.Rngs(1)))[1]
    tokenized, built, traced = [], [], []
    monkeypatch.setattr(pipeline, "tokenize_examples", counting(pipeline.tokenize_examples, tokenized))
    monkeypatch.setattr(evaluator_module, "make_generate", counting(evaluator_module.make_generate, built))
    # generate draws its per-example keys once per trace: a Python counter inside the jitted function
    monkeypatch.setattr(engine, "example_keys", counting(engine.example_keys, traced))
    engine.make_generate.cache_clear()
    try:
        evaluator = evaluator_for(cfg, graphdef, tokenizer, examples, resolve_scorer("auto", examples, task),
                                      progress=False)
        assert len(tokenized) == 1 and len(built) == 1 and not traced  # built, nothing traced yet
        first = evaluator(params)
        shapes = {batch["tokens"].shape for batch in evaluator.batches}
        assert len(evaluator.batches) == 2 and len(traced) == len(shapes)  # one trace per batch shape
        evaluator(other_params)
        again = evaluator(params)
        assert len(tokenized) == 1 and len(built) == 1 and len(traced) == len(shapes)  # nothing new
    finally:
        engine.make_generate.cache_clear()
    without_rate = lambda results: {k: v for k, v in results.items() if k != "examples_per_s"}
    assert without_rate(again) == without_rate(first)
    assert first["n"] == 6 and first["skipped"] == 0 and [r["index"] for r in first["records"]] == list(range(6))
    assert set(first) == {"accuracy", "n", "skipped", "mean_generated_tokens", "mean_latent_steps",
                          "mean_reasoning_tokens", "policy", "examples_per_s", "chain_analysis", "records"}
    assert list(first["records"][0]) == ["index", "question", "generated", "prediction", "answer", "correct",
                                         "generated_tokens", "latent_steps", "switches", "reasoning_tokens", "chain"]


def test_a_coconut_evaluator_builds_one_generate_per_thought_count_and_keeps_it(monkeypatch):
    examples = get_task("prosqa_small").generate(4, seed=0)
    tokenizer = fit_tokenizer(examples, [], "cot")
    cfg = resolve_vocab(tiny("latent.mode=coconut", "eval.max_new_tokens=2"), tokenizer)
    graphdef, params = nnx.split(Transformer(cfg.model, rngs=nnx.Rngs(0)))
    built = []
    monkeypatch.setattr(evaluator_module, "make_generate", counting(evaluator_module.make_generate, built))
    evaluator = evaluator_for(cfg, graphdef, tokenizer, examples, resolve_scorer("exact", examples),
                                  progress=False)
    assert evaluator.policy == "fixed" and len(built) == 1
    assert evaluator(params)["mean_latent_steps"] == 0
    assert evaluator(params, latent_steps=2)["mean_latent_steps"] == 2  # a later curriculum stage
    assert evaluator(params, latent_steps=[1, 2, 1, 2])["mean_latent_steps"] == 1.5
    evaluator(params, latent_steps=0)
    assert len(built) == 2  # 0 and 2 compiled slots; [1, 2, 1, 2] runs in the 2-slot one


def names(cfg, **kwargs):
    return [analysis.name for analysis in analyses_for(cfg, **kwargs)]


def test_each_analysis_is_switched_on_for_its_runs_and_off_for_the_others():
    keys = [["<abs_0>"]]
    # chain analysis: graph tasks (ProsQA, ProntoQA), by the task whose questions are evaluated
    assert names(tiny()) == ["chain_analysis"]
    assert names(tiny("task.name=prontoqa_small")) == ["chain_analysis"]
    assert names(tiny("latent.mode=coconut")) == names(tiny("latent.mode=switch")) == ["chain_analysis"]
    assert names(tiny("task.name=multiplication_3x3")) == names(tiny("task.name=gsm8k")) == []
    assert names(tiny(), task="multiplication") == []  # eval.py --data multiplication on a ProsQA run
    assert names(tiny("task.name=multiplication"), task="prosqa") == ["chain_analysis"]
    # codebook statistics: abstract formats; key agreement: a keyed warm-up's phases (its keys given)
    assert names(tiny("task.name=multiplication", "task.format=abstract")) == ["codebook"]
    assert names(tiny("task.name=multiplication", "task.format=codes")) == ["codebook"]
    assert names(tiny("task.format=abstract")) == ["chain_analysis", "codebook"]
    assert names(tiny("task.format=abstract"), keyed_spans=keys) == ["chain_analysis", "codebook", "key_agreement"]
    assert names(tiny("task.name=multiplication"), keyed_spans=keys) == []  # keys of a text run mean nothing
    # chain leak: bottleneck runs; it runs the model again, which training's evaluations leave out
    bottleneck = tiny("task.name=multiplication", "task.format=abstract_bottleneck")
    assert names(bottleneck) == ["codebook", "chain_leak"]
    assert names(bottleneck, keyed_spans=keys) == ["codebook", "key_agreement", "chain_leak"]
    assert names(bottleneck, model_passes=False) == ["codebook"]
    assert [a.needs_model for a in analyses_for(bottleneck)] == [False, True]
    assert analyses_for(tiny("task.format=abstract"), plot_path="x.png")[1].plot_path == "x.png"


@pytest.mark.parametrize("task_name, chain", [("prosqa_small", True), ("multiplication_3x3", False)])
def test_the_evaluator_reports_what_its_analyses_are(task_name, chain):
    task = get_task(task_name)
    examples = task.generate(3, seed=0)
    tokenizer = fit_tokenizer(examples, [], "cot")
    cfg = resolve_vocab(tiny(f"task.name={task_name}", "eval.max_new_tokens=2"), tokenizer)
    graphdef, params = nnx.split(Transformer(cfg.model, rngs=nnx.Rngs(0)))
    results = evaluator_for(cfg, graphdef, tokenizer, examples, resolve_scorer("auto", examples, task),
                                progress=False)(params)
    assert ("chain_analysis" in results) == chain
    assert all(("chain" in r) == chain for r in results["records"])


def test_eval_top_k_reaches_the_sampler_and_top_k_1_decodes_greedily():
    """eval.top_k is passed to the engine: top_k=1 at temperature 1 emits what greedy decoding
    emits, where plain temperature-1 sampling (the same keys) emits something else."""
    task = get_task("prosqa_small")
    examples = task.generate(4, seed=0)
    tokenizer = fit_tokenizer(examples, [], "cot")
    scorer = resolve_scorer("auto", examples, task)
    base = resolve_vocab(tiny("eval.max_new_tokens=8"), tokenizer)
    graphdef, params = nnx.split(Transformer(base.model, rngs=nnx.Rngs(0)))

    def generated(*overrides):
        cfg = apply_overrides(base, list(overrides))
        records = evaluator_for(cfg, graphdef, tokenizer, examples, scorer, progress=False)(params)["records"]
        return [r["generated"] for r in records]

    greedy = generated("eval.temperature=0.0")
    assert generated("eval.temperature=1.0", "eval.top_k=1") == greedy
    assert generated("eval.temperature=1.0") != greedy


@pytest.mark.slow
def test_eval_py_on_one_example_of_a_bottleneck_run_says_why_chain_leak_did_not_run(tmp_path):
    """chain_leak swaps in another question's chain: `eval.py --n 1` on an abstract_bottleneck run
    reports that it needs 2 examples (it raised a ValueError, a traceback, before)."""
    import sys
    from pathlib import Path

    from latent.train.loop import train

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    import eval as eval_cli

    cfg = tiny("task.format=abstract_bottleneck", "train.steps=2", "task.n_train=48", "task.n_valid=8",
               "abstract.num_tokens=8", "abstract.max_tokens=4")
    train(cfg, tmp_path / "run", progress=False)
    results = eval_cli.main(["--workdir", str(tmp_path / "run"), "--n", "1", "--no-progress", "--max-new-tokens", "4"])
    assert results["n"] == 1
    assert results["chain_leak"] == {"n": 1, "skipped": (
        "chain_leak pairs each question with another question's chain and needs at least 2 examples; "
        "got 1 (eval.n_examples=1, eval.py --n)"
    )}


@pytest.mark.parametrize("overrides", [["task.format=cot"], ["latent.mode=coconut"], ["task.format=abstract_bottleneck"]])
def test_the_question_tokens_are_the_prompts_own_without_what_the_format_appends(overrides):
    """Evaluator.question_tokens(): each evaluated prompt's question as the tokenizer encodes it
    (Coconut's <bot> and a bottleneck prompt's gold chain left out), so eval.py's unknown-token
    share counts what it counted when it encoded the questions again."""
    from latent.data.tasks.formats import prompt_text
    from latent.eval.run import unknown_token_share

    task = get_task("prosqa_small")
    examples = task.generate(4, seed=0)
    tokenizer = fit_tokenizer(examples[:1], [], "cot")  # the other questions hold words it has never seen
    cfg = resolve_vocab(tiny("eval.max_new_tokens=2", "task.max_len=256", *overrides), tokenizer)
    graphdef = nnx.split(Transformer(cfg.model, rngs=nnx.Rngs(0)))[0]
    evaluator = evaluator_for(cfg, graphdef, tokenizer, examples, resolve_scorer("auto", examples, task),
                                  progress=False, model_passes=False)
    assert evaluator.skipped == 0
    encoded = [tokenizer.encode(prompt_text(e)) for e in examples]
    assert [list(q) for q in evaluator.question_tokens()] == encoded
    assert any(len(r.tokens) > len(q) for r, q in zip(evaluator.prompts, encoded)) == (overrides != ["task.format=cot"])
    unk = tokenizer.token_to_id("<unk>")
    share = sum(ids.count(unk) for ids in encoded) / sum(len(ids) for ids in encoded)
    assert 0 < unknown_token_share(tokenizer, evaluator.question_tokens()) == pytest.approx(share)
