"""How evenly a model uses its abstract (or VQ code) vocabulary over an eval set.

The Abstract-CoT paper reports a Zipf-like rank-frequency curve over its abstract tokens:
sorted by count, the r-th most frequent token has frequency f(r) ~ C r^(-s). This module counts
the tokens of each example's span, fits s, draws the curve and summarizes usage:

  rank_frequency(sequences, vocabulary)  counts per token, every vocabulary token included
  power_law_fit(counts)                  s and R^2 of a line through (log rank, log frequency)
  plot_rank_frequency(rf, fit, path)     the log-log curve with its fitted line, as a PNG
  codebook_report(sequences, vocabulary) all of it as a JSON-ready dict
  key_agreement(spans, keys, correct)    how often the spans say what a keyed z would
                                         (abstract.round1=keyed), and accuracy with and without

The usage statistics are latent.nn.vq.codebook_usage (one definition for both): perplexity = exp(entropy in nats) of the
empirical code distribution (equals the vocabulary size when usage is uniform, 1 when one code
takes everything), dead_fraction = share of codes never used, max_share = the top code's share.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

Token = Hashable  # a token string or an integer id


class RankFrequency(NamedTuple):
    tokens: list[Token]  # most frequent first; ties in vocabulary order
    counts: np.ndarray  # int64, aligned with tokens
    ranks: np.ndarray  # 1-based, aligned with tokens
    total: int
    used: int  # tokens with a count above zero
    vocabulary_size: int


class PowerLawFit(NamedTuple):
    exponent: float  # s in f(r) ~ C r^(-s); positive for a decreasing curve
    intercept: float  # log C (natural log)
    r2: float
    n_points: int


def rank_frequency(sequences: Iterable[Sequence[Token]], vocabulary: Sequence[Token]) -> RankFrequency:
    """Counts of every vocabulary token over all sequences, sorted by descending count.

    Unused tokens stay in (with count 0) so `used` and the dead share are visible; a token outside
    the vocabulary raises, since it means the span was cut wrong or the vocabulary is incomplete."""
    vocabulary = [_plain(t) for t in vocabulary]
    if len(set(vocabulary)) != len(vocabulary):
        raise ValueError("vocabulary has duplicate tokens")
    counter = Counter(_plain(t) for sequence in sequences for t in sequence)
    unknown = set(counter) - set(vocabulary)
    if unknown:
        raise ValueError(f"tokens outside the vocabulary: {sorted(map(repr, unknown))[:10]}")
    counts_V = np.array([counter.get(t, 0) for t in vocabulary], dtype=np.int64)
    # A stable sort on -count keeps vocabulary order among equal counts.
    order_V = np.argsort(-counts_V, kind="stable")
    counts_V = counts_V[order_V]
    return RankFrequency(
        tokens=[vocabulary[i] for i in order_V],
        counts=counts_V,
        ranks=np.arange(1, len(vocabulary) + 1, dtype=np.int64),
        total=int(counts_V.sum()),
        used=int((counts_V > 0).sum()),
        vocabulary_size=len(vocabulary),
    )


def power_law_fit(counts: Sequence[int] | np.ndarray, min_count: int = 1) -> PowerLawFit:
    """Least-squares line log f = log C - s log r over the tokens with count >= min_count.

    An OLS fit in log-log space: a quick descriptive statistic for comparing runs, not a maximum
    likelihood estimate of a discrete power law (it over-weights the sparse tail). `counts` may be
    in any order; they are ranked here. With fewer than two usable points the exponent and R^2 are
    NaN. R^2 is also NaN when all kept counts are equal (nothing to explain; the slope is 0)."""
    counts_N = np.sort(np.asarray(counts, dtype=np.int64))[::-1]
    ranks_N = np.arange(1, len(counts_N) + 1)
    # Zero counts have no logarithm, whatever min_count says.
    kept_K = counts_N >= max(min_count, 1)
    n_points = int(kept_K.sum())
    if n_points < 2:
        return PowerLawFit(math.nan, math.nan, math.nan, n_points)
    log_rank_K = np.log(ranks_N[kept_K])
    log_freq_K = np.log(counts_N[kept_K] / counts_N.sum())
    slope, intercept = np.polyfit(log_rank_K, log_freq_K, 1)
    residual_K = log_freq_K - (intercept + slope * log_rank_K)
    ss_total = float(np.sum((log_freq_K - log_freq_K.mean()) ** 2))
    # Equal counts give a total sum of squares that is zero up to rounding.
    r2 = 1.0 - float(np.sum(residual_K**2)) / ss_total if ss_total > 1e-12 else math.nan
    return PowerLawFit(float(-slope), float(intercept), r2, n_points)


def plot_rank_frequency(
    rf: RankFrequency, fit: PowerLawFit, path: str | Path, title: str = "Rank-frequency of codebook tokens"
) -> Path:
    """Log-log PNG of the observed frequencies (used tokens only) and the fitted line."""
    # Figure without pyplot: no global state and no display backend needed.
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(6, 4.5), dpi=120, layout="constrained")
    axes = figure.add_subplot()
    used_U = rf.counts > 0
    if rf.total and used_U.any():
        axes.loglog(rf.ranks[used_U], rf.counts[used_U] / rf.total, "o", markersize=3, alpha=0.7,
                    label=f"observed ({rf.used} of {rf.vocabulary_size} used)")
    if math.isfinite(fit.exponent):
        ranks_L = np.geomspace(1, fit.n_points, 100)
        r2_text = f"{fit.r2:.3f}" if math.isfinite(fit.r2) else "n/a"
        axes.loglog(ranks_L, np.exp(fit.intercept) * ranks_L ** -fit.exponent, "-", color="tab:red",
                    label=f"fit: s = {fit.exponent:.2f}, R² = {r2_text}")
    axes.set_xlabel("rank")
    axes.set_ylabel("frequency")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend()
    figure.savefig(path, format="png")
    return path


def codebook_report(
    sequences: Iterable[Sequence[Token]], vocabulary: Sequence[Token], plot_path: str | Path | None = None
) -> dict:
    """Counts, power-law fit and usage statistics as a JSON-ready dict (NaN becomes None)."""
    from latent.nn.vq import codebook_usage  # one definition of the usage statistics

    rf = rank_frequency(sequences, vocabulary)
    fit = power_law_fit(rf.counts)
    usage = {k: float(v) for k, v in codebook_usage(np.asarray(rf.counts, np.float32)).items()}
    report = {
        "total": rf.total,
        "used": rf.used,
        "vocabulary_size": rf.vocabulary_size,
        "exponent": _finite_or_none(fit.exponent),
        "r2": _finite_or_none(fit.r2),
        "n_points": fit.n_points,
        **{k: (v if rf.total else None) for k, v in usage.items()},
        "top": [[t, int(c)] for t, c in zip(rf.tokens[:10], rf.counts[:10]) if c > 0],
    }
    if plot_path is not None:
        report["plot"] = str(plot_rank_frequency(rf, fit, plot_path))
    return report


def key_agreement(spans: Sequence[Sequence[Token]], keys: Sequence[Sequence[Token]], correct: Sequence[bool]) -> dict:
    """Whether generated spans name what the keyed z of their examples names
    (`latent.methods.abstract_cot.layouts.keyed_abstract`: one token per step result): the share of spans whose
    i-th token is the key's i-th (over the spans whose key has one), the share equal to their key
    token for token, and the accuracy of the answers that follow an exact span and the others.
    A model whose z carries the chain has a high exact share and is right after exact spans."""
    if not len(spans) == len(keys) == len(correct):
        raise ValueError(f"key_agreement: {len(spans)} spans, {len(keys)} keys, {len(correct)} correctness flags")
    width = max((len(k) for k in keys), default=0)
    position = []
    for i in range(width):
        pairs = [(s, k) for s, k in zip(spans, keys) if len(k) > i]
        position.append(sum(len(s) > i and s[i] == k[i] for s, k in pairs) / len(pairs))
    exact = [list(s) == list(k) for s, k in zip(spans, keys)]

    def accuracy(of_exact: bool) -> float | None:
        hits = [c for c, e in zip(correct, exact) if e == of_exact]
        return sum(hits) / len(hits) if hits else None

    return {
        "n": len(spans),
        "position_agreement": position,
        "exact_share": sum(exact) / len(exact) if exact else None,
        "accuracy_when_exact": accuracy(True),
        "accuracy_otherwise": accuracy(False),
    }


def _plain(token: Token) -> Token:
    # numpy / jax scalars (e.g. ids from a generated array) do not serialize to JSON, and jax
    # ones do not hash; their Python value does both.
    return token.item() if getattr(token, "ndim", None) == 0 else token


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None
