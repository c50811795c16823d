"""The packed store: each split decoded once into a memory-mappable uint8 array plus a manifest.

Layout of ``data/packed/<dataset>/``::

    meta.json            name, height, width, num_classes, num_cameras, split sizes, source root
    <split>.npy          uint8 (N, H, W, 3), RGB, resized bicubically to the profile's input size
    <split>.csv          one row per image: path, pid, camid, occluded (1/0, -1 = unknown)

:func:`pack_dataset` writes everything into a temporary folder next to ``out_dir`` and renames it
into place at the end, so a corrupt image (reported by path) or an interrupted run never leaves a
partial pack behind.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ddrn.data.samples import ReIDDataset, Sample
from ddrn.errors import DataError

FORMAT_VERSION = 1


@dataclass(frozen=True)
class PackedSplit:
    """One split of a packed store.

    Attributes:
        images: uint8 (N, H, W, 3) memmap.
        pids, camids: int64 (N,).
        occluded: bool (N,), False where unknown; ``occluded_known`` says where it is known.
        paths: source image paths.
    """

    images: np.ndarray
    pids: np.ndarray
    camids: np.ndarray
    occluded: np.ndarray
    occluded_known: np.ndarray
    paths: list[str]

    def __len__(self) -> int:
        return len(self.paths)


@dataclass(frozen=True)
class PackedDataset:
    """A packed dataset: its splits and the numbers a model needs."""

    name: str
    splits: dict[str, PackedSplit]
    num_classes: int
    num_cameras: int
    height: int
    width: int


def pack_dataset(dataset: ReIDDataset, out_dir: str | Path, height: int, width: int,
                 num_threads: int = 2, progress: bool | None = None,
                 source: dict[str, Any] | None = None) -> Path:
    """Decode, resize and pack every split of ``dataset`` into ``out_dir`` (replaced atomically).

    Args:
        num_threads: decoding threads (PIL releases the GIL while decoding and resizing).
        progress: show a tqdm bar; ``None`` = only when stderr is a terminal.
        source: what the pack was made from (e.g. the dataset config's fingerprint), kept in
            ``meta.json`` so a reader can tell a pack of other settings from its own.

    Raises:
        DataError: an image that cannot be decoded (named by path); nothing is left behind.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        sizes = {}
        for split, samples in dataset.splits().items():
            _write_split(tmp, split, samples, height, width, num_threads,
                         sys.stderr.isatty() if progress is None else progress)
            sizes[split] = len(samples)
        meta = {"format": FORMAT_VERSION, "name": dataset.name, "root": dataset.root,
                "height": height, "width": width, "num_classes": dataset.num_train_pids,
                "num_cameras": dataset.num_cameras, "splits": sizes}
        if source is not None:
            meta["source"] = source
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def open_packed(directory: str | Path) -> PackedDataset:
    """Open a store written by :func:`pack_dataset`; the image arrays are memory-mapped, read-only.

    Raises:
        DataError: missing or malformed store (run the preprocess stage).
    """
    directory = Path(directory)
    meta = read_meta(directory)
    splits = {name: _open_split(directory, name, n) for name, n in meta["splits"].items()}
    return PackedDataset(name=meta["name"], splits=splits, num_classes=meta["num_classes"],
                         num_cameras=meta["num_cameras"], height=meta["height"], width=meta["width"])


def read_meta(directory: str | Path) -> dict[str, Any]:
    """The ``meta.json`` of a packed store, checked for the keys :func:`open_packed` needs.

    Raises:
        DataError: missing, truncated or malformed (one line; re-run the preprocess stage).
    """
    meta_path = Path(directory) / "meta.json"
    if not meta_path.is_file():
        raise DataError(f"{meta_path}: packed store not found; expected the output of "
                        "`python -m pipeline.preprocess`")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{meta_path}: unreadable ({type(exc).__name__}: truncated or corrupt); "
                        "expected the JSON written by the preprocess stage; re-run it") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise DataError(f"{meta_path}: packed format {found!r}, expected {FORMAT_VERSION}; "
                        "re-run the preprocess stage")
    missing = [k for k in ("name", "height", "width", "num_classes", "num_cameras", "splits")
               if k not in meta]
    if missing or not isinstance(meta["splits"], dict):
        raise DataError(f"{meta_path}: missing {', '.join(missing) or 'splits'}; expected the "
                        "meta.json written by the preprocess stage; re-run it")
    return meta


def decode(path: str, height: int, width: int) -> np.ndarray:
    """One image as uint8 (height, width, 3) RGB, resized bicubically; DataError naming the path."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (width, height):
                im = im.resize((width, height), Image.Resampling.BICUBIC)
            return np.asarray(im, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot decode image ({type(exc).__name__}); expected a valid "
                        "JPEG/PNG/TIFF file") from None


def _write_split(tmp: Path, split: str, samples: list[Sample], height: int, width: int,
                 num_threads: int, progress: bool) -> None:
    images = np.lib.format.open_memmap(tmp / f"{split}.npy", mode="w+", dtype=np.uint8,
                                       shape=(len(samples), height, width, 3))
    load: Callable[[Sample], np.ndarray] = lambda s: decode(s.path, height, width)  # noqa: E731
    with ThreadPoolExecutor(max(1, num_threads)) as pool:
        decoded = pool.map(load, samples)
        if progress:
            from tqdm import tqdm
            decoded = tqdm(decoded, total=len(samples), desc=f"pack {split}", unit="img")
        for i, img in enumerate(decoded):
            images[i] = img
    images.flush()
    del images
    with (tmp / f"{split}.csv").open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("path", "pid", "camid", "occluded"))
        for s in samples:
            writer.writerow((s.path, s.pid, s.camid, -1 if s.occluded is None else int(s.occluded)))


def _open_split(directory: Path, name: str, expected: int) -> PackedSplit:
    npy, manifest = directory / f"{name}.npy", directory / f"{name}.csv"
    try:
        images = np.load(npy, mmap_mode="r", allow_pickle=False)
        with manifest.open(newline="") as f:
            rows = list(csv.DictReader(f))
        pids = np.array([int(r["pid"]) for r in rows], dtype=np.int64)
        camids = np.array([int(r["camid"]) for r in rows], dtype=np.int64)
        occ = np.array([int(r["occluded"]) for r in rows], dtype=np.int64)
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{directory}/{name}: unreadable packed split ({type(exc).__name__}); "
                        "re-run the preprocess stage") from None
    if len(rows) != expected or images.shape[0] != expected:
        raise DataError(f"{npy}: {images.shape[0]} images / {len(rows)} manifest rows, meta.json "
                        f"says {expected}; re-run the preprocess stage")
    return PackedSplit(images=images, pids=pids, camids=camids, occluded=occ == 1,
                       occluded_known=occ >= 0, paths=[r["path"] for r in rows])


def _replace_dir(new: Path, out: Path) -> None:
    """Rename ``new`` to ``out``; an existing ``out`` is moved aside first and deleted after."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    new.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
