"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), TransReID's settings k1=50, k2=15, lambda=0.3.

final = (1 - lambda) * Jaccard(k-reciprocal sets) + lambda * original distance.

The k-reciprocal set of i holds the j that are in i's k1 nearest neighbours *and* have i in
theirs; it is expanded with the (k1/2)-reciprocal sets of its members that overlap it by more than
2/3. Each item becomes a sparse vector V_i over all N = Q + G items, weighted by exp(-distance),
smoothed by averaging over its k2 nearest neighbours (local query expansion), and the Jaccard
distance is 1 - sum(min(V_i, V_j)) / sum(max(V_i, V_j)). Memory is O(N^2): fine for the demo
sets, heavy at Market scale (as in every reference implementation).
"""

from __future__ import annotations

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def _np(x: ArrayLike) -> np.ndarray:
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return x.astype(np.float32)


def re_ranking(q_g: ArrayLike, q_q: ArrayLike, g_g: ArrayLike, k1: int = 50, k2: int = 15,
               lambda_value: float = 0.3) -> np.ndarray:
    """Re-ranked (Q, G) distances.

    Args:
        q_g, q_q, g_g: (Q, G), (Q, Q), (G, G) distances (any non-negative metric).
        k1, k2: k-reciprocal and query-expansion neighbourhood sizes.
        lambda_value: weight of the original distance.

    Returns:
        (Q, G) float32 distance matrix.
    """
    qg, qq, gg = _np(q_g), _np(q_q), _np(g_g)
    num_q = qq.shape[0]
    original = np.block([[qq, qg], [qg.T, gg]])                          # (N, N)
    # Each column scaled by its maximum, as in the reference, so exp(-d) is in a fixed range.
    original = (original / np.maximum(original.max(axis=0, keepdims=True), 1e-12)).T
    v = k_reciprocal_vectors(original, k1, k2)
    jaccard = jaccard_distance(v, rows=np.arange(num_q))                 # (Q, N)
    final = jaccard * (1 - lambda_value) + original[:num_q] * lambda_value
    return final[:, num_q:].astype(np.float32)


def k_reciprocal_vectors(dist: np.ndarray, k1: int, k2: int) -> np.ndarray:
    """The (N, N) sparse-in-practice encoding V of every item's expanded k-reciprocal set."""
    n = dist.shape[0]
    k1, k2 = min(k1, n - 1), min(k2, n)
    ranking = np.argsort(dist, axis=1, kind="stable")[:, :k1 + 1]       # (N, k1+1), self first
    half = max(1, int(round(k1 / 2)))

    def reciprocal(i: int, k: int) -> np.ndarray:
        forward = ranking[i, :k + 1]
        back = ranking[forward, :k + 1]                                  # (k+1, k+1)
        return forward[(back == i).any(axis=1)]

    v = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        members = reciprocal(i, k1)
        expanded = members
        for c in members:
            cand = reciprocal(int(c), half)
            if len(np.intersect1d(cand, members)) > 2 / 3 * len(cand):
                expanded = np.append(expanded, cand)
        expanded = np.unique(expanded)
        weight = np.exp(-dist[i, expanded])
        v[i, expanded] = weight / weight.sum()
    if k2 > 1:  # local query expansion over the k2 nearest neighbours
        v = np.stack([v[ranking[i, :k2]].mean(axis=0) for i in range(n)])
    return v


def jaccard_distance(v: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """1 - |min(V_i, V_j)|_1 / |max(V_i, V_j)|_1 for i in ``rows`` and every j: (len(rows), N).

    Uses the identity max = a + b - min, with the L1 masses of the rows of V precomputed, and
    visits only the non-zero columns of V_i (k-reciprocal sets are small).
    """
    rows = np.arange(v.shape[0]) if rows is None else rows
    mass = v.sum(axis=1)                                                 # (N,)
    out = np.empty((len(rows), v.shape[0]), dtype=np.float32)
    for r, i in enumerate(rows):
        nz = np.flatnonzero(v[i])
        inter = np.minimum(v[i, nz][None, :], v[:, nz]).sum(axis=1)      # (N,)
        union = mass[i] + mass - inter
        out[r] = 1.0 - inter / np.maximum(union, 1e-12)
    return out
