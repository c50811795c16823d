"""Eval records for report tests, ranked exactly as the evaluate stage ranks them.

The report only reads :class:`pipeline.trial.eval_record.EvalRecord` files, so a test that hands it
made-up features must also hand it the per-query results and rankings of those features; this
computes them with the evaluate stage's own functions instead of restating them.
"""

from __future__ import annotations

import numpy as np
import torch

from ddrn.data import PackedSplit
from ddrn.evaluation import evaluate_rank_per_query, pairwise_distance
from pipeline.trial.eval_record import EvalRecord, QueryResults, SplitImages
from pipeline.trial.scoring import TOPK, ranked_gallery


def images(split: PackedSplit, features: np.ndarray) -> SplitImages:
    return SplitImages(np.asarray(features, dtype=np.float32), np.asarray(split.pids),
                       np.asarray(split.camids), np.asarray(split.occluded),
                       np.asarray(split.paths))


def results(query: PackedSplit, qf: np.ndarray, gallery: PackedSplit,
            gf: np.ndarray) -> QueryResults:
    dist = pairwise_distance(torch.from_numpy(np.asarray(qf, np.float32)),
                             torch.from_numpy(np.asarray(gf, np.float32)))
    per = evaluate_rank_per_query(dist, query.pids, gallery.pids, query.camids, gallery.camids)
    top = ranked_gallery(dist, query, gallery, min(TOPK, len(gallery)))
    return QueryResults(per, top["topk"].numpy(), top["topk_distances"].numpy())


def eval_record(query: PackedSplit, qf: np.ndarray, gallery: PackedSplit, gf: np.ndarray,
                twin: PackedSplit | None = None, tf: np.ndarray | None = None) -> EvalRecord:
    """The record the evaluate stage would write for these features (Euclidean, junk excluded)."""
    has_twin = twin is not None and tf is not None
    return EvalRecord(images(query, qf), images(gallery, gf), results(query, qf, gallery, gf),
                      images(twin, tf) if has_twin else None,
                      results(twin, tf, gallery, gf) if has_twin else None)
