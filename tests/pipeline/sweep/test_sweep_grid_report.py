"""The Fig. 6 grid's panels, table and report section, from a synthetic GridStudy."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from test_sweep_report import _summary

from pipeline.sweep.grid import GridResult, GridStudy
from pipeline.sweep.grid_report import grid_section, knob_cells, plot_grid
from pipeline.sweep.report import write_report

VALUES = {"num_embeddings": [16, 32], "tau": [0.03, 0.1, 0.5], "k": [1, 3, 5],
          "margin_head": ["arcface", "subcenter", "hs_arcface"], "sampling": ["default"]}
BASE = {"num_embeddings": 64, "tau": 0.1, "k": 3, "margin_head": "hs_arcface",
        "sampling": "gumbel"}
VALIDATION = {"seed": 0, "fraction": 0.2, "num_train_ids": 96, "num_train_images": 766,
              "num_ids": 24, "num_query": 76, "num_gallery": 116, "dropped_queries": 0,
              "val_ids": list(range(24))}


def study(seeds: tuple[int, ...] = (0, 1), fail: bool = True) -> GridStudy:
    rng = random.Random(0)
    configs = [(None, None)] + [(k, v) for k, vs in VALUES.items() for v in vs if v != BASE[k]]
    points = []
    for i, (knob, value) in enumerate(configs):
        for seed in seeds:
            failed = fail and (knob, value, seed) == ("k", 5, 1)
            m = round(40 + 3 * i + rng.uniform(-2, 2), 2)
            points.append(GridResult(knob, value, seed, f"t{i}{seed}", "ERROR" if failed else
                                     "TERMINATED", "boom" if failed else None, 24,
                                     None if failed else m, None if failed else m + 8,
                                     [[24, m]]))
    return GridStudy("fig6-demo-abc", "/x", "demo", "occluded_duke", "ddrn", VALIDATION, 24,
                     list(seeds), VALUES, BASE, 300.0, 1, points)


def test_cells_share_the_default_and_order_values() -> None:
    s = study()
    cells = knob_cells(s)
    assert [c.value for c in cells["num_embeddings"]] == [16, 32, 64]  # default added, sorted
    assert [c.value for c in cells["margin_head"]] == ["arcface", "subcenter", "hs_arcface"]
    assert [c.value for c in cells["sampling"]] == ["default", "gumbel"]
    defaults = [next(c for c in row if c.default) for row in cells.values()]
    assert all(c.seeds == (0, 1) and c.mAP == defaults[0].mAP for c in defaults)
    k5 = next(c for c in cells["k"] if c.value == 5)
    assert k5.seeds == (0,) and k5.failed == 1 and k5.spread("mAP") == 0.0
    tau = next(c for c in cells["tau"] if c.value == 0.5)
    assert tau.mean("R1") == pytest.approx(sum(tau.R1) / 2)
    assert tau.spread("R1") == pytest.approx(abs(tau.R1[0] - tau.R1[1]) / 2)


def test_section_names_the_split_and_tabulates_every_value(tmp_path: Path) -> None:
    s = study()
    lines = grid_section(s, tmp_path / "figures" / "sweep_fig6.png", tmp_path)
    md = "\n".join(lines)
    assert lines[0] == "## Fig. 6: one knob at a time (validation split)"
    assert "never the test split" in md and "24 identities of `occluded_duke`" in md
    assert "(figures/sweep_fig6.png)" in md and "10 configurations" in md and "= 20 Ray Tune" in md
    rows = [line for line in lines if line.startswith("| ") and " ± " in line]
    assert len(rows) == 3 + 3 + 3 + 3 + 2  # every knob's values plus its default
    assert "| num_embeddings | 64 (default) | " in md and "| k | 5 | " in md
    assert "| [0], 1 failed |" in md and "boom" in md


def test_figure_and_report(tmp_path: Path) -> None:
    (tmp_path / "sweep_trials.json").write_text(json.dumps(_summary()))
    (tmp_path / "sweep_fig6.json").write_text(study().to_json())
    assert GridStudy.load(tmp_path / "sweep_fig6.json") == study()
    md = write_report(tmp_path / "sweep_trials.json", tmp_path).read_text()
    assert md.index("## Fig. 6: one knob at a time") < md.index("## What ASHA saved")
    assert "## TPE samples: mAP against each knob (all knobs move together)" in md
    for fig in ("sweep_fig6.png", "sweep_tpe.png", "sweep_asha.png"):
        assert (tmp_path / "figures" / fig).read_bytes()[:4] == b"\x89PNG"


def test_an_empty_grid_still_writes_its_files(tmp_path: Path) -> None:
    empty = GridStudy("fig6", "", "demo", "occluded_duke", "ddrn", VALIDATION, 24, [0], {}, {},
                      0.0, 0, [])
    assert plot_grid(empty, tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    assert "Not run: `sweep.fig6.values` is empty" in "\n".join(
        grid_section(empty, tmp_path / "f.png", tmp_path))
