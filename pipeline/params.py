"""The project's ``params.yaml``: profiles, variants, experiments and the pipeline's sections.

``params.yaml`` has three top-level keys::

    profile: demo            # the active profile
    variants: {...}          # model/loss variants shared by every profile (Table 2 rows, Fig. 6, baselines)
    profiles:
      demo: {...}            # each profile overrides the defaults, section by section
      paper: {...}

A profile holds the library's sections (:mod:`ddrn.config`: datasets, input, model, loss, train,
evaluation; their defaults *are* the paper's recipe, so the ``paper`` profile only names its
datasets) and the pipeline's own, defined here: ``ray``, ``tracking``, ``report``, ``sweep``,
``pretrain`` and ``experiments``. Every reader goes through :func:`load_config`, which refuses
unknown keys, wrong types and impossible values with a one-line
:class:`~ddrn.errors.ConfigError` naming the key, before any work starts.
"""

import dataclasses
import functools
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml

from ddrn.code_digest import training_code_digest
from ddrn.config import (
    DATASET_NAMES,
    Bool,
    DatasetConfig,
    EvaluationConfig,
    Float,
    InputConfig,
    Int,
    LossConfig,
    ModelConfig,
    NonEmptyStr,
    NonNegativeInt,
    PositiveInt,
    Str,
    SyntheticConfig,
    TrainConfig,
    build,
    check_codebook_fits,
    check_orthogonal_needs_codebook,
    check_overrides,
    must,
    replace,
    require,
    rule,
    section,
)
from ddrn.errors import ConfigError
from pipeline.file_digest import weights_file_digest

PRETRAIN_SET = "pretrain_corpus"
"""The name the pretraining corpus goes by (its packed folder, its run's name)."""

KNOB_TYPES: dict[str, Any] = {**typing.get_type_hints(ModelConfig, include_extras=True),
                              **typing.get_type_hints(LossConfig, include_extras=True)}
"""Every model and loss field, the knobs a sweep or the Fig. 6 study may vary."""


def _nested_rule(check: Any) -> None:
    """Run a ``ddrn.config`` check inside a section's rule: its ConfigError becomes the rule's
    ValueError (pydantic then names the section's key in front of it)."""
    try:
        check()
    except ConfigError as exc:
        raise ValueError(f".{exc}") from None


@section
class ExperimentGroup:
    """A grid of experiments: one training set x variants x seeds, each tested on ``test_sets``."""

    train_set: Str = "occluded_duke"
    test_sets: Annotated[tuple[Str, ...], must(len, "at least one test set")] = ("occluded_duke",)
    variants: Annotated[tuple[Str, ...], must(len, "at least one variant")] = ("vit_baseline",)
    seeds: Annotated[tuple[Int, ...], must(len, "at least one seed")] = (0,)


@section
class VariantConfig:
    """A variant is data: overrides of the profile's ``model`` and ``loss`` sections, and of its
    ``train`` section where a method has its own recipe (the CNN baseline's precision)."""

    description: Str = ""
    table2_index: Int | None = None
    model: dict[str, Any] = field(default_factory=dict)
    loss: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)

    @rule
    def _rules(self) -> "VariantConfig":
        _nested_rule(lambda: check_overrides(ModelConfig, self.model, "model"))
        _nested_rule(lambda: check_overrides(LossConfig, self.loss, "loss"))
        _nested_rule(lambda: check_overrides(TrainConfig, self.train, "train"))
        return self


@section
class RayConfig:
    """Resources of one training trial and how many run at once (0 GPUs on CPU-only clusters).

    ``num_cpus`` (null: every core) and ``object_store_mb`` size the private local Ray the train
    stage starts when ``RAY_ADDRESS`` is unset; on an existing cluster they are ignored.
    ``storage_path`` holds Tune's experiment state and trial checkpoints (relative paths are taken
    from the repository root; on a multi-node cluster it must be shared storage or ``s3://...``).
    """

    cpus_per_trial: Annotated[Float, must(lambda v: v > 0, "a value > 0")] = 1.0
    gpus_per_trial: Annotated[Float, must(lambda v: v >= 0,
                                          "a value >= 0 (fractions allowed)")] = 0.0
    max_concurrent_trials: PositiveInt = 2
    max_failures: NonNegativeInt = 2
    num_cpus: PositiveInt | None = None
    object_store_mb: Annotated[Int, must(lambda v: v >= 64, "at least 64 (MiB)")] = 256
    storage_path: NonEmptyStr = ".ray_results"


@section
class TrackingConfig:
    """MLflow: ``MLFLOW_TRACKING_URI`` in the environment wins over ``tracking_uri``.

    ``enabled: false`` turns tracking off. ``log_checkpoints`` uploads each trial's final weights
    (``model.pt``) as a run artifact.
    """

    experiment_name: NonEmptyStr = "ddrn"
    tracking_uri: Annotated[Str, must(bool, "a URI such as sqlite:///mlflow.db or "
                                            "http://host:5000")] = "sqlite:///mlflow.db"
    enabled: Bool = True
    log_checkpoints: Bool = True


@section
class ReportConfig:
    """What the report stage draws."""

    tsne_ids: PositiveInt = 16
    topk: PositiveInt = 5
    retrieval_queries: PositiveInt = 4


@section
class SearchDim:
    """One searched knob: ``choices`` (categorical) or a ``low``..``high`` range.

    ``log: true`` samples the range on a log scale; ``integer: true`` samples whole numbers.
    """

    choices: tuple[Any, ...] | None = None
    low: Float | None = None
    high: Float | None = None
    log: Bool = False
    integer: Bool = False

    @rule
    def _rules(self) -> "SearchDim":
        if self.choices is not None:
            require(len(self.choices) >= 1 and self.low is None and self.high is None, "",
                    "either a non-empty 'choices' list or 'low'/'high', not both", self.choices)
            return self
        require(self.low is not None and self.high is not None and self.low < self.high, "",
                "'choices: [...]' or 'low' < 'high'", (self.low, self.high))
        require(not self.log or (self.low or 0) > 0, "low", "a value > 0 with log: true",
                self.low)
        return self


@section
class ValidationConfig:
    """The sweep's held-out identities (:func:`ddrn.data.split_validation`).

    ``fraction`` of the training set's identities (drawn once with ``seed``) are held out of the
    sweep's training and scored as query/gallery; the test split is never read by the sweep.
    """

    fraction: Annotated[Float, must(lambda v: 0.0 < v < 1.0, "a share in (0, 1)")] = 0.2
    seed: Int = 0


def _default_fig6_values() -> dict[str, tuple[Any, ...]]:
    return {"num_embeddings": (32, 64, 128, 256), "tau": (0.05, 0.1, 0.5, 1.0),
            "k": (1, 2, 3, 4), "margin_head": ("arcface", "subcenter", "hs_arcface"),
            "sampling": ("default", "gumbel")}


def _distinct(values: tuple[Any, ...]) -> bool:
    return len(values) >= 1 and len(set(values)) == len(values)


@section
class Fig6Config:
    """The paper's Fig. 6 study: one knob at a time around the sweep's base variant.

    Each knob of ``values`` (a model or loss field) takes each listed value while every other
    knob keeps the base variant's; every configuration (the base one once, shared by all knobs)
    trains with each of ``seeds`` for ``epochs`` (null: the sweep's ``max_epochs``) and is scored
    on the sweep's validation identities (:mod:`pipeline.sweep.grid`). ``values: {}`` turns the
    study off.
    """

    values: dict[str, tuple[Any, ...]] = field(default_factory=_default_fig6_values)
    seeds: Annotated[tuple[Int, ...], must(_distinct, "a non-empty list of distinct integers")] = (0, 1)
    epochs: PositiveInt | None = None

    @rule
    def _rules(self) -> "Fig6Config":
        for knob, values in self.values.items():
            require(knob in KNOB_TYPES, f"values.{knob}", "a model or loss field (e.g. "
                    "num_embeddings, tau, k, margin_head, sampling)", knob)
            for i, value in enumerate(values):
                _nested_rule(functools.partial(build, KNOB_TYPES[knob], value,
                                               f"values.{knob}[{i}]"))
            require(_distinct(values), f"values.{knob}", "a non-empty list of distinct values",
                    list(values))
        return self


@section
class SweepConfig:
    """Ray Tune + Optuna sweep over the Fig. 6 knobs (see :mod:`pipeline.sweep.search`).

    Every trial trains ``base_variant`` on ``train_set`` with the sampled knobs replacing the
    variant's values, for at most ``max_epochs`` (null: the profile's ``train.epochs``), on the
    identities of ``train_set`` that ``validation`` does not hold out, and is scored by mAP on the
    held-out identities' query/gallery every ``eval_every`` epochs (never on the test split); ASHA
    stops the weak ones after ``grace_period`` epochs. Resources per trial, retries and Tune's
    storage come from the ``ray`` section (its ``storage_path`` must be shared by every node of a
    cluster).
    """

    name: Annotated[Str, must(lambda v: bool(v) and "/" not in v,
                              "a non-empty name without '/'")] = "fig6"
    train_set: Str = "occluded_duke"
    base_variant: Str = "ddrn"
    num_samples: PositiveInt = 16
    max_concurrent_trials: PositiveInt = 2
    time_budget_s: Annotated[Float | None, must(lambda v: v is None or v > 0,
                                                "null or seconds > 0")] = None
    max_epochs: PositiveInt | None = None
    eval_every: PositiveInt = 1
    grace_period: PositiveInt = 1
    reduction_factor: Annotated[Int, must(lambda v: v >= 2, "an integer >= 2")] = 2
    seed: Int = 0
    space: dict[str, SearchDim] = field(default_factory=dict)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    fig6: Fig6Config = field(default_factory=Fig6Config)

    @rule
    def _rules(self) -> "SweepConfig":
        for knob in self.space:
            require(knob in KNOB_TYPES, f"space.{knob}", "a model or loss field (e.g. "
                    "num_embeddings, tau, sampling, margin_head, k, margin, scale)", knob)
        return self


@section
class PretrainConfig:
    """How the profile's ViT backbone gets its starting weights (the ``pretrain`` stage).

    The paper fine-tunes an ImageNet ViT-B/16: ``model.pretrained`` names timm's file and
    ``corpus`` stays null (the stage then only checks that the file is there). A profile that
    cannot use ImageNet weights (the demo's tiny ViT has no published checkpoint) sets ``corpus``:
    the stage generates that synthetic corpus (its own seed, identities disjoint from every
    re-ID set, no occluders), trains the profile's ViT on it with identity classification and
    triplet loss (the ``train`` overrides applied to the profile's ``train``), and writes the
    backbone to ``output`` as a timm state dict, the format ``model.pretrained`` reads.
    """

    corpus: SyntheticConfig | None = None
    train: dict[str, Any] = field(default_factory=dict)
    output: Annotated[Str, must(lambda v: v.endswith((".pth", ".pt")),
                                "a .pth file path")] = "data/pretrained/vit_backbone.pth"
    seed: Int = 0

    @rule
    def _rules(self) -> "PretrainConfig":
        _nested_rule(lambda: check_overrides(TrainConfig, self.train, "train"))
        return self


@section
class ProfileConfig:
    """Everything one profile configures; each section defaults to the paper's recipe."""

    # The library's sections (ddrn.config): what one model is and how it trains and is scored.
    input: InputConfig = field(default_factory=InputConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    # The pipeline's: which data and experiments, and where and how they run.
    seed: Int = 1234
    datasets: dict[str, DatasetConfig] = field(default_factory=dict)
    experiments: dict[str, ExperimentGroup] = field(default_factory=dict)
    ray: RayConfig = field(default_factory=RayConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)

    @rule
    def _rules(self) -> "ProfileConfig":
        for name in self.datasets:
            if name not in DATASET_NAMES:
                raise ValueError(f".datasets.{name}: unknown dataset; expected one of: "
                                 f"{', '.join(DATASET_NAMES)}")
        return self


@dataclass(frozen=True)
class ExperimentSpec:
    """One experiment: a training set, a variant and a seed, with its resolved model and loss."""

    name: str
    group: str
    train_set: str
    test_sets: tuple[str, ...]
    variant: str
    seed: int
    model: ModelConfig
    loss: LossConfig
    train: TrainConfig

    def fingerprint(self, input_cfg: InputConfig) -> str:
        """A short hash of everything that determines the trained weights (not the test sets)."""
        payload = {
            "train_set": self.train_set,
            "seed": self.seed,
            "model": dataclasses.asdict(self.model),
            "loss": dataclasses.asdict(self.loss),
            "train": dataclasses.asdict(self.train),
            "input": dataclasses.asdict(input_cfg),
        }
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class ProjectConfig:
    """The validated configuration of one profile, plus the shared variants."""

    profile: str
    variants: dict[str, VariantConfig]
    cfg: ProfileConfig
    source: str = "params.yaml"

    # Shortcuts so callers write ``config.train`` rather than ``config.cfg.train``.
    def __getattr__(self, name: str) -> Any:
        if name in {f.name for f in dataclasses.fields(ProfileConfig)}:
            return getattr(self.cfg, name)
        raise AttributeError(name)

    def experiments_list(self) -> list[ExperimentSpec]:
        """Every experiment of the profile, deduplicated and sorted by name.

        The same (training set, variant, seed) named by two groups is trained once; its test sets
        are the union of both groups'.
        """
        by_name: dict[str, ExperimentSpec] = {}
        for group_name, group in self.cfg.experiments.items():
            for variant in group.variants:
                for seed in group.seeds:
                    spec = self.resolve(group.train_set, variant, seed, group_name, group.test_sets)
                    if spec.name in by_name:
                        prev = by_name[spec.name]
                        merged = tuple(dict.fromkeys(prev.test_sets + spec.test_sets))
                        spec = dataclasses.replace(prev, test_sets=merged)
                    by_name[spec.name] = spec
        return [by_name[k] for k in sorted(by_name)]

    def experiment(self, name: str) -> ExperimentSpec:
        """The experiment called ``name``; a :class:`ConfigError` lists the known names otherwise."""
        for spec in self.experiments_list():
            if spec.name == name:
                return spec
        known = ", ".join(s.name for s in self.experiments_list())
        raise ConfigError(f"{self.source}: no experiment named {name!r} in profile "
                          f"{self.profile!r}; expected one of: {known}")

    def fingerprint(self, spec: ExperimentSpec) -> str:
        """A short hash of everything that determines ``spec``'s trained weights in this profile.

        :meth:`ExperimentSpec.fingerprint` (model, loss, train, input, seed) plus the training
        set's :class:`DatasetConfig`, so regenerating the synthetic training data with other sizes
        also retrains (the weights depend on the images, not only on the recipe), and the digest
        of the training code (:mod:`ddrn.code_digest`), so a code change retrains too. This is the
        fingerprint the pipeline writes into ``runs/<exp>/done.json``, the metrics files and the
        MLflow tags.
        """
        dataset = (self.cfg.pretrain.corpus if spec.train_set == PRETRAIN_SET
                   else self.cfg.datasets.get(spec.train_set))
        payload = {"spec": spec.fingerprint(self.cfg.input),
                   "train_set": dataclasses.asdict(dataset) if dataset is not None else None,
                   "code": training_code_digest()}
        if spec.model.arch == "vit" and spec.model.pretrained is not None:
            # The path alone would keep a run trained from an older pretrain output "up to date".
            payload["pretrained"] = weights_file_digest(spec.model.pretrained)
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def pretrain_spec(self) -> ExperimentSpec:
        """The ``pretrain`` stage's run: the profile's ViT without any DDRN part (no Embedding
        Space, global feature, no JPM/SIE, from random weights), ID + triplet loss, the profile's
        ``train`` with ``pretrain.train`` applied, on the corpus ``pretrain.corpus``."""
        pre, key = self.cfg.pretrain, f"{self.source}: profiles.{self.profile}"
        model = replace(self.cfg.model, f"{key}.model", arch="vit", pretrained=None,
                        embedding_space=False, id_feature="global", jpm=False, sie=False)
        loss = replace(self.cfg.loss, f"{key}.loss", margin_head="none", orthogonal_weight=0.0)
        train = replace(self.cfg.train, f"{key}.pretrain.train", **pre.train)
        return ExperimentSpec(name=f"{PRETRAIN_SET}-s{pre.seed}", group="pretrain",
                              train_set=PRETRAIN_SET, test_sets=(), variant="pretrain",
                              seed=pre.seed, model=model, loss=loss, train=train)

    def resolve(self, train_set: str, variant: str, seed: int, group: str = "",
                test_sets: tuple[str, ...] = ()) -> ExperimentSpec:
        """Apply a variant's overrides to the profile's model, loss and train sections."""
        if variant not in self.variants:
            raise ConfigError(f"{self.source}: unknown variant {variant!r}; expected one of: "
                              f"{', '.join(sorted(self.variants))}")
        v, applied = self.variants[variant], f"(applied to profiles.{self.profile})"
        model = replace(self.cfg.model, f"{self.source}: variants.{variant}.model {applied}",
                        **v.model)
        loss = replace(self.cfg.loss, f"{self.source}: variants.{variant}.loss {applied}",
                       **v.loss)
        train = replace(self.cfg.train, f"{self.source}: variants.{variant}.train {applied}",
                        **v.train)
        return ExperimentSpec(
            name=f"{train_set}-{variant}-s{seed}", group=group, train_set=train_set,
            test_sets=tuple(test_sets) or (train_set,), variant=variant, seed=seed,
            model=model, loss=loss, train=train,
        )


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_config(path: str | Path = "params.yaml", profile: str | None = None) -> ProjectConfig:
    """Read ``params.yaml``, pick a profile (argument, else the file's ``profile``) and validate it.

    Raises:
        ConfigError: one line naming the file and key, for a missing file, unknown key, wrong type
            or impossible value.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: parameters file not found; expected a params.yaml with "
                          "'profile', 'variants' and 'profiles'")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    return config_from_dict(raw, profile=profile, source=str(path))


def config_from_dict(raw: dict[str, Any], profile: str | None = None,
                     source: str = "params.yaml") -> ProjectConfig:
    """Build a :class:`ProjectConfig` from an already-parsed ``params.yaml`` mapping."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    unknown = set(raw) - {"profile", "variants", "profiles"}
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key {sorted(unknown)[0]!r}; expected "
                          "'profile', 'variants' and 'profiles'")
    profiles = raw.get("profiles") or {}
    if not isinstance(profiles, dict) or not profiles:
        raise ConfigError(f"{source}: 'profiles' must map profile names to their settings")
    name = profile if profile is not None else raw.get("profile")
    if not isinstance(name, str) or name not in profiles:
        raise ConfigError(f"{source}: profile {name!r} not found; expected one of: "
                          f"{', '.join(sorted(profiles))}")
    try:
        variants = build(dict[str, VariantConfig], raw.get("variants") or {}, "variants")
        cfg = build(ProfileConfig, profiles[name] or {}, f"profiles.{name}")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    config = ProjectConfig(profile=name, variants=variants, cfg=cfg, source=source)
    _check_references(config)
    return config


def _check_references(config: ProjectConfig) -> None:
    """What no single section can check: names of datasets and variants, and every experiment
    resolved."""
    source, prefix = config.source, f"profiles.{config.profile}"
    known = ", ".join(config.cfg.datasets) or "(none)"
    sweep = config.cfg.sweep
    for gname, group in config.cfg.experiments.items():
        for ds in (group.train_set, *group.test_sets):
            if ds not in config.cfg.datasets:
                raise ConfigError(f"{source}: {prefix}.experiments.{gname}: dataset {ds!r} is not "
                                  f"in {prefix}.datasets; expected one of: {known}")
        for variant in group.variants:
            if variant not in config.variants:
                raise ConfigError(f"{source}: {prefix}.experiments.{gname}.variants: unknown "
                                  f"variant {variant!r}; expected one of: "
                                  f"{', '.join(sorted(config.variants))}")
    # Resolving every experiment validates each variant's overrides against the profile.
    for spec in config.experiments_list():
        where = f"{source}: variants.{spec.variant} (applied to {prefix})"
        check_codebook_fits(spec.model, spec.loss, where)
        check_orthogonal_needs_codebook(spec.model, spec.loss, where)
    if (config.cfg.experiments or sweep.space) and sweep.base_variant not in config.variants:
        raise ConfigError(f"{source}: {prefix}.sweep.base_variant: unknown variant "
                          f"{sweep.base_variant!r}")
    if sweep.space and sweep.train_set not in config.cfg.datasets:
        raise ConfigError(f"{source}: {prefix}.sweep.train_set: dataset {sweep.train_set!r} is not "
                          f"in {prefix}.datasets; expected one of: {known}")
