"""The report's "Mechanism health" section: is the Embedding Space used, does HS-ArcFace route?

Reads ``runs/<exp>/history.json`` (per-epoch ``code_perplexity``, ``dead_codes``,
``hs_stop_share_i``, ``hs_marker_win_rate_i``) and ``eval/<exp>/mechanism.json``
(:mod:`pipeline.trial.mechanism`), and returns the section's markdown and one figure. Every sentence of
the text is generated from the numbers it shows, with the thresholds it uses stated.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.params import ExperimentSpec, ProjectConfig
from pipeline.report import figures as figs
from pipeline.report import tables
from pipeline.trial.mechanism import read_mechanism

FIGURE = "figures/mechanism_health.png"
"""The section's figure, under ``reports/``."""

DEGENERATE_SHARE = 0.95
"""Routing counts as degenerate when more than this share of samples stops at one level."""


def _history(runs: Path, name: str) -> list[dict[str, Any]]:
    from pipeline.report.build import load_history  # the report's one history reader

    return load_history(runs / name)


def _mean_std(values: Sequence[float], digits: int = 1) -> str:
    vals = [v for v in values if v == v]  # drop NaN
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{np.mean(vals):.{digits}f} ± {np.std(vals):.{digits}f}"


def _groups(specs: Sequence[ExperimentSpec], keep: Any) -> dict[tuple[str, str], list[ExperimentSpec]]:
    out: dict[tuple[str, str], list[ExperimentSpec]] = {}
    for s in specs:
        if keep(s):
            out.setdefault((s.train_set, s.variant), []).append(s)
    return {k: sorted(v, key=lambda s: s.seed) for k, v in out.items()}


def usage_table(config: ProjectConfig, specs: Sequence[ExperimentSpec],
                paths: Any) -> tuple[pd.DataFrame, list[str]]:
    """One row per Embedding-Space variant and test set (mean ± std over seeds) and the
    generated reading of each row."""
    rows, text = [], []
    for (train_set, variant), group in _groups(specs, lambda s: s.model.embedding_space).items():
        x = group[0].model.num_embeddings
        final = [h[-1] for h in (_history(paths.runs, s.name) for s in group) if h]
        perp = [float(e.get("code_perplexity", np.nan)) for e in final]
        dead = [float(e.get("dead_codes", np.nan)) for e in final]
        records = [r for r in (read_mechanism(paths.eval / s.name) for s in group) if r]
        test_sets = sorted({t for r in records for t in r.test_sets})
        for test_set in test_sets or [""]:
            per = [r.test_sets[test_set] for r in records if test_set in r.test_sets]
            twin = [p["twin"] for p in per if "twin" in p]

            def col(key: str, src: list[dict[str, Any]], scale: float = 1.0,
                    digits: int = 1) -> str:
                return _mean_std([scale * float(p[key]) for p in src if key in p], digits)

            rows.append({
                "variant": tables.variant_label(config, variant), "train": train_set,
                "test": test_set or "–", "x": x, "seeds": len(group),
                "train perplexity": _mean_std(perp), "train dead": _mean_std(dead, 0),
                "test perplexity": col("perplexity", per), "test dead": col("dead_codes", per, 1, 0),
                "token cos": col("token_cosine", per, 1, 2),
                "R1": col("R1", per), "R1 constant code": col("R1_constant", per),
                "occluder-only codes %": col("occluder_codes_unused_by_twins", twin, 100),
                "code = twin's, occluder / clean / chance %": (
                    f"{col('code_agreement_occluder', twin, 100)} / "
                    f"{col('code_agreement_clean', twin, 100)} / "
                    f"{col('chance_agreement', twin, 100)}" if twin else "–"),
                "cos to twin, continuous → quantised": (
                    f"{col('cos_continuous_occluder', twin, 1, 2)} → "
                    f"{col('cos_quantized_occluder', twin, 1, 2)}" if twin else "–"),
            })
            text.append(_reading(variant, train_set, test_set, x, perp, dead, per, twin))
    return pd.DataFrame(rows), text


def _reading(variant: str, train_set: str, test_set: str, x: int, perp: list[float],
             dead: list[float], per: list[dict[str, Any]], twin: list[dict[str, Any]]) -> str:
    """What the numbers of one row show, in words (thresholds stated, nothing inferred)."""
    parts = [f"`{variant}` (trained on `{train_set}`)"]
    if perp:
        healthy = sum(p >= x / 4 and d <= x / 4 for p, d in zip(perp, dead, strict=True))
        parts.append(f"ends training with code perplexity {_mean_std(perp)} of x = {x} and "
                     f"{_mean_std(dead, 0)} dead codes; {healthy}/{len(perp)} seeds meet "
                     f"perplexity ≥ x/4 and ≤ x/4 dead codes")
    if per:
        r1 = float(np.mean([p["R1"] for p in per]))
        r1c = float(np.mean([p["R1_constant"] for p in per]))
        cos = float(np.mean([p["token_cosine"] for p in per]))
        parts.append(f"on `{test_set}` the patch tokens entering the Embedding Space have a mean "
                     f"pairwise cosine of {cos:.2f}; replacing every patch input of block N by "
                     f"one constant code changes R1 from {r1:.1f} to {r1c:.1f} "
                     f"({r1c - r1:+.1f} points)")
    if twin:
        occ = float(np.nanmean([t["occluder_codes_unused_by_twins"] for t in twin])) * 100
        agree = float(np.nanmean([t["code_agreement_occluder"] for t in twin])) * 100
        chance = float(np.mean([t["chance_agreement"] for t in twin])) * 100
        pull = float(np.nanmean([t["twin_pull"] for t in twin]))
        parts.append(f"{occ:.0f}% of occluder patches land on codes no twin patch uses; an "
                     f"occluder patch gets its twin's code {agree:.0f}% of the time (two draws "
                     f"from the twins' code frequencies agree {chance:.0f}% of the time); "
                     f"quantisation changes the cosine to the twin at occluder patches by "
                     f"{pull:+.2f}")
    return ", ".join(parts[:2]) + ("; " + "; ".join(parts[2:]) if len(parts) > 2 else "") + "."


def routing_table(config: ProjectConfig, specs: Sequence[ExperimentSpec],
                  paths: Any) -> tuple[pd.DataFrame, list[str]]:
    """HS-ArcFace routing at the first and the last epoch (mean over seeds) and its reading."""
    rows, text = [], []
    groups = _groups(specs, lambda s: s.loss.margin_head == "hs_arcface" and s.loss.margin_weight > 0)
    for (train_set, variant), group in groups.items():
        hists = [h for h in (_history(paths.runs, s.name) for s in group) if h]
        if not hists or not any(k.startswith("hs_stop_share_") for k in hists[0][-1]):
            continue
        keys = sorted((k for k in hists[0][-1] if k.startswith("hs_")),
                      key=lambda k: (not k.startswith("hs_stop"), int(re.sub(r"\D", "", k))))
        for when, pick in (("first", 0), ("last", -1)):
            row = {"variant": tables.variant_label(config, variant), "train": train_set,
                   "routing": group[0].loss.hs_routing, "epoch": when}
            for k in keys:
                row[k.removeprefix("hs_").replace("_", " ")] = _mean_std(
                    [100 * float(h[pick].get(k, np.nan)) for h in hists])
            rows.append(row)
        last = [max(float(v) for k, v in h[-1].items() if k.startswith("hs_stop_share_"))
                for h in hists]
        degenerate = sum(v > DEGENERATE_SHARE for v in last)
        text.append(f"`{variant}` (trained on `{train_set}`, routing `{group[0].loss.hs_routing}`): "
                    f"at the last epoch the most used level takes {_mean_std([100 * v for v in last])}% "
                    f"of the samples; {degenerate}/{len(last)} seeds are degenerate (> "
                    f"{100 * DEGENERATE_SHARE:.0f}% at one level).")
    return pd.DataFrame(rows), text


def health_figure(specs: Sequence[ExperimentSpec], paths: Any, path: Path) -> Figure:
    """Perplexity and dead codes per epoch, the final test usage histogram (codes sorted by
    use, lowest seed) of every Embedding-Space variant, and HS-ArcFace's largest level share
    per epoch (the dashed line is the degeneracy threshold)."""
    es = _groups(specs, lambda s: s.model.embedding_space)
    hs = _groups(specs, lambda s: s.loss.margin_head == "hs_arcface" and s.loss.margin_weight > 0)
    if not es and not hs:
        return figs.placeholder(path, "Mechanism health", "no Embedding-Space or HS-ArcFace run")
    fig = Figure(figsize=(16, 3.6))
    ax_p, ax_d, ax_h, ax_r = fig.subplots(1, 4)
    for (train_set, variant), group in es.items():
        label = f"{variant} ({train_set})"
        hists = [h for h in (_history(paths.runs, s.name) for s in group) if h]
        for key, ax in (("code_perplexity", ax_p), ("dead_codes", ax_d)):
            series = [[float(e.get(key, np.nan)) for e in h] for h in hists]
            if series:
                n = min(len(s) for s in series)
                arr = np.array([s[:n] for s in series])
                ax.plot(np.arange(1, n + 1), arr.mean(0), label=label)
        rec = next((r for r in (read_mechanism(paths.eval / s.name) for s in group) if r), None)
        if rec and rec.test_sets:
            counts = np.sort(np.array(next(iter(rec.test_sets.values()))["histogram"]))[::-1]
            ax_h.plot(np.arange(1, len(counts) + 1), counts / max(counts.sum(), 1), marker=".",
                      label=label)
    for (train_set, variant), group in hs.items():
        hists = [h for h in (_history(paths.runs, s.name) for s in group) if h]
        series = [[max((float(v) for k, v in e.items() if k.startswith("hs_stop_share_")),
                       default=np.nan) for e in h] for h in hists]
        if series:
            n = min(len(s) for s in series)
            ax_r.plot(np.arange(1, n + 1), 100 * np.array([s[:n] for s in series]).mean(0),
                      label=f"{variant} ({train_set})")
    ax_r.axhline(100 * DEGENERATE_SHARE, color="grey", lw=0.8, ls="--")
    for ax, title, xlabel in ((ax_p, "code perplexity (train epoch)", "epoch"),
                              (ax_d, "dead codes (train epoch)", "epoch"),
                              (ax_h, "test code usage, sorted", "code rank"),
                              (ax_r, "HS-ArcFace: % at its most used level", "epoch")):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    ax_h.set_yscale("log")
    fig.tight_layout()
    return figs._save(fig, path)


def mechanism_section(config: ProjectConfig, specs: Sequence[ExperimentSpec],
                      paths: Any) -> tuple[str, Figure]:
    """The section's markdown and its figure (written to ``paths.out / FIGURE``)."""
    usage, usage_text = usage_table(config, specs, paths)
    routing, routing_text = routing_table(config, specs, paths)
    figure = health_figure(specs, paths, paths.out / FIGURE)
    md = "\n\n".join([
        "## Mechanism health",
        "Is the Embedding Space used, and does HS-ArcFace route? *train* columns: the last "
        "training epoch; *test*: every query and gallery patch token of the test set. *token "
        "cos*: mean pairwise cosine of one image's patch tokens entering the Embedding Space. "
        "*R1 constant code*: R1 with every patch input of block N replaced by the test set's "
        "most used code (no re-ranking in either R1). Occluder patches (on sets with unoccluded "
        "twins): patches at least half covered by the pixels where a query differs from its "
        "twin. *occluder-only codes*: share of occluder patches on codes no twin patch uses.",
        "### Embedding Space", tables.to_markdown(usage),
        *[f"- {t}" for t in usage_text],
        "### HS-ArcFace routing (% of samples; win rate: the marker beats every class at that "
        "level, among the samples that reached it)", tables.to_markdown(routing),
        *[f"- {t}" for t in routing_text],
        f"![mechanism health]({FIGURE})"])
    return md, figure
