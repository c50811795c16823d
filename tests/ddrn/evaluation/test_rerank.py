"""k-reciprocal re-ranking: shapes, Jaccard symmetry, and that it helps on clustered data."""

from __future__ import annotations

import numpy as np
import torch

from ddrn.evaluation import evaluate_rank, pairwise_distance, re_ranking
from ddrn.evaluation.rerank import jaccard_distance, k_reciprocal_vectors


def _clusters(seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((6, 8))
    pids = np.repeat(np.arange(6), 6)
    feats = centres[pids] + 0.9 * rng.standard_normal((36, 8))
    return torch.from_numpy(feats).float(), pids


def test_jaccard_part_is_symmetric_with_zero_diagonal() -> None:
    feats, _ = _clusters()
    dist = pairwise_distance(feats, feats, normalize=True).numpy()
    dist = dist / dist.max(axis=0, keepdims=True)
    v = k_reciprocal_vectors(dist, k1=6, k2=3)
    jac = jaccard_distance(v)
    assert jac.shape == (36, 36)
    np.testing.assert_allclose(jac, jac.T, atol=1e-6)
    np.testing.assert_allclose(np.diag(jac), 0.0, atol=1e-6)
    assert (jac >= -1e-6).all() and (jac <= 1 + 1e-6).all()


def test_re_ranking_shape_and_not_worse_on_clusters() -> None:
    feats, pids = _clusters(1)
    q, g = feats[::6], feats
    qp, gp = pids[::6], pids
    qc, gc = np.zeros(len(qp), int), np.ones(len(gp), int)
    qg = pairwise_distance(q, g, normalize=True)
    rr = re_ranking(qg, pairwise_distance(q, q, normalize=True), pairwise_distance(g, g, normalize=True),
                    k1=6, k2=3, lambda_value=0.3)
    assert rr.shape == (6, 36) and rr.dtype == np.float32
    before = evaluate_rank(qg, qp, gp, qc, gc, max_rank=5).mAP
    after = evaluate_rank(rr, qp, gp, qc, gc, max_rank=5).mAP
    assert after >= before - 0.02
