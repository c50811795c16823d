"""pipeline.preflight: what needs no training is checked before Ray starts, in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tiny_project import pack_synthetic, tiny_params

from ddrn.errors import CheckpointError, DataError
from pipeline.params import load_config
from pipeline.preflight import check_experiments

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny profile's training set, generated and packed with its source recorded."""
    root = tmp_path_factory.mktemp("preflight")
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
    config = load_config(root / "params.yaml")
    pack_synthetic(config, root / "data")
    return root


def _config(root: Path, edit=None):
    raw = tiny_params()
    if edit:
        edit(raw["profiles"]["tiny"])
    path = root / "edited.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def _refusal(config, packed: Path, **kw) -> str:
    with pytest.raises((DataError, CheckpointError)) as info:
        check_experiments(config, config.experiments_list(), packed, **kw)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_matching_pack_passes(project: Path) -> None:
    config = _config(project)
    check_experiments(config, config.experiments_list(), project / "data/packed", test=True)


def test_pack_of_another_input_size_is_refused(project: Path) -> None:
    config = _config(project, lambda p: p["input"].update(height=48, width=24))
    message = _refusal(config, project / "data/packed")
    assert "packed at 32x16 but profiles.tiny.input is 48x24" in message
    assert "preprocess@occluded_duke" in message


def test_pack_of_another_dataset_config_is_refused(project: Path) -> None:
    config = _config(project, lambda p: p["datasets"]["occluded_duke"]["synthetic"].update(seed=9))
    assert "made from another dataset config" in _refusal(config, project / "data/packed")
    # The paper profile's real dataset on the demo's synthetic pack: refused the same way.
    config = _config(project, lambda p: p["datasets"]["occluded_duke"].update(
        source="/data/DukeMTMC-reID.zip"))
    assert "'/data/DukeMTMC-reID.zip'" in _refusal(config, project / "data/packed")


def test_pack_without_source_and_empty_split_are_refused(project: Path, tmp_path: Path) -> None:
    config = _config(project)
    meta = json.loads((project / "data/packed/occluded_duke/meta.json").read_text())
    packed = tmp_path / "packed" / "occluded_duke"
    packed.mkdir(parents=True)
    (packed / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "source"}))
    assert "pack of unknown origin" in _refusal(config, packed.parent)
    (packed / "meta.json").write_text(json.dumps({**meta, "splits": {**meta["splits"], "train": 0}}))
    assert "split 'train' is empty" in _refusal(config, packed.parent)
    (packed / "meta.json").write_text(json.dumps({**meta, "splits": {**meta["splits"],
                                                                     "gallery": 0}}))
    assert "split 'gallery' is empty" in _refusal(config, packed.parent, train=False, test=True)


def test_missing_pretrained_weights_are_refused(project: Path) -> None:
    config = _config(project, lambda p: p["model"].update(pretrained="/nowhere/vit.pth"))
    message = _refusal(config, project / "data/packed")
    assert "model.pretrained" in message and "/nowhere/vit.pth not found" in message


def _train_cli(root: Path, params: dict, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    (root / "cli.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled",
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pipeline.train", "--params", "cli.yaml", *args],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)
    return proc, time.monotonic() - t0


def _assert_one_line_before_ray(proc: subprocess.CompletedProcess, seconds: float) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and "Ray:" not in proc.stderr, proc.stderr
    assert seconds < 60
    return errors[0]


def test_train_stage_refuses_orthogonal_loss_without_embedding_space(project: Path) -> None:
    raw = tiny_params()
    raw["variants"]["vit_baseline"]["loss"] = {"orthogonal_weight": 1.0}
    proc, seconds = _train_cli(project, raw, "--experiment", "occluded_duke-vit_baseline-s0")
    assert "needs an Embedding Space" in _assert_one_line_before_ray(proc, seconds)


def test_train_stage_refuses_missing_pretrained_before_ray(project: Path) -> None:
    raw = tiny_params()
    raw["profiles"]["tiny"]["model"]["pretrained"] = "/nowhere/vit.pth"
    proc, seconds = _train_cli(project, raw)
    assert "/nowhere/vit.pth not found" in _assert_one_line_before_ray(proc, seconds)
    assert not (project / "runs").exists()
