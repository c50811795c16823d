"""Query-gallery distance matrices, computed in blocks so Occluded-Duke-scale galleries fit.

With L2-normalised features (the evaluation default) ``euclidean`` (squared, as TransReID) and
``cosine`` rank identically: ||q - g||^2 = 2 - 2 q.g.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Metric = Literal["euclidean", "cosine"]


def pairwise_distance(query: torch.Tensor, gallery: torch.Tensor, metric: Metric = "euclidean",
                      normalize: bool = False, block_size: int = 4096) -> torch.Tensor:
    """Distances between every query and gallery feature.

    Args:
        query: (Q, D) features.
        gallery: (G, D) features.
        metric: ``euclidean`` (squared Euclidean) or ``cosine`` (1 - cosine similarity).
        normalize: L2-normalise both sides first.
        block_size: query rows per block; bounds the temporaries to (block_size, G).

    Returns:
        (Q, G) float32 distances on the features' device.
    """
    if query.dim() != 2 or gallery.dim() != 2 or query.shape[1] != gallery.shape[1]:
        raise ValueError(f"expected (Q, D) and (G, D) features, got {tuple(query.shape)} and "
                         f"{tuple(gallery.shape)}")
    q, g = query.float(), gallery.float()
    if normalize or metric == "cosine":
        q, g = F.normalize(q, dim=1), F.normalize(g, dim=1)
    out = torch.empty(q.shape[0], g.shape[0], dtype=torch.float32, device=q.device)
    g_sq = (g * g).sum(1)                                       # (G,)
    for start in range(0, q.shape[0], block_size):
        qb = q[start:start + block_size]                        # (b, D)
        sim = qb @ g.t()                                        # (b, G)
        if metric == "cosine":
            out[start:start + qb.shape[0]] = 1.0 - sim
        else:
            out[start:start + qb.shape[0]] = (qb * qb).sum(1, keepdim=True) + g_sq[None, :] \
                - 2.0 * sim
    return out
