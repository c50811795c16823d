"""Confidence intervals for retrieval metrics: a two-way bootstrap over seeds and queries.

R1, mAP and mINP are means over queries of per-query quantities (hit@1 in {0, 1}, AP, INP; see
:func:`ddrn.evaluation.rank.evaluate_rank_per_query`), and a table cell is their mean over the
training seeds. A cell is therefore the grand mean of a (seeds x queries) grid ``x[s, q]``, and
two sources of chance move it: which queries the test set happens to hold, and which seeds
training happened to use.

**The resampling: seeds and queries, independently (the two-way or "pigeonhole" bootstrap,
Owen 2007, for crossed designs).** Each replicate draws S seeds with replacement and, separately,
Q queries with replacement, and takes the mean of ``x`` over that grid. Why this one:

- every seed is evaluated on the *same* queries (the design is crossed, not nested), so a query
  resample must be shared by all seeds, and by both models of a paired comparison; a nested
  bootstrap (queries resampled anew inside each seed) would break that pairing;
- the bootstrap over queries of the seed-averaged values treats the seeds as fixed: when seeds
  disagree by more than the query noise, its interval is narrower than the seed spread itself;
  resampling the seeds too puts that spread into the interval;
- with one seed it is exactly the ordinary bootstrap over queries (then the interval says nothing
  about seed-to-seed variation, and the report says how many seeds a cell has); with few seeds
  the seed part is coarse (3 seeds give 10 distinct multisets) and the interval is mildly
  conservative, which is the safe side for a claim.

Intervals are percentile intervals of the replicates. The bootstrap is vectorised: a replicate's
grid mean is ``c_b^T X d_b / (S Q)`` with ``c_b``, ``d_b`` the multinomial draw counts of seeds
and queries, so B replicates are one matrix product per chunk (no Python loop over replicates).
Paired comparisons (:func:`paired_difference`) resample the per-(seed, query) differences of two
models on the same seeds and queries, so the noise the two share cancels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 4000
_CHUNK = 500
"""Replicates drawn at a time (bounds memory at ~8 bytes x _CHUNK x Q)."""


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap confidence interval.

    Attributes:
        estimate: the grand mean over the (seeds x queries) grid (for a paired comparison: the
            mean difference; for a ratio: the ratio of the means).
        low, high: the percentile interval's bounds.
        seeds, queries: the grid the estimate was computed on.
        confidence: the interval's nominal coverage (0.95).
    """

    estimate: float
    low: float
    high: float
    seeds: int
    queries: int
    confidence: float = CONFIDENCE

    @property
    def sign(self) -> int:
        """+1 when the whole interval is above 0, -1 when below, 0 when it contains 0."""
        return 1 if self.low > 0 else -1 if self.high < 0 else 0

    @property
    def excludes_zero(self) -> bool:
        return self.sign != 0

    def scaled(self, factor: float) -> Interval:
        """The same interval in other units (e.g. ``100`` for percent)."""
        return Interval(self.estimate * factor, self.low * factor, self.high * factor,
                        self.seeds, self.queries, self.confidence)


@dataclass(frozen=True)
class QueryScores:
    """One per-query quantity of one model on one test set, for each of its seeds.

    Attributes:
        seeds: (S,) the training seeds, ascending.
        index: (Q,) ascending query indices (into the test set's query split) scored by every seed.
        values: (S, Q) float64 the quantity (hit@1, AP, ...) per seed and query.
    """

    seeds: tuple[int, ...]
    index: np.ndarray
    values: np.ndarray

    @classmethod
    def from_runs(cls, runs: Mapping[int, tuple[np.ndarray, np.ndarray]]) -> QueryScores:
        """Stack ``{seed: (query index (V,), values (V,))}`` on the queries every seed scored."""
        if not runs:
            raise ValueError("QueryScores.from_runs: no runs; expected at least one seed")
        seeds = tuple(sorted(runs))
        common = _intersect([np.asarray(runs[s][0]) for s in seeds])
        rows = [_take(np.asarray(runs[s][0]), np.asarray(runs[s][1], dtype=np.float64), common)
                for s in seeds]
        return cls(seeds, common, np.stack(rows))

    def restrict(self, seeds: Sequence[int], index: np.ndarray) -> np.ndarray:
        """(len(seeds), len(index)) values on those seeds and queries (all must be present)."""
        rows = [self.seeds.index(s) for s in seeds]
        return np.stack([_take(self.index, self.values[r], index) for r in rows])


def _intersect(indices: Sequence[np.ndarray]) -> np.ndarray:
    common = indices[0]
    for idx in indices[1:]:
        common = np.intersect1d(common, idx)
    return np.asarray(common, dtype=np.int64)


def _take(index: np.ndarray, values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    pos = np.searchsorted(index, wanted)
    if np.any(pos >= index.size) or np.any(index[np.minimum(pos, index.size - 1)] != wanted):
        raise ValueError("QueryScores: a wanted query is not among the scored ones")
    return values[pos]


def resampled_means(grids: Sequence[np.ndarray], resamples: int = RESAMPLES,
                    seed: int = 0) -> np.ndarray:
    """Grand means of ``grids`` over B two-way bootstrap replicates (seeds and queries).

    Args:
        grids: k arrays of the same shape (S, Q); every replicate resamples them with the same
            seeds and queries (so statistics of several grids, e.g. a ratio, stay paired).
        resamples: B.
        seed: the generator's seed (the same seed gives the same replicates).

    Returns:
        (B, k) float64.
    """
    mats = [np.asarray(g, dtype=np.float64) for g in grids]
    num_s, num_q = mats[0].shape
    if num_s == 0 or num_q == 0 or any(m.shape != (num_s, num_q) for m in mats):
        raise ValueError(f"resampled_means: expected k non-empty grids of one shape (S, Q), got "
                         f"{[m.shape for m in mats]}")
    rng = np.random.default_rng(seed)
    out = np.empty((resamples, len(mats)))
    for start in range(0, resamples, _CHUNK):
        b = min(_CHUNK, resamples - start)
        c = rng.multinomial(num_s, np.full(num_s, 1.0 / num_s), size=b)      # (b, S) seed counts
        d = rng.multinomial(num_q, np.full(num_q, 1.0 / num_q), size=b)      # (b, Q) query counts
        for k, m in enumerate(mats):
            out[start:start + b, k] = np.einsum("bs,sb->b", c, m @ d.T) / (num_s * num_q)
    return out


def _interval(estimate: float, replicates: np.ndarray, shape: tuple[int, int],
              confidence: float) -> Interval:
    alpha = (1.0 - confidence) / 2.0
    low, high = np.nanquantile(replicates, [alpha, 1.0 - alpha])
    return Interval(float(estimate), float(low), float(high), shape[0], shape[1], confidence)


def mean_interval(values: np.ndarray, confidence: float = CONFIDENCE,
                  resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """The grand mean of a (seeds x queries) grid and its two-way bootstrap interval.

    A 1-D array is one seed's per-query values.
    """
    grid = np.atleast_2d(np.asarray(values, dtype=np.float64))
    reps = resampled_means([grid], resamples, seed)[:, 0]
    return _interval(grid.mean(), reps, grid.shape, confidence)


def paired_difference(a: np.ndarray, b: np.ndarray, confidence: float = CONFIDENCE,
                      resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """Mean of ``a - b`` over paired (seed, query) cells and its two-way bootstrap interval.

    ``a`` and ``b`` are (S, Q) grids of two models on the same seeds (row by row) and the same
    queries (column by column); :attr:`Interval.sign` says whether the interval excludes 0.
    """
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    if a.shape != b.shape:
        raise ValueError(f"paired_difference: grids of shapes {a.shape} and {b.shape}; expected "
                         "the same seeds and queries")
    return mean_interval(a.astype(np.float64) - b, confidence, resamples, seed)


def ratio_interval(num: np.ndarray, den: np.ndarray, confidence: float = CONFIDENCE,
                   resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """``mean(num) / mean(den)`` over a shared grid, both resampled together (NaN where the
    resampled denominator is 0)."""
    num, den = np.atleast_2d(num), np.atleast_2d(den)
    reps = resampled_means([num, den], resamples, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(reps[:, 1] != 0, reps[:, 0] / reps[:, 1], np.nan)
        estimate = num.mean() / den.mean() if den.mean() != 0 else np.nan
    return _interval(estimate, ratios, num.shape, confidence)


def paired_scores(a: QueryScores, b: QueryScores) -> tuple[np.ndarray, np.ndarray] | None:
    """The grids of ``a`` and ``b`` on their common seeds and queries (None when none)."""
    seeds = sorted(set(a.seeds) & set(b.seeds))
    index = np.intersect1d(a.index, b.index)
    if not seeds or index.size == 0:
        return None
    return a.restrict(seeds, index), b.restrict(seeds, index)
