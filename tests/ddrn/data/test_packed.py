from pathlib import Path

import numpy as np
import pytest

from ddrn.data import load_dataset, open_packed, pack_dataset
from ddrn.errors import DataError


def test_round_trip(market_tree: Path, tmp_path: Path) -> None:
    ds = load_dataset("market1501", market_tree)
    out = pack_dataset(ds, tmp_path / "packed" / "market1501", 32, 16)
    packed = open_packed(out)
    assert packed.name == "market1501" and packed.num_classes == 2 and packed.num_cameras == 6
    train = packed.splits["train"]
    assert isinstance(train.images, np.memmap) and train.images.dtype == np.uint8
    assert train.images.shape == (3, 32, 16, 3)
    assert train.pids.tolist() == [s.pid for s in ds.train]
    assert packed.splits["gallery"].camids.tolist() == [s.camid for s in ds.gallery]
    assert train.paths == [s.path for s in ds.train]
    assert not train.occluded_known.any()                      # Market says nothing about occlusion
    assert abs(int(train.images[0].mean()) - 128) <= 2         # the fixture's grey value survives


def test_corrupt_image_leaves_no_partial_pack(market_tree: Path, tmp_path: Path) -> None:
    ds = load_dataset("market1501", market_tree)
    out = pack_dataset(ds, tmp_path / "packed" / "m", 32, 16)
    before = (out / "train.npy").read_bytes()
    bad = Path(ds.gallery[1].path)
    bad.write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(DataError, match=f"{bad}: cannot decode image"):
        pack_dataset(load_dataset("market1501", market_tree), out, 32, 16)
    assert sorted(p.name for p in out.parent.iterdir()) == ["m"]   # no temp folder left
    assert (out / "train.npy").read_bytes() == before               # old pack untouched


def test_missing_store(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="packed store not found"):
        open_packed(tmp_path)


@pytest.mark.parametrize("content", ['{"format": 1, "name": "m", "hei', "", "[1, 2]",
                                     '{"format": 1}'])
def test_truncated_or_malformed_meta_is_one_line(market_tree: Path, tmp_path: Path,
                                                 content: str) -> None:
    out = pack_dataset(load_dataset("market1501", market_tree), tmp_path / "packed" / "m", 32, 16)
    (out / "meta.json").write_text(content)
    with pytest.raises(DataError) as info:
        open_packed(out)
    message = str(info.value)
    assert message.startswith(f"{out / 'meta.json'}: ") and "preprocess" in message
    assert "\n" not in message


def test_pack_records_its_source(market_tree: Path, tmp_path: Path) -> None:
    from ddrn.data import read_meta

    out = pack_dataset(load_dataset("market1501", market_tree), tmp_path / "p", 32, 16,
                       source={"dataset_fingerprint": "abc", "source": "synthetic"})
    assert read_meta(out)["source"] == {"dataset_fingerprint": "abc", "source": "synthetic"}
