"""extract_features: split order, test transform, L2 normalisation, train mode restored."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ddrn.config import InputConfig
from ddrn.data import PackedSplit
from ddrn.evaluation import extract_features


class _MeanColour(nn.Module):
    """Feature = per-channel mean of the normalised image, plus the camera id."""

    feature_dim = 4

    def forward(self, images: torch.Tensor, camids: torch.Tensor | None = None):  # noqa: ANN201
        assert not self.training
        feats = torch.cat([images.mean((2, 3)), camids[:, None].float()], 1)
        return type("Out", (), {"features": feats})()


def _split(n: int) -> PackedSplit:
    rng = np.random.default_rng(0)
    return PackedSplit(images=rng.integers(0, 256, (n, 16, 8, 3), dtype=np.uint8),
                       pids=np.arange(n), camids=np.arange(n) % 3, occluded=np.zeros(n, bool),
                       occluded_known=np.zeros(n, bool), paths=[f"{i}.jpg" for i in range(n)])


def test_features_in_split_order_and_normalised() -> None:
    split, cfg = _split(11), InputConfig(height=16, width=8)
    model = _MeanColour().train()
    feats = extract_features(model, split, cfg, batch_size=4, device="cpu")
    assert model.training  # restored
    expected = (split.images.mean((1, 2)) / 255.0 - 0.5) / 0.5
    np.testing.assert_allclose(feats[:, :3].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(feats[:, 3].numpy(), split.camids)
    normed = extract_features(model, split, cfg, batch_size=5, device="cpu", normalize=True)
    torch.testing.assert_close(normed.norm(dim=1), torch.ones(11))
