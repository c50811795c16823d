"""Scoring a trained experiment: its weights loaded, its test sets ranked, its eval record written.

Used by the evaluate stage, the pretrain stage's kNN check, the sweep's validation scores and
``pipeline.evaluate_checkpoint``, so every number the project reports goes through
:func:`evaluate_split`:

- :func:`evaluate_experiment` writes ``eval/<exp>/<test_set>.npz`` (a
  :class:`~pipeline.trial.eval_record.EvalRecord`) and returns the ``metrics/<exp>.json`` document
  (R1/R5/R10/mAP/mINP in percent per test set, plus ``<test_set>/twin`` when the test set has
  unoccluded twins of its occluded queries), and, for models with an Embedding Space,
  ``eval/<exp>/mechanism.json`` (:mod:`pipeline.trial.mechanism`).

Not part of the training code digest: an edit here reruns evaluate, never train.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ddrn.data import PackedSplit, open_packed
from ddrn.engine.checkpoint import load_module_state, read_state_file
from ddrn.engine.provenance import check_provenance, load_weights
from ddrn.errors import CheckpointError
from ddrn.evaluation import evaluate_rank_per_query, extract_features, pairwise_distance, re_ranking
from pipeline.params import ExperimentSpec, ProjectConfig
from pipeline.trial.devices import resolve_device
from pipeline.trial.eval_record import EvalRecord, QueryResults, SplitImages
from pipeline.trial.experiment import PACKED_ROOT, build_experiment_model
from pipeline.trial.mechanism import write_mechanism

log = logging.getLogger(__name__)

TOPK = 10
"""Ranked gallery indices kept per query in the eval files (for the report's retrieval figure)."""


def load_trained_model(config: ProjectConfig, spec: ExperimentSpec, run_dir: Path,
                       packed_root: Path, device: torch.device,
                       allow_partial: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """The trained model of ``run_dir`` and the provenance of its weights.

    Only a finished run's ``model.pt`` of this experiment and fingerprint is used; with
    ``allow_partial`` an unfinished run's last checkpoint is used instead (its provenance says
    ``finished: False`` and the epoch it reached).

    Raises:
        CheckpointError: no weights, foreign/stale weights, or an unfinished run (without
            ``allow_partial``); one line naming the file.
    """
    train = open_packed(packed_root / spec.train_set)
    model = build_experiment_model(config, spec, train.num_classes, train.num_cameras)
    fingerprint = config.fingerprint(spec)
    path = run_dir / "model.pt"
    last = run_dir / "checkpoints" / "last.pt"
    if path.is_file():
        state, record = load_weights(path, spec.name, fingerprint)
    elif last.is_file():
        ckpt = read_state_file(last)
        record = check_provenance(last, ckpt.get("provenance") if isinstance(ckpt, dict) else None,
                                  spec.name, fingerprint, require_finished=not allow_partial)
        state, path = ckpt["model"], last
        log.warning("%s: evaluating UNFINISHED weights (epoch %s of %s), marked partial",
                    spec.name, record.get("epoch"), record.get("epochs"))
    else:
        raise CheckpointError(f"{path}: trained model not found; expected the output of "
                              f"`python -m pipeline.train --experiment {spec.name}`")
    load_module_state(model, state, path, "model")
    return model.to(device), record


def evaluate_split(model: nn.Module, config: ProjectConfig, query: PackedSplit,
                   gallery: PackedSplit, device: torch.device,
                   gallery_features: torch.Tensor | None = None) -> dict[str, Any]:
    """Features, per-query results, metrics and top-k rankings of one query split against a gallery.

    ``per_query`` (:class:`~ddrn.evaluation.QueryMetrics`) holds each scored query's first hit,
    AP and INP; ``metrics`` is its summary, so the aggregate and the per-query numbers agree.
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
    return {"metrics": per_query.summary(ev.max_rank).as_percentages(), "per_query": per_query,
            "query_features": qf, "gallery_features": gf,
            **ranked_gallery(dist, query, gallery, min(TOPK, dist.shape[1]))}


def ranked_gallery(dist: torch.Tensor, query: PackedSplit, gallery: PackedSplit,
                   k: int) -> dict[str, torch.Tensor]:
    """``topk``/``topk_distances``: each query's first ``k`` gallery items by ``dist``, without the
    protocol's junk (same identity *and* camera: not a retrieval, and not scored either)."""
    junk = ((torch.as_tensor(np.asarray(query.pids))[:, None]
             == torch.as_tensor(np.asarray(gallery.pids))[None, :])
            & (torch.as_tensor(np.asarray(query.camids))[:, None]
               == torch.as_tensor(np.asarray(gallery.camids))[None, :]))
    top = torch.topk(dist.masked_fill(junk, float("inf")), k, dim=1, largest=False, sorted=True)
    return {"topk": top.indices.to(torch.int32), "topk_distances": top.values}


def evaluate_experiment(config: ProjectConfig, spec: ExperimentSpec, run_dir: str | Path,
                        eval_dir: str | Path, packed_root: str | Path = PACKED_ROOT,
                        allow_partial: bool = False,
                        trained: tuple[nn.Module, dict[str, Any]] | None = None) -> dict:
    """Evaluate a trained experiment on each of its test sets.

    Writes ``<eval_dir>/<test_set>.npz`` per test set (float16 features, top-10 ranked gallery
    indices, pids, camids, occluded flags, the per-query results :data:`QUERY_KEYS`; ``twin_*``
    arrays too when the set has twins), ``<eval_dir>/mechanism.json`` for Embedding Space models, and
    returns the ``metrics/<exp>.json`` document. Weights of an unfinished run are refused unless
    ``allow_partial``; then the document says ``"partial": true`` and the epochs trained.
    ``trained``: the model and provenance :func:`load_trained_model` already returned for this
    run (on its device), so a caller that needs the model too loads it once.
    """
    run_dir, eval_dir, packed_root = Path(run_dir), Path(eval_dir), Path(packed_root)
    device = resolve_device(spec.train.device)
    model, record = trained or load_trained_model(config, spec, run_dir, packed_root, device,
                                                  allow_partial)
    results: dict[str, dict[str, float]] = {}
    for test_set in spec.test_sets:
        packed = open_packed(packed_root / test_set)
        query, gallery = packed.splits["query"], packed.splits["gallery"]
        out = evaluate_split(model, config, query, gallery, device)
        results[test_set] = out["metrics"]
        twin, twin_out = packed.splits.get("query_twin"), None
        if twin is not None and len(twin):
            # The occlusion gap is the report's (per query, paired with each twin, with an
            # interval), not a difference of these two aggregates.
            twin_out = evaluate_split(model, config, twin, gallery, device, out["gallery_features"])
            results[f"{test_set}/twin"] = twin_out["metrics"]
        eval_record = EvalRecord(
            _images(query, out["query_features"]), _images(gallery, out["gallery_features"]),
            _results(out), _images(twin, twin_out["query_features"]) if twin_out else None,
            _results(twin_out) if twin_out else None)
        eval_record.save(eval_dir / f"{test_set}.npz")
        log.info("%s on %s: %s", spec.name, test_set, _fmt(results[test_set]))
        if f"{test_set}/twin" in results:
            log.info("%s on %s twins: %s", spec.name, test_set, _fmt(results[f"{test_set}/twin"]))
    write_mechanism(model, config, spec, {t: open_packed(packed_root / t) for t in spec.test_sets},
                    device, eval_dir)
    doc = {"experiment": spec.name, "variant": spec.variant, "seed": spec.seed,
           "train_set": spec.train_set, "fingerprint": config.fingerprint(spec),
           "results": results}
    if not record.get("finished"):
        doc.update(partial=True, epochs_trained=int(record.get("epoch", 0)),
                   epochs=int(record.get("epochs", spec.train.epochs)))
    return doc


def _images(split: PackedSplit, features: torch.Tensor) -> SplitImages:
    return SplitImages(features.numpy(), np.asarray(split.pids), np.asarray(split.camids),
                       np.asarray(split.occluded), np.asarray(split.paths))


def _results(out: dict[str, Any]) -> QueryResults:
    return QueryResults(out["per_query"], out["topk"].numpy(), out["topk_distances"].numpy())


def _fmt(m: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.1f}" for k, v in m.items() if k in ("R1", "R5", "mAP", "mINP"))
