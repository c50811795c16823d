"""One experiment end to end: build it from the config, train it, evaluate it.

Used by the train stage (one Ray Tune trial per experiment), the evaluate stage and the tests:

- :func:`train_experiment` writes ``runs/<exp>/{checkpoints/last.pt, history.json, model.pt}``
  (``done.json`` is the caller's, see :mod:`pipeline.rundir`);
- :func:`evaluate_experiment` writes ``eval/<exp>/<test_set>.npz`` and returns the
  ``metrics/<exp>.json`` document (R1/R5/R10/mAP/mINP in percent per test set, plus
  ``<test_set>/twin`` when the test set has unoccluded twins of its occluded queries), and, for
  models with an Embedding Space, ``eval/<exp>/mechanism.json`` (:mod:`pipeline.mechanism`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ddrn.atomic import atomic_path
from ddrn.config import ExperimentSpec, ProjectConfig
from ddrn.data import (
    PackedDataset,
    PackedSplit,
    TrainLoader,
    make_train_loader,
    open_packed,
    select_rows,
)
from ddrn.engine import TrainResult, fit
from ddrn.engine.checkpoint import load_module_state, read_state_file
from ddrn.engine.provenance import check_provenance, load_weights, provenance, save_weights
from ddrn.engine.trainer import EpochCallback
from ddrn.errors import CheckpointError
from ddrn.evaluation import (
    QueryMetrics,
    evaluate_rank_per_query,
    extract_features,
    pairwise_distance,
    re_ranking,
)
from ddrn.losses import build_criterion
from ddrn.models import build_model
from pipeline.devices import resolve_device
from pipeline.mechanism import write_mechanism

log = logging.getLogger(__name__)

PACKED_ROOT = Path("data") / "packed"
TOPK = 10
"""Ranked gallery indices kept per query in the eval files (for the report's retrieval figures)."""


def build_experiment_model(config: ProjectConfig, spec: ExperimentSpec, num_classes: int,
                           num_cameras: int) -> nn.Module:
    """The experiment's model, initialised from its seed."""
    torch.manual_seed(spec.seed)
    return build_model(spec.model, num_classes, num_cameras,
                       input_size=(config.input.height, config.input.width))


@dataclass(frozen=True)
class TrainingSetup:
    """Everything :func:`~ddrn.engine.fit` needs for one experiment, built from the config."""

    packed: PackedDataset
    device: torch.device
    model: nn.Module
    criterion: nn.Module
    loader: TrainLoader


def prepare_training(config: ProjectConfig, spec: ExperimentSpec,
                     packed_root: str | Path = PACKED_ROOT,
                     train_rows: np.ndarray | None = None) -> TrainingSetup:
    """Open ``<packed_root>/<train_set>`` and build the seeded model, criterion and loader.

    Shared by :func:`train_experiment` and the sweep's trials, which need the model for their
    per-epoch scoring callback before training starts.

    Args:
        train_rows: train on these rows of the train split only (the sweep's training
            identities, :func:`ddrn.data.split_validation`); their identities are renumbered and
            the classifier is sized for them. ``None``: the whole train split.
    """
    packed = open_packed(Path(packed_root) / spec.train_set)
    split, num_classes = packed.splits["train"], packed.num_classes
    if train_rows is not None:
        split = select_rows(split, train_rows, relabel=True)
        num_classes = len(np.unique(split.pids))
    device = resolve_device(spec.train.device)
    model = build_experiment_model(config, spec, num_classes, packed.num_cameras).to(device)
    criterion = build_criterion(spec.loss, model.feature_dim, num_classes).to(device)
    loader = make_train_loader(split, spec.train, config.input, device, spec.seed)
    return TrainingSetup(packed, device, model, criterion, loader)


def train_experiment(config: ProjectConfig, spec: ExperimentSpec, run_dir: str | Path,
                     callbacks: Sequence[EpochCallback] = (), resume: bool = True,
                     packed_root: str | Path = PACKED_ROOT) -> TrainResult:
    """Train one experiment on ``<packed_root>/<train_set>``; resumes from ``run_dir`` by default.

    Writes ``checkpoints/last.pt`` and ``history.json`` as it goes and ``model.pt`` (the final
    model ``state_dict`` with its provenance, :mod:`ddrn.engine.provenance`) at the end. A resume
    refuses a checkpoint of another experiment or fingerprint.
    """
    run_dir = Path(run_dir)
    setup = prepare_training(config, spec, packed_root)
    owner = (spec.name, config.fingerprint(spec))
    result = fit(setup.model, setup.criterion, setup.loader, spec.train, run_dir, setup.device,
                 callbacks=callbacks, resume=resume, seed=spec.seed, owner=owner)
    save_weights(run_dir / "model.pt", setup.model.state_dict(),
                 provenance(*owner, spec.train.epochs, spec.train.epochs, finished=True))
    return result


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
    k = min(TOPK, dist.shape[1])
    topk = torch.topk(dist, k, dim=1, largest=False, sorted=True)
    return {"metrics": per_query.summary(ev.max_rank).as_percentages(), "per_query": per_query,
            "query_features": qf, "gallery_features": gf,
            "topk": topk.indices.to(torch.int32), "topk_distances": topk.values}


QUERY_KEYS = ("scored", "first_hit", "ap", "inp")
"""Per-query arrays of a split in the eval file: ``<split>_<key>`` for split ``query``/``twin``."""


def query_arrays(prefix: str, per_query: QueryMetrics) -> dict[str, np.ndarray]:
    """``<prefix>_{scored, first_hit, ap, inp}``: the per-query results of one split."""
    return {f"{prefix}_scored": per_query.index.astype(np.int64),
            f"{prefix}_first_hit": per_query.first_hit.astype(np.int64),
            f"{prefix}_ap": per_query.ap.astype(np.float64),
            f"{prefix}_inp": per_query.inp.astype(np.float64)}


def evaluate_experiment(config: ProjectConfig, spec: ExperimentSpec, run_dir: str | Path,
                        eval_dir: str | Path, packed_root: str | Path = PACKED_ROOT,
                        allow_partial: bool = False) -> dict:
    """Evaluate a trained experiment on each of its test sets.

    Writes ``<eval_dir>/<test_set>.npz`` per test set (float16 features, top-10 ranked gallery
    indices, pids, camids, occluded flags, the per-query results :data:`QUERY_KEYS`; ``twin_*``
    arrays too when the set has twins), ``<eval_dir>/mechanism.json`` for Embedding Space models, and
    returns the ``metrics/<exp>.json`` document. Weights of an unfinished run are refused unless
    ``allow_partial``; then the document says ``"partial": true`` and the epochs trained.
    """
    run_dir, eval_dir, packed_root = Path(run_dir), Path(eval_dir), Path(packed_root)
    device = resolve_device(spec.train.device)
    model, record = load_trained_model(config, spec, run_dir, packed_root, device, allow_partial)
    results: dict[str, dict[str, float]] = {}
    for test_set in spec.test_sets:
        packed = open_packed(packed_root / test_set)
        query, gallery = packed.splits["query"], packed.splits["gallery"]
        out = evaluate_split(model, config, query, gallery, device)
        results[test_set] = out["metrics"]
        arrays = {**_split_arrays("query", query, out["query_features"]),
                  **_split_arrays("gallery", gallery, out["gallery_features"]),
                  **query_arrays("query", out["per_query"]),
                  "topk": out["topk"].numpy(), "topk_distances": out["topk_distances"].numpy()}
        twin = packed.splits.get("query_twin")
        if twin is not None and len(twin):
            tw = evaluate_split(model, config, twin, gallery, device, out["gallery_features"])
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
    doc = {"experiment": spec.name, "variant": spec.variant, "seed": spec.seed,
           "train_set": spec.train_set, "fingerprint": config.fingerprint(spec),
           "results": results}
    if not record.get("finished"):
        doc.update(partial=True, epochs_trained=int(record.get("epoch", 0)),
                   epochs=int(record.get("epochs", spec.train.epochs)))
    return doc


def _split_arrays(prefix: str, split: PackedSplit, features: torch.Tensor) -> dict[str, np.ndarray]:
    return {f"{prefix}_features": features.numpy().astype(np.float16),
            f"{prefix}_pids": np.asarray(split.pids, dtype=np.int64),
            f"{prefix}_camids": np.asarray(split.camids, dtype=np.int64),
            f"{prefix}_occluded": np.asarray(split.occluded, dtype=bool),
            f"{prefix}_paths": np.asarray(split.paths, dtype=str)}


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed`` layout, byte-stable: ``np.savez`` stamps every zip member with the
    current time, so the same features gave a new file (and a new ``eval`` hash in dvc.lock) on
    every run. Members get a fixed date instead; ``np.load`` reads the file as usual."""
    import zipfile

    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, value in sorted(arrays.items()):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)


def _fmt(m: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.1f}" for k, v in m.items() if k in ("R1", "R5", "mAP", "mINP"))
