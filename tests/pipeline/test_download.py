import hashlib
import zipfile
from pathlib import Path

import pytest

from ddrn.config import DatasetConfig, SyntheticConfig
from ddrn.data import load_dataset
from ddrn.errors import DataError
from pipeline.download import MARKER, fetch_dataset, main

TINY = SyntheticConfig(num_train_ids=3, num_test_ids=2, num_distractor_ids=0, images_per_id=4,
                       num_cameras=2, height=32, width=16, seed=0)


def _zip(tmp_path: Path) -> Path:
    archive = tmp_path / "Partial_REID.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for split in ("partial_body_images", "whole_body_images"):
            src = tmp_path / "img.jpg"
            from PIL import Image
            Image.new("RGB", (8, 16)).save(src)
            zf.write(src, f"Partial_REID/{split}/001_01.jpg")
    return archive


def test_synthetic_then_noop(tmp_path: Path) -> None:
    out = tmp_path / "raw" / "occluded_duke"
    ds = DatasetConfig(source="synthetic", synthetic=TINY)
    assert fetch_dataset("occluded_duke", ds, out) is True
    assert (out / MARKER).is_file() and load_dataset("occluded_duke", out).query
    stamp = (out / "occlusion.csv").stat().st_mtime_ns
    assert fetch_dataset("occluded_duke", ds, out) is False            # no-op
    assert (out / "occlusion.csv").stat().st_mtime_ns == stamp
    changed = DatasetConfig(source="synthetic", synthetic=SyntheticConfig(**{**TINY.__dict__, "seed": 1}))
    assert fetch_dataset("occluded_duke", changed, out) is True         # config changed: regenerated
    assert sorted(p.name for p in out.parent.iterdir()) == ["occluded_duke"]


def test_archive_sha_and_extract(tmp_path: Path) -> None:
    archive = _zip(tmp_path)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    out = tmp_path / "raw" / "partial_reid"
    with pytest.raises(DataError, match="does not match datasets.partial_reid.sha256"):
        fetch_dataset("partial_reid", DatasetConfig(source=str(archive), sha256="0" * 64), out)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
    assert fetch_dataset("partial_reid", DatasetConfig(source=str(archive), sha256=digest), out)
    assert len(load_dataset("partial_reid", out).query) == 1           # official top folder inside
    assert not fetch_dataset("partial_reid", DatasetConfig(source=str(archive), sha256=digest), out)


def test_corrupt_archive_leaves_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"PK\x03\x04 nope")
    out = tmp_path / "raw" / "market1501"
    with pytest.raises(DataError, match="broken.zip: cannot extract"):
        fetch_dataset("market1501", DatasetConfig(source=str(bad)), out)
    assert list((tmp_path / "raw").iterdir()) == []


def test_folder_source_and_missing_source(tmp_path: Path) -> None:
    src = tmp_path / "src"
    fetch_dataset("dukemtmc", DatasetConfig(source="synthetic", synthetic=TINY), src)
    out = tmp_path / "raw" / "dukemtmc"
    assert fetch_dataset("dukemtmc", DatasetConfig(source=str(src)), out)
    assert len(load_dataset("dukemtmc", out).train) == len(load_dataset("dukemtmc", src).train)
    with pytest.raises(DataError, match="source not found"):
        fetch_dataset("dukemtmc", DatasetConfig(source=str(tmp_path / "none.zip")), out)


def test_url_without_network_says_where_to_put_it(tmp_path: Path) -> None:
    ds = DatasetConfig(source="http://127.0.0.1:9/Market-1501-v15.09.15.zip")
    with pytest.raises(DataError, match=r"cannot download .* place the archive locally at "
                                        r".*archives/Market-1501-v15.09.15.zip") as err:
        fetch_dataset("market1501", ds, tmp_path / "raw" / "m", archive_dir=tmp_path / "archives")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "archives" / "Market-1501-v15.09.15.zip.part").exists()


def test_main_unknown_dataset(tmp_path: Path, capsys) -> None:
    from pipeline.cli import run_stage
    assert run_stage(main, ["--dataset", "cuhk03", "--raw-dir", str(tmp_path)]) == 2
    assert "cuhk03" in capsys.readouterr().err
