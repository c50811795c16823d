"""The parsed form of a re-ID dataset: samples and their splits.

A :class:`Sample` is one image with its identity and camera; a :class:`ReIDDataset` holds the three
standard splits (sorted by path) plus optional ``extra`` splits such as ``query_twin`` (the
unoccluded twins of the synthetic benchmark's occluded queries, in the same order as ``query``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

SPLITS = ("train", "query", "gallery")
"""The standard splits every dataset has (``train`` may be empty for test-only sets)."""


@dataclass(frozen=True, order=True)
class Sample:
    """One image.

    Attributes:
        path: file path of the image.
        pid: person id; train pids are relabelled ``0..n-1``, query/gallery keep the file's id
            (``0`` = distractor in the gallery).
        camid: camera index, 0-based.
        occluded: whether the person is occluded (or partial); ``None`` when the set does not say.
    """

    path: str
    pid: int
    camid: int
    occluded: bool | None = None


@dataclass(frozen=True)
class ReIDDataset:
    """The parsed splits of one dataset.

    Attributes:
        name: dataset format name (``market1501``, ``occluded_duke``, ...).
        root: the folder the split folders were found in.
        train, query, gallery: samples sorted by path.
        extra: additional splits, e.g. ``query_twin`` aligned one-to-one with ``query``.
    """

    name: str
    root: str
    train: list[Sample]
    query: list[Sample]
    gallery: list[Sample]
    extra: dict[str, list[Sample]] = field(default_factory=dict)

    def splits(self) -> dict[str, list[Sample]]:
        """Every split by name: the standard three, then the extras."""
        return {"train": self.train, "query": self.query, "gallery": self.gallery, **self.extra}

    @property
    def num_train_pids(self) -> int:
        return len({s.pid for s in self.train})

    @property
    def num_cameras(self) -> int:
        cams = [s.camid for split in self.splits().values() for s in split]
        return max(cams) + 1 if cams else 0


def split_stats(samples: Sequence[Sample]) -> tuple[int, int, int]:
    """(number of ids, number of images, number of cameras) of one split."""
    return (len({s.pid for s in samples}), len(samples), len({s.camid for s in samples}))
