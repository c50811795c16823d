"""The Mechanism health section from real tiny runs: train, evaluate (mechanism.json), render."""

from __future__ import annotations

import json

import pytest
from tiny_project import DDRN_VARIANT, pack_synthetic, scratch_params

from pipeline.params import ProjectConfig, config_from_dict
from pipeline.report import build as report
from pipeline.report.mechanism import FIGURE, mechanism_section
from pipeline.trial.experiment import train_experiment
from pipeline.trial.mechanism import read_mechanism
from pipeline.trial.scoring import evaluate_experiment

RAW = scratch_params({"hs": {"description": "HS only", "loss": {"margin_head": "hs_arcface"}},
                      "ddrn": {"description": "DDRN", **DDRN_VARIANT}},
                     stride=6, epochs=3, iters_per_epoch=3, loss={"k": 3})


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[ProjectConfig, report.ReportPaths]:
    root = tmp_path_factory.mktemp("mechanism")
    config = config_from_dict(RAW)
    pack_synthetic(config, root)
    paths = report.ReportPaths(metrics=root / "metrics", eval=root / "eval", runs=root / "runs",
                               packed=root / "packed", timings=root / "timings",
                               out=root / "reports")
    for spec in config.experiments_list():
        train_experiment(config, spec, paths.runs / spec.name, packed_root=paths.packed)
        doc = evaluate_experiment(config, spec, paths.runs / spec.name, paths.eval / spec.name,
                                  paths.packed)
        paths.metrics.mkdir(parents=True, exist_ok=True)
        (paths.metrics / f"{spec.name}.json").write_text(json.dumps(doc))
    return config, paths


def test_history_keys_are_stable(runs: tuple[ProjectConfig, report.ReportPaths]) -> None:
    """Every epoch of an HS-ArcFace run carries the same routing keys (k = 3); ES runs also
    keep the curves' code_perplexity and dead_codes columns."""
    config, paths = runs
    for spec in config.experiments_list():
        history = json.loads((paths.runs / spec.name / "history.json").read_text())
        routing = {"hs_stop_share_1", "hs_stop_share_2", "hs_stop_share_3",
                   "hs_marker_win_rate_1", "hs_marker_win_rate_2"}
        usage = {"code_perplexity", "dead_codes"} if spec.model.embedding_space else set()
        for epoch in history:
            assert routing | usage <= set(epoch), (spec.name, sorted(epoch))
            shares = [epoch[f"hs_stop_share_{i}"] for i in (1, 2, 3)]
            assert sum(shares) == pytest.approx(1.0)
            assert all(0.0 <= epoch[k] <= 1.0 for k in routing)


def test_mechanism_record_of_an_embedding_space_run(runs) -> None:
    config, paths = runs
    assert read_mechanism(paths.eval / "occluded_duke-hs-s0") is None  # no codebook, no file
    rec = read_mechanism(paths.eval / "occluded_duke-ddrn-s0")
    assert rec is not None and rec.num_embeddings == 8
    m = rec.test_sets["occluded_duke"]
    # Every query and gallery patch token is counted: 32x16 images, kernel 8, stride 6 give
    # (32-8)//6+1 = 5 rows x (16-8)//6+1 = 2 columns = 10 tokens per image.
    from ddrn.data import open_packed

    packed = open_packed(paths.packed / "occluded_duke")
    images = len(packed.splits["query"]) + len(packed.splits["gallery"])
    assert sum(m["histogram"]) == images * 10
    assert 1.0 <= m["perplexity"] <= 8.0 and 0 <= m["dead_codes"] < 8
    assert m["histogram"][m["constant_code"]] == max(m["histogram"])
    # The unmodified R1 is the evaluate stage's own (no re-ranking in this profile).
    doc = json.loads((paths.metrics / "occluded_duke-ddrn-s0.json").read_text())
    assert m["R1"] == pytest.approx(doc["results"]["occluded_duke"]["R1"])
    assert m["mAP"] == pytest.approx(doc["results"]["occluded_duke"]["mAP"])
    twin = m["twin"]
    assert twin["pairs"] == len(packed.splits["query"]) and twin["occluder_patches"] > 0
    assert 0.0 <= twin["code_agreement_occluder"] <= 1.0


def test_section_renders_the_measured_numbers(runs) -> None:
    config, paths = runs
    md, _ = mechanism_section(config, config.experiments_list(), paths)
    assert (paths.out / FIGURE).stat().st_size > 1000
    rec = read_mechanism(paths.eval / "occluded_duke-ddrn-s0")
    m = rec.test_sets["occluded_duke"]
    assert f"{m['R1']:.1f}" in md and f"{m['R1_constant']:.1f}" in md
    assert "of x = 8" in md and "seeds meet perplexity ≥ x/4" in md
    history = json.loads((paths.runs / "occluded_duke-hs-s0" / "history.json").read_text())
    last = max(history[-1][f"hs_stop_share_{i}"] for i in (1, 2, 3))
    assert f"takes {100 * last:.1f}% of the samples" in md
    assert md.count("(routing `hard`)") == 0 and "routing `hard`" in md
