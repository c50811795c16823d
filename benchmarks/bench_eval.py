"""evaluate_rank at Occluded-Duke scale against one row-wise ``np.argsort`` of the same matrix.

2,210 queries x 17,661 gallery, 8 cameras, 1,110 ids (519 of them queried), random distances.
The reference evaluators start with ``np.argsort(distmat, axis=1)``; ``evaluate_rank`` must take at
most 0.3x of that, and give results identical to the straightforward sort-based implementation
(:func:`ddrn.evaluation.rank.evaluate_rank_reference`), which is run and compared here too.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np
import torch

from ddrn.evaluation.rank import evaluate_rank, evaluate_rank_reference

GOAL = 0.3


def _best_of(fn, repeat: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the queries, one repeat")
    parser.add_argument("--device", default="cpu", help="where the distance matrix lives")
    args = parser.parse_args(argv)
    num_q, num_g, ids, query_ids, cams = 2210, 17661, 1110, 519, 8
    if args.quick:
        num_q = num_q // 4
    rng = np.random.default_rng(0)
    g_pids = rng.integers(0, ids, num_g)
    q_pids = rng.integers(0, query_ids, num_q)
    q_cams, g_cams = rng.integers(0, cams, num_q), rng.integers(0, cams, num_g)
    dist = rng.random((num_q, num_g), dtype=np.float32)
    repeat = 1 if args.quick else 3

    t_sort = _best_of(lambda: np.argsort(dist, axis=1), repeat)
    dist_in = torch.from_numpy(dist).to(args.device) if args.device != "cpu" else dist
    result = None

    def fast() -> None:
        nonlocal result
        result = evaluate_rank(dist_in, q_pids, g_pids, q_cams, g_cams)

    t_fast = _best_of(fast, repeat)
    t0 = time.perf_counter()
    ref = evaluate_rank_reference(dist, q_pids, g_pids, q_cams, g_cams)
    t_ref = time.perf_counter() - t0
    identical = (np.array_equal(result.cmc, ref.cmc) and result.num_valid == ref.num_valid
                 and abs(result.mAP - ref.mAP) < 1e-12 and abs(result.mINP - ref.mINP) < 1e-12)
    ratio = t_fast / t_sort
    print(f"bench_eval: {num_q} x {num_g} distances, {torch.get_num_threads()} threads")
    print(f"  np.argsort(distmat, axis=1)     {t_sort:8.3f} s   (reference step, 1.00x)")
    print(f"  evaluate_rank                   {t_fast:8.3f} s   {ratio:.2f}x  (goal <= {GOAL}x)")
    print(f"  sort-based reference protocol   {t_ref:8.3f} s   {t_ref / t_sort:.2f}x")
    print(f"  identical to reference: {identical} (R1 {100 * ref.cmc[0]:.2f}, mAP "
          f"{100 * ref.mAP:.3f}, mINP {100 * ref.mINP:.3f}, {ref.num_valid} valid queries)")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
