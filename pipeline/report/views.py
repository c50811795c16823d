"""What DVC shows of the report: comparison curves for ``dvc plots show`` and the headline
numbers for ``dvc metrics show``.

Both are shaped for DVC's own views rather than for machines:

- ``reports/curves/<quantity>.csv`` holds one *comparable* quantity of every experiment in long
  form (``epoch, <quantity>, experiment, variant, seed, train_set``), so ``dvc plots show`` draws
  one chart per quantity with every variant on it (template ``.dvc/plots/by_variant.json``: colour
  = variant, dash = seed, one panel per training set). Total loss is not among them: its terms
  differ between variants, so comparing totals compares different objectives.
- ``reports/metrics/<test_set>/<variant>.json`` holds the headline numbers of one variant on one
  test set (mean over seeds, rounded), so ``dvc metrics show`` is a narrow table with one row
  per (test set, variant); the per-experiment details stay in ``metrics/<exp>.json``.

Only values that are the same on every run of unchanged code are written (no wall times, no
throughput): these files are committed and a reproduce must leave git clean.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ddrn.atomic import atomic_path, atomic_write_text
from pipeline.params import ExperimentSpec

CURVES: dict[str, str] = {
    "id_loss": "loss/id",
    "triplet_loss": "loss/triplet",
    "code_perplexity": "code_perplexity",
    "dead_codes": "dead_codes",
}
"""Curve file stem -> the history key it plots (keys every variant that has it logs alike)."""

CURVE_TITLES: dict[str, str] = {
    "id_loss": "ID (cross-entropy) loss per epoch",
    "triplet_loss": "Triplet loss per epoch",
    "code_perplexity": "Embedding Space code perplexity per epoch",
    "dead_codes": "Embedding Space codes unused per epoch",
}
"""Chart titles; ``dvc.yaml``'s ``plots:`` repeats them (a test keeps both in step)."""


def write_curves(histories: Mapping[ExperimentSpec, Sequence[Mapping[str, Any]]],
                 out_dir: Path) -> dict[str, Path]:
    """Write ``<out_dir>/<quantity>.csv`` for every quantity of :data:`CURVES` some run logged.

    Args:
        histories: each experiment's ``history.json`` entries.
        out_dir: ``reports/curves``; stale CSVs in it are removed first.

    Returns:
        quantity -> written path.
    """
    if out_dir.is_dir():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    written = {}
    for stem, key in CURVES.items():
        rows = []
        for spec, history in histories.items():
            for i, entry in enumerate(history):
                value = entry.get(key)
                if isinstance(value, (int, float)) and math.isfinite(value):
                    rows.append([int(entry.get("epoch", i + 1)), f"{value:.6g}", spec.name,
                                 spec.variant, spec.seed, spec.train_set])
        if not rows:
            continue
        path = out_dir / f"{stem}.csv"
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["epoch", stem, "experiment", "variant", "seed", "train_set"])
            w.writerows(rows)
        written[stem] = path
    return written


def summary_rows(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Headline numbers per (test set, variant): R1/mAP/mINP mean over the seeds of the
    experiments trained on that test set's own training set (else on any, for the test-only
    sets), plus, for sets with unoccluded twins, twin R1 and the share of it kept under
    occlusion (``100 · R1 occluded / R1 twin``)."""
    rows = []
    plain = df[~df.twin]
    for (test_set, variant), cell in plain.groupby(["test_set", "variant"], sort=True):
        own = cell[cell.train_set == test_set]
        cell = own if not own.empty else cell
        row: dict[str, Any] = {"test_set": test_set, "variant": variant,
                               "R1": _mean(cell.R1), "mAP": _mean(cell.mAP),
                               "mINP": _mean(cell.mINP), "seeds": int(cell.seed.nunique())}
        twin = df[df.twin & df.experiment.isin(cell.experiment) & (df.test_set == test_set)]
        if not twin.empty:
            paired = twin.merge(cell, on="experiment", suffixes=("_twin", ""))
            row["R1_twin"] = _mean(paired.R1_twin)
            kept = [100.0 * o / t for o, t in zip(paired.R1, paired.R1_twin, strict=True) if t > 0]
            row["R1_kept_pct"] = _mean(pd.Series(kept, dtype=float))
        rows.append(row)
    return rows


def write_summary(df: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Write ``<out_dir>/<test_set>/<variant>.json`` (see :func:`summary_rows`)."""
    if out_dir.is_dir():
        shutil.rmtree(out_dir)
    written = []
    for row in summary_rows(df):
        doc = {k: v for k, v in row.items() if k not in ("test_set", "variant")}
        path = out_dir / row["test_set"] / f"{row['variant']}.json"
        written.append(atomic_write_text(path, json.dumps(doc, indent=1, sort_keys=False) + "\n"))
    return written


def _mean(values: pd.Series) -> float | None:
    vals = [float(v) for v in values if v == v]
    # Two decimals: the view is for reading; the exact values stay in metrics/<exp>.json.
    return round(sum(vals) / len(vals), 2) if vals else None
