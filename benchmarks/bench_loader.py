"""Packed-store loader vs the TransReID way (PIL decode + torchvision transforms), same images.

Both produce augmented, normalised float batches (B, 3, 256, 128) of the same synthetic JPEGs
(128 x 64, Market's native size) with flip, pad-10 + crop and pixel random erasing. The reference
is a ``torch.utils.data.DataLoader`` with ``--workers`` worker processes; the packed loader gets
the same number of background threads (``make_train_loader(..., workers=N)``). Both are measured
in this run, after one warm-up batch each; prints images/s of each, the ratio and the load average
(the machine is shared, so only the ratio of one run means anything).

    python -m benchmarks.bench_loader [--quick] [--device cpu|cuda] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch

from ddrn.config import InputConfig, SyntheticConfig, TrainConfig
from ddrn.data import generate_synthetic, load_dataset, make_train_loader, open_packed, pack_dataset
from ddrn.data.loader import GPU_STORE_SHARE


class _JpegSet(torch.utils.data.Dataset):
    def __init__(self, paths: list[str], pids: list[int], transform) -> None:
        self.paths, self.pids, self.transform = paths, pids, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image
        with Image.open(self.paths[i]) as im:
            return self.transform(im.convert("RGB")), self.pids[i]


def _reference_loader(paths: list[str], pids: list[int], cfg: InputConfig, batch: int,
                      workers: int, batches: int) -> torch.utils.data.DataLoader:
    import torchvision.transforms as T
    from timm.data.random_erasing import RandomErasing

    transform = T.Compose([
        T.Resize((cfg.height, cfg.width), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(cfg.flip_prob), T.Pad(cfg.padding), T.RandomCrop((cfg.height, cfg.width)),
        T.ToTensor(), T.Normalize(cfg.mean, cfg.std),
        RandomErasing(probability=cfg.erasing_prob, mode="pixel", max_count=1, device="cpu"),
    ])
    # One long epoch of random images, as the packed loader's: no pipeline drain between epochs.
    sampler = torch.utils.data.RandomSampler(paths, replacement=True, num_samples=batches * batch)
    return torch.utils.data.DataLoader(_JpegSet(paths, pids, transform), batch_size=batch,
                                       sampler=sampler, num_workers=workers, drop_last=True)


def _timed(loader: Iterable, batches: int, device: torch.device) -> tuple[int, float]:
    """(images, seconds) for ``batches`` batches, after one warm-up batch (worker start, caches)."""
    it = iter(loader)
    next(it)
    n, start = 0, time.perf_counter()
    for _ in range(batches):
        n += next(it)[0].to(device).shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n, time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (fewer images/batches)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    # Full runs alternate the loaders over rounds so that a change of machine load hits both.
    ids, rounds, batches = (16, 1, 8) if args.quick else (64, 3, 10)
    cfg = InputConfig()                                   # 256 x 128, TransReID's recipe
    train = TrainConfig(batch_size=64, num_instances=4, iters_per_epoch=batches + 1)
    with tempfile.TemporaryDirectory() as tmp:
        syn = SyntheticConfig(num_train_ids=ids, num_test_ids=1, num_distractor_ids=0,
                              images_per_id=16, num_cameras=6, seed=0)
        generate_synthetic("market1501", syn, Path(tmp) / "raw")
        ds = load_dataset("market1501", Path(tmp) / "raw", log_table=False)
        pack_dataset(ds, Path(tmp) / "packed", cfg.height, cfg.width)
        split = open_packed(Path(tmp) / "packed").splits["train"]
        paths, pids = [s.path for s in ds.train], [s.pid for s in ds.train]
        load_before = os.getloadavg()[0]
        loaders: dict[str, Callable[[], Iterable]] = {
            "packed": lambda: make_train_loader(split, train, cfg, device, 0, workers=args.workers),
            "reference": lambda: _reference_loader(paths, pids, cfg, train.batch_size,
                                                   args.workers, batches + 1),
            "inline": lambda: make_train_loader(split, train, cfg, device, 0, workers=0),
        }
        totals = {name: [0, 0.0] for name in loaders}
        for _ in range(rounds):
            for name, make in loaders.items():
                n, sec = _timed(make(), batches, device)
                totals[name][0] += n
                totals[name][1] += sec
        packed, ref, inline = (totals[k][0] / totals[k][1] for k in ("packed", "reference", "inline"))
        load_after = os.getloadavg()[0]
    print(f"bench_loader: {len(paths)} images 256x128, batch 64, {rounds} x {batches} timed batches, "
          f"{args.workers} workers/threads, device {device}, {os.cpu_count()} CPUs, "
          f"load average {load_before:.1f} -> {load_after:.1f}")
    w = args.workers
    print(f"  {f'PIL + torchvision DataLoader, {w} worker processes':52s}: {ref:9.0f} img/s")
    print(f"  {f'packed store + BatchAugment, {w} threads':52s}: {packed:9.0f} img/s")
    print(f"  {'packed store, in the consumer thread (workers=0)':52s}: {inline:9.0f} img/s")
    print(f"  {'ratio packed / PIL, same worker count':52s}: {packed / ref:9.1f}x (goal >= 5x)")
    if device.type != "cuda":
        print("  GPU path (not measured here): make_train_loader(..., device='cuda') keeps the uint8 "
              f"store in GPU memory when it takes <= {GPU_STORE_SHARE:.0%} of the free memory and "
              "augments there; run with --device cuda on a CUDA machine")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
