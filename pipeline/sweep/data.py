"""A sweep worker's data, read once per worker process and shared by the trials it runs.

The sweep reuses its Ray workers (``reuse_actors``, :mod:`pipeline.sweep.search`): one process runs
trial after trial. Without this cache each trial would again open the packed store, copy its
training identities' images into memory (:func:`ddrn.data.select_rows`) and cut the validation
query/gallery out of it: work that is the same for every trial of a sweep and, for a trial ASHA
stops after two short epochs, a large share of what the trial costs.

An entry is keyed by the store's resolved path and a fingerprint of the files read from it
(``meta.json``'s bytes, and the inode, size and modification time of ``meta.json`` and the train
split's arrays), plus the validation split's rows. A repacked store (the preprocess stage replaces
the folder) or an edited ``meta.json`` therefore gives a new entry, never the old images. Entries
are read-only: the images are a read-only memmap or copies nobody writes to, and every trial
builds its own model, criterion and loader around them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ddrn.data import PackedDataset, PackedSplit, ValidationSplit, open_packed, select_rows

STORE_FILES = ("meta.json", "train.npy", "train.csv")
"""The files of a packed store a sweep trial reads (the test split's are never opened)."""


@dataclasses.dataclass(frozen=True)
class SweepData:
    """The data every trial of a sweep shares: the store, and the validation split's three parts.

    Attributes:
        packed: the opened store (memory-mapped images).
        train: the training identities' rows, identities renumbered ``0..num_classes-1``.
        num_classes: training identities (the classifier's width).
        query, gallery: the held-out identities' validation query and gallery.
    """

    packed: PackedDataset
    train: PackedSplit
    num_classes: int
    query: PackedSplit
    gallery: PackedSplit


def store_fingerprint(directory: str | Path) -> str:
    """A short hash that changes when the packed store at ``directory`` is rewritten or edited.

    ``meta.json``'s content, and ``(inode, size, mtime)`` of each file of :data:`STORE_FILES`
    that exists: a repack replaces the files (new inodes) even when it writes the same meta.
    """
    directory = Path(directory)
    digest = hashlib.sha256()
    meta = directory / "meta.json"
    digest.update(meta.read_bytes() if meta.is_file() else b"")
    for name in STORE_FILES:
        path = directory / name
        if path.exists():
            st = path.stat()
            digest.update(f"{name}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


def _rows_digest(split: ValidationSplit) -> str:
    digest = hashlib.sha256()
    for rows in (split.train, split.query, split.gallery):
        digest.update(np.ascontiguousarray(rows, dtype=np.int64).tobytes())
        digest.update(b"|")
    return digest.hexdigest()[:16]


class SweepDataCache:
    """Per-process cache of :class:`SweepData` (see the module docstring).

    Args:
        max_entries: entries kept, least recently used dropped first (a worker that outlives a
            repack does not keep both copies of the images forever).
    """

    def __init__(self, max_entries: int = 2) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str, str], SweepData] = OrderedDict()
        self._lock = threading.Lock()  # Tune runs the trial function in a thread of the worker
        self.misses = 0

    def get(self, directory: str | Path, split: ValidationSplit) -> SweepData:
        """The :class:`SweepData` of the store at ``directory`` cut by ``split``; read on a miss.

        Raises:
            DataError: the store is missing or malformed (from :func:`ddrn.data.open_packed`).
        """
        directory = Path(directory).resolve()
        key = (str(directory), store_fingerprint(directory), _rows_digest(split))
        with self._lock:
            data = self._entries.get(key)
            if data is not None:
                self._entries.move_to_end(key)
                return data
            data = load_sweep_data(directory, split)
            self.misses += 1
            self._entries[key] = data
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
            return data

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def load_sweep_data(directory: str | Path, split: ValidationSplit) -> SweepData:
    """Open the store at ``directory`` and cut ``split``'s training rows and query/gallery.

    The same reads as :func:`pipeline.trial.experiment.prepare_training` with ``train_rows`` (training
    identities renumbered, images copied in row order), so a cached trial trains on exactly the
    batches an uncached one would.
    """
    packed = open_packed(directory)
    full = packed.splits["train"]
    train = select_rows(full, split.train, relabel=True)
    return SweepData(packed=packed, train=train, num_classes=len(np.unique(train.pids)),
                     query=select_rows(full, split.query), gallery=select_rows(full, split.gallery))


WORKER_CACHE = SweepDataCache()
"""The cache of this process: a Ray worker running sweep trials keeps it between trials. Nothing
is read at import; the first trial of a worker fills it."""
