"""``model.pretrained: <a TransReID checkpoint>``: DDRN (and TransReID's JPM) trained from it.

Demo-sized: a TransReID-layout checkpoint (64-d, 3 blocks, 16x16 patches at stride 11 on 256x128,
SIE over 8 cameras, JPM) starts a 64-d ViT with 8x8 patches at stride 6 on 64x32 images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transreid_checkpoints import transreid_checkpoint

from ddrn.data import generate_synthetic, load_dataset, pack_dataset
from ddrn.engine.provenance import load_weights
from pipeline.params import ProjectConfig, config_from_dict
from pipeline.trial.experiment import prepare_training, train_experiment
from pipeline.trial.scoring import evaluate_experiment

SYN = {"num_train_ids": 6, "num_test_ids": 5, "num_distractor_ids": 1, "images_per_id": 4,
       "num_cameras": 2, "height": 64, "width": 32, "seed": 3}


def _raw(pretrained: str) -> dict:
    return {
        "profile": "tiny",
        "variants": {"ddrn": {"model": {"embedding_space": True, "id_feature": "local"},
                              "loss": {"orthogonal_weight": 1.0, "margin_head": "hs_arcface"}},
                     "transreid_jpm": {"model": {"jpm": True, "sie": True}}},
        "profiles": {"tiny": {
            "seed": 0,
            "datasets": {"occluded_duke": {"source": "synthetic", "synthetic": SYN}},
            "input": {"height": 64, "width": 32, "padding": 2},
            "model": {"embed_dim": 64, "depth": 3, "num_heads": 4, "patch_size": 8, "stride": 6,
                      "drop_path": 0.0, "num_embeddings": 8, "pretrained": pretrained},
            "train": {"epochs": 2, "batch_size": 8, "num_instances": 4, "lr": 0.01,
                      "warmup_epochs": 1, "iters_per_epoch": 2, "device": "cpu"},
            "evaluation": {"batch_size": 16},
            "tracking": {"enabled": False},
            "experiments": {"ablation": {"train_set": "occluded_duke",
                                         "test_sets": ["occluded_duke"],
                                         "variants": ["ddrn", "transreid_jpm"], "seeds": [0]}},
        }},
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[ProjectConfig, Path, dict]:
    root = tmp_path_factory.mktemp("finetune")
    state = transreid_checkpoint(stride=11, cameras=8, jpm=True, dataparallel=True, dim=64,
                                 depth=3, num_classes=702)
    torch.save(state, root / "transreid.pth")
    config = config_from_dict(_raw(str(root / "transreid.pth")))
    generate_synthetic("occluded_duke", config.datasets["occluded_duke"].synthetic,
                       root / "raw" / "occluded_duke")
    dataset = load_dataset("occluded_duke", root / "raw" / "occluded_duke", log_table=False)
    pack_dataset(dataset, root / "packed" / "occluded_duke", 64, 32, progress=False)
    return config, root, {k.removeprefix("module."): v for k, v in state.items()}


def test_ddrn_starts_from_a_transreid_checkpoint_and_trains(project) -> None:
    config, root, state = project
    spec = config.experiment("occluded_duke-ddrn-s0")
    model = prepare_training(config, spec, root / "packed").model
    vit = model.backbone
    torch.testing.assert_close(vit.blocks[0].attn.qkv.weight, state["base.blocks.0.attn.qkv.weight"])
    torch.testing.assert_close(vit.cls_token, state["base.cls_token"])
    # JPM never trains the backbone's own last block: DDRN's comes from the global branch b1.
    torch.testing.assert_close(vit.blocks[2].mlp.fc2.weight, state["b1.0.mlp.fc2.weight"])
    torch.testing.assert_close(vit.norm.weight, state["b1.1.weight"])
    assert vit.pos_embed.shape == (1, 1 + 10 * 5, 64)  # 22x11 at stride 11 -> 10x5 at stride 6
    assert vit.patch_embed.proj.weight.shape == (64, 3, 8, 8)  # 16x16 kernel resampled

    result = train_experiment(config, spec, root / "runs" / spec.name, packed_root=root / "packed")
    assert len(result.history) == 2
    trained, _ = load_weights(root / "runs" / spec.name / "model.pt", spec.name,
                              config.fingerprint(spec))
    moved = trained["backbone.blocks.0.attn.qkv.weight"] - state["base.blocks.0.attn.qkv.weight"]
    assert 0 < moved.abs().max() < 1.0  # trained from the checkpoint, not re-initialised


def test_transreid_jpm_variant_trains_and_evaluates_in_the_pipeline(project) -> None:
    config, root, state = project
    spec = config.experiment("occluded_duke-transreid_jpm-s0")
    model = prepare_training(config, spec, root / "packed").model
    # Both JPM branches start from the pretrained last block, as TransReID copies it.
    torch.testing.assert_close(model.part_branch[0].attn.proj.weight, state["b1.0.attn.proj.weight"])
    run_dir = root / "runs" / spec.name
    result = train_experiment(config, spec, run_dir, packed_root=root / "packed")
    assert len(result.history) == 2 and all(np.isfinite(h["loss"]) for h in result.history)
    doc = evaluate_experiment(config, spec, run_dir, root / "eval" / spec.name, root / "packed")
    assert 0 < doc["results"]["occluded_duke"]["mAP"] <= 100
    with np.load(root / "eval" / spec.name / "occluded_duke.npz") as npz:
        assert npz["query_features"].shape[1] == 5 * 64  # global + 4 local features
