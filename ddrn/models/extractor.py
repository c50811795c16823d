"""A trained re-ID model as a plain image -> feature function (for serving and model registries).

:class:`FeatureExtractor` takes the packed images as they are stored (uint8 ``(B, H, W, 3)`` at
the input size), applies the test transform and returns the retrieval feature, the same
``ReIDOutput.features`` :func:`ddrn.evaluation.extract_features` computes. Its output type is a
plain tensor, so model registries can infer a signature from it.
"""

from __future__ import annotations

import torch
from torch import nn

from ddrn.config import InputConfig
from ddrn.data.augment import BatchAugment


class FeatureExtractor(nn.Module):
    """uint8 images (B, H, W, 3) -> retrieval features (B, D), pre-BN (``NECK_FEAT: before``).

    Args:
        model: a trained re-ID model returning :class:`~ddrn.models.ReIDOutput` (no SIE: camera
            ids are not an input here).
        input_cfg: the size and normalisation the model was trained with.
    """

    def __init__(self, model: nn.Module, input_cfg: InputConfig) -> None:
        super().__init__()
        self.model = model.eval()
        self.input_cfg = input_cfg
        self.transform = BatchAugment(input_cfg, train=False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = torch.as_tensor(images)
        device = next(self.model.parameters()).device
        return self.model(self.transform(images.to(torch.uint8).cpu()).to(device)).features.float()
