import dataclasses
from pathlib import Path

import torch

from ddrn.config import ModelConfig
from ddrn.losses import build_criterion
from ddrn.models import ReIDOutput, build_model
from pipeline.params import load_config

PARAMS = Path(__file__).resolve().parents[3] / "params.yaml"
TINY = ModelConfig(embed_dim=32, depth=3, num_heads=2, patch_size=8, stride=6, drop_path=0.0,
                   num_embeddings=16)


def test_paper_model_has_242_patch_tokens_and_trains_one_step_on_two_images():
    config = load_config(PARAMS, "paper")
    spec = config.resolve("occluded_duke", "ddrn", 0)
    model_cfg = dataclasses.replace(spec.model, pretrained=None)
    torch.manual_seed(0)
    model = build_model(model_cfg, num_classes=2, input_size=(config.input.height,
                                                              config.input.width))
    assert model.num_patches == 242 and model.feature_dim == 768
    criterion = build_criterion(spec.loss, model.feature_dim, 2)
    params = list(model.parameters()) + list(criterion.parameters())
    opt = torch.optim.SGD(params, lr=0.008, momentum=0.9)
    before = model.embedding_space.weight.detach().clone()
    out = model(torch.randn(2, 3, 256, 128))
    assert out.code_indices.shape == (2, 242) and out.codebook.shape == (128, 768)
    result = criterion(out, torch.tensor([0, 1]))
    assert set(result.terms) == {"id", "triplet", "margin", "orthogonal"}
    result.total.backward()
    opt.step()
    assert torch.isfinite(result.total)
    assert not torch.equal(before, model.embedding_space.weight)


def test_cls_token_untouched_and_codebook_feeds_last_block():
    model = build_model(dataclasses.replace(TINY, embedding_space=True, id_feature="local"), 4,
                        input_size=(64, 32)).eval()
    out = model(torch.randn(3, 3, 64, 32))
    assert out.codebook is model.embedding_space.weight  # the weight, not a copy
    assert out.local_features is not None and out.local_features.shape == (3, 32)
    assert torch.equal(out.features, out.global_features)
    # The patch tokens block N sees are codebook rows: replacing the codebook changes the output
    # (new rows, not a rescale: the default cosine lookup returns unit rows whatever their norm).
    with torch.no_grad():
        model.embedding_space.weight.copy_(torch.randn_like(model.embedding_space.weight))
    assert not torch.allclose(model(torch.randn(3, 3, 64, 32)).features, out.features)


def test_baseline_reads_id_from_global_bn_and_output_type_is_the_same_in_eval():
    model = build_model(TINY, 4, input_size=(64, 32))
    x = torch.randn(4, 3, 64, 32)
    train_out = model.train()(x)
    eval_out = model.eval()(x)
    assert type(train_out) is type(eval_out) is ReIDOutput
    assert eval_out.local_features is None and eval_out.code_indices is None
    torch.testing.assert_close(eval_out.id_logits, model.classifier(eval_out.global_bn))


def test_sie_adds_a_camera_embedding_only_when_asked():
    model = build_model(dataclasses.replace(TINY, sie=True), 4, num_cameras=3,
                        input_size=(64, 32)).eval()
    assert model.sie_embed.shape == (3, 1, 32)
    x = torch.randn(2, 3, 64, 32)
    a = model(x, torch.tensor([0, 0])).features
    b = model(x, torch.tensor([1, 1])).features
    assert not torch.allclose(a, b)
    assert build_model(TINY, 4, num_cameras=3, input_size=(64, 32)).sie_embed is None
