import dataclasses

import pytest
import torch

from ddrn.config import ModelConfig
from ddrn.errors import CheckpointError, ConfigError
from ddrn.models.vit import OverlapPatchEmbed, build_vit, load_vit_weights

TINY = ModelConfig(embed_dim=32, depth=2, num_heads=2, patch_size=8, stride=6, drop_path=0.0)


def test_overlapping_grid_matches_transreid():
    assert OverlapPatchEmbed((256, 128), 16, stride=11).grid_size == (22, 11)  # 242 tokens
    assert OverlapPatchEmbed((256, 128), 16, stride=12).num_patches == 210
    assert OverlapPatchEmbed((256, 128), 16, stride=16).num_patches == 128


def test_build_vit_takes_dims_from_config_and_pos_embed_from_grid():
    vit = build_vit(TINY, (64, 32))
    assert vit.embed_dim == 32 and len(vit.blocks) == 2
    assert vit.pos_embed.shape == (1, 1 + 10 * 5, 32)
    assert vit.forward_features(torch.randn(2, 3, 64, 32)).shape == (2, 51, 32)


def test_unknown_backbone_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match="model.backbone"):
        build_vit(dataclasses.replace(TINY, backbone="resnet18"), (64, 32))


def test_missing_pretrained_file_says_where_to_put_it(tmp_path):
    vit = build_vit(TINY, (64, 32))
    missing = tmp_path / "weights" / "vit.pth"
    with pytest.raises(CheckpointError, match=f"place it at {missing}") as info:
        load_vit_weights(vit, str(missing), TINY.backbone)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_pretrained_file_is_loaded_with_pos_embed_resampled(tmp_path, suffix):
    # A "pretrained" checkpoint of the same ViT at 224x224 with non-overlapping 8x8 patches
    # (a 28x28 grid) plus an ImageNet head, as timm saves it.
    src = build_vit(dataclasses.replace(TINY, stride=8), (224, 224))
    state = {k: v.clone() for k, v in src.state_dict().items()}
    state["head.weight"] = torch.zeros(1000, 32)
    path = tmp_path / f"vit{suffix}"
    if suffix == ".pth":
        torch.save({"model": state}, path)
    else:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    vit = build_vit(TINY, (64, 32))
    load_vit_weights(vit, str(path), TINY.backbone)
    assert torch.equal(vit.blocks[1].mlp.fc2.weight, src.blocks[1].mlp.fc2.weight)
    assert torch.equal(vit.patch_embed.proj.weight, src.patch_embed.proj.weight)
    assert torch.equal(vit.pos_embed[:, 0], src.pos_embed[:, 0])  # CLS position kept
    assert vit.pos_embed.shape == (1, 51, 32)


def test_checkpoint_of_another_width_is_rejected(tmp_path):
    other = build_vit(dataclasses.replace(TINY, embed_dim=16), (64, 32))
    path = tmp_path / "other.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(CheckpointError, match="embed_dim"):
        load_vit_weights(build_vit(TINY, (64, 32)), str(path), TINY.backbone)
