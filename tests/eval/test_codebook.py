"""Rank-frequency counts, power-law fit, plot and usage report over a token vocabulary."""

import json
import math

import numpy as np
import pytest

from latent.eval import codebook

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_counts_and_ranks_keep_unused_tokens_and_break_ties_by_vocabulary_order():
    # b comes before a in the vocabulary but after it in the data: the tie must follow the vocabulary.
    rf = codebook.rank_frequency([["a", "b", "c"], ["c", "d"], ["a", "b", "c"]], ["e", "d", "c", "b", "a"])
    assert rf.tokens == ["c", "b", "a", "d", "e"]
    assert rf.counts.tolist() == [3, 2, 2, 1, 0] and rf.counts.dtype == np.int64
    assert rf.ranks.tolist() == [1, 2, 3, 4, 5]
    assert (rf.total, rf.used, rf.vocabulary_size) == (8, 4, 5)


def test_integer_ids_from_arrays_and_tokens_outside_the_vocabulary():
    rf = codebook.rank_frequency([np.array([2, 2, 0]), [2]], range(4))
    assert rf.tokens == [2, 0, 1, 3] and rf.counts.tolist() == [3, 1, 0, 0]
    assert all(type(t) is int for t in rf.tokens)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        codebook.rank_frequency([[0, 7]], range(4))


def test_fit_recovers_the_exponent_of_exact_power_law_counts():
    ranks_R = np.arange(1, 201)
    counts_R = np.round(1e9 * ranks_R**-1.3).astype(np.int64)
    shuffled_R = np.random.default_rng(0).permutation(counts_R)  # the fit must rank them itself
    fit = codebook.power_law_fit(shuffled_R)
    assert fit.exponent == pytest.approx(1.3, abs=0.02)
    assert fit.r2 > 0.99 and fit.n_points == 200
    assert math.exp(fit.intercept) == pytest.approx(counts_R[0] / counts_R.sum(), rel=0.01)


def test_min_count_drops_the_tail_from_the_fit():
    counts = [1000, 500, 333, 250, 1, 1, 1]
    assert codebook.power_law_fit(counts, min_count=2).n_points == 4
    assert codebook.power_law_fit(counts, min_count=2).exponent == pytest.approx(1.0, abs=0.01)
    assert codebook.power_law_fit(counts).n_points == 7


def test_uniform_usage_has_a_flat_curve():
    ids_N = np.random.default_rng(1).integers(0, 50, size=200_000)
    fit = codebook.power_law_fit(codebook.rank_frequency([ids_N], range(50)).counts)
    assert abs(fit.exponent) < 0.02 and fit.n_points == 50
    exactly_uniform = codebook.power_law_fit([100] * 50)
    assert exactly_uniform.exponent == pytest.approx(0.0, abs=1e-9) and math.isnan(exactly_uniform.r2)


@pytest.mark.parametrize("counts, n_points", [([], 0), ([5], 1), ([5, 0, 0], 1), ([0, 0], 0)])
def test_degenerate_counts_give_nan_without_raising(counts, n_points):
    fit = codebook.power_law_fit(counts)
    assert math.isnan(fit.exponent) and math.isnan(fit.r2) and fit.n_points == n_points


def test_degenerate_report_is_strict_json():
    for sequences in ([], [["x", "x"]]):
        report = codebook.codebook_report(sequences, ["x", "y"])
        assert report["exponent"] is None and report["r2"] is None
        json.dumps(report, allow_nan=False)
    assert codebook.codebook_report([["x", "x"]], ["x", "y"])["top"] == [["x", 2]]


def test_report_usage_statistics():
    uniform = codebook.codebook_report([list(range(8)) * 3], range(8))
    assert uniform["perplexity"] == pytest.approx(8.0)
    assert uniform["dead_fraction"] == 0.0 and uniform["max_share"] == pytest.approx(1 / 8)
    skewed = codebook.codebook_report([[0, 0, 0, 1]], range(4))
    assert skewed["dead_fraction"] == 0.5 and skewed["max_share"] == 0.75
    assert skewed["perplexity"] == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))
    assert skewed["top"] == [[0, 3], [1, 1]] and (skewed["total"], skewed["used"]) == (4, 2)
    assert "plot" not in skewed


def test_plot_is_a_real_png(tmp_path):
    from matplotlib.image import imread

    ids_N = np.random.default_rng(2).zipf(1.5, size=5000) % 100
    path = tmp_path / "nested" / "dir" / "rank_frequency.png"
    report = codebook.codebook_report([ids_N], range(100), plot_path=path)
    assert report["plot"] == str(path)
    data = path.read_bytes()
    assert len(data) > 1000 and data.startswith(PNG_MAGIC)
    height, width, channels = imread(path).shape
    assert height > 100 and width > 100 and channels in (3, 4)


def test_key_agreement_per_position_exact_share_and_accuracy_split():
    keys = [["a", "b", "c"], ["a", "b", "c"], ["d", "e"], ["f"]]
    spans = [["a", "b", "c"], ["a", "x", "c"], ["d"], ["f"]]
    correct = [True, False, True, True]
    report = codebook.key_agreement(spans, keys, correct)
    # position 0: 4/4 right; position 1: 1 of the 3 keys that have one (the short span misses it);
    # position 2: 2/2
    assert report["position_agreement"] == [1.0, pytest.approx(1 / 3), 1.0]
    assert report["exact_share"] == 0.5 and report["n"] == 4
    assert report["accuracy_when_exact"] == 1.0 and report["accuracy_otherwise"] == 0.5
    assert codebook.key_agreement([["a"]], [["a"]], [False])["accuracy_otherwise"] is None
    with pytest.raises(ValueError, match="2 spans, 1 keys"):
        codebook.key_agreement([["a"], ["b"]], [["a"]], [True, False])
