"""A picture grid of a dataset: per identity, its queries (with twins) and gallery images.

Used for the README figure of the synthetic benchmark (``reports/figures/synthetic_grid.png``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ddrn.data.samples import ReIDDataset, Sample


def dataset_grid(dataset: ReIDDataset, num_ids: int = 8, per_id: int = 5, height: int = 128,
                 width: int = 64, pad: int = 2) -> np.ndarray:
    """(rows*H', cols*W', 3) uint8 grid: one row per test id.

    Each row shows the id's first query, its twin when there is one, then gallery images.
    """
    twins = {Path(s.path).name: s for s in dataset.extra.get("query_twin", [])}
    pids = sorted({s.pid for s in dataset.query})[:num_ids]
    rows = []
    for pid in pids:
        query = [s for s in dataset.query if s.pid == pid]
        cells: list[Sample] = []
        for q in query[:2]:
            cells.append(q)
            if Path(q.path).name in twins:
                cells.append(twins[Path(q.path).name])
        cells += [s for s in dataset.gallery if s.pid == pid]
        rows.append([_load(s.path, height, width) for s in cells[:per_id]])
    cols = max((len(r) for r in rows), default=0)
    grid = np.full((len(rows) * (height + pad) + pad, cols * (width + pad) + pad, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            y, x = pad + i * (height + pad), pad + j * (width + pad)
            grid[y:y + height, x:x + width] = img
    return grid


def save_dataset_grid(dataset: ReIDDataset, path: str | Path, **kwargs: int) -> Path:
    """Write :func:`dataset_grid` as a PNG (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(dataset_grid(dataset, **kwargs)).save(path)
    return path


def _load(path: str, height: int, width: int) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((width, height), Image.Resampling.BICUBIC))
