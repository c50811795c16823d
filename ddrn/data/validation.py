"""Held-out validation identities: what a hyper-parameter search selects on instead of the test split.

A search scored on the test split's query/gallery reports its winner's test score as if it were
unseen. Like torchreid and fast-reid, the search here holds out a share of the *training*
identities once, trains on the rest and scores on the held-out ones; the test split is only read
when the chosen configuration is trained for real.

The protocol (a pure function of the train split's ``pids``/``camids``, the fraction and the seed):

1. Identities seen by at least two cameras are eligible: a query needs a cross-camera match.
   ``round(fraction * num_ids)`` of them are drawn with ``numpy.random.default_rng(seed)``; every
   other identity (and all of its images) stays in training.
2. For each validation identity, one image per camera (drawn, cameras in drawn order) is a query
   candidate and every other image is gallery. Under the standard re-ID protocol a query's
   gallery images of its own identity *and* camera are junk, so a candidate becomes a query only
   if the gallery keeps, for it and for every query already chosen, an image of the identity from
   another camera; a candidate that fails stays in the gallery (counted as ``dropped_queries``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ddrn.data.packed import PackedSplit
from ddrn.errors import ConfigError

MIN_VALIDATION_IDS = 2
"""Fewer would make mAP trivial: with one identity every cross-camera gallery image is a match."""


@dataclass(frozen=True)
class ValidationSplit:
    """Row indices into the train split: training images, validation query and gallery.

    Attributes:
        seed, fraction: what drew the split.
        train_ids, val_ids: int64 sorted labels (the train split's ``pids``) of each side.
        train, query, gallery: int64 sorted row indices into the train split.
        dropped_queries: query candidates kept in the gallery (no cross-camera match left).
    """

    seed: int
    fraction: float
    train_ids: np.ndarray
    val_ids: np.ndarray
    train: np.ndarray
    query: np.ndarray
    gallery: np.ndarray
    dropped_queries: int

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly record of the split (what reports and result files name)."""
        return {"seed": self.seed, "fraction": self.fraction,
                "num_train_ids": len(self.train_ids), "num_train_images": len(self.train),
                "num_ids": len(self.val_ids), "num_query": len(self.query),
                "num_gallery": len(self.gallery), "dropped_queries": self.dropped_queries,
                "val_ids": [int(p) for p in self.val_ids]}


def split_validation(pids: np.ndarray, camids: np.ndarray, fraction: float, seed: int, *,
                     min_train_ids: int = 1, key: str = "validation") -> ValidationSplit:
    """Split the training identities into train and validation ones (see the module docstring).

    Args:
        pids, camids: (N,) identity label and camera of every image of the train split.
        fraction: share of the identities held out, in (0, 1).
        seed: seed of the draw; the same seed gives the same split.
        min_train_ids: identities training needs at least (e.g. P of a P x K batch).
        key: config key named in errors (its ``.fraction`` is the knob at fault).

    Raises:
        ConfigError: a fraction outside (0, 1), or one that leaves fewer than
            ``MIN_VALIDATION_IDS`` validation or ``min_train_ids`` training identities; one line.
    """
    pids, camids = np.asarray(pids, dtype=np.int64), np.asarray(camids, dtype=np.int64)
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"{key}.fraction: expected a share in (0, 1), got {fraction!r}")
    ids = np.unique(pids)
    eligible = np.array([p for p in ids if len(np.unique(camids[pids == p])) >= 2], dtype=np.int64)
    n_val = int(np.floor(fraction * len(ids) + 0.5))
    if n_val < MIN_VALIDATION_IDS or n_val > len(eligible) or len(ids) - n_val < min_train_ids:
        raise ConfigError(
            f"{key}.fraction: {fraction} of {len(ids)} training ids holds out {n_val}; expected "
            f"{MIN_VALIDATION_IDS}..{len(eligible)} validation ids (ids seen by 2+ cameras) while "
            f"leaving >= {min_train_ids} ids for training")
    rng = np.random.default_rng(seed)
    val_ids = np.sort(rng.choice(eligible, size=n_val, replace=False))
    is_val = np.isin(pids, val_ids)
    query: list[int] = []
    dropped = 0
    for pid in val_ids:
        picked, n_dropped = _pick_queries(np.flatnonzero(pids == pid), camids, rng)
        query += picked
        dropped += n_dropped
    query_rows = np.sort(np.asarray(query, dtype=np.int64))
    gallery_rows = np.setdiff1d(np.flatnonzero(is_val), query_rows)
    return ValidationSplit(seed=seed, fraction=fraction, train_ids=np.setdiff1d(ids, val_ids),
                           val_ids=val_ids, train=np.flatnonzero(~is_val).astype(np.int64),
                           query=query_rows, gallery=gallery_rows.astype(np.int64),
                           dropped_queries=dropped)


def _pick_queries(rows: np.ndarray, camids: np.ndarray, rng: np.random.Generator) -> tuple[list[int], int]:
    """One query per camera of one identity's ``rows``, each keeping a cross-camera gallery match."""
    queries: list[int] = []
    gallery = set(int(r) for r in rows)
    dropped = 0
    for cam in rng.permutation(np.unique(camids[rows])):
        candidate = int(rng.choice(rows[camids[rows] == cam]))
        rest = gallery - {candidate}
        rest_cams = {int(camids[r]) for r in rest}
        # Every query (the chosen and the candidate) needs a gallery image from another camera.
        if all(rest_cams - {int(camids[q])} for q in (*queries, candidate)):
            queries.append(candidate)
            gallery = rest
        else:
            dropped += 1
    return queries, dropped


def select_rows(split: PackedSplit, rows: np.ndarray, relabel: bool = False) -> PackedSplit:
    """The sub-split of ``split`` at ``rows`` (images copied into memory, in ``rows`` order).

    Args:
        relabel: number the identities ``0..C-1`` in sorted order (what a classifier of the
            kept identities is trained on); otherwise the labels are kept.
    """
    rows = np.asarray(rows, dtype=np.int64)
    pids = np.asarray(split.pids)[rows]
    if relabel:
        pids = np.unique(pids, return_inverse=True)[1].astype(np.int64)
    return PackedSplit(images=np.asarray(split.images[rows]), pids=pids,
                       camids=np.asarray(split.camids)[rows],
                       occluded=np.asarray(split.occluded)[rows],
                       occluded_known=np.asarray(split.occluded_known)[rows],
                       paths=[split.paths[int(r)] for r in rows])
