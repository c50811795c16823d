"""The ``report`` stage: rebuild the paper's Table 1, Table 2 and figures from this pipeline's runs.

Reads ``metrics/<exp>.json`` (evaluate stage), ``eval/<exp>/<test_set>.npz`` (features),
``runs/<exp>/`` (history, weights), ``data/packed/`` (images for Fig. 1) and ``timings/``; writes
``reports/results.md`` (header, every table, every figure), ``reports/table1.md``,
``reports/table2.md``, ``reports/figures/*.png``, ``reports/curves/<quantity>.csv`` (comparison
charts for ``dvc plots show``) and ``reports/metrics/<test_set>/<variant>.json`` (the headline
numbers for ``dvc metrics show``; see :mod:`pipeline.report.views`). Every committed output is
the same on every run of unchanged code, but for one row of the markdown header: each stage's
wall time (and the machine), which the issue asks the report to show. The per-experiment
training throughput goes to ``timings/pipeline.md``, which is not committed. The markdown and
figures are also logged to MLflow (a ``report`` run), and each experiment's final metrics are
logged into its training run if the evaluate stage did not already.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ddrn.atomic import atomic_write_text
from ddrn.errors import DDRNError
from pipeline.cli import base_parser, load_params
from pipeline.params import ExperimentSpec, ProjectConfig
from pipeline.report import claims, tables, views
from pipeline.report import figures as figs
from pipeline.report import mechanism as report_mechanism
from pipeline.report import stats as rstats
from pipeline.report.published import TABLE2_DATASET
from pipeline.timing import load_timings
from pipeline.trial.eval_record import EvalRecord

log = logging.getLogger(__name__)

FIGURES = {
    "fig1": "figures/fig1_retrieval.png",
    "fig3": "figures/fig3_codebook_cosine.png",
    "fig7": "figures/fig7_tsne.png",
    "curves": "figures/training_curves.png",
    "gap": "figures/occlusion_gap.png",
    "mechanism": report_mechanism.FIGURE,
}
"""Figure key -> path under ``reports/`` (the names dvc.yaml declares as outs)."""


@dataclass(frozen=True)
class ReportPaths:
    """Inputs and the output folder (all relative to the repository root by default)."""

    metrics: Path = Path("metrics")
    eval: Path = Path("eval")
    runs: Path = Path("runs")
    packed: Path = Path("data/packed")
    timings: Path = Path("timings")
    backbone: Path = Path("data/pretrained/backbone.json")
    out: Path = Path("reports")


# --------------------------------------------------------------------------------------------
# Reading the pipeline's outputs
# --------------------------------------------------------------------------------------------


def epoch_loss(entry: dict[str, Any]) -> float:
    """The total training loss of one history entry (``loss``/``total``, else the sum of terms)."""
    for key in ("loss", "total", "loss/total"):
        if isinstance(entry.get(key), (int, float)):
            return float(entry[key])
    terms = [float(v) for k, v in entry.items() if k in ("id", "triplet", "margin", "orthogonal")]
    return sum(terms) if terms else float("nan")


def load_history(run_dir: Path) -> list[dict[str, Any]]:
    """``runs/<exp>/history.json`` (a list of per-epoch dicts; empty when missing)."""
    path = run_dir / "history.json"
    try:
        import json

        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if isinstance(value, dict):  # tolerate {"history": [...]} / {"epochs": [...]}
        value = value.get("history") or value.get("epochs") or []
    return [e for e in value if isinstance(e, dict)]


def load_codebook(run_dir: Path, experiment: str, fingerprint: str) -> np.ndarray | None:
    """The Embedding Space weight (x, D) of a trained model, or ``None`` if it has none.

    ``model.pt`` is read weights-only and must be ``experiment``'s finished weights at
    ``fingerprint`` (:func:`ddrn.engine.provenance.load_weights`), else a one-line error.
    """
    from ddrn.engine.provenance import load_weights

    path = run_dir / "model.pt"
    if not path.is_file():
        return None
    state, _ = load_weights(path, experiment, fingerprint)
    for key, value in state.items():
        if key.endswith("embedding_space.weight"):
            return value.float().numpy()
    return None


def check_metrics_provenance(config: ProjectConfig, specs: Sequence[ExperimentSpec],
                             docs: Sequence[dict[str, Any]], metrics_dir: Path) -> list[str]:
    """Refuse metrics of other settings; return the report's note on partial (unfinished) runs.

    Raises:
        DataError: a metrics file whose fingerprint is not the experiment's current one.
    """
    from ddrn.errors import DataError

    notes = []
    for spec, doc in zip(specs, docs, strict=True):
        if doc.get("fingerprint") != config.fingerprint(spec):
            raise DataError(f"{metrics_dir / (spec.name + '.json')}: metrics of other settings "
                            f"(fingerprint {doc.get('fingerprint')}, current "
                            f"{config.fingerprint(spec)}); expected the evaluate stage's output "
                            "for the current params; run train and evaluate again")
        if doc.get("partial"):
            notes.append(f"`{spec.name}` (epoch {doc.get('epochs_trained')} of "
                         f"{doc.get('epochs')})")
    if not notes:
        return []
    return ["", "> **PARTIAL RESULTS**: these runs were evaluated before training finished "
            "(`evaluate --allow-partial`); their numbers are not final: " + ", ".join(notes)]


def load_eval(eval_dir: Path, experiment: str, test_set: str) -> EvalRecord | None:
    """``eval/<exp>/<test_set>.npz``, or ``None`` if missing."""
    path = eval_dir / experiment / f"{test_set}.npz"
    return EvalRecord.load(path) if path.is_file() else None


CODE_PATHS = ("ddrn", "pipeline", "params.yaml", "dvc.yaml", "pyproject.toml")
"""What decides the results: the code version names the last commit that changed one of these."""


def code_version(root: Path) -> str:
    """The commit the results' code and params come from: the last commit that changed
    :data:`CODE_PATHS`, plus ``-dirty`` when they have uncommitted changes (``unknown`` outside
    a git checkout).

    Not ``git describe --dirty`` of ``HEAD``: the run's own outputs (reports, metrics, dvc.lock)
    made every tree dirty, and committing them moved ``HEAD``, so the header changed on every
    reproduce although the code had not.
    """
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                 timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("log", "-1", "--format=%h", "--abbrev=12", "--", *CODE_PATHS)
    if not commit:
        return "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS)
    return f"{commit}-dirty" if dirty else commit


def describe_data(config: ProjectConfig) -> list[str]:
    """One line per dataset: where it came from."""
    lines = []
    for name, ds in sorted(config.datasets.items()):
        if ds.source == "synthetic":
            s = ds.synthetic
            lines.append(f"`{name}`: synthetic ({s.num_train_ids} train ids, {s.num_test_ids} test "
                         f"ids, {s.images_per_id} images/id, {s.num_cameras} cameras, seed {s.seed})")
        else:
            digest = f", sha256 {ds.sha256[:12]}…" if ds.sha256 else ""
            lines.append(f"`{name}`: {ds.source}{digest}")
    return lines


def describe_test_sets(packed_root: Path, test_sets: Sequence[str]) -> list[str]:
    """One line per test set: its queries (and twins) and gallery images, from the packed data."""
    from ddrn.data import open_packed

    lines = []
    for name in test_sets:
        try:
            splits = open_packed(packed_root / name).splits
        except (OSError, ValueError, KeyError, DDRNError):
            lines.append(f"`{name}`: not packed here")
            continue
        twins = len(splits["query_twin"]) if "query_twin" in splits else 0
        lines.append(f"`{name}`: {len(splits['query']):,} queries"
                     + (f" ({twins:,} with an unoccluded twin)" if twins else "")
                     + f", {len(splits['gallery']):,} gallery images")
    return lines


def backbone_section(path: Path) -> tuple[str, str]:
    """(header cell, markdown section) for the backbone the ViT variants fine-tune from, read from
    the pretrain stage's ``backbone.json``; the section shows its kNN quality before fine-tuning
    next to a randomly initialised ViT's, so a reader sees what fine-tuning starts from."""
    if not path.is_file():
        return "not recorded (no pretrain stage output)", ""
    doc = json.loads(path.read_text())
    source = doc.get("source", "?")
    if source != "synthetic corpus":
        where = f" `{doc['path']}`" if doc.get("path") else ""
        return f"{source}{where}", ""
    corpus = doc.get("corpus", {})
    cell = (f"pretrained by the `pretrain` stage on a synthetic corpus of {corpus.get('identities')} "
            f"whole-body identities ({corpus.get('images')} images, seed {corpus.get('seed')}), "
            f"{doc.get('train', {}).get('epochs')} epochs of {doc.get('pretext', 'ID + triplet')}")
    rows = ["| test set | queries | gallery | twin R1 / mAP | occluded R1 / mAP | "
            "random init: twin R1 / mAP | random init: occluded R1 / mAP |",
            "|---|---|---|---|---|---|---|"]
    def pair(q: dict[str, Any], which: str, split: str) -> str:
        m = q[which][split]
        return f"{m['R1']:.1f} / {m['mAP']:.1f}"

    for name, q in sorted(doc.get("quality", {}).items()):
        rows.append(f"| `{name}` | {q['queries']} | {q['gallery']} | {pair(q, 'pretrained', 'twin')} | "
                    f"{pair(q, 'pretrained', 'occluded')} | {pair(q, 'random_init', 'twin')} | "
                    f"{pair(q, 'random_init', 'occluded')} |")
    section = "\n\n".join([
        "## The backbone before fine-tuning",
        "Every ViT row fine-tunes from this backbone, the demo's stand-in for ImageNet (the CNN "
        "baseline trains from random weights: the corpus pretrains the ViT only). Its features, "
        "before any re-ID training on the sets below, ranked by Euclidean distance (R1 / mAP, %, "
        "one pretraining seed, no interval), next to a ViT of the same shape with random weights:",
        "\n".join(rows)])
    return cell, section


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


# --------------------------------------------------------------------------------------------
# Figures from the outputs
# --------------------------------------------------------------------------------------------


def _specs_by_variant(specs: Sequence[ExperimentSpec], train_set: str) -> dict[str, list[ExperimentSpec]]:
    out: dict[str, list[ExperimentSpec]] = {}
    for s in specs:
        if s.train_set == train_set:
            out.setdefault(s.variant, []).append(s)
    return out


def curves_figure(config: ProjectConfig, specs: Sequence[ExperimentSpec], paths: ReportPaths) -> Any:
    """Training curves: the figure shows the ID loss (the one term every variant optimises
    alike; total losses sum different terms), and ``reports/curves/`` gets the comparable
    quantities for ``dvc plots show``."""
    curves: dict[str, dict[str, list[list[float]]]] = {}
    histories = {}
    groups = list(config.experiments)  # panels in params.yaml's order (the ablation first)
    for spec in sorted(specs, key=lambda s: groups.index(s.group) if s.group in groups else 0):
        history = load_history(paths.runs / spec.name)
        if not history:
            continue
        histories[spec] = history
        id_loss = [float(e.get("loss/id", float("nan"))) for e in history]
        group = f"{spec.group or spec.train_set} (train: {spec.train_set})"
        curves.setdefault(group, {}).setdefault(spec.variant, []).append(id_loss)
    views.write_curves(histories, paths.out / "curves")
    labels = {v: tables.variant_label(config, v) for v in config.variants}
    return figs.training_curves(curves, paths.out / FIGURES["curves"],
                                colours=figs.variant_colours(config.variants), labels=labels,
                                ylabel="ID loss (cross-entropy)")


def codebook_figure(config: ProjectConfig, specs: Sequence[ExperimentSpec], paths: ReportPaths) -> Any:
    """Fig. 3 from the Embedding Space variants without / with the orthogonal loss."""
    by_index = tables.ablation_variants(config)
    pairs = [(by_index.get(1), "without orthogonal loss"), (by_index.get(3), "with orthogonal loss")]
    books: dict[str, list[np.ndarray]] = {}
    for variant, what in pairs:
        for spec in _specs_by_variant(specs, TABLE2_DATASET).get(variant or "", []):
            cb = load_codebook(paths.runs / spec.name, spec.name, config.fingerprint(spec))
            if cb is not None:
                books.setdefault(f"{what} (`{variant}`)", []).append(cb)
    return figs.codebook_cosine(books, paths.out / FIGURES["fig3"])


def _baseline_and_ddrn(config: ProjectConfig, specs: Sequence[ExperimentSpec],
                       paths: ReportPaths) -> tuple[str, dict[str, EvalRecord]]:
    """The Table 2 test set and the eval records of the lowest-seed baseline and DDRN models."""
    by_index = tables.ablation_variants(config)
    out: dict[str, EvalRecord] = {}
    for index, label in ((0, "baseline"), (4, "DDRN")):
        cands = sorted(_specs_by_variant(specs, TABLE2_DATASET).get(by_index.get(index, ""), []),
                       key=lambda s: s.seed)
        for spec in cands:
            record = load_eval(paths.eval, spec.name, TABLE2_DATASET)
            if record is not None:
                out[f"{label} (`{spec.variant}`, seed {spec.seed})"] = record
                break
    return TABLE2_DATASET, out


def tsne_panels(models: dict[str, EvalRecord],
                n_ids: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Fig. 7's points: the ``n_ids`` identities with the most test images (of the first
    model's record; the same ids for every model), as ``{label: (features, pids, is_query)}``.

    pid 0 is the distractor pool and -1 junk (Market/Duke convention): they are not identities
    and are left out (the distractor pool, the largest "id", was drawn as one cluster).
    """
    first = next(iter(models.values()))
    pids = np.concatenate([first.query.pids, first.gallery.pids])
    ids, counts = np.unique(pids[pids > 0], return_counts=True)
    chosen = ids[np.argsort(-counts, kind="stable")[:n_ids]]
    panels = {}
    for label, record in models.items():
        qp, gp = record.query.pids, record.gallery.pids
        feats = np.concatenate([record.query.features, record.gallery.features])
        allp = np.concatenate([qp, gp])
        is_query = np.concatenate([np.ones(len(qp), bool), np.zeros(len(gp), bool)])
        keep = np.isin(allp, chosen)
        panels[label] = (feats[keep], allp[keep], is_query[keep])
    return panels


def tsne_figure(config: ProjectConfig, models: dict[str, EvalRecord],
                paths: ReportPaths) -> Any:
    """Fig. 7: the ``report.tsne_ids`` identities with the most test images, both models."""
    if len(models) < 2:
        return figs.tsne({}, paths.out / FIGURES["fig7"])
    return figs.tsne(tsne_panels(models, config.report.tsne_ids), paths.out / FIGURES["fig7"],
                     seed=config.seed)


def retrieval_figure(config: ProjectConfig, test_set: str, models: dict[str, EvalRecord],
                     paths: ReportPaths) -> tuple[Any, str]:
    """Fig. 1 and its caption (how the queries were chosen)."""
    if len(models) < 2:
        return figs.retrievals([], paths.out / FIGURES["fig1"]), ""
    from ddrn.data import open_packed

    packed = open_packed(paths.packed / test_set)
    query, gallery = packed.splits["query"], packed.splits["gallery"]
    k = config.report.topk
    # The evaluate stage's own ranking (its distance, junk excluded), never a recomputation.
    ranked = {label: record.ranked(k) for label, record in models.items()}
    (base_label, (_, base_ok)), (ddrn_label, (_, ddrn_ok)) = list(ranked.items())[:2]
    disagree = np.flatnonzero(base_ok[:, 0] != ddrn_ok[:, 0])
    rest = np.setdiff1d(np.arange(len(base_ok)), disagree)
    chosen = np.concatenate([disagree, rest])[: config.report.retrieval_queries]
    rows = []
    for q in chosen:
        by_model = {}
        for label, (top, ok) in ranked.items():
            by_model[label.split(" (")[0]] = ([np.asarray(gallery.images[i]) for i in top[q]],
                                               list(ok[q]))
        rows.append((np.asarray(query.images[q]), by_model))
    caption = (f"Queries of `{test_set}`: rank-1 correct for {int(base_ok[:, 0].sum())}/"
               f"{len(base_ok)} with {base_label} and {int(ddrn_ok[:, 0].sum())}/{len(ddrn_ok)} "
               f"with {ddrn_label}. Shown: the first {len(chosen)} queries (by index) on which the "
               f"two models' rank-1 results disagree ({len(disagree)} such queries), then others.")
    return figs.retrievals(rows, paths.out / FIGURES["fig1"]), caption


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def write_run_facts(paths: ReportPaths, specs: Sequence[ExperimentSpec],
                    report_seconds: float) -> dict[str, float]:
    """``timings/pipeline.md``: the stage wall times with each experiment's training throughput;
    returns the wall time of each stage of the main graph (a ``foreach`` stage summed over its
    items; ``report``: this run's until now), as the latest run of each recorded it."""
    stage_times = {k: float(v["seconds"]) for k, v in load_timings(paths.timings).items()
                   if k != "report"}
    stage_times["report"] = report_seconds
    per_kind: dict[str, float] = {}
    for stage, sec in stage_times.items():
        per_kind[stage.split("@")[0]] = per_kind.get(stage.split("@")[0], 0.0) + sec
    lines = [f"# Run facts ({time.strftime('%Y-%m-%d %H:%M:%S')})", "",
             f"Pipeline time: {_duration(sum(stage_times.values()))} (sum of the latest run of "
             "every stage: " + ", ".join(f"{k} {_duration(v)}" for k, v in per_kind.items()) + ")",
             "", "| experiment | epochs | train s | images/s (median epoch) |", "|---|---|---|---|"]
    for spec in specs:
        history = load_history(paths.runs / spec.name)
        ips = sorted(float(e["images_per_s"]) for e in history if "images_per_s" in e)
        secs = sum(float(e.get("epoch_seconds", 0.0)) for e in history)
        if history:
            lines.append(f"| {spec.name} | {len(history)} | {secs:.1f} | "
                         f"{ips[len(ips) // 2] if ips else float('nan'):.0f} |")
    atomic_write_text(paths.timings / "pipeline.md", "\n".join(lines) + "\n")
    ordered = sorted(per_kind, key=lambda k: (GRAPH_ORDER.index(k) if k in GRAPH_ORDER
                                              else len(GRAPH_ORDER), k))
    return {k: per_kind[k] for k in ordered if k not in SEPARATE_GRAPH_STAGES}


GRAPH_ORDER = ("download", "preprocess", "pretrain", "train", "evaluate", "report")
"""The main graph's stages in the order they run (``dvc.yaml``), as the header lists them."""

SEPARATE_GRAPH_STAGES = ("sweep",)
"""Stages recorded in ``timings/`` that are not part of the report's graph (``sweeps/dvc.yaml``)."""


def stage_times_cell(stage_seconds: dict[str, float], timings: Path) -> str:
    """The header's stage-times cell: each stage's wall time and the machine that ran them.

    The one part of the report that differs from run to run (the numbers do not): a report
    rebuilt from identical inputs changes this row and nothing else.
    """
    if set(stage_seconds) <= {"report"}:
        return f"not recorded on this machine (no `{timings.name}/`)"
    times = ", ".join(f"{k} {_duration(v)}" for k, v in stage_seconds.items())
    return (f"{times}; total {_duration(sum(stage_seconds.values()))} (the latest run of each "
            f"stage, on {_machine()}; per-experiment throughput: `{timings.name}/pipeline.md`)")


def _machine() -> str:
    """The CPU model and core count (the demo's numbers depend on the CPU's kernels)."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def build(config: ProjectConfig, paths: ReportPaths, root: Path) -> dict[str, Any]:
    """Write every report file; returns ``{"markdown": [...paths], "figures": {key: Figure},
    "docs": metrics documents}``."""
    t0 = time.perf_counter()
    specs = config.experiments_list()
    log.info("report: reading the metrics of %d experiments", len(specs))
    docs = tables.load_metrics(paths.metrics, [s.name for s in specs])
    partial_note = check_metrics_provenance(config, specs, docs, paths.metrics)
    df = tables.results_frame(docs)
    log.info("report: bootstrap intervals from the per-query results")
    stats = rstats.load_stats(paths.eval, specs, docs, seed=config.seed)
    t1 = tables.table1_measured(config, df, stats=stats)
    t1_minp = tables.table1_measured(config, df, metrics=("mINP",), stats=stats)
    t1_vs = tables.table1_versus(config, df, stats)
    t1_pub = tables.table1_published()
    t2 = tables.table2(config, df, TABLE2_DATASET, stats)
    gap = tables.occlusion_gap(config, df, stats)
    # test sets in params.yaml's order (the ablation set first), variants in profile order
    test_order = list(dict.fromkeys(t for g in config.experiments.values() for t in g.test_sets))
    if not gap.empty:
        gap = gap.sort_values("Test set", kind="stable", key=lambda c: c.map(
            lambda t: test_order.index(t) if t in test_order else len(test_order)))

    log.info("report: drawing figures")
    figures = {"curves": curves_figure(config, specs, paths)}
    figures["fig3"] = codebook_figure(config, specs, paths)
    test_set, models = _baseline_and_ddrn(config, specs, paths)
    figures["fig7"] = tsne_figure(config, models, paths)
    figures["fig1"], fig1_caption = retrieval_figure(config, test_set, models, paths)
    figures["gap"] = figs.occlusion_gap(tables.occlusion_bars(gap), paths.out / FIGURES["gap"],
                                        colours=figs.variant_colours(config.variants))
    views.write_summary(df, paths.out / "metrics")

    mechanism_md, figures["mechanism"] = report_mechanism.mechanism_section(config, specs, paths)

    synthetic = all(ds.source == "synthetic" for ds in config.datasets.values())
    caveat = ("> **Measured rows come from the synthetic benchmark** this pipeline generates "
              "(see *data* above), with the profile's small model and short schedule. They are "
              "not comparable with the paper's published numbers, which are on the real datasets "
              "with ViT-B/16; compare methods *within* the measured table."
              if synthetic else
              "> Measured rows come from this pipeline's runs on the datasets listed above; "
              "published rows are the paper's.")
    cells = ("Cells are mean [95% interval] (see *Uncertainty* above); cells without per-query "
             "results (older eval files) are mean ± std over seeds." if stats.grids else
             "Cells are mean ± std over seeds (the eval files hold no per-query results, so no "
             "intervals; run the evaluate stage again).")
    baseline = tables.baseline_variant(config)
    table1_md = "\n\n".join([
        "## Table 1: comparison with other methods (R@1 / mAP, %)",
        "O-REID and P-REID are evaluated with the Market-trained models (the standard protocol). "
        + cells,
        "### Measured (this pipeline)", tables.to_markdown(t1),
        "### Measured mINP (%; the paper does not report mINP)", tables.to_markdown(t1_minp),
        f"### Paired comparison with the baseline (`{baseline}`; points)",
        "Each row minus the baseline on the same seeds and queries. " + rstats.LEGEND + ".",
        tables.to_markdown(t1_vs),
        "### Published (the paper's Table 1, transcribed exactly; not measured here)",
        tables.to_markdown(t1_pub)])
    table2_md = "\n\n".join([
        f"## Table 2: ablation on `{TABLE2_DATASET}` (R@1 / mAP, %)",
        "Component marks are read from each variant's resolved settings; *paper* columns are the "
        "published numbers, *measured* columns this pipeline's. " + cells + " Δ columns: the row "
        "minus row 0 on the same seeds and queries (points); " + rstats.LEGEND + ".",
        tables.to_markdown(t2)])
    gap_md = "\n\n".join([
        "## Occlusion gap",
        "R1 with each occluded query replaced by its unoccluded twin, minus R1 with the occluded "
        "query (same gallery, same model): how much occlusion costs each method.",
        "*R1 kept* is R1 occluded as a share of R1 twin: a small gap can come from a low twin R1, "
        "so read the gap together with the absolute R1 and the share kept.",
        *(["With per-query results, every cell is computed on the occluded queries that have a "
           "twin, paired query by query (mean [95% interval]); *R1 gap vs baseline* is this "
           "method's per-query gap minus the baseline's (negative: occlusion costs it less). "
           + rstats.LEGEND + "."] if "seeds × queries" in gap.columns else []),
        tables.to_markdown(gap, drop=(*tables.GAP_HELPER_COLUMNS,
                                      *(("seeds",) if "seeds × queries" in gap.columns else ())))])
    claims_md = claims.claims_section(config, df, stats) if stats.grids else ""

    stage_seconds = write_run_facts(paths, specs, time.perf_counter() - t0)
    backbone_cell, backbone_md = backbone_section(paths.backbone)
    header = "\n".join([
        f"# DDRN benchmark report: profile `{config.profile}`",
        "",
        "| | |", "|---|---|",
        f"| profile | `{config.profile}` ({len(specs)} experiments: training set × variant × seed) |",
        f"| data | {'<br>'.join(describe_data(config))} |",
        f"| test sets | {'<br>'.join(describe_test_sets(paths.packed, test_order))} |",
        f"| backbone | {backbone_cell} |",
        f"| code | `{code_version(root)}` (last commit changing {', '.join(CODE_PATHS)}) |",
        f"| stage times | {stage_times_cell(stage_seconds, paths.timings)} |",
        "", caveat, *partial_note, *(["", rstats.METHOD_TEXT] if stats.grids else [])])
    figure_md = "\n\n".join([
        "## Figures",
        "### Fig. 1: retrievals, baseline vs DDRN", fig1_caption,
        f"![Fig. 1]({FIGURES['fig1']})",
        "### Fig. 3: cosine distances between Embedding Space vectors (Gaussian KDE)",
        f"![Fig. 3]({FIGURES['fig3']})",
        f"### Fig. 7: t-SNE of `{test_set}` test features, {config.report.tsne_ids} identities",
        f"![Fig. 7]({FIGURES['fig7']})",
        "### Training curves: ID loss (mean over seeds; band: min–max)",
        f"![training curves]({FIGURES['curves']})",
        "### Occlusion gap per method", f"![occlusion gap]({FIGURES['gap']})"])

    paths.out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("results.md", "\n\n".join(p for p in [header, backbone_md, claims_md, table1_md,
                                                                  table2_md, gap_md, mechanism_md,
                                                                  figure_md] if p)),
                       ("table1.md", f"{header}\n\n{table1_md}"),
                       ("table2.md", f"{header}\n\n{table2_md}")):
        written.append(atomic_write_text(paths.out / name, text.rstrip() + "\n"))
    log.info("report: wrote %s", ", ".join(str(p) for p in written))
    return {"markdown": written, "figures": figures, "docs": docs}


def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports"), help="output folder")
    args: argparse.Namespace = parser.parse_args(argv)
    config = load_params(args)
    root = Path.cwd()
    paths = ReportPaths(out=args.out)
    result = build(config, paths, root)

    from pipeline.tracking.models import register_best
    from pipeline.tracking.runs import log_evaluation, stage_run

    with stage_run(config.tracking, root, "report", config.profile) as run:
        if run is not None:
            linked = sum(log_evaluation(config.tracking, root, doc) is not None
                         for doc in result["docs"])
            log.info("report: final metrics linked to %d/%d training runs in MLflow", linked,
                     len(result["docs"]))
            for name, uri in register_best(config.tracking, root, result["docs"]).items():
                log.info("report: best seed of %s registered: %s", name, uri)
            for path in result["markdown"]:
                run.log_artifact(path, "reports")
            for rel in FIGURES.values():
                run.log_artifact(paths.out / rel, "reports/figures")
    return 0

