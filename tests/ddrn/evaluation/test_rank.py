"""evaluate_rank on hand-made cases with known answers, and against the sort-based reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ddrn.errors import DataError
from ddrn.evaluation.rank import evaluate_rank, evaluate_rank_reference


def test_single_query_known_cmc_ap_inp() -> None:
    # Gallery sorted by distance: g0 neg, g1 pos, g2 junk (same pid+cam), g3 neg, g4 pos.
    dist = np.array([[0.1, 0.2, 0.25, 0.3, 0.4]], dtype=np.float32)
    g_pids = np.array([2, 1, 1, 3, 1])
    g_cams = np.array([0, 1, 0, 1, 2])
    res = evaluate_rank(dist, [1], g_pids, [0], g_cams, max_rank=5)
    # Kept ranking: neg, pos, neg, pos (junk dropped) -> first hit at rank 2.
    assert res.cmc.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0]
    assert res.mAP == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert res.mINP == pytest.approx(2 / 4)
    assert res.num_valid == 1


def test_same_camera_junk_is_dropped_not_counted_as_hit() -> None:
    # The nearest item is the query's pid in the query's camera: junk, not a hit.
    dist = np.array([[0.0, 0.5, 0.6]], dtype=np.float32)
    res = evaluate_rank(dist, [7], [7, 8, 7], [3], [3, 1, 1], max_rank=3)
    assert res.cmc.tolist() == [0.0, 1.0, 1.0]
    assert res.mAP == pytest.approx(0.5)


def test_query_without_valid_match_is_skipped() -> None:
    dist = np.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]], dtype=np.float32)
    g_pids, g_cams = np.array([1, 2, 0]), np.array([1, 1, 1])
    # query 0 (pid 1, cam 0) has a match; query 1 (pid 2, cam 1) only has a same-camera one.
    res = evaluate_rank(dist, [1, 2], g_pids, [0, 1], g_cams, max_rank=3)
    assert res.num_valid == 1
    assert res.cmc.tolist() == [1.0, 1.0, 1.0]
    assert res.mAP == pytest.approx(1.0)


def test_distractors_count_as_negatives_and_cmc_is_padded() -> None:
    # pid 0 (distractor) ranked first; only 3 gallery items but max_rank 10.
    dist = np.array([[0.1, 0.2, 0.3]], dtype=np.float32)
    res = evaluate_rank(dist, [4], [0, 0, 4], [0], [1, 1, 1], max_rank=10)
    assert res.cmc.tolist() == [0.0, 0.0] + [1.0] * 8
    assert res.mAP == pytest.approx(1 / 3)
    assert res.mINP == pytest.approx(1 / 3)


def test_ties_are_broken_by_gallery_index_like_a_stable_sort() -> None:
    dist = np.array([[0.5, 0.5, 0.5, 0.5]], dtype=np.float32)
    res = evaluate_rank(dist, [1], [2, 1, 3, 1], [0], [1, 1, 1, 1], max_rank=4)
    # Stable order g0(neg) g1(pos) g2(neg) g3(pos).
    assert res.cmc.tolist() == [0.0, 1.0, 1.0, 1.0]
    assert res.mAP == pytest.approx((1 / 2 + 2 / 4) / 2)


def test_no_valid_query_and_nan_raise_one_line_errors() -> None:
    with pytest.raises(DataError, match="none of the 1 queries"):
        evaluate_rank(np.zeros((1, 2), np.float32), [1], [1, 2], [0], [0, 0])
    with pytest.raises(DataError, match="NaN"):
        evaluate_rank(np.array([[np.nan, 0.0]], np.float32), [1], [1, 2], [0], [1, 1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_matches_reference_on_random_cases_with_ties(dtype: type) -> None:
    rng = np.random.default_rng(0)
    for trial in range(60):
        q, g = int(rng.integers(1, 25)), int(rng.integers(1, 70))
        if trial % 2:  # small integers: many exact ties, negative values and -0.0
            dist = rng.integers(-3, 5, (q, g)).astype(dtype) * np.where(rng.random((q, g)) < .5, 1, -1)
        else:
            dist = rng.standard_normal((q, g)).astype(dtype)
        qp, gp = rng.integers(0, 5, q), rng.integers(0, 5, g)
        qc, gc = rng.integers(0, 3, q), rng.integers(0, 3, g)
        try:
            ref = evaluate_rank_reference(dist, qp, gp, qc, gc, max_rank=8)
        except DataError:
            with pytest.raises(DataError):
                evaluate_rank(dist, qp, gp, qc, gc, max_rank=8)
            continue
        res = evaluate_rank(dist, qp, gp, qc, gc, max_rank=8,
                            block_size=int(rng.integers(1, 6)), num_threads=1 + trial % 2)
        np.testing.assert_array_equal(res.cmc, ref.cmc)
        assert res.num_valid == ref.num_valid
        assert res.mAP == pytest.approx(ref.mAP, abs=1e-12)
        assert res.mINP == pytest.approx(ref.mINP, abs=1e-12)


def test_many_positives_fallback_and_torch_input_match_reference() -> None:
    rng = np.random.default_rng(1)
    dist = rng.random((6, 300), dtype=np.float32)
    gp = np.where(rng.random(300) < 0.6, 1, rng.integers(2, 9, 300))  # ~180 positives per query
    qp, qc, gc = np.ones(6, dtype=int), np.zeros(6, dtype=int), rng.integers(0, 4, 300)
    ref = evaluate_rank_reference(dist, qp, gp, qc, gc)
    res = evaluate_rank(torch.from_numpy(dist), torch.from_numpy(qp), gp, qc, torch.from_numpy(gc))
    np.testing.assert_array_equal(res.cmc, ref.cmc)
    assert res.mAP == pytest.approx(ref.mAP, abs=1e-12)
    assert res.mINP == pytest.approx(ref.mINP, abs=1e-12)


def test_as_percentages_schema() -> None:
    res = evaluate_rank(np.array([[0.1, 0.2]], np.float32), [1], [2, 1], [0], [1, 1], max_rank=5)
    pct = res.as_percentages()
    assert set(pct) == {"R1", "R5", "R10", "mAP", "mINP", "num_query"}
    assert pct["R1"] == 0.0 and pct["R5"] == 100.0 and pct["R10"] == 100.0
    assert pct["mAP"] == pytest.approx(50.0)


def _reference_per_query(dist: np.ndarray, qp: np.ndarray, gp: np.ndarray, qc: np.ndarray,
                         gc: np.ndarray) -> tuple[list[int], list[int], list[float]]:
    """Scored query indices, first-hit kept ranks and APs by one stable argsort per query."""
    index, first, aps = [], [], []
    for i in range(dist.shape[0]):
        order = np.argsort(dist[i], kind="stable")
        keep = ~((gp[order] == qp[i]) & (gc[order] == qc[i]))
        raw = gp[order][keep] == qp[i]
        if raw.any():
            positions = np.flatnonzero(raw)
            index.append(i)
            first.append(int(positions[0]))
            aps.append(float(np.mean(np.arange(1, raw.sum() + 1) / (positions + 1.0))))
    return index, first, aps


def test_per_query_vectors_match_the_reference_and_average_to_the_aggregate() -> None:
    from ddrn.evaluation.rank import evaluate_rank_per_query

    rng = np.random.default_rng(2)
    for trial in range(30):
        q, g = int(rng.integers(2, 30)), int(rng.integers(5, 80))
        dist = rng.integers(-3, 5, (q, g)).astype(np.float32) if trial % 2 else \
            rng.standard_normal((q, g)).astype(np.float32)
        qp, gp = rng.integers(0, 5, q), rng.integers(0, 5, g)
        qc, gc = rng.integers(0, 3, q), rng.integers(0, 3, g)
        index, first, aps = _reference_per_query(dist, qp, gp, qc, gc)
        if not index:
            continue
        per = evaluate_rank_per_query(dist, qp, gp, qc, gc, block_size=int(rng.integers(1, 6)),
                                      num_threads=1 + trial % 2)
        assert per.index.tolist() == index and per.first_hit.tolist() == first
        np.testing.assert_allclose(per.ap, aps, atol=1e-12)
        agg = evaluate_rank(dist, qp, gp, qc, gc, max_rank=10)
        ref = evaluate_rank_reference(dist, qp, gp, qc, gc, max_rank=10)
        assert per.hits(1).mean() == pytest.approx(agg.cmc[0]) == pytest.approx(ref.cmc[0])
        assert per.hits(5).mean() == pytest.approx(ref.cmc[4])
        assert per.ap.mean() == pytest.approx(agg.mAP) == pytest.approx(ref.mAP, abs=1e-12)
        assert per.inp.mean() == pytest.approx(agg.mINP) == pytest.approx(ref.mINP, abs=1e-12)
