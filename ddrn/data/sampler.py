"""P x K identity sampler: every batch holds P distinct ids with K images each.

TransReID's ``RandomIdentitySampler`` chunks each id's shuffled images into groups of K (sampling
with replacement for ids with fewer than K images) and draws P ids at a time; its epoch length is
only an estimate. Here the epoch is exactly ``sum_i max(1, n_i // K) // P`` batches: ids with chunks
left are drawn first, and when fewer than P of them remain the batch is topped up with fresh chunks
of other ids, so every batch is a full P x K and ``len()`` is exact. The order is a pure function of
``(seed, epoch)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from ddrn.errors import DataError


class PKSampler:
    """Index batches of one epoch.

    Args:
        pids: the identity of every sample (N,).
        batch_size: P * K.
        num_instances: K, images per id in a batch.
        seed: base seed; epoch ``e`` uses ``(seed, e)``.
    """

    def __init__(self, pids: Sequence[int] | np.ndarray, batch_size: int, num_instances: int,
                 seed: int = 0) -> None:
        if num_instances < 1 or batch_size % num_instances:
            raise DataError(f"sampler: batch_size {batch_size} must be a multiple of "
                            f"num_instances {num_instances}")
        pids = np.asarray(pids)
        self.num_instances = num_instances
        self.num_ids_per_batch = batch_size // num_instances
        self.seed = seed
        self.epoch = 0
        self._index = {int(p): np.flatnonzero(pids == p) for p in np.unique(pids)}
        if len(self._index) < self.num_ids_per_batch:
            raise DataError(f"sampler: {len(self._index)} training ids, fewer than the "
                            f"{self.num_ids_per_batch} ids per batch (batch_size / num_instances)")
        chunks = sum(max(1, len(v) // num_instances) for v in self._index.values())
        self._length = max(1, chunks // self.num_ids_per_batch)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        k, p = self.num_instances, self.num_ids_per_batch
        pids = sorted(self._index)
        chunks = {pid: self._chunks(self._index[pid], rng) for pid in pids}
        for _ in range(self._length):
            live = [pid for pid in pids if chunks[pid]]
            chosen = list(rng.permutation(live)[:p])
            if len(chosen) < p:  # top up with fresh chunks of ids that ran out
                rest = [pid for pid in pids if pid not in set(chosen)]
                chosen += list(rng.choice(rest, size=p - len(chosen), replace=False))
            batch = []
            for pid in chosen:
                pid = int(pid)
                if not chunks[pid]:
                    chunks[pid] = self._chunks(self._index[pid], rng)
                batch.append(chunks[pid].pop())
            yield np.concatenate(batch).reshape(p * k)

    def _chunks(self, idx: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        k = self.num_instances
        if len(idx) < k:
            return [rng.choice(idx, size=k, replace=True)]
        shuffled = rng.permutation(idx)
        return [shuffled[i * k:(i + 1) * k] for i in range(len(idx) // k)]
