"""Fixture trees in the five official layouts (tiny real image files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_image(path: Path, value: int = 128, size: tuple[int, int] = (16, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size[0], size[1], 3), value, dtype=np.uint8)
    fmt = "TIFF" if path.suffix == ".tif" else "JPEG"
    Image.fromarray(arr).save(path, format=fmt)
    return path


@pytest.fixture
def market_tree(tmp_path: Path) -> Path:
    """Market-1501 inside its official top folder, with junk (-1), distractors (0) and a Thumbs.db."""
    root = tmp_path / "market" / "Market-1501-v15.09.15"
    for name in ("0007_c2s1_000100_01.jpg", "0002_c1s1_000451_03.jpg", "0002_c3s1_000500_01.jpg"):
        write_image(root / "bounding_box_train" / name)
    (root / "bounding_box_train" / "Thumbs.db").write_bytes(b"x")
    for name in ("0003_c1s1_000001_00.jpg", "0005_c6s2_000002_00.jpg"):
        write_image(root / "query" / name)
    for name in ("0003_c2s1_000010_00.jpg", "0000_c1s1_000020_00.jpg", "-1_c3s1_000030_00.jpg",
                 "0005_c1s1_000040_00.jpg"):
        write_image(root / "bounding_box_test" / name)
    return tmp_path / "market"


@pytest.fixture
def duke_tree(tmp_path: Path) -> Path:
    root = tmp_path / "duke"
    for name in ("0010_c8_f0000001.jpg", "0004_c1_f0000002.jpg"):
        write_image(root / "bounding_box_train" / name)
    write_image(root / "query" / "0020_c2_f0046182.jpg")
    for name in ("0020_c3_f0000003.jpg", "0999_c7_f0000004.jpg"):
        write_image(root / "bounding_box_test" / name)
    return root


@pytest.fixture
def occluded_reid_tree(tmp_path: Path) -> Path:
    root = tmp_path / "oreid" / "Occluded_REID"
    for pid in ("001", "002"):
        for nn in ("01", "02"):
            write_image(root / "occluded_body_images" / pid / f"{pid}_{nn}.tif")
            write_image(root / "whole_body_images" / pid / f"{pid}_{nn}.tif")
    return root


@pytest.fixture
def partial_reid_tree(tmp_path: Path) -> Path:
    root = tmp_path / "preid"
    for name in ("001_01.jpg", "001_02.jpg", "060_001.jpg"):
        write_image(root / "partial_body_images" / name)
        write_image(root / "whole_body_images" / name)
    write_image(root / "occluded_body_images" / "001_01.jpg")  # some copies have it: ignored
    return root


@pytest.fixture(name="write_image")
def write_image_fixture():
    """The image writer, for tests that add files to a tree."""
    return write_image
