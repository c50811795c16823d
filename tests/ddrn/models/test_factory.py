"""Contract tests over every variant in params.yaml (demo profile: the tiny ViT, 64x32 inputs)."""

import dataclasses
from pathlib import Path

import pytest
import torch

from ddrn.losses import build_criterion
from ddrn.models import ReIDOutput, build_model
from pipeline.params import load_config

PARAMS = Path(__file__).resolve().parents[3] / "params.yaml"
CONFIG = load_config(PARAMS, "demo")
NUM_CLASSES, BATCH = 4, 8


def random_init(spec):
    """``spec``'s model from random weights: the demo's ``model.pretrained`` is the pretrain
    stage's output, absent from a fresh clone, and these tests check the architecture."""
    return dataclasses.replace(spec.model, pretrained=None)


@pytest.mark.parametrize("variant", sorted(CONFIG.variants))
def test_every_variant_builds_trains_and_honours_the_output_contract(variant):
    spec = CONFIG.resolve("occluded_duke", variant, 0)
    torch.manual_seed(0)
    size = (CONFIG.input.height, CONFIG.input.width)
    model = build_model(random_init(spec), NUM_CLASSES, num_cameras=2, input_size=size)
    criterion = build_criterion(spec.loss, model.feature_dim, NUM_CLASSES)
    images = torch.randn(BATCH, 3, *size)
    pids = torch.arange(NUM_CLASSES).repeat_interleave(BATCH // NUM_CLASSES)
    out = model.train()(images, torch.zeros(BATCH, dtype=torch.long))
    assert isinstance(out, ReIDOutput)
    d = model.feature_dim
    for name in ("global_features", "global_bn"):
        assert getattr(out, name).shape == (BATCH, d), name
    # JPM's retrieval feature is the global one and its 4 local ones side by side.
    assert out.features.shape == (BATCH, d * (5 if spec.model.jpm else 1))
    assert (out.part_logits is not None) == spec.model.jpm
    assert out.id_logits.shape == (BATCH, NUM_CLASSES)
    assert (out.local_features is not None) == (spec.model.id_feature == "local")
    assert (out.codebook is not None) == spec.model.embedding_space
    if out.codebook is not None:
        assert out.code_indices.shape == (BATCH, model.num_patches)
    result = criterion(out, pids)
    assert all(torch.isfinite(t) for t in result.terms.values()), result.terms
    torch.testing.assert_close(result.total, sum(result.terms.values()))
    if spec.loss.margin_head != "none":
        assert "margin" in result.terms
    result.total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(torch.isfinite(g).all() for g in grads if g is not None)
    assert type(model.eval()(images[:2], torch.zeros(2, dtype=torch.long))) is ReIDOutput


def test_wrong_input_size_names_the_fix():
    spec = CONFIG.resolve("occluded_duke", "vit_baseline", 0)
    model = build_model(random_init(spec), NUM_CLASSES, input_size=(64, 32))
    with pytest.raises(ValueError, match="input_size"):
        model(torch.randn(1, 3, 256, 128))
