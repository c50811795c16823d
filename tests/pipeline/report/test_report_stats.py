"""Intervals, paired comparisons and claim verdicts of the report from hand-made per-query files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from ddrn.errors import DataError
from ddrn.evaluation import QueryMetrics
from pipeline.params import config_from_dict
from pipeline.report import claims as report_claims
from pipeline.report import stats as report_stats
from pipeline.report import tables as report_tables
from pipeline.trial.eval_record import EvalRecord, QueryResults, SplitImages

VARIANTS = {
    "vit_baseline": {"table2_index": 0},
    "es": {"table2_index": 1, "model": {"embedding_space": True}},
    "es_orth": {"table2_index": 3, "model": {"embedding_space": True},
                "loss": {"orthogonal_weight": 1.0}},
    "ddrn": {"table2_index": 4, "model": {"embedding_space": True},
             "loss": {"orthogonal_weight": 1.0, "margin_head": "hs_arcface"}},
    "ddrn_subcenter": {"model": {"embedding_space": True},
                       "loss": {"orthogonal_weight": 1.0, "margin_head": "subcenter"}},
}
Q = 400
CELL = re.compile(r"^\d+\.\d \[\d+\.\d, \d+\.\d\]$")


def _write(root: Path, name: str, spec, hits: np.ndarray, ap: np.ndarray,
           twin_hits: np.ndarray) -> dict:
    index = np.arange(Q)
    first = np.where(hits > 0, 0, 3)
    twin_first = np.where(twin_hits > 0, 0, 3)
    paths = np.array([f"raw/query/q{i}.jpg" for i in index])
    def images(paths: np.ndarray) -> SplitImages:  # only the paths matter to the statistics
        n = len(paths)
        return SplitImages(np.zeros((n, 1)), np.arange(n), np.zeros(n, int), np.zeros(n, bool),
                           paths)

    def results(first_hit: np.ndarray) -> QueryResults:
        return QueryResults(QueryMetrics(index, first_hit, ap, ap / 2), np.zeros((Q, 1), int),
                            np.zeros((Q, 1)))

    EvalRecord(images(paths), images(paths[:1]), results(first),
               images(np.char.replace(paths, "/query/", "/query_twin/")),
               results(twin_first)).save(root / "eval" / name / "occluded_duke.npz")
    res = {"R1": 100 * hits.mean(), "mAP": 100 * ap.mean(), "mINP": 50 * ap.mean()}
    twin = {"R1": 100 * twin_hits.mean(), "mAP": 100 * ap.mean(), "mINP": 50 * ap.mean()}
    return {"experiment": name, "variant": spec.variant, "seed": spec.seed,
            "train_set": spec.train_set, "fingerprint": "x",
            "results": {"occluded_duke": res, "occluded_duke/twin": twin}}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("stats")
    config = config_from_dict({"profile": "t", "variants": VARIANTS, "profiles": {"t": {
        "datasets": {"occluded_duke": {}},
        "experiments": {"ablation": {"train_set": "occluded_duke", "test_sets": ["occluded_duke"],
                                     "variants": list(VARIANTS), "seeds": [0, 1, 2]}}}}})
    rng = np.random.default_rng(0)
    base_hits = {s: (rng.random(Q) < 0.4).astype(float) for s in (0, 1, 2)}
    base_ap = {s: rng.random(Q) * 0.5 for s in (0, 1, 2)}
    docs, specs = [], config.experiments_list()
    for spec in specs:
        hits, ap = base_hits[spec.seed].copy(), base_ap[spec.seed].copy()
        if spec.variant in ("ddrn", "es_orth"):  # 30% of the baseline's misses become hits
            hits = np.maximum(hits, (rng.random(Q) < 0.3).astype(float))
            ap = ap + 0.1
        twin = np.maximum(hits, (rng.random(Q) < 0.5).astype(float))  # occlusion costs R1
        docs.append(_write(root, spec.name, spec, hits, ap, twin))
    stats = report_stats.load_stats(root / "eval", specs, docs, resamples=1000)
    df = report_tables.results_frame(docs)
    return config, specs, docs, stats, df, root


def test_cells_carry_intervals_and_rows_their_paired_difference(setup) -> None:
    config, _, _, stats, df, _ = setup
    t2 = report_tables.table2(config, df, "occluded_duke", stats).set_index("Index")
    for index in (0, 1, 3, 4):
        assert CELL.match(t2.loc[index, "R@1 (measured)"]), t2.loc[index, "R@1 (measured)"]
        assert CELL.match(t2.loc[index, "mAP (measured)"])
    assert t2.loc[0, "ΔR@1 vs 0"] == "baseline"
    # es has the baseline's per-query results: difference 0, interval [0, 0], no mark.
    assert t2.loc[1, "ΔR@1 vs 0"] == "+0.0 [+0.0, +0.0]"
    assert t2.loc[4, "ΔR@1 vs 0"].endswith("▲") and t2.loc[4, "ΔmAP vs 0"] == \
        "+10.0 [+10.0, +10.0] ▲"
    assert t2.loc[2, "ΔR@1 vs 0"] == "-"  # no variant for row 2
    md = report_tables.to_markdown(t2.reset_index())
    assert "| ΔR@1 vs 0 |" in md.replace("  ", " ") or "ΔR@1 vs 0" in md
    # The cell's estimate is the seeds' mean R1 (what mean ± std showed before).
    mean = df[(df.variant == "ddrn") & ~df.twin].R1.mean()
    assert t2.loc[4, "R@1 (measured)"].startswith(f"{mean:.1f} [")


def test_table1_versus_and_occlusion_gap(setup) -> None:
    config, _, _, stats, df, _ = setup
    versus = report_tables.table1_versus(config, df, stats)
    row = versus[versus.Method.str.contains("ddrn`")].iloc[0]
    assert row["Test set"] == "O-Duke" and row["ΔR@1"].endswith("▲")
    assert row["seeds × queries"] == f"3 × {Q}"
    gap = report_tables.occlusion_gap(config, df, stats).set_index("variant")
    assert gap.loc["vit_baseline", "R1 gap"].endswith("▲")  # twins hit more: a positive gap
    assert gap.loc["vit_baseline", "R1 gap vs baseline"] == "baseline"
    assert CELL.match(gap.loc["ddrn", "R1 kept (%)"])
    assert gap.loc["ddrn", "mAP gap"] == "+0.0 [+0.0, +0.0]"


def test_claims_are_judged_from_the_intervals(setup) -> None:
    config, _, _, stats, df, _ = setup
    text = report_claims.claims_section(config, df, stats)
    lines = {line.split(":")[0]: line for line in text.splitlines() if line.startswith("- ")}
    # ddrn vs es_orth: identical results -> cannot decide; es_orth vs es: a real improvement.
    assert "**cannot decide**" in lines["- Table 2 row 4 (`ddrn`) above row 3 (`es_orth`) in R@1"]
    assert "**supported**" in lines["- Table 2 row 3 (`es_orth`) above row 1 (`es`) in R@1"]
    assert "**supported**" in lines["- Table 2 row 4 (`ddrn`) above row 0 (`vit_baseline`) in mAP"]
    assert "paper +4.2 (71.3 vs 67.1)" in lines[
        "- Table 2 row 4 (`ddrn`) above row 3 (`es_orth`) in R@1"]
    # Row 1's paper mAP is above row 0's; measured identical: cannot decide.
    assert "**cannot decide**" in lines["- Table 2 row 1 (`es`) above row 0 (`vit_baseline`) in mAP"]
    assert any("occlusion lowers R@1 of `ddrn`" in k and "**supported**" in v
               for k, v in lines.items())
    head = [v for k, v in lines.items() if k.startswith("- HS-ArcFace above Sub-center")]
    assert len(head) == 1 and "`ddrn` vs `ddrn_subcenter`" in head[0]
    assert "not like for like" not in head[0]  # the two differ in the head alone
    assert report_claims.verdict(None, 1) == "cannot decide"


def test_per_query_results_must_match_the_metrics(setup) -> None:
    _, specs, docs, _, _, root = setup
    bad = json.loads(json.dumps(docs))
    bad[0]["results"]["occluded_duke"]["R1"] += 1.0
    with pytest.raises(DataError, match="per-query hit@1 averages to"):
        report_stats.load_stats(root / "eval", specs, bad)
