"""CMC, mAP and mINP under the standard Market-1501 protocol, exact and fast.

The protocol (the same in torchreid, fast-reid and TransReID):

1. rank the gallery by ascending distance, ties broken by gallery index (a stable sort);
2. drop, per query, the gallery items with the query's pid **and** camera ("junk");
3. skip queries with no positive left (they are not in the denominator);
4. CMC@k = 1 if a positive is within the first k kept items; AP over the whole kept ranking;
   INP = num_positives / (kept rank of the last positive + 1) (Ye et al., ReID survey).

The reference evaluators argsort every row of the (Q, G) matrix. That is not needed: only the
ranks of a query's few positives matter (P ~ 15 of G ~ 17,661 on Occluded-Duke), and the kept rank
of a positive is

    (items sorting before it) - (same-pid items sorting before it)

because the junk items are exactly the same-pid items that are not positives. The first term is a
count of a row against one threshold, i.e. one vectorised compare-and-sum over the row per
positive (P cheap passes instead of an O(G log G) sort); the second term only involves the query's
few same-pid items. Ties are broken by gallery index exactly as a stable sort does, by comparing
int64 keys ``(order-preserving int32 of the float32 distance) << 32 | gallery index``, which are
unique. Queries are processed in blocks grouped by their number of positives, so a block does
about as many passes as its queries have positives; blocks with many positives (or non-float32
distances) fall back to a per-row stable sort. :func:`evaluate_rank_reference` is the
straightforward sort-based version everything is tested against.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from ddrn.errors import DataError

ArrayLike = np.ndarray | torch.Tensor

_MAX_PASSES = 64
"""Above this many positives in a block, sorting the rows is cheaper than one pass per positive."""
_CHUNK = 8 * 255
"""Bools summed per uint64 lane group by :func:`_count_true` (255 words of 8 bytes)."""


@dataclass(frozen=True)
class RankResult:
    """Retrieval metrics, as fractions in [0, 1].

    Attributes:
        cmc: (max_rank,) float64; ``cmc[k-1]`` is Rank-k.
        mAP: mean average precision over the valid queries.
        mINP: mean inverse negative penalty over the valid queries.
        num_valid: queries with at least one positive (the denominator).
    """

    cmc: np.ndarray
    mAP: float
    mINP: float
    num_valid: int

    def as_percentages(self) -> dict[str, float]:
        """R1/R5/R10/mAP/mINP in percent (the metrics JSON schema), plus ``num_query``."""
        def rank(k: int) -> float:
            return 100.0 * float(self.cmc[min(k, len(self.cmc)) - 1])

        return {"R1": rank(1), "R5": rank(5), "R10": rank(10), "mAP": 100.0 * self.mAP,
                "mINP": 100.0 * self.mINP, "num_query": self.num_valid}


def _numpy(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def evaluate_rank(distmat: ArrayLike, q_pids: ArrayLike, g_pids: ArrayLike, q_camids: ArrayLike,
                  g_camids: ArrayLike, max_rank: int = 50, block_size: int = 32,
                  num_threads: int | None = None) -> RankResult:
    """Market-protocol CMC, mAP and mINP of a query-gallery distance matrix.

    The means over queries of :func:`evaluate_rank_per_query` (so the aggregate and the
    per-query numbers agree by construction).

    Args:
        distmat: (Q, G) distances, smaller = more similar; numpy or torch (a CUDA tensor is
            copied to the host once).
        q_pids, g_pids: (Q,), (G,) integer identities.
        q_camids, g_camids: (Q,), (G,) integer camera ids.
        max_rank: length of the CMC curve (padded with its last value when a query has fewer
            kept gallery items).
        block_size: queries processed together (memory ~ 13 bytes x block_size x G per thread).
        num_threads: worker threads (default: ``torch.get_num_threads()``).

    Returns:
        The metrics; identical to a stable-argsort implementation of the protocol.

    Raises:
        DataError: if no query has a positive in the gallery, or a distance is NaN.
    """
    return evaluate_rank_per_query(distmat, q_pids, g_pids, q_camids, g_camids, block_size,
                                   num_threads).summary(max_rank)


@dataclass(frozen=True)
class QueryMetrics:
    """Per-query retrieval results of the scored queries (those with a positive), by query index.

    R1 = ``hits(1).mean()``, mAP = ``ap.mean()``, mINP = ``inp.mean()``: the aggregate metrics
    are plain means of these vectors, which is what makes a bootstrap over queries meaningful.

    Attributes:
        index: (V,) int64 ascending indices into the query split of the scored queries; the
            same queries against the same gallery give the same index for every model, which is
            how queries are paired across models.
        first_hit: (V,) int64 0-based kept rank of each query's first positive.
        ap: (V,) float64 average precision in [0, 1].
        inp: (V,) float64 inverse negative penalty in [0, 1].
    """

    index: np.ndarray
    first_hit: np.ndarray
    ap: np.ndarray
    inp: np.ndarray

    def hits(self, k: int = 1) -> np.ndarray:
        """(V,) float64 1.0 where a positive is within the first ``k`` kept items (CMC@k)."""
        return (self.first_hit < k).astype(np.float64)

    def summary(self, max_rank: int = 50) -> RankResult:
        """The aggregate :class:`RankResult` (means over the scored queries)."""
        hist = np.bincount(np.minimum(self.first_hit, max_rank), minlength=max_rank + 1)
        cmc = np.cumsum(hist[:max_rank]).astype(np.float64) / self.index.size
        return RankResult(cmc=cmc, mAP=float(self.ap.mean()), mINP=float(self.inp.mean()),
                          num_valid=int(self.index.size))


def evaluate_rank_per_query(distmat: ArrayLike, q_pids: ArrayLike, g_pids: ArrayLike,
                            q_camids: ArrayLike, g_camids: ArrayLike, block_size: int = 32,
                            num_threads: int | None = None) -> QueryMetrics:
    """Market-protocol first-hit rank, AP and INP of every scored query.

    Same arguments as :func:`evaluate_rank` (less ``max_rank``); queries without a positive in
    the gallery are left out (they are not in the metrics' denominator either).

    Raises:
        DataError: if no query has a positive in the gallery, or a distance is NaN.
    """
    dist = _numpy(distmat)
    if dist.ndim != 2:
        raise ValueError(f"distmat must be (Q, G), got shape {dist.shape}")
    if dist.dtype in (np.float16,) or (isinstance(distmat, torch.Tensor)
                                       and distmat.dtype == torch.bfloat16):
        dist = dist.astype(np.float32)  # exact: keeps order and ties
    qp, gp, qc, gc = (_numpy(x).astype(np.int64).ravel()
                      for x in (q_pids, g_pids, q_camids, g_camids))
    num_q, num_g = dist.shape
    if qp.size != num_q or qc.size != num_q or gp.size != num_g or gc.size != num_g:
        raise ValueError(f"pids/camids do not match distmat of shape {(num_q, num_g)}")
    if np.isnan(dist).any():
        raise DataError("evaluate_rank: the distance matrix contains NaN; expected finite "
                        "distances (check the features for NaN)")

    same_pid, n_pos = _same_pid_index(qp, gp, qc, gc)
    valid = np.flatnonzero(n_pos > 0)
    if valid.size == 0:
        raise DataError(f"evaluate_rank: none of the {num_q} queries has a match in the gallery "
                        "from another camera; expected at least one")
    # Group queries with similar positive counts so a block does few wasted passes.
    order = valid[np.argsort(n_pos[valid], kind="stable")]

    def block_metrics(start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = order[start:start + block_size]
        rank, n = _positive_ranks(dist, rows, same_pid, qc, gc)
        j = np.arange(rank.shape[1])
        real = j[None, :] < n[:, None]
        precision = np.where(real, (j + 1.0) / (rank + 1.0), 0.0)        # (B, P) at each hit
        inp = n / (rank[np.arange(rows.size), n - 1] + 1.0)
        return rank[:, 0], precision.sum(1) / n, inp

    # numpy releases the GIL inside its loops, so blocks run in parallel on threads.
    workers = num_threads or torch.get_num_threads()
    starts = range(0, order.size, block_size)
    if workers > 1 and len(starts) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(block_metrics, starts))
    else:
        results = [block_metrics(s) for s in starts]
    # Back from the blocks' order to ascending query index (``valid`` is ascending).
    back = np.argsort(order, kind="stable")
    first, ap, inp = (np.concatenate([r[i] for r in results])[back] for i in range(3))
    return QueryMetrics(index=valid.astype(np.int64), first_hit=first.astype(np.int64),
                        ap=ap.astype(np.float64), inp=inp.astype(np.float64))


def _same_pid_index(qp: np.ndarray, gp: np.ndarray, qc: np.ndarray,
                    gc: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """Where each query's same-pid gallery items are, and how many of them are positives.

    Returns:
        ``(g_order, lo, count)``: the same-pid items of query q are ``g_order[lo[q]:lo[q] +
        count[q]]`` (ascending gallery index); and ``n_pos`` (Q,), the positives per query.
    """
    g_order = np.argsort(gp, kind="stable")
    sorted_gp = gp[g_order]
    lo = np.searchsorted(sorted_gp, qp, side="left")
    count = np.searchsorted(sorted_gp, qp, side="right") - lo
    # Same pid and same camera, counted over a sorted (pid, camera) code of the gallery.
    _, cam = np.unique(np.concatenate([qc, gc]), return_inverse=True)
    _, pid = np.unique(np.concatenate([qp, gp]), return_inverse=True)
    code = pid * (int(cam.max()) + 1) + cam
    q_code, g_code = code[:qp.size], np.sort(code[qp.size:])
    junk = np.searchsorted(g_code, q_code, side="right") - np.searchsorted(g_code, q_code)
    return (g_order, lo, count), count - junk


def _positive_ranks(dist: np.ndarray, rows: np.ndarray,
                    same_pid: tuple[np.ndarray, np.ndarray, np.ndarray], qc: np.ndarray,
                    gc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """0-based kept ranks of the positives of some queries, in ranking order.

    Returns:
        ``rank`` (B, P) int64 (columns >= n[b] are padding) and ``n`` (B,) positives per query.
    """
    g_order, lo, count = same_pid
    num_b, num_g = rows.size, dist.shape[1]
    block = dist[rows]                                                   # (B, G)
    s_max = int(count[rows].max())
    s = np.arange(s_max)
    has = s[None, :] < count[rows, None]                                 # (B, S)
    sp_idx = g_order[np.minimum(lo[rows, None] + s[None, :], num_g - 1)]  # (B, S) gallery index
    sp_pos = has & (gc[sp_idx] != qc[rows, None])                        # positives among them

    use_keys = block.dtype == np.float32 and num_g < 2**32
    if use_keys:
        keys = _stable_keys(block)                                       # (B, G) unique int64
        sp_key = np.take_along_axis(keys, sp_idx, 1)
    else:  # float64 distances: no 64-bit key holds (value, index); rank by a stable sort
        inv = np.empty((num_b, num_g), dtype=np.int64)
        np.put_along_axis(inv, np.argsort(block, axis=1, kind="stable"),
                          np.arange(num_g)[None, :], 1)
        sp_key = np.take_along_axis(inv, sp_idx, 1)      # the stable rank is itself a unique key
    big = np.iinfo(np.int64).max
    sp_key = np.where(has, sp_key, big)
    pos_key = np.sort(np.where(sp_pos, sp_key, big), axis=1)             # (B, S) positives first
    n = sp_pos.sum(1)
    p_max = int(n.max())
    pos_key = pos_key[:, :p_max]                                         # (B, P)

    # Items of the row sorting before each positive.
    if not use_keys:
        before = pos_key.copy()                                          # a stable rank = count
    elif p_max <= _MAX_PASSES:
        before = np.empty((num_b, p_max), dtype=np.int64)
        mask = np.zeros((num_b, -(-num_g // _CHUNK) * _CHUNK), dtype=bool)  # zero padding
        for j in range(p_max):
            np.less(keys, pos_key[:, j:j + 1], out=mask[:, :num_g])
            before[:, j] = _count_true(mask)
    else:
        keys.sort(axis=1)
        before = np.stack([np.searchsorted(keys[b], pos_key[b]) for b in range(num_b)])
    # Minus the same-pid items (junk and the other positives) sorting before each positive.
    sp_before = (sp_key[:, None, :] < pos_key[:, :, None]).sum(2)        # (B, P)
    j = np.arange(p_max)
    rank = before - sp_before + j[None, :]   # negatives before + positives before
    return rank, n


def _count_true(mask: np.ndarray) -> np.ndarray:
    """Row sums of a (B, W) bool array with W a multiple of ``_CHUNK``, ~6x faster than ``sum``.

    Adds the mask as uint64 words: each of a word's 8 byte lanes holds a 0/1, so summing 255
    words cannot carry between lanes; the lanes are then added up on a 255x smaller array.
    """
    words = mask.view(np.uint64).reshape(mask.shape[0], -1, 255).sum(2, dtype=np.uint64)
    return words.view(np.uint8).reshape(mask.shape[0], -1).sum(1, dtype=np.int64)


def _stable_keys(block: np.ndarray) -> np.ndarray:
    """(B, G) float32 -> int64 keys ordered like a stable sort: ``ordered(value) << 32 | index``."""
    bits = block.view(np.int32)
    if bits.min() < 0:  # negative floats or -0.0: make the int order the float order
        bits = (block + np.float32(0.0)).view(np.int32)  # -0.0 + 0.0 = +0.0
        bits = np.where(bits < 0, bits ^ np.int32(0x7FFFFFFF), bits)
    keys = np.empty(block.shape, dtype=np.int64)
    np.left_shift(bits, np.int64(32), out=keys)
    np.bitwise_or(keys, np.arange(block.shape[1], dtype=np.int64)[None, :], out=keys)
    return keys


def evaluate_rank_reference(distmat: ArrayLike, q_pids: ArrayLike, g_pids: ArrayLike,
                            q_camids: ArrayLike, g_camids: ArrayLike,
                            max_rank: int = 50) -> RankResult:
    """The straightforward protocol: stable argsort of every row, one query at a time.

    Slow (O(Q G log G)); kept as the ground truth that :func:`evaluate_rank` is tested and
    benchmarked against. Same arguments and result as :func:`evaluate_rank`.
    """
    dist, qp, gp, qc, gc = map(_numpy, (distmat, q_pids, g_pids, q_camids, g_camids))
    if dist.dtype == np.float16:
        dist = dist.astype(np.float32)
    cmc_count = np.zeros(max_rank, dtype=np.int64)
    aps, inps = [], []
    for i in range(dist.shape[0]):
        order = np.argsort(dist[i], kind="stable")
        keep = ~((gp[order] == qp[i]) & (gc[order] == qc[i]))
        raw = (gp[order][keep] == qp[i]).astype(np.int64)
        if not raw.any():
            continue
        hits = np.cumsum(raw)
        cmc = (hits >= 1).astype(np.int64)
        # Pad with the last value when fewer than max_rank items are kept.
        cmc = np.concatenate([cmc, np.full(max(0, max_rank - cmc.size), cmc[-1])])[:max_rank]
        cmc_count += cmc
        positions = np.flatnonzero(raw)
        aps.append(np.mean(hits[positions] / (positions + 1.0)))
        inps.append(raw.sum() / (positions[-1] + 1.0))
    if not aps:
        raise DataError("evaluate_rank: no query has a match in the gallery from another camera")
    n = len(aps)
    return RankResult(cmc=cmc_count.astype(np.float64) / n, mAP=float(np.mean(aps)),
                      mINP=float(np.mean(inps)), num_valid=n)
