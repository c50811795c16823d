"""The library's typed configuration: model, loss, data, training and evaluation sections.

Each section is a frozen pydantic dataclass: unknown keys, wrong types and impossible values are
refused when it is built, by :func:`build` (from parsed YAML) or by ``dataclasses.replace``
(in code), with a one-line :class:`~ddrn.errors.ConfigError` naming the key, e.g.
``profiles.demo.model.tau: expected a temperature > 0, got -1.0``. Scalars are strict (``"yes"``
is no boolean, ``"3"`` no integer); the one coercion is YAML 1.2's exponent numbers, which PyYAML
(YAML 1.1) reads as strings (``3e-3``).

The defaults below *are* the paper's recipe (TransReID's, which DDRN builds on). How a project
picks and combines sections (``params.yaml``'s profiles, variants and experiments, and the
pipeline's own sections) is :mod:`pipeline.params`; this package knows nothing of it.
"""

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import field
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Strict,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic import dataclasses as pydantic_dataclasses
from pydantic_core import PydanticCustomError

from ddrn.errors import ConfigError

DATASET_NAMES = ("market1501", "dukemtmc", "occluded_duke", "occluded_reid", "partial_reid")
"""The five dataset formats the paper evaluates on; ``datasets`` keys must be among them."""

T = TypeVar("T")

section = pydantic_dataclasses.dataclass(
    frozen=True, config=ConfigDict(extra="forbid", allow_inf_nan=False, revalidate_instances="never"))
"""Decorator of every configuration section (pipeline ones included): a frozen standard dataclass
that pydantic validates on construction."""

rule = model_validator(mode="after")
"""Decorator of a section's cross-field rules (a method returning ``self``, raising through
:func:`require`)."""


# --------------------------------------------------------------------------------------------
# Field types: strict scalars, and constraints whose message says what was expected
# --------------------------------------------------------------------------------------------


def must(ok: Callable[[Any], bool], expected: str) -> AfterValidator:
    """A constraint: values for which ``ok`` is false are refused as "expected ``expected``"."""

    def check(value: Any) -> Any:
        if not ok(value):
            raise PydanticCustomError("expected", "expected {expected}", {"expected": expected})
        return value

    return AfterValidator(check)


_YAML12_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)")
"""A number in exponent notation without a dot (``3e-3``): a float in YAML 1.2, a string in 1.1."""


def _yaml12_float(value: Any) -> Any:
    return float(value) if isinstance(value, str) and _YAML12_FLOAT.fullmatch(value.strip()) else value


Int = Annotated[int, Strict()]
Float = Annotated[float, BeforeValidator(_yaml12_float), Strict()]
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]
PositiveInt = Annotated[Int, must(lambda v: v >= 1, "an integer >= 1")]
NonNegativeInt = Annotated[Int, must(lambda v: v >= 0, "an integer >= 0")]
Fraction = Annotated[Float, must(lambda v: 0.0 <= v <= 1.0, "a fraction in [0, 1]")]
Probability = Annotated[Float, must(lambda v: 0.0 <= v <= 1.0, "a probability in [0, 1]")]
Weight = Annotated[Float, must(lambda v: v >= 0, "a weight >= 0")]
NonEmptyStr = Annotated[Str, must(bool, "a non-empty string")]


def require(ok: bool, name: str, expected: str, got: Any) -> None:
    """A cross-field rule of a section; ``name`` is the field ("": the section itself)."""
    if not ok:
        raise ValueError(f"{'.' + name if name else ''}: expected {expected}, got {got!r}")


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


@section
class SyntheticConfig:
    """Size and difficulty of one generated synthetic set (see :mod:`ddrn.data.synthetic`)."""

    num_train_ids: PositiveInt = 48
    num_test_ids: PositiveInt = 48
    num_distractor_ids: NonNegativeInt = 8
    images_per_id: PositiveInt = 8
    num_cameras: PositiveInt = 6
    height: Int = 128
    width: Int = 64
    query_occlusion: Fraction = 1.0
    gallery_occlusion: Fraction = 0.1
    train_occlusion: Fraction = 0.1
    occluded_area: tuple[Float, Float] = (0.3, 0.6)
    seed: Int = 0

    @rule
    def _rules(self) -> "SyntheticConfig":
        require(self.height >= 16 and self.width >= 8, "height/width",
                 "an image of at least 16x8 pixels", (self.height, self.width))
        lo, hi = self.occluded_area
        require(0.0 < lo <= hi < 1.0, "occluded_area", "[low, high] with 0 < low <= high < 1",
                 self.occluded_area)
        return self


def _is_sha256(value: str | None) -> bool:
    return value is None or (len(value) == 64 and all(c in "0123456789abcdef" for c in value.lower()))


@section
class DatasetConfig:
    """Where one dataset comes from.

    ``source`` is ``synthetic`` (generated by the download stage), a local archive or folder, or an
    ``http(s)://`` URL; ``sha256`` is checked when given.
    """

    source: Annotated[Str, must(bool, "'synthetic', a local path or a URL")] = "synthetic"
    sha256: Annotated[Str | None, must(_is_sha256, "64 hexadecimal characters")] = None
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@section
class InputConfig:
    """Image size and the training augmentations (TransReID's recipe)."""

    height: Int = 256
    width: Int = 128
    mean: tuple[Float, Float, Float] = (0.5, 0.5, 0.5)
    std: Annotated[tuple[Float, Float, Float],
                   must(lambda v: all(s > 0 for s in v), "positive values")] = (0.5, 0.5, 0.5)
    flip_prob: Probability = 0.5
    padding: NonNegativeInt = 10
    erasing_prob: Probability = 0.5

    @rule
    def _rules(self) -> "InputConfig":
        require(self.height >= 16 and self.width >= 8, "height/width",
                 "an input of at least 16x8 pixels", (self.height, self.width))
        return self


@section
class ModelConfig:
    """The network. Defaults: the paper's ViT-B/16 at stride 11 with DDRN's Embedding Space off.

    ``embed_dim``/``depth``/``num_heads`` left as ``None`` take the timm ``backbone``'s own values;
    setting them builds a smaller ViT of the same family (the ``demo`` profile).

    ``id_feature`` picks the CLS token the ID classifier reads: ``global`` (after the last block,
    TransReID's baseline) or ``local`` (after block N-1, the paper's "CLS token, which fuses local
    features"; the global CLS is then left to the margin head, Fig. 2). ``pretrained`` is a local
    timm ViT checkpoint (``.pth``/``.safetensors``), ``hub`` or an ``hf-hub:`` id;
    ``resnet_pretrained`` is the same for ``arch: resnet50`` (timm weights of ``cnn_backbone``).
    ``cnn_backbone`` is the timm ResNet the CNN baseline uses: ``resnet50`` is the bag-of-tricks
    baseline of the paper's comparison; the CPU demo uses ``resnet18`` (2.3x fewer FLOPs).
    ``jpm`` is TransReID's Jigsaw Patch Module (:mod:`ddrn.models.jpm`); ``pretrained`` may also
    be a TransReID checkpoint (its backbone weights, any stride or SIE).
    """

    arch: Literal["vit", "resnet50"] = "vit"
    backbone: Str = "vit_base_patch16_224"
    embed_dim: PositiveInt | None = None
    depth: PositiveInt | None = None
    num_heads: PositiveInt | None = None
    patch_size: PositiveInt = 16
    stride: Int = 11
    drop_path: Annotated[Float, must(lambda v: 0.0 <= v < 1.0, "a rate in [0, 1)")] = 0.1
    pretrained: Str | None = None
    sie: Bool = False
    sie_coef: Float = 3.0
    embedding_space: Bool = False
    num_embeddings: Annotated[Int, must(lambda v: v >= 2, "an integer >= 2")] = 128
    tau: Annotated[Float, must(lambda v: v > 0, "a temperature > 0")] = 0.1
    sampling: Literal["gumbel", "default"] = "gumbel"
    # Where the paper is silent, how the Embedding Space keeps its codes alive (measured in
    # docs/embedding_space_diagnostics.md; see ddrn/models/embedding_space.py).
    similarity: Literal["cosine", "dot"] = "cosine"
    train_index: Literal["argmax", "sample"] = "argmax"
    kmeans_init: Bool = True
    dead_code_threshold: Annotated[Float, must(lambda v: v >= 0, "a fraction of the uniform code "
                                                "share >= 0 (0: no restart)")] = 0.1
    restart_every: PositiveInt = 1
    codebook_weight_decay: Bool = False
    id_feature: Literal["global", "local"] = "global"
    resnet_pretrained: Str | None = None
    cnn_backbone: Literal["resnet18", "resnet34", "resnet50", "resnet101"] = "resnet50"
    jpm: Bool = False

    @rule
    def _rules(self) -> "ModelConfig":
        require(1 <= self.stride <= self.patch_size, "stride",
                 f"an integer in [1, patch_size={self.patch_size}]", self.stride)
        if self.depth is not None:
            require(self.depth >= 2 or not self.embedding_space, "depth",
                     "at least 2 blocks when embedding_space is on (it sits before the last block)",
                     self.depth)
        if self.embed_dim is not None and self.num_heads is not None:
            require(self.embed_dim % self.num_heads == 0, "embed_dim",
                     f"a multiple of num_heads={self.num_heads}", self.embed_dim)
        require(not self.jpm or not (self.embedding_space or self.id_feature == "local"), "jpm",
                 "false with embedding_space or id_feature: local (JPM is TransReID's own branch, "
                 "not combined with DDRN's)", self.jpm)
        return self


@section
class LossConfig:
    """Loss terms and their weights (combined in exactly one place, :mod:`ddrn.losses.criterion`).

    ``margin_head`` picks the angular-margin head on the global feature: ``none`` (the index-0
    baseline uses the plain ID classifier), ``arcface``, ``subcenter`` or ``hs_arcface``.
    ``margin`` is in radians. ``triplet_margin: null`` is the soft-margin triplet (TransReID's
    ``NO_MARGIN``).
    """

    id_weight: Weight = 1.0
    triplet_weight: Weight = 1.0
    triplet_margin: Annotated[Float | None, must(lambda v: v is None or v > 0,
                                                 "null (soft margin) or a margin > 0")] = None
    label_smoothing: Annotated[Float, must(lambda v: 0.0 <= v < 1.0, "a value in [0, 1)")] = 0.0
    margin_head: Literal["none", "arcface", "subcenter", "hs_arcface"] = "none"
    margin_weight: Weight = 1.0
    k: Annotated[Int, must(lambda v: v >= 1, "at least 1 sub-centre")] = 3
    margin: Annotated[Float, must(lambda v: 0.0 <= v < math.pi,
                                  "an angle in radians in [0, pi)")] = 0.2
    scale: Annotated[Float, must(lambda v: v > 0, "a scale > 0")] = 20.0
    orthogonal_weight: Weight = 0.0
    # HS-ArcFace routing in training (ddrn.losses.margin.HSArcFace): "hard" (the default, routing
    # by margin violation) or "marker" (by the marker's own argmax; measured to drift to level 1).
    hs_routing: Literal["hard", "marker"] = "hard"


def _is_device(value: str) -> bool:
    return value in ("auto", "cpu") or value.startswith("cuda")


@section
class TrainConfig:
    """The optimisation recipe (paper/TransReID defaults)."""

    epochs: PositiveInt = 120
    batch_size: Int = 64
    num_instances: PositiveInt = 4
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: Annotated[Float, must(lambda v: v > 0, "a learning rate > 0")] = 0.008
    momentum: Annotated[Float, must(lambda v: 0 <= v < 1, "a value in [0, 1)")] = 0.9
    weight_decay: Annotated[Float, must(lambda v: v >= 0, "a value >= 0")] = 1e-4
    bias_lr_factor: Annotated[Float, must(lambda v: v > 0, "a factor > 0")] = 2.0
    warmup_epochs: NonNegativeInt = 5
    warmup_lr_factor: Annotated[Float, must(lambda v: 0 < v <= 1, "a factor in (0, 1]")] = 0.01
    min_lr_factor: Annotated[Float, must(lambda v: 0 <= v <= 1, "a factor in [0, 1]")] = 0.002
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    compile: Bool = False
    checkpoint_every: PositiveInt = 1
    iters_per_epoch: PositiveInt | None = None
    device: Annotated[Str, must(_is_device, "'auto', 'cpu' or 'cuda[:N]'")] = "auto"

    @rule
    def _rules(self) -> "TrainConfig":
        require(self.batch_size >= 2 and self.batch_size % self.num_instances == 0, "batch_size",
                 f"a multiple of num_instances={self.num_instances} (P ids x K images)",
                 self.batch_size)
        require(self.warmup_epochs < self.epochs or self.warmup_epochs == 0, "warmup_epochs",
                 f"an integer in [0, epochs={self.epochs})", self.warmup_epochs)
        return self


@section
class EvaluationConfig:
    """Test-time settings: the documented retrieval feature, L2-normalised, Market protocol."""

    batch_size: PositiveInt = 256
    feat_norm: Bool = True
    rerank: Bool = False
    rerank_k1: PositiveInt = 50
    rerank_k2: PositiveInt = 15
    rerank_lambda: Annotated[Float, must(lambda v: 0 <= v <= 1, "a value in [0, 1]")] = 0.3
    max_rank: PositiveInt = 50


# --------------------------------------------------------------------------------------------
# Rules across sections
# --------------------------------------------------------------------------------------------


def check_codebook_fits(model: ModelConfig, loss: LossConfig, key: str) -> None:
    """Reject more codebook vectors than dimensions when the orthogonal loss is on.

    x vectors in D < x dimensions cannot be orthonormal, so Eq. 3 has a floor of
    sqrt(x^2/D - x) > 0 and keeps pushing the codebook with a unit-norm gradient that never
    vanishes (the paper's 128 codes in 768 dimensions respect this). Only checked when the width
    is set explicitly; timm's backbones are at least 192 wide.
    """
    if (model.embedding_space and loss.orthogonal_weight > 0 and model.embed_dim is not None
            and model.num_embeddings > model.embed_dim):
        raise ConfigError(f"{key}: model.num_embeddings={model.num_embeddings} exceeds "
                          f"model.embed_dim={model.embed_dim}; expected at most embed_dim codes "
                          "when loss.orthogonal_weight > 0 (more vectors than dimensions cannot be "
                          "orthonormal, Eq. 3)")


def check_orthogonal_needs_codebook(model: ModelConfig, loss: LossConfig, key: str) -> None:
    """The orthogonal loss (Eq. 3) acts on the Embedding Space's codebook: without one it has
    nothing to regularise, and building the criterion would fail inside every training trial."""
    if loss.orthogonal_weight > 0 and not model.embedding_space:
        raise ConfigError(f"{key}: loss.orthogonal_weight={loss.orthogonal_weight} needs an "
                          "Embedding Space; expected model.embedding_space: true or "
                          "loss.orthogonal_weight: 0")


# --------------------------------------------------------------------------------------------
# Building sections, with errors that name the key
# --------------------------------------------------------------------------------------------


def build(tp: Any, value: Any, key: str) -> Any:
    """Validate ``value`` (parsed YAML) as type ``tp`` (a section, or e.g. ``dict[str, Section]``).

    Raises:
        ConfigError: one line naming ``key`` and the path below it, what was expected and what
            was found.
    """
    try:
        return _adapter(tp).validate_python(value)
    except ValidationError as exc:
        raise ConfigError(explain(exc, tp, key)) from None


def replace(base: T, key: str, **changes: Any) -> T:
    """``dataclasses.replace`` for a section, with a :class:`ConfigError` naming ``key``."""
    current = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    return build(type(base), {**current, **changes}, key)


def check_overrides(cls: type, overrides: dict[str, Any], key: str) -> None:
    """Check a partial section (a variant's ``model`` overrides, say): every key a field of
    ``cls``, every value of that field's type; cross-field rules wait for the merged section."""
    hints = typing.get_type_hints(cls, include_extras=True)
    for name, value in overrides.items():
        if name not in hints:
            raise ConfigError(f"{key}.{name}: unknown key; expected one of: {', '.join(hints)}")
        build(hints[name], value, f"{key}.{name}")


def _adapter(tp: Any) -> TypeAdapter:
    """pydantic's validator for ``tp``, built once per type (building one costs milliseconds)."""
    if tp not in _ADAPTERS:
        _ADAPTERS[tp] = TypeAdapter(tp)
    return _ADAPTERS[tp]


_ADAPTERS: dict[Any, TypeAdapter] = {}

_EXPECTED = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number", "finite_number": "a finite number",
    "bool_type": "true or false", "bool_parsing": "true or false", "string_type": "a string",
    "dataclass_type": "a mapping", "dataclass_args_type": "a mapping", "dict_type": "a mapping",
    "tuple_type": "a list", "list_type": "a list",
}
"""pydantic's error types, as this project's "expected ..." words."""


def explain(exc: ValidationError, tp: Any, key: str) -> str:
    """The first error of ``exc`` (validating ``tp`` at ``key``) as one line naming its key."""
    err = exc.errors(include_url=False)[0]
    loc = [part for part in err["loc"] if isinstance(part, int) or "[" not in part]
    where = key + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind == "value_error":  # a section's rule (see require): ".<field>: expected ..."
        return f"{where}{ctx['error']}"
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        names = _field_names(tp, loc[:-1])
        return f"{where}: unknown key" + (f"; expected one of: {', '.join(names)}" if names else "")
    if kind == "expected":
        return f"{where}: expected {ctx['expected']}, got {value!r}"
    if kind == "literal_error":
        head, _, last = ctx["expected"].rpartition(" or ")
        return f"{where}: expected one of {head + ', ' + last if head else last}, got {value!r}"
    if kind in ("too_short", "too_long"):
        return f"{where}: expected a list of {ctx.get('max_length', ctx.get('min_length'))} values, " \
               f"got {ctx.get('actual_length')}"
    if kind in _EXPECTED:
        got = type(value).__name__ if _EXPECTED[kind] in ("a mapping", "a list") else repr(value)
        return f"{where}: expected {_EXPECTED[kind]}, got {got}"
    return f"{where}: {err['msg']}, got {value!r}"


def _field_names(tp: Any, loc: list[Any]) -> list[str]:
    """The field names of the section at ``loc`` below type ``tp`` (empty when not a section)."""
    for part in [*loc, None]:
        while typing.get_origin(tp) in (Annotated, typing.Union, types.UnionType):
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
        if part is None:
            break
        args = typing.get_args(tp)
        if dataclasses.is_dataclass(tp):
            tp = typing.get_type_hints(tp, include_extras=True).get(part)
        elif typing.get_origin(tp) is dict:
            tp = args[1]
        elif typing.get_origin(tp) is tuple:
            tp = args[0] if args[-1] is Ellipsis else args[part]
        else:
            return []
    return [f.name for f in dataclasses.fields(tp)] if dataclasses.is_dataclass(tp) else []
