"""Test-time features of a packed split: the model's documented retrieval feature."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ddrn.config import InputConfig
from ddrn.data import BatchAugment, PackedSplit


@torch.inference_mode()
def extract_features(model: nn.Module, split: PackedSplit, input_cfg: InputConfig,
                     batch_size: int, device: torch.device | str,
                     normalize: bool = False) -> torch.Tensor:
    """``output.features`` (pre-BN, TransReID's ``NECK_FEAT: before``) of every image of a split.

    The model is put in eval mode (and restored after); images get the test transform only;
    camera ids are passed (SIE uses them, other models ignore them).

    Args:
        model: a re-ID model returning :class:`~ddrn.models.ReIDOutput`.
        split: the packed split (images read from its memmap in order).
        input_cfg: size and normalisation.
        batch_size: images per forward pass.
        device: where the model runs.
        normalize: L2-normalise the features.

    Returns:
        (N, D) float32 features on the CPU, in split order.
    """
    device = torch.device(device)
    transform = BatchAugment(input_cfg, train=False)
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(split), batch_size):
            raw = torch.from_numpy(np.array(split.images[start:start + batch_size]))  # a writable copy
            camids = torch.as_tensor(np.asarray(split.camids[start:start + batch_size]))
            feats = model(transform(raw.to(device)), camids.to(device)).features
            out.append(feats.float().cpu())
    finally:
        model.train(was_training)
    features = torch.cat(out) if out else torch.zeros(0, getattr(model, "feature_dim", 0))
    return F.normalize(features, dim=1) if normalize else features
