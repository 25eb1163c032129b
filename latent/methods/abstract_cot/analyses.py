"""Abstract-CoT's analyses (latent.eval.analyses.Analysis): codebook use, key agreement, chain leak."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from latent.eval.analyses import Analysis
from latent.eval.codebook import codebook_report, key_agreement


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
    question's (latent.methods.abstract_cot.chain_leak), with each example's keyed z when
    `keyed_spans` is given; `num_tokens`: the run's abstract.num_tokens. With fewer than 2
    examples there is no other question's chain: {"n", "skipped": why} instead of the numbers. Its predict function is jitted once, on params."""

    name = "chain_leak"
    needs_model = True

    def __init__(self, keyed_spans: Sequence[Sequence[str]] | None = None, *, num_tokens: int):
        self.keyed_spans, self.num_tokens = keyed_spans, num_tokens
        self._predict = None

    def __call__(self, records, evaluator, params):
        from latent.methods.abstract_cot.chain_leak import chain_leak, make_predict

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
            evaluator.tokenizer, examples, spans, num_tokens=self.num_tokens,
            max_len=evaluator.max_len, batch_size=evaluator.eval_cfg.batch_size,
        )


def keyed_spans_of(workdir, cfg, examples):
    """For a phase of a keyed Abstract-CoT warm-up (`<warmup>/round<r>/<phase>` with
    abstract.round1=keyed), the z that the warm-up's key gives each of `examples`, keyed by the
    warm-up's own training examples as round 1 was; None for any other run."""
    from latent.config_io import from_dict, read_config_json
    from latent.methods.abstract_cot.layouts import keyed_spans

    if workdir is None or examples is None or cfg.abstract.round1 != "keyed":
        return None
    warmup_config = Path(workdir).resolve().parents[1] / "config.json"
    if not warmup_config.exists():
        return None
    return keyed_spans(from_dict(read_config_json(warmup_config)), examples)
