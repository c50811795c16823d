"""``python -m pipeline.sweep``: Ray Tune + Optuna (TPE) + ASHA, and the Fig. 6 one-knob grid.

Each trial trains ``sweep.base_variant`` with a sampled codebook size x, Gumbel temperature tau,
sub-centre count k, margin and scale, loss family (ArcFace / Sub-center ArcFace / HS-ArcFace) and
sampling (default / Gumbel) on the training identities of ``sweep.train_set`` that
``sweep.validation`` does not hold out, and reports mAP on the held-out identities' query/gallery
after every ``sweep.eval_every`` epochs: the sweep selects on validation identities and never reads
the test split (:mod:`ddrn.data.validation`). Optuna's TPE sampler proposes configurations from a define-by-run space
(k only exists for the sub-centre heads, tau only for Gumbel sampling); ASHA stops the weak trials
early. Trials checkpoint every epoch, so a trial whose worker dies resumes on another worker, and
``--resume`` continues an interrupted sweep (``Tuner.restore``) instead of starting over. Ray
workers are reused from trial to trial and keep the packed data in memory
(:mod:`pipeline.sweep.data`), so a trial stopped after ``grace_period`` epochs costs about its
epochs: without that, a new process, its imports and the data dominated short trials.

Then, in the same Ray session and MLflow run, the paper's Fig. 6 study as its own Tune grid
(:mod:`pipeline.sweep.grid`): one knob of ``sweep.fig6`` at a time around the base variant, each
configuration with several seeds for a fixed number of epochs (no ASHA), on the same validation
identities; ``--resume`` continues it the same way.

Outputs: ``reports/sweep_trials.json`` (every trial), ``reports/sweep_best_params.yaml`` (the best
configuration as a ``params.yaml`` variant plus the ``dvc exp run -S`` command),
``reports/sweep_fig6.json`` (every grid point), and ``reports/sweep.md`` with its figures, each naming the validation split its numbers come from (:mod:`pipeline.sweep.report`). Ray plumbing (``ray.init``
honouring ``RAY_ADDRESS``, per-trial resources) comes from :mod:`pipeline.trial.tune`, MLflow from
:mod:`pipeline.tracking.runs`: every trial is an MLflow run nested under the sweep's run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ddrn.atomic import atomic_write_text
from ddrn.errors import ConfigError, DDRNError
from pipeline.cli import base_parser, load_params
from pipeline.params import ProjectConfig
from pipeline.sweep.grid import (
    GRID_FILE,
    GridStudy,
    empty_study,
    grid_epochs,
    grid_points,
    run_grid,
)
from pipeline.sweep.space import (
    METRIC,
    apply_knobs,
    base_knobs,
    best_params_document,
    define_space,
    dvc_exp_command,
    plain,
    sweep_fingerprint,
)
from pipeline.sweep.trial import (
    TrialContext,
    collect_trials,
    restored_tuner,
    run_config,
    start_or_restore,
    sweep_trial,
    total_wall_seconds,
    validation_split,
)
from pipeline.tracking.runs import stage_run

log = logging.getLogger(__name__)

ENVIRONMENT = """environment:
  RAY_ADDRESS          Ray cluster to run the trials on (e.g. ray://head:10001 or auto);
                       unset: a local Ray on this machine
  MLFLOW_TRACKING_URI  MLflow tracking server for the sweep and trial runs; wins over
                       params.yaml tracking.tracking_uri (on a cluster: an http:// server)
  RAY_AUTH_MODE        Ray's token authentication (the Makefile sets it to disabled)"""


@dataclasses.dataclass(frozen=True)
class SweepOutcome:
    """What one sweep wrote, and its best trial."""

    trials_path: Path
    best_params_path: Path
    report_path: Path
    best: dict[str, Any]
    dvc_command: str
    extra_paths: tuple[Path, ...] = ()
    """The Fig. 6 grid's ``sweep_fig6.json`` when it ran."""


def run_sweep(config: ProjectConfig, root: Path, *, data_root: Path, out_dir: Path,
              resume: bool = False, storage_path: str | None = None,
              points_to_evaluate: Sequence[dict[str, Any]] | None = None,
              fig6: bool = True) -> SweepOutcome:
    """Run (or with ``resume`` continue) the sweep of ``config.sweep`` and write its reports.

    Two Tune experiments in one Ray session and one MLflow run: the TPE search with ASHA, then
    the Fig. 6 one-knob-at-a-time grid of ``sweep.fig6`` (:mod:`pipeline.sweep.grid`).

    Args:
        config: the validated project config (its ``sweep``, ``ray`` and ``tracking`` sections).
        root: repository root; relative paths (Ray storage, SQLite tracking URI) start there.
        data_root: folder holding ``<train_set>/``, the packed dataset of the preprocess stage.
        out_dir: where ``sweep_trials.json``, ``sweep_best_params.yaml``, ``sweep.md`` and
            ``figures/`` go (``reports/``).
        resume: continue the interrupted sweep with the same settings (``Tuner.restore``) rather
            than start over; without an earlier sweep it starts one.
        storage_path: overrides ``ray.storage_path`` (a shared folder or ``s3://`` on a cluster).
        points_to_evaluate: configurations Optuna tries first (e.g. to rerun another sweep's
            trials without early stopping, as ``benchmarks/bench_sweep.py`` does).
        fig6: run the Fig. 6 grid too (False: the TPE search only, and no ``sweep_fig6.json``).
    """
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from pipeline.preflight import check_experiments
    from pipeline.trial.tune import ray_session, trial_resources

    sweep = config.sweep
    if not sweep.space:
        raise ConfigError(f"{config.source}: profiles.{config.profile}.sweep.space is empty; "
                          "expected at least one knob to search")
    apply_knobs(config, {}, "probe")  # reject an impossible base before starting Ray
    points = grid_points(config) if fig6 else []  # and an impossible grid point
    # Pack present, matching the profile, non-empty; pretrained weights there: before Ray starts.
    # Only the train split is read: the sweep selects on held-out training identities.
    check_experiments(config, [config.resolve(sweep.train_set, sweep.base_variant, 0)], data_root,
                      train=True, test=False)
    split = validation_split(config, data_root)
    log.info("validation: %d of %d training ids held out (seed %d), %d queries, %d gallery images",
             len(split.val_ids), len(split.val_ids) + len(split.train_ids), split.seed,
             len(split.query), len(split.gallery))
    storage = storage_path or config.ray.storage_path
    shared_fs = "://" not in storage
    if shared_fs:
        storage = str((root / storage).resolve())
    exp_name = f"sweep-{sweep.name}-{sweep_fingerprint(config)}"
    exp_path = f"{storage.rstrip('/')}/{exp_name}"
    max_epochs = sweep.max_epochs or config.train.epochs

    t0 = time.perf_counter()
    with ray_session(config.ray) as cluster:
        resources = trial_resources(config.ray, cluster)
        restoring = start_or_restore(exp_path, resume, shared_fs)
        parent_file = Path(exp_path) / "mlflow_parent_run.txt" if shared_fs else None
        old_parent = (parent_file.read_text().strip() if restoring and parent_file
                      and parent_file.is_file() else None)
        with stage_run(config.tracking, root, "sweep", config.profile,
                       tags={"sweep": exp_name}, reopen_run_id=old_parent) as parent:
            if parent is not None:
                parent.log_params({"sweep." + k: v for k, v in plain(
                    dataclasses.asdict(sweep)).items() if k not in ("space", "fig6")})
                parent.log_params({"sweep.fig6.trials": len(points),
                                   "sweep.fig6.epochs": grid_epochs(config)})
                if parent_file is not None:
                    parent_file.parent.mkdir(parents=True, exist_ok=True)
                    parent_file.write_text(parent.run_id)
            ctx = TrialContext(config, str(data_root.resolve()),
                               f"{exp_path}/trial_runs" if shared_fs else None, split,
                               parent.target(log_checkpoints=False) if parent else None,
                               root=str(Path.cwd().resolve()))
            trainable = tune.with_resources(tune.with_parameters(sweep_trial, ctx=ctx), resources)
            log.info("sweep %s: %d trials of <= %d epochs, %s each, <= %d at once, storage %s",
                     exp_name, sweep.num_samples, max_epochs, resources,
                     sweep.max_concurrent_trials, exp_path)
            if restoring:
                tuner = restored_tuner(exp_path, trainable, f"sweep {exp_name}")
            else:
                searcher = OptunaSearch(
                    define_space(sweep.space, base_knobs(config)), metric=METRIC, mode="max",
                    sampler=optuna.samplers.TPESampler(seed=sweep.seed),
                    points_to_evaluate=[dict(p) for p in points_to_evaluate or []] or None)
                scheduler = ASHAScheduler(time_attr="epoch", metric=METRIC, mode="max",
                                          max_t=max_epochs, grace_period=sweep.grace_period,
                                          reduction_factor=sweep.reduction_factor)
                tuner = tune.Tuner(
                    trainable,
                    tune_config=tune.TuneConfig(
                        search_alg=searcher, scheduler=scheduler, num_samples=sweep.num_samples,
                        max_concurrent_trials=sweep.max_concurrent_trials,
                        time_budget_s=sweep.time_budget_s,
                        # One worker runs trial after trial (pipeline.sweep.trial): a trial ASHA
                        # stops costs its epochs, not a new process, imports and data.
                        reuse_actors=True),
                    run_config=run_config(exp_name, storage, config))
            grid = tuner.fit()
            trials = collect_trials(grid, max_epochs)
            num_nodes = len({n for t in trials for n in t["nodes"]})
            seconds = total_wall_seconds(exp_path, shared_fs, time.perf_counter() - t0)
            summary = _summary(config, exp_name, exp_path, trials, max_epochs, seconds, num_nodes,
                               split.summary())
            study = None
            if fig6:
                study = (run_grid(config, ctx, points, storage=storage, shared_fs=shared_fs,
                                  resources=resources, resume=resume)
                         if points else empty_study(config, split.summary()))
            outcome = write_outputs(config, summary, out_dir, study)
            if parent is not None:
                best = outcome.best
                parent.log_metrics({"best_mAP": best.get("mAP") or float("nan"),
                                    "trial_epochs": sum(t["epochs"] for t in trials),
                                    "trials": len(trials), "num_nodes": num_nodes})
                if study is not None:
                    parent.log_metrics({"fig6_trial_epochs": sum(p.epochs for p in study.points),
                                        "fig6_trials": len(study.points)})
                for path in (outcome.trials_path, outcome.best_params_path, outcome.report_path,
                             *outcome.extra_paths,
                             *sorted((out_dir / "figures").glob("sweep_*.png"))):
                    parent.log_artifact(path, "sweep")
    failed = [t for t in trials if t["status"] == "ERROR"]
    if failed and not outcome.best:
        raise DDRNError(f"sweep {exp_name}: no trial was scored; {len(failed)} failed, the first "
                        f"with: {failed[0]['error']}")
    if study is not None and study.points and not any(p.scored for p in study.points):
        first = next(p for p in study.points if not p.scored)
        raise DDRNError(f"Fig. 6 grid {study.name}: no grid point was scored; the first failed "
                        f"with: {first.error}")
    return outcome


def _summary(config: ProjectConfig, exp_name: str, exp_path: str, trials: list[dict[str, Any]],
             max_epochs: int, seconds: float, num_nodes: int,
             validation: dict[str, Any]) -> dict[str, Any]:
    sweep = config.sweep
    scored = [t for t in trials if t.get(METRIC) is not None]
    # Best = highest final mAP among trials that ran to max_epochs: a trial ASHA stopped early
    # was judged at a rung, not at the end (all trials count only if none ran to the end).
    full = [t for t in scored if t["epochs"] >= max_epochs] or scored
    best = max(full, key=lambda t: t[METRIC]) if full else {}
    base = base_knobs(config)
    return {
        "name": exp_name, "experiment_path": exp_path, "profile": config.profile,
        "train_set": sweep.train_set, "base_variant": sweep.base_variant, "metric": METRIC,
        "selection": "validation", "validation": validation,
        "num_samples": sweep.num_samples, "max_epochs": max_epochs,
        "grace_period": sweep.grace_period, "reduction_factor": sweep.reduction_factor,
        "max_concurrent_trials": sweep.max_concurrent_trials,
        "space": {k: plain(dataclasses.asdict(v)) for k, v in sweep.space.items()},
        "base": plain({k: base[k] for k in (*sweep.space, "margin_head", "sampling")}),
        "duration_s": round(seconds, 1), "num_nodes": num_nodes,
        "best": best, "trials": trials,
    }


def write_outputs(config: ProjectConfig, summary: dict[str, Any], out_dir: Path,
                  study: GridStudy | None = None) -> SweepOutcome:
    """Write the best configuration, the trial records, the Fig. 6 grid (``sweep_fig6.json``,
    when ``study`` is given) and the report; return what was written."""
    from pipeline.sweep.report import write_report

    out_dir.mkdir(parents=True, exist_ok=True)
    extra = []
    if study is not None:
        extra.append(atomic_write_text(out_dir / GRID_FILE, study.to_json()))
    best = summary["best"]
    knobs = best.get("knobs", {})
    command = dvc_exp_command(config, knobs) if knobs else "(no trial was scored)"
    best_path = out_dir / "sweep_best_params.yaml"
    header = _best_params_header(config, summary, command)
    note = (f"chosen on validation mAP {best.get(METRIC)} % ({_split_words(summary)})"
            if knobs else None)
    atomic_write_text(best_path, header + yaml.safe_dump(
        best_params_document(config, knobs, note), sort_keys=False) if knobs else header)
    summary = {**summary, "best_params_file": best_path.name, "dvc_command": command}
    trials_path = out_dir / "sweep_trials.json"
    atomic_write_text(trials_path, json.dumps(summary, indent=2) + "\n")
    report = write_report(trials_path, out_dir)
    return SweepOutcome(trials_path, best_path, report, best, command, tuple(extra))


def _split_words(summary: dict[str, Any]) -> str:
    v = summary["validation"]
    return (f"{v['num_ids']} held-out ids of {summary['train_set']}'s train split, "
            f"{v['num_query']} queries, {v['num_gallery']} gallery; fraction {v['fraction']}, "
            f"seed {v['seed']}")


def _best_params_header(config: ProjectConfig, summary: dict[str, Any], command: str) -> str:
    """The comment block of ``sweep_best_params.yaml``: what it was chosen on and how to test it."""
    best, v = summary["best"], summary["validation"]
    variant = f"{config.sweep.base_variant}_sweep_best"
    groups = [f"profiles.{config.profile}.experiments.{g}.variants"
              for g, group in config.cfg.experiments.items()
              if group.train_set == summary["train_set"]] or [
                  f"profiles.{config.profile}.experiments.<group>.variants"]
    base = config.sweep.base_variant
    trained = [s for s in config.experiments_list()
               if s.variant == base and s.train_set == summary["train_set"]]
    as_base = ", ".join(f"metrics/{s.name}.json" for s in trained) or "metrics/<experiment>.json"
    as_own = ", ".join(f"metrics/{s.name.replace(f'-{base}-', f'-{variant}-')}.json"
                       for s in trained) or "metrics/<experiment>.json"
    return "\n".join([
        f"# Best configuration of sweep {summary['name']}, selected on VALIDATION identities "
        "(the test split was not read):",
        f"#   trial {best.get('trial_id')}: validation mAP {best.get(METRIC)} %, R1 "
        f"{best.get('R1')} % after {best.get('epochs')} epochs,",
        f"#   on {_split_words(summary)};",
        f"#   trained on the other {v['num_train_ids']} ids ({v['num_train_images']} images).",
        "# Its test-split numbers come from the main pipeline (all training ids, evaluated on the",
        "# test split into metrics/<experiment>.json and reports/), either as a DVC experiment of",
        "# the base variant with these knobs:",
        f"#   {command}",
        f"#   (test split: {as_base}; `dvc exp show`, reports/results.md)",
        f"# or by pasting the variant below into params.yaml, adding {variant} to",
        f"# {groups[0]}, and running `dvc repro`",
        f"#   (test split: {as_own}, next to {base}'s rows in reports/results.md).",
        ""])


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m pipeline.sweep [--resume] [--num-samples N]``."""
    parser = base_parser(__doc__.splitlines()[0], epilog=ENVIRONMENT)
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted sweep with the same settings instead of "
                             "starting over (starts one if there is none)")
    parser.add_argument("--num-samples", type=int, default=None,
                        help="trial budget (default: sweep.num_samples of the profile)")
    parser.add_argument("--data", type=Path, default=Path("data/packed"),
                        help="folder of packed datasets (default: data/packed)")
    parser.add_argument("--out", type=Path, default=Path("reports"),
                        help="report folder (default: reports)")
    parser.add_argument("--storage-path", default=None,
                        help="Tune storage (default: ray.storage_path); shared on a cluster")
    args = parser.parse_args(argv)
    # Snapshot Tune's experiment state often, so --resume after a kill restarts trials from their
    # latest checkpoints rather than from scratch (Ray's default period is ~10 s or more).
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    config = load_params(args)
    if args.num_samples is not None:
        if args.num_samples < 1:
            raise ConfigError(f"--num-samples: expected an integer >= 1, got {args.num_samples}")
        config = dataclasses.replace(config, cfg=dataclasses.replace(
            config.cfg, sweep=dataclasses.replace(config.sweep, num_samples=args.num_samples)))
    root = Path.cwd().resolve()
    outcome = run_sweep(config, root, data_root=(root / args.data), out_dir=(root / args.out),
                        resume=args.resume, storage_path=args.storage_path)
    best = outcome.best
    print(f"best trial {best.get('trial_id')}: mAP {best.get(METRIC)} % with {best.get('knobs')}")
    print(f"wrote {outcome.report_path}, {outcome.best_params_path}")
    print(f"train it as a DVC experiment:\n  {outcome.dvc_command}")
    return 0

