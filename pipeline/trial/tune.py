"""Ray Tune: every Ray call of the train stage lives in this module.

Each experiment of the profile is one Tune trial (a grid over experiment names, one ``Tuner``),
with its own resources. The same code runs on a private local Ray started for the stage or on
the cluster named by ``RAY_ADDRESS``:

- a trial trains into ``runs/<experiment>/`` (an absolute path) with ``resume=True``, so a trial
  started again after a kill continues from ``runs/<experiment>/checkpoints/last.pt``;
- every checkpoint the engine writes is also reported to Tune (``ray.tune.report``, never
  ``ray.train.*``, which fails inside Tune functions in Ray 2.60), so a trial that Ray retries
  (``FailureConfig(max_failures)``) on a node without the run dir restores it from Tune's
  storage;
- the last report carries the finished run (weights, history, ``done.json``) as a checkpoint, and
  the driver copies it into ``runs/`` when the trial ran where the driver's ``runs/`` is not
  visible (a cluster without a shared filesystem).

GPUs are requested only when the cluster has them (a trial asking for a GPU on a CPU-only cluster
waits forever, without an error).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ddrn.errors import DDRNError, TrainingError
from pipeline.params import ProjectConfig, RayConfig
from pipeline.tracking.runs import TrackingTarget
from pipeline.trial import rundir

log = logging.getLogger(__name__)

USER_ERROR = "user_error"
"""Result key of a trial ended by a :class:`~ddrn.errors.DDRNError` (not retried)."""

BUNDLE_FILES = ("model.pt", "history.json", rundir.DONE_FILE, rundir.SPEC_FILE)
"""What a finished trial hands back to the driver through its final checkpoint."""


@dataclasses.dataclass(frozen=True)
class TrialJob:
    """What every trial needs besides its experiment name (shipped with ``tune.with_parameters``).

    All paths are absolute: Ray runs trials in other working directories (and other machines).
    """

    config: ProjectConfig
    """The resolved project config, as the driver loaded it (trials do not re-read params.yaml)."""
    root: str
    runs_dir: str
    tracking: TrackingTarget | None = None


@dataclasses.dataclass(frozen=True)
class TrialOutcome:
    """How one trial ended, as seen by the driver: finished, or failed with ``error``."""

    experiment: str
    epochs: int
    error: str | None = None
    worker_pid: int | None = None
    """The Ray worker process that finished it (workers are reused across trials)."""

    @property
    def ok(self) -> bool:
        return self.error is None


@contextmanager
def ray_session(ray_cfg: RayConfig) -> Iterator[dict[str, float]]:
    """Connect to Ray for the body and yield the cluster's resources.

    ``RAY_ADDRESS`` set: connect to that cluster (no resources may be passed then). Otherwise a
    private local instance (``address="local"``: never the last cluster ``ray start`` left on this
    machine) with ``ray_cfg.num_cpus`` CPUs, no dashboard and a small object store, listening on
    loopback only. A Ray already initialised by the caller (e.g. a test fixture) is reused and
    left running.
    """
    address = os.environ.get("RAY_ADDRESS")
    reuse = _ray_already_running()
    private = not reuse and not address
    previous = os.environ.get(_SINGLE_MACHINE_ENV)
    if private:
        # Ray's single-machine mode (its default on macOS and Windows) makes the node IP loopback,
        # so the GCS, raylet, agents and workers listen on 127.0.0.1 rather than on every
        # interface; all it forbids is another node joining, which a private instance never
        # allows anyway. The processes Ray starts read the switch from the environment.
        os.environ[_SINGLE_MACHINE_ENV] = "0"
    import ray
    from ray._private import ray_constants

    saved_switch = ray_constants.ENABLE_RAY_CLUSTER
    if private:
        # This process read the switch when it first imported Ray, which a caller may have done
        # before this session (`from ray import tune`): set it for the session too, so the node
        # IP the driver hands to the processes it starts is loopback as well.
        ray_constants.ENABLE_RAY_CLUSTER = False

    # Short trials that checkpoint every epoch trip Tune's "snapshotting may become a bottleneck"
    # warning dozens of times per run; it is harmless here and buries the progress lines.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if address and not reuse:
        log.info("Ray: connecting to the cluster at %s", address)
        ray.init(address=address, log_to_driver=False)
    elif private:
        num_cpus = ray_cfg.num_cpus or os.cpu_count() or 1
        log.info("Ray: starting a local instance with %d CPUs on loopback", num_cpus)
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                 _node_ip_address="127.0.0.1",
                 object_store_memory=ray_cfg.object_store_mb * 2**20, log_to_driver=False)
    try:
        yield {k: float(v) for k, v in ray.cluster_resources().items()}
    finally:
        if not reuse:
            ray.shutdown()
        if private:
            # Later `ray start` calls from this process (tests) must still be able to cluster.
            ray_constants.ENABLE_RAY_CLUSTER = saved_switch
            if previous is None:
                os.environ.pop(_SINGLE_MACHINE_ENV, None)
            else:
                os.environ[_SINGLE_MACHINE_ENV] = previous


_SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _ray_already_running() -> bool:
    """Whether the caller (e.g. a test fixture) already runs Ray in this process."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def trial_resources(ray_cfg: RayConfig, cluster: dict[str, float]) -> dict[str, float]:
    """CPUs and GPUs one trial asks for, fitted to what the cluster has.

    GPUs are dropped on a cluster without any; CPUs are capped at the cluster's total so a trial
    can always be placed.
    """
    gpus = ray_cfg.gpus_per_trial
    if gpus > 0 and cluster.get("GPU", 0.0) <= 0:
        log.warning("Ray: ray.gpus_per_trial=%s but the cluster has no GPU; trials use CPUs only",
                    gpus)
        gpus = 0.0
    cpus = min(ray_cfg.cpus_per_trial, max(cluster.get("CPU", 1.0), 1.0))
    return {"cpu": cpus, "gpu": gpus}


# --------------------------------------------------------------------------------------------
# Inside a trial
# --------------------------------------------------------------------------------------------


TRIAL_CLEANUP_ENV = "TUNE_FUNCTION_THREAD_TIMEOUT_S"
TRIAL_CLEANUP_S = 120
"""How long a reused worker waits for its previous trial's clean-up before taking the next one.

With ``reuse_actors`` Tune ends a function trial (ASHA stopped it, or it reached ``max_t``) by
raising ``SystemExit`` in its thread and joining that thread before the next trial starts in the
same process. Ray 2.60 waits ``TUNE_FUNCTION_THREAD_TIMEOUT_S`` (2 s by default) and then fails
the *next* trial ("Could not re-use actor"), which costs it a retry. A trial's clean-up (closing
its MLflow run, uploading its small files, removing its scratch) can take longer than 2 s on a
busy machine or a remote tracking server."""


def allow_trial_cleanup(seconds: int = TRIAL_CLEANUP_S) -> None:
    """Give this worker's trial clean-up ``seconds`` before Tune reuses the worker (see
    :data:`TRIAL_CLEANUP_S`).

    Called by every trainable (train stage, sweep, Fig. 6 grid) in its Ray worker, where Tune reads the setting when it resets
    the worker for the next trial; on a cluster this reaches every node, which a variable set in
    the driver does not. An explicit setting in the environment wins.
    """
    os.environ.setdefault(TRIAL_CLEANUP_ENV, str(seconds))


CHECKPOINT_META = "tune_checkpoint.json"
"""What a checkpoint folder reported to Tune holds besides the engine's file: epoch, fingerprint,
file name. The train stage's and the sweep's trials report and restore through the same two
functions below, so a checkpoint means the same thing in both."""


def report_epoch(metrics: dict[str, Any], epoch: int, checkpoint: Path | None, scratch: Path,
                 fingerprint: str) -> None:
    """Report one epoch's ``metrics`` to Tune, with the engine's ``checkpoint`` when it wrote one.

    The checkpoint is handed over in a folder under ``scratch`` (the trial's run dir, never
    /tmp: a trial killed here leaves it where the next attempt's clean-up removes it).
    """
    from ray import tune

    if checkpoint is None or not checkpoint.is_file():
        tune.report(metrics)
        return
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=rundir.SCRATCH_PREFIX, dir=scratch) as tmp:
        rundir.link_or_copy(checkpoint, Path(tmp) / checkpoint.name)
        rundir.write_json(Path(tmp) / CHECKPOINT_META,
                          {"epoch": epoch, "fingerprint": fingerprint, "file": checkpoint.name})
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))


def restore_checkpoint(ckpt_dir: Path, fingerprint: str, keep_local: bool) -> int:
    """Before a trial trains: put Tune's latest checkpoint of it into ``ckpt_dir``; returns its
    epoch (0: Tune has none of this fingerprint).

    The one restore policy of every trial: Tune's copy, when there is one, is the truth and
    replaces the run dir's own (it is the state of the last *reported* epoch, on whichever node
    the trial now runs). Without one, ``keep_local`` decides: the train stage keeps the run dir's
    checkpoint (``runs/`` outlives a killed ``dvc repro``; the engine checks its provenance), a
    scheduled sweep trial starts over (a local state ahead of the reports would hide epochs from
    ASHA, which must see every one).
    """
    from ray import tune

    ckpt = tune.get_checkpoint()
    meta = None
    if ckpt is not None:
        with ckpt.as_directory() as d:
            meta = rundir.read_json(Path(d) / CHECKPOINT_META)
            if meta is not None and meta.get("fingerprint") == fingerprint:
                shutil.rmtree(ckpt_dir, ignore_errors=True)
                ckpt_dir.mkdir(parents=True)
                shutil.copy2(Path(d) / str(meta["file"]), ckpt_dir / str(meta["file"]))
                log.info("%s: resuming from Tune's checkpoint of epoch %s", ckpt_dir.parent,
                         meta["epoch"])
                return int(meta["epoch"])
    if not keep_local:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    return 0


class _TuneReporter:
    """Engine callback: per-epoch metrics (and each checkpoint the engine wrote) to Tune."""

    def __init__(self, fingerprint: str, scratch: Path) -> None:
        self.fingerprint = fingerprint
        self.scratch = scratch
        self.last_epoch = 0

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], checkpoint: Path | None) -> None:
        self.last_epoch = epoch
        report = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        report["epoch"] = epoch
        report_epoch(report, epoch, checkpoint, self.scratch, self.fingerprint)


def _trainable(trial_config: dict[str, Any], job: TrialJob) -> None:
    """One Tune trial: train experiment ``trial_config["experiment"]`` into ``runs/<name>/``.

    The project's own errors (:class:`~ddrn.errors.DDRNError`: a bad file, a non-finite loss)
    are deterministic: a retry would fail the same way. They end the trial normally with the
    message in its last result (``user_error``), so Ray does not retry it; anything else (a
    crashed worker, a lost node) raises and is retried up to ``ray.max_failures`` times.
    """
    from ray import tune

    allow_trial_cleanup()
    try:
        _train_trial(trial_config, job)
    except DDRNError as exc:
        log.error("%s: %s", trial_config.get("experiment"), exc)
        tune.report({USER_ERROR: str(exc)})


def _train_trial(trial_config: dict[str, Any], job: TrialJob) -> None:
    from ray import tune

    from pipeline.tracking.runs import TrialTracker
    from pipeline.trial.experiment import train_experiment

    if Path(job.root).is_dir():
        # Tune starts trials in their own directory; the data paths in params are relative to
        # the repository root (a worker runs one trial at a time, and every trial of the stage
        # wants the same root, so a reused worker is left where the next trial needs it).
        os.chdir(job.root)
    config = job.config
    spec = config.experiment(trial_config["experiment"])
    run_dir = Path(job.runs_dir) / spec.name
    fingerprint = config.fingerprint(spec)
    rundir.prepare(run_dir, spec, fingerprint)
    restore_checkpoint(run_dir / "checkpoints", fingerprint, keep_local=True)

    reporter = _TuneReporter(fingerprint, scratch=run_dir)
    tracker = (TrialTracker(job.tracking, spec, config.input, fingerprint=fingerprint)
               if job.tracking else None)
    callbacks: list[Any] = [reporter]
    if tracker is not None:
        tracker.start()
        callbacks.append(tracker)
    t0 = time.perf_counter()
    try:
        result = train_experiment(config, spec, run_dir, callbacks=callbacks, resume=True)
    except BaseException:
        if tracker is not None:
            tracker.finish(run_dir, ok=False)
        raise
    if result.resumed_from:
        log.info("%s: resumed from epoch %d", spec.name, result.resumed_from)
    # seconds of this attempt only (a resumed trial's earlier attempts are not counted)
    seconds = time.perf_counter() - t0
    done = rundir.mark_done(run_dir, spec, fingerprint, epochs=spec.train.epochs, seconds=seconds,
                            resumed_from=result.resumed_from)
    if tracker is not None:
        tracker.finish(run_dir, ok=True)
    with tempfile.TemporaryDirectory(prefix=rundir.SCRATCH_PREFIX, dir=run_dir) as tmp:
        for name in BUNDLE_FILES:
            if (run_dir / name).is_file():
                rundir.link_or_copy(run_dir / name, Path(tmp) / name)
        tune.report({"epoch": reporter.last_epoch or spec.train.epochs, "finished": 1.0,
                     "train_seconds": done["seconds"], "worker_pid": os.getpid()},
                    checkpoint=tune.Checkpoint.from_directory(tmp))


# --------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------


def _progress_callback(total: int) -> Any:
    from ray import tune

    class Progress(tune.Callback):
        """One line per epoch and per finished/failed trial (Tune's own table is turned off)."""

        def __init__(self) -> None:
            self.finished = 0

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                            **info: Any) -> None:
            if result.get("finished") or result.get(USER_ERROR):
                return
            loss = result.get("loss", result.get("total", float("nan")))
            log.info("[%d/%d done] %s epoch %s loss %.4f", self.finished, total,
                     trial.config["experiment"], result.get("epoch"), loss)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.finished += 1
            log.info("[%d/%d done] %s finished", self.finished, total, trial.config["experiment"])

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.finished += 1
            log.error("[%d/%d done] %s FAILED", self.finished, total, trial.config["experiment"])

    return Progress()


def run_trials(job: TrialJob, experiments: Sequence[str], ray_cfg: RayConfig,
               name: str) -> list[TrialOutcome]:
    """Train ``experiments`` as Tune trials (one ``Tuner``) and collect their runs into ``runs/``.

    Args:
        job: paths and tracking shared by all trials.
        experiments: experiment names of the profile to train.
        ray_cfg: resources per trial, concurrency, retries and Tune's storage.
        name: a unique name of this Tune run (a folder under ``ray_cfg.storage_path``).

    Returns:
        One outcome per experiment, in the order given.
    """
    from ray import tune

    if not experiments:
        return []
    storage = ray_cfg.storage_path
    if "://" not in storage:
        storage = str((Path(job.root) / storage).resolve())
    with ray_session(ray_cfg) as cluster:
        resources = trial_resources(ray_cfg, cluster)
        log.info("Ray: %d trials, %s each, at most %d at once (cluster: %s)", len(experiments),
                 resources, ray_cfg.max_concurrent_trials,
                 {k: v for k, v in cluster.items() if k in ("CPU", "GPU")})
        trainable = tune.with_resources(tune.with_parameters(_trainable, job=job), resources)
        tuner = tune.Tuner(
            trainable,
            param_space={"experiment": tune.grid_search(list(experiments))},
            tune_config=tune.TuneConfig(
                # Reused workers: a trial pays for its own epochs, not for a new process and
                # its imports (~6 s of one core each, 39 trials in the demo); every trial seeds
                # its own model and loader, so the weights are bit-identical either way.
                max_concurrent_trials=ray_cfg.max_concurrent_trials, reuse_actors=True,
                trial_name_creator=lambda t: t.config["experiment"],
                trial_dirname_creator=lambda t: t.config["experiment"]),
            run_config=tune.RunConfig(
                name=name, storage_path=storage, verbose=0,
                failure_config=tune.FailureConfig(max_failures=ray_cfg.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                callbacks=[_progress_callback(len(experiments))]),
        )
        grid = tuner.fit()
        outcomes = []
        for result in grid:
            exp = result.config["experiment"]
            metrics = result.metrics or {}
            if result.error is None and metrics.get("finished"):
                _collect(result.checkpoint, Path(job.runs_dir) / exp)
                pid = metrics.get("worker_pid")
                outcomes.append(TrialOutcome(exp, int(metrics.get("epoch", 0)),
                                             worker_pid=int(pid) if pid is not None else None))
            elif metrics.get(USER_ERROR):
                outcomes.append(TrialOutcome(exp, int(metrics.get("epoch") or 0),
                                             str(metrics[USER_ERROR])))
            else:
                message = str(result.error).strip().splitlines()[-1] if result.error else \
                    "ended without finishing"
                outcomes.append(TrialOutcome(exp, int(metrics.get("epoch", 0)), message))
    order = {e: i for i, e in enumerate(experiments)}
    return sorted(outcomes, key=lambda o: order[o.experiment])


def _collect(checkpoint: Any, run_dir: Path) -> None:
    """Copy a finished trial's bundle into ``run_dir`` unless it is already there (local runs)."""
    if checkpoint is None:
        raise TrainingError(f"{run_dir}: the trial finished without its final checkpoint")
    with checkpoint.as_directory() as d:
        theirs = rundir.read_json(Path(d) / rundir.DONE_FILE)
        mine = rundir.read_json(run_dir / rundir.DONE_FILE)
        if theirs is None:
            raise DDRNError(f"{run_dir}: the final checkpoint has no {rundir.DONE_FILE}")
        if mine == theirs:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        for name in BUNDLE_FILES:
            if name != rundir.DONE_FILE and (Path(d) / name).is_file():
                shutil.copy2(Path(d) / name, run_dir / name)
        rundir.write_json(run_dir / rundir.DONE_FILE, theirs)  # last: marks the copy complete
