"""pipeline.trial.experiment end to end on a tiny synthetic packed set: train, resume, evaluate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_project import DDRN_VARIANT, pack_synthetic, scratch_params

from ddrn.engine.checkpoint import load_checkpoint
from ddrn.errors import CheckpointError
from pipeline import evaluate as evaluate_stage
from pipeline.cli import run_stage
from pipeline.evaluate_checkpoint import evaluate_checkpoint
from pipeline.params import ProjectConfig, config_from_dict
from pipeline.trial.eval_record import EvalRecord
from pipeline.trial.experiment import train_experiment
from pipeline.trial.scoring import evaluate_experiment

RAW = scratch_params({"vit_baseline": {}, "ddrn": DDRN_VARIANT})


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[ProjectConfig, Path]:
    root = tmp_path_factory.mktemp("project")
    config = config_from_dict(RAW)
    pack_synthetic(config, root)
    return config, root


@pytest.mark.parametrize("variant", ["vit_baseline", "ddrn"])
def test_train_resume_and_evaluate(project: tuple[ProjectConfig, Path], variant: str,
                                   tmp_path: Path) -> None:
    config, root = project
    spec = config.experiment(f"occluded_duke-{variant}-s0")
    run_dir = root / "runs" / spec.name
    result = train_experiment(config, spec, run_dir, packed_root=root / "packed")
    assert len(result.history) == 2
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"] == 2
    assert len(json.loads((run_dir / "history.json").read_text())) == 2
    weights = torch.load(run_dir / "model.pt", weights_only=True)["model"]
    # A finished run resumes to "nothing left to do" and keeps its weights.
    again = train_experiment(config, spec, run_dir, packed_root=root / "packed")
    assert again.resumed_from == 2
    after = torch.load(run_dir / "model.pt", weights_only=True)["model"]
    assert all(torch.equal(weights[k], after[k]) for k in weights)

    doc = evaluate_experiment(config, spec, run_dir, root / "eval" / spec.name, root / "packed")
    assert doc["experiment"] == spec.name and doc["variant"] == variant
    assert doc["fingerprint"] == config.fingerprint(spec)
    assert set(doc["results"]) == {"occluded_duke", "occluded_duke/twin"}
    for res in doc["results"].values():
        assert {"R1", "R5", "R10", "mAP", "mINP", "num_query"} <= set(res)
        assert 0 <= res["R1"] <= res["R5"] <= res["R10"] <= 100 and 0 < res["mAP"] <= 100
    eval_file = root / "eval" / spec.name / "occluded_duke.npz"
    with np.load(eval_file) as npz:
        q, g = npz["query_features"], npz["gallery_features"]
        assert q.dtype == np.float16 and q.shape[1] == g.shape[1] == 32
        assert npz["topk"].shape == (len(q), 10) and npz["topk"].max() < len(g)
        assert npz["query_occluded"].dtype == bool and len(npz["query_pids"]) == len(q)
        assert npz["twin_features"].shape == q.shape
    record = EvalRecord.load(eval_file)
    for results, query in ((record.query_results, record.query),
                           (record.twin_results, record.twin)):
        assert results is not None and query is not None
        top = results.topk
        # The protocol's junk (same identity and camera) is never ranked ...
        junk = ((record.gallery.pids[top] == query.pids[:, None])
                & (record.gallery.camids[top] == query.camids[:, None]))
        assert not junk.any()
        # ... and the first true match in the ranking is where the metrics found it.
        hit = record.gallery.pids[top] == query.pids[:, None]
        per = results.per_query
        seen = per.first_hit < top.shape[1]
        assert (hit[per.index[seen], per.first_hit[seen]]).all()
        assert (np.diff(results.topk_distances, axis=1) >= 0).all()
    assert EvalRecord.from_arrays(record.to_arrays()).to_arrays().keys() == record.to_arrays().keys()
    assert record.save(tmp_path / "again.npz").read_bytes() == eval_file.read_bytes()


def test_evaluate_stage_writes_metrics(project: tuple[ProjectConfig, Path], tmp_path: Path) -> None:
    config, root = project
    spec = config.experiment("occluded_duke-vit_baseline-s0")
    if not (root / "runs" / spec.name / "model.pt").is_file():
        train_experiment(config, spec, root / "runs" / spec.name, packed_root=root / "packed")
    docs = evaluate_stage.evaluate(config, [spec], root / "runs", tmp_path / "eval",
                                   tmp_path / "metrics", root / "packed", track=False)
    written = json.loads((tmp_path / "metrics" / f"{spec.name}.json").read_text())
    assert written == json.loads(json.dumps(docs[0]))
    # The same numbers as evaluate_experiment, and per-query results that average to them.
    plain = evaluate_experiment(config, spec, root / "runs" / spec.name, tmp_path / "plain",
                                root / "packed")
    assert plain["results"].keys() == docs[0]["results"].keys()
    for key, res in plain["results"].items():
        assert res == pytest.approx(docs[0]["results"][key])
    with np.load(tmp_path / "eval" / spec.name / "occluded_duke.npz") as npz:
        for split, key in (("query", "occluded_duke"), ("twin", "occluded_duke/twin")):
            res = docs[0]["results"][key]
            scored = npz[f"{split}_scored"]
            assert len(scored) == res["num_query"] and np.all(np.diff(scored) > 0)
            assert scored.max() < len(npz[f"{split}_pids"])
            assert 100 * (npz[f"{split}_first_hit"] == 0).mean() == pytest.approx(res["R1"])
            assert 100 * (npz[f"{split}_first_hit"] < 5).mean() == pytest.approx(res["R5"])
            assert 100 * npz[f"{split}_ap"].mean() == pytest.approx(res["mAP"])
            assert 100 * npz[f"{split}_inp"].mean() == pytest.approx(res["mINP"])


def test_evaluate_checkpoint_reads_own_state_dicts(project: tuple[ProjectConfig, Path],
                                                   tmp_path: Path) -> None:
    # TransReID's own checkpoints: tests/pipeline/test_evaluate_checkpoint.py.
    config, root = project
    spec = config.experiment("occluded_duke-vit_baseline-s0")
    run_dir = root / "runs" / spec.name
    if not (run_dir / "model.pt").is_file():
        train_experiment(config, spec, run_dir, packed_root=root / "packed")
    raw = root / "raw" / "occluded_duke"
    own = evaluate_checkpoint(run_dir / "model.pt", raw, "occluded_duke", config, "vit_baseline")
    # Wrapped and with a DataParallel prefix: the same weights, the same numbers.
    state = torch.load(run_dir / "model.pt", weights_only=True)["model"]
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, tmp_path / "dp.pth")
    wrapped = evaluate_checkpoint(tmp_path / "dp.pth", raw, "occluded_duke", config, "vit_baseline")
    assert wrapped["occluded_duke"]["mAP"] == pytest.approx(own["occluded_duke"]["mAP"])
    with pytest.raises(CheckpointError, match="do not fit") as err:
        evaluate_checkpoint(tmp_path / "dp.pth", raw, "occluded_duke", config, "ddrn")
    assert "\n" not in str(err.value)


def test_foreign_checkpoint_is_refused_at_resume(project: tuple[ProjectConfig, Path],
                                                 tmp_path: Path) -> None:
    """seed 0's last.pt copied into another experiment's run dir does not 'resume' it."""
    config, root = project
    source = config.experiment("occluded_duke-vit_baseline-s0")
    if not (root / "runs" / source.name / "model.pt").is_file():
        train_experiment(config, source, root / "runs" / source.name, packed_root=root / "packed")
    target = config.experiment("occluded_duke-ddrn-s0")
    run_dir = tmp_path / target.name
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copy2(root / "runs" / source.name / "checkpoints" / "last.pt",
                 run_dir / "checkpoints" / "last.pt")
    with pytest.raises(CheckpointError, match=f"belongs to experiment '{source.name}', not "
                                              f"'{target.name}'"):
        train_experiment(config, target, run_dir, packed_root=root / "packed")
    assert not (run_dir / "model.pt").exists()


def test_unfinished_run_is_refused_unless_allow_partial(project: tuple[ProjectConfig, Path],
                                                         tmp_path: Path, capsys) -> None:
    config, root = project
    spec = config.experiment("occluded_duke-vit_baseline-s0")
    done = root / "runs" / spec.name
    if not (done / "model.pt").is_file():
        train_experiment(config, spec, done, packed_root=root / "packed")
    # What a killed train leaves: a checkpoint, no model.pt.
    runs = tmp_path / "runs"
    (runs / spec.name / "checkpoints").mkdir(parents=True)
    state = torch.load(done / "checkpoints" / "last.pt", weights_only=True)
    state["epoch"] = state["provenance"]["epoch"] = 1
    torch.save(state, runs / spec.name / "checkpoints" / "last.pt")
    with pytest.raises(CheckpointError, match=r"unfinished \(epoch 1 of 2\).*--allow-partial"):
        evaluate_stage.evaluate(config, [spec], runs, tmp_path / "eval", tmp_path / "metrics",
                                root / "packed", track=False)
    assert not (tmp_path / "metrics").exists()
    docs = evaluate_stage.evaluate(config, [spec], runs, tmp_path / "eval", tmp_path / "metrics",
                                   root / "packed", track=False, allow_partial=True)
    written = json.loads((tmp_path / "metrics" / f"{spec.name}.json").read_text())
    assert written == docs[0]
    assert (written["partial"], written["epochs_trained"], written["epochs"]) == (True, 1, 2)
    # The command line: one line and exit 2 without the flag; metrics marked partial with it.
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps(RAW))
    argv = ["--params", str(params), "--runs-dir", str(runs), "--eval-dir", str(tmp_path / "e"),
            "--metrics-dir", str(tmp_path / "m"), "--packed-root", str(root / "packed"),
            "--no-tracking", "--experiment", spec.name]
    capsys.readouterr()
    assert run_stage(evaluate_stage.main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "unfinished (epoch 1 of 2)" in err
    assert run_stage(evaluate_stage.main, [*argv, "--allow-partial"]) == 0
    assert "PARTIAL (epoch 1 of 2)" in capsys.readouterr().out
    assert json.loads((tmp_path / "m" / f"{spec.name}.json").read_text())["partial"] is True
    # The finished run's metrics carry no partial mark.
    full = evaluate_stage.evaluate(config, [spec], root / "runs", tmp_path / "eval2",
                                   tmp_path / "metrics2", root / "packed", track=False)
    assert "partial" not in full[0]
