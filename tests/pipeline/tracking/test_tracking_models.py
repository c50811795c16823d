"""Trained models as MLflow Models in the registry, against a real tracking server on loopback:
a model trained for real, logged by the evaluate stage's function, registered as its variant's
best, then loaded back with ``mlflow.pytorch.load_model("models:/<name>/<version>")``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from mlflow import MlflowClient
from mlflow_server import MlflowServer
from tiny_project import pack_synthetic

from pipeline.params import load_config
from pipeline.tracking import models as tracking_models
from pipeline.tracking import runs as tracking

SYN = {"num_train_ids": 4, "num_test_ids": 4, "num_distractor_ids": 1, "images_per_id": 4,
       "num_cameras": 2, "seed": 5}


def _params(experiment_name: str) -> dict:
    return {"profile": "tiny", "variants": {
        "vit_baseline": {"table2_index": 0},
        "ddrn": {"table2_index": 4, "model": {"embedding_space": True},
                 "loss": {"orthogonal_weight": 1.0, "margin_head": "hs_arcface"}}},
        "profiles": {"tiny": {
            "datasets": {"occluded_duke": {"synthetic": SYN}},
            "input": {"height": 32, "width": 16, "padding": 2},
            "model": {"embed_dim": 16, "depth": 2, "num_heads": 2, "patch_size": 8, "stride": 8,
                      "num_embeddings": 8, "drop_path": 0.0},
            "train": {"epochs": 1, "batch_size": 8, "num_instances": 2, "warmup_epochs": 0,
                      "device": "cpu", "iters_per_epoch": 2},
            "experiments": {"ablation": {"train_set": "occluded_duke",
                                         "test_sets": ["occluded_duke"],
                                         "variants": ["ddrn"], "seeds": [0, 1]}},
            "tracking": {"experiment_name": experiment_name}}}}


def test_registered_model_extracts_the_checkpoints_features(
        mlflow_server: MlflowServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from ddrn.data import open_packed
    from ddrn.evaluation import extract_features
    from pipeline.trial.experiment import train_experiment
    from pipeline.trial.scoring import load_trained_model

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_params("registry-test")))
    config = load_config(tmp_path / "params.yaml")
    packed_root = tmp_path / "data/packed"
    pack_synthetic(config, tmp_path / "data")
    query = open_packed(packed_root / "occluded_duke").splits["query"]

    # Two seeds of one variant trained for real, each in its own trial run; seed 1 scores better.
    docs = []
    with tracking.stage_run(config.tracking, tmp_path, "train", "tiny") as stage:
        for spec in config.experiments_list():
            run_dir = tmp_path / "runs" / spec.name
            tracker = tracking.TrialTracker(stage.target(log_checkpoints=False), spec,
                                            config.input, config.fingerprint(spec))
            tracker.start()
            train_experiment(config, spec, run_dir, callbacks=(tracker,), resume=False,
                             packed_root=packed_root)
            tracker.finish(run_dir)
            docs.append({"experiment": spec.name, "variant": spec.variant, "seed": spec.seed,
                         "train_set": spec.train_set, "fingerprint": config.fingerprint(spec),
                         "results": {"occluded_duke": {"mAP": 10.0 + spec.seed, "R1": 5.0}}})
    models = {}
    for spec in config.experiments_list():
        model, _ = load_trained_model(config, spec, tmp_path / "runs" / spec.name, packed_root,
                                   torch.device("cpu"))
        models[spec.seed] = model
        uri = tracking_models.log_trained_model(config, spec, model,
                                                np.asarray(query.images[:2]), tmp_path)
        assert uri is not None
        # Idempotent: logging again returns the same model, logs nothing new.
        assert tracking_models.log_trained_model(config, spec, model,
                                                 np.asarray(query.images[:2]), tmp_path) == uri

    registered = tracking_models.register_best(config.tracking, tmp_path, docs)
    name = "registry-test-occluded_duke-ddrn"
    assert registered == {name: f"models:/{name}/1"}
    assert tracking_models.register_best(config.tracking, tmp_path, docs) == registered

    client = MlflowClient(mlflow_server.uri)
    version = client.get_model_version(name, "1")
    best_run = client.get_run(version.run_id)
    assert best_run.data.tags["experiment"] == "occluded_duke-ddrn-s1"
    assert best_run.data.tags["run_kind"] == "trial"
    assert best_run.info.run_name == "ddrn-s1 occluded_duke"
    logged = client.get_logged_model(best_run.data.tags["model_uri"].removeprefix("models:/"))
    assert logged.experiment_id == best_run.info.experiment_id  # not MLflow's "Default"

    import mlflow.pytorch
    from mlflow.models import get_model_info

    info = get_model_info(f"models:/{name}/1")
    (inp,), (out,) = info.signature.inputs.inputs, info.signature.outputs.inputs
    assert (str(inp.type), tuple(inp.shape)) == ("uint8", (-1, 32, 16, 3))
    assert (str(out.type), tuple(out.shape)) == ("float32", (-1, 16))
    loaded = mlflow.pytorch.load_model(f"models:/{name}/1")
    served = loaded(torch.from_numpy(np.array(query.images)))
    expected = extract_features(models[1], query, config.input, 64, "cpu")
    assert served.shape == expected.shape == (len(query), 16)
    torch.testing.assert_close(served, expected, rtol=1e-5, atol=1e-6)
    # and it is the best seed's model, not the other one's
    other = extract_features(models[0], query, config.input, 64, "cpu")
    assert not torch.allclose(served, other, atol=1e-3)
