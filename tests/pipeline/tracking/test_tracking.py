"""pipeline.tracking.runs against a real MLflow tracking server on loopback, read back with MlflowClient."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow_server import MlflowServer

from pipeline.params import TrackingConfig, config_from_dict
from pipeline.tracking import runs as tracking


def _spec():
    raw = {"profile": "t", "variants": {"ddrn": {"model": {"embedding_space": True}}},
           "profiles": {"t": {"datasets": {"occluded_duke": {}},
                              "experiments": {"a": {"train_set": "occluded_duke",
                                                    "variants": ["ddrn"], "seeds": [3]}}}}}
    config = config_from_dict(raw)
    return config, config.experiments_list()[0]


def test_relative_sqlite_uri_is_made_absolute(tmp_path: Path, no_tracking_env: None) -> None:
    uri = tracking.resolve_tracking_uri(TrackingConfig(), tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"


def test_environment_uri_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert tracking.resolve_tracking_uri(TrackingConfig(), tmp_path) == "http://127.0.0.1:1"


def test_flatten_nested_values() -> None:
    assert tracking.flatten("m", {"a": {"b": 1}, "c": (1, 2)}) == {"m.a.b": "1", "m.c": "[1, 2]"}


def test_disabled_tracking_yields_none(tmp_path: Path) -> None:
    with tracking.stage_run(TrackingConfig(enabled=False), tmp_path, "train", "t") as run:
        assert run is None


def test_stage_and_trial_runs_roundtrip(mlflow_server: MlflowServer, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    config, spec = _spec()
    cfg = TrackingConfig(experiment_name="test-roundtrip")
    run_dir = tmp_path / "runs" / spec.name
    run_dir.mkdir(parents=True)
    (run_dir / "history.json").write_text(json.dumps([{"loss": 2.0}, {"loss": 1.0}]))
    (run_dir / "model.pt").write_bytes(b"weights")

    with tracking.stage_run(cfg, tmp_path, "train", "t") as stage:
        fingerprint = config.fingerprint(spec)
        tracker = tracking.TrialTracker(stage.target(), spec, config.input, fingerprint)
        trial_id = tracker.start()
        tracker.on_epoch_end(1, {"loss": 2.0, "lr": 0.1}, None)
        tracker.on_epoch_end(2, {"loss": 1.0, "lr": 0.05}, None)
        tracker.finish(run_dir, ok=True)
        # A retried trial of the same stage invocation reopens the same run.
        again = tracking.TrialTracker(stage.target(), spec, config.input, fingerprint)
        assert again.start() == trial_id
        again.finish(run_dir, ok=True)

    client = MlflowClient(mlflow_server.uri)
    parent = client.get_run(stage.run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["stage"] == "train"
    trial = client.get_run(trial_id)
    assert trial.data.tags["mlflow.parentRunId"] == stage.run_id
    assert trial.data.tags["experiment"] == spec.name
    assert trial.data.params["model.embedding_space"] == "True"
    assert trial.data.params["fingerprint"] == config.fingerprint(spec)
    history = client.get_metric_history(trial_id, "loss")
    assert [(m.step, m.value) for m in history] == [(1, 2.0), (2, 1.0)]
    artifacts = {a.path for a in client.list_artifacts(trial_id)}
    assert "history.json" in artifacts and "checkpoint" in artifacts
    assert [a.path for a in client.list_artifacts(trial_id, "checkpoint")] == ["checkpoint/model.pt"]

    # Final metrics from the evaluate stage land in the trial's run, once.
    doc = {"experiment": spec.name, "fingerprint": config.fingerprint(spec),
           "results": {"occluded_duke": {"R1": 50.0, "mAP": 40.0, "num_query": 10},
                       "occluded_duke/twin": {"R1": 60.0}}}
    assert tracking.log_evaluation(cfg, tmp_path, doc) == trial_id
    assert tracking.log_evaluation(cfg, tmp_path, doc) == trial_id
    metrics = client.get_run(trial_id).data.metrics
    assert metrics["occluded_duke.R1"] == 50.0 and metrics["occluded_duke/twin.R1"] == 60.0
    assert len(client.get_metric_history(trial_id, "occluded_duke.mAP")) == 1


def test_failed_stage_marks_parent_failed(mlflow_server: MlflowServer, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    cfg = TrackingConfig(experiment_name="test-failed")
    with pytest.raises(RuntimeError), tracking.stage_run(cfg, tmp_path, "report", "t") as stage:
        raise RuntimeError("boom")
    assert MlflowClient(mlflow_server.uri).get_run(stage.run_id).info.status == "FAILED"


def test_unreachable_server_is_a_one_line_error(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from ddrn.errors import DDRNError

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(DDRNError, match="127.0.0.1:9"):
        tracking.ensure_experiment("http://127.0.0.1:9", "x")


def test_killed_stage_parent_run_is_marked_killed_by_the_next_one(
        mlflow_server: MlflowServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A stage SIGKILLed inside its parent run leaves it RUNNING; the next invocation of the same
    stage closes it as KILLED, and leaves a live invocation's run alone."""
    import os
    import subprocess
    import sys

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    cfg = TrackingConfig(experiment_name="kill-parent")
    root = Path(__file__).resolve().parents[3]
    killed = subprocess.run(
        [sys.executable, "-c",
         "import os, signal\n"
         "from pipeline.params import TrackingConfig\n"
         "from pipeline.tracking.runs import stage_run\n"
         "with stage_run(TrackingConfig(experiment_name='kill-parent'), '.', 'train', 't') as r:\n"
         "    print(r.run_id, flush=True)\n"
         "    os.kill(os.getpid(), signal.SIGKILL)\n"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True,
        text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    killed_id = killed.stdout.strip()
    client = MlflowClient(mlflow_server.uri)
    assert client.get_run(killed_id).info.status == "RUNNING"
    with tracking.stage_run(cfg, tmp_path, "evaluate", "t"):  # another stage: not its business
        assert client.get_run(killed_id).info.status == "RUNNING"
    with tracking.stage_run(cfg, tmp_path, "train", "t") as live:
        assert client.get_run(killed_id).info.status == "KILLED"
        # This live invocation's own run is not touched by a concurrent one.
        with tracking.stage_run(cfg, tmp_path, "train", "t"):
            assert client.get_run(live.run_id).info.status == "RUNNING"
    assert client.get_run(live.run_id).info.status == "FINISHED"


def test_results_view_is_a_shared_ui_view_of_the_trials(mlflow_server: MlflowServer,
                                                        tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # MLflow's UI shows no metric column by default; the evaluate stage saves a shared view
    # (experiment tag read with ?viewStateShareKey=) with the headline metrics as columns.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    cfg = TrackingConfig(experiment_name="test-view")
    with tracking.stage_run(cfg, tmp_path, "evaluate", "t") as stage:
        path = stage.publish_results_view(["occluded_duke", "market1501"])
    assert path == f"#/experiments/{stage.experiment_id}?viewStateShareKey=results"
    tags = MlflowClient(mlflow_server.uri).get_experiment(stage.experiment_id).tags
    view = json.loads(tags["mlflow.sharedViewState.results"])
    assert view["searchFilter"] == "tags.run_kind = 'trial'"
    assert view["orderByKey"] == "metrics.`occluded_duke.mAP`" and view["orderByAsc"] is False
    assert view["selectedColumns"][3:7] == ["metrics.`occluded_duke.R1`", "metrics.`occluded_duke.mAP`",
                                            "metrics.`market1501.R1`", "metrics.`market1501.mAP`"]
