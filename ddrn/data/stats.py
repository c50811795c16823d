"""Statistics table of a parsed dataset, checked against the real sets' published counts.

The known counts come from ``reid-anchors.md`` §2 (torchreid's user guide, the Occluded-Duke lists,
the Occluded-REID / Partial-REID papers). They are only compared when the dataset's folder carries
the official top-level name (``Market-1501-v15.09.15``, ``DukeMTMC-reID``, ``Occluded_Duke``,
``Occluded_REID``, ``Partial_REID``), i.e. when the folder claims to be the real set. A mismatch is a
*warning*, not an error: a deliberately trimmed copy must still be usable, but an archive that
extracted only partly is then visible in the log.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ddrn.data.samples import ReIDDataset, split_stats

log = logging.getLogger(__name__)

# split -> (ids, images); cameras are checked separately.
KNOWN_COUNTS: dict[str, dict[str, tuple[int, int]]] = {
    "market1501": {"train": (751, 12936), "query": (750, 3368), "gallery": (751, 15913)},
    "dukemtmc": {"train": (702, 16522), "query": (702, 2228), "gallery": (1110, 17661)},
    "occluded_duke": {"train": (702, 15618), "query": (519, 2210), "gallery": (1110, 17661)},
    "occluded_reid": {"train": (0, 0), "query": (200, 1000), "gallery": (200, 1000)},
    "partial_reid": {"train": (0, 0), "query": (60, 300), "gallery": (60, 300)},
}

OFFICIAL_FOLDERS: dict[str, tuple[str, ...]] = {
    "market1501": ("Market-1501-v15.09.15", "Market-1501"),
    "dukemtmc": ("DukeMTMC-reID",),
    "occluded_duke": ("Occluded_Duke",),
    "occluded_reid": ("Occluded_REID",),
    "partial_reid": ("Partial_REID", "Partial-REID_Dataset"),
}
"""The top-level folder names of the official archives (also accepted one level below ``root``)."""


def stats_table(dataset: ReIDDataset) -> str:
    """A fixed-width table of ids / images / cameras per split."""
    lines = [f"dataset {dataset.name} ({dataset.root})",
             f"  {'split':<12}{'ids':>8}{'images':>9}{'cameras':>9}",
             "  " + "-" * 38]
    for name, samples in dataset.splits().items():
        ids, images, cams = split_stats(samples)
        lines.append(f"  {name:<12}{ids:>8}{images:>9}{cams:>9}")
    return "\n".join(lines)


def claims_real(dataset: ReIDDataset) -> bool:
    """Whether the dataset's folder has the official name, so it should match the real counts."""
    return Path(dataset.root).name in OFFICIAL_FOLDERS.get(dataset.name, ())


def check_known_counts(dataset: ReIDDataset) -> list[str]:
    """Differences from the published counts (empty when they match or the set is not the real one).

    Each difference is also logged as a warning.
    """
    if not claims_real(dataset):
        return []
    problems = []
    for split, (ids, images) in KNOWN_COUNTS[dataset.name].items():
        got_ids, got_images, _ = split_stats(getattr(dataset, split))
        if (got_ids, got_images) != (ids, images):
            problems.append(f"{dataset.root}: {split} has {got_ids} ids / {got_images} images, the "
                            f"real {dataset.name} has {ids} / {images}")
    for p in problems:
        log.warning("%s (incomplete copy?)", p)
    return problems


def log_stats(dataset: ReIDDataset) -> None:
    """Log the statistics table, then the known-count check."""
    log.info("%s", stats_table(dataset))
    check_known_counts(dataset)
