"""params.yaml (pipeline.params): every rule is a one-line error naming the key, raised before any work."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import yaml
from params_errors import config_error, mutated

from ddrn.config import DATASET_NAMES
from ddrn.errors import ConfigError
from pipeline.params import ExperimentSpec, config_from_dict, load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize("profile", ["demo", "paper"])
def test_committed_profiles_load(profile: str) -> None:
    config = load_config(ROOT / "params.yaml", profile)
    assert config.profile == profile
    specs = config.experiments_list()
    assert specs and all(isinstance(s, ExperimentSpec) for s in specs)
    assert [s.name for s in specs] == sorted({s.name for s in specs})
    assert set(config.datasets) <= set(DATASET_NAMES)


def test_paper_profile_is_the_papers_recipe() -> None:
    config = load_config(ROOT / "params.yaml", "paper")
    ddrn = config.resolve("occluded_duke", "ddrn", 0)
    assert (config.input.height, config.input.width) == (256, 128)
    assert (ddrn.model.patch_size, ddrn.model.stride) == (16, 11)
    assert ddrn.model.backbone == "vit_base_patch16_224" and ddrn.model.depth is None
    assert (config.train.batch_size, config.train.num_instances) == (64, 4)
    assert config.train.epochs == 120 and config.train.warmup_epochs == 5
    assert config.train.optimizer == "sgd" and config.train.lr == pytest.approx(0.008)
    assert ddrn.model.embedding_space and ddrn.model.num_embeddings == 128
    assert ddrn.model.tau == pytest.approx(0.1)
    assert ddrn.loss.margin_head == "hs_arcface"
    assert (ddrn.loss.k, ddrn.loss.margin, ddrn.loss.scale) == (3, 0.2, 20.0)


def test_table2_variants_switch_exactly_their_components() -> None:
    config = load_config(ROOT / "params.yaml", "demo")
    rows = {}
    for name, variant in config.variants.items():
        if variant.table2_index is not None:
            spec = config.resolve("occluded_duke", name, 0)
            rows[variant.table2_index] = (spec.model.embedding_space, spec.loss.orthogonal_weight > 0,
                                          spec.loss.margin_head == "hs_arcface")
    assert rows == {
        0: (False, False, False), 1: (True, False, False), 2: (False, False, True),
        3: (True, True, False), 4: (True, True, True),
    }


def test_duplicate_experiments_are_merged(raw: dict) -> None:
    data = mutated(raw, "profiles.demo.experiments.extra", {
        "train_set": "market1501", "test_sets": ["partial_reid"], "variants": ["ddrn"], "seeds": [0]})
    config = config_from_dict(data)
    spec = config.experiment("market1501-ddrn-s0")
    assert spec.test_sets == ("market1501", "occluded_reid", "partial_reid")


def test_fingerprint_follows_training_inputs_only() -> None:
    config = load_config(ROOT / "params.yaml", "demo")
    a = config.resolve("occluded_duke", "ddrn", 0)
    assert a.fingerprint(config.input) == config.resolve("occluded_duke", "ddrn", 0, "g", ("x",)).fingerprint(config.input)
    assert a.fingerprint(config.input) != config.resolve("occluded_duke", "ddrn", 1).fingerprint(config.input)
    assert a.fingerprint(config.input) != config.resolve("occluded_duke", "es", 0).fingerprint(config.input)


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("profiles.demo.model.tau", 0.0, "profiles.demo.model.tau"),
        ("profiles.demo.model.tau", -1.0, "temperature > 0"),
        ("profiles.demo.loss", {"k": 0}, "profiles.demo.loss.k"),
        ("profiles.demo.train.batch_size", 30, "profiles.demo.train.batch_size"),
        ("profiles.demo.train.epochs", "ten", "expected an integer"),
        ("profiles.demo.train.lr", "fast", "profiles.demo.train.lr: expected a number"),
        ("profiles.demo.train.compile", "yes", "expected true or false"),
        ("profiles.demo.train.optimizer", "adam", "expected one of 'sgd', 'adamw'"),
        ("profiles.demo.train.bogus", 1, "profiles.demo.train.bogus: unknown key"),
        ("profiles.demo.modle", {}, "profiles.demo.modle: unknown key"),
        ("profiles.demo.model.stride", 20, "profiles.demo.model.stride"),
        ("profiles.demo.loss", {"margin": 3.5}, "radians"),
        ("profiles.demo.input.flip_prob", 1.5, "profiles.demo.input.flip_prob"),
        ("profiles.demo.ray.gpus_per_trial", -1, "profiles.demo.ray.gpus_per_trial"),
        ("profiles.demo.datasets.cuhk03", {"source": "synthetic"}, "cuhk03: unknown dataset"),
        ("profiles.demo.datasets.market1501.sha256", "abc", "64 hexadecimal"),
        ("variants.es.model", {"tau": 0}, "tau"),
        ("variants.es.model", {"embedding_dim": 3}, "variants.es.model.embedding_dim: unknown key"),
        ("variants.hs.loss", {"margin_head": "cosface"}, "variants.hs.loss.margin_head"),
    ],
)
def test_invalid_values_name_the_key(raw: dict, path: str, value, expected: str) -> None:
    message = config_error(mutated(raw, path, value))
    assert expected in message
    assert message.startswith("params.yaml:")


def test_codebook_larger_than_width_with_orthogonal_loss(raw: dict) -> None:
    data = mutated(raw, "profiles.demo.model.num_embeddings", 128)  # demo embed_dim is 64
    message = config_error(data)
    assert "model.num_embeddings=128 exceeds model.embed_dim=64" in message
    # Without the orthogonal loss the same codebook is allowed (variant 'es').
    data["variants"] = {k: v for k, v in data["variants"].items() if k in ("es", "vit_baseline")}
    data["profiles"]["demo"]["experiments"] = {
        "only": {"train_set": "occluded_duke", "variants": ["es"], "seeds": [0]}}
    data["profiles"]["demo"]["sweep"]["base_variant"] = "es"
    assert config_from_dict(data).experiment("occluded_duke-es-s0").model.num_embeddings == 128


def test_a_variant_may_override_the_train_section(raw: dict) -> None:
    config = config_from_dict(raw, "demo")
    resnet = config.experiment("market1501-bot_resnet50-s0")
    vit = config.experiment("market1501-vit_baseline-s0")
    assert resnet.train.amp == "bf16" and vit.train.amp == config.train.amp == "auto"
    assert resnet.train.checkpoint_every == 5 and vit.train.checkpoint_every == 1
    assert dataclasses.replace(resnet.train, amp="auto", checkpoint_every=1) == vit.train
    assert config.fingerprint(resnet) != config.fingerprint(
        dataclasses.replace(resnet, train=vit.train))
    data = mutated(raw, "variants.bot_resnet50.train", {"amp": "fp8"})
    assert config_error(data) == ("params.yaml: variants.bot_resnet50.train.amp: expected one of "
                                  "'auto', 'bf16', 'fp16', 'off', got 'fp8'")
    data = mutated(raw, "variants.bot_resnet50.train", {"epochz": 3})
    assert config_error(data).startswith("params.yaml: variants.bot_resnet50.train.epochz: "
                                          "unknown key; expected one of: epochs,")


def test_unknown_variant_in_experiments(raw: dict) -> None:
    data = mutated(raw, "profiles.demo.experiments.ablation.variants", ["vit_baseline", "nope"])
    assert "unknown variant 'nope'" in config_error(data)


def test_experiment_on_undeclared_dataset(raw: dict) -> None:
    data = copy.deepcopy(raw)
    del data["profiles"]["demo"]["datasets"]["dukemtmc"]
    assert "dataset 'dukemtmc' is not in profiles.demo.datasets" in config_error(data)


def test_unknown_profile_and_top_level_key(raw: dict) -> None:
    assert "profile 'nope' not found" in config_error(raw, profile="nope")
    assert "unknown top-level key 'extra'" in config_error({**raw, "extra": 1})


def test_variant_override_invalid_against_profile(raw: dict) -> None:
    # depth 1 is a valid int, but the Embedding Space needs a block after it.
    data = mutated(raw, "profiles.demo.model.depth", 1)
    assert "depth" in config_error(data)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="parameters file not found"):
        load_config(tmp_path / "params.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("profile: demo\nprofiles: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(bad)


def test_unknown_experiment_name_lists_known(tmp_path: Path) -> None:
    config = load_config(ROOT / "params.yaml", "demo")
    with pytest.raises(ConfigError, match="no experiment named 'x'.*occluded_duke-ddrn-s0"):
        config.experiment("x")


def test_exponent_numbers_are_floats(tmp_path: Path) -> None:
    """PyYAML (YAML 1.1) reads ``3e-3`` as a string; users write it, so it is a number here."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["profiles"]["demo"]["train"]["lr"] = "placeholder"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw).replace("lr: placeholder", "lr: 3e-3"))
    assert yaml.safe_load(params.read_text())["profiles"]["demo"]["train"]["lr"] == "3e-3"
    assert load_config(params, "demo").train.lr == pytest.approx(0.003)
    # A string that is not a number stays an error.
    assert "expected a number, got '3e-x'" in config_error(mutated(raw, "profiles.demo.train.lr",
                                                             "3e-x"), "demo")


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), "1e999"])
def test_non_finite_numbers_are_refused(raw: dict, value) -> None:
    message = config_error(mutated(raw, "profiles.demo.train.lr", value), "demo")
    assert "profiles.demo.train.lr" in message and "finite" in message


def test_orthogonal_loss_needs_an_embedding_space(raw: dict) -> None:
    """Eq. 3 regularises the codebook: on a variant without one it is refused when params are
    read (before the train stage starts Ray), naming the variant."""
    bad = mutated(raw, "variants.vit_baseline.loss", {"orthogonal_weight": 1.0})
    message = config_error(bad, "demo")
    assert "variants.vit_baseline" in message and "needs an Embedding Space" in message


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_validation_fraction_outside_0_1_names_the_key(raw: dict, fraction: float) -> None:
    message = config_error(mutated(raw, "profiles.demo.sweep.validation", {"fraction": fraction}))
    assert message.startswith("params.yaml: profiles.demo.sweep.validation.fraction: expected a "
                              f"share in (0, 1), got {fraction!r}")


@pytest.mark.parametrize(("path", "value", "expected"), [
    ("profiles.demo.sweep.space", {"tau": {"low": 1.0, "high": 0.5}},
     "profiles.demo.sweep.space.tau: expected 'choices: [...]' or 'low' < 'high'"),
    ("profiles.demo.sweep.space", {"nope": {"choices": [1]}},
     "profiles.demo.sweep.space.nope: expected a model or loss field"),
    ("profiles.demo.sweep.fig6", {"values": {"tau": [0.1, -1.0]}},
     "profiles.demo.sweep.fig6.values.tau[1]: expected a temperature > 0, got -1.0"),
    ("profiles.demo.sweep.fig6", {"values": {"k": [1, 1]}},
     "profiles.demo.sweep.fig6.values.k: expected a non-empty list of distinct values"),
    ("profiles.demo.pretrain.train", {"epochs": 0},
     "profiles.demo.pretrain.train.epochs: expected an integer >= 1, got 0"),
    ("profiles.demo.pretrain.train", {"epoch": 3},
     "profiles.demo.pretrain.train.epoch: unknown key; expected one of: epochs, batch_size"),
    ("profiles.demo.ray.object_store_mb", 10, "profiles.demo.ray.object_store_mb: expected at least 64"),
    ("profiles.demo.experiments.ablation.seeds", [], "ablation.seeds: expected at least one seed"),
])
def test_pipeline_sections_name_the_key(raw: dict, path: str, value, expected: str) -> None:
    assert expected in config_error(mutated(raw, path, value))
