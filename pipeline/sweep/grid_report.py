"""The Fig. 6 grid in ``reports/sweep.md``: one panel per knob and a table, on the validation split.

Reads :class:`~pipeline.sweep.grid.GridStudy` (``reports/sweep_fig6.json``). Each knob's panel
shows validation R1 and mAP against the knob's values, the mean over seeds with every seed's
point and the min-max range, the base variant's value marked; the base point is the same trials
in every panel. Categorical knobs (loss family, sampling) are grouped bars.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from ddrn.atomic import atomic_path
from pipeline.sweep.grid import GridStudy


def write_png(fig: Any, path: Path) -> Path:
    """Lay out, save (110 dpi) and close a pyplot figure of the sweep report; returns ``path``."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:  # a failed save leaves the previous figure, not half a PNG
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path

METRICS = (("R1", "tab:blue"), ("mAP", "tab:orange"))
"""What each panel plots (validation, percent), and in which colour."""

KNOB_LABELS = {"num_embeddings": "codebook size x", "tau": "Gumbel temperature tau",
               "k": "sub-centres k", "margin_head": "loss family", "sampling": "sampling",
               "margin": "margin (rad)", "scale": "scale s"}


@dataclasses.dataclass(frozen=True)
class Cell:
    """One value of one knob: the scored seeds' validation scores (percent)."""

    value: Any
    default: bool
    seeds: tuple[int, ...]
    R1: tuple[float, ...]
    mAP: tuple[float, ...]
    failed: int

    def mean(self, metric: str) -> float:
        xs = getattr(self, metric)
        return sum(xs) / len(xs) if xs else math.nan

    def spread(self, metric: str) -> float:
        """Half the min-max range over seeds (0 for one seed)."""
        xs = getattr(self, metric)
        return (max(xs) - min(xs)) / 2 if xs else math.nan


def is_categorical(values: list[Any]) -> bool:
    return any(isinstance(v, (str, bool)) for v in values)


def knob_cells(study: GridStudy) -> dict[str, list[Cell]]:
    """Per knob, one :class:`Cell` per value: the listed values plus the base's (numeric knobs in
    increasing order, categorical ones as listed); the base's cell holds the shared base trials."""
    base_runs = [p for p in study.points if p.knob is None]
    cells: dict[str, list[Cell]] = {}
    for knob, listed in study.values.items():
        default = study.base[knob]
        values = list(listed) + ([] if default in listed else [default])
        if not is_categorical(values):
            values = sorted(values)
        row = []
        for value in values:
            runs = base_runs if value == default else [
                p for p in study.points if p.knob == knob and p.value == value]
            ok = sorted((p for p in runs if p.scored), key=lambda p: p.seed)
            row.append(Cell(value, value == default, tuple(p.seed for p in ok),
                            tuple(float(p.R1) for p in ok), tuple(float(p.mAP) for p in ok),
                            len(runs) - len(ok)))
        cells[knob] = row
    return cells


def plot_grid(study: GridStudy, path: Path) -> Path:
    """The Fig. 6 panels of ``study`` (a note instead when the grid did not run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = knob_cells(study)
    if not cells:
        fig, ax = plt.subplots(figsize=(5.0, 1.6))
        ax.axis("off")
        ax.text(0.5, 0.5, "Fig. 6 grid not run: sweep.fig6.values is empty", ha="center",
                va="center")
    else:
        ncols = min(3, len(cells))
        nrows = math.ceil(len(cells) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(4.3 * ncols, 3.4 * nrows), squeeze=False)
        for ax, (knob, row) in zip(axes.flat, cells.items(), strict=False):
            if is_categorical([c.value for c in row]):
                _bars(ax, row)
            else:
                _lines(ax, row)
            ax.set_xlabel(KNOB_LABELS.get(knob, knob))
            ax.set_ylabel("validation score (%)")
            ax.grid(alpha=0.3, axis="y")
        for ax in list(axes.flat)[len(cells):]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=7, loc="best")
        v = study.validation
        fig.suptitle(
            f"Fig. 6: one knob at a time around {study.base_variant} (others at their defaults)"
            f"\nVALIDATION split: {v['num_ids']} held-out training ids of {study.train_set}, "
            f"{study.epochs} epochs; mean of {len(study.seeds)} seed(s), dots = seeds, "
            "bars = min-max", fontsize=9)
    return write_png(fig, path)


def _lines(ax: Any, row: list[Cell]) -> None:
    """A numeric knob: mean per value, min-max error bars, each seed a dot, the default marked."""
    import matplotlib.ticker

    xs = [float(c.value) for c in row]
    for i, (metric, colour) in enumerate(METRICS):
        means = [c.mean(metric) for c in row]
        lo = [m - min(getattr(c, metric), default=m) for m, c in zip(means, row, strict=True)]
        hi = [max(getattr(c, metric), default=m) - m for m, c in zip(means, row, strict=True)]
        ax.errorbar(xs, means, yerr=[lo, hi], color=colour, marker="o", ms=5, capsize=3,
                    label=f"{metric} (mean)")
        for x, c in zip(xs, row, strict=True):
            ax.scatter([x] * len(getattr(c, metric)), getattr(c, metric), s=12, color=colour,
                       alpha=0.45, zorder=3, label="seeds" if (i, x) == (0, xs[0]) else None)
    if _geometric(xs):
        ax.set_xscale("log", base=2 if all(x.is_integer() for x in xs) else 10)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks(xs, [_tick(c) for c in row])
    ax.margins(x=0.08)
    default = next(c for c in row if c.default)
    ax.axvline(float(default.value), color="0.4", ls="--", lw=1, zorder=0)
    _mark_failures(ax, xs, row)


def _geometric(xs: list[float]) -> bool:
    """Log axis for values spread over a decade or in a constant ratio (16, 32, 64)."""
    if len(xs) < 2 or min(xs) <= 0:
        return False
    ratios = [b / a for a, b in zip(xs, xs[1:], strict=False)]
    return max(xs) / min(xs) >= 8 or (len(xs) > 2 and max(ratios) - min(ratios) < 1e-6)


def _bars(ax: Any, row: list[Cell]) -> None:
    """A categorical knob: R1 and mAP bars side by side per value, min-max and each seed shown."""
    width = 0.38
    for i, (metric, colour) in enumerate(METRICS):
        offset = (i - 0.5) * width
        for x, c in enumerate(row):
            scores = getattr(c, metric)
            if not scores:
                continue
            mean = c.mean(metric)
            ax.bar(x + offset, mean, width * 0.95, color=colour, alpha=0.75,
                   edgecolor="black" if c.default else colour, linewidth=1.5 if c.default else 0,
                   yerr=[[mean - min(scores)], [max(scores) - mean]], capsize=3,
                   label=f"{metric} (mean)" if x == 0 else None)
            ax.scatter([x + offset] * len(scores), scores, s=12, color="black", alpha=0.6,
                       zorder=3)
    ax.set_xticks(range(len(row)), [_tick(c) for c in row])
    ax.set_xlim(-0.6, len(row) - 0.4)
    _mark_failures(ax, list(range(len(row))), row)


def _tick(cell: Cell) -> str:
    value = f"{cell.value:g}" if isinstance(cell.value, float) else str(cell.value)
    return f"{value}\n(default)" if cell.default else value


def _mark_failures(ax: Any, xs: list[float], row: list[Cell]) -> None:
    for x, c in zip(xs, row, strict=True):
        if c.failed:
            ax.annotate(f"{c.failed} failed", (x, 0), xycoords=("data", "axes fraction"),
                        xytext=(0, 3), textcoords="offset points", ha="center", fontsize=7,
                        color="tab:red")


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------


def grid_section(study: GridStudy, figure: Path, out_dir: Path) -> list[str]:
    """The lines of ``sweep.md``'s section "Fig. 6: one knob at a time (validation split)"."""
    head = ["## Fig. 6: one knob at a time (validation split)", ""]
    if not study.points:
        return head + ["Not run: `sweep.fig6.values` is empty in this profile.", ""]
    v = study.validation
    configs = len({(p.knob, str(p.value)) for p in study.points})
    trials = len(study.points)
    lines = head + [
        f"**Every number in this section is on the validation split, never the test split**: "
        f"{v['num_ids']} identities of `{study.train_set}`'s train split held out "
        f"(`sweep.validation`: fraction {v['fraction']}, seed {v['seed']}), {v['num_query']} "
        f"queries against {v['num_gallery']} gallery images; every configuration trained on the "
        f"other {v['num_train_ids']} identities.",
        "",
        f"Around the base variant `{study.base_variant}` (defaults: "
        + ", ".join(f"{k} = {_fmt(x)}" for k, x in study.base.items())
        + "), each knob takes each of its values while the others stay at their defaults, as in "
        f"the paper's Fig. 6. {configs} configurations (the default one shared by every knob) x "
        f"{len(study.seeds)} seed(s) {_fmt_list(study.seeds)} = {trials} Ray Tune trials of "
        f"{study.epochs} epochs each, no early stopping ({sum(p.epochs for p in study.points)} "
        f"trial-epochs, {study.duration_s:.0f} s on {study.num_nodes} Ray node(s)). Unlike the TPE "
        "search below, where every knob moves at once, each row here changes one knob.",
        "",
        f"![sweep_fig6]({figure.relative_to(out_dir).as_posix()})",
        "",
        "| knob | value | validation R1 (%) | validation mAP (%) | seeds |",
        "|---|---|---:|---:|---|",
    ]
    for knob, row in knob_cells(study).items():
        for c in row:
            value = _fmt(c.value) + (" (default)" if c.default else "")
            seeds = (_fmt_list(c.seeds) if c.seeds else "none scored") + (
                f", {c.failed} failed" if c.failed else "")
            lines.append(f"| {knob} | {value} | {_pm(c, 'R1')} | {_pm(c, 'mAP')} | {seeds} |")
    lines += ["", "R1 and mAP: mean over the scored seeds ± half their min-max range. The default "
              "rows of all knobs are the same trials."]
    errors = [p for p in study.points if not p.scored]
    if errors:
        lines += ["", f"{len(errors)} grid trial(s) failed; the first ({errors[0].knob} = "
                  f"{_fmt(errors[0].value)}, seed {errors[0].seed}): {errors[0].error}"]
    return lines + [""]


def _pm(cell: Cell, metric: str) -> str:
    if not getattr(cell, metric):
        return "-"
    return f"{cell.mean(metric):.2f} ± {cell.spread(metric):.2f}"


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _fmt_list(xs: Any) -> str:
    return "[" + ", ".join(_fmt(x) for x in xs) + "]"

