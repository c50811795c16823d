"""The ``train`` stage: every experiment of the profile as a Ray Tune trial.

``python -m pipeline.train`` trains what is not yet trained: an experiment whose
``runs/<name>/done.json`` carries the current fingerprint is skipped, an unfinished one resumes
from its checkpoint, and a run dir left by other settings is cleared first. So after a change
of one variant's knob only that variant's experiments train again, and after a kill the rerun
continues where the trials stopped. ``--experiment NAME`` trains one experiment (a single trial,
same code path). MLflow gets one parent run per invocation, with a nested run per trial.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from ddrn.errors import TrainingError
from pipeline.cli import base_parser, load_params, run_stage
from pipeline.params import ExperimentSpec, ProjectConfig
from pipeline.preflight import check_experiments
from pipeline.trial import rundir

log = logging.getLogger(__name__)


def plan(config: ProjectConfig, specs: Sequence[ExperimentSpec],
         runs_dir: Path) -> tuple[list[ExperimentSpec], list[ExperimentSpec]]:
    """Split ``specs`` into (to train, already done); stale run dirs are removed here.

    Removing stale dirs in the driver (not only in the trial) matters on a cluster, where the
    trial's ``runs/`` may be another machine's.
    """
    todo, done = [], []
    for spec in specs:
        run_dir = runs_dir / spec.name
        state = rundir.run_state(run_dir, config.fingerprint(spec))
        if state == "done":
            rundir.clear_scratch(run_dir)
            done.append(spec)
            continue
        if state == "stale":
            log.info("%s: run dir trained with other settings; clearing it", spec.name)
            shutil.rmtree(run_dir)
        elif state == "corrupt":
            log.warning("%s: finished run whose model.pt is missing or damaged; training it again",
                        spec.name)
            shutil.rmtree(run_dir)
        elif state == "partial":
            log.info("%s: unfinished run found; it resumes from its checkpoint", spec.name)
        todo.append(spec)
    return todo, done


def train(config: ProjectConfig, specs: Sequence[ExperimentSpec],
          root: Path, runs_dir: Path) -> dict[str, int]:
    """Train ``specs`` that are not done; returns counts ``{"trained", "skipped", "failed"}``.

    Raises:
        TrainingError: one line naming the experiments whose trials failed (after retries).
    """
    from pipeline.tracking.runs import stage_run
    from pipeline.trial.tune import TrialJob, run_trials

    todo, done = plan(config, specs, runs_dir)
    log.info("train: %d experiments, %d already trained, %d to train", len(specs), len(done),
             len(todo))
    if todo:  # everything checkable without training fails here, before Ray starts
        check_experiments(config, todo, root / "data" / "packed", train=True)
    t0 = time.perf_counter()
    with stage_run(config.tracking, root, "train", config.profile) as run:
        if run is not None:
            run.log_params({"experiments": len(specs), "skipped": len(done), "to_train": len(todo),
                            "cpus_per_trial": config.ray.cpus_per_trial,
                            "gpus_per_trial": config.ray.gpus_per_trial})
        job = TrialJob(config=config, root=str(root.resolve()), runs_dir=str(runs_dir.resolve()),
                       tracking=run.target(config.tracking.log_checkpoints) if run else None)
        name = f"train-{config.profile}-{time.strftime('%Y%m%d-%H%M%S')}"
        outcomes = run_trials(job, [s.name for s in todo], config.ray, name)
        failed = [o for o in outcomes if not o.ok]
        workers = {o.worker_pid for o in outcomes if o.worker_pid is not None}
        if workers:
            log.info("train: %d trials finished on %d Ray workers", len(outcomes) - len(failed),
                     len(workers))
        counts = {"trained": len(outcomes) - len(failed), "skipped": len(done),
                  "failed": len(failed)}
        if run is not None:
            run.log_metrics({**counts, "seconds": time.perf_counter() - t0})
    if failed:
        detail = "; ".join(f"{o.experiment}: {o.error}" for o in failed)
        raise TrainingError(f"{len(failed)} of {len(outcomes)} trials failed ({detail}); see "
                            f"{config.ray.storage_path}/{name}/ for the trial logs")
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--experiment", action="append", default=None, metavar="NAME",
                        help="train only this experiment (repeatable); default: every one")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"),
                        help="where run dirs go (default: runs)")
    args: argparse.Namespace = parser.parse_args(argv)
    config = load_params(args)
    if args.experiment:
        specs = [config.experiment(name) for name in args.experiment]
    else:
        specs = config.experiments_list()
    counts = train(config, specs, Path.cwd(), args.runs_dir)
    log.info("train: %(trained)d trained, %(skipped)d skipped, %(failed)d failed", counts)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_stage(main))
