"""Packed-store loader vs the TransReID way (PIL decode + torchvision transforms), same images.

Both produce augmented, normalised float batches (B, 3, 256, 128) of the same synthetic JPEGs
(128 x 64, Market's native size) with flip, pad-10 + crop and pixel random erasing. The reference
is a ``torch.utils.data.DataLoader`` with ``--workers`` worker processes; the packed loader runs
in the main process with the same number of torch threads. Prints images/s of each and the ratio.

    python -m benchmarks.bench_loader [--quick] [--device cpu|cuda] [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from ddrn.config import InputConfig, SyntheticConfig, TrainConfig
from ddrn.data import generate_synthetic, load_dataset, make_train_loader, open_packed, pack_dataset


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
                      workers: int) -> torch.utils.data.DataLoader:
    import torchvision.transforms as T
    from timm.data.random_erasing import RandomErasing

    transform = T.Compose([
        T.Resize((cfg.height, cfg.width), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(cfg.flip_prob), T.Pad(cfg.padding), T.RandomCrop((cfg.height, cfg.width)),
        T.ToTensor(), T.Normalize(cfg.mean, cfg.std),
        RandomErasing(probability=cfg.erasing_prob, mode="pixel", max_count=1, device="cpu"),
    ])
    return torch.utils.data.DataLoader(_JpegSet(paths, pids, transform), batch_size=batch,
                                       shuffle=True, num_workers=workers, drop_last=True,
                                       persistent_workers=workers > 0)


def _rate(loader: Iterable, batches: int, device: torch.device) -> float:
    it = iter(loader)
    next(it)  # warm-up: worker start, page cache
    n, start = 0, time.perf_counter()
    for _ in range(batches):
        try:
            images = next(it)[0]
        except StopIteration:
            it = iter(loader)
            images = next(it)[0]
        images = images.to(device)
        n += images.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (fewer images/batches)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    ids, batches = (16, 8) if args.quick else (64, 30)
    cfg = InputConfig()                                   # 256 x 128, TransReID's recipe
    train = TrainConfig(batch_size=64, num_instances=4)
    with tempfile.TemporaryDirectory() as tmp:
        syn = SyntheticConfig(num_train_ids=ids, num_test_ids=1, num_distractor_ids=0,
                              images_per_id=16, num_cameras=6, seed=0)
        generate_synthetic("market1501", syn, Path(tmp) / "raw")
        ds = load_dataset("market1501", Path(tmp) / "raw", log_table=False)
        pack_dataset(ds, Path(tmp) / "packed", cfg.height, cfg.width)
        split = open_packed(Path(tmp) / "packed").splits["train"]
        paths, pids = [s.path for s in ds.train], [s.pid for s in ds.train]
        threads = torch.get_num_threads()
        torch.set_num_threads(args.workers)
        try:
            packed = _rate(make_train_loader(split, train, cfg, device, 0), batches, device)
        finally:
            torch.set_num_threads(threads)
        ref = _rate(_reference_loader(paths, pids, cfg, train.batch_size, args.workers), batches,
                    device)
    print(f"bench_loader: {len(paths)} images 256x128, batch 64, {args.workers} workers/threads, "
          f"device {device}")
    print(f"  PIL + torchvision DataLoader : {ref:9.0f} img/s")
    print(f"  packed store + BatchAugment  : {packed:9.0f} img/s")
    print(f"  ratio packed / reference     : {packed / ref:9.1f}x (goal >= 5x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
