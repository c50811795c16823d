"""The two-way bootstrap on cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from ddrn.evaluation.uncertainty import (
    QueryScores,
    mean_interval,
    paired_difference,
    paired_scores,
    ratio_interval,
    resampled_means,
)


def test_bernoulli_hits_interval_covers_p_with_the_binomial_width() -> None:
    p, n = 0.3, 2000
    hits = (np.random.default_rng(0).random(n) < p).astype(float)
    ci = mean_interval(hits, seed=1)
    assert ci.low < p < ci.high
    assert ci.estimate == pytest.approx(hits.mean())
    assert ci.high - ci.low == pytest.approx(2 * 1.96 * np.sqrt(p * (1 - p) / n), rel=0.1)
    assert (ci.seeds, ci.queries) == (1, n)


def test_coverage_is_close_to_nominal() -> None:
    rng = np.random.default_rng(3)
    p, n, trials = 0.6, 300, 200
    covered = 0
    for t in range(trials):
        ci = mean_interval((rng.random(n) < p).astype(float), resamples=1000, seed=t)
        covered += ci.low <= p <= ci.high
    assert 0.88 <= covered / trials <= 0.99


def test_seed_spread_widens_the_interval() -> None:
    rng = np.random.default_rng(4)
    base = rng.random(500)
    same = np.stack([base, base, base])
    spread = np.stack([base - 0.2, base, base + 0.2])
    narrow, wide = mean_interval(same), mean_interval(spread)
    assert narrow.estimate == pytest.approx(wide.estimate)
    assert wide.high - wide.low > 3 * (narrow.high - narrow.low)
    assert (wide.seeds, wide.queries) == (3, 500)


def test_paired_difference_of_identical_grids_is_zero_and_unmarked() -> None:
    grid = np.random.default_rng(5).random((3, 200))
    ci = paired_difference(grid, grid.copy())
    assert (ci.estimate, ci.low, ci.high) == (0.0, 0.0, 0.0)
    assert ci.sign == 0 and not ci.excludes_zero


def test_paired_difference_marks_a_constant_shift_both_ways() -> None:
    grid = np.random.default_rng(6).random((2, 300))
    up = paired_difference(grid + 0.05, grid)
    assert up.estimate == pytest.approx(0.05) and up.sign == 1
    assert up.low == pytest.approx(0.05) and up.high == pytest.approx(0.05)
    assert paired_difference(grid, grid + 0.05).sign == -1
    # Pairing cancels the shared query noise: unpaired noise of this size would hide the shift.
    assert mean_interval(grid).high - mean_interval(grid).low > 0.05


def test_paired_difference_of_noise_contains_zero() -> None:
    rng = np.random.default_rng(7)
    a, b = (rng.random((1, 400)) < 0.5).astype(float), (rng.random((1, 400)) < 0.5).astype(float)
    ci = paired_difference(a, b)
    assert ci.low < 0 < ci.high or abs(ci.estimate) > 0.05  # 0.05 ~ 1 s.e. of noise here


def test_ratio_interval_and_replicates_are_deterministic() -> None:
    rng = np.random.default_rng(8)
    num, den = rng.random((2, 100)) * 0.5, rng.random((2, 100)) * 0.5 + 0.5
    ci = ratio_interval(num, den)
    assert ci.estimate == pytest.approx(num.mean() / den.mean())
    assert ci.low < ci.estimate < ci.high
    np.testing.assert_array_equal(resampled_means([num], 50, seed=2),
                                  resampled_means([num], 50, seed=2))
    with pytest.raises(ValueError, match="one shape"):
        resampled_means([num, den[:, :5]])


def test_query_scores_pair_on_common_seeds_and_queries() -> None:
    a = QueryScores.from_runs({0: (np.array([0, 1, 3]), np.array([1.0, 0.0, 1.0])),
                               1: (np.array([0, 3]), np.array([0.0, 1.0]))})
    assert a.seeds == (0, 1) and a.index.tolist() == [0, 3]
    assert a.values.tolist() == [[1.0, 1.0], [0.0, 1.0]]
    b = QueryScores.from_runs({1: (np.array([0, 1, 3]), np.array([1.0, 1.0, 0.0])),
                               2: (np.array([3]), np.array([1.0]))})
    assert b.index.tolist() == [3]  # the queries every seed of b scored
    ga, gb = paired_scores(a, b)  # seed 1, query 3
    assert ga.tolist() == [[1.0]] and gb.tolist() == [[0.0]]
    c = QueryScores.from_runs({5: (np.array([0]), np.array([1.0]))})
    assert paired_scores(a, c) is None
