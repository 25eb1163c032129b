"""Analyses an evaluation runs besides accuracy, each switched on by the task or the method.

An analysis is a small object with one interface (`Analysis`): a `name`, the key its result is
reported under; `per_example(example, record)`, fields it adds to each example's record; and
`__call__(records, evaluator, params)`, its summary of the decoded records (it may run the
model again on `params`, as `ChainLeak` does; then `needs_model` is True). The `Evaluator`
(latent.eval.evaluator) decodes, scores, then hands its records to each of its analyses.

Which analyses a run gets is decided in one place, `analyses_for`:

  chain_analysis  graph tasks (ProsQA, ProntoQA): each written step against the question's graph
  codebook        abstract formats: how evenly the abstract vocabulary is used
  key_agreement   a phase of a keyed Abstract-CoT warm-up: do the spans still name each step
  chain_leak      abstract_bottleneck runs: does the answer read z, or the chain through z

A new task or method adds its analysis there (the class may live in its own module).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from latent.data.abstract import ABSTRACT_FORMATS
from latent.eval import chains
from latent.eval.codebook import codebook_report, key_agreement

# Task-name prefixes whose questions state a graph (latent.eval.chains); prosqa_small etc. included.
GRAPH_TASKS = ("prosqa", "prontoqa")


class Analysis:
    """One analysis of an evaluation, reported as `results[name]`."""

    name: str = "analysis"
    needs_model: bool = False  # runs the model again on the params (more than reading the records)

    def per_example(self, example, record: dict) -> dict:
        """Fields to add to one example's record (`record` holds the decoded text, the prediction, ...)."""
        return {}

    def __call__(self, records: list[dict], evaluator, params):
        """The summary reported under `name`: `records` are the evaluation's per-example records,
        `evaluator` the Evaluator (its tokenizer, examples, graphdef, configs), `params` the model's."""
        raise NotImplementedError


class ChainAnalysis(Analysis):
    """Each written step of a graph question checked against the question's statements (latent.eval.chains)."""

    name = "chain_analysis"

    def per_example(self, example, record):
        return {"chain": chains.analyse(example.question, record["generated"], example.answer)}

    def __call__(self, records, evaluator, params):
        return chains.summarize([r["chain"] for r in records], [r["correct"] for r in records])


class CodebookStats(Analysis):
    """Rank-frequency, power-law fit and usage of the abstract tokens of the generated spans
    (latent.eval.codebook); `plot_path`: where to draw the log-log curve (None: no plot)."""

    name = "codebook"

    def __init__(self, plot_path=None):
        self.plot_path = plot_path

    def __call__(self, records, evaluator, params):
        from latent.data.special_tokens import abstract_tokens

        spans = [r["abstract"] for r in records]
        return codebook_report(spans, abstract_tokens(evaluator.vocab.size), plot_path=self.plot_path)


class KeyAgreement(Analysis):
    """Whether the generated spans say what a keyed z would (abstract.round1=keyed): `keyed_spans`
    holds, per example given to the Evaluator, the z the warm-up's key gives it."""

    name = "key_agreement"

    def __init__(self, keyed_spans: Sequence[Sequence[str]]):
        self.keyed_spans = keyed_spans

    def __call__(self, records, evaluator, params):
        keys = [self.keyed_spans[r["index"]] for r in records]
        return key_agreement([r["abstract"] for r in records], keys, [r["correct"] for r in records])


class ChainLeak(Analysis):
    """Teacher-forced answer accuracy of a bottleneck model with its own chain and another
    question's (latent.eval.bottleneck.chain_leak), with each example's keyed z when
    `keyed_spans` is given. Its predict function is jitted once, on params. With fewer than 2
    examples there is no other question's chain: {"n", "skipped": why} instead of the numbers."""

    name = "chain_leak"
    needs_model = True

    def __init__(self, keyed_spans: Sequence[Sequence[str]] | None = None):
        self.keyed_spans = keyed_spans
        self._predict = None

    def __call__(self, records, evaluator, params):
        from latent.eval.bottleneck import chain_leak, make_predict

        if self._predict is None:
            self._predict = make_predict(evaluator.graphdef)
        examples = evaluator.examples
        if len(examples) < 2:
            return {"n": len(examples), "skipped": (
                f"chain_leak pairs each question with another question's chain and needs at least 2 examples; "
                f"got {len(examples)} (eval.n_examples={evaluator.eval_cfg.n_examples!r}, eval.py --n)"
            )}
        spans = None if self.keyed_spans is None else list(self.keyed_spans)[: len(examples)]
        return chain_leak(
            lambda tokens_BxT, padding_BxT, segments_BxT: np.asarray(self._predict(params, tokens_BxT, padding_BxT, segments_BxT)),
            evaluator.tokenizer, examples, spans, num_tokens=evaluator.abstract_cfg.num_tokens,
            max_len=evaluator.max_len, batch_size=evaluator.eval_cfg.batch_size,
        )


def is_graph_task(task: str) -> bool:
    return task.split("_")[0] in GRAPH_TASKS


def analyses_for(cfg, task: str | None = None, *, keyed_spans=None, plot_path=None,
                 model_passes: bool = True) -> list[Analysis]:
    """The analyses an evaluation of run `cfg` reports, in report order.

    task: the task whose questions are evaluated (default cfg.task.name; eval.py --data TASK names
    another). keyed_spans: per example, the z of a keyed warm-up's key (latent.eval.run.keyed_spans_of;
    None for any other run). plot_path: the codebook's rank-frequency PNG. model_passes: False
    leaves out the analyses that run the model again (`needs_model`), as training's evaluations do.
    """
    task = cfg.task.name if task is None else task
    fmt = cfg.task.format
    analyses: list[Analysis] = []
    if is_graph_task(task):
        analyses.append(ChainAnalysis())
    if fmt in ABSTRACT_FORMATS:
        analyses.append(CodebookStats(plot_path))
        if keyed_spans is not None:
            analyses.append(KeyAgreement(keyed_spans))
    if fmt == "abstract_bottleneck":
        analyses.append(ChainLeak(keyed_spans))
    return [a for a in analyses if model_passes or not a.needs_model]
