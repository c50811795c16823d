"""The evaluate stage's work on one experiment: metrics, per-query results and the eval files.

:func:`evaluate_with_queries` is :func:`pipeline.experiment.evaluate_experiment` plus the
per-query results a confidence interval needs: each ``eval/<exp>/<test_set>.npz`` also holds, for
the queries (and twins) that have a positive in the gallery, their index, first-hit rank, AP and
INP (:func:`ddrn.evaluation.evaluate_rank_per_query`); the metrics document's R1/mAP/mINP are
the means of exactly these vectors.

Why a module of its own: ``pipeline/experiment.py`` is a dependency of the ``train`` stage, and
changing it would make ``dvc repro`` retrain every experiment although training does not change.
The helpers it shares with training (loading the trained model, the npz layout) are reused from
there; :func:`pipeline.experiment.evaluate_experiment` remains for its other callers (tests,
benchmarks) and can become an alias of this one the next time the train stage reruns anyway.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ddrn.config import ExperimentSpec, ProjectConfig
from ddrn.data import PackedSplit, open_packed
from ddrn.evaluation import (
    QueryMetrics,
    evaluate_rank_per_query,
    extract_features,
    pairwise_distance,
    re_ranking,
)
from pipeline.experiment import (
    PACKED_ROOT,
    TOPK,
    _fmt,
    _save_npz,
    _split_arrays,
    load_trained_model,
    resolve_device,
)
from pipeline.mechanism import write_mechanism

log = logging.getLogger(__name__)

QUERY_KEYS = ("scored", "first_hit", "ap", "inp")
"""Per-query arrays of a split in the eval file: ``<split>_<key>`` for split ``query``/``twin``."""


def score_split(model: nn.Module, config: ProjectConfig, query: PackedSplit, gallery: PackedSplit,
                device: torch.device,
                gallery_features: torch.Tensor | None = None) -> dict[str, Any]:
    """Features, per-query results, metrics and top-k rankings of one query split.

    The same computation as :func:`pipeline.experiment.evaluate_split` (same features, distances,
    re-ranking), plus ``per_query`` (:class:`~ddrn.evaluation.QueryMetrics`); ``metrics`` is its
    summary, so the aggregate and the per-query numbers agree exactly.
    """
    ev = config.evaluation
    qf = extract_features(model, query, config.input, ev.batch_size, device, ev.feat_norm)
    gf = gallery_features if gallery_features is not None else extract_features(
        model, gallery, config.input, ev.batch_size, device, ev.feat_norm)
    dist = pairwise_distance(qf, gf, "euclidean")
    if ev.rerank:
        dist = torch.from_numpy(re_ranking(dist, pairwise_distance(qf, qf), pairwise_distance(gf, gf),
                                           ev.rerank_k1, ev.rerank_k2, ev.rerank_lambda))
    per_query = evaluate_rank_per_query(dist, query.pids, gallery.pids, query.camids, gallery.camids)
    k = min(TOPK, dist.shape[1])
    topk = torch.topk(dist, k, dim=1, largest=False, sorted=True)
    return {"metrics": per_query.summary(ev.max_rank).as_percentages(), "per_query": per_query,
            "query_features": qf, "gallery_features": gf,
            "topk": topk.indices.to(torch.int32), "topk_distances": topk.values}


def query_arrays(prefix: str, per_query: QueryMetrics) -> dict[str, np.ndarray]:
    """``<prefix>_{scored, first_hit, ap, inp}``: the per-query results of one split."""
    return {f"{prefix}_scored": per_query.index.astype(np.int64),
            f"{prefix}_first_hit": per_query.first_hit.astype(np.int64),
            f"{prefix}_ap": per_query.ap.astype(np.float64),
            f"{prefix}_inp": per_query.inp.astype(np.float64)}


def evaluate_with_queries(config: ProjectConfig, spec: ExperimentSpec, run_dir: str | Path,
                          eval_dir: str | Path, packed_root: str | Path = PACKED_ROOT,
                          allow_partial: bool = False) -> dict[str, Any]:
    """Evaluate a trained experiment on each of its test sets; returns the metrics document.

    Writes ``<eval_dir>/<test_set>.npz`` (everything :func:`pipeline.experiment.evaluate_experiment`
    writes, plus :data:`QUERY_KEYS` per split) and, for Embedding Space models,
    ``<eval_dir>/mechanism.json``. Weights of an unfinished run are refused unless
    ``allow_partial``; then the document says ``"partial": true`` and the epochs trained.
    """
    run_dir, eval_dir, packed_root = Path(run_dir), Path(eval_dir), Path(packed_root)
    device = resolve_device(spec.train.device)
    model, record = load_trained_model(config, spec, run_dir, packed_root, device, allow_partial)
    results: dict[str, dict[str, float]] = {}
    for test_set in spec.test_sets:
        packed = open_packed(packed_root / test_set)
        query, gallery = packed.splits["query"], packed.splits["gallery"]
        out = score_split(model, config, query, gallery, device)
        results[test_set] = out["metrics"]
        arrays = {**_split_arrays("query", query, out["query_features"]),
                  **_split_arrays("gallery", gallery, out["gallery_features"]),
                  **query_arrays("query", out["per_query"]),
                  "topk": out["topk"].numpy(), "topk_distances": out["topk_distances"].numpy()}
        twin = packed.splits.get("query_twin")
        if twin is not None and len(twin):
            tw = score_split(model, config, twin, gallery, device, out["gallery_features"])
            results[f"{test_set}/twin"] = {**tw["metrics"],
                                           "R1_gap": tw["metrics"]["R1"] - out["metrics"]["R1"],
                                           "mAP_gap": tw["metrics"]["mAP"] - out["metrics"]["mAP"]}
            arrays.update(_split_arrays("twin", twin, tw["query_features"]))
            arrays.update(query_arrays("twin", tw["per_query"]))
            arrays["twin_topk"] = tw["topk"].numpy()
        eval_dir.mkdir(parents=True, exist_ok=True)
        _save_npz(eval_dir / f"{test_set}.npz", arrays)
        log.info("%s on %s: %s", spec.name, test_set, _fmt(results[test_set]))
        if f"{test_set}/twin" in results:
            log.info("%s on %s twins: %s", spec.name, test_set, _fmt(results[f"{test_set}/twin"]))
    write_mechanism(model, config, spec, {t: open_packed(packed_root / t) for t in spec.test_sets},
                    device, eval_dir)
    doc: dict[str, Any] = {"experiment": spec.name, "variant": spec.variant, "seed": spec.seed,
                           "train_set": spec.train_set, "fingerprint": config.fingerprint(spec),
                           "results": results}
    if not record.get("finished"):
        doc.update(partial=True, epochs_trained=int(record.get("epoch", 0)),
                   epochs=int(record.get("epochs", spec.train.epochs)))
    return doc
