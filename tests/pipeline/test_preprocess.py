from pathlib import Path

import yaml

from ddrn.data import open_packed
from pipeline.cli import run_stage
from pipeline.download import main as download_main
from pipeline.preprocess import main as preprocess_main


def _params(tmp_path: Path) -> Path:
    tiny = {"num_train_ids": 4, "num_test_ids": 3, "num_distractor_ids": 1, "images_per_id": 4,
            "num_cameras": 3, "height": 32, "width": 16, "seed": 2}
    params = {"profile": "t", "variants": {}, "profiles": {"t": {
        "datasets": {"occluded_duke": {"source": "synthetic", "synthetic": tiny},
                     "partial_reid": {"source": "synthetic", "synthetic": {**tiny, "num_train_ids": 1}}},
        "input": {"height": 24, "width": 12}}}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_download_then_preprocess(tmp_path: Path) -> None:
    params = _params(tmp_path)
    raw, packed = tmp_path / "raw", tmp_path / "packed"
    grid = tmp_path / "grid.png"
    assert run_stage(download_main, ["--params", str(params), "--raw-dir", str(raw),
                                     "--grid", str(grid)]) == 0
    assert grid.stat().st_size > 0
    assert run_stage(preprocess_main, ["--params", str(params), "--raw-dir", str(raw),
                                       "--packed-dir", str(packed)]) == 0
    store = open_packed(packed / "occluded_duke")
    assert store.splits["train"].images.shape[1:] == (24, 12, 3)
    assert store.splits["query"].occluded.all() and store.splits["query"].occluded_known.all()
    assert not store.splits["query_twin"].occluded.any()
    assert len(store.splits["query_twin"]) == len(store.splits["query"])
    assert set(open_packed(packed / "partial_reid").splits) == {"train", "query", "gallery", "query_twin"}


def test_corrupt_image_fails_with_path(tmp_path: Path, capsys) -> None:
    params = _params(tmp_path)
    raw, packed = tmp_path / "raw", tmp_path / "packed"
    run_stage(download_main, ["--params", str(params), "--raw-dir", str(raw), "--dataset", "partial_reid"])
    bad = sorted((raw / "partial_reid" / "whole_body_images").iterdir())[0]
    bad.write_bytes(b"garbage")
    code = run_stage(preprocess_main, ["--params", str(params), "--raw-dir", str(raw),
                                       "--packed-dir", str(packed), "--dataset", "partial_reid"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith(f"error: {bad}: cannot decode image")
    assert not packed.exists() or list(packed.iterdir()) == []


def test_empty_split_is_refused_and_nothing_is_packed(tmp_path: Path, capsys) -> None:
    params = _params(tmp_path)
    raw, packed = tmp_path / "raw", tmp_path / "packed"
    assert run_stage(download_main, ["--params", str(params), "--raw-dir", str(raw),
                                     "--dataset", "occluded_duke"]) == 0
    for image in (raw / "occluded_duke" / "bounding_box_test").iterdir():
        image.unlink()
    capsys.readouterr()
    assert run_stage(preprocess_main, ["--params", str(params), "--raw-dir", str(raw),
                                       "--packed-dir", str(packed),
                                       "--dataset", "occluded_duke"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "split 'gallery' of occluded_duke holds no images" in err
    assert not (packed / "occluded_duke").exists()
