"""The DVC views of the report stay in step with the code that writes their data: dvc.yaml's
``plots:``, the Vega-Lite template's colours, the offline page, and what may be committed."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from pipeline.params import load_config
from pipeline.report.figures import variant_colours
from pipeline.report.views import CURVE_TITLES, CURVES

PROJECT = Path(__file__).resolve().parents[3]


def test_every_curve_has_one_titled_comparison_plot() -> None:
    plots = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["plots"]
    by_file = {}
    for entry in plots:
        (title, definition), = entry.items()
        assert definition["template"] == "by_variant" and definition["x"] == "epoch"
        (path, field), = definition["y"].items()
        by_file[path] = (title, field)
    assert by_file == {f"reports/curves/{stem}.csv": (CURVE_TITLES[stem], stem) for stem in CURVES}


def test_template_colours_each_variant_as_the_figures_do() -> None:
    template = json.loads((PROJECT / ".dvc" / "plots" / "by_variant.json").read_text())
    scale = template["spec"]["encoding"]["color"]["scale"]
    colours = variant_colours(list(load_config(PROJECT / "params.yaml").variants))
    assert dict(zip(scale["domain"], scale["range"], strict=True)) == colours
    assert template["spec"]["encoding"]["color"]["field"] == "variant"


def test_offline_page_loads_nothing_from_the_network() -> None:
    config = (PROJECT / ".dvc" / "config").read_text()
    assert "html_template = plots/offline.html" in config
    page = (PROJECT / ".dvc" / "plots" / "offline.html").read_text()
    assert "{plot_divs}" in page and "{scripts}" not in page  # DVC's CDN tags go in {scripts}
    assert "<script src=" not in page and "cdn.jsdelivr.net/npm/vega" not in page
    # the three builds are inlined: their globals are defined in the page itself
    for name in ("vega", "vegaLite", "vegaEmbed"):
        assert f"{name}=" in page.replace(" ", "") or f".{name}" in page, name
    assert len(page) > 700_000


def test_volatile_outputs_are_neither_committed_nor_dvc_outs() -> None:
    stages = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]
    text = json.dumps(stages)
    assert "timings/" not in text.replace("pipeline.timing", "")
    assert "/timings/" in (PROJECT / ".gitignore").read_text().splitlines()
    ignored = (PROJECT / ".dvcignore").read_text().splitlines()
    assert {"runs/*/done.json", "runs/*/history.json", "runs/*/checkpoints"} <= set(ignored)
