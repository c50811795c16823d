import torch

from ddrn.models.resnet import ResNetReID


def test_bot_resnet50_has_last_stride_1_and_bnneck():
    model = ResNetReID(num_classes=5).eval()
    assert model.backbone.layer4[0].conv2.stride == (1, 1)
    # A 64x32 input gives a 4x2 map at stride 16 (it would be 2x1 at stride 32).
    fmap = model.backbone.forward_features(torch.randn(1, 3, 64, 32))
    assert fmap.shape == (1, 2048, 4, 2)
    out = model(torch.randn(2, 3, 64, 32))
    assert out.features.shape == (2, 2048) and out.id_logits.shape == (2, 5)
    assert out.codebook is None and out.local_features is None
    assert not model.neck.bn.bias.requires_grad


def test_smaller_depths_also_get_last_stride_1():
    model = ResNetReID(num_classes=3, backbone="resnet18").eval()
    assert all(m.stride == (1, 1) for m in model.backbone.layer4[0].modules()
               if isinstance(m, torch.nn.Conv2d))
    fmap = model.backbone.forward_features(torch.randn(1, 3, 64, 32))
    assert fmap.shape == (1, 512, 4, 2)
    assert model(torch.randn(2, 3, 64, 32)).features.shape == (2, 512)
