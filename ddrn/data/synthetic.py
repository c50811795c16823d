"""The synthetic occluded-person benchmark, written in the five official layouts.

:func:`generate_synthetic` draws identities (:mod:`ddrn.data.pedestrians`) and cameras
(:mod:`ddrn.data.scenes`) from ``SyntheticConfig.seed`` and writes one dataset in the layout and
file names of ``name``, so :func:`ddrn.data.load_dataset` reads it like the real set:

- ``occluded_duke``: Duke names; ``query_occlusion`` of the queries (all, by default), ``gallery_occlusion``
  of the gallery and ``train_occlusion`` of the training images carry an occluder.
- ``market1501`` / ``dukemtmc``: the same with the occlusion shares the profile gives (0 = holistic);
  Market also gets a few junk images (pid -1) in ``bounding_box_test``, as the real set does.
- ``occluded_reid``: ``.tif`` files in per-id folders, occluded queries against whole-body gallery.
- ``partial_reid``: flat folders, queries are *cropped* bodies (the partial view) against whole bodies.

Distractor ids (pid 0) go to the gallery of the three Duke/Market-like sets. Each occluded or
partial query gets its unoccluded twin (same scene, camera, pose and noise, no occluder / no crop)
in ``query_twin/`` under the same relative name, and ``occlusion.csv`` records every image's
occlusion flag, occluder kind and covered share. Every image has its own random stream
(``seed``, image index), so output is byte-identical for a seed, whatever the order of work.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ddrn.config import SyntheticConfig
from ddrn.data.formats import LAYOUTS, OCCLUSION_FILE, TWIN_FOLDER
from ddrn.data.pedestrians import Identity, Painter, near_duplicate, random_identity
from ddrn.data.scenes import Camera, add_occluder, background, finish, place_person, random_camera
from ddrn.errors import ConfigError

NEAR_DUPLICATE_SHARE = 0.3
"""Share of identities that copy an earlier one with one or two attributes changed."""


@dataclass(frozen=True)
class _Item:
    split: str
    pid: int          # as written in the file name (0 distractor, -1 junk)
    ident: int        # index into the identity pool (-1: junk, no person)
    cam: int          # 0-based synthetic camera
    occluded: bool
    rel: str          # path relative to the dataset root


@dataclass(frozen=True)
class SyntheticSummary:
    """What :func:`generate_synthetic` wrote."""

    name: str
    root: str
    images: int
    twins: int
    seconds: float


def generate_synthetic(name: str, cfg: SyntheticConfig, out_dir: str | Path) -> SyntheticSummary:
    """Write dataset ``name`` (one of the five formats) into ``out_dir`` (created if needed).

    Raises:
        ConfigError: a size the format cannot express (e.g. more than 6 Market cameras).
    """
    start = time.perf_counter()
    if name not in LAYOUTS:
        raise ConfigError(f"synthetic dataset {name!r}: unknown format; expected one of: "
                          f"{', '.join(LAYOUTS)}")
    max_cams = LAYOUTS[name].num_cameras
    if max_cams and cfg.num_cameras > max_cams:
        raise ConfigError(f"datasets.{name}.synthetic.num_cameras: expected at most {max_cams} "
                          f"(the {name} file names carry c1..c{max_cams}), got {cfg.num_cameras}")
    out = Path(out_dir)
    items = plan(name, cfg)
    identities = _identities(cfg, 1 + max(it.ident for it in items))
    cameras = [random_camera(np.random.default_rng([cfg.seed, 2, c])) for c in range(cfg.num_cameras)]
    painter = Painter(cfg.height, cfg.width)
    query_folder = LAYOUTS[name].folders["query"]
    rows, twins = [], 0
    for index, item in enumerate(items):
        img, twin, kind, share = render(painter, item, identities, cameras, cfg, index,
                                        partial=name == "partial_reid")
        _save(out / item.rel, img)
        rows.append((item.rel, item.pid, int(item.occluded), kind, f"{share:.3f}"))
        if twin is not None and item.split == "query":
            rel = Path(item.rel).relative_to(query_folder)
            _save(out / TWIN_FOLDER / rel, twin)
            rows.append(((Path(TWIN_FOLDER) / rel).as_posix(), item.pid, 0, "none", "0.000"))
            twins += 1
    with (out / OCCLUSION_FILE).open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("path", "pid", "occluded", "occluder", "area"))
        writer.writerows(sorted(rows))
    return SyntheticSummary(name, str(out), len(items), twins, time.perf_counter() - start)


def plan(name: str, cfg: SyntheticConfig) -> list[_Item]:
    """Every image to draw: split, pid, identity, camera, occlusion and file name (no pixels)."""
    rng = np.random.default_rng([cfg.seed, 1])
    layout = LAYOUTS[name]
    folders = layout.folders
    test_only = "train" not in folders
    occlusion = {"train": cfg.train_occlusion, "query": cfg.query_occlusion,
                 "gallery": 0.0 if test_only else cfg.gallery_occlusion}
    raw: list[tuple[str, int, int, int]] = []   # (split, pid, identity, camera)
    ident = 0
    if not test_only:
        for pid in range(1, cfg.num_train_ids + 1):
            raw += [("train", pid, ident, c) for c in _id_cameras(rng, cfg)]
            ident += 1
    first_test = 1 if test_only else cfg.num_train_ids + 1
    for pid in range(first_test, first_test + cfg.num_test_ids):
        if test_only:  # 5 + 5 per id in the real sets: half occluded queries, half whole bodies
            n = max(2, cfg.images_per_id)
            cams = rng.integers(cfg.num_cameras, size=n)
            raw += [("query" if j < n // 2 else "gallery", pid, ident, int(c)) for j, c in enumerate(cams)]
        else:
            cams = _id_cameras(rng, cfg, min_images=4)
            n_query = min(max(1, len(cams) // 4), len(set(cams)) - 1)
            raw += [("query" if j < n_query else "gallery", pid, ident, c) for j, c in enumerate(cams)]
        ident += 1
    if not test_only:
        for _ in range(cfg.num_distractor_ids):
            raw += [("gallery", 0, ident, c) for c in _id_cameras(rng, cfg)[: max(1, cfg.images_per_id // 2)]]
            ident += 1
        if name == "market1501":  # junk detections, dropped by the parser
            raw += [("gallery", -1, -1, int(c)) for c in rng.integers(cfg.num_cameras, size=max(1, cfg.num_test_ids // 8))]
    items, counters = [], {}
    for frame, (split, pid, idn, cam) in enumerate(raw):
        occluded = idn >= 0 and bool(rng.random() < occlusion[split])
        nn = counters[pid, split] = counters.get((pid, split), 0) + 1
        items.append(_Item(split, pid, idn, cam, occluded,
                           f"{folders[split]}/{_file_name(name, pid, cam, frame, nn, rng)}"))
    return items


def render(p: Painter, item: _Item, identities: list[Identity], cameras: list[Camera],
           cfg: SyntheticConfig, index: int, partial: bool = False
           ) -> tuple[np.ndarray, np.ndarray | None, str, float]:
    """(image uint8 (H, W, 3) or a crop, unoccluded twin or None, occluder kind, covered share)."""
    rng = np.random.default_rng([cfg.seed, 3, index])
    cam = cameras[item.cam]
    canvas = background(p, cam, rng)
    brightness = float(rng.uniform(0.85, 1.15))
    if item.ident < 0:  # junk: background only
        noise = rng.standard_normal(canvas.shape, dtype=np.float32)
        return finish(canvas, cam, brightness, noise), None, "junk", 0.0
    body, box = place_person(p, canvas, identities[item.ident], cam, rng)
    if not item.occluded:
        noise = rng.standard_normal(canvas.shape, dtype=np.float32)
        return finish(canvas, cam, brightness, noise), None, "none", 0.0
    area = float(rng.uniform(*cfg.occluded_area))
    clean = canvas.copy()
    if partial:
        # The partial view: keep the top (or one side) of the body, as a cropped detection.
        top, height, cx = box
        if rng.random() < 0.7:
            crop = (slice(0, max(8, int(top + (1 - area) * height))), slice(None))
        else:
            keep = max(4, int(p.width * (1 - area)))
            crop = (slice(None), slice(0, keep) if rng.random() < 0.5 else slice(p.width - keep, None))
        noise = rng.standard_normal(canvas.shape, dtype=np.float32)
        full = finish(clean, cam, brightness, noise)
        return np.ascontiguousarray(full[crop]), full, "crop", area
    kind, share = add_occluder(p, canvas, body, box, area, rng)
    noise = rng.standard_normal(canvas.shape, dtype=np.float32)
    return finish(canvas, cam, brightness, noise), finish(clean, cam, brightness, noise), kind, share


def _identities(cfg: SyntheticConfig, count: int) -> list[Identity]:
    rng = np.random.default_rng([cfg.seed, 0])
    pool: list[Identity] = []
    for i in range(count):
        if i > 0 and rng.random() < NEAR_DUPLICATE_SHARE:
            pool.append(near_duplicate(pool[int(rng.integers(i))], rng))
        else:
            pool.append(random_identity(rng))
    return pool


def _id_cameras(rng: np.random.Generator, cfg: SyntheticConfig, min_images: int = 1) -> list[int]:
    """Cameras of one identity's images: 2-4 cameras in turn, so every id spans several views."""
    n_cams = int(rng.integers(min(2, cfg.num_cameras), min(4, cfg.num_cameras) + 1))
    cams = rng.choice(cfg.num_cameras, size=n_cams, replace=False)
    lo = max(min_images, cfg.images_per_id // 2)
    n = int(rng.integers(lo, max(lo, cfg.images_per_id + cfg.images_per_id // 2) + 1))
    return [int(cams[j % n_cams]) for j in range(n)]


def _file_name(name: str, pid: int, cam: int, frame: int, nn: int, rng: np.random.Generator) -> str:
    spid = "-1" if pid < 0 else f"{pid:04d}"
    if name == "market1501":
        return f"{spid}_c{cam + 1}s{int(rng.integers(1, 7))}_{frame:06d}_{nn:02d}.jpg"
    if name in ("dukemtmc", "occluded_duke"):
        return f"{spid}_c{cam + 1}_f{frame:07d}.jpg"
    if name == "occluded_reid":
        return f"{pid:03d}/{pid:03d}_{nn:02d}.tif"
    return f"{pid:03d}_{nn:02d}.jpg"


def _save(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(image)
    if path.suffix == ".tif":
        im.save(path, format="TIFF")
    else:
        im.save(path, format="JPEG", quality=92)
