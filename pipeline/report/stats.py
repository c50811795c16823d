"""The report's uncertainty: per-query results read from the eval files, intervals per cell,
paired comparisons per row (the statistics are :mod:`ddrn.evaluation.uncertainty`'s; this module
finds the grids and formats them).

A cell's interval comes from the two-way bootstrap over its seeds and queries; a paired
comparison takes two rows on the seeds they share (seed by seed) and the queries they share
(query by query) and bootstraps the mean per-(seed, query) difference. Eval files written before
the per-query results existed give no grids: their cells fall back to ``mean ± std`` over seeds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ddrn.errors import DataError
from ddrn.evaluation.uncertainty import (
    Interval,
    QueryScores,
    mean_interval,
    paired_difference,
    paired_scores,
    ratio_interval,
)
from pipeline.params import ExperimentSpec
from pipeline.trial.eval_record import EvalRecord, QueryResults

METRICS: dict[str, str] = {"R1": "hit@1", "mAP": "AP", "mINP": "INP"}
"""Metric -> the per-query quantity it is the mean of."""
UP, DOWN = "▲", "▼"
LEGEND = (f"{UP} / {DOWN}: the 95% interval of the paired difference lies wholly above / below 0 "
          "(no mark: it contains 0, the data cannot tell the two apart)")
METHOD_TEXT = (
    "**Uncertainty.** Each measured cell is `mean [95% interval]` in percent. The interval is a "
    "two-way bootstrap over the seeds *and* the queries (4000 replicates, percentile; each "
    "replicate redraws the seeds and, separately, the queries, both with replacement), so it "
    "holds both the test set's query sampling and the seed-to-seed spread; a cell with one seed "
    "holds query sampling only. Differences (Δ) are paired: the two rows on the same seeds and "
    "the same queries, the interval bootstrapped over the per-(seed, query) differences.")


def _per_query(results: QueryResults) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{metric: (query index, values)}`` of one split of an eval file."""
    per = results.per_query
    return {"R1": (per.index, per.hits(1)), "mAP": (per.index, per.ap.astype(np.float64)),
            "mINP": (per.index, per.inp.astype(np.float64))}


def _twin_to_query(record: EvalRecord,
                   twin: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Twin results re-indexed by the occluded query of the same file name (the twin lives in
    another folder: ``query_twin/<name>`` pairs with ``query/<name>``)."""
    def name(path: object) -> str:
        return str(path).replace("\\", "/").rsplit("/", 1)[-1]

    assert record.twin is not None
    q_paths = {name(p): i for i, p in enumerate(record.query.paths)}
    t_paths = [name(p) for p in record.twin.paths]
    out = {}
    for metric, (index, values) in twin.items():
        q_index = np.array([q_paths.get(t_paths[i], -1) for i in index], dtype=np.int64)
        keep = q_index >= 0
        order = np.argsort(q_index[keep], kind="stable")
        out[metric] = (q_index[keep][order], values[keep][order])
    return out


@dataclass
class ReportStats:
    """Per-query grids of every measured (variant, train set, test set), and intervals on them.

    ``grids[(variant, train_set, key)][metric]`` is a :class:`QueryScores`; ``key`` is a test set
    or ``<test set>/twin`` (twins indexed by their occluded query, so the two pair up).
    """

    grids: dict[tuple[str, str, str], dict[str, QueryScores]] = field(default_factory=dict)
    resamples: int = 4000
    seed: int = 0

    def get(self, variant: str, train_set: str, key: str, metric: str) -> QueryScores | None:
        return self.grids.get((variant, train_set, key), {}).get(metric)

    def cell(self, variant: str, train_set: str, key: str, metric: str) -> Interval | None:
        """The interval of a measured cell, in percent (None without per-query results)."""
        scores = self.get(variant, train_set, key, metric)
        if scores is None:
            return None
        return mean_interval(scores.values, resamples=self.resamples, seed=self.seed).scaled(100)

    def versus(self, a: tuple[str, str, str], b: tuple[str, str, str],
               metric: str) -> Interval | None:
        """Paired difference ``a - b`` of two (variant, train set, key) cells, in points."""
        sa, sb = self.get(*a, metric), self.get(*b, metric)
        pair = paired_scores(sa, sb) if sa is not None and sb is not None else None
        if pair is None:
            return None
        return paired_difference(*pair, resamples=self.resamples, seed=self.seed).scaled(100)

    def gap(self, variant: str, train_set: str, test_set: str, metric: str) -> Interval | None:
        """Twin minus occluded, paired per seed and query (the occlusion gap), in points."""
        gaps = self.gap_scores(variant, train_set, test_set, metric)
        if gaps is None:
            return None
        return mean_interval(gaps.values, resamples=self.resamples, seed=self.seed).scaled(100)

    def gap_scores(self, variant: str, train_set: str, test_set: str,
                   metric: str) -> QueryScores | None:
        """Per-(seed, query) twin minus occluded of the occluded queries that have a twin."""
        occ = self.get(variant, train_set, test_set, metric)
        twin = self.get(variant, train_set, f"{test_set}/twin", metric)
        if occ is None or twin is None:
            return None
        seeds = sorted(set(occ.seeds) & set(twin.seeds))
        index = np.intersect1d(occ.index, twin.index)
        if not seeds or index.size == 0:
            return None
        return QueryScores(tuple(seeds), index,
                           twin.restrict(seeds, index) - occ.restrict(seeds, index))

    def on_twins(self, variant: str, train_set: str, test_set: str, metric: str,
                 twin: bool) -> Interval | None:
        """The occluded (or twin) cell restricted to the queries that have both, in percent."""
        gaps = self.gap_scores(variant, train_set, test_set, metric)
        if gaps is None:
            return None
        key = f"{test_set}/twin" if twin else test_set
        grid = self.get(variant, train_set, key, metric).restrict(gaps.seeds, gaps.index)
        return mean_interval(grid, resamples=self.resamples, seed=self.seed).scaled(100)

    def kept(self, variant: str, train_set: str, test_set: str) -> Interval | None:
        """R1 occluded as a share of R1 twin (percent), on the paired queries."""
        gaps = self.gap_scores(variant, train_set, test_set, "R1")
        if gaps is None:
            return None
        occ, twin = (self.get(variant, train_set, k, "R1").restrict(gaps.seeds, gaps.index)
                     for k in (test_set, f"{test_set}/twin"))
        return ratio_interval(occ, twin, resamples=self.resamples, seed=self.seed).scaled(100)

    def gap_versus(self, variant: str, baseline: str, train_set: str, test_set: str,
                   metric: str) -> Interval | None:
        """(gap of ``variant``) - (gap of ``baseline``) per seed and query, in points."""
        ga = self.gap_scores(variant, train_set, test_set, metric)
        gb = self.gap_scores(baseline, train_set, test_set, metric)
        pair = paired_scores(ga, gb) if ga is not None and gb is not None else None
        if pair is None:
            return None
        return paired_difference(*pair, resamples=self.resamples, seed=self.seed).scaled(100)


def load_stats(eval_dir: Path, specs: Sequence[ExperimentSpec], docs: Sequence[dict[str, Any]],
               seed: int = 0, resamples: int = 4000) -> ReportStats:
    """Per-query results of every experiment's eval files, checked against its metrics document.

    Raises:
        DataError: an eval file whose per-query means are not its metrics document's numbers
            (the two come from different evaluate runs).
    """
    runs: dict[tuple[str, str, str], dict[str, dict[int, tuple[np.ndarray, np.ndarray]]]] = {}
    for spec, doc in zip(specs, docs, strict=True):
        for test_set in spec.test_sets:
            path = eval_dir / spec.name / f"{test_set}.npz"
            if not path.is_file():
                continue
            record = EvalRecord.load(path)
            found = {test_set: _per_query(record.query_results)}
            if record.twin_results is not None:
                twin = _per_query(record.twin_results)
                _check(path, "twin", twin, doc["results"].get(f"{test_set}/twin"))
                found[f"{test_set}/twin"] = _twin_to_query(record, twin)
            _check(path, "query", found[test_set], doc["results"].get(test_set))
            for key, per_metric in found.items():
                for metric, vectors in per_metric.items():
                    runs.setdefault((spec.variant, spec.train_set, key), {}).setdefault(
                        metric, {})[spec.seed] = vectors
    grids = {cell: {m: QueryScores.from_runs(by_seed) for m, by_seed in metrics.items()}
             for cell, metrics in runs.items()}
    return ReportStats(grids, resamples=resamples, seed=seed)


def _check(path: Path, split: str, per_metric: dict[str, tuple[np.ndarray, np.ndarray]],
           result: dict[str, Any] | None) -> None:
    if result is None:
        return
    for metric, (_, values) in per_metric.items():
        if metric in result and abs(100.0 * values.mean() - float(result[metric])) > 1e-6:
            raise DataError(f"{path}: {split} per-query {METRICS[metric]} averages to "
                            f"{100.0 * values.mean():.4f}, the metrics file says {metric} = "
                            f"{float(result[metric]):.4f}; expected one evaluate run's outputs; "
                            "run the evaluate stage again")


def fmt_interval(ci: Interval | None) -> str:
    """``"26.3 [22.1, 30.5]"`` (``"-"`` for none)."""
    return "-" if ci is None else f"{ci.estimate:.1f} [{ci.low:.1f}, {ci.high:.1f}]"


def fmt_difference(ci: Interval | None) -> str:
    """``"+3.2 [1.1, 5.3] ▲"``: signed difference, interval, and a mark when it excludes 0."""
    if ci is None:
        return "-"
    mark = {1: f" {UP}", -1: f" {DOWN}", 0: ""}[ci.sign]
    return f"{ci.estimate:+.1f} [{ci.low:+.1f}, {ci.high:+.1f}]{mark}"


def grid_size(ci: Interval | None) -> str:
    """``"3 × 480"`` seeds × queries of an interval."""
    return "-" if ci is None else f"{ci.seeds} × {ci.queries}"


def first(values: Iterable[Interval | None]) -> Interval | None:
    return next((v for v in values if v is not None), None)
