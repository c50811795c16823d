"""Parsers for the five dataset layouts (``reid-anchors.md`` §2), behind :func:`load_dataset`.

``root`` is the folder that holds the split folders; the official archive's top folder one level
below it is accepted too (``root/Market-1501-v15.09.15/bounding_box_train``). Expected trees::

    market1501     bounding_box_train/ query/ bounding_box_test/   0002_c1s1_000451_03.jpg
    dukemtmc       bounding_box_train/ query/ bounding_box_test/   0001_c2_f0046182.jpg
    occluded_duke  bounding_box_train/ query/ bounding_box_test/   (Duke names; all queries occluded)
    occluded_reid  occluded_body_images/<pid>/<pid>_<nn>.tif  (query)
                   whole_body_images/<pid>/<pid>_<nn>.tif     (gallery)
    partial_reid   partial_body_images/<pid>_<nn>.jpg         (query; ``occluded_body_images/`` of
                   whole_body_images/<pid>_<nn>.jpg           some copies is ignored) (gallery)

Rules shared with TransReID/torchreid, made deterministic: the name regex is applied to the file's
basename, never the path; paths and pids are sorted; Market junk (pid -1) is dropped everywhere and
distractors (pid 0) stay in the gallery; camid = camera - 1; train pids are relabelled 0..n-1 in
sorted order. Occluded-REID and Partial-REID have no cameras: query gets camid 0 and gallery camid 1
(BPBreID's convention; DPM's ``Rename.py`` uses 0 and 2, which only matters for a camera embedding
learned on Market) so the Market protocol keeps every true match.

Sets written by :mod:`ddrn.data.synthetic` also carry ``query_twin/`` (unoccluded twins of the
occluded queries, same file names, exposed as ``extra['query_twin']``) and ``occlusion.csv`` (the
occlusion flag of every image, relative path -> 0/1).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from ddrn.data.samples import ReIDDataset, Sample
from ddrn.data.stats import OFFICIAL_FOLDERS, log_stats
from ddrn.errors import DataError

TWIN_FOLDER = "query_twin"
OCCLUSION_FILE = "occlusion.csv"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}


@dataclass(frozen=True)
class Layout:
    """How one dataset format stores its splits."""

    folders: dict[str, str]          # split -> folder relative to root
    pattern: re.Pattern[str]         # applied to the basename; group 1 = pid (group 2 = camera)
    num_cameras: int                 # cameras in file names (1-based); 0 = no camera in the name
    per_id_folders: bool = False     # Occluded-REID: <split>/<pid>/<pid>_<nn>.tif
    fixed_camids: tuple[int, int] = (0, 1)  # (query, gallery) camid when names carry no camera
    name_example: str = ""


_MARKET_RE = re.compile(r"^([-\d]+)_c(\d)s\d+_\d+_\d+\.jpg$", re.IGNORECASE)
_DUKE_RE = re.compile(r"^([-\d]+)_c(\d)_f\d+\.jpg$", re.IGNORECASE)
_DUKE_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}

LAYOUTS: dict[str, Layout] = {
    "market1501": Layout(_DUKE_FOLDERS, _MARKET_RE, 6, name_example="0002_c1s1_000451_03.jpg"),
    "dukemtmc": Layout(_DUKE_FOLDERS, _DUKE_RE, 8, name_example="0001_c2_f0046182.jpg"),
    "occluded_duke": Layout(_DUKE_FOLDERS, _DUKE_RE, 8, name_example="0001_c2_f0046182.jpg"),
    "occluded_reid": Layout({"query": "occluded_body_images", "gallery": "whole_body_images"},
                            re.compile(r"^(\d+)_(\d+)\.tiff?$", re.IGNORECASE), 0,
                            per_id_folders=True, name_example="<pid>/<pid>_<nn>.tif"),
    "partial_reid": Layout({"query": "partial_body_images", "gallery": "whole_body_images"},
                           re.compile(r"^(\d+)_(\d+)\.(?:jpg|jpeg|png)$", re.IGNORECASE), 0,
                           name_example="<pid>_<nn>.jpg"),
}

# Occlusion known by the set's definition when no occlusion.csv says otherwise.
_DEFAULT_OCCLUDED: dict[str, dict[str, bool | None]] = {
    "occluded_duke": {"query": True},
    "occluded_reid": {"query": True, "gallery": False},
    "partial_reid": {"query": True, "gallery": False},
}


def load_dataset(name: str, root: str | Path, *, check_images: bool = False,
                 log_table: bool = True) -> ReIDDataset:
    """Parse one dataset folder.

    Args:
        name: one of ``market1501, dukemtmc, occluded_duke, occluded_reid, partial_reid``.
        root: the folder holding the split folders (or the official top folder).
        check_images: also open every image header, failing on unreadable files.
        log_table: log the statistics table (and the known-count check for the real sets).

    Raises:
        DataError: unknown format, missing folder, unparseable file name or unreadable image.
    """
    if name not in LAYOUTS:
        raise DataError(f"unknown dataset format {name!r}; expected one of: {', '.join(LAYOUTS)}")
    layout = LAYOUTS[name]
    base = resolve_root(name, root)
    occlusion = _read_occlusion(base)
    splits: dict[str, list[Sample]] = {"train": [], "query": [], "gallery": []}
    for split, folder in layout.folders.items():
        splits[split] = _parse_split(layout, base, base / folder, split, occlusion,
                                     _DEFAULT_OCCLUDED.get(name, {}).get(split))
    extra: dict[str, list[Sample]] = {}
    twin_dir = base / TWIN_FOLDER
    if twin_dir.is_dir():
        extra[TWIN_FOLDER] = _parse_twins(layout, base, twin_dir, splits["query"])
    if check_images:
        for samples in (*splits.values(), *extra.values()):
            for s in samples:
                check_image(s.path)
    splits["train"] = relabel(splits["train"])
    dataset = ReIDDataset(name=name, root=str(base), train=splits["train"], query=splits["query"],
                          gallery=splits["gallery"], extra=extra)
    if log_table:
        log_stats(dataset)
    return dataset


def resolve_root(name: str, root: str | Path) -> Path:
    """The folder that holds ``name``'s split folders: ``root`` or its official top folder."""
    root = Path(root)
    folders = list(LAYOUTS[name].folders.values())
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found; expected the {name} split folders "
                        f"{', '.join(folders)} in it (run the download stage?)")
    for candidate in (root, *(root / top for top in OFFICIAL_FOLDERS[name])):
        if all((candidate / f).is_dir() for f in folders):
            return candidate
    missing = next(f for f in folders if not (root / f).is_dir())
    raise DataError(f"{root / missing}: missing split folder of {name}; expected "
                  f"{', '.join(folders)} under {root} (or under {root}/{OFFICIAL_FOLDERS[name][0]})")


def relabel(train: list[Sample]) -> list[Sample]:
    """Train pids mapped to ``0..n-1`` in sorted order of the original ids."""
    label = {pid: i for i, pid in enumerate(sorted({s.pid for s in train}))}
    return [Sample(s.path, label[s.pid], s.camid, s.occluded) for s in train]


def check_image(path: str | Path) -> None:
    """Open the image header; raise a one-line DataError naming the path if it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.verify()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: unreadable image ({type(exc).__name__}); expected a valid "
                        "JPEG/PNG/TIFF file") from None


def _image_files(folder: Path, per_id: bool) -> list[Path]:
    pattern = "*/*" if per_id else "*"
    return sorted(p for p in folder.glob(pattern)
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _parse_name(layout: Layout, path: Path) -> tuple[int, int | None]:
    """(pid, 1-based camera or None) from the basename."""
    m = layout.pattern.match(path.name)
    if m is None:
        raise DataError(f"{path}: unparseable file name; expected names like {layout.name_example}")
    pid = int(m.group(1))
    if layout.num_cameras == 0:
        return pid, None
    cam = int(m.group(2))
    if not 1 <= cam <= layout.num_cameras:
        raise DataError(f"{path}: camera c{cam} out of range; expected c1..c{layout.num_cameras}")
    return pid, cam


def _parse_split(layout: Layout, base: Path, folder: Path, split: str,
                 occlusion: dict[str, bool], default_occluded: bool | None) -> list[Sample]:
    samples = []
    for path in _image_files(folder, layout.per_id_folders):
        pid, cam = _parse_name(layout, path)
        if pid == -1:  # Market junk: dropped everywhere
            continue
        if cam is None:
            camid = layout.fixed_camids[0] if split == "query" else layout.fixed_camids[1]
        else:
            camid = cam - 1
        occluded = occlusion.get(path.relative_to(base).as_posix(), default_occluded)
        samples.append(Sample(str(path), pid, camid, occluded))
    return samples


def _parse_twins(layout: Layout, base: Path, twin_dir: Path, query: list[Sample]) -> list[Sample]:
    """Twins mirror the query folder's tree; each must have a query of the same relative name."""
    query_dir = base / layout.folders["query"]
    by_rel = {Path(s.path).relative_to(query_dir).as_posix(): s for s in query}
    twins = []
    for path in _image_files(twin_dir, layout.per_id_folders):
        rel = path.relative_to(twin_dir).as_posix()
        q = by_rel.get(rel)
        if q is None:
            raise DataError(f"{path}: twin without a query image; expected {query_dir / rel}")
        twins.append(Sample(str(path), q.pid, q.camid, False))
    return twins


def _read_occlusion(base: Path) -> dict[str, bool]:
    path = base / OCCLUSION_FILE
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    try:
        return {r["path"]: r["occluded"] == "1" for r in rows}
    except KeyError:
        raise DataError(f"{path}: expected a CSV with columns path,occluded") from None
