"""The report's figures, drawn with matplotlib from plain arrays (no file reading here).

Figures are built with :class:`matplotlib.figure.Figure` directly (no ``pyplot``), so nothing
touches matplotlib's global state or needs a display. Each function saves a PNG and returns the
figure (the report also logs it to MLflow). When the profile has no data for a figure, a figure
saying so is written instead, so the stage's outputs always exist.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ddrn.atomic import atomic_path

DPI = 110

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939", "#843c39", "#7b4173")
"""matplotlib's tab10, then four dark tab20b shades so that more than ten variants stay apart;
written out because ``.dvc/plots/by_variant.json`` uses the same colours."""


def variant_colours(variants: Sequence[str]) -> dict[str, str]:
    """One colour per variant, by its position in ``params.yaml`` ``variants``: the same colour in
    every figure and in ``dvc plots show`` (matplotlib's colour cycle restarts per panel, so a
    variant changed colour between panels)."""
    return {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(variants)}


def _save(fig: Figure, path: Path) -> Figure:
    with atomic_path(path) as tmp:  # a failed save leaves the previous figure, not half a PNG
        fig.savefig(tmp, format=path.suffix.lstrip("."), dpi=DPI, bbox_inches="tight")
    return fig


def placeholder(path: Path, title: str, reason: str) -> Figure:
    """A figure that says why the real one could not be drawn."""
    fig = Figure(figsize=(6, 2))
    ax = fig.subplots()
    ax.axis("off")
    ax.set_title(title)
    ax.text(0.5, 0.5, reason, ha="center", va="center", wrap=True)
    return _save(fig, path)


def training_curves(curves: Mapping[str, Mapping[str, Sequence[Sequence[float]]]],
                    path: Path, colours: Mapping[str, str] | None = None,
                    labels: Mapping[str, str] | None = None, ylabel: str = "loss") -> Figure:
    """One comparable training quantity per epoch: one panel per experiment group, one line per
    variant (same colour in every panel).

    Args:
        curves: ``{group: {variant: [value per epoch, one list per seed]}}``; the line is the
            mean over seeds, the band its min..max.
        colours: variant -> colour (:func:`variant_colours`).
        labels: variant -> legend label.
        ylabel: what the curves are.
    """
    if not curves:
        return placeholder(path, "Training curves", "no training history found")
    fig = Figure(figsize=(5 * len(curves), 3.6))
    axes = np.atleast_1d(fig.subplots(1, len(curves)))
    for ax, (group, by_variant) in zip(axes, curves.items(), strict=True):
        for variant, seeds in by_variant.items():
            n = min(len(s) for s in seeds)
            arr = np.array([s[:n] for s in seeds], dtype=float)  # (seeds, epochs)
            epochs = np.arange(1, n + 1)
            colour = (colours or {}).get(variant)
            ax.plot(epochs, arr.mean(0), label=(labels or {}).get(variant, variant), color=colour)
            if len(arr) > 1:
                ax.fill_between(epochs, arr.min(0), arr.max(0), alpha=0.2, color=colour)
        ax.set_title(group)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def occlusion_gap(bars: Mapping[str, Sequence[Mapping]], path: Path,
                  colours: Mapping[str, str] | None = None) -> Figure:
    """Absolute R1 with the occluded query (solid) and its unoccluded twin (hatched) side by
    side per variant, one panel per test set, each pair labelled with the share of twin R1 kept
    (``100 · R1 occluded / R1 twin``). A bare gap misleads: a model that is weak on the twins has
    little to lose. Error bars (sample std over seeds) only where there are several seeds.

    Args:
        bars: ``{test set: [{"variant", "occ": (mean, std), "twin": (mean, std), "kept",
            "seeds"}]}`` (:func:`pipeline.report.tables.occlusion_bars`).
        colours: variant -> colour (:func:`variant_colours`).
    """
    if not bars:
        return placeholder(path, "Occlusion gap", "no test set with unoccluded twin queries")
    widest = max(len(rows) for rows in bars.values())
    fig = Figure(figsize=(max(5.0, 1.3 * widest + 1.5) * len(bars), 4.2))
    axes = np.atleast_1d(fig.subplots(1, len(bars)))
    for ax, (test_set, rows) in zip(axes, bars.items(), strict=True):
        x = np.arange(len(rows))
        for i, r in enumerate(rows):
            colour = (colours or {}).get(r["variant"], "tab:gray")
            several = r["seeds"] > 1
            for dx, key, hatch in ((-0.2, "occ", None), (0.2, "twin", "//")):
                mean, std = r[key]
                ax.bar(i + dx, mean, width=0.4, color=colour, alpha=1.0 if key == "occ" else 0.45,
                       hatch=hatch, edgecolor="black", linewidth=0.5,
                       yerr=std if several else None, capsize=3)
            top = max(r["occ"][0] + (r["occ"][1] if several else 0),
                      r["twin"][0] + (r["twin"][1] if several else 0))
            ax.text(i, top + 1.5, f"{r['kept']:.0f} % kept", ha="center", fontsize=8)
        ax.set_xticks(x, [f"{r['variant']}\n({r['seeds']} seed{'s' * (r['seeds'] > 1)})"
                          for r in rows], fontsize=8)
        ax.set_ylim(0, 110)
        ax.set_ylabel("R1 (%)")
        ax.set_title(f"{test_set}: R1 occluded (solid) vs unoccluded twin (hatched)", fontsize=9)
    fig.suptitle("Occlusion: absolute R1 and the share of twin R1 kept under occlusion")
    fig.tight_layout()
    return _save(fig, path)


def pairwise_cosine_distance(codebook: np.ndarray) -> np.ndarray:
    """1 - cos between every pair of distinct code vectors: (x, D) -> (x (x - 1) / 2,)."""
    unit = codebook / np.clip(np.linalg.norm(codebook, axis=1, keepdims=True), 1e-12, None)
    cos = unit @ unit.T  # (x, x)
    upper = np.triu_indices(len(codebook), k=1)
    return 1.0 - cos[upper]


def codebook_cosine(codebooks: Mapping[str, Sequence[np.ndarray]], path: Path) -> Figure:
    """Fig. 3: the distribution of cosine distances between code vectors (Gaussian KDE).

    Args:
        codebooks: ``{label: [codebook (x, D) per seed]}``; the distances of all seeds are pooled.
    """
    from scipy.stats import gaussian_kde

    if not codebooks:
        return placeholder(path, "Fig. 3: codebook cosine distances",
                           "no trained model with an Embedding Space in this profile")
    fig = Figure(figsize=(6, 3.8))
    ax = fig.subplots()
    dists = {label: np.concatenate([pairwise_cosine_distance(np.asarray(b, dtype=np.float64))
                                    for b in books]) for label, books in codebooks.items()}
    lo = min(float(d.min()) for d in dists.values())
    hi = max(float(d.max()) for d in dists.values())
    pad = max(0.05, 0.15 * (hi - lo))
    grid = np.linspace(max(0.0, lo - pad), min(2.0, hi + pad), 600)
    for i, (label, dist) in enumerate(dists.items()):
        color = f"C{i}"  # axvline and plot would otherwise both take the cycle's first colour
        if dist.std() < 1e-4:  # (near-)constant, e.g. exactly orthonormal codes: no density
            ax.axvline(float(dist.mean()), color=color, label=f"{label} (all ≈ {dist.mean():.3f})")
            continue
        ax.plot(grid, gaussian_kde(dist)(grid), color=color,
                label=f"{label} (mean {dist.mean():.3f}, std {dist.std():.3f})")
    ax.set_xlabel("cosine distance between code vectors (1 − cos)")
    ax.set_ylabel("density")
    ax.set_title("Fig. 3: Embedding Space code vectors, with vs without the orthogonal loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def tsne(panels: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]], path: Path,
         seed: int = 0) -> Figure:
    """Fig. 7: t-SNE of features, one panel per model, coloured by identity; queries are stars
    with a black edge, gallery images dots.

    Args:
        panels: ``{label: (features (N, D), pids (N,), is_query (N,) bool)}``.
    """
    from sklearn.manifold import TSNE

    if not panels:
        return placeholder(path, "Fig. 7: t-SNE", "no evaluated baseline / DDRN pair")
    fig = Figure(figsize=(5 * len(panels), 4.6))
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (label, (feats, pids, is_query)) in zip(axes, panels.items(), strict=True):
        perplexity = float(max(2.0, min(30.0, (len(feats) - 1) / 3)))
        emb = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
            np.asarray(feats, dtype=np.float32))
        ids = sorted(set(pids.tolist()))
        colours = [_colour(i, len(ids)) for i in range(len(ids))]
        for colour, pid in zip(colours, ids, strict=True):
            sel = (pids == pid) & ~is_query
            ax.scatter(emb[sel, 0], emb[sel, 1], s=14, color=colour, label=str(pid))
            sel = (pids == pid) & is_query
            ax.scatter(emb[sel, 0], emb[sel, 1], s=70, color=colour, marker="*",
                       edgecolors="black", linewidths=0.6)
        ax.set_title(label)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"Fig. 7: t-SNE of test features, {len(ids)} identities (colour = identity; "
                 "★ query, ● gallery; distractors left out)")
    fig.tight_layout()
    return _save(fig, path)


def _colour(i: int, n: int) -> tuple[float, float, float, float]:
    from matplotlib import colormaps

    return colormaps["tab20"](i % 20) if n <= 20 else colormaps["hsv"](i / n)


def retrievals(rows: Sequence[tuple[np.ndarray, Mapping[str, tuple[Sequence[np.ndarray],
                                                                  Sequence[bool]]]]],
               path: Path) -> Figure:
    """Fig. 1: each query with the top-k gallery images of every model, green = correct id.

    Args:
        rows: one per query: ``(query image (H, W, 3) uint8, {model label: (top-k images,
            top-k correct flags)})``.
    """
    if not rows:
        return placeholder(path, "Fig. 1: retrievals", "no evaluated baseline / DDRN pair")
    models = list(rows[0][1])
    k = max(len(rows[0][1][m][0]) for m in models)
    ncols = 1 + len(models) * k
    fig = Figure(figsize=(0.9 * ncols + 0.4, 1.9 * len(rows)))
    axes = np.atleast_2d(fig.subplots(len(rows), ncols)).reshape(len(rows), ncols)
    for r, (query, by_model) in enumerate(rows):
        _show(axes[r, 0], query, "black", "query" if r == 0 else None)
        for m, model in enumerate(models):
            images, correct = by_model[model]
            for j in range(k):
                ax = axes[r, 1 + m * k + j]
                if j < len(images):
                    title = f"{model}\nrank {j + 1}" if (r == 0 and j == 0) else None
                    _show(ax, images[j], "tab:green" if correct[j] else "tab:red", title)
                else:
                    ax.axis("off")
    fig.suptitle("Fig. 1: query (left) and top-k retrievals; green = same identity, red = wrong")
    fig.tight_layout()
    return _save(fig, path)


def _show(ax: object, image: np.ndarray, colour: str, title: str | None) -> None:
    ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(4)
    if title:
        ax.set_title(title, fontsize=7)
