"""TransReID checkpoints of every kind: layout read from the weights, features equal TransReID's.

The checkpoints and the reference forward come from ``tests/helpers/transreid_checkpoints.py``,
written from TransReID's code layout, not from this project's modules.
"""

from __future__ import annotations

import pytest
import torch
from transreid_checkpoints import reference_forward, transreid_checkpoint

from ddrn.errors import CheckpointError
from ddrn.models import build_model
from ddrn.models.jpm import JPMReID, retrieval_feature, shift_and_shuffle
from ddrn.models.reid import ViTReID
from ddrn.models.transreid import find_stride, read_transreid, transreid_backbone_weights

# The five kinds of the issue, each as a TransReID config would train it on Occluded-Duke.
KINDS = {
    "baseline": {"stride": 11},                             # ViT-B at DDRN's stride 11
    "module": {"stride": 11, "dataparallel": True},         # saved under DataParallel/DDP
    "sie": {"stride": 16, "cameras": 8},                    # OCC_Duke/vit_sie.yml
    "stride16": {"stride": 16},                             # OCC_Duke/vit_base.yml
    "jpm": {"stride": 11, "cameras": 8, "jpm": True},       # OCC_Duke/vit_transreid_stride.yml
}


def _model(state: dict[str, torch.Tensor]) -> torch.nn.Module:
    plain = {k.removeprefix("module."): v for k, v in state.items()}
    layout, mapped = read_transreid(plain, "model.pth")
    model = build_model(layout.model_config(), layout.num_classes, max(layout.num_cameras, 1),
                        input_size=layout.input_size)
    model.load_state_dict(mapped, strict=True)
    return model.eval()


# A ViT-B forward takes seconds on CPU: baseline, SIE and JPM (+SIE, stride 11) stay in the fast
# suite; the prefix and stride-16 kinds only re-check the mapping and run with -m slow.
@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.slow)
                                  if k in ("module", "stride16") else k for k in sorted(KINDS)])
def test_features_equal_transreids_forward(kind: str) -> None:
    args = KINDS[kind]
    state = transreid_checkpoint(**args)
    model = _model(state)
    assert isinstance(model, JPMReID if args.get("jpm") else ViTReID)
    images = torch.randn(2, 3, 256, 128, generator=torch.Generator().manual_seed(1))
    camids = torch.tensor([0, 7])  # Occluded-Duke: camera c -> id c - 1
    with torch.no_grad():
        out = model(images, camids)
    expected = reference_forward(state, images, camids, args["stride"])
    assert out.features.shape == expected.shape == (2, 768 * (5 if args.get("jpm") else 1))
    torch.testing.assert_close(out.features, expected, atol=1e-4, rtol=0)
    if kind in ("jpm", "sie"):  # NECK_FEAT: after, the other TransReID test feature
        after = reference_forward(state, images, camids, args["stride"], neck_feat="after")
        torch.testing.assert_close(retrieval_feature(out, "after"), after, atol=1e-4, rtol=0)


@pytest.mark.parametrize(("stride", "tokens"), [(16, 128), (12, 210), (11, 242)])
def test_layout_is_read_from_the_weights(stride: int, tokens: int) -> None:
    state = transreid_checkpoint(stride=stride, cameras=6, jpm=True, dim=128, depth=3,
                                 num_classes=5)
    layout, mapped = read_transreid(state, "m.pth")
    assert (layout.stride, layout.input_size, layout.embed_dim, layout.num_heads) == \
        (stride, (256, 128), 128, 2)
    assert (layout.depth, layout.num_cameras, layout.num_classes, layout.jpm) == (3, 6, 5, True)
    assert mapped["backbone.pos_embed"].shape[1] == tokens + 1
    # Neither the unused ImageNet head nor JPM's never-run last block / norm is loaded.
    assert not any(k.startswith(("backbone.fc.", "backbone.blocks.2.", "backbone.norm."))
                   for k in mapped)
    assert find_stride(tokens, 16) == (stride, (256, 128))


def test_384_input_is_recognised() -> None:
    state = transreid_checkpoint(stride=12, dim=64, depth=2, num_classes=3)
    state["base.pos_embed"] = torch.zeros(1, 31 * 10 + 1, 64)  # 384x128 at stride 12
    layout, _ = read_transreid(state, "m.pth")
    assert (layout.stride, layout.input_size) == (12, (384, 128))


@pytest.mark.parametrize(("edit", "says"), [
    (lambda s: s.update({"extra.weight": torch.zeros(3)}), "1 keys of no TransReID layout"),
    (lambda s: [s.pop(k) for k in [k for k in s if k.startswith("b2.")]], "b2.0.norm1.weight is"),
    (lambda s: s.pop("base.blocks.1.attn.qkv.bias"), "vit_small"),
    (lambda s: s.update({"base.pos_embed": torch.zeros(1, 100, 64)}), "99 patch tokens"),
    (lambda s: s.pop("bottleneck.running_var"), "no BNNeck"),
])
def test_a_checkpoint_that_fits_nothing_known_gets_one_line(edit, says: str) -> None:
    state = transreid_checkpoint(stride=16, jpm=True, dim=64, depth=2, num_classes=3)
    edit(state)
    with pytest.raises(CheckpointError, match="recognised") as err:
        read_transreid(state, "m.pth")
    message = str(err.value)
    assert says in message and "\n" not in message
    assert "not recognised" in message


def test_resnet_checkpoint_is_named() -> None:
    with pytest.raises(CheckpointError, match="ResNet-50 backbone"):
        read_transreid({"base.conv1.weight": torch.zeros(64, 3, 7, 7)}, "r.pth")


def test_shift_and_shuffle_is_transreids_shuffle_unit() -> None:
    tokens = torch.arange(1 + 10).float().view(1, 11, 1)  # CLS=0, patches 1..10
    out = shift_and_shuffle(tokens, shift=5, groups=2).flatten().tolist()
    # [5..10, 1..4] in two groups [5,6,7,8,9] [10,1,2,3,4], interleaved
    assert out == [5, 10, 6, 1, 7, 2, 8, 3, 9, 4]
    odd = shift_and_shuffle(torch.arange(1 + 9).float().view(1, 10, 1), 5, 2)
    assert odd.shape[1] == 10  # the second-to-last token repeated, as TransReID pads


def test_backbone_weights_for_fine_tuning_take_jpms_trained_branch() -> None:
    state = transreid_checkpoint(stride=11, cameras=8, jpm=True, dim=64, depth=3, num_classes=3)
    weights = transreid_backbone_weights(state, (10, 5), "t.pth")
    assert weights["pos_embed"].shape == (1, 51, 64)  # 22x11 grid resampled to 10x5
    torch.testing.assert_close(weights["blocks.2.attn.qkv.weight"], state["b1.0.attn.qkv.weight"])
    torch.testing.assert_close(weights["norm.weight"], state["b1.1.weight"])
    torch.testing.assert_close(weights["blocks.0.mlp.fc1.bias"], state["base.blocks.0.mlp.fc1.bias"])
    assert not any(k.startswith(("fc.", "sie_embed")) for k in weights)
