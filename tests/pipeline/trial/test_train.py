"""pipeline.train / pipeline.trial.tune / pipeline.trial.rundir: run-dir states, resources on a real local Ray,
and the whole trial path (real Ray Tune trials training a tiny model, tracked in a real MLflow
server) once :mod:`pipeline.trial.experiment` is available."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from tiny_project import pack_synthetic, tiny_params

from ddrn.engine.provenance import provenance, save_weights
from pipeline import train
from pipeline.params import RayConfig, config_from_dict, load_config
from pipeline.preflight import check_experiments
from pipeline.trial import rundir, tune


def finish(run_dir: Path, spec, fingerprint: str) -> dict:
    """What a finished trial leaves: ``model.pt`` with its provenance, then ``done.json``."""
    save_weights(run_dir / "model.pt", {"w": torch.zeros(2)},
                 provenance(spec.name, fingerprint, 2, 2, finished=True))
    return rundir.mark_done(run_dir, spec, fingerprint, epochs=2, seconds=1.0)


def test_plan_skips_done_resumes_partial_and_clears_stale(tmp_path: Path) -> None:
    config = config_from_dict(tiny_params())
    base, ddrn = config.experiments_list()[1], config.experiments_list()[0]
    assert (base.variant, ddrn.variant) == ("vit_baseline", "ddrn")
    runs = tmp_path / "runs"
    rundir.prepare(runs / base.name, base, config.fingerprint(base))
    finish(runs / base.name, base, config.fingerprint(base))
    todo, done = train.plan(config, [base, ddrn], runs)
    assert [s.name for s in done] == [base.name] and [s.name for s in todo] == [ddrn.name]

    # An unfinished run with the same settings is kept (it resumes) ...
    rundir.prepare(runs / ddrn.name, ddrn, config.fingerprint(ddrn))
    (runs / ddrn.name / "checkpoints").mkdir()
    (runs / ddrn.name / "checkpoints" / "last.pt").write_bytes(b"x")
    train.plan(config, [ddrn], runs)
    assert (runs / ddrn.name / "checkpoints" / "last.pt").is_file()

    # ... a knob change of one variant makes only that variant's run stale and cleared.
    raw = tiny_params()
    raw["variants"]["ddrn"]["loss"]["orthogonal_weight"] = 0.5
    changed = config_from_dict(raw)
    todo, done = train.plan(changed, changed.experiments_list(), runs)
    assert [s.name for s in todo] == [ddrn.name] and [s.name for s in done] == [base.name]
    assert not (runs / ddrn.name).exists()

    # Other training images (the synthetic set's config) retrain every experiment on that set,
    # although the resolved recipe (ExperimentSpec.fingerprint) is the same.
    raw = tiny_params()
    raw["profiles"]["tiny"]["datasets"]["occluded_duke"]["synthetic"]["seed"] = 2
    regenerated = config_from_dict(raw)
    assert regenerated.experiment(base.name).fingerprint(regenerated.input) == \
        base.fingerprint(config.input)
    assert regenerated.fingerprint(regenerated.experiment(base.name)) != config.fingerprint(base)
    todo, done = train.plan(regenerated, regenerated.experiments_list(), runs)
    assert sorted(s.name for s in todo) == sorted([base.name, ddrn.name]) and not done


def test_done_json_records_resume_and_attempts(tmp_path: Path) -> None:
    config = config_from_dict(tiny_params())
    spec = config.experiments_list()[0]
    fp, run_dir = config.fingerprint(spec), tmp_path / spec.name
    assert rundir.prepare(run_dir, spec, fp) == "empty"
    assert rundir.prepare(run_dir, spec, fp) == "partial"  # a rerun after a kill
    save_weights(run_dir / "model.pt", {"w": torch.zeros(2)}, provenance(spec.name, fp, 2, 2, True))
    done = rundir.mark_done(run_dir, spec, fp, epochs=2, seconds=1.0, resumed_from=1)
    assert json.loads((run_dir / "done.json").read_text()) == done
    assert (done["fingerprint"], done["resumed_from"], done["attempts"]) == (fp, 1, 2)
    assert rundir.run_state(run_dir, fp) == "done"


def test_state_of_unknown_dir_is_stale(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "junk").write_text("?")
    assert rundir.run_state(tmp_path / "x", "abc") == "stale"
    assert rundir.run_state(tmp_path / "missing", "abc") == "empty"


def test_missing_packed_data_is_a_one_line_error(tmp_path: Path) -> None:
    from ddrn.errors import DataError

    config = config_from_dict(tiny_params())
    with pytest.raises(DataError, match="preprocess@occluded_duke"):
        check_experiments(config, config.experiments_list(), tmp_path)


def test_resources_never_ask_for_absent_gpus(ray_local: None) -> None:
    with tune.ray_session(RayConfig()) as cluster:
        assert cluster["CPU"] == 2.0
        wanted = RayConfig(cpus_per_trial=4, gpus_per_trial=0.5)
        assert tune.trial_resources(wanted, cluster) == {"cpu": 2.0, "gpu": 0.0}
    assert tune.trial_resources(RayConfig(gpus_per_trial=0.25), {"CPU": 8, "GPU": 1}) == \
        {"cpu": 1.0, "gpu": 0.25}


@pytest.fixture
def tiny_project(tmp_path: Path) -> tuple[Path, Path]:
    """params.yaml plus the tiny training set, generated and packed for real."""
    pytest.importorskip("pipeline.trial.experiment", reason="pipeline.trial.experiment not available yet")

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params()))
    config = load_config(params)
    pack_synthetic(config, tmp_path / "data")
    return tmp_path, params


def test_trials_train_through_ray_and_mlflow(tiny_project: tuple[Path, Path], ray_local: None,
                                             mlflow_server, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    root, params = tiny_project
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    config = load_config(params)
    specs = config.experiments_list()
    counts = train.train(config, specs, root, root / "runs")
    assert counts == {"trained": 2, "skipped": 0, "failed": 0}
    for spec in specs:
        done = json.loads((root / "runs" / spec.name / "done.json").read_text())
        assert done["fingerprint"] == config.fingerprint(spec)
        assert (root / "runs" / spec.name / "model.pt").is_file()
        # Tune's hand-over folders live in the run dir (never /tmp) and are gone once done.
        assert not list((root / "runs" / spec.name).glob(f"{rundir.SCRATCH_PREFIX}*"))
    client = MlflowClient(mlflow_server.uri)
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id], "tags.stage = 'train'")
    trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.tags["experiment"] for r in trials) == sorted(s.name for s in specs)
    for r in trials:
        assert len(client.get_metric_history(r.info.run_id, "lr")) == 2  # one per epoch
        # HS-ArcFace's routing shares reach MLflow under their history names (k = 3).
        routing = [f"hs_stop_share_{i}" for i in (1, 2, 3)] + ["hs_marker_win_rate_1",
                                                              "hs_marker_win_rate_2"]
        has_hs = r.data.tags["experiment"].split("-")[1] == "ddrn"
        for key in routing:
            assert len(client.get_metric_history(r.info.run_id, key)) == (2 if has_hs else 0), key
    # Nothing changed: every trial is skipped, Ray is not even started.
    assert train.train(config, specs, root, root / "runs")["skipped"] == 2


def test_a_reused_worker_trains_what_a_fresh_one_does(tiny_project: tuple[Path, Path],
                                                     ray_local: None,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Trials share Ray workers (no new process per trial), and the second trial of a worker
    ends with the very weights the same experiment gets from a worker of its own."""
    from ddrn.engine.provenance import load_weights

    root, params = tiny_project
    monkeypatch.chdir(root)
    config = load_config(params)
    first, second = (s.name for s in config.experiments_list())
    one_at_a_time = RayConfig(cpus_per_trial=1, max_concurrent_trials=1, max_failures=0)

    def run(names: list[str], runs: str) -> list[tune.TrialOutcome]:
        job = tune.TrialJob(config=config, root=str(root), runs_dir=str(root / runs))
        return tune.run_trials(job, names, one_at_a_time, f"reuse-{runs}")

    shared = run([first, second], "shared")
    assert [o.ok for o in shared] == [True, True]
    assert shared[0].worker_pid is not None and shared[0].worker_pid == shared[1].worker_pid
    alone = run([second], "alone")
    assert alone[0].ok and alone[0].worker_pid != shared[1].worker_pid
    fingerprint = config.fingerprint(config.experiment(second))
    reused, _ = load_weights(root / "shared" / second / "model.pt", second, fingerprint)
    fresh, _ = load_weights(root / "alone" / second / "model.pt", second, fingerprint)
    assert reused.keys() == fresh.keys()
    for key in reused:
        assert torch.equal(reused[key], fresh[key]), key


def test_corrupt_finished_run_is_trained_again(tmp_path: Path) -> None:
    config = config_from_dict(tiny_params())
    spec = config.experiments_list()[0]
    run_dir = tmp_path / "runs" / spec.name
    rundir.prepare(run_dir, spec, config.fingerprint(spec))
    finish(run_dir, spec, config.fingerprint(spec))
    assert rundir.run_state(run_dir, config.fingerprint(spec)) == "done"
    model = run_dir / "model.pt"
    model.write_bytes(model.read_bytes()[:100])  # truncated: a full disk, a bad copy
    assert rundir.run_state(run_dir, config.fingerprint(spec)) == "corrupt"
    todo, done = train.plan(config, [spec], tmp_path / "runs")
    assert [s.name for s in todo] == [spec.name] and not done and not run_dir.exists()
    # A finished run without model.pt is not "done" either.
    rundir.prepare(run_dir, spec, config.fingerprint(spec))
    finish(run_dir, spec, config.fingerprint(spec))
    model.unlink()
    assert rundir.run_state(run_dir, config.fingerprint(spec)) == "corrupt"


def test_project_errors_in_a_trial_are_not_retried(tiny_project: tuple[Path, Path],
                                                   ray_local: None, no_tracking_env: None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A deterministic error (here an unreadable checkpoint) ends the trial once, with its one-line
    message; a retry (``ray.max_failures: 1``) would only fail the same way."""
    root, params = tiny_project
    raw = tiny_params()
    raw["profiles"]["tiny"]["tracking"] = {"enabled": False}
    params.write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(root)
    config = load_config(params)
    spec = config.experiment("occluded_duke-vit_baseline-s0")
    run_dir = root / "runs" / spec.name
    rundir.prepare(run_dir, spec, config.fingerprint(spec))
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(train.TrainingError) as info:
        train.train(config, [spec], root, root / "runs")
    message = str(info.value)
    assert "\n" not in message and "last.pt: cannot be read" in message
    spec_doc = json.loads((run_dir / "spec.json").read_text())
    assert spec_doc["attempts"] == 2  # the prepare above, then exactly one trial start
    assert not list(run_dir.glob(f"{rundir.SCRATCH_PREFIX}*"))
