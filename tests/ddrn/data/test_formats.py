from pathlib import Path

import pytest

from ddrn.data import load_dataset
from ddrn.data.formats import resolve_root
from ddrn.errors import DataError


def _names(samples):
    return [Path(s.path).name for s in samples]


def test_market_rules(market_tree: Path) -> None:
    ds = load_dataset("market1501", market_tree)
    assert Path(ds.root).name == "Market-1501-v15.09.15"      # official folder one level down
    # Sorted by path, train relabelled in sorted pid order (2 -> 0, 7 -> 1), camid = cam - 1.
    assert [(s.pid, s.camid) for s in ds.train] == [(0, 0), (0, 2), (1, 1)]
    assert [(s.pid, s.camid) for s in ds.query] == [(3, 0), (5, 5)]
    # Junk -1 dropped, distractor 0 kept in the gallery.
    assert sorted(s.pid for s in ds.gallery) == [0, 3, 5]
    assert all(s.occluded is None for s in ds.gallery)
    assert ds.extra == {}


def test_duke_and_occluded_duke(duke_tree: Path) -> None:
    ds = load_dataset("dukemtmc", duke_tree)
    assert [(s.pid, s.camid) for s in ds.train] == [(0, 0), (1, 7)]
    assert [(s.pid, s.camid) for s in ds.gallery] == [(20, 2), (999, 6)]
    occ = load_dataset("occluded_duke", duke_tree)
    assert [s.occluded for s in occ.query] == [True]           # every Occluded-Duke query is occluded
    assert all(s.occluded is None for s in occ.gallery)


def test_occluded_reid_per_id_tif(occluded_reid_tree: Path) -> None:
    ds = load_dataset("occluded_reid", occluded_reid_tree.parent)
    assert ds.train == []
    assert [(s.pid, s.camid) for s in ds.query] == [(1, 0), (1, 0), (2, 0), (2, 0)]
    assert {s.camid for s in ds.gallery} == {1}                 # query 0 / gallery 1
    assert all(s.path.endswith(".tif") for s in ds.query + ds.gallery)
    assert all(s.occluded for s in ds.query) and not any(s.occluded for s in ds.gallery)


def test_partial_reid_flat(partial_reid_tree: Path) -> None:
    ds = load_dataset("partial_reid", partial_reid_tree)
    assert [s.pid for s in ds.query] == [1, 1, 60]              # 060_001 -> 60
    assert "partial_body_images" in ds.query[0].path
    assert [s.camid for s in ds.gallery] == [1, 1, 1]


def test_regex_on_basename_not_path(tmp_path: Path, write_image) -> None:
    root = tmp_path / "v2_c1"   # a path that would match the Market regex
    write_image(root / "bounding_box_train" / "0001_c4s1_000001_00.jpg")
    write_image(root / "query" / "0002_c5s1_000001_00.jpg")
    write_image(root / "bounding_box_test" / "0002_c6s1_000002_00.jpg")
    ds = load_dataset("market1501", root)
    assert [s.camid for s in ds.train] == [3]


def test_missing_split_folder(duke_tree: Path) -> None:
    (duke_tree / "query" / "0020_c2_f0046182.jpg").unlink()
    (duke_tree / "query").rmdir()
    with pytest.raises(DataError, match=r"query: missing split folder of dukemtmc") as err:
        load_dataset("dukemtmc", duke_tree)
    assert "\n" not in str(err.value)


def test_missing_root_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dataset folder not found"):
        load_dataset("market1501", tmp_path / "nope")
    with pytest.raises(DataError, match="unknown dataset format"):
        load_dataset("cuhk03", tmp_path)


def test_unparseable_name(duke_tree: Path, write_image) -> None:
    bad = write_image(duke_tree / "query" / "person7.jpg")
    with pytest.raises(DataError, match=f"{bad}: unparseable file name; expected names like"):
        load_dataset("dukemtmc", duke_tree)


def test_camera_out_of_range(market_tree: Path, write_image) -> None:
    write_image(market_tree / "Market-1501-v15.09.15" / "query" / "0003_c7s1_000001_00.jpg")
    with pytest.raises(DataError, match="camera c7 out of range; expected c1..c6"):
        load_dataset("market1501", market_tree)


def test_unreadable_image(partial_reid_tree: Path) -> None:
    bad = partial_reid_tree / "whole_body_images" / "002_01.jpg"
    bad.write_bytes(b"not a jpeg")
    load_dataset("partial_reid", partial_reid_tree)             # names alone are fine
    with pytest.raises(DataError, match=f"{bad}: unreadable image"):
        load_dataset("partial_reid", partial_reid_tree, check_images=True)


def test_resolve_root_prefers_flat(market_tree: Path) -> None:
    assert resolve_root("market1501", market_tree).name == "Market-1501-v15.09.15"
