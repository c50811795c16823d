"""The library's sections (ddrn.config): strict types, constraints and cross-field rules, each
refused with one line naming the key."""

from __future__ import annotations

import dataclasses

import pytest

from ddrn.config import LossConfig, ModelConfig, SyntheticConfig, TrainConfig, build, replace
from ddrn.errors import ConfigError


def _error(tp, value, key: str = "cfg") -> str:
    with pytest.raises(ConfigError) as info:
        build(tp, value, key)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_defaults_are_the_papers_recipe() -> None:
    model, loss, train = ModelConfig(), LossConfig(), TrainConfig()
    assert (model.patch_size, model.stride, model.num_embeddings, model.tau) == (16, 11, 128, 0.1)
    assert (loss.k, loss.margin, loss.scale) == (3, 0.2, 20.0)
    assert (train.batch_size, train.num_instances, train.lr, train.epochs) == (64, 4, 0.008, 120)


@pytest.mark.parametrize(("tp", "value", "expected"), [
    (ModelConfig, {"tau": 0.0}, "cfg.tau: expected a temperature > 0, got 0.0"),
    (ModelConfig, {"stride": 20}, "cfg.stride: expected an integer in [1, patch_size=16], got 20"),
    (ModelConfig, {"depth": 1, "embedding_space": True}, "cfg.depth: expected at least 2 blocks"),
    (ModelConfig, {"embed_dim": 30, "num_heads": 4}, "cfg.embed_dim: expected a multiple of num_heads=4"),
    (ModelConfig, {"embedding_dim": 3}, "cfg.embedding_dim: unknown key; expected one of: arch, "),
    (ModelConfig, {"sampling": "soft"}, "cfg.sampling: expected one of 'gumbel', 'default', got 'soft'"),
    (ModelConfig, {"sie": "yes"}, "cfg.sie: expected true or false, got 'yes'"),
    (ModelConfig, [], "cfg: expected a mapping, got list"),
    (TrainConfig, {"epochs": "10"}, "cfg.epochs: expected an integer, got '10'"),
    (TrainConfig, {"epochs": True}, "cfg.epochs: expected an integer, got True"),
    (TrainConfig, {"lr": float("nan")}, "cfg.lr: expected a finite number"),
    (TrainConfig, {"batch_size": 30}, "cfg.batch_size: expected a multiple of num_instances=4"),
    (LossConfig, {"margin": 3.5}, "cfg.margin: expected an angle in radians in [0, pi), got 3.5"),
    (SyntheticConfig, {"occluded_area": [0.5, 0.2]}, "cfg.occluded_area: expected [low, high]"),
    (SyntheticConfig, {"occluded_area": [0.1, 0.2, 0.3]}, "cfg.occluded_area: expected a list of 2"),
    (dict[str, ModelConfig], {"a": {"k": 1}}, "cfg.a.k: unknown key"),
])
def test_bad_values_are_one_line_errors_naming_the_key(tp, value, expected: str) -> None:
    assert _error(tp, value).startswith(expected)


def test_yaml12_exponent_strings_are_numbers_and_ints_are_floats() -> None:
    train = build(TrainConfig, {"lr": "3e-3", "momentum": 0}, "cfg")
    assert train.lr == pytest.approx(0.003) and isinstance(train.momentum, float)
    assert build(SyntheticConfig, {"occluded_area": [0.2, 0.5]}, "cfg").occluded_area == (0.2, 0.5)


def test_sections_are_frozen_and_replace_validates() -> None:
    model = ModelConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.tau = 0.5  # type: ignore[misc]
    assert replace(model, "cfg", tau=0.5).tau == 0.5
    with pytest.raises(ConfigError, match=r"^variants\.x\.model\.tau: expected a temperature"):
        replace(model, "variants.x.model", tau=-1.0)
