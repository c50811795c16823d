import torch

from ddrn.models.heads import BNNeck, IDClassifier


def test_bnneck_bias_is_frozen_at_zero_and_classifier_is_bias_free():
    neck, clf = BNNeck(8), IDClassifier(8, 5)
    assert not neck.bn.bias.requires_grad and torch.equal(neck.bn.bias, torch.zeros(8))
    assert torch.equal(neck.bn.weight, torch.ones(8))
    assert clf.bias is None and clf.weight.shape == (5, 8)
    assert 0.0005 < clf.weight.std().item() < 0.002
    out = clf(neck(torch.randn(6, 8)))
    assert out.shape == (6, 5)
