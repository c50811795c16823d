"""Small in-memory :class:`~ddrn.data.PackedSplit` objects for tests that need labels, not photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ddrn.config import SyntheticConfig
from ddrn.data import PackedSplit, generate_synthetic, load_dataset, open_packed, pack_dataset


def labelled_split(pids, camids, images: np.ndarray | None = None) -> PackedSplit:
    """These identities and cameras, with ``images`` (default: blank 4x2 pixels), no occlusion."""
    n = len(pids)
    images = np.zeros((n, 4, 2, 3), np.uint8) if images is None else images
    return PackedSplit(images, np.asarray(pids), np.asarray(camids), np.zeros(n, bool),
                       np.zeros(n, bool), [f"{i}.jpg" for i in range(n)])


def random_split(num_ids: int = 4, per_id: int = 4, image_size: tuple[int, int] = (32, 16),
                 seed: int = 0) -> PackedSplit:
    """``num_ids`` identities x ``per_id`` random-pixel images over two cameras."""
    n = num_ids * per_id
    images = np.random.default_rng(seed).integers(0, 256, (n, *image_size, 3), dtype=np.uint8)
    return labelled_split(np.repeat(np.arange(num_ids), per_id), np.arange(n) % 2, images)


def pack_synthetic_set(name: str, synthetic: SyntheticConfig, raw: Path, packed: Path, height: int,
                       width: int, source: dict | None = None) -> Path:
    """``name``'s synthetic set generated into ``raw`` (official layout) and packed into
    ``packed`` at ``height`` x ``width``, as the download and preprocess stages do; returns
    ``packed``."""
    generate_synthetic(name, synthetic, raw)
    return pack_dataset(load_dataset(name, raw, log_table=False), packed, height, width,
                        progress=False, source=source)


def synthetic_train_split(name: str, synthetic: SyntheticConfig, root: Path, height: int,
                          width: int) -> PackedSplit:
    """The train split of ``name``'s synthetic set packed under ``root`` (real JPEGs through the
    real loader and packer)."""
    packed = pack_synthetic_set(name, synthetic, root / "raw", root / "packed", height, width)
    return open_packed(packed).splits["train"]
