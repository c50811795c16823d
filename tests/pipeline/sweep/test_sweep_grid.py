"""The Fig. 6 grid: its points, its config errors, and a tiny real run on a local Ray."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from params_errors import config_error, mutated
from sweep_project import tiny_params, write_tiny_project

from ddrn.errors import ConfigError
from pipeline.params import config_from_dict, load_config
from pipeline.sweep.grid import GridStudy, grid_epochs, grid_fingerprint, grid_points
from pipeline.sweep.space import apply_knobs, sweep_fingerprint

FIG6 = {"values": {"num_embeddings": [8, 16, 32], "margin_head": ["arcface", "hs_arcface"],
                   "sampling": ["default"]},
        "seeds": [0, 1], "epochs": 3}


@pytest.fixture()
def raw() -> dict:
    return tiny_params("sqlite:///unused.db", fig6=copy.deepcopy(FIG6))


def _changed(config, spec) -> dict:
    """The model and loss fields where ``spec`` differs from the base variant."""
    base = apply_knobs(config, {}, "base")
    out = {}
    for section in ("model", "loss"):
        a, b = dataclasses.asdict(getattr(base, section)), dataclasses.asdict(getattr(spec, section))
        out.update({k: b[k] for k in a if a[k] != b[k]})
    return out


def test_points_vary_one_knob_share_the_default_and_cross_seeds(raw: dict) -> None:
    config = config_from_dict(raw)
    points = grid_points(config)
    # Base (x=16, hs_arcface, gumbel) once per seed; 16 and hs_arcface are the base, not rerun.
    labels = ["base", "num_embeddings=8", "num_embeddings=32", "margin_head=arcface",
              "sampling=default"]
    assert [(p.label, p.seed) for p in points] == [(lb, s) for lb in labels for s in (0, 1)]
    for p in points:
        spec = apply_knobs(config, {} if p.knob is None else {p.knob: p.value}, "t",
                           seed=p.seed, epochs=grid_epochs(config))
        assert _changed(config, spec) == ({} if p.knob is None else {p.knob: p.value})
        assert spec.seed == p.seed and spec.train.epochs == 3  # fig6.epochs, not max_epochs


def test_an_empty_grid_and_the_epochs_default(raw: dict) -> None:
    raw["profiles"]["tiny"]["sweep"]["fig6"] = {"values": {}}
    config = config_from_dict(raw)
    assert grid_points(config) == [] and grid_epochs(config) == config.sweep.max_epochs


@pytest.mark.parametrize(("path", "value", "message"), [
    ("values.lr", [0.1], "sweep.fig6.values.lr: expected a model or loss field"),
    ("values.tau", ["hot"], "sweep.fig6.values.tau[0]: expected a number, got 'hot'"),
    ("values.margin_head", ["cosface"], "sweep.fig6.values.margin_head[0]: expected one of"),
    ("values.k", [], "sweep.fig6.values.k: expected a non-empty list of distinct values"),
    ("values.k", [2, 2], "sweep.fig6.values.k: expected a non-empty list of distinct values"),
    ("seeds", [], "sweep.fig6.seeds: expected a non-empty list of distinct integers"),
    ("seeds", [0.5], "sweep.fig6.seeds[0]: expected an integer"),
    ("epochs", 0, "sweep.fig6.epochs: expected an integer >= 1, got 0"),
    ("repeats", 2, "sweep.fig6.repeats: unknown key"),
])
def test_config_errors_are_one_line_and_name_the_key(raw: dict, path: str, value,
                                                     message: str) -> None:
    assert message in config_error(mutated(raw, f"profiles.tiny.sweep.fig6.{path}", value))


@pytest.mark.parametrize(("knob", "values", "variant_model", "message"), [
    ("num_embeddings", [64], {}, "sweep.fig6.values.num_embeddings (knobs {'num_embeddings': "
     "64}): model.num_embeddings=64 exceeds model.embed_dim=32"),
    ("tau", [-1.0], {}, "sweep.fig6.values.tau[0]: expected a temperature > 0, got -1.0"),
    ("tau", [0.5], {"sampling": "default"}, "sweep.fig6.values.tau: tau has no effect with the "
     "base variant's sampling='default'"),
])
def test_values_the_base_cannot_take_fail_before_ray(raw: dict, knob: str, values: list,
                                                     variant_model: dict, message: str) -> None:
    raw["profiles"]["tiny"]["sweep"]["fig6"]["values"] = {knob: values}
    raw["variants"]["ddrn"]["model"].update(variant_model)
    with pytest.raises(ConfigError) as info:
        grid_points(config_from_dict(raw))
    assert f"profiles.tiny.{message}" in str(info.value) and "\n" not in str(info.value)


def test_grid_and_tpe_fingerprints_are_independent(raw: dict) -> None:
    config = config_from_dict(raw)
    more = copy.deepcopy(raw)
    more["profiles"]["tiny"]["sweep"]["fig6"]["seeds"] = [0, 1, 2]
    budget = copy.deepcopy(raw)
    budget["profiles"]["tiny"]["sweep"]["num_samples"] = 99
    assert grid_fingerprint(config_from_dict(more)) != grid_fingerprint(config)
    assert sweep_fingerprint(config_from_dict(more)) == sweep_fingerprint(config)
    assert grid_fingerprint(config_from_dict(budget)) == grid_fingerprint(config)


def test_tiny_grid_end_to_end_and_resume(tmp_path: Path, ray_local: None,
                                         no_tracking_env: None) -> None:
    """2 values of one knob x 1 seed (the default point is one of them), 2 epochs, next to a
    1-trial TPE search of 1 epoch: sweep_fig6.json, the panel figure and the report section;
    then --resume keeps the finished grid points instead of training them again."""
    from pipeline.sweep.search import run_sweep

    fig6 = {"values": {"num_embeddings": [8, 16]}, "seeds": [0], "epochs": 2}
    params = write_tiny_project(tmp_path, f"sqlite:///{tmp_path}/mlflow.db", num_samples=1,
                                max_epochs=1, fig6=fig6)
    config = load_config(params)
    out = tmp_path / "reports"
    kwargs = {"data_root": tmp_path / "data" / "packed", "out_dir": out,
              "storage_path": str(tmp_path / "ray_results")}
    run_sweep(config, tmp_path, **kwargs)

    study = GridStudy.load(out / "sweep_fig6.json")
    raw = json.loads((out / "sweep_fig6.json").read_text())
    assert [(p["knob"], p["value"], p["seed"]) for p in raw["points"]] == [
        (None, None, 0), ("num_embeddings", 8, 0)]
    for p in study.points:
        assert p.status == "TERMINATED" and p.epochs == 2 and [e for e, _ in p.curve] == [1, 2]
        assert 0.0 <= p.mAP <= 100.0 and 0.0 <= p.R1 <= 100.0
    assert study.selection == "validation" and study.validation["num_ids"] == 2
    assert study.base == {"num_embeddings": 16} and study.epochs == 2
    assert json.loads((out / "sweep_trials.json").read_text())["max_epochs"] == 1

    png = out / "figures" / "sweep_fig6.png"
    assert png.read_bytes()[:4] == b"\x89PNG" and (out / "figures" / "sweep_tpe.png").is_file()
    md = (out / "sweep.md").read_text()
    assert "## Fig. 6: one knob at a time (validation split)" in md
    assert "(figures/sweep_fig6.png)" in md and "never the test split" in md
    rows = [line for line in md.splitlines() if line.startswith("| num_embeddings |")]
    assert [r.split(" | ")[1] for r in rows] == ["8", "16 (default)"]
    assert all(" ± 0.00 | " in r and r.endswith("| [0] |") for r in rows)

    # --resume: Tuner.restore finds every grid point finished and trains nothing again.
    stamps = {p.trial_id: p for p in study.points}
    run_sweep(config, tmp_path, resume=True, **kwargs)
    again = GridStudy.load(out / "sweep_fig6.json")
    assert {p.trial_id: p for p in again.points} == stamps


def test_a_grid_error_is_a_one_line_cli_error(tmp_path: Path, capsys) -> None:
    from pipeline.cli import run_stage
    from pipeline.sweep.search import main

    raw = tiny_params("sqlite:///unused.db", fig6={"values": {"k": [0]}})
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    assert run_stage(main, ["--params", str(params), "--data", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert "profiles.tiny.sweep.fig6.values.k[0]: expected at least 1 sub-centre, got 0" in err
