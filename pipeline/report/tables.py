"""The report's tables: measured results (``metrics/*.json``) in the paper's layouts, as pandas.

Measured cells are ``mean [95% interval]`` when the eval files hold per-query results (a
:class:`pipeline.report.stats.ReportStats` is passed), else ``mean ± std`` over seeds (sample std;
a single seed shows the value alone). Published numbers come from :mod:`pipeline.report.published` and are rendered in their own tables, so
measured and published rows are never mixed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ddrn.errors import DataError
from pipeline.params import ProjectConfig
from pipeline.report.published import TABLE1, TABLE1_COLUMNS, TABLE1_DATASETS, TABLE2
from pipeline.report.stats import ReportStats, fmt_difference, fmt_interval

METRIC_KEYS = ("R1", "R5", "R10", "mAP", "mINP")
TRANSFER_TRAIN_SET = "market1501"
"""Occluded-REID / Partial-REID are test-only: the standard protocol trains on Market-1501."""


def load_metrics(metrics_dir: Path, experiments: Iterable[str]) -> list[dict[str, Any]]:
    """The ``metrics/<exp>.json`` documents of ``experiments`` (missing ones are an error)."""
    docs = []
    for name in experiments:
        path = metrics_dir / f"{name}.json"
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise DataError(f"{path}: metrics file not found; expected the output of the "
                            "evaluate stage (`dvc repro evaluate`)") from None
        except ValueError:
            raise DataError(f"{path}: not valid JSON; expected the evaluate stage's metrics") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("results"), dict):
            raise DataError(f"{path}: no 'results' mapping; expected the evaluate stage's schema")
        docs.append(doc)
    return docs


def results_frame(docs: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per (experiment, test set): variant, seed, train_set, test_set, twin, R1..mINP."""
    rows = []
    for doc in docs:
        for key, res in doc["results"].items():
            test_set, _, suffix = key.partition("/")
            rows.append({"experiment": doc["experiment"], "variant": doc["variant"],
                         "seed": doc["seed"], "train_set": doc["train_set"], "test_set": test_set,
                         "twin": suffix == "twin",
                         **{k: float(res[k]) for k in METRIC_KEYS if k in res}})
    columns = ["experiment", "variant", "seed", "train_set", "test_set", "twin", *METRIC_KEYS]
    return pd.DataFrame(rows, columns=columns)


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample std (0 for one value) and count of the finite ``values``."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return math.nan, math.nan, 0
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return mean, std, len(vals)


def fmt(values: Sequence[float]) -> str:
    """``"71.3 ± 0.4"`` (``"71.3"`` for one seed, ``"-"`` for none)."""
    mean, std, n = mean_std(values)
    if n == 0:
        return "-"
    return f"{mean:.1f}" if n == 1 else f"{mean:.1f} ± {std:.1f}"


def variant_label(config: ProjectConfig, variant: str) -> str:
    """A short display name: the variant's description up to ':' / '(' (else its key), plus the
    backbone actually run when it is a CNN (the ``bot_resnet50`` variant is a ResNet-18 in the
    demo profile: the label says what was run, not what the key promises)."""
    desc = config.variants[variant].description if variant in config.variants else ""
    label = desc.split(":")[0].split(" (")[0].strip()
    if variant in config.variants and config.datasets:
        model = config.resolve(sorted(config.datasets)[0], variant, 0).model
        if model.arch != "vit":
            depth = model.cnn_backbone.removeprefix("resnet")
            label = f"{label or variant}, ResNet-{depth}"
            if model.resnet_pretrained is None and config.model.pretrained is not None:
                # The ViT rows fine-tune from a pretrained backbone; this one does not.
                label += ", random init"
    return f"{label} (`{variant}`)" if label else f"`{variant}`"


def cell_rows(df: pd.DataFrame, variant: str, test_set: str, twin: bool = False) -> pd.DataFrame:
    rows = df[(df.variant == variant) & (df.test_set == test_set) & (df.twin == twin)]
    if rows.empty:
        return rows
    same = rows[rows.train_set == test_set]  # trained and tested on the same set
    if not same.empty:
        return same
    transfer = rows[rows.train_set == TRANSFER_TRAIN_SET]
    return transfer if not transfer.empty else rows[rows.train_set == sorted(rows.train_set)[0]]


def _measured(cell: pd.DataFrame, metric: str, stats: ReportStats | None, variant: str,
              key: str) -> str:
    """A measured cell: the interval when ``stats`` has the per-query grid, else mean ± std."""
    if len(cell) == 0:
        return "-"
    ci = stats.cell(variant, cell.train_set.iloc[0], key, metric) if stats is not None else None
    return fmt_interval(ci) if ci is not None else fmt(list(cell[metric]))


def baseline_variant(config: ProjectConfig) -> str | None:
    """The row every other row is compared with: Table 2's index 0 (the ViT baseline)."""
    return ablation_variants(config).get(0)


def table1_variants(config: ProjectConfig, df: pd.DataFrame) -> list[str]:
    """Variants shown in Table 1: all measured ones except Table 2's intermediate rows (1-3)."""
    intermediate = {v for v, c in config.variants.items() if c.table2_index in (1, 2, 3)}
    order = list(dict.fromkeys(v for g in config.experiments.values() for v in g.variants))
    measured = set(df.variant)
    return [v for v in order if v in measured and v not in intermediate]


def table1_measured(config: ProjectConfig, df: pd.DataFrame,
                    metrics: tuple[str, ...] = ("R1", "mAP"),
                    stats: ReportStats | None = None) -> pd.DataFrame:
    """Table 1's layout with measured cells: one row per variant, ``<column> <metric>`` columns."""
    rows = []
    for variant in table1_variants(config, df):
        row: dict[str, Any] = {"Method": variant_label(config, variant)}
        seeds: dict[str, int] = {}
        for column in TABLE1_COLUMNS:
            cell = cell_rows(df, variant, TABLE1_DATASETS[column])
            if len(cell):
                seeds[column] = cell.seed.nunique()
            for m in metrics:
                row[f"{column} {'R@1' if m == 'R1' else m}"] = _measured(
                    cell, m, stats, variant, TABLE1_DATASETS[column])
        # Seeds per cell: one number when every measured cell has as many, else per column
        # (the ablation set has 3 seeds where the transfer sets have 1).
        row["seeds"] = (str(next(iter(seeds.values()))) if len(set(seeds.values())) == 1 else
                        ", ".join(f"{c} {n}" for c, n in seeds.items()) if seeds else "0")
        rows.append(row)
    return pd.DataFrame(rows)


def table1_versus(config: ProjectConfig, df: pd.DataFrame, stats: ReportStats) -> pd.DataFrame:
    """Every Table 1 row against the baseline, per test set: paired differences (points) with
    their intervals, on the seeds and queries both rows have (``seeds × queries``)."""
    base = baseline_variant(config)
    rows = []
    for variant in table1_variants(config, df):
        if variant == base:
            continue
        for column in TABLE1_COLUMNS:
            test_set = TABLE1_DATASETS[column]
            cell = cell_rows(df, variant, test_set)
            if not len(cell) or base is None:
                continue
            train_set = cell.train_set.iloc[0]
            diffs = {m: stats.versus((variant, train_set, test_set), (base, train_set, test_set), m)
                     for m in ("R1", "mAP", "mINP")}
            if all(ci is None for ci in diffs.values()):
                continue
            size = next(ci for ci in diffs.values() if ci is not None)
            rows.append({"Method": variant_label(config, variant), "Test set": column,
                         "ΔR@1": fmt_difference(diffs["R1"]), "ΔmAP": fmt_difference(diffs["mAP"]),
                         "ΔmINP": fmt_difference(diffs["mINP"]),
                         "seeds × queries": f"{size.seeds} × {size.queries}"})
    return pd.DataFrame(rows)


def table1_published() -> pd.DataFrame:
    """The paper's Table 1, every row, exactly as printed (with its CNN / transformer section)."""
    rows = []
    for r in TABLE1:
        row: dict[str, Any] = {"Method": r.method, "Section": r.section}
        for column in TABLE1_COLUMNS:
            r1, mAP = r.cell(column)
            row[f"{column} R@1"] = r1 or "-"
            row[f"{column} mAP"] = mAP or "-"
        rows.append(row)
    return pd.DataFrame(rows)


def ablation_variants(config: ProjectConfig) -> dict[int, str]:
    """Table 2 index -> the variant that reproduces that row (``variants.<v>.table2_index``)."""
    return {c.table2_index: v for v, c in sorted(config.variants.items())
            if c.table2_index is not None}


def table2(config: ProjectConfig, df: pd.DataFrame, dataset: str,
           stats: ReportStats | None = None) -> pd.DataFrame:
    """Table 2's columns; the component marks come from each variant's resolved settings.

    With ``stats``, cells carry their intervals and each row its paired difference from the
    baseline row (index 0) on the same seeds and queries (``ΔR@1 vs 0``, ``ΔmAP vs 0``).
    """
    by_index = ablation_variants(config)
    base = by_index.get(0)
    published = {r.index: r for r in TABLE2}
    rows = []
    for index in sorted(set(by_index) | set(published)):
        variant = by_index.get(index)
        row: dict[str, Any] = {"Index": index, "Variant": f"`{variant}`" if variant else "-"}
        if variant is not None:
            spec = config.resolve(dataset, variant, 0)
            marks = (spec.model.embedding_space, spec.loss.orthogonal_weight > 0,
                     spec.loss.margin_head == "hs_arcface")
        else:
            p = published[index]
            marks = (p.embedding_space, p.orthogonal_loss, p.hs_arcface)
        for name, on in zip(("Embedding Space", "Orthogonal Loss", "HS-ArcFace"), marks, strict=True):
            row[name] = "✓" if on else "×"
        cell = cell_rows(df, variant, dataset) if variant else df.iloc[0:0]
        row["R@1 (measured)"] = _measured(cell, "R1", stats, variant or "", dataset)
        row["mAP (measured)"] = _measured(cell, "mAP", stats, variant or "", dataset)
        if stats is not None:
            for m, name in (("R1", "ΔR@1 vs 0"), ("mAP", "ΔmAP vs 0")):
                ci = (stats.versus((variant, cell.train_set.iloc[0], dataset),
                                   (base, cell.train_set.iloc[0], dataset), m)
                      if len(cell) and base and variant != base else None)
                row[name] = ("baseline" if variant == base and len(cell) else fmt_difference(ci))
        row["seeds"] = len(set(cell.seed))
        row["R@1 (paper)"] = published[index].r1 if index in published else "-"
        row["mAP (paper)"] = published[index].mAP if index in published else "-"
        rows.append(row)
    return pd.DataFrame(rows)


def occlusion_gap(config: ProjectConfig, df: pd.DataFrame,
                  stats: ReportStats | None = None) -> pd.DataFrame:
    """Per variant and occluded test set: R1 with the unoccluded twin queries minus R1 with the
    occluded ones (paired by experiment), mean ± std over seeds; and the same for mAP.

    With ``stats`` (per-query results), the displayed cells are instead computed on the occluded
    queries that have a twin, paired query by query, with intervals; ``gap vs baseline`` is the
    paired difference of the per-query R1 gaps from the baseline's (negative: occlusion costs
    this method less). The helper columns the figure reads stay the per-experiment means.
    """
    base = baseline_variant(config)
    rows = []
    twins = df[df.twin]
    for (variant, test_set), tw in twins.groupby(["variant", "test_set"], sort=False):
        occ = df[(~df.twin) & (df.variant == variant) & (df.test_set == test_set)]
        paired = tw.merge(occ, on="experiment", suffixes=("_twin", "_occ"))
        if paired.empty:
            continue
        gap_r1 = list(paired.R1_twin - paired.R1_occ)
        gap_map = list(paired.mAP_twin - paired.mAP_occ)
        kept = [100.0 * o / t for o, t in zip(paired.R1_occ, paired.R1_twin, strict=True) if t > 0]
        rows.append({"Method": variant_label(config, variant), "variant": variant,
                     "Test set": test_set, "R1 occluded": fmt(list(paired.R1_occ)),
                     "R1 twin": fmt(list(paired.R1_twin)), "R1 gap": fmt(gap_r1),
                     "R1 kept (%)": fmt(kept), "mAP gap": fmt(gap_map),
                     "gap_mean": mean_std(gap_r1)[0], "gap_std": mean_std(gap_r1)[1],
                     "occ": mean_std(list(paired.R1_occ))[:2],
                     "twin": mean_std(list(paired.R1_twin))[:2],
                     "kept": mean_std(kept)[0], "seeds": len(paired)})
        train_set = paired.train_set_occ.iloc[0]
        if stats is not None and stats.gap(variant, train_set, test_set, "R1") is not None:
            r1_gap = stats.gap(variant, train_set, test_set, "R1")
            rows[-1].update({
                "R1 occluded": fmt_interval(stats.on_twins(variant, train_set, test_set, "R1", False)),
                "R1 twin": fmt_interval(stats.on_twins(variant, train_set, test_set, "R1", True)),
                "R1 gap": fmt_difference(r1_gap),
                "R1 kept (%)": fmt_interval(stats.kept(variant, train_set, test_set)),
                "mAP gap": fmt_difference(stats.gap(variant, train_set, test_set, "mAP")),
                "R1 gap vs baseline": ("baseline" if variant == base else fmt_difference(
                    stats.gap_versus(variant, base, train_set, test_set, "R1")) if base else "-"),
                "seeds × queries": f"{r1_gap.seeds} × {r1_gap.queries}"})
    return pd.DataFrame(rows)


GAP_HELPER_COLUMNS = ("variant", "gap_mean", "gap_std", "occ", "twin", "kept")
"""Columns of :func:`occlusion_gap` the figure reads and the markdown table leaves out."""


def occlusion_bars(gap: pd.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """:func:`occlusion_gap` as the figure's input: ``{test set: [{variant, occ: (mean, std),
    twin: (mean, std), kept, seeds}]}``, test sets and variants in the profile's order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for _, r in gap.iterrows():
        out.setdefault(r["Test set"], []).append(
            {"variant": r["variant"], "occ": r["occ"], "twin": r["twin"], "kept": r["kept"],
             "seeds": int(r["seeds"])})
    return out


def to_markdown(df: pd.DataFrame, drop: Sequence[str] = ()) -> str:
    """A GitHub markdown table (pandas + tabulate); ``drop`` removes helper columns."""
    if df.empty:
        return "_(no measured results)_"
    # disable_numparse: keep "50.0" as printed (tabulate would reformat it to "50")
    return df.drop(columns=[c for c in drop if c in df.columns]).fillna("-").to_markdown(
        index=False, disable_numparse=True)
