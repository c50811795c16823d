import csv
import hashlib
from pathlib import Path

import pytest

from ddrn.config import SyntheticConfig
from ddrn.data import generate_synthetic, load_dataset
from ddrn.data.formats import LAYOUTS
from ddrn.errors import ConfigError

SMALL = SyntheticConfig(num_train_ids=4, num_test_ids=4, num_distractor_ids=2, images_per_id=4,
                        num_cameras=3, height=48, width=24, seed=3)


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    generate_synthetic("occluded_duke", SMALL, tmp_path / "a")
    generate_synthetic("occluded_duke", SMALL, tmp_path / "b")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    other = SyntheticConfig(**{**SMALL.__dict__, "seed": 4})
    generate_synthetic("occluded_duke", other, tmp_path / "c")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_five_layouts_parse(tmp_path: Path, name: str) -> None:
    cfg = SMALL if name != "market1501" else SyntheticConfig(**{**SMALL.__dict__, "query_occlusion": 0.0})
    summary = generate_synthetic(name, cfg, tmp_path / name)
    ds = load_dataset(name, tmp_path / name)
    test_only = name in ("occluded_reid", "partial_reid")
    assert (ds.train == []) == test_only
    assert len({s.pid for s in ds.query}) == SMALL.num_test_ids
    q_pids = {s.pid for s in ds.query}
    assert q_pids <= {s.pid for s in ds.gallery}
    if not test_only:
        assert 0 in {s.pid for s in ds.gallery}                # distractors
        assert sorted({s.pid for s in ds.train}) == list(range(SMALL.num_train_ids))
        # Every query keeps a true match from another camera under the Market protocol.
        for q in ds.query:
            assert any(g.pid == q.pid and g.camid != q.camid for g in ds.gallery)
    occluded_queries = [s for s in ds.query if s.occluded]
    twins = ds.extra.get("query_twin", [])
    assert [Path(t.path).name for t in twins] == [Path(q.path).name for q in occluded_queries]
    assert summary.twins == len(twins)
    if name == "occluded_duke":
        assert len(occluded_queries) == len(ds.query)         # query_occlusion = 1.0
    if name == "market1501":
        assert twins == []
        rows = list(csv.DictReader((tmp_path / name / "occlusion.csv").open()))
        assert any(r["pid"] == "-1" for r in rows)             # junk written, then dropped
        assert all(s.pid >= 0 for s in ds.gallery)
    if name == "occluded_reid":
        assert all(s.path.endswith(".tif") for s in ds.query)


def test_too_many_cameras_for_market(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="num_cameras: expected at most 6"):
        generate_synthetic("market1501", SyntheticConfig(num_cameras=8), tmp_path)
