"""The sweep's search space over the paper's Fig. 6 knobs, and its best configuration as params data.

The knobs are fields of :class:`~ddrn.config.ModelConfig` (codebook size ``num_embeddings`` = x,
Gumbel temperature ``tau``, ``sampling``) and :class:`~ddrn.config.LossConfig` (``margin_head`` =
the loss family, sub-centres ``k``, ``margin``, ``scale``); ``params.yaml``'s ``sweep.space`` says
which are searched and over what range. The space is define-by-run, so a knob exists only where it
means something: ``k`` for the sub-centre heads, ``tau`` for Gumbel sampling, ``margin``/``scale``
for a margin head.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from ddrn.config import (
    LossConfig,
    ModelConfig,
    check_codebook_fits,
    check_orthogonal_needs_codebook,
    replace,
)
from ddrn.errors import ConfigError
from pipeline.params import ExperimentSpec, ProjectConfig, SearchDim

METRIC = "mAP"
"""What the sweep maximises: mAP (percent) on the validation identities' query/gallery
(held-out training identities, :mod:`ddrn.data.validation`; never the test split)."""

CONDITIONS: dict[str, tuple[str, tuple[Any, ...]]] = {
    "k": ("margin_head", ("subcenter", "hs_arcface")),
    "tau": ("sampling", ("gumbel",)),
    "margin": ("margin_head", ("arcface", "subcenter", "hs_arcface")),
    "scale": ("margin_head", ("arcface", "subcenter", "hs_arcface")),
}
"""knob -> (parent knob, parent values for which the knob exists): the conditional space."""

_MODEL_FIELDS = frozenset(f.name for f in dataclasses.fields(ModelConfig))
_LOSS_FIELDS = frozenset(f.name for f in dataclasses.fields(LossConfig))


def knob_distribution(dim: SearchDim) -> Any:
    """The Optuna distribution of one knob (used by the sampler and the post-hoc importance study)."""
    import optuna.distributions as d

    if dim.choices is not None:
        return d.CategoricalDistribution(list(dim.choices))
    if dim.integer:
        return d.IntDistribution(int(dim.low), int(dim.high), log=dim.log)
    return d.FloatDistribution(float(dim.low), float(dim.high), log=dim.log)


def active_knobs(space: Mapping[str, SearchDim], base: Mapping[str, Any],
                 chosen: Mapping[str, Any]) -> list[str]:
    """Knobs of ``space`` that exist given the values chosen so far (parents before children).

    A child whose parent is not searched follows the parent's value in ``base`` (the base variant).
    """
    order = sorted(space, key=lambda k: k in CONDITIONS)  # unconditional knobs (parents) first
    active = []
    for knob in order:
        if knob in CONDITIONS:
            parent, allowed = CONDITIONS[knob]
            if chosen.get(parent, base.get(parent)) not in allowed:
                continue
        active.append(knob)
    return active


@dataclasses.dataclass(frozen=True)
class ConditionalSpace:
    """A define-by-run Optuna space: ``space(trial)`` suggests only the knobs that exist.

    A class rather than a closure so Tune can pickle it with the searcher's state (for
    ``Tuner.restore``).
    """

    space: Mapping[str, SearchDim]
    base: Mapping[str, Any]

    def __call__(self, trial: Any) -> None:
        chosen: dict[str, Any] = {}
        for knob in sorted(self.space, key=lambda k: k in CONDITIONS):  # parents first
            if knob not in active_knobs(self.space, self.base, chosen):
                continue
            dim = self.space[knob]
            if dim.choices is not None:
                chosen[knob] = trial.suggest_categorical(knob, list(dim.choices))
            elif dim.integer:
                chosen[knob] = trial.suggest_int(knob, int(dim.low), int(dim.high), log=dim.log)
            else:
                chosen[knob] = trial.suggest_float(knob, dim.low, dim.high, log=dim.log)
        return None


def define_space(space: Mapping[str, SearchDim], base: Mapping[str, Any]) -> ConditionalSpace:
    """The define-by-run space of ``space``; unsearched parents take their ``base`` value."""
    return ConditionalSpace(dict(space), dict(base))


def base_knobs(config: ProjectConfig) -> dict[str, Any]:
    """The base variant's value of every model and loss field (what unsampled knobs keep)."""
    sweep = config.sweep
    spec = config.resolve(sweep.train_set, sweep.base_variant, sweep.seed)
    return {**dataclasses.asdict(spec.loss), **dataclasses.asdict(spec.model)}


def apply_knobs(config: ProjectConfig, knobs: Mapping[str, Any], name: str, *,
                seed: int | None = None, epochs: int | None = None,
                key: str | None = None) -> ExperimentSpec:
    """The base variant's :class:`~pipeline.params.ExperimentSpec` with ``knobs`` applied, validated.

    The trial trains for ``epochs`` (default ``sweep.max_epochs``, ASHA's ``max_t``), so its
    learning-rate schedule is that of a full-length run even when ASHA stops it early; ``seed``
    (default ``sweep.seed``) seeds its initialisation and sampler. ``key`` names the params entry
    an invalid value is reported under (default ``profiles.<profile>.sweep``).
    """
    sweep = config.sweep
    spec = config.resolve(sweep.train_set, sweep.base_variant,
                          sweep.seed if seed is None else seed)
    model_kw = {k: v for k, v in knobs.items() if k in _MODEL_FIELDS}
    loss_kw = {k: v for k, v in knobs.items() if k in _LOSS_FIELDS}
    unknown = set(knobs) - set(model_kw) - set(loss_kw)
    if unknown:
        raise ConfigError(f"{config.source}: sweep knob {sorted(unknown)[0]!r} is not a model or "
                          "loss field")
    epochs = epochs or sweep.max_epochs or spec.train.epochs
    warmup = min(spec.train.warmup_epochs, epochs - 1)
    prefix = key or f"profiles.{config.profile}.sweep"
    try:
        spec = dataclasses.replace(
            spec, name=name, group=f"sweep:{sweep.name}",
            model=replace(spec.model, f"{prefix} (model)", **model_kw),
            loss=replace(spec.loss, f"{prefix} (loss)", **loss_kw),
            train=replace(spec.train, f"{prefix} (train)", epochs=epochs, warmup_epochs=warmup))
        check_codebook_fits(spec.model, spec.loss, f"{prefix} (knobs {dict(knobs)})")
        check_orthogonal_needs_codebook(spec.model, spec.loss, f"{prefix} (knobs {dict(knobs)})")
    except ConfigError as exc:
        raise ConfigError(f"{config.source}: {exc}") from None
    return spec


def sweep_fingerprint(config: ProjectConfig) -> str:
    """Hash of everything that defines the sweep, so ``--resume`` never continues a different one."""
    sweep = config.sweep
    spec = apply_knobs(config, {}, "fingerprint")
    # Budgets and concurrency may change between an interruption and --resume; the trials may not.
    # The Fig. 6 grid is a study of its own (pipeline.sweep.grid.grid_fingerprint).
    settings = {**dataclasses.asdict(sweep), "num_samples": 0, "time_budget_s": None,
                "max_concurrent_trials": 1}
    settings.pop("fig6")
    payload = {"sweep": settings, "experiment": config.fingerprint(spec)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:8]


def best_params_document(config: ProjectConfig, knobs: Mapping[str, Any],
                         note: str | None = None) -> dict[str, Any]:
    """A ``params.yaml``-shaped ``variants:`` entry for the best knobs, on top of the base variant.

    ``note`` (e.g. the validation score it was chosen on) ends the variant's description.
    """
    sweep = config.sweep
    base = config.variants[sweep.base_variant]
    model = {**base.model, **{k: v for k, v in knobs.items() if k in _MODEL_FIELDS}}
    loss = {**base.loss, **{k: v for k, v in knobs.items() if k in _LOSS_FIELDS}}
    entry: dict[str, Any] = {"description": f"best of sweep {sweep.name!r} "
                             f"({sweep.base_variant} + sampled Fig. 6 knobs)"
                             + (f", {note}" if note else "")}
    if model:
        entry["model"] = model
    if loss:
        entry["loss"] = loss
    return {"variants": {f"{sweep.base_variant}_sweep_best": plain(entry)}}


def dvc_exp_command(config: ProjectConfig, knobs: Mapping[str, Any]) -> str:
    """``dvc exp run -S ...`` that trains the base variant with the best knobs as an experiment."""
    variant = config.sweep.base_variant
    sets = []
    for knob, value in sorted(knobs.items()):
        section = "model" if knob in _MODEL_FIELDS else "loss"
        # '++' (Hydra override syntax) adds the key when the variant does not set it yet.
        sets.append(f"-S '++variants.{variant}.{section}.{knob}={plain(value)}'")
    return " ".join(["dvc exp run", *sets])


def plain(value: Any) -> Any:
    """YAML/JSON-friendly copy: numpy scalars to Python, floats rounded to 6 significant digits."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        return float(f"{value:.6g}")
    return value


