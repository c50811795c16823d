"""The held-out validation identities: deterministic, disjoint, a cross-camera match per query."""

from __future__ import annotations

import numpy as np
import pytest

from ddrn.data import PackedSplit, select_rows, split_validation
from ddrn.data.validation import MIN_VALIDATION_IDS
from ddrn.errors import ConfigError


def _ids(num_ids: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A train split's labels and cameras: 2-8 images per id over 1-4 cameras (some single-camera)."""
    rng = np.random.default_rng(seed)
    pids, cams = [], []
    for pid in range(num_ids):
        n_cams = 1 if pid % 7 == 0 else int(rng.integers(2, 5))
        own = rng.choice(6, size=n_cams, replace=False)
        n = int(rng.integers(max(2, n_cams), 9))
        pids += [pid] * n
        cams += [int(own[j % n_cams]) for j in range(n)]
    order = rng.permutation(len(pids))  # the store is not grouped by id
    return np.asarray(pids)[order], np.asarray(cams)[order]


def test_the_split_is_deterministic_for_a_seed_and_differs_for_another() -> None:
    pids, cams = _ids()
    a, b = (split_validation(pids, cams, 0.25, seed=3) for _ in range(2))
    for field in ("val_ids", "train_ids", "train", "query", "gallery"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    c = split_validation(pids, cams, 0.25, seed=4)
    assert not np.array_equal(a.val_ids, c.val_ids)
    assert a.summary()["seed"] == 3 and a.summary()["val_ids"] == [int(p) for p in a.val_ids]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_identities_and_rows_partition_the_train_split(seed: int) -> None:
    pids, cams = _ids(seed=seed)
    s = split_validation(pids, cams, 0.3, seed=seed)
    assert len(s.val_ids) == round(0.3 * 40)
    assert not set(s.val_ids) & set(s.train_ids)
    assert set(s.val_ids) | set(s.train_ids) == set(pids)
    rows = np.concatenate([s.train, s.query, s.gallery])
    assert np.array_equal(np.sort(rows), np.arange(len(pids)))  # every image exactly once
    assert set(pids[s.train]) == set(s.train_ids)
    assert set(pids[s.query]) == set(pids[s.gallery]) == set(s.val_ids)
    # Single-camera identities (pid % 7 == 0 here) cannot give a query a cross-camera match.
    assert all(len(set(cams[pids == p])) >= 2 for p in s.val_ids)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_every_query_has_a_cross_camera_gallery_match(seed: int) -> None:
    pids, cams = _ids(seed=seed)
    s = split_validation(pids, cams, 0.3, seed=seed)
    for q in s.query:
        match = (pids[s.gallery] == pids[q]) & (cams[s.gallery] != cams[q])
        assert match.any(), (pids[q], cams[q])
    # At most one query per identity and camera, and at least one per identity.
    pairs = list(zip(pids[s.query], cams[s.query], strict=True))
    assert len(pairs) == len(set(pairs))
    assert set(pids[s.query]) == set(s.val_ids)


@pytest.mark.parametrize(("num_cams", "queries_per_id"), [(2, 1), (3, 2)])
def test_a_query_without_a_cross_camera_match_is_dropped(num_cams: int, queries_per_id: int) -> None:
    # One image per camera: with 2 cameras the second query would leave the first (and itself)
    # no gallery image; with 3 cameras two queries share the third camera's image as their match.
    pids = np.repeat(np.arange(6), num_cams)
    cams = np.tile(np.arange(num_cams), 6)
    s = split_validation(pids, cams, 0.5, seed=0)
    for q in s.query:
        assert ((pids[s.gallery] == pids[q]) & (cams[s.gallery] != cams[q])).any()
    assert all(int((pids[s.query] == p).sum()) == queries_per_id for p in s.val_ids)
    assert len(s.gallery) == len(s.val_ids) * (num_cams - queries_per_id)
    assert s.dropped_queries == len(s.val_ids) * (num_cams - queries_per_id)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_a_fraction_outside_0_1_is_a_one_line_error_naming_the_key(fraction: float) -> None:
    pids, cams = _ids()
    with pytest.raises(ConfigError, match=r"^profiles\.x\.sweep\.validation\.fraction: ") as err:
        split_validation(pids, cams, fraction, 0, key="profiles.x.sweep.validation")
    assert "\n" not in str(err.value)


def test_too_few_identities_is_a_one_line_error_naming_the_key() -> None:
    pids, cams = _ids(num_ids=6)
    # 0.1 of 6 ids holds out 1 (< MIN_VALIDATION_IDS); 0.5 leaves 3 ids, fewer than P = 4.
    for fraction, min_train in ((0.1, 1), (0.5, 4)):
        with pytest.raises(ConfigError, match=r"^sweep\.validation\.fraction: ") as err:
            split_validation(pids, cams, fraction, 0, min_train_ids=min_train,
                             key="sweep.validation")
        assert "\n" not in str(err.value) and f"{MIN_VALIDATION_IDS}.." in str(err.value)
    # Every id seen by one camera only: none is eligible.
    with pytest.raises(ConfigError, match="validation ids"):
        split_validation(np.repeat(np.arange(10), 3), np.zeros(30, dtype=int), 0.3, 0)


def test_select_rows_relabels_for_a_classifier() -> None:
    n = 12
    split = PackedSplit(images=np.arange(n * 2 * 2 * 3, dtype=np.uint8).reshape(n, 2, 2, 3),
                        pids=np.repeat(np.arange(4), 3), camids=np.tile(np.arange(3), 4),
                        occluded=np.zeros(n, bool), occluded_known=np.ones(n, bool),
                        paths=[f"img{i}.jpg" for i in range(n)])
    rows = np.array([3, 4, 9, 10, 11])
    sub = select_rows(split, rows, relabel=True)
    assert sub.pids.tolist() == [0, 0, 1, 1, 1] and sub.paths == ["img3.jpg", "img4.jpg",
                                                                   "img9.jpg", "img10.jpg",
                                                                   "img11.jpg"]
    assert np.array_equal(sub.images, split.images[rows]) and len(sub) == 5
    assert select_rows(split, rows).pids.tolist() == [1, 1, 3, 3, 3]
