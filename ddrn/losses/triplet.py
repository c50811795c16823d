"""Batch-hard triplet loss (Hermans et al. 2017) on Euclidean distances of pre-BN features."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def pairwise_euclidean(features: Tensor) -> Tensor:
    """(B, D) -> (B, B) Euclidean distances in fp32, with a finite gradient at distance 0."""
    x = features.float()
    sq = x.pow(2).sum(dim=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.t())
    return d2.clamp_min(1e-12).sqrt()


def triplet_loss(features: Tensor, labels: Tensor, margin: float | None = None) -> Tensor:
    """Batch-hard triplet loss: hardest positive and hardest negative per anchor.

    Distances are Euclidean on the un-normalised features (TransReID's ``euclidean_dist``).
    ``margin=None`` is the soft-margin form mean(log(1 + exp(d_ap - d_an))) (TransReID's
    ``NO_MARGIN``, used by every person re-ID config); a number gives
    mean(max(0, d_ap - d_an + margin)). Masks rather than reshapes, so ids may have different
    counts in the batch; an anchor with no negative contributes 0 (soft: exp(-inf) = 0).

    Args:
        features: (B, D) pre-BN features.
        labels: (B,) identity labels.
        margin: None (soft margin) or a margin > 0.
    """
    dist = pairwise_euclidean(features)  # (B, B)
    same = labels[:, None] == labels[None, :]  # (B, B), diagonal included (d = 0)
    d_ap = dist.masked_fill(~same, float("-inf")).amax(dim=1)  # (B,) hardest positive
    d_an = dist.masked_fill(same, float("inf")).amin(dim=1)  # (B,) hardest negative
    if margin is None:
        return F.softplus(d_ap - d_an).mean()
    return F.relu(d_ap - d_an + margin).mean()
