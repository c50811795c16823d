"""pipeline.report.build rendered from real files: metrics JSON, histories, a real model's weights,
eval feature files and a real packed synthetic dataset."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from eval_records import eval_record
from packed_splits import labelled_split

from ddrn.config import SyntheticConfig
from pipeline.params import config_from_dict
from pipeline.report import build as report
from pipeline.report import published
from pipeline.report import tables as report_tables
from pipeline.report.figures import pairwise_cosine_distance

VARIANTS = {
    "vit_baseline": {"description": "ViT baseline: ID + triplet", "table2_index": 0},
    "es": {"description": "+ Embedding Space", "table2_index": 1,
           "model": {"embedding_space": True}},
    "es_orth": {"description": "ES + orthogonal", "table2_index": 3,
                "model": {"embedding_space": True}, "loss": {"orthogonal_weight": 1.0}},
    "ddrn": {"description": "DDRN", "table2_index": 4, "model": {"embedding_space": True},
             "loss": {"orthogonal_weight": 1.0, "margin_head": "hs_arcface"}},
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory):
    """A tiny profile with every report input on disk."""
    root = tmp_path_factory.mktemp("report")
    raw = {"profile": "tiny", "variants": VARIANTS, "profiles": {"tiny": {
        "datasets": {"occluded_duke": {"synthetic": {"num_train_ids": 4, "num_test_ids": 6,
                                                     "num_distractor_ids": 0, "images_per_id": 4,
                                                     "num_cameras": 2, "seed": 3}},
                     "market1501": {}},
        "model": {"embed_dim": 16, "depth": 2, "num_heads": 2, "patch_size": 8, "stride": 8,
                  "num_embeddings": 8},
        "experiments": {
            "ablation": {"train_set": "occluded_duke", "test_sets": ["occluded_duke"],
                         "variants": list(VARIANTS), "seeds": [0, 1]},
            "market": {"train_set": "market1501", "test_sets": ["market1501"],
                       "variants": ["vit_baseline", "ddrn"], "seeds": [0]}},
        "report": {"tsne_ids": 4, "topk": 3, "retrieval_queries": 2}}}}
    (root / "params.yaml").write_text(json.dumps(raw))
    config = config_from_dict(raw)
    paths = report.ReportPaths(metrics=root / "metrics", eval=root / "eval", runs=root / "runs",
                               packed=root / "data/packed", timings=root / "timings",
                               out=root / "reports")
    # A real packed synthetic test set (Fig. 1 shows its images).
    from ddrn.data import load_dataset, pack_dataset
    from ddrn.data.synthetic import generate_synthetic

    syn = SyntheticConfig(num_train_ids=4, num_test_ids=6, num_distractor_ids=0, images_per_id=4,
                          num_cameras=2, height=32, width=16, seed=3)
    generate_synthetic("occluded_duke", syn, root / "data/raw/occluded_duke")
    ds = load_dataset("occluded_duke", root / "data/raw/occluded_duke", log_table=False)
    pack_dataset(ds, paths.packed / "occluded_duke", 32, 16, num_threads=1, progress=False,
                 source={"dataset_fingerprint": "test", "source": "synthetic"})
    packed_ds = __import__("ddrn.data", fromlist=["open_packed"]).open_packed(
        paths.packed / "occluded_duke")
    q, g = packed_ds.splits["query"], packed_ds.splits["gallery"]
    twin = packed_ds.splits["query_twin"]

    from ddrn.engine.provenance import provenance, save_weights
    from ddrn.models import build_model

    rng = np.random.default_rng(0)
    for spec in config.experiments_list():
        quality = {"vit_baseline": 0.0, "es": 1.0, "es_orth": 2.0, "ddrn": 3.0}[spec.variant]
        results = {}
        for test_set in spec.test_sets:
            results[test_set] = {"R1": 50 + 5 * quality + spec.seed, "R5": 80.0, "R10": 90.0,
                                 "mAP": 40 + 4 * quality + spec.seed, "mINP": 20 + quality,
                                 "num_query": len(q)}
        paths.metrics.mkdir(parents=True, exist_ok=True)
        run_dir = paths.runs / spec.name
        run_dir.mkdir(parents=True)
        (run_dir / "history.json").write_text(json.dumps(
            [{"epoch": e, "loss": 3.0 / e + 0.1 * quality, "lr": 0.01, "loss/id": 2.0 / e,
              "loss/triplet": 0.5 / e, "images_per_s": 100.0 + spec.seed, "epoch_seconds": 1.5,
              **({"code_perplexity": 4.0 + e} if spec.model.embedding_space else {})}
             for e in (1, 2, 3)]))
        model = build_model(spec.model, num_classes=4, input_size=(32, 16))
        save_weights(run_dir / "model.pt", model.state_dict(),
                     provenance(spec.name, config.fingerprint(spec), 3, 3, finished=True))
        # Features that cluster by identity, tighter for the better variants.
        centres = {int(p): rng.normal(size=16) for p in np.unique(np.concatenate([q.pids, g.pids]))}
        noise = 3.0 / (1 + quality)

        def feats(pids: np.ndarray, centres: dict = centres, noise: float = noise) -> np.ndarray:
            return np.stack([centres[int(p)] + noise * rng.normal(size=16) for p in pids])

        if "occluded_duke" in spec.test_sets:
            # The eval record the evaluate stage would write for these features (twins: the same
            # queries unoccluded, closer to their identity's centre), and the metrics that are its
            # means (the report checks that the two agree).
            record = eval_record(q, feats(q.pids), g, feats(g.pids),
                                 twin, feats(twin.pids, noise=noise / 3))
            record.save(paths.eval / spec.name / "occluded_duke.npz")
            for key, per_query in (("occluded_duke", record.query_results.per_query),
                                   ("occluded_duke/twin", record.twin_results.per_query)):
                results[key] = {**per_query.summary().as_percentages(), "num_query": len(q)}
        (paths.metrics / f"{spec.name}.json").write_text(json.dumps({
            "experiment": spec.name, "variant": spec.variant, "seed": spec.seed,
            "train_set": spec.train_set, "fingerprint": config.fingerprint(spec),
            "results": results}))
    paths.timings.mkdir()
    (paths.timings / "train.json").write_text(json.dumps({"stage": "train", "seconds": 65.0}))
    (paths.timings / "download@occluded_duke.json").write_text(
        json.dumps({"stage": "download@occluded_duke", "seconds": 2.0}))
    result = report.build(config, paths, root)
    return config, paths, result


def _per_seed(project, variant: str, test_set: str, metric: str) -> np.ndarray:
    """``metric`` of ``variant`` on ``test_set`` per seed, from the metrics documents."""
    config, _, result = project
    return np.array([doc["results"][test_set][metric]
                     for spec, doc in zip(config.experiments_list(), result["docs"], strict=True)
                     if spec.variant == variant and test_set in doc["results"]])


def _row(markdown: str, label: str) -> list[str]:
    """The cells of the first table row whose first cell is ``label``."""
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == label:
            return cells
    raise AssertionError(f"no row {label!r}")


def _mean_std(values: np.ndarray) -> str:
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}"


def test_every_declared_output_is_written(project) -> None:
    _, paths, _ = project
    for name in ("results.md", "table1.md", "table2.md"):
        assert (paths.out / name).stat().st_size > 0
    for rel in report.FIGURES.values():
        assert (paths.out / rel).stat().st_size > 1000, rel
    # One CSV per comparable quantity, every experiment in it; nothing that varies run to run.
    assert sorted(p.name for p in (paths.out / "curves").glob("*.csv")) == [
        "code_perplexity.csv", "id_loss.csv", "triplet_loss.csv"]
    id_loss = (paths.out / "curves" / "id_loss.csv").read_text().splitlines()
    assert id_loss[0] == "epoch,id_loss,experiment,variant,seed,train_set"
    assert len(id_loss) == 1 + 3 * 10  # 3 epochs of the 10 experiments
    assert "occluded_duke-es-s1" in (paths.out / "curves" / "code_perplexity.csv").read_text()
    assert "vit_baseline" not in (paths.out / "curves" / "code_perplexity.csv").read_text()
    for path in (paths.out / "curves").glob("*.csv"):
        assert "images_per_s" not in path.read_text() and "epoch_seconds" not in path.read_text()


def test_table1_has_measured_and_every_published_row(project) -> None:
    _, paths, _ = project
    text = (paths.out / "table1.md").read_text()
    measured, published_part = text.split("### Published")
    # O-Duke: the mean over seeds and its bootstrap interval; Market (no eval record): the mean.
    r1 = _per_seed(project, "ddrn", "occluded_duke", "R1")
    ddrn = _row(measured, "DDRN (`ddrn`)")
    assert ddrn[1].startswith(f"{r1.mean():.1f} [") and ddrn[7] == "65.0"
    assert "DDRN" in measured and "+ Embedding Space" not in measured  # ablation-only rows: Table 2
    for row in published.TABLE1:
        assert f"| {row.method} " in published_part
    assert "68.07" in published_part and "DDRN(Ours)" not in measured


def test_table2_marks_and_numbers(project) -> None:
    config, _, result = project
    df = report_tables.results_frame(result["docs"])
    t2 = report_tables.table2(config, df, "occluded_duke")
    row = t2.set_index("Index").loc[3]
    assert (row["Embedding Space"], row["Orthogonal Loss"], row["HS-ArcFace"]) == ("✓", "✓", "×")
    # Without per-query statistics a cell is mean ± std over the seeds.
    assert row["R@1 (measured)"] == _mean_std(_per_seed(project, "es_orth", "occluded_duke", "R1"))
    assert row["R@1 (paper)"] == "67.1"
    # Index 2 has no variant in this profile: published numbers only.
    assert t2.set_index("Index").loc[2, "R@1 (measured)"] == "-"


def test_occlusion_gap_and_header(project) -> None:
    _, paths, _ = project
    text = (paths.out / "results.md").read_text()
    assert "| profile | `tiny`" in text and "synthetic (4 train ids" in text
    assert "| code | `unknown`" in text  # the fixture is no git checkout
    # The gap is paired query by query: its estimate is the mean over seeds of twin - occluded.
    gap = (_per_seed(project, "ddrn", "occluded_duke/twin", "R1")
           - _per_seed(project, "ddrn", "occluded_duke", "R1"))
    gap_section = text.split("\n## Occlusion gap\n")[1]
    assert _row(gap_section, "DDRN (`ddrn`)")[4].startswith(f"{gap.mean():+.1f} [")
    assert "not comparable" in text
    # Each stage's wall time is in the header (foreach items summed); throughput is not.
    row = next(line for line in text.splitlines() if line.startswith("| stage times |"))
    assert row.startswith("| stage times | download 2 s, train 1 min 05 s, report ")
    assert f"{os.cpu_count()} cores" in row and "generated" not in text
    assert row in (paths.out / "table2.md").read_text().splitlines()
    facts = (paths.timings / "pipeline.md").read_text()
    assert "train 1 min 05 s" in facts and "download 2 s" in facts
    assert "| occluded_duke-ddrn-s1 | 3 | 4.5 | 101 |" in facts


def test_dvc_metrics_summary_is_one_narrow_row_per_test_set_and_variant(project) -> None:
    _, paths, _ = project
    files = sorted(p.relative_to(paths.out / "metrics").as_posix()
                   for p in (paths.out / "metrics").rglob("*.json"))
    assert files == ["market1501/ddrn.json", "market1501/vit_baseline.json",
                     "occluded_duke/ddrn.json", "occluded_duke/es.json",
                     "occluded_duke/es_orth.json", "occluded_duke/vit_baseline.json"]
    ddrn = json.loads((paths.out / "metrics/occluded_duke/ddrn.json").read_text())
    per_seed = {m: _per_seed(project, "ddrn", "occluded_duke", m) for m in ("R1", "mAP", "mINP")}
    twin = _per_seed(project, "ddrn", "occluded_duke/twin", "R1")
    assert ddrn == {**{m: round(float(v.mean()), 2) for m, v in per_seed.items()}, "seeds": 2,
                    "R1_twin": round(float(twin.mean()), 2),
                    "R1_kept_pct": round(float((100 * per_seed["R1"] / twin).mean()), 2)}
    assert "R1_twin" not in json.loads((paths.out / "metrics/market1501/ddrn.json").read_text())


def test_report_is_byte_stable_but_for_the_stage_times(project, tmp_path: Path) -> None:
    """Building the report again from the same inputs writes the same bytes (PNGs included),
    apart from the header's stage-times row (here: no timings recorded the second time)."""
    import dataclasses

    config, paths, _ = project
    again = dataclasses.replace(paths, out=tmp_path / "reports", timings=tmp_path / "timings")
    report.build(config, again, paths.out.parent)
    first = sorted(p.relative_to(paths.out) for p in paths.out.rglob("*") if p.is_file())
    second = sorted(p.relative_to(again.out) for p in again.out.rglob("*") if p.is_file())
    assert first == second
    for rel in first:
        mine, theirs = (paths.out / rel).read_bytes(), (again.out / rel).read_bytes()
        if rel.suffix == ".md":
            mine, theirs = (b"\n".join(line for line in text.splitlines()
                                       if not line.startswith(b"| stage times |"))
                            for text in (mine, theirs))
            assert b"| stage times | not recorded on this machine" in \
                (again.out / rel).read_bytes(), rel
        assert mine == theirs, rel


def test_tsne_leaves_out_distractors_and_marks_queries() -> None:

    rng = np.random.default_rng(0)

    record = eval_record(labelled_split([1, 2, 0], [0] * 3), rng.normal(size=(3, 4)),
                         labelled_split([0, 0, 0, 1, 2, -1], [1] * 6), rng.normal(size=(6, 4)))
    (feats, pids, is_query), = report.tsne_panels({"m": record}, n_ids=5).values()
    assert pids.tolist() == [1, 2, 1, 2] and is_query.tolist() == [True, True, False, False]
    assert len(feats) == 4


def test_code_version_ignores_the_runs_own_outputs(tmp_path: Path) -> None:
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              cwd=tmp_path, check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "x.py").write_text("a = 1\n")
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "results.md").write_text("old\n")
    git("add", "-A")
    git("commit", "-qm", "code")
    code_commit = git("rev-parse", "--short=12", "HEAD").strip()
    (tmp_path / "reports" / "results.md").write_text("new\n")  # what a run writes
    assert report.code_version(tmp_path) == code_commit
    git("commit", "-qam", "outputs")  # committing the outputs does not change it either
    assert report.code_version(tmp_path) == code_commit
    (tmp_path / "pipeline" / "x.py").write_text("a = 2\n")
    assert report.code_version(tmp_path) == f"{code_commit}-dirty"


def test_cosine_distance_of_orthonormal_codes_is_one() -> None:
    codes = np.linalg.qr(np.random.default_rng(0).normal(size=(8, 8)))[0]
    np.testing.assert_allclose(pairwise_cosine_distance(codes), 1.0, atol=1e-9)
    assert pairwise_cosine_distance(np.ones((3, 4))).max() < 1e-9


def test_missing_metrics_is_a_one_line_error(tmp_path: Path) -> None:
    from ddrn.errors import DataError

    with pytest.raises(DataError, match="metrics file not found"):
        report_tables.load_metrics(tmp_path, ["nope"])


def test_partial_metrics_are_marked_and_stale_ones_refused(project, tmp_path: Path) -> None:
    from ddrn.errors import DataError

    config, paths, result = project
    specs = config.experiments_list()
    docs = [dict(d) for d in result["docs"]]
    docs[0].update(partial=True, epochs_trained=8, epochs=30)
    note = report.check_metrics_provenance(config, specs, docs, paths.metrics)
    assert "PARTIAL RESULTS" in note[-1] and f"`{specs[0].name}` (epoch 8 of 30)" in note[-1]
    assert report.check_metrics_provenance(config, specs, result["docs"], paths.metrics) == []
    docs[1]["fingerprint"] = "0" * 16
    with pytest.raises(DataError, match=f"{specs[1].name}.json: metrics of other settings"):
        report.check_metrics_provenance(config, specs, docs, paths.metrics)


def test_report_refuses_weights_of_another_experiment(project) -> None:
    from ddrn.errors import CheckpointError

    config, paths, _ = project
    a, b = config.experiments_list()[:2]
    with pytest.raises(CheckpointError, match=f"belongs to experiment '{a.name}'"):
        report.load_codebook(paths.runs / a.name, b.name, config.fingerprint(b))


def test_report_with_per_query_results_has_intervals_marks_claims_and_sizes(project) -> None:
    """The eval records hold per-query results (as the evaluate stage writes them) and the
    metrics are their means: intervals, Δ columns, the claims section."""
    _, paths, _ = project
    text = (paths.out / "results.md").read_text()
    assert "| test sets | `occluded_duke`: " in text and "gallery images" in text
    assert "`market1501`: not packed here" in text
    assert "two-way bootstrap over the seeds *and* the queries" in text
    assert "## What the numbers support" in text
    assert "Table 2 row 4 (`ddrn`) above row 0 (`vit_baseline`) in R@1: **" in text
    t2 = text.split("## Table 2: ablation")[1].split("## Occlusion gap")[0]
    assert "ΔR@1 vs 0" in t2 and "▲ / ▼" in t2
    assert re.search(r"\| \d+\.\d \[\d+\.\d, \d+\.\d\] +\|", t2)
    assert "### Paired comparison with the baseline (`vit_baseline`; points)" in text
    # market1501 has no eval file here: its cells fall back to mean ± std, no interval.
    t1 = text.split("### Measured (this pipeline)")[1].split("### Measured mINP")[0]
    assert "[" in t1
