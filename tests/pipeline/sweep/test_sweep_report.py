"""reports/sweep.md from a sweep summary: ASHA savings, importances, Fig. 6 panels, best table."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from ddrn.errors import DataError
from pipeline.sweep.report import asha_savings, main, param_importances, write_report

SPACE = {
    "margin_head": {"choices": ["arcface", "subcenter", "hs_arcface"]},
    "sampling": {"choices": ["default", "gumbel"]},
    "num_embeddings": {"choices": [16, 32, 64, 128]},
    "tau": {"low": 0.05, "high": 2.0, "log": True},
    "k": {"low": 1, "high": 5, "integer": True},
    "margin": {"low": 0.1, "high": 0.5},
    "scale": {"low": 10.0, "high": 40.0},
}


def _summary(n: int = 12, max_epochs: int = 8) -> dict:
    rng = random.Random(0)
    trials = []
    for i in range(n):
        head = ["arcface", "subcenter", "hs_arcface"][i % 3]
        sampling = ["default", "gumbel"][i % 2]
        knobs = {"margin_head": head, "sampling": sampling,
                 "num_embeddings": [16, 32, 64, 128][i % 4], "margin": rng.uniform(0.1, 0.5),
                 "scale": rng.uniform(10, 40)}
        if head != "arcface":
            knobs["k"] = rng.randint(1, 5)
        if sampling == "gumbel":
            knobs["tau"] = rng.uniform(0.05, 2.0)
        epochs = max_epochs if i % 3 == 2 else [2, 4][i % 2]
        # The sub-centre count drives mAP here, so it must come out as an important knob.
        curve = [[e, 10.0 + 2.0 * e + 5.0 * knobs.get("k", 0)] for e in range(1, epochs + 1)]
        trials.append({"trial_id": f"t{i:02d}", "status": "TERMINATED", "error": None,
                       "knobs": knobs, "epochs": epochs, "stopped_early": epochs < max_epochs,
                       "mAP": curve[-1][1], "R1": curve[-1][1] + 10, "best_mAP": curve[-1][1],
                       "curve": curve, "nodes": ["n1"], "hostname": "h", "pid": 1,
                       "resumed_from_epoch": 0})
    return {"name": "sweep-demo-abc", "experiment_path": "/x", "profile": "demo",
            "train_set": "occluded_duke", "base_variant": "ddrn", "metric": "mAP",
            "num_samples": n, "max_epochs": max_epochs, "grace_period": 2, "reduction_factor": 2,
            "space": SPACE, "base": {"margin_head": "hs_arcface", "sampling": "gumbel"},
            "duration_s": 12.0, "num_nodes": 1, "best": trials[-1], "trials": trials,
            "best_params_file": "sweep_best_params.yaml",
            "dvc_command": "dvc exp run -S '++variants.ddrn.loss.k=5'"}


def test_asha_savings_counts_trial_epochs() -> None:
    s = asha_savings(_summary())
    # 4 trials ran 8 epochs; of the 8 stopped, 4 stopped at 2 and 4 at 4 -> 32 + 8 + 16.
    assert (s["spent"], s["full"], s["stopped_early"]) == (56, 96, 8)
    assert s["fraction"] == pytest.approx(56 / 96)
    assert s["best_mAP"] == max(t["mAP"] for t in _summary()["trials"])


def test_importances_cover_the_knobs_and_find_k() -> None:
    imp = param_importances(_summary(24))
    assert set(imp) <= set(SPACE) and "k" in imp
    assert max(imp, key=imp.get) == "k"


def test_write_report(tmp_path: Path) -> None:
    (tmp_path / "sweep_trials.json").write_text(json.dumps(_summary()))
    md_path = write_report(tmp_path / "sweep_trials.json", tmp_path)
    md = md_path.read_text()
    for fig in ("sweep_tpe.png", "sweep_asha.png"):
        png = tmp_path / "figures" / fig
        assert png.read_bytes()[:4] == b"\x89PNG" and f"(figures/{fig})" in md
    assert "| ASHA (this sweep) | 56 |" in md and "| every configuration to the end | 96 |" in md
    assert "truncated" in md  # ASHA-stopped trials are told to Optuna with truncated values
    assert "| knob | importance |" in md
    assert "dvc exp run -S '++variants.ddrn.loss.k=5'" in md
    best_rows = [line for line in md.splitlines() if line[:4] in ("| t0", "| t1")]
    assert len(best_rows) == 5


@pytest.mark.parametrize("at_once", [1, 2])
def test_the_report_says_when_trial_order_can_change_a_rerun(tmp_path: Path, at_once: int) -> None:
    (tmp_path / "sweep_trials.json").write_text(
        json.dumps({**_summary(), "max_concurrent_trials": at_once}))
    md = write_report(tmp_path / "sweep_trials.json", tmp_path).read_text()
    assert ("order in which trials finish" in md) == (at_once > 1)
    assert (f"up to {at_once} trials at once" in md) == (at_once > 1)


def test_cli_reports_a_missing_summary_in_one_line(tmp_path: Path, capsys) -> None:
    from pipeline.cli import run_stage

    assert run_stage(main, ["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {tmp_path / 'sweep_trials.json'}: sweep results not found")
    with pytest.raises(DataError):
        write_report(tmp_path / "nope.json", tmp_path)


def test_the_report_names_the_split_every_number_comes_from(tmp_path: Path) -> None:
    summary = _summary()
    summary.update(selection="validation", validation={
        "seed": 7, "fraction": 0.2, "num_train_ids": 96, "num_train_images": 800, "num_ids": 24,
        "num_query": 70, "num_gallery": 130, "dropped_queries": 3, "val_ids": list(range(24))})
    (tmp_path / "sweep_trials.json").write_text(json.dumps(summary))
    md = write_report(tmp_path / "sweep_trials.json", tmp_path).read_text()
    assert "Every number here is on the validation split, never the test split" in md
    assert "24 identities of `occluded_duke`'s train split held out" in md
    assert "fraction 0.2, seed 7" in md and "70 queries against 130 gallery images" in md
    assert "Trials trained on the other 96 identities" in md
    assert "| | trial-epochs | best validation (24 ids) mAP (%) |" in md


def test_a_sweep_that_scored_on_the_test_split_says_so(tmp_path: Path) -> None:
    (tmp_path / "sweep_trials.json").write_text(json.dumps(_summary()))  # no "validation" record
    md = write_report(tmp_path / "sweep_trials.json", tmp_path).read_text()
    assert "measured on `occluded_duke`'s test query/gallery" in md
    assert "the selection saw the test set" in md and "never the test split" not in md
