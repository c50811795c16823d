"""Trained models as MLflow Models, and the best of each variant in the model registry.

The second half of :mod:`pipeline.tracking.runs` (its run layout, its client): the evaluate stage logs
every trained model into its training run with :func:`log_trained_model`, and the report stage
registers the best run (seed) of each variant and training set with :func:`register_best`, so

    mlflow.pytorch.load_model("models:/<experiment_name>-<train_set>-<variant>/<version>")

gives a :class:`ddrn.models.extractor.FeatureExtractor`: uint8 images ``(B, H, W, 3)`` at the
profile's input size -> retrieval features ``(B, D)``, the features the evaluate stage ranks with.

``mlflow.pytorch.log_model`` and ``mlflow.register_model`` read MLflow's process-wide tracking
URI; :func:`_tracking_uri` sets it for the duration of one call and restores it, so the rest of
the project keeps using explicit :class:`mlflow.MlflowClient` URIs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.params import ExperimentSpec, ProjectConfig, TrackingConfig
from pipeline.tracking.runs import _client, find_trial_run, resolve_tracking_uri

log = logging.getLogger(__name__)

MODEL_NAME = "model"
"""The MLflow Model's name inside its run."""
TAG_MODEL_URI = "model_uri"
"""Run tag set once the run's MLflow Model is logged (what :func:`register_best` registers)."""
INPUT_EXAMPLE_IMAGES = 2


@contextmanager
def _tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's global tracking URI set to ``uri`` for the block, then restored, together with
    the ``MLFLOW_TRACKING_URI`` variable that ``mlflow.set_tracking_uri`` also sets (MLflow's own
    ``_use_tracking_uri`` deletes the variable on exit when no global URI was set before)."""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    saved_env = os.environ.get("MLFLOW_TRACKING_URI")
    saved = utils._tracking_uri
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved)
        if saved_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved_env


def registered_name(tracking: TrackingConfig, train_set: str, variant: str) -> str:
    """``<experiment_name>-<train_set>-<variant>``: one registered model per variant and training
    set (models trained on different sets serve different domains, and their mAPs are on
    different test sets, so "best" is only decided among seeds)."""
    return f"{tracking.experiment_name}-{train_set}-{variant}"


def log_trained_model(config: ProjectConfig, spec: ExperimentSpec, model: torch.nn.Module,
                      example_images: np.ndarray, root: str | Path) -> str | None:
    """Log ``model`` as the MLflow Model of ``spec``'s training run (found by its tags).

    Idempotent: a run that already has its model is left alone. Returns the model URI, or
    ``None`` when tracking is off or the run does not exist (trained with tracking off).

    Args:
        config: the project (tracking section, input section).
        spec: the experiment.
        model: its trained model (any device; logged on the CPU).
        example_images: a few uint8 (B, H, W, 3) test images: the input example, and with
            the features they give, the signature.
        root: the repository root (a relative SQLite URI is resolved against it).
    """
    cfg = config.tracking
    if not cfg.enabled:
        return None
    import mlflow.pytorch
    from mlflow.models import infer_signature

    from ddrn.models.extractor import FeatureExtractor

    uri = resolve_tracking_uri(cfg, root)
    run_id = find_trial_run(uri, cfg.experiment_name, spec.name, config.fingerprint(spec))
    if run_id is None:
        return None
    client = _client(uri)
    run = client.get_run(run_id)
    if run.data.tags.get(TAG_MODEL_URI):
        return run.data.tags[TAG_MODEL_URI]
    extractor = FeatureExtractor(model.cpu(), config.input)
    example = np.array(example_images[:INPUT_EXAMPLE_IMAGES], dtype=np.uint8)  # a writable copy
    features = extractor(torch.from_numpy(example)).numpy()
    signature = infer_signature(example, features)
    # Requirements given, not inferred: inference reloads the model in a subprocess (seconds
    # per model) and would pin the whole environment.
    reqs = [f"torch=={torch.__version__.split('+')[0]}", f"timm=={_version('timm')}",
            f"numpy=={np.__version__}"]
    # Created here so it lands in the run's experiment (log_model alone would file it under
    # MLflow's active experiment, "Default", as no fluent run is active).
    logged = client.create_logged_model(run.info.experiment_id, MODEL_NAME, source_run_id=run_id,
                                        tags={"experiment": spec.name, "variant": spec.variant},
                                        model_type="re-ID feature extractor")
    with _tracking_uri(uri):
        info = mlflow.pytorch.log_model(extractor, name=MODEL_NAME, run_id=run_id,
                                        model_id=logged.model_id,
                                        signature=signature, input_example=example,
                                        pip_requirements=reqs,
                                        # pickle, not MLflow's default torch.export: the test
                                        # transform (ddrn.data.BatchAugment) runs in numpy, and an
                                        # exported program would fix the batch size.
                                        serialization_format="pickle")
    client.set_tag(run_id, TAG_MODEL_URI, info.model_uri)
    log.info("MLflow: %s logged as MLflow Model %s", spec.name, info.model_uri)
    return info.model_uri


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def headline_score(doc: Mapping[str, Any]) -> float:
    """What "best" means: mAP on the training set's own test split (else the first test set)."""
    results = doc["results"]
    own = results.get(doc["train_set"]) or next(
        (v for k, v in results.items() if "/" not in k), {})
    return float(own.get("mAP", float("-inf")))


def register_best(tracking: TrackingConfig, root: str | Path,
                  docs: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Register the best evaluated run of each (training set, variant), i.e. its best seed, as a
    new version of ``<experiment_name>-<train_set>-<variant>`` (unless that run already is the
    latest version).

    Args:
        tracking: the profile's tracking section.
        root: the repository root.
        docs: the ``metrics/<exp>.json`` documents.

    Returns:
        registered model name -> ``models:/<name>/<version>`` of its current best.
    """
    if not tracking.enabled:
        return {}
    import mlflow

    uri = resolve_tracking_uri(tracking, root)
    client = _client(uri)
    best: dict[str, Mapping[str, Any]] = {}
    for doc in sorted(docs, key=lambda d: (d["train_set"], d["variant"], d["seed"])):
        name = registered_name(tracking, doc["train_set"], doc["variant"])
        if name not in best or headline_score(doc) > headline_score(best[name]):
            best[name] = doc
    out = {}
    for name, doc in best.items():
        run_id = find_trial_run(uri, tracking.experiment_name, doc["experiment"], doc["fingerprint"])
        model_uri = client.get_run(run_id).data.tags.get(TAG_MODEL_URI) if run_id else None
        if not model_uri:
            continue
        versions = client.search_model_versions(f"name = '{name}'", order_by=["version_number DESC"],
                                                max_results=1)
        if versions and versions[0].run_id == run_id:
            out[name] = f"models:/{name}/{versions[0].version}"
            continue
        with _tracking_uri(uri):
            mv = mlflow.register_model(model_uri, name, tags={
                "experiment": doc["experiment"], "selected_by": "best mAP on its training set's test split",
                "mAP": f"{headline_score(doc):.2f}"})
        out[name] = f"models:/{name}/{mv.version}"
        log.info("MLflow registry: %s version %s <- %s", name, mv.version, doc["experiment"])
    return out
