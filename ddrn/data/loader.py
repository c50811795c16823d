"""The training loader: P x K batches read from the packed store and augmented on the device.

No worker processes and no JPEG decoding. On CPU a batch is one pass per image from the
memory-mapped uint8 array straight into normalised floats (:meth:`BatchAugment.gather`); on CUDA
it is a fancy-index into a copy of the whole split kept in GPU memory when it fits (otherwise a
sorted memmap read and one host-to-device copy of bytes) and :class:`BatchAugment` on the GPU.

``workers`` background threads prepare the next batches while the consumer works (numpy releases
the GIL). Every batch draws its augmentation from its own seed, derived from (seed, epoch, batch
number), so the batches are identical whatever the number of workers, and a resumed epoch
(:meth:`TrainLoader.set_epoch`) replays exactly.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from ddrn.config import InputConfig, TrainConfig
from ddrn.data.augment import BatchAugment
from ddrn.data.packed import PackedSplit
from ddrn.data.sampler import PKSampler

GPU_STORE_SHARE = 0.25
"""Keep the split on the GPU when it takes at most this share of the free GPU memory."""

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class TrainLoader:
    """Iterable of ``(images (B, 3, H, W) float, pids (B,) int64, camids (B,) int64)`` on ``device``.

    Each ``iter()`` is one epoch; epochs advance automatically, or are set with :meth:`set_epoch`
    (e.g. on resume). ``len()`` is the number of iterations per epoch.

    Args:
        workers: background threads preparing batches ahead (0 = in the consumer's thread).
            ``None`` = 0, except 1 on CUDA when the split is read from the memmap.
        resident: keep a copy of the whole split in ``device`` memory and index it there.
            ``None`` = on CUDA when it takes at most ``GPU_STORE_SHARE`` of the free memory;
            ``True`` forces it on any device (how the CPU suite runs the GPU's code path).
    """

    def __init__(self, split: PackedSplit, train_cfg: TrainConfig, input_cfg: InputConfig,
                 device: torch.device | str, seed: int = 0, workers: int | None = None,
                 resident: bool | None = None) -> None:
        self.split = split
        self.device = torch.device(device)
        self.seed = seed
        self.sampler = PKSampler(split.pids, train_cfg.batch_size, train_cfg.num_instances, seed)
        self.iters = train_cfg.iters_per_epoch or len(self.sampler)
        self.augment = BatchAugment(input_cfg, train=True, seed=seed)
        self.pids = torch.from_numpy(np.asarray(split.pids)).to(self.device)
        self.camids = torch.from_numpy(np.asarray(split.camids)).to(self.device)
        self._store = self._device_store(resident)
        if workers is None:
            workers = 1 if self.device.type == "cuda" and self._store is None else 0
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.workers = workers
        self._epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self._epoch = epoch

    def __len__(self) -> int:
        return self.iters

    def __iter__(self) -> Iterator[Batch]:
        epoch, self._epoch = self._epoch, self._epoch + 1
        jobs = self._jobs(epoch)
        if self.workers == 0:
            for idx, batch_seed in jobs:
                yield self._batch(idx, batch_seed)
            return
        # Keep `workers + 1` batches in flight: every thread busy plus one ready for the consumer.
        with ThreadPoolExecutor(self.workers, thread_name_prefix="ddrn-loader") as pool:
            pending: deque[Future[Batch]] = deque()
            try:
                for job in jobs:
                    pending.append(pool.submit(self._batch, *job))
                    if len(pending) > self.workers:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:  # the consumer stopped early: drop what has not started
                for future in pending:
                    future.cancel()

    def _jobs(self, epoch: int) -> Iterator[tuple[np.ndarray, int]]:
        """This epoch's ``iters`` batches of indices, each with its own augmentation seed."""
        produced, round_ = 0, 0
        while produced < self.iters:  # iters_per_epoch may exceed one pass of the sampler
            self.sampler.set_epoch(epoch * 1000 + round_)
            for idx in self.sampler:
                state = np.random.SeedSequence((self.seed, epoch, produced)).generate_state(1, np.uint64)
                yield idx, int(state[0]) >> 1  # 63 bits: any torch.Generator seed
                produced += 1
                if produced == self.iters:
                    return
            round_ += 1

    def _batch(self, idx: np.ndarray, batch_seed: int) -> Batch:
        index = torch.from_numpy(idx).to(self.device)
        if self._store is not None:
            images = self.augment(self._store[index], seed=batch_seed)
        elif self.device.type == "cpu":
            images = self.augment.gather(self.split.images, idx, seed=batch_seed)
        else:
            order = np.sort(idx)  # sequential reads of the memmap, then restore the batch order
            rows = np.asarray(self.split.images[order])
            raw = torch.from_numpy(rows[np.searchsorted(order, idx)])
            raw = raw.pin_memory().to(self.device, non_blocking=True) if self.device.type == "cuda" \
                else raw.to(self.device)
            images = self.augment(raw, seed=batch_seed)
        return images, self.pids[index], self.camids[index]

    @property
    def resident(self) -> bool:
        """Whether batches are indexed from a copy of the split in device memory."""
        return self._store is not None

    def _device_store(self, resident: bool | None) -> torch.Tensor | None:
        if resident is False or (resident is None and self.device.type != "cuda"):
            return None
        if resident is None:
            free, _ = torch.cuda.mem_get_info(self.device)
            if self.split.images.nbytes > GPU_STORE_SHARE * free:
                return None
        return torch.from_numpy(np.ascontiguousarray(self.split.images)).to(self.device)


def make_train_loader(split: PackedSplit, train_cfg: TrainConfig, input_cfg: InputConfig,
                      device: torch.device | str, seed: int, workers: int | None = None,
                      resident: bool | None = None) -> TrainLoader:
    """The training loader of CONTRACTS.md (see :class:`TrainLoader`)."""
    return TrainLoader(split, train_cfg, input_cfg, device, seed, workers, resident)
