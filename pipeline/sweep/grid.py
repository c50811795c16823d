"""The paper's Fig. 6 study: one knob at a time around the sweep's base variant, as a Tune grid.

The TPE search moves every knob at once, so no single knob's effect can be read off it. This
study does what Fig. 6 does: around the base variant (``sweep.base_variant`` with the profile's
model and loss), each knob of ``sweep.fig6.values`` takes each of its values while every other
knob keeps the base's. The base configuration is one grid point shared by every knob's panel, run
once per seed, not once per knob. Every configuration runs with each of ``sweep.fig6.seeds`` for
``sweep.fig6.epochs`` epochs (no early stopping) as a Ray Tune trial of the same lifecycle as the
TPE trials (:func:`pipeline.sweep.trial.grid_trial`), and is scored on the sweep's validation
identities (held-out training ids, :mod:`ddrn.data.validation`), never on the test split.

The grid is one Tune experiment, ``<storage>/fig6-<name>-<fingerprint>``: ``--resume`` continues
it with ``Tuner.restore`` (finished points are kept, unfinished ones go on from their last
epoch's checkpoint); a change to ``sweep.fig6``, the base variant, the validation split or the
training code changes the fingerprint and starts a new grid. ``reports/sweep_fig6.json`` holds
:class:`GridStudy`, the one record its writer and the report share.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ddrn.errors import ConfigError, DataError
from pipeline.params import ProjectConfig
from pipeline.sweep.space import CONDITIONS, METRIC, apply_knobs, base_knobs, plain

log = logging.getLogger(__name__)

GRID_FILE = "sweep_fig6.json"
"""The grid's record (:class:`GridStudy`), written next to ``sweep.md`` (``reports/``)."""


@dataclasses.dataclass(frozen=True)
class GridPoint:
    """One trial of the grid: ``knob`` set to ``value`` (knob ``None``: the base), one seed."""

    knob: str | None
    value: Any
    seed: int

    @property
    def label(self) -> str:
        return "base" if self.knob is None else f"{self.knob}={self.value}"

    def tune_config(self) -> dict[str, Any]:
        """What :func:`pipeline.sweep.trial.grid_trial` receives as ``config["point"]``."""
        return {"knob": self.knob, "value": self.value, "seed": self.seed, "label": self.label}


def grid_epochs(config: ProjectConfig) -> int:
    """Epochs of every grid trial: ``sweep.fig6.epochs``, else ``sweep.max_epochs``, else
    ``train.epochs``."""
    sweep = config.sweep
    return sweep.fig6.epochs or sweep.max_epochs or config.train.epochs


def grid_points(config: ProjectConfig) -> list[GridPoint]:
    """Every trial of the Fig. 6 grid: the base once per seed, then each knob's other values.

    A listed value equal to the base's is the base point (not run twice). Every configuration is
    validated here, before Ray starts.

    Raises:
        ConfigError: one line naming ``sweep.fig6.values.<knob>``: a knob without effect at the
            base (``tau`` without Gumbel sampling, ``k`` without a sub-centre head), or a value
            the base cannot take (e.g. ``num_embeddings`` above ``embed_dim``).
    """
    fig6 = config.sweep.fig6
    if not fig6.values:
        return []
    base = base_knobs(config)
    key = f"profiles.{config.profile}.sweep.fig6.values"
    epochs = grid_epochs(config)
    configs: list[tuple[str | None, Any]] = [(None, None)]
    for knob, values in fig6.values.items():
        if knob in CONDITIONS:
            parent, allowed = CONDITIONS[knob]
            if base[parent] not in allowed:
                raise ConfigError(
                    f"{config.source}: {key}.{knob}: {knob} has no effect with the base "
                    f"variant's {parent}={base[parent]!r}; expected a base with {parent} in "
                    f"{list(allowed)} or no {knob} entry")
        for value in values:
            if value == base[knob]:
                continue
            apply_knobs(config, {knob: value}, "probe", epochs=epochs, key=f"{key}.{knob}")
            configs.append((knob, value))
    return [GridPoint(knob, value, seed) for knob, value in configs for seed in fig6.seeds]


def grid_fingerprint(config: ProjectConfig) -> str:
    """Hash of everything that decides the grid's trials, so ``--resume`` never continues
    another grid (the TPE search's budget and space do not enter)."""
    sweep = config.sweep
    spec = apply_knobs(config, {}, "fingerprint", epochs=grid_epochs(config))
    payload = {"fig6": dataclasses.asdict(sweep.fig6), "epochs": grid_epochs(config),
               "validation": dataclasses.asdict(sweep.validation), "train_set": sweep.train_set,
               "base_variant": sweep.base_variant, "experiment": config.fingerprint(spec)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:8]


# --------------------------------------------------------------------------------------------
# The record of reports/sweep_fig6.json
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GridResult:
    """One grid point as it ran: validation ``mAP``/``R1`` (percent) after ``epochs``."""

    knob: str | None
    value: Any
    seed: int
    trial_id: str
    status: str
    error: str | None
    epochs: int
    mAP: float | None
    R1: float | None
    curve: list[list[float]]
    resumed_from_epoch: int = 0

    @property
    def scored(self) -> bool:
        return self.status != "ERROR" and self.mAP is not None and self.R1 is not None


@dataclasses.dataclass(frozen=True)
class GridStudy:
    """Everything ``reports/sweep_fig6.json`` holds: written by :func:`run_grid`, read by
    :mod:`pipeline.sweep.grid_report`.

    ``values`` are the knobs' listed values, ``base`` the base variant's value of each knob;
    ``validation`` the split's summary (:meth:`ddrn.data.ValidationSplit.summary`).
    """

    name: str
    experiment_path: str
    profile: str
    train_set: str
    base_variant: str
    validation: dict[str, Any]
    epochs: int
    seeds: list[int]
    values: dict[str, list[Any]]
    base: dict[str, Any]
    duration_s: float
    num_nodes: int
    points: list[GridResult]
    selection: str = "validation"

    def to_json(self) -> str:
        return json.dumps(plain(dataclasses.asdict(self)), indent=2) + "\n"

    @classmethod
    def load(cls, path: Path) -> GridStudy:
        if not path.is_file():
            raise DataError(f"{path}: Fig. 6 grid results not found; expected the output of "
                            "`python -m pipeline.sweep`")
        raw = json.loads(path.read_text())
        return cls(**{**raw, "points": [GridResult(**p) for p in raw["points"]]})


def empty_study(config: ProjectConfig, validation: Mapping[str, Any]) -> GridStudy:
    """The record of a profile without a grid (``sweep.fig6.values: {}``)."""
    sweep = config.sweep
    return GridStudy(sweep.name, "", config.profile, sweep.train_set, sweep.base_variant,
                     dict(validation), grid_epochs(config), list(sweep.fig6.seeds), {}, {}, 0.0,
                     0, [])


# --------------------------------------------------------------------------------------------
# The Tune grid
# --------------------------------------------------------------------------------------------


def run_grid(config: ProjectConfig, ctx: Any, points: list[GridPoint], *, storage: str,
             shared_fs: bool, resources: Mapping[str, float], resume: bool) -> GridStudy:
    """Run (or with ``resume`` continue) the grid's trials on the connected Ray; return them.

    Called by :func:`pipeline.sweep.search.run_sweep` inside its Ray session and MLflow run; ``ctx`` is
    the sweep's :class:`~pipeline.sweep.trial.TrialContext` (data, validation split, tracking).
    """
    from ray import tune

    from pipeline.sweep.trial import (
        collect_trials,
        grid_trial,
        restored_tuner,
        run_config,
        start_or_restore,
        total_wall_seconds,
    )

    sweep = config.sweep
    epochs = grid_epochs(config)
    name = f"fig6-{sweep.name}-{grid_fingerprint(config)}"
    exp_path = f"{storage.rstrip('/')}/{name}"
    ctx = dataclasses.replace(ctx, epochs=epochs,
                              runs_root=f"{exp_path}/trial_runs" if shared_fs else None)
    trainable = tune.with_resources(tune.with_parameters(grid_trial, ctx=ctx), dict(resources))
    t0 = time.perf_counter()
    if start_or_restore(exp_path, resume, shared_fs):
        tuner = restored_tuner(exp_path, trainable, f"the Fig. 6 grid {name}")
    else:
        log.info("Fig. 6 grid %s: %d trials of %d epochs (%d configurations x %d seeds), "
                 "storage %s", name, len(points), epochs, len(points) // len(sweep.fig6.seeds),
                 len(sweep.fig6.seeds), exp_path)
        tuner = tune.Tuner(
            trainable,
            param_space={"point": tune.grid_search([p.tune_config() for p in points])},
            tune_config=tune.TuneConfig(num_samples=1, reuse_actors=True,
                                        max_concurrent_trials=sweep.max_concurrent_trials,
                                        trial_dirname_creator=_trial_dirname),
            run_config=run_config(name, storage, config))
    trials = collect_trials(tuner.fit(), epochs)
    base = base_knobs(config)
    return GridStudy(
        name=name, experiment_path=exp_path, profile=config.profile, train_set=sweep.train_set,
        base_variant=sweep.base_variant, validation=ctx.validation.summary(), epochs=epochs,
        seeds=list(sweep.fig6.seeds),
        values={k: list(v) for k, v in sweep.fig6.values.items()},
        base={k: base[k] for k in sweep.fig6.values},
        duration_s=round(total_wall_seconds(exp_path, shared_fs, time.perf_counter() - t0), 1),
        num_nodes=len({n for t in trials for n in t["nodes"]}),
        points=sorted((_result(t) for t in trials), key=_order(points)))


def _result(trial: Mapping[str, Any]) -> GridResult:
    point = trial["knobs"]["point"]
    return GridResult(knob=point["knob"], value=point["value"], seed=point["seed"],
                      trial_id=trial["trial_id"], status=trial["status"], error=trial["error"],
                      epochs=trial["epochs"], mAP=trial[METRIC], R1=trial["R1"],
                      curve=trial["curve"], resumed_from_epoch=trial["resumed_from_epoch"])


def _order(points: list[GridPoint]) -> Any:
    """Sort key: the grid's own order (base first, knobs as listed, values as listed, seeds)."""
    index = {(p.label, p.seed): i for i, p in enumerate(points)}
    return lambda r: index.get((GridPoint(r.knob, r.value, r.seed).label, r.seed), len(index))


def _trial_dirname(trial: Any) -> str:
    """Tune's folder of a grid trial: its id, knob, value and seed (a module function, not a
    lambda, so ``Tuner.restore`` can unpickle the settings)."""
    point = trial.config["point"]
    label = "".join(c if c.isalnum() or c in "=.-_" else "_" for c in point["label"])
    return f"{trial.trial_id}-{label}-s{point['seed']}"
