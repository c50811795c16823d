"""``python -m pipeline.sweep.report``: ``reports/sweep.md`` and its figures from the sweep's trials.

Reads ``reports/sweep_trials.json`` and, when there, ``reports/sweep_fig6.json`` (both written by
:mod:`pipeline.sweep.search`) and renders, naming the split every number comes from (the validation
identities held out of the sweep's training, with their query/gallery counts; a summary of an older
sweep that scored on the test split says so):

- the paper's Fig. 6: validation R1 and mAP against each knob, one knob at a time around the base
  variant, mean over seeds (``figures/sweep_fig6.png`` and a table, :mod:`pipeline.sweep.grid_report`);
- the TPE samples: mAP against each searched knob, one series per loss family, all knobs moving
  together (``figures/sweep_tpe.png``), plus every trial's mAP curve with the epochs where ASHA
  stopped it (``figures/sweep_asha.png``);
- the Optuna importance of each knob, from a post-hoc study rebuilt from the Ray results;
- the best trials table, and what ASHA saved: trial-epochs spent against running every sampled
  configuration to ``max_epochs``, with the best mAP found.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ddrn.atomic import atomic_write_text
from ddrn.errors import DataError
from pipeline.cli import base_parser, run_stage
from pipeline.params import SearchDim
from pipeline.sweep.grid import GRID_FILE, GridStudy
from pipeline.sweep.grid_report import grid_section, plot_grid, write_png

log = logging.getLogger(__name__)

FAMILY_KNOB = "margin_head"
FAMILY_COLOURS = {"arcface": "tab:blue", "subcenter": "tab:orange", "hs_arcface": "tab:green",
                  "none": "tab:gray"}


def load_trials(path: Path) -> dict[str, Any]:
    """The sweep summary written by :func:`pipeline.sweep.search.run_sweep`."""
    if not path.is_file():
        raise DataError(f"{path}: sweep results not found; expected the output of "
                        "`python -m pipeline.sweep`")
    return json.loads(path.read_text())


def space_of(summary: Mapping[str, Any]) -> dict[str, SearchDim]:
    """The sweep's search space, as typed dimensions."""
    return {k: SearchDim(**{f: (tuple(v) if f == "choices" and v is not None else v)
                            for f, v in dim.items()})
            for k, dim in summary["space"].items()}


def asha_savings(summary: Mapping[str, Any]) -> dict[str, float]:
    """Trial-epochs ASHA spent against every sampled configuration run to ``max_epochs``."""
    trials = summary["trials"]
    spent = sum(int(t["epochs"]) for t in trials)
    full = len(trials) * int(summary["max_epochs"])
    scored = [t["mAP"] for t in trials if t.get("mAP") is not None]
    return {"trials": len(trials), "spent": spent, "full": full,
            "fraction": spent / full if full else math.nan,
            "stopped_early": sum(bool(t["stopped_early"]) for t in trials),
            "errors": sum(t["status"] == "ERROR" for t in trials),
            "best_mAP": max(scored) if scored else math.nan}


def param_importances(summary: Mapping[str, Any]) -> dict[str, float]:
    """Optuna's importance of each knob, from a study rebuilt with the trials' final mAP.

    Like Optuna inside Ray Tune, the study sees ASHA-stopped trials with their truncated value.
    Returns an empty dict when there are too few scored trials for the evaluator.
    """
    import optuna

    from pipeline.sweep.space import knob_distribution

    space = space_of(summary)
    study = optuna.create_study(direction="maximize")
    for t in summary["trials"]:
        if t.get("mAP") is None:
            continue
        params = {k: v for k, v in t["knobs"].items() if k in space}
        dists = {k: knob_distribution(space[k]) for k in params}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists,
                                                  value=float(t["mAP"])))
    if len(study.trials) < 2:
        return {}
    try:
        return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError) as exc:  # e.g. every value identical
        log.warning("parameter importance unavailable: %s", exc)
        return {}


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def plot_tpe(summary: Mapping[str, Any], path: Path) -> Path:
    """The TPE samples: final mAP against each knob, one series per loss family.

    Every knob moves in every trial, so a panel mixes all the others' effects: the one-knob
    reading is the Fig. 6 grid's (:func:`pipeline.sweep.grid_report.plot_grid`).

    Filled markers ran to ``max_epochs`` (comparable); hollow ones were stopped early by ASHA and
    show a truncated mAP. Lines join the full-length trials of a family in knob order.
    """
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    space = space_of(summary)
    knobs = [k for k in space if k != FAMILY_KNOB]
    ncols = min(3, max(1, len(knobs)))
    nrows = max(1, math.ceil(len(knobs) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.3 * nrows), squeeze=False)
    trials = [t for t in summary["trials"] if t.get("mAP") is not None]
    families = _families(summary)
    for ax, knob in zip(axes.flat, knobs, strict=False):
        dim = space[knob]
        categorical = dim.choices is not None and not all(
            isinstance(c, (int, float)) for c in dim.choices)
        labels = [str(c) for c in dim.choices] if categorical else []
        for fi, family in enumerate(families):
            rows = [t for t in trials if knob in t["knobs"] and _family(t, summary) == family]
            colour = FAMILY_COLOURS.get(family)
            # Categorical knobs: one column per value, the families side by side within it.
            shift = (fi - (len(families) - 1) / 2) * 0.12 if categorical else 0.0
            for t in rows:
                ax.scatter([_x(t, knob, labels, shift)], [t["mAP"]], s=28, edgecolors=colour,
                           facecolors="none" if t["stopped_early"] else colour)
            by_x: dict[float, list[float]] = {}
            for t in rows:
                if not t["stopped_early"]:
                    by_x.setdefault(_x(t, knob, labels, shift), []).append(t["mAP"])
            xs = sorted(by_x)  # the curve: mean mAP of the full-length trials at each value
            ax.plot(xs, [sum(by_x[x]) / len(by_x[x]) for x in xs], color=colour, label=family,
                    alpha=0.8)
        if categorical:
            ax.set_xticks(range(len(labels)), labels)
            ax.set_xlim(-0.5, len(labels) - 0.5)
        elif dim.log or (dim.choices and max(dim.choices) / max(min(dim.choices), 1e-9) >= 8):
            ax.set_xscale("log", base=2 if dim.choices else 10)
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(_KNOB_LABELS.get(knob, knob))
        ax.set_ylabel("mAP (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(knobs):]:
        ax.axis("off")
    fig.suptitle(f"TPE samples of {summary['name']}: {split_label(summary)} mAP, all knobs "
                 "moving together (hollow = stopped early by ASHA)", fontsize=10)
    return write_png(fig, path)


def plot_asha(summary: Mapping[str, Any], path: Path) -> Path:
    """Every trial's mAP per epoch: ASHA's rungs show as curves that end early."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    for t in summary["trials"]:
        curve = t.get("curve") or []
        if not curve:
            continue
        colour = FAMILY_COLOURS.get(_family(t, summary))
        ax.plot([p[0] for p in curve], [p[1] for p in curve], marker="o", ms=3, color=colour,
                alpha=0.45 if t["stopped_early"] else 0.95)
    for family in _families(summary):
        ax.plot([], [], color=FAMILY_COLOURS.get(family), label=family)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{split_label(summary)} mAP (%)")
    ax.set_title(f"{len(summary['trials'])} trials, grace {summary['grace_period']}, reduction "
                 f"factor {summary['reduction_factor']}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return write_png(fig, path)


_KNOB_LABELS = {"num_embeddings": "codebook size x", "tau": "Gumbel temperature tau",
                "k": "sub-centres k", "margin": "margin (rad)", "scale": "scale s",
                "sampling": "sampling"}


def _x(trial: Mapping[str, Any], knob: str, labels: Sequence[str], shift: float) -> float:
    """Plot position of ``trial``'s knob: its value, or its column for a categorical knob."""
    value = trial["knobs"][knob]
    return labels.index(str(value)) + shift if labels else float(value)


def _family(trial: Mapping[str, Any], summary: Mapping[str, Any]) -> str:
    return str(trial["knobs"].get(FAMILY_KNOB, summary["base"].get(FAMILY_KNOB, "none")))


def _families(summary: Mapping[str, Any]) -> list[str]:
    return sorted({_family(t, summary) for t in summary["trials"]})


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------


def split_label(summary: Mapping[str, Any]) -> str:
    """Short name of the split the sweep's numbers come from, for figure titles and axes."""
    if summary.get("selection") == "validation":
        return f"validation ({summary['validation']['num_ids']} ids)"
    return f"{summary['train_set']} TEST split"


def split_sentence(summary: Mapping[str, Any]) -> str:
    """Where every number of the report comes from, in words."""
    if summary.get("selection") != "validation":
        return (f"**Every mAP here was measured on `{summary['train_set']}`'s test query/gallery, "
                "the split the paper tables report: the selection saw the test set (a sweep from "
                "before the validation protocol). Re-run the sweep to select on held-out "
                "training identities.**")
    v = summary["validation"]
    return (f"**Every number here is on the validation split, never the test split**: "
            f"{v['num_ids']} identities of `{summary['train_set']}`'s train split held out of the "
            f"sweep's training (`sweep.validation`: fraction {v['fraction']}, seed {v['seed']}), "
            f"{v['num_query']} queries against {v['num_gallery']} gallery images (one query per "
            "camera and identity, each with a cross-camera match"
            + (f"; {v['dropped_queries']} candidates without one stayed in the gallery"
               if v.get("dropped_queries") else "")
            + f"). Trials trained on the other {v['num_train_ids']} identities "
            f"({v['num_train_images']} images); the best configuration was selected on "
            "validation mAP. Its test numbers come from training it in the main pipeline (below).")


def _rerun_note(summary: Mapping[str, Any]) -> str:
    """Why a rerun of the same sweep can list other trials (empty when trials ran one by one)."""
    at_once = summary.get("max_concurrent_trials", 1)
    if at_once <= 1:
        return ""
    # Optuna's TPE suggests from the trials finished so far; with trials running side by side,
    # which finishes first is a matter of timing, not of the seed.
    return (f" With up to {at_once} trials at once, TPE's later samples depend on the order in "
            "which trials finish, so a rerun of this sweep can sample other configurations and "
            "stop other trials; a given configuration and seed trains to the same scores.")


def render_markdown(summary: Mapping[str, Any], importances: Mapping[str, float],
                    figures: Sequence[Path], out_dir: Path, top: int = 5,
                    grid: tuple[GridStudy, Path] | None = None) -> str:
    """The text of ``reports/sweep.md`` (with the Fig. 6 section when ``grid`` = (study, figure))."""
    s = asha_savings(summary)
    lines = [
        f"# Sweep `{summary['name']}`: the Fig. 6 knobs with Ray Tune (Optuna TPE + ASHA, and a "
        "one-knob grid)",
        "",
        split_sentence(summary),
        "",
        f"Profile `{summary['profile']}`, base variant `{summary['base_variant']}` trained on "
        f"`{summary['train_set']}` and scored by {split_label(summary)} mAP after each "
        f"evaluated epoch; {s['trials']} sampled configurations, at most {summary['max_epochs']} "
        f"epochs each, ASHA grace period {summary['grace_period']} and reduction factor "
        f"{summary['reduction_factor']}. Wall time {summary['duration_s']:.0f} s on "
        f"{summary['num_nodes']} Ray node(s).",
        "",
        *(grid_section(grid[0], grid[1], out_dir) if grid else []),
        "## What ASHA saved",
        "",
        f"| | trial-epochs | best {split_label(summary)} mAP (%) |",
        "|---|---:|---:|",
        f"| ASHA (this sweep) | {s['spent']} | {s['best_mAP']:.2f} |",
        f"| every configuration to the end | {s['full']} | not run |",
        "",
        f"ASHA spent {s['spent']} of {s['full']} trial-epochs ({100 * s['fraction']:.0f} %), stopping "
        f"{s['stopped_early']} of {s['trials']} trials early"
        + (f"; {s['errors']} trial(s) ended in error" if s["errors"] else "") + ". "
        "The best mAP of the full budget is not measured: it would need every configuration run "
        "to the end. Trials that ASHA stopped are told to Optuna with their last (truncated) mAP, "
        "which biases TPE towards configurations that learn fast."
        + _rerun_note(summary),
        "",
        "## TPE samples: mAP against each knob (all knobs move together)",
        "",
        "Each TPE trial samples every knob at once, so a panel mixes the other knobs' effects: "
        "read one knob's effect from the Fig. 6 grid" + (" above." if grid else " (not run).") ,
        "",
    ]
    for fig in figures:
        lines += [f"![{fig.stem}]({fig.relative_to(out_dir).as_posix()})", ""]
    lines += ["## Importance of each knob (Optuna, post hoc)", ""]
    if importances:
        lines += ["| knob | importance |", "|---|---:|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in importances.items()]
        lines += ["", "Computed by `optuna.importance.get_param_importances` on a study rebuilt "
                  "from the Ray results (conditional knobs only count the trials where they exist)."]
    else:
        lines += ["Not enough scored trials to estimate importances."]
    lines += ["", f"## Best {top} trials ({split_label(summary)} scores)", "",
              _best_table(summary, top), "",
              f"The best trial that ran to the end is written to `{summary['best_params_file']}` "
              "(next to this report) as a `params.yaml` variant. Train it on all training "
              "identities and report it on the test split with the main pipeline, as a DVC "
              "experiment:", "", "```bash", summary["dvc_command"], "```", "",
              "or paste the variant into `params.yaml`, add it to an experiments group's "
              "`variants` and run `dvc repro`.", ""]
    return "\n".join(lines)


def _best_table(summary: Mapping[str, Any], top: int) -> str:
    space = list(summary["space"])
    rows = sorted((t for t in summary["trials"] if t.get("mAP") is not None),
                  key=lambda t: -t["mAP"])[:top]
    head = ["trial", "mAP (%)", "R1 (%)", "epochs", *space]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in rows:
        knobs = [_fmt(t["knobs"].get(k, "-")) for k in space]
        out.append("| " + " | ".join([t["trial_id"], f"{t['mAP']:.2f}", f"{t.get('R1', math.nan):.2f}",
                                      str(t["epochs"]), *knobs]) + " |")
    return "\n".join(out)


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def write_report(trials_path: Path, out_dir: Path) -> Path:
    """Render ``sweep.md`` and ``figures/sweep_*.png`` under ``out_dir`` (the Fig. 6 section when
    ``sweep_fig6.json`` is there); return the markdown path."""
    summary = load_trials(trials_path)
    figures = [plot_tpe(summary, out_dir / "figures" / "sweep_tpe.png"),
               plot_asha(summary, out_dir / "figures" / "sweep_asha.png")]
    grid = None
    if (out_dir / GRID_FILE).is_file():
        study = GridStudy.load(out_dir / GRID_FILE)
        grid = (study, plot_grid(study, out_dir / "figures" / "sweep_fig6.png"))
    md = render_markdown(summary, param_importances(summary), figures, out_dir, grid=grid)
    return atomic_write_text(out_dir / "sweep.md", md)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: re-render the sweep report from ``reports/sweep_trials.json`` (and
    ``reports/sweep_fig6.json``)."""
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports"),
                        help="report folder holding sweep_trials.json (default: reports)")
    args = parser.parse_args(argv)
    path = write_report(args.out / "sweep_trials.json", args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_stage(main))
