"""The report's "What the numbers support": the paper's claims, one line each, judged from the
paired comparisons (:mod:`pipeline.report.stats`), never written by hand.

A claim says that one row beats another (the direction is read from the published numbers). Its
verdict is **supported** when the 95% interval of the measured paired difference lies wholly on
the claimed side of 0, **contradicted** when it lies wholly on the other side, and **cannot
decide** when it contains 0, or when the two rows differ in more than the claim is about.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pandas as pd

from ddrn.evaluation.uncertainty import Interval
from pipeline.params import ProjectConfig
from pipeline.report.published import TABLE2, TABLE2_DATASET, as_float
from pipeline.report.stats import ReportStats, fmt_difference
from pipeline.report.tables import ablation_variants, baseline_variant, cell_rows

SUPPORTED, CONTRADICTED, UNDECIDED = "supported", "contradicted", "cannot decide"


def verdict(ci: Interval | None, direction: int) -> str:
    """``direction`` +1 / -1: the claim is that the difference is positive / negative."""
    if ci is None or direction == 0 or ci.sign == 0:
        return UNDECIDED
    return SUPPORTED if ci.sign == direction else CONTRADICTED


def _line(claim: str, ci: Interval | None, direction: int, paper: str = "",
          note: str = "") -> str:
    v = verdict(ci, direction) if not note else UNDECIDED
    measured = (f"measured {fmt_difference(ci)} on {ci.seeds} seed(s) × {ci.queries} queries"
                if ci is not None else "not measured")
    parts = [p for p in (paper, measured, note) if p]
    return f"- {claim}: **{v}** ({'; '.join(parts)})"


def _train_set(df: pd.DataFrame, variant: str, test_set: str) -> str | None:
    cell = cell_rows(df, variant, test_set)
    return cell.train_set.iloc[0] if len(cell) else None


def table2_claims(config: ProjectConfig, df: pd.DataFrame, stats: ReportStats) -> list[str]:
    """Table 2's order: each measured row vs the previous measured row and vs the baseline, for
    R@1 and mAP, in the direction the paper's numbers have."""
    by_index = ablation_variants(config)
    published = {r.index: r for r in TABLE2}
    measured = [i for i in sorted(by_index) if _train_set(df, by_index[i], TABLE2_DATASET)]
    lines = []
    for pos, index in enumerate(measured[1:], start=1):
        refs = dict.fromkeys([measured[pos - 1], measured[0]])  # previous row, then the baseline
        for ref in refs:
            a, b = by_index[index], by_index[ref]
            ts = _train_set(df, a, TABLE2_DATASET)
            for metric, name in (("R1", "R@1"), ("mAP", "mAP")):
                pa = as_float(getattr(published[index], "r1" if metric == "R1" else "mAP")) \
                    if index in published else None
                pb = as_float(getattr(published[ref], "r1" if metric == "R1" else "mAP")) \
                    if ref in published else None
                if pa is None or pb is None:
                    continue
                direction = (pa > pb) - (pa < pb)
                ci = stats.versus((a, ts, TABLE2_DATASET), (b, ts, TABLE2_DATASET), metric)
                word = "above" if direction > 0 else "below" if direction < 0 else "equal to"
                lines.append(_line(
                    f"Table 2 row {index} (`{a}`) {word} row {ref} (`{b}`) in {name}", ci,
                    direction, paper=f"paper {pa - pb:+.1f} ({pa:.1f} vs {pb:.1f})"))
    return lines


def gap_claims(config: ProjectConfig, df: pd.DataFrame, stats: ReportStats) -> list[str]:
    """Occlusion costs R1 (twin above occluded, per method), and DDRN loses less of it than the
    baseline (per-query gaps, paired)."""
    base = baseline_variant(config)
    ddrn = ablation_variants(config).get(4)
    lines = []
    for (variant, test_set), _ in df[df.twin].groupby(["variant", "test_set"], sort=False):
        ts = _train_set(df, variant, test_set)
        if ts is None:
            continue
        ci = stats.gap(variant, ts, test_set, "R1")
        if ci is not None:
            lines.append(_line(f"occlusion lowers R@1 of `{variant}` on `{test_set}` (twin − "
                               "occluded > 0)", ci, +1))
        if variant == ddrn and base is not None:
            vs = stats.gap_versus(variant, base, ts, test_set, "R1")
            if vs is not None:
                lines.append(_line(f"`{variant}` loses less R@1 to occlusion than `{base}` on "
                                   f"`{test_set}` (gap difference < 0)", vs, -1))
    return lines


def _differences(config: ProjectConfig, a: str, b: str, dataset: str) -> list[str]:
    """Settings (model/loss fields) two variants differ in, besides the margin head."""
    sa, sb = config.resolve(dataset, a, 0), config.resolve(dataset, b, 0)
    out = []
    for section in ("model", "loss"):
        da, db = (dataclasses.asdict(getattr(s, section)) for s in (sa, sb))
        out += [f"{section}.{k}" for k in sorted(da) if da[k] != db.get(k) and k != "margin_head"]
    return out


def head_claims(config: ProjectConfig, df: pd.DataFrame, stats: ReportStats) -> list[str]:
    """HS-ArcFace vs Sub-center: the pairs of measured variants with these heads that share a
    test set, the fewest-confounded pairs first; a pair that differs in more than the head
    cannot decide the claim, whatever its numbers."""
    heads = {v: config.resolve(sorted(config.datasets)[0], v, 0).loss.margin_head
             for v in config.variants if v in set(df.variant)} if config.datasets else {}
    hs = [v for v, h in heads.items() if h == "hs_arcface"]
    sub = [v for v, h in heads.items() if h == "subcenter"]
    claim = "HS-ArcFace above Sub-center in R@1"
    if not hs or not sub:
        return [f"- {claim}: **{UNDECIDED}** (not measured: HS-ArcFace variants {hs or 'none'}, "
                f"Sub-center variants {sub or 'none'})"]
    found = []
    for a in hs:
        for b in sub:
            for test_set in sorted(set(df[(df.variant == a) & ~df.twin].test_set)
                                   & set(df[(df.variant == b) & ~df.twin].test_set)):
                ts_a, ts_b = _train_set(df, a, test_set), _train_set(df, b, test_set)
                if ts_a != ts_b:
                    continue
                found.append((len(_differences(config, a, b, ts_a)), a, b, test_set, ts_a))
    if not found:
        return [f"- {claim}: **{UNDECIDED}** (no test set has both an HS-ArcFace variant "
                f"({', '.join(hs)}) and a Sub-center one ({', '.join(sub)}) from one training set)"]
    fewest = min(f[0] for f in found)
    lines = []
    for _, a, b, test_set, ts in sorted(f for f in found if f[0] == fewest):
        diff = _differences(config, a, b, ts)
        note = f"not like for like: the rows also differ in {', '.join(diff)}" if diff else ""
        ci = stats.versus((a, ts, test_set), (b, ts, test_set), "R1")
        lines.append(_line(f"{claim}: `{a}` vs `{b}` on `{test_set}`", ci, +1, note=note))
    return lines


def claims_section(config: ProjectConfig, df: pd.DataFrame, stats: ReportStats,
                   extra: Sequence[str] = ()) -> str:
    """The markdown section, one line per claim."""
    lines = ["## What the numbers support", "",
             "Generated from the paired comparisons: **supported** = the 95% interval of the "
             "measured difference lies wholly on the paper's side of 0, **contradicted** = wholly "
             "on the other side, **cannot decide** = it contains 0 (or the rows differ in more "
             "than the claim is about).", "", "### Table 2: the order of the components",
             *(table2_claims(config, df, stats) or ["- not measured"]), "",
             "### Occlusion gap", *(gap_claims(config, df, stats) or ["- no per-query results of twin queries"]), "",
             "### HS-ArcFace vs Sub-center", *head_claims(config, df, stats), *extra]
    return "\n".join(lines)
