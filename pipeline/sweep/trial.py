"""One sweep trial, as Ray Tune runs it in a worker: train a sampled configuration, report mAP.

The sweep selects on held-out *training* identities, never on the test split: the driver draws
the :class:`~ddrn.data.ValidationSplit` of ``sweep.train_set``'s train split once
(:func:`validation_split`, ``sweep.validation``) and ships it to every trial. A trial trains the
sampled :class:`~pipeline.params.ExperimentSpec` with :func:`ddrn.engine.fit` on the remaining
identities only (the classifier sized for them, :func:`prepare_trial`); an engine callback
(:class:`EpochReporter`) scores mAP on the validation query/gallery after every
``sweep.eval_every`` epochs, through the evaluate stage's own :func:`pipeline.trial.scoring.evaluate_split`,
and reports it to Tune with the engine's checkpoint. Tune keeps the last checkpoint in the sweep's
storage, so a trial restarted after its worker died (``FailureConfig``) or by ``Tuner.restore``
continues from it, on whichever node it lands. The project's own errors (:class:`~ddrn.errors.DDRNError`)
end the trial once with their message instead of being retried. MLflow logging goes through
:class:`pipeline.tracking.runs.TrialTracker`.

Workers are reused across trials (``reuse_actors``): a trial that ASHA stops costs its epochs,
not a new process, imports and data. The packed data come from the worker's
:data:`pipeline.sweep.data.WORKER_CACHE`, read by its first trial; each trial still builds its own
seeded model, criterion and loader, restores its own checkpoint and opens its own MLflow run, and
reports ``setup_s``, what it spent before its first epoch.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ddrn.data import (
    PackedSplit,
    ValidationSplit,
    make_train_loader,
    open_packed,
    split_validation,
)
from ddrn.errors import ConfigError, DDRNError
from ddrn.losses import build_criterion
from pipeline.params import ExperimentSpec, ProjectConfig
from pipeline.sweep.data import WORKER_CACHE, SweepDataCache
from pipeline.sweep.space import METRIC, apply_knobs, plain
from pipeline.tracking.runs import TrackingTarget, TrialTracker, log_metrics
from pipeline.trial.devices import resolve_device
from pipeline.trial.experiment import TrainingSetup, build_experiment_model
from pipeline.trial.rundir import read_json, write_json
from pipeline.trial.scoring import evaluate_split
from pipeline.trial.tune import USER_ERROR, report_epoch, restore_checkpoint

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrialContext:
    """What every trial needs besides its sampled knobs (shipped once with ``tune.with_parameters``).

    Paths are absolute and must mean the same on every node (shared filesystem on a cluster);
    ``runs_root`` ``None`` keeps the engine's run dirs in node-local scratch space (object-store
    ``storage_path``), and a retried trial then resumes from Tune's copy of its checkpoint.
    """

    config: ProjectConfig
    data_root: str
    runs_root: str | None
    validation: ValidationSplit
    tracking: TrackingTarget | None = None
    epochs: int | None = None
    """Epochs every trial trains (None: ``sweep.max_epochs``); the Fig. 6 grid sets its own."""
    root: str | None = None
    """The repository root, where the trial works: params paths (``model.pretrained``) are
    relative to it, and Tune starts a trial in its own directory."""


def validation_split(config: ProjectConfig, data_root: str | Path) -> ValidationSplit:
    """The sweep's held-out identities of ``<data_root>/<sweep.train_set>``'s train split.

    Drawn by the driver before Ray starts (a bad ``sweep.validation`` fails there, in one line)
    and shipped to every trial, so all trials train and score on the same identities.

    Raises:
        ConfigError: ``sweep.validation.fraction`` leaves too few validation or training ids.
    """
    sweep = config.sweep
    train = open_packed(Path(data_root) / sweep.train_set).splits["train"]
    spec = apply_knobs(config, {}, "validation")
    try:
        return split_validation(train.pids, train.camids, sweep.validation.fraction,
                                sweep.validation.seed,
                                min_train_ids=spec.train.batch_size // spec.train.num_instances,
                                key=f"profiles.{config.profile}.sweep.validation")
    except ConfigError as exc:
        raise ConfigError(f"{config.source}: {exc}") from None


@dataclasses.dataclass(frozen=True)
class TrialData:
    """A trial's training setup (train identities only) and its validation query/gallery."""

    setup: TrainingSetup
    query: PackedSplit
    gallery: PackedSplit


def prepare_trial(config: ProjectConfig, spec: ExperimentSpec, data_root: str | Path,
                  split: ValidationSplit, cache: SweepDataCache | None = None) -> TrialData:
    """Model, criterion and loader on ``split``'s training identities, plus its query/gallery.

    Only the train split of ``<data_root>/<train_set>`` is read; its query/gallery (the test
    split) is not. The data come from ``cache`` (a worker's :data:`~pipeline.sweep.data.WORKER_CACHE`:
    read by the worker's first trial, shared by the next ones); ``None`` reads them afresh.

    The model, criterion and loader are built as :func:`pipeline.trial.experiment.prepare_training`
    builds them with ``train_rows`` (same calls, same order, so the same seeded weights and
    batches); that function opens the store itself and cannot take a cached one.
    """
    directory = Path(data_root) / spec.train_set
    data = (cache if cache is not None else SweepDataCache(max_entries=1)).get(directory, split)
    device = resolve_device(spec.train.device)
    model = build_experiment_model(config, spec, data.num_classes,
                                   data.packed.num_cameras).to(device)
    criterion = build_criterion(spec.loss, model.feature_dim, data.num_classes).to(device)
    loader = make_train_loader(data.train, spec.train, config.input, device, spec.seed)
    return TrialData(TrainingSetup(data.packed, device, model, criterion, loader), data.query,
                     data.gallery)


@dataclasses.dataclass
class EpochReporter:
    """Engine callback: scores mAP on the validation query/gallery and reports it to Tune.

    Reports ``epoch`` (ASHA's time attribute), ``mAP``/``R1``/``mINP`` (percent, validation
    identities), the engine's epoch metrics under ``train/``, ``extra`` (where the trial ran:
    ``node_id``, ``hostname``, ``pid``) and the engine checkpoint; the scores also go to the
    trial's MLflow run as ``<train_set>/val.<metric>`` (never under a test set's name). Scores
    every ``sweep.eval_every`` epochs and always at ``max_epochs``, the trial's last.
    """

    data: TrialData
    config: ProjectConfig
    extra: dict[str, Any]
    scratch: Path
    max_epochs: int
    fingerprint: str
    tracker: TrialTracker | None = None

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], checkpoint: Path | None) -> None:

        sweep = self.config.sweep
        if epoch % sweep.eval_every and epoch != self.max_epochs:
            return
        scores = score_model(self.data.setup.model, self.data.query, self.data.gallery,
                             self.config, self.data.setup.device)
        if self.tracker is not None and self.tracker.run_id is not None:
            log_metrics(self.tracker.target.uri, self.tracker.run_id,
                        {f"{sweep.train_set}/val.{k}": round(float(v), 2)
                         for k, v in scores.items()}, step=epoch)
        report = {**{f"train/{k}": float(v) for k, v in metrics.items()
                     if isinstance(v, (int, float))}, **scores, "epoch": epoch, **self.extra}
        report_epoch(report, epoch, checkpoint, self.scratch, self.fingerprint)


def score_model(model: Any, query: PackedSplit, gallery: PackedSplit, config: ProjectConfig,
                device: Any) -> dict[str, float]:
    """mAP, R1 and mINP (percent) of ``model`` on a query/gallery pair.

    The evaluate stage's path (:func:`pipeline.trial.scoring.evaluate_split`): the same features,
    distance, re-ranking setting and junk rule as the test numbers.
    """
    res = evaluate_split(model, config, query, gallery, device)["metrics"]
    return {METRIC: res["mAP"], "R1": res["R1"], "mINP": res["mINP"]}


def sweep_trial(knobs: dict[str, Any], ctx: TrialContext) -> None:
    """The Ray Tune trainable: train one sampled configuration, reporting mAP per epoch.

    A trial restarted after its worker died (``FailureConfig``) or by ``Tuner.restore`` gets
    Tune's last checkpoint back and the engine resumes from it. The project's own errors
    (:class:`~ddrn.errors.DDRNError`: bad knobs, bad data, a non-finite loss) are deterministic,
    so, as in the train stage (:func:`pipeline.trial.tune._trainable`), they end the trial once with
    the message in its last result (``user_error``) instead of being retried by Ray.
    """
    from ray import tune

    _run_guarded(knobs, ctx, name=tune.get_context().get_trial_id())


def grid_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """The Ray Tune trainable of one Fig. 6 grid point (:mod:`pipeline.sweep.grid`).

    ``config["point"]`` is ``{"knob", "value", "seed", "label"}``: the base variant with that one
    knob set to that value (knob ``None``: the base itself), trained with that seed for
    ``ctx.epochs``; the same lifecycle as :func:`sweep_trial` (validation scores, checkpoints,
    restarts, one-line project errors).
    """
    point = config["point"]
    knobs = {} if point["knob"] is None else {point["knob"]: point["value"]}
    _run_guarded(knobs, ctx, name=f"fig6-{point['label']}-s{point['seed']}", seed=point["seed"])


def _run_guarded(knobs: dict[str, Any], ctx: TrialContext, *, name: str,
                 seed: int | None = None) -> None:
    from ray import tune

    from pipeline.trial.tune import allow_trial_cleanup

    allow_trial_cleanup()
    try:
        _run_trial(knobs, ctx, name=name, seed=seed)
    except DDRNError as exc:
        log.error("sweep trial %s: %s", tune.get_context().get_trial_id(), exc)
        # The searcher and ASHA require their metric in every result: NaN = no score.
        tune.report({USER_ERROR: str(exc), METRIC: math.nan})


def _run_trial(knobs: dict[str, Any], ctx: TrialContext, *, name: str,
               seed: int | None) -> None:
    import socket

    import ray
    from ray import tune

    from ddrn.engine import fit

    started = time.perf_counter()
    if ctx.root is not None and Path(ctx.root).is_dir():
        os.chdir(ctx.root)  # a trial actor is its own process: this affects nobody else
    trial_id = tune.get_context().get_trial_id()
    config = ctx.config
    spec = apply_knobs(config, knobs, name=f"sweep-{config.sweep.name}-{name}", seed=seed,
                       epochs=ctx.epochs)
    local = ctx.runs_root is None
    scratch = Path(ctx.runs_root) if not local else Path(tempfile.gettempdir()) / "ddrn-sweep"
    run_dir = scratch / trial_id
    fingerprint = config.fingerprint(spec)
    resumed_from = restore_checkpoint(run_dir / "checkpoints", fingerprint, keep_local=False)
    data = prepare_trial(config, spec, ctx.data_root, ctx.validation, cache=WORKER_CACHE)
    setup = data.setup
    where = {"node_id": ray.get_runtime_context().get_node_id(), "hostname": socket.gethostname(),
             "pid": os.getpid(), "resumed_from_epoch": resumed_from}
    tracker = (TrialTracker(ctx.tracking, spec, config.input, fingerprint)
               if ctx.tracking else None)
    reporter = EpochReporter(data, config, where, scratch=run_dir, max_epochs=spec.train.epochs,
                             fingerprint=fingerprint, tracker=tracker)
    ok = False
    try:
        if tracker is not None:
            tracker.start()
        # What this trial paid before its first epoch in this worker (a reused worker: little).
        reporter.extra["setup_s"] = round(time.perf_counter() - started, 3)
        fit(setup.model, setup.criterion, setup.loader, spec.train, run_dir, setup.device,
            callbacks=tuple(c for c in (tracker, reporter) if c is not None),
            resume=resumed_from > 0, seed=spec.seed, owner=(spec.name, fingerprint))
        ok = True
    except SystemExit:
        ok = True  # Tune ends a function trial this way: ASHA stopped it, or it reached max_t
        raise
    finally:
        if tracker is not None:
            tracker.finish(run_dir, ok=ok)
        if local:
            # Node-local scratch: Tune's storage holds the checkpoints; a retry restores from it.
            shutil.rmtree(run_dir, ignore_errors=True)


def collect_trials(grid: Any, max_epochs: int) -> list[dict[str, Any]]:
    """One JSON-friendly record per trial of a Tune ``ResultGrid``, sorted by trial id."""
    trials = []
    for result in grid:
        metrics = result.metrics or {}
        hist = result.metrics_dataframe
        curve: dict[int, float] = {}
        nodes: list[str] = []
        resumed = 0
        if hist is not None and METRIC in hist and "epoch" in hist:
            for epoch, value in zip(hist["epoch"], hist[METRIC], strict=True):
                if value == value:  # a retried trial repeats epochs after its checkpoint: keep last
                    curve[int(epoch)] = float(value)
            if "node_id" in hist:
                nodes = sorted({str(n) for n in hist["node_id"].dropna()})
            if "resumed_from_epoch" in hist:
                resumed = int(hist["resumed_from_epoch"].fillna(0).max())
        epochs = int(metrics.get("epoch", max(curve, default=0)))
        # A project error ends the trial once with its message (not retried, sweep_trial).
        user_error = metrics.get(USER_ERROR)
        error = result.error is not None or bool(user_error)
        message = user_error or (str(result.error).strip().splitlines()[-1] if result.error else None)
        trials.append({
            "trial_id": str(metrics.get("trial_id") or Path(result.path).name),
            "status": "ERROR" if error else "TERMINATED",
            "error": message,
            "knobs": plain(dict(result.config or {})),
            "epochs": epochs,
            "stopped_early": (not error) and epochs < max_epochs,
            METRIC: None if error else plain(metrics.get(METRIC)),
            "R1": None if error else plain(metrics.get("R1")),
            "best_mAP": max(curve.values()) if curve else None,
            "curve": [[e, round(v, 4)] for e, v in sorted(curve.items())],
            "nodes": nodes,
            "hostname": metrics.get("hostname"),
            "pid": metrics.get("pid"),
            "setup_s": plain(metrics.get("setup_s")),
            "resumed_from_epoch": resumed,
        })
    return sorted(trials, key=lambda t: t["trial_id"])


def run_config(name: str, storage: str, config: ProjectConfig) -> Any:
    """Tune's run settings of a sweep experiment (the TPE search and the Fig. 6 grid): quiet,
    ``ray.max_failures`` retries, only the last checkpoint of a trial kept."""
    from ray import tune

    return tune.RunConfig(name=name, storage_path=storage, verbose=0,
                          failure_config=tune.FailureConfig(max_failures=config.ray.max_failures),
                          checkpoint_config=tune.CheckpointConfig(num_to_keep=1))


WALL_TIME_FILE = "wall_seconds.json"
"""Wall seconds of the finished attempts at a Tune experiment, next to Tune's own state."""


def total_wall_seconds(exp_path: str, shared_fs: bool, seconds: float) -> float:
    """This attempt's ``seconds`` plus those of the earlier finished attempts at ``exp_path``,
    recorded there for the next one (a ``--resume``, even of a finished sweep, adds its own
    seconds rather than replacing the sweep's). An attempt killed before it finished is not
    counted; on remote storage (no shared filesystem) only this attempt is."""
    if not shared_fs:
        return seconds
    path = Path(exp_path) / WALL_TIME_FILE
    total = float((read_json(path) or {}).get("seconds", 0.0)) + seconds
    write_json(path, {"seconds": round(total, 1)})
    return total


def restored_tuner(exp_path: str, trainable: Any, what: str) -> Any:
    """The interrupted Tune experiment at ``exp_path``, continued: finished trials are kept,
    unfinished and failed ones go on from their last checkpoint (``what`` names it in the log)."""
    from ray import tune

    log.info("resuming %s from %s", what, exp_path)
    return tune.Tuner.restore(exp_path, trainable, resume_unfinished=True, resume_errored=True)


def start_or_restore(exp_path: str, resume: bool, shared_fs: bool) -> bool:
    """Whether to continue the Tune experiment at ``exp_path`` (``Tuner.restore``).

    With ``resume`` and a restorable experiment there: True. Otherwise the experiment starts
    over, and a leftover folder on a shared filesystem is removed first.
    """
    from ray import tune

    restoring = resume and tune.Tuner.can_restore(exp_path)
    if not restoring and shared_fs and Path(exp_path).exists():
        log.info("starting over: removing %s (pass --resume to continue it)", exp_path)
        shutil.rmtree(exp_path)
    return restoring
