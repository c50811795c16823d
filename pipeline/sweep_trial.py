"""One sweep trial, as Ray Tune runs it in a worker: train a sampled configuration, report mAP.

The trial builds the model, loss and loader of the sampled :class:`~ddrn.config.ExperimentSpec`
and trains it with :func:`ddrn.engine.fit`; an engine callback (:class:`EpochReporter`) scores mAP
on the training set's query/gallery after every ``sweep.eval_every`` epochs and reports it to Tune
with the engine's checkpoint. Tune keeps the last checkpoint in the sweep's storage, so a trial
restarted after its worker died (``FailureConfig``) or by ``Tuner.restore`` continues from it, on
whichever node it lands. MLflow logging goes through :class:`pipeline.tracking.TrialTracker`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ddrn.config import ProjectConfig
from pipeline.sweep_space import METRIC, apply_knobs
from pipeline.tracking import TrackingTarget, TrialTracker, log_metrics

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
    tracking: TrackingTarget | None = None


class EpochReporter:
    """Engine callback: scores mAP on the training set's query/gallery and reports it to Tune.

    Reports ``epoch`` (ASHA's time attribute), ``mAP``/``R1``/``mINP`` (percent), the engine's
    epoch metrics under ``train/``, where the trial ran (``node_id``, ``hostname``, ``pid``) and the
    engine checkpoint; the scores also go to the trial's MLflow run.
    """

    def __init__(self, model: Any, packed: Any, config: ProjectConfig, device: Any,
                 extra: Mapping[str, Any], tracker: TrialTracker | None = None) -> None:
        self.model = model
        self.packed = packed
        self.config = config
        self.device = device
        self.extra = dict(extra)
        self.tracker = tracker

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], checkpoint: Path | None) -> None:
        from ray import tune

        sweep = self.config.sweep
        max_epochs = sweep.max_epochs or self.config.train.epochs
        if epoch % sweep.eval_every and epoch != max_epochs:
            return
        scores = score_model(self.model, self.packed, self.config, self.device)
        if self.tracker is not None and self.tracker.run_id is not None:
            # Named like the train/evaluate runs' metrics (`<test_set>.mAP`), so one column holds both.
            log_metrics(self.tracker.target.uri, self.tracker.run_id,
                        {f"{sweep.train_set}.{k}": round(float(v), 2) for k, v in scores.items()},
                        step=epoch)
        report = {**{f"train/{k}": float(v) for k, v in metrics.items()
                     if isinstance(v, (int, float))}, **scores, "epoch": epoch, **self.extra}
        if checkpoint is None or not checkpoint.is_file():
            tune.report(report)
            return
        with tempfile.TemporaryDirectory(prefix="ddrn-sweep-ckpt-") as tmp:
            # Tune copies this folder into its storage: the engine checkpoint plus its epoch.
            _link_or_copy(checkpoint, Path(tmp) / checkpoint.name)
            (Path(tmp) / "tune_epoch.json").write_text(
                json.dumps({"epoch": epoch, "file": checkpoint.name}))
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(tmp))


def score_model(model: Any, packed: Any, config: ProjectConfig, device: Any) -> dict[str, float]:
    """mAP, R1 and mINP (percent) of ``model`` on ``packed``'s query/gallery split."""
    from ddrn.evaluation import evaluate_rank, extract_features, pairwise_distance

    ev = config.evaluation
    qs, gs = packed.splits["query"], packed.splits["gallery"]
    # extract_features puts the model in eval mode and restores its mode afterwards.
    q = extract_features(model, qs, config.input, ev.batch_size, device, normalize=ev.feat_norm)
    g = extract_features(model, gs, config.input, ev.batch_size, device, normalize=ev.feat_norm)
    distmat = pairwise_distance(q, g)  # (Q, G)
    res = evaluate_rank(distmat, qs.pids, gs.pids, qs.camids, gs.camids,
                        max_rank=min(ev.max_rank, len(gs))).as_percentages()
    return {METRIC: res["mAP"], "R1": res["R1"], "mINP": res["mINP"]}


def sweep_trial(knobs: dict[str, Any], ctx: TrialContext) -> None:
    """The Ray Tune trainable: train one sampled configuration, reporting mAP per epoch.

    A trial restarted after its worker died (``FailureConfig``) or by ``Tuner.restore`` gets
    Tune's last checkpoint back and the engine resumes from it.
    """
    import socket

    import ray
    from ray import tune

    from ddrn.engine import fit
    from pipeline.experiment import prepare_training

    trial_id = tune.get_context().get_trial_id()
    config = ctx.config
    spec = apply_knobs(config, knobs, name=f"sweep-{config.sweep.name}-{trial_id}")
    scratch = Path(ctx.runs_root) if ctx.runs_root else Path(tempfile.gettempdir()) / "ddrn-sweep"
    run_dir = scratch / trial_id
    resumed_from = _restore_checkpoint(tune.get_checkpoint(), run_dir / "checkpoints")
    setup = prepare_training(config, spec, ctx.data_root)
    packed, device, model = setup.packed, setup.device, setup.model
    where = {"node_id": ray.get_runtime_context().get_node_id(), "hostname": socket.gethostname(),
             "pid": os.getpid(), "resumed_from_epoch": resumed_from}
    tracker = TrialTracker(ctx.tracking, spec, config.input) if ctx.tracking else None
    reporter = EpochReporter(model, packed, config, device, where, tracker)
    ok = False
    try:
        if tracker is not None:
            tracker.start()
        fit(model, setup.criterion, setup.loader, spec.train, run_dir, device,
            callbacks=tuple(c for c in (tracker, reporter) if c is not None),
            resume=resumed_from > 0, seed=spec.seed)
        ok = True
    except SystemExit:
        ok = True  # Tune ends a function trial this way: ASHA stopped it, or it reached max_t
        raise
    finally:
        if tracker is not None:
            tracker.finish(run_dir, ok=ok)


def _restore_checkpoint(checkpoint: Any, ckpt_dir: Path) -> int:
    """Put Tune's checkpoint (if any) in the engine's checkpoint folder; return its epoch.

    Tune's copy is the source of truth: it matches the trial's reported ``epoch``, so the engine
    resumes exactly where the reports stopped, on whichever node the trial now runs.
    """
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # never resume a stranger's or a newer state
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as src:
        meta = json.loads((Path(src) / "tune_epoch.json").read_text())
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(src) / meta["file"], ckpt_dir / meta["file"])
    log.info("resuming %s from Tune's checkpoint of epoch %d", ckpt_dir.parent, meta["epoch"])
    return int(meta["epoch"])


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
