"""A sweep trial's data: the real loader and scoring splits never see a validation or test identity."""

from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from sweep_project import tiny_params, write_tiny_project

from ddrn.data import open_packed
from ddrn.errors import ConfigError
from pipeline.params import load_config
from pipeline.sweep.space import apply_knobs
from pipeline.sweep.trial import prepare_trial, score_model, validation_split


def _person(path: str) -> int:
    """The dataset's own person id, from a DukeMTMC-style file name (``0005_c2_f0046985.jpg``)."""
    m = re.match(r"(-?\d+)_c\d+_", Path(path).name)
    assert m, path
    return int(m.group(1))


def test_the_trial_trains_and_scores_on_disjoint_identities(project: Path) -> None:
    config = load_config(project / "params.yaml")
    data_root = project / "data" / "packed"
    split = validation_split(config, data_root)
    assert split.summary()["num_ids"] == 2 and split.summary()["num_train_ids"] == 6
    spec = apply_knobs(config, {}, "probe")
    data = prepare_trial(config, spec, data_root, split)
    loader = data.setup.loader
    packed = open_packed(data_root / "occluded_duke")
    test_people = {_person(p) for s in ("query", "gallery") for p in packed.splits[s].paths}
    val_people = {_person(p) for s in (data.query, data.gallery) for p in s.paths}

    # Every label of every batch the trial's loader yields, over several epochs, mapped back to
    # the person it shows: never a validation identity.
    seen_labels: set[int] = set()
    for _ in range(3):
        for _images, labels, _cams in loader:
            seen_labels |= {int(x) for x in labels}
    train_people = {_person(p) for p, label in zip(loader.split.paths, loader.split.pids,
                                                    strict=True) if int(label) in seen_labels}
    assert train_people and not train_people & val_people
    assert {_person(p) for p in loader.split.paths}.isdisjoint(val_people)
    # The classifier is sized for the training identities only (labels 0..C-1).
    assert seen_labels <= set(range(len(split.train_ids)))
    with torch.no_grad():
        out = data.setup.model.eval()(next(iter(loader))[0], None)
    assert out.id_logits.shape[1] == len(split.train_ids)

    # The scoring splits are held-out training images: no test image, no test identity.
    train_paths = set(packed.splits["train"].paths)
    test_paths = set(packed.splits["query"].paths) | set(packed.splits["gallery"].paths)
    for s in (data.query, data.gallery):
        assert set(s.paths) <= train_paths and not set(s.paths) & test_paths
    assert not val_people & test_people and not train_people & test_people
    assert val_people == {_person(p) for p in np.asarray(packed.splits["train"].paths)[
        np.isin(packed.splits["train"].pids, split.val_ids)]}
    # Each validation query has a cross-camera gallery match, so its score is defined.
    for pid, cam in zip(data.query.pids, data.query.camids, strict=True):
        assert ((data.gallery.pids == pid) & (data.gallery.camids != cam)).any()
    scores = score_model(data.setup.model, data.query, data.gallery, config, data.setup.device)
    assert set(scores) == {"mAP", "R1", "mINP"} and 0.0 <= scores["mAP"] <= 100.0


def test_the_same_seed_gives_the_same_split_and_another_seed_another(project: Path) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    data_root = project / "data" / "packed"
    splits = []
    for seed in (0, 0, 5):
        params["profiles"]["tiny"]["sweep"]["validation"]["seed"] = seed
        path = project / f"params-{len(splits)}.yaml"
        path.write_text(yaml.safe_dump(params))
        splits.append(validation_split(load_config(path), data_root))
    assert splits[0].val_ids.tolist() == splits[1].val_ids.tolist()
    assert np.array_equal(splits[0].query, splits[1].query)
    assert splits[0].val_ids.tolist() != splits[2].val_ids.tolist()


@pytest.mark.parametrize(("fraction", "says"), [(0.1, "holds out 1"), (0.6, "holds out 5")])
def test_too_few_identities_is_a_one_line_error_naming_the_key(project: Path, fraction: float,
                                                              says: str) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["profiles"]["tiny"]["sweep"]["validation"]["fraction"] = fraction
    path = project / "params-bad.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError) as err:
        validation_split(load_config(path), project / "data" / "packed")
    msg = str(err.value)
    assert "\n" not in msg and "profiles.tiny.sweep.validation.fraction: " in msg and says in msg


def test_a_fraction_outside_0_1_is_rejected_when_params_load(tmp_path: Path) -> None:
    raw = tiny_params("sqlite:///unused.db")
    raw["profiles"]["tiny"]["sweep"]["validation"]["fraction"] = 1.0
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"profiles\.tiny\.sweep\.validation\.fraction: expected "
                                          r"a share in \(0, 1\), got 1\.0$"):
        load_config(path)


def test_a_project_error_fails_the_trial_once_and_leaves_no_scratch(
        tmp_path: Path, ray_local: None, no_tracking_env: None) -> None:
    """A knob combination the config rejects (x > D with the orthogonal loss) fails its trial
    once with the one-line error (not retried by Ray), the other trial is scored, and no
    checkpoint scratch folder is left behind."""
    from pipeline.sweep.search import run_sweep

    params = write_tiny_project(tmp_path, f"sqlite:///{tmp_path}/mlflow.db", num_samples=2,
                                max_epochs=1)
    raw = yaml.safe_load(params.read_text())
    raw["profiles"]["tiny"]["sweep"]["space"]["num_embeddings"]["choices"] = [16, 64]
    params.write_text(yaml.safe_dump(raw))
    started = time.time()
    ok = {"margin_head": "arcface", "sampling": "default", "num_embeddings": 16,
          "margin": 0.3, "scale": 20.0}
    outcome = run_sweep(load_config(params), tmp_path, data_root=tmp_path / "data" / "packed",
                        out_dir=tmp_path / "reports", storage_path=str(tmp_path / "ray_results"),
                        points_to_evaluate=[{**ok, "num_embeddings": 64}, ok])
    trials = json.loads(outcome.trials_path.read_text())["trials"]
    bad = [t for t in trials if t["knobs"]["num_embeddings"] == 64]
    good = [t for t in trials if t["knobs"]["num_embeddings"] == 16]
    assert len(bad) == 1 and len(good) == 1
    assert bad[0]["status"] == "ERROR" and bad[0]["mAP"] is None
    assert "num_embeddings=64 exceeds model.embed_dim=32" in bad[0]["error"]
    assert "\n" not in bad[0]["error"]
    assert good[0]["status"] == "TERMINATED" and good[0]["mAP"] is not None
    assert outcome.best["trial_id"] == good[0]["trial_id"]
    # Not retried: the failed trial's Tune folder holds one result and no error of a retry.
    exp = next((tmp_path / "ray_results").glob("sweep-*"))
    trial_dir = next(d for d in exp.iterdir() if d.is_dir() and bad[0]["trial_id"] in d.name)
    assert len((trial_dir / "result.json").read_text().splitlines()) == 1
    assert not list(trial_dir.glob("error*"))
    # Checkpoint scratch lives under the trial's run dir and is gone; nothing new in /tmp.
    assert not list(exp.glob(f"trial_runs/*/{'.tune-scratch-'}*"))
    assert not [p for p in Path(tempfile.gettempdir()).glob("ddrn-sweep-ckpt-*")
                if p.stat().st_mtime >= started]


def test_wall_seconds_add_up_over_resumed_attempts(tmp_path: Path) -> None:
    """A --resume (even of a finished sweep) reports the sweep's time, not the resume's alone."""
    from pipeline.sweep.trial import WALL_TIME_FILE, total_wall_seconds

    exp = tmp_path / "sweep-x"
    exp.mkdir()
    assert total_wall_seconds(str(exp), True, 300.0) == 300.0
    assert total_wall_seconds(str(exp), True, 5.25) == pytest.approx(305.25)
    assert json.loads((exp / WALL_TIME_FILE).read_text()) == {"seconds": 305.2}
    # Remote storage keeps no record: this attempt's seconds only, nothing written here.
    assert total_wall_seconds(str(tmp_path / "remote"), False, 7.0) == 7.0
    assert not (tmp_path / "remote").exists()
