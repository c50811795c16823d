"""The README's command, exactly as written, on TransReID checkpoints of each kind.

    python -m pipeline.evaluate_checkpoint --checkpoint model.pth \\
        --dataset-root /data/Occluded_Duke --dataset occluded_duke

run in a folder with no params.yaml and no ImageNet file, on a small synthetic Occluded-Duke in
its official layout. The checkpoints follow TransReID's published layout
(``tests/helpers/transreid_checkpoints.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transreid_checkpoints import reference_forward, transreid_checkpoint

from ddrn.config import InputConfig, SyntheticConfig
from ddrn.data import BatchAugment, generate_synthetic, load_dataset, open_packed, pack_dataset
from ddrn.evaluation import evaluate_rank, pairwise_distance

ROOT = Path(__file__).resolve().parents[2]
SYN = SyntheticConfig(num_train_ids=2, num_test_ids=4, num_distractor_ids=1, images_per_id=2,
                      num_cameras=8, height=128, width=64, seed=5)
KINDS = {
    "baseline": {"stride": 11},
    "module": {"stride": 11, "dataparallel": True},
    "sie": {"stride": 16, "cameras": 8},
    "stride16": {"stride": 16},
    "jpm": {"stride": 11, "cameras": 8, "jpm": True},
}


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data") / "Occluded_Duke"
    generate_synthetic("occluded_duke", SYN, root)
    return root


def run_readme_command(folder: Path, dataset_root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.evaluate_checkpoint", "--checkpoint", "model.pth",
         "--dataset-root", str(dataset_root), "--dataset", "occluded_duke"],
        cwd=folder, env=env, capture_output=True, text=True, timeout=600)


def reference_metrics(state: dict[str, torch.Tensor], stride: int, dataset_root: Path,
                      tmp: Path) -> dict[str, float]:
    """TransReID's evaluation of the same images: its forward, L2-normalised, euclidean."""
    pack_dataset(load_dataset("occluded_duke", dataset_root, log_table=False), tmp / "packed",
                 256, 128, progress=False)
    packed = open_packed(tmp / "packed")
    transform = BatchAugment(InputConfig(), train=False)  # 256x128, mean/std 0.5

    def feats(split):
        images = transform(torch.from_numpy(np.array(split.images)))
        return F.normalize(reference_forward(state, images, torch.as_tensor(split.camids), stride))

    q, g = packed.splits["query"], packed.splits["gallery"]
    res = evaluate_rank(pairwise_distance(feats(q), feats(g), "euclidean"), q.pids, g.pids,
                        q.camids, g.camids, max_rank=50)
    return res.as_percentages()


# Each run saves, loads and runs a full ViT-B (about a minute on a busy CPU): the baseline runs in
# the fast suite, all five kinds with -m slow.
@pytest.mark.parametrize("kind", [k if k == "baseline" else
                                  pytest.param(k, marks=pytest.mark.slow) for k in KINDS])
def test_readme_command_as_written(kind: str, dataset_root: Path, tmp_path: Path) -> None:
    state = transreid_checkpoint(**KINDS[kind])
    torch.save(state, tmp_path / "model.pth")
    assert not (tmp_path / "params.yaml").exists()
    proc = run_readme_command(tmp_path, dataset_root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout)
    assert {"R1", "mAP", "mINP"} <= set(results["occluded_duke"])
    assert "TransReID checkpoint: ViT 768-d x 12 blocks" in proc.stderr
    if kind == "jpm":
        assert "SIE (8 cameras), JPM" in proc.stderr
    expected = reference_metrics(state, KINDS[kind]["stride"], dataset_root, tmp_path)
    for metric in ("R1", "mAP", "mINP"):
        assert results["occluded_duke"][metric] == pytest.approx(expected[metric], abs=1e-3)


def test_unknown_checkpoint_is_one_line_saying_what_was_recognised(dataset_root: Path,
                                                                      tmp_path: Path) -> None:
    state = transreid_checkpoint(stride=16, dim=64, depth=2, num_classes=3)
    state["base.head.weight"] = torch.zeros(10, 64)  # a head TransReID never builds
    torch.save(state, tmp_path / "model.pth")
    proc = run_readme_command(tmp_path, dataset_root)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: model.pth: ")
    assert "recognised a 64-d ViT with 2 blocks" in lines[0]
    assert "not recognised: 1 keys of no TransReID layout (e.g. 'base.head.weight')" in lines[0]


def test_neck_feat_after_is_transreids_bn_feature(dataset_root: Path, tmp_path: Path) -> None:
    # A 64-d JPM + SIE checkpoint keeps this fast; TEST.NECK_FEAT: after on every branch.
    state = transreid_checkpoint(stride=12, cameras=8, jpm=True, dim=64, depth=3, num_classes=3)
    torch.save(state, tmp_path / "model.pth")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.evaluate_checkpoint", "--checkpoint", "model.pth",
         "--dataset-root", str(dataset_root), "--dataset", "occluded_duke", "--neck-feat", "after"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout)["occluded_duke"]
    packed = tmp_path / "ref"
    pack_dataset(load_dataset("occluded_duke", dataset_root, log_table=False), packed, 256, 128,
                 progress=False)
    splits = open_packed(packed).splits
    transform = BatchAugment(InputConfig(), train=False)

    def feats(split, neck_feat):
        images = transform(torch.from_numpy(np.array(split.images)))
        return F.normalize(reference_forward(state, images, torch.as_tensor(split.camids), 12,
                                             neck_feat=neck_feat))

    q, g = splits["query"], splits["gallery"]
    for neck_feat, must_match in (("after", True), ("before", False)):
        ref = evaluate_rank(pairwise_distance(feats(q, neck_feat), feats(g, neck_feat)),
                            q.pids, g.pids, q.camids, g.camids, max_rank=50).as_percentages()
        assert (ref["mAP"] == pytest.approx(got["mAP"], abs=1e-3)) == must_match, neck_feat
