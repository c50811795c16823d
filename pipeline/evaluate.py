"""The ``evaluate`` stage: metrics of trained experiments on their test sets.

``python -m pipeline.evaluate [--experiment NAME]`` evaluates one experiment (repeatable) or every
experiment of the profile: ``eval/<exp>/<test_set>.npz`` (features, rankings and per-query
results for the report; per query: :func:`pipeline.trial.scoring.evaluate_experiment`) and ``metrics/<exp>.json`` (R1/R5/R10/mAP/mINP in percent, per test set and ``<set>/twin``), and
logs the metrics into the experiment's MLflow training run when tracking is on (plus an
``evaluate`` parent run per invocation holding the metrics files as artifacts).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from ddrn.atomic import atomic_write_text
from pipeline.cli import base_parser, load_params, run_stage
from pipeline.params import ExperimentSpec, ProjectConfig
from pipeline.preflight import check_experiments
from pipeline.trial.devices import resolve_device
from pipeline.trial.experiment import PACKED_ROOT
from pipeline.trial.scoring import evaluate_experiment, load_trained_model

log = logging.getLogger(__name__)


def evaluate(config: ProjectConfig, specs: Sequence[ExperimentSpec], runs_dir: Path,
             eval_dir: Path, metrics_dir: Path, packed_root: Path = PACKED_ROOT,
             track: bool = True, allow_partial: bool = False) -> list[dict[str, Any]]:
    """Evaluate ``specs``; writes the eval files and ``metrics/<exp>.json``, returns the docs.

    Only finished runs are evaluated unless ``allow_partial`` (then an unfinished run's last
    checkpoint is, and its metrics document says ``"partial": true``).
    """
    check_experiments(config, specs, packed_root, train=False, test=True)
    docs = []
    for spec in specs:
        trained = load_trained_model(config, spec, runs_dir / spec.name, packed_root,
                                     resolve_device(spec.train.device), allow_partial)
        doc = evaluate_experiment(config, spec, runs_dir / spec.name, eval_dir / spec.name,
                                  packed_root, allow_partial, trained)
        write_metrics(metrics_dir / f"{spec.name}.json", doc)
        docs.append(doc)
        if track:
            from pipeline.tracking.runs import log_evaluation

            log_evaluation(config.tracking, Path.cwd(), doc)
            _log_model(config, spec, trained[0], packed_root)
    return docs


def _log_model(config: ProjectConfig, spec: ExperimentSpec, model: nn.Module,
               packed_root: Path) -> None:
    """The trained model as an MLflow Model in its training run (input example: two queries)."""
    import numpy as np

    from ddrn.data import open_packed
    from pipeline.tracking.models import log_trained_model

    query = open_packed(packed_root / spec.test_sets[0]).splits["query"]
    log_trained_model(config, spec, model, np.asarray(query.images[:2]), Path.cwd())


def write_metrics(path: Path, doc: dict[str, Any]) -> None:
    """Write a metrics document atomically."""
    atomic_write_text(path, json.dumps(doc, indent=2, sort_keys=True) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--experiment", action="append", default=None, metavar="NAME",
                        help="evaluate only this experiment (repeatable); default: every one")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--eval-dir", type=Path, default=Path("eval"))
    parser.add_argument("--metrics-dir", type=Path, default=Path("metrics"))
    parser.add_argument("--packed-root", type=Path, default=PACKED_ROOT)
    parser.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    parser.add_argument("--allow-partial", action="store_true",
                        help="also evaluate unfinished runs (their last checkpoint); their metrics "
                             "are marked partial")
    args: argparse.Namespace = parser.parse_args(argv)
    config = load_params(args)
    specs = ([config.experiment(n) for n in args.experiment] if args.experiment
             else config.experiments_list())
    if args.no_tracking:
        docs = evaluate(config, specs, args.runs_dir, args.eval_dir, args.metrics_dir,
                        args.packed_root, track=False, allow_partial=args.allow_partial)
    else:
        from pipeline.tracking.runs import stage_run

        with stage_run(config.tracking, Path.cwd(), "evaluate", config.profile) as run:
            docs = evaluate(config, specs, args.runs_dir, args.eval_dir, args.metrics_dir,
                            args.packed_root, track=run is not None,
                            allow_partial=args.allow_partial)
            if run is not None:
                run.log_params({"experiments": len(specs)})
                for doc in docs:
                    run.log_artifact(args.metrics_dir / f"{doc['experiment']}.json", "metrics")
                # The test set most experiments are scored on (Table 2's) first: the view sorts by it.
                counts = Counter(t for s in config.experiments_list() for t in s.test_sets)
                test_sets = sorted(counts, key=lambda t: (-counts[t], t))
                log.info("MLflow: results table at <tracking server>/%s",
                         run.publish_results_view(test_sets))
    # Each result was logged once as it was computed (pipeline.trial.scoring); not printed again,
    # except the mark a partial (unfinished) evaluation must carry on the console too.
    for doc in docs:
        if doc.get("partial"):
            print(f"{doc['experiment']}  PARTIAL (epoch {doc['epochs_trained']} of {doc['epochs']})")
    log.info("evaluate: %d experiments, metrics in %s", len(docs), args.metrics_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_stage(main))
