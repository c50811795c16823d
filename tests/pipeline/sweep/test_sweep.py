"""A real (small) sweep on a local Ray: Optuna proposes, ASHA schedules, MLflow nests, files land."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from sweep_project import tiny_params, write_tiny_project

from ddrn.errors import DataError
from pipeline.params import load_config
from pipeline.sweep.search import main, run_sweep
from pipeline.sweep.space import CONDITIONS


def _children(uri: str, experiment: str) -> tuple[list, list]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=500)
    parents = [r for r in runs if r.data.tags.get("stage") == "sweep"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def test_small_sweep_end_to_end(tmp_path: Path, ray_local: None, mlflow_server,
                                no_tracking_env: None) -> None:
    params = write_tiny_project(tmp_path, mlflow_server.uri, num_samples=4, max_epochs=2)
    config = load_config(params)
    out = tmp_path / "reports"
    outcome = run_sweep(config, tmp_path, data_root=tmp_path / "data" / "packed", out_dir=out,
                        storage_path=str(tmp_path / "ray_results"))

    summary = json.loads(outcome.trials_path.read_text())
    trials = summary["trials"]
    assert len(trials) == 4 and all(t["status"] == "TERMINATED" for t in trials)
    for t in trials:
        # The define-by-run space held: conditional knobs only where they mean something.
        for knob, (parent, allowed) in CONDITIONS.items():
            assert (knob in t["knobs"]) == (t["knobs"][parent] in allowed), t["knobs"]
        assert 1 <= t["epochs"] <= 2 and [e for e, _ in t["curve"]] == list(
            range(1, t["epochs"] + 1))
        assert 0.0 <= t["mAP"] <= 100.0 and t["nodes"]
    # ASHA bookkeeping: each trial ran to max_t or was stopped at the grace period.
    assert summary["max_epochs"] == 2 and summary["grace_period"] == 1
    assert all(t["stopped_early"] == (t["epochs"] < 2) for t in trials)
    finished = [t for t in trials if t["epochs"] == 2] or trials  # best = best that ran to the end
    assert outcome.best["mAP"] == max(t["mAP"] for t in finished)

    # Selection on held-out training identities, recorded with the split that drew them.
    val = summary["validation"]
    assert summary["selection"] == "validation"
    assert (val["seed"], val["fraction"], val["num_ids"], val["num_train_ids"]) == (0, 0.25, 2, 6)
    assert len(val["val_ids"]) == 2 and val["num_query"] >= 2 and val["num_gallery"] >= 2

    # The best configuration is a params.yaml variant that validates, plus a dvc command; the
    # file says which validation score chose it, the split, and how to get its test numbers.
    text = outcome.best_params_path.read_text()
    assert "dvc exp run -S '++variants.ddrn." in text and outcome.dvc_command in text
    assert f"validation mAP {outcome.best['mAP']} %" in text and "the test split was not read" in text
    assert "fraction 0.25, seed 0" in text and "dvc repro" in text
    raw = yaml.safe_load(params.read_text())
    raw["variants"].update(yaml.safe_load(text)["variants"])
    params.write_text(yaml.safe_dump(raw))
    spec = load_config(params).resolve("occluded_duke", "ddrn_sweep_best", 0)
    assert spec.loss.margin_head == outcome.best["knobs"]["margin_head"]

    md = outcome.report_path.read_text()
    assert "Every number here is on the validation split, never the test split" in md
    assert ("2 identities of `occluded_duke`'s train split held out" in md
            and f"{val['num_query']} queries against {val['num_gallery']} gallery images" in md)
    assert "## What ASHA saved" in md and (out / "figures" / "sweep_tpe.png").is_file()
    assert f"| every configuration to the end | {4 * 2} |" in md

    # MLflow: one sweep run, and every trial a run nested under it with its mAP curve.
    parents, children = _children(mlflow_server.uri, "sweep-test")
    parent = [p for p in parents if p.data.tags.get("sweep") == summary["name"]]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    mine = [c for c in children
            if c.data.tags["mlflow.parentRunId"] == parent[0].info.run_id]
    assert len(mine) == 4
    assert {c.data.tags["experiment"] for c in mine} == {
        f"sweep-tiny-{t['trial_id']}" for t in trials}
    # validation scores, never under a test set's metric name (<test_set>.mAP), rounded for display
    key = f"{config.sweep.train_set}/val.mAP"
    assert all(key in c.data.metrics and "mAP" not in c.data.metrics
               and f"{config.sweep.train_set}.mAP" not in c.data.metrics for c in mine)
    assert all(round(c.data.metrics[key], 2) == c.data.metrics[key] for c in mine)
    assert parent[0].data.metrics["best_mAP"] == pytest.approx(outcome.best["mAP"])


def test_the_best_params_file_states_its_validation_score_and_test_command(
        tmp_path: Path) -> None:
    """The demo's best configuration file: the validation score and split it was chosen on, the
    command that trains it on all training ids, and where its test-split numbers land."""
    from pipeline.sweep.search import write_outputs
    from pipeline.sweep.space import dvc_exp_command

    config = load_config(Path(__file__).resolve().parents[3] / "params.yaml", "demo")
    knobs = {"margin_head": "subcenter", "sampling": "gumbel", "num_embeddings": 32, "k": 2,
             "tau": 0.2, "margin": 0.3, "scale": 20.0}
    best = {"trial_id": "t1", "status": "TERMINATED", "knobs": knobs, "epochs": 20,
            "stopped_early": False, "mAP": 71.25, "R1": 80.5, "best_mAP": 71.25,
            "curve": [[2, 40.0], [20, 71.25]], "nodes": ["n"], "error": None}
    validation = {"seed": 0, "fraction": 0.2, "num_train_ids": 96, "num_train_images": 766,
                  "num_ids": 24, "num_query": 76, "num_gallery": 116, "dropped_queries": 0,
                  "val_ids": list(range(24))}
    summary = {"name": "sweep-fig6-demo-x", "experiment_path": "/x", "profile": "demo",
               "train_set": "occluded_duke", "base_variant": "ddrn", "metric": "mAP",
               "selection": "validation", "validation": validation, "num_samples": 1,
               "max_epochs": 20, "grace_period": 2, "reduction_factor": 4,
               "space": {}, "base": {}, "duration_s": 1.0, "num_nodes": 1, "best": best,
               "trials": [best]}
    outcome = write_outputs(config, summary, tmp_path)
    text = outcome.best_params_path.read_text()
    assert "selected on VALIDATION identities (the test split was not read)" in text
    assert "trial t1: validation mAP 71.25 %, R1 80.5 % after 20 epochs" in text
    assert "24 held-out ids of occluded_duke's train split, 76 queries, 116 gallery" in text
    assert f"#   {dvc_exp_command(config, knobs)}\n" in text
    assert ("(test split: metrics/occluded_duke-ddrn-s0.json, metrics/occluded_duke-ddrn-s1.json, "
            "metrics/occluded_duke-ddrn-s2.json;") in text
    assert "metrics/occluded_duke-ddrn_sweep_best-s0.json" in text
    assert "adding ddrn_sweep_best to\n# profiles.demo.experiments.ablation.variants" in text
    variant = yaml.safe_load(text)["variants"]["ddrn_sweep_best"]
    assert "validation mAP 71.25 %" in variant["description"]
    assert variant["loss"]["margin_head"] == "subcenter" and variant["model"]["tau"] == 0.2


def test_missing_packed_data_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    from pipeline.cli import run_stage

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params("sqlite:///unused.db")))
    with pytest.raises(DataError, match="packed dataset not found"):
        run_sweep(load_config(params), tmp_path, data_root=tmp_path / "nope", out_dir=tmp_path)
    code = run_stage(main, ["--params", str(params), "--data", str(tmp_path / "nope"),
                            "--num-samples", "2"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nope/occluded_duke: packed dataset not found" in err


@pytest.mark.slow
def test_resume_continues_an_interrupted_sweep(tmp_path: Path, mlflow_server) -> None:
    """Kill the sweep's driver (and its private Ray) mid-run; ``--resume`` finishes the same sweep
    with Tuner.restore instead of starting over, under the same MLflow parent run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    params = write_tiny_project(tmp_path, mlflow_server.uri, num_samples=4, max_epochs=4,
                                grace_period=4)
    # Slower epochs, so the driver is surely killed while a trial is between checkpoints.
    params.write_text(params.read_text().replace("iters_per_epoch: 2", "iters_per_epoch: 300"))
    cmd = [sys.executable, "-m", "pipeline.sweep", "--params", str(params),
           "--data", str(tmp_path / "data" / "packed"), "--out", str(tmp_path / "reports"),
           "--storage-path", str(tmp_path / "ray_results")]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "TUNE_GLOBAL_CHECKPOINT_S": "1", "MLFLOW_TRACKING_URI": mlflow_server.uri}
    env.pop("RAY_ADDRESS", None)
    first = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and first.poll() is None:
            running = [r for r in (tmp_path / "ray_results").glob("sweep-*/*/result.json")
                       if 2 <= _last_epoch(r) < 4]
            if running:
                time.sleep(1.5)  # let Tune snapshot its state (TUNE_GLOBAL_CHECKPOINT_S=1)
                break
            time.sleep(0.3)
        assert first.poll() is None, "the sweep finished before it could be interrupted"
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the driver and the Ray it started
        first.wait()
    assert not (tmp_path / "reports" / "sweep_trials.json").exists()

    second = subprocess.run([*cmd, "--resume"], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-4000:]
    assert "resuming sweep" in second.stderr
    summary = json.loads((tmp_path / "reports" / "sweep_trials.json").read_text())
    trials = summary["trials"]
    assert len(trials) == 4 and all(t["status"] == "TERMINATED" and t["epochs"] == 4
                                    for t in trials)
    # At least one trial went on from its checkpoint instead of starting again at epoch 1.
    assert any(t["resumed_from_epoch"] >= 1 for t in trials), [
        (t["trial_id"], t["resumed_from_epoch"], t["curve"]) for t in trials]
    parents, children = _children(mlflow_server.uri, "sweep-test")
    parent = [p for p in parents if p.data.tags.get("sweep") == summary["name"]]
    assert len(parent) == 1  # the resumed sweep reopened its parent run
    mine = {c.data.tags["experiment"] for c in children
            if c.data.tags["mlflow.parentRunId"] == parent[0].info.run_id}
    assert mine == {f"sweep-tiny-{t['trial_id']}" for t in trials}


def _last_epoch(result_json: Path) -> int:
    lines = result_json.read_text().splitlines()
    try:
        return int(json.loads(lines[-1])["epoch"]) if lines else 0
    except (ValueError, KeyError):  # a line being written
        return 0
