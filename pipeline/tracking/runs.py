"""MLflow tracking: every MLflow call of the project lives in this module.

Layout of what is recorded (one MLflow experiment per profile, ``tracking.experiment_name``)::

    stage: train <time>           parent run, one per stage invocation (tags: stage, profile,
                                  run_kind=stage)
      └── <variant>-s<seed> <set> nested run per trial (tags mlflow.parentRunId, run_kind=trial):
                                  params = the flattened spec, per-epoch curves (step = epoch),
                                  final evaluation metrics ``<test_set>.<metric>`` (rounded to
                                  2 decimals), artifacts history.json/spec.json/model.pt and the
                                  MLflow Model ``model`` (pipeline.tracking.models)
    stage: report <time>          parent run of the report stage: the markdown and figures

Every run carries the source and git commit tags MLflow's UI shows (``mlflow.source.name``,
``mlflow.source.git.commit``). Train and evaluate runs name the headline metrics
``<test_set>.mAP``, ``<test_set>.R1``; a sweep trial, scored on held-out training identities and
never on a test split, logs ``<train_set>/val.mAP``, ``<train_set>/val.R1`` instead.

Why the trial logs for itself (the ``setup_mlflow`` way) rather than Ray's driver-side
``MLflowLoggerCallback``: on a cluster the checkpoint exists only on the worker that trained it, so
only the trial can upload it (through the tracking server's artifact proxy, no shared filesystem);
the callback would also log every Tune bookkeeping key (``config/*``, ``time_*``, ``pid``) as a
metric, and keeps the trial-to-run map in driver memory. It is implemented as an engine callback
(:class:`TrialTracker`) instead of Ray's ``setup_mlflow`` so this module needs no Ray and the same
callback works around ``fit()`` under pytest. Only one of the two mechanisms is used, so a trial
never gets two runs.

Runs are written with :class:`mlflow.MlflowClient` and explicit run ids — never the fluent
``mlflow.start_run`` stack, which is process-global state.

A relative ``sqlite:///mlflow.db`` is made absolute against the repository root before it is
handed to trials (Ray may run them in another working directory). ``MLFLOW_TRACKING_URI`` wins
over ``params.yaml``; on a cluster it must be an ``http://`` tracking server.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ddrn.config import InputConfig
from ddrn.errors import DDRNError
from pipeline.params import ExperimentSpec, TrackingConfig
from pipeline.stage_liveness import close_dead_stage_runs, owner_tags

log = logging.getLogger(__name__)

TAG_PARENT = "mlflow.parentRunId"
TAG_STAGE = "stage"
TAG_EXPERIMENT = "experiment"
TAG_FINGERPRINT = "fingerprint"
TAG_KIND = "run_kind"
"""``stage`` for a stage invocation's parent run, ``trial`` for a trained model's run: filter
with ``tags.run_kind = 'trial'`` to see only models."""
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
"""Opens the experiment on MLflow's training-runs table (MLflow 3 otherwise guesses a GenAI
experiment and opens an empty traces overview)."""
DISPLAY_DECIMALS = 2
"""Evaluation metrics are logged rounded: the UI shows 23.53, not 23.5294117…; the exact values
are in ``metrics/<exp>.json``."""


def source_tags(root: str | Path) -> dict[str, str]:
    """MLflow's source tags for runs made from the checkout at ``root``: the entry point and the
    git commit (``HEAD``), so a run says which code produced it."""
    tags = {"mlflow.source.type": "LOCAL", "mlflow.source.name": "dvc repro (pipeline.*)"}
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return tags
    if out.returncode == 0 and out.stdout.strip():
        tags["mlflow.source.git.commit"] = out.stdout.strip()
    return tags


def trial_run_name(spec: ExperimentSpec) -> str:
    """``<variant>-s<seed> <train_set>``: what differs first, so the UI's name column, cut after
    a few characters, still tells runs apart (``occluded_duke-…`` did not). Sweep trials, whose
    spec name is not ``<train_set>-<variant>-s<seed>``, keep their spec name."""
    if spec.name == f"{spec.train_set}-{spec.variant}-s{spec.seed}":
        return f"{spec.variant}-s{spec.seed} {spec.train_set}"
    return spec.name


def resolve_tracking_uri(cfg: TrackingConfig, root: str | Path) -> str:
    """The tracking URI to use: ``MLFLOW_TRACKING_URI`` if set, else ``cfg.tracking_uri``.

    A relative SQLite path (``sqlite:///mlflow.db``) is resolved against ``root``.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or cfg.tracking_uri
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        uri = prefix + str((Path(root) / uri[len(prefix):]).resolve())
    return uri


@dataclasses.dataclass(frozen=True)
class TrackingTarget:
    """Where a trial logs: picklable, so it can be handed to a Ray trial."""

    uri: str
    experiment_id: str
    parent_run_id: str | None = None
    log_checkpoints: bool = True
    tags: tuple[tuple[str, str], ...] = ()
    """Extra tags of every trial run (the source tags of the stage's checkout)."""


def _client(uri: str) -> Any:
    from mlflow import MlflowClient  # imported lazily: 1.4 s, and not needed when tracking is off

    return MlflowClient(tracking_uri=uri)


def ensure_experiment(uri: str, name: str) -> str:
    """The id of MLflow experiment ``name``, created if missing (once, in the driver: creating it
    from several processes at once races on SQLite)."""
    client = _client(uri)
    try:
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                client.restore_experiment(exp.experiment_id)
            if exp.tags.get(TAG_EXPERIMENT_KIND) != EXPERIMENT_KIND:
                client.set_experiment_tag(exp.experiment_id, TAG_EXPERIMENT_KIND, EXPERIMENT_KIND)
            return exp.experiment_id
        return client.create_experiment(name, tags={TAG_EXPERIMENT_KIND: EXPERIMENT_KIND})
    except Exception as exc:  # any backend failure is a configuration problem the user can fix
        if isinstance(exc, DDRNError):
            raise
        raise DDRNError(f"MLflow tracking URI {uri}: cannot open experiment {name!r} "
                        f"({type(exc).__name__}); expected a reachable tracking server or a "
                        "writable sqlite:/// path") from exc


def flatten(prefix: str, value: Any) -> dict[str, str]:
    """A nested mapping/dataclass as ``{"a.b.c": "value"}`` strings, the shape MLflow params take."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(flatten(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    if isinstance(value, (list, tuple)):
        return {prefix: json.dumps(list(value), default=str)}
    return {prefix: str(value)}


def spec_params(spec: ExperimentSpec, input_cfg: InputConfig, fingerprint: str) -> dict[str, str]:
    """Params of one trial run: the flattened spec (model, loss, train) and input sections, and
    the experiment's fingerprint (``config.fingerprint(spec)``)."""
    params = {
        "experiment": spec.name, "group": spec.group, "train_set": spec.train_set,
        "test_sets": ",".join(spec.test_sets), "variant": spec.variant, "seed": str(spec.seed),
        "fingerprint": fingerprint,
    }
    params.update(flatten("model", spec.model))
    params.update(flatten("loss", spec.loss))
    params.update(flatten("train", spec.train))
    params.update(flatten("input", input_cfg))
    return params


def _log_params(client: Any, run_id: str, params: Mapping[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):  # the REST API takes at most 100 params per batch
        client.log_batch(run_id, params=items[i:i + 100])


def log_metrics(uri: str, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
    """Log finite numeric ``metrics`` at ``step`` into run ``run_id``."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(_metric_key(k), float(v), now, step) for k, v in metrics.items()
             if isinstance(v, (int, float)) and v == v and abs(v) != float("inf")]
    client = _client(uri)
    for i in range(0, len(items), 1000):
        client.log_batch(run_id, metrics=items[i:i + 1000])


VIEW_TAG_PREFIX = "mlflow.sharedViewState."
"""The MLflow UI (3.x) reads a shared runs-table view from the experiment tag of this prefix plus
the ``viewStateShareKey`` URL parameter."""
VIEW_KEY = "results"
HEADLINE_METRICS = ("R1", "mAP")


def results_view(test_sets: Sequence[str]) -> dict[str, Any]:
    """The runs table a researcher wants first: trials only, best O-Duke-like mAP on top, the
    variant/seed/training-set tags and each test set's R1 and mAP as columns (MLflow otherwise
    shows no metric column until one is picked from ~140)."""
    def column(kind: str, name: str) -> str:
        return f"{kind}.`{name}`"

    metrics = [column("metrics", f"{t}.{m}") for t in test_sets for m in HEADLINE_METRICS]
    return {"searchFilter": f"tags.{TAG_KIND} = 'trial'",
            "orderByKey": metrics[1] if len(metrics) > 1 else column("attributes", "start_time"),
            "orderByAsc": False,
            "selectedColumns": [column("tags", "variant"), column("tags", "seed"),
                                column("tags", "train_set"), *metrics,
                                column("attributes", "Duration")]}


def _metric_key(key: str) -> str:
    # MLflow keys allow [A-Za-z0-9_-. /]; anything else (e.g. '@') becomes '_'.
    return "".join(c if c.isalnum() or c in "_-. /" else "_" for c in key)


# --------------------------------------------------------------------------------------------
# Stage (parent) runs
# --------------------------------------------------------------------------------------------


class StageRun:
    """An open parent run of one stage invocation (see :func:`stage_run`)."""

    def __init__(self, uri: str, experiment_id: str, run_id: str) -> None:
        self.uri = uri
        self.experiment_id = experiment_id
        self.run_id = run_id

    def target(self, log_checkpoints: bool = True) -> TrackingTarget:
        """Where this stage's trials log, nested under this run."""
        return TrackingTarget(self.uri, self.experiment_id, self.run_id, log_checkpoints,
                              tuple(sorted(source_tags(Path.cwd()).items())))

    def log_params(self, params: Mapping[str, Any]) -> None:
        _log_params(_client(self.uri), self.run_id, {k: str(v) for k, v in params.items()})

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        log_metrics(self.uri, self.run_id, metrics, step)

    def publish_results_view(self, test_sets: Sequence[str]) -> str:
        """Save the experiment's results view and return its UI path (see :func:`results_view`)."""
        _client(self.uri).set_experiment_tag(self.experiment_id, VIEW_TAG_PREFIX + VIEW_KEY,
                                             json.dumps(results_view(test_sets)))
        return f"#/experiments/{self.experiment_id}?viewStateShareKey={VIEW_KEY}"

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload a file or a whole directory."""
        client = _client(self.uri)
        path = Path(path)
        if path.is_dir():
            client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            client.log_artifact(self.run_id, str(path), artifact_path)


@contextmanager
def stage_run(cfg: TrackingConfig, root: str | Path, stage: str, profile: str,
              tags: Mapping[str, str] | None = None,
              reopen_run_id: str | None = None) -> Iterator[StageRun | None]:
    """Open the parent run of one stage invocation; yields ``None`` when tracking is disabled.

    ``reopen_run_id`` continues an earlier parent run (a resumed sweep keeps its trials under one
    parent) when it still exists in the experiment. The run ends FINISHED, or FAILED when the body
    raises (the exception propagates); one left RUNNING by a killed invocation is marked KILLED
    here (:mod:`pipeline.stage_liveness`).
    """
    if not cfg.enabled:
        yield None
        return
    uri = resolve_tracking_uri(cfg, root)
    exp_id = ensure_experiment(uri, cfg.experiment_name)
    client = _client(uri)
    close_dead_stage_runs(client, exp_id, stage)  # a killed invocation's run left RUNNING
    run_tags = {TAG_STAGE: stage, "profile": profile, TAG_KIND: "stage", **source_tags(root),
                **owner_tags(), **(tags or {})}
    run = _reopen(client, exp_id, reopen_run_id) if reopen_run_id else None
    for key, value in (owner_tags().items() if run is not None else ()):
        client.set_tag(run.info.run_id, key, value)  # a reopened run belongs to this process now
    if run is None:
        run = client.create_run(exp_id, tags=run_tags,
                                run_name=f"stage: {stage} {time.strftime('%Y-%m-%d %H:%M:%S')}")
    log.info("MLflow: %s run %s in experiment %r at %s", stage, run.info.run_id,
             cfg.experiment_name, uri)
    status = "FAILED"
    try:
        yield StageRun(uri, exp_id, run.info.run_id)
        status = "FINISHED"
    finally:
        client.set_terminated(run.info.run_id, status)


def _reopen(client: Any, experiment_id: str, run_id: str) -> Any | None:
    """Run ``run_id`` set back to RUNNING, or ``None`` if it is gone or in another experiment."""
    try:
        run = client.get_run(run_id)
    except Exception:  # MlflowException when the id is unknown to this store
        return None
    if run.info.experiment_id != experiment_id or run.info.lifecycle_stage == "deleted":
        return None
    client.update_run(run_id, status="RUNNING")
    return run


# --------------------------------------------------------------------------------------------
# Trial (nested) runs
# --------------------------------------------------------------------------------------------


class TrialTracker:
    """Engine callback logging one trial into its own MLflow run nested under the stage run.

    A retried trial (same parent run, same experiment) reopens its run, so the curves continue.
    A trial resumed by a later stage invocation (after a kill) gets a new run under the new parent;
    the killed invocation's run of the same experiment, left RUNNING, is marked KILLED, and
    :meth:`finish` backfills the epochs trained before the resume from ``history.json``, so the
    new run's curves are complete.

    Args:
        target: where to log (the stage run's :meth:`StageRun.target`).
        spec: the experiment.
        input_cfg: the profile's input section (params).
        fingerprint: ``config.fingerprint(spec)``, the run's tag that :func:`log_evaluation` and
            the model logging look for (the one fingerprint an experiment has).
    """

    def __init__(self, target: TrackingTarget, spec: ExperimentSpec, input_cfg: InputConfig,
                 fingerprint: str) -> None:
        self.target = target
        self.spec = spec
        self.fingerprint = fingerprint
        self._params = spec_params(spec, input_cfg, self.fingerprint)
        self.run_id: str | None = None
        self._logged_epochs: set[int] = set()
        self._reopened = False

    def start(self) -> str:
        """Create (or reopen, on a retry) this trial's run; returns its id."""
        client = _client(self.target.uri)
        same = _find_runs(client, self.target.experiment_id, {
            TAG_EXPERIMENT: self.spec.name, TAG_FINGERPRINT: self.fingerprint})
        found = [r for r in same if r.data.tags.get(TAG_PARENT) == self.target.parent_run_id]
        if found and self.target.parent_run_id:
            self.run_id = found[0].info.run_id
            client.update_run(self.run_id, status="RUNNING")
            self._reopened = True  # the earlier attempt logged the earlier epochs itself
            return self.run_id
        for run in same:  # left RUNNING by a stage invocation that was killed
            if run.info.status == "RUNNING" and run.data.tags.get(TAG_STAGE) == "train":
                client.set_terminated(run.info.run_id, "KILLED")
        tags = {**dict(self.target.tags), TAG_EXPERIMENT: self.spec.name,
                TAG_FINGERPRINT: self.fingerprint, TAG_STAGE: "train", TAG_KIND: "trial",
                "variant": self.spec.variant, "train_set": self.spec.train_set,
                "seed": str(self.spec.seed)}
        if self.target.parent_run_id:
            tags[TAG_PARENT] = self.target.parent_run_id
        run = client.create_run(self.target.experiment_id, tags=tags,
                                run_name=trial_run_name(self.spec))
        self.run_id = run.info.run_id
        _log_params(client, self.run_id, self._params)
        return self.run_id

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], checkpoint: Path | None) -> None:
        """Log the epoch's metrics with ``step = epoch`` (the engine callback protocol)."""
        if self.run_id is None:
            self.start()
        log_metrics(self.target.uri, self.run_id, metrics, step=epoch)
        self._logged_epochs.add(int(epoch))

    def finish(self, run_dir: Path, ok: bool = True) -> None:
        """Upload the run's small files (and ``model.pt`` if asked), then close the run.

        Epochs of ``history.json`` a new run has not logged (trained before a resume, by a killed
        stage invocation) are logged first, with ``step = epoch``.
        """
        if self.run_id is None:
            return
        client = _client(self.target.uri)
        if ok and not self._reopened:
            self._backfill(run_dir / "history.json")
            for name in ("history.json", "done.json", "spec.json"):
                if (run_dir / name).is_file():
                    client.log_artifact(self.run_id, str(run_dir / name))
            if self.target.log_checkpoints and (run_dir / "model.pt").is_file():
                client.log_artifact(self.run_id, str(run_dir / "model.pt"), "checkpoint")
        client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")


    def _backfill(self, path: Path) -> None:
        try:
            history = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        for entry in history if isinstance(history, list) else []:
            epoch = int(entry.get("epoch", 0)) if isinstance(entry, dict) else 0
            if epoch >= 1 and epoch not in self._logged_epochs:
                log_metrics(self.target.uri, self.run_id,
                            {k: v for k, v in entry.items() if k != "epoch"}, step=epoch)
                self._logged_epochs.add(epoch)


def _find_runs(client: Any, experiment_id: str, tags: Mapping[str, str | None]) -> list[Any]:
    clauses = [f"tags.`{k}` = '{v}'" for k, v in tags.items() if v]
    return list(client.search_runs([experiment_id], " and ".join(clauses),
                                   order_by=["attributes.start_time DESC"], max_results=50))


def find_trial_run(uri: str, experiment_name: str, experiment: str, fingerprint: str) -> str | None:
    """The id of the latest finished training run of ``experiment`` with this ``fingerprint``."""
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment_name)
    if exp is None:
        return None
    runs = _find_runs(client, exp.experiment_id, {TAG_EXPERIMENT: experiment,
                                                  TAG_FINGERPRINT: fingerprint, TAG_STAGE: "train"})
    finished = [r for r in runs if r.info.status == "FINISHED"]
    return finished[0].info.run_id if finished else None


def evaluation_metrics(results: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``metrics/<exp>.json`` ``results`` as flat MLflow keys, rounded for display:
    ``{"<test_set>.R1": 71.35, ...}``."""
    return {f"{test_set}.{k}": round(float(v), DISPLAY_DECIMALS)
            for test_set, res in results.items()
            for k, v in res.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def log_evaluation(cfg: TrackingConfig, root: str | Path, metrics_doc: Mapping[str, Any]) -> str | None:
    """Log one ``metrics/<exp>.json`` document into the training run of that experiment.

    The run is found by its tags ``experiment`` and ``fingerprint``. Idempotent: values already
    logged are not logged again. Returns the run id, or ``None`` when no such run exists (e.g.
    the model was trained with tracking off).
    """
    if not cfg.enabled:
        return None
    uri = resolve_tracking_uri(cfg, root)
    run_id = find_trial_run(uri, cfg.experiment_name, metrics_doc["experiment"],
                            metrics_doc["fingerprint"])
    if run_id is None:
        return None
    have = _client(uri).get_run(run_id).data.metrics
    new = {k: v for k, v in evaluation_metrics(metrics_doc["results"]).items()
           if _metric_key(k) not in have or abs(have[_metric_key(k)] - v) > 1e-9}
    if new:
        log_metrics(uri, run_id, new, step=0)
    return run_id
