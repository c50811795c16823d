"""The sweep's conditional search space, knob application and best-configuration output."""

from __future__ import annotations

import copy

import optuna
import pytest
import yaml
from params_errors import config_error, mutated
from sweep_project import tiny_params

from ddrn.errors import ConfigError
from pipeline.params import config_from_dict
from pipeline.sweep.space import (
    active_knobs,
    apply_knobs,
    base_knobs,
    best_params_document,
    define_space,
    dvc_exp_command,
    sweep_fingerprint,
)


@pytest.fixture()
def raw() -> dict:
    return tiny_params("sqlite:///unused.db")


def _sample(config, n: int) -> list[dict]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=1))
    fn = define_space(config.sweep.space, base_knobs(config))
    out = []
    for i in range(n):
        trial = study.ask()
        fn(trial)
        study.tell(trial, float(i))
        out.append(dict(trial.params))
    return out


def test_space_is_conditional(raw: dict) -> None:
    config = config_from_dict(raw)
    samples = _sample(config, 40)
    for p in samples:
        assert ("k" in p) == (p["margin_head"] in ("subcenter", "hs_arcface")), p
        assert ("tau" in p) == (p["sampling"] == "gumbel"), p
        assert {"margin", "scale", "num_embeddings"} <= set(p)
        assert 0.05 <= p.get("tau", 0.05) <= 2.0 and 1 <= p.get("k", 1) <= 3
    # Both branches of each condition are explored.
    assert {p["margin_head"] for p in samples} == {"arcface", "subcenter", "hs_arcface"}
    assert {p["sampling"] for p in samples} == {"default", "gumbel"}


def test_unsearched_parent_follows_the_base_variant(raw: dict) -> None:
    config = config_from_dict(raw)
    space = {k: v for k, v in config.sweep.space.items() if k != "margin_head"}
    base = base_knobs(config)
    assert base["margin_head"] == "hs_arcface"  # the ddrn variant
    assert "k" in active_knobs(space, base, {"sampling": "default"})
    assert "k" not in active_knobs(space, {**base, "margin_head": "arcface"}, {})


def test_apply_knobs_overrides_model_and_loss(raw: dict) -> None:
    config = config_from_dict(raw)
    spec = apply_knobs(config, {"num_embeddings": 8, "tau": 0.5, "margin_head": "subcenter",
                                "k": 2, "sampling": "gumbel"}, "t1")
    assert (spec.model.num_embeddings, spec.model.tau, spec.model.sampling) == (8, 0.5, "gumbel")
    assert (spec.loss.margin_head, spec.loss.k) == ("subcenter", 2)
    assert spec.model.embedding_space and spec.loss.orthogonal_weight == 1.0  # base variant kept
    assert spec.train.epochs == config.sweep.max_epochs and spec.name == "t1"


def test_codebook_health_options_are_sweep_knobs(raw: dict) -> None:
    config = config_from_dict(raw)
    knobs = {"similarity": "dot", "train_index": "sample", "kmeans_init": False,
             "dead_code_threshold": 0.0, "restart_every": 5, "codebook_weight_decay": True}
    spec = apply_knobs(config, knobs, "t2")
    assert {k: getattr(spec.model, k) for k in knobs} == knobs
    with pytest.raises(ConfigError, match=r"sweep \(model\).*dead_code_threshold"):
        apply_knobs(config, {"dead_code_threshold": -0.1}, "t")


def test_apply_knobs_rejects_impossible_values(raw: dict) -> None:
    config = config_from_dict(raw)
    with pytest.raises(ConfigError, match=r"sweep \(model\).*tau"):
        apply_knobs(config, {"tau": -1.0}, "t")
    with pytest.raises(ConfigError, match="'lr' is not a model or loss field"):
        apply_knobs(config, {"lr": 0.1}, "t")


@pytest.mark.parametrize(("path", "value", "message"), [
    ("space.lr", {"low": 0.1, "high": 1.0}, "sweep.space.lr: expected a model or loss field"),
    ("space.tau", {"low": 0.0, "high": 1.0, "log": True}, "space.tau.low: expected a value > 0"),
    ("space.k", {"low": 3, "high": 1}, "space.k: expected 'choices: [...]' or 'low' < 'high'"),
    ("space.k", {"choices": []}, "space.k: expected either a non-empty 'choices'"),
    ("train_set", "market1501", "sweep.train_set: dataset 'market1501' is not in"),
    ("eval_every", 0, "sweep.eval_every: expected an integer >= 1"),
])
def test_sweep_config_errors_are_one_line(raw: dict, path: str, value, message: str) -> None:
    assert message in config_error(mutated(raw, f"profiles.tiny.sweep.{path}", value))


def test_fingerprint_ignores_budget_but_not_space(raw: dict) -> None:
    base = sweep_fingerprint(config_from_dict(raw))
    more = copy.deepcopy(raw)
    more["profiles"]["tiny"]["sweep"]["num_samples"] = 99
    assert sweep_fingerprint(config_from_dict(more)) == base
    other = copy.deepcopy(raw)
    other["profiles"]["tiny"]["sweep"]["space"]["k"]["high"] = 5
    assert sweep_fingerprint(config_from_dict(other)) != base


def test_best_params_document_is_a_valid_variant(raw: dict) -> None:
    config = config_from_dict(raw)
    knobs = {"num_embeddings": 8, "margin_head": "arcface", "sampling": "default",
             "margin": 0.3, "scale": 16.0}
    doc = yaml.safe_load(yaml.safe_dump(best_params_document(config, knobs)))
    (name, variant), = doc["variants"].items()
    assert name == "ddrn_sweep_best"
    assert variant["model"] == {**config.variants["ddrn"].model, "num_embeddings": 8,
                                "sampling": "default"}
    assert variant["loss"]["margin_head"] == "arcface" and variant["loss"]["orthogonal_weight"] == 1
    merged = copy.deepcopy(raw)
    merged["variants"].update(doc["variants"])
    spec = config_from_dict(merged).resolve("occluded_duke", name, 0)
    assert spec.model.num_embeddings == 8 and spec.loss.scale == 16.0
    cmd = dvc_exp_command(config, knobs)
    assert cmd.startswith("dvc exp run ")
    assert "-S '++variants.ddrn.model.num_embeddings=8'" in cmd
    assert "-S '++variants.ddrn.loss.margin_head=arcface'" in cmd
