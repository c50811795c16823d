"""Blockwise distances equal the direct formulas."""

from __future__ import annotations

import torch

from ddrn.evaluation.distance import pairwise_distance


def test_blockwise_euclidean_and_cosine_match_direct() -> None:
    g = torch.Generator().manual_seed(0)
    q, gal = torch.randn(37, 16, generator=g), torch.randn(53, 16, generator=g)
    d = pairwise_distance(q, gal, "euclidean", block_size=8)
    torch.testing.assert_close(d, torch.cdist(q, gal) ** 2, atol=1e-4, rtol=1e-4)
    c = pairwise_distance(q, gal, "cosine", block_size=5)
    expected = 1 - torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(gal, dim=1).T
    torch.testing.assert_close(c, expected, atol=1e-5, rtol=1e-5)


def test_normalised_euclidean_ranks_like_cosine() -> None:
    g = torch.Generator().manual_seed(1)
    q, gal = torch.randn(4, 8, generator=g), torch.randn(30, 8, generator=g)
    e = pairwise_distance(q, gal, "euclidean", normalize=True)
    c = pairwise_distance(q, gal, "cosine")
    torch.testing.assert_close(e, 2 * c, atol=1e-5, rtol=1e-5)
