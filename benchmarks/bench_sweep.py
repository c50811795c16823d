"""What ASHA saves: the same sampled configurations with and without early stopping.

One run, in one Ray session (its start-up timed apart, paid by neither arm), on the demo
profile's sweep exactly as ``python -m pipeline.sweep`` runs it (reused workers, data cached per
worker, MLflow run per trial, validation-only scoring):

1. **ASHA**: the TPE search of params.yaml's demo ``sweep:`` (``num_samples``, ``max_epochs``,
   ``grace_period``, ``reduction_factor``);
2. **full**: every configuration ASHA's search sampled, each run to ``max_epochs`` (ASHA off:
   grace period = ``max_epochs``), so both arms judge the same configurations;
3. **spread**: the full arm's best configuration again with ``--spread-seeds`` other seeds, the
   seed-to-seed spread against which "ASHA found an equally good configuration" is judged.

It prints each arm's trial-epochs, wall time, best validation mAP, the Ray workers it started and
what a trial spent before its first epoch, and the ratios. The trials both arms ran to the end
with the same configuration and seed should score the same (a check that worker reuse and the
data cache change the cost, not the result).

Data: the repository's ``data/packed/<train_set>`` and pretrained backbone (``dvc repro`` makes
them). ``--quick``: a generated tiny set and a 2-block model from scratch with 2 iterations per
epoch, under the same ASHA settings: a smoke test of the mechanism in about two minutes, whose
epochs are too short for its wall-time ratio to say much.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _params(quick: bool, tracking_uri: str, device: str | None) -> dict[str, Any]:
    """The repository's params.yaml, the demo profile shrunk to the sweep's training set."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["profile"] = "demo"
    demo = raw["profiles"]["demo"]
    train_set = demo["sweep"]["train_set"]
    demo["datasets"] = {train_set: demo["datasets"][train_set]}
    demo["experiments"] = {}
    demo["tracking"] = {"experiment_name": "bench-sweep", "tracking_uri": tracking_uri,
                        "log_checkpoints": False}
    demo["ray"] = {**demo.get("ray", {}), "num_cpus": os.cpu_count() or 2, "object_store_mb": 128}
    demo["sweep"]["fig6"] = {"values": {}}
    if device:
        demo["train"]["device"] = device
    if quick:
        demo["datasets"][train_set]["synthetic"].update(
            {"num_train_ids": 16, "num_test_ids": 12, "num_distractor_ids": 0,
             "images_per_id": 6, "num_cameras": 2, "height": 64, "width": 32})
        demo["model"].update({"embed_dim": 48, "depth": 2, "num_heads": 2, "pretrained": None,
                              "num_embeddings": 16})
        demo["train"].update({"batch_size": 16, "iters_per_epoch": 2})
        demo["sweep"]["space"]["num_embeddings"] = {"choices": [8, 16]}
        demo["sweep"]["validation"] = {"fraction": 0.25, "seed": 0}
    elif demo["model"].get("pretrained"):
        demo["model"]["pretrained"] = str(ROOT / demo["model"]["pretrained"])
    return raw


def _prepare(work: Path, quick: bool, device: str | None) -> tuple[Path, Path]:
    """Write the params; return them and the packed-data folder (generated for ``--quick``)."""
    from ddrn.data import generate_synthetic, load_dataset, pack_dataset
    from pipeline.params import load_config
    from pipeline.preflight import pack_source

    params = work / "params.yaml"
    params.write_text(yaml.safe_dump(_params(quick, f"sqlite:///{work / 'mlflow.db'}", device)))
    config = load_config(params)
    name = config.sweep.train_set
    if not quick:
        return params, ROOT / "data" / "packed"  # checked by run_sweep, in one line
    generate_synthetic(name, config.datasets[name].synthetic, work / "raw" / name)
    pack_dataset(load_dataset(name, work / "raw" / name, log_table=False),
                 work / "packed" / name, config.input.height, config.input.width, progress=False,
                 source=pack_source(config.datasets[name]))
    return params, work / "packed"


@dataclasses.dataclass(frozen=True)
class Arm:
    """One sweep of the benchmark, as measured."""

    name: str
    seconds: float
    trials: list[dict[str, Any]]
    best: dict[str, Any]
    exact: dict[str, dict[str, Any]]
    """trial id -> the knobs it trained with, unrounded (Tune's ``params.json``; the trial
    records round floats to 6 digits, and a rerun must train the very same values)."""

    @property
    def trial_epochs(self) -> int:
        return sum(t["epochs"] for t in self.trials)

    @property
    def workers(self) -> int:
        return len({t["pid"] for t in self.trials if t.get("pid") is not None})

    def setup_s(self) -> tuple[float, float]:
        """Median and largest in-trial set-up time (seconds before the first epoch)."""
        times = [t["setup_s"] for t in self.trials if t.get("setup_s") is not None]
        return (statistics.median(times), max(times)) if times else (float("nan"),) * 2


def _run(name: str, config: Any, work: Path, data_root: Path,
         points: Sequence[dict[str, Any]] | None = None) -> Arm:
    from pipeline.sweep.search import run_sweep

    t0 = time.perf_counter()
    outcome = run_sweep(config, work, data_root=data_root, out_dir=work / name,
                        storage_path=str(work / "ray"), points_to_evaluate=points, fig6=False)
    seconds = time.perf_counter() - t0
    summary = json.loads(outcome.trials_path.read_text())
    exact = {}
    for trial in summary["trials"]:
        found = list(Path(summary["experiment_path"]).glob(f"*_{trial['trial_id']}_*/params.json"))
        exact[trial["trial_id"]] = (json.loads(found[0].read_text()) if len(found) == 1
                                    else trial["knobs"])
    return Arm(name, seconds, summary["trials"], outcome.best, exact)


def _variant(config: Any, **sweep_changes: Any) -> Any:
    """``config`` with its sweep section changed (a new name keeps the Tune folders apart)."""
    sweep = dataclasses.replace(config.sweep, **sweep_changes)
    return dataclasses.replace(config, cfg=dataclasses.replace(config.cfg, sweep=sweep))


def _rungs(grace: int, rf: int, max_t: int) -> list[int]:
    rungs, t = [], grace
    while t < max_t:
        rungs.append(t)
        t *= rf
    return rungs


def main(argv: Sequence[str] | None = None) -> None:
    """Print ASHA's trial-epochs, wall time and best mAP against every configuration to the end."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a generated tiny set and model, 2 iterations per epoch")
    parser.add_argument("--num-samples", type=int, default=None,
                        help="configurations to sample (default: the demo's sweep.num_samples)")
    parser.add_argument("--spread-seeds", type=int, default=2,
                        help="extra seeds of the full arm's best configuration (default 2)")
    parser.add_argument("--device", default=None, help="train.device of the trials")
    parser.add_argument("--save", type=Path, default=None,
                        help="also write the measurements (every trial of both arms) as JSON here")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    from mlflow import MlflowClient

    from pipeline.params import load_config
    from pipeline.trial.tune import ray_session

    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        work = Path(tmp)
        params, data_root = _prepare(work, args.quick, args.device)
        config = load_config(params)
        if args.num_samples:
            config = _variant(config, num_samples=args.num_samples)
        sweep = config.sweep
        max_epochs = sweep.max_epochs or config.train.epochs
        MlflowClient(f"sqlite:///{work / 'mlflow.db'}").search_experiments()  # DB set up, untimed
        import optuna  # noqa: F401  (the driver's imports are paid before either arm, too)
        from ray.tune.search.optuna import OptunaSearch  # noqa: F401
        t0 = time.perf_counter()
        with ray_session(config.ray):
            ray_start = time.perf_counter() - t0
            asha = _run("asha", config, work, data_root)
            configs = [asha.exact[t["trial_id"]] for t in asha.trials]
            full = _run("full", _variant(config, name=f"{sweep.name}-full", grace_period=max_epochs,
                                         num_samples=len(configs)), work, data_root, configs)
            spread = [full.best.get("mAP")]
            for k in range(1, args.spread_seeds + 1):
                arm = _run(f"seed{k}", _variant(config, name=f"{sweep.name}-seed{k}",
                                                seed=sweep.seed + k, grace_period=max_epochs,
                                                num_samples=1),
                           work, data_root, [full.exact[full.best["trial_id"]]])
                spread.append(arm.best.get("mAP"))

    results = {"ray_start_s": ray_start, "spread": spread,
               "arms": [dataclasses.asdict(a) for a in (asha, full)]}
    if args.save:
        args.save.write_text(json.dumps(results, indent=1, default=str) + "\n")
    report(config, asha, full, spread, ray_start)


def report(config: Any, asha: Arm, full: Arm, spread: Sequence[float | None],
           ray_start: float) -> None:
    """Print the comparison (``spread``: the full arm's best mAP, then its extra seeds')."""
    sweep = config.sweep
    max_epochs = sweep.max_epochs or config.train.epochs
    rungs = _rungs(sweep.grace_period, sweep.reduction_factor, max_epochs)
    print(f"{len(asha.trials)} configurations sampled by TPE (seed {sweep.seed}), <= {max_epochs} "
          f"epochs each; ASHA grace period {sweep.grace_period}, reduction factor "
          f"{sweep.reduction_factor} (rungs at epochs {', '.join(map(str, rungs))}); "
          f"{config.ray.cpus_per_trial:g} CPU per trial, <= {sweep.max_concurrent_trials} at once, "
          f"{os.cpu_count()} CPUs; Ray start-up {ray_start:.1f} s (in neither arm)")
    print(f"{'':5s} {'trial-epochs':>12s} {'wall s':>8s} {'best val mAP':>13s} {'workers':>8s} "
          f"{'set-up s (median / max)':>24s}")
    for arm in (asha, full):
        med, top = arm.setup_s()
        print(f"{arm.name:5s} {arm.trial_epochs:12d} {arm.seconds:8.1f} "
              f"{arm.best.get('mAP', float('nan')):12.2f} % {arm.workers:8d} "
              f"{med:13.2f} / {top:.2f}")
    e_ratio, w_ratio = asha.trial_epochs / full.trial_epochs, asha.seconds / full.seconds
    print(f"ratio ASHA / full: trial-epochs {e_ratio:.2f} ({1 / e_ratio:.1f}x fewer), wall time "
          f"{w_ratio:.2f} ({1 / w_ratio:.1f}x less)")
    same = asha.best.get("knobs") == full.best.get("knobs")
    diff = asha.best.get("mAP", float("nan")) - full.best.get("mAP", float("nan"))
    scores = [s for s in spread if s is not None]
    sd = statistics.stdev(scores) if len(scores) > 1 else float("nan")
    seeds = ", ".join(str(sweep.seed + k) for k in range(len(spread)))
    print(f"seed spread of the full arm's best configuration (seeds {seeds}): mAP "
          f"{', '.join(f'{s:.2f}' for s in scores)}; std {sd:.2f}, range "
          f"{max(scores) - min(scores):.2f} points")
    print(f"best mAP ASHA - full: {diff:+.2f} points "
          f"({'within' if abs(diff) <= sd else 'outside'} one seed std); ASHA's best configuration "
          f"{'is' if same else 'is not'} the full arm's best")
    ended = {json.dumps(asha.exact[t["trial_id"]], sort_keys=True): t["mAP"]
             for t in asha.trials if t["epochs"] >= max_epochs and t["mAP"] is not None}
    pairs = [(m, t["mAP"]) for t in full.trials
             if (m := ended.get(json.dumps(full.exact[t["trial_id"]], sort_keys=True))) is not None]
    if pairs:
        print(f"{len(pairs)} configurations ran to the end in both arms: largest mAP difference "
              f"{max(abs(a - b) for a, b in pairs):.4f} points (same seed: should be 0)")



if __name__ == "__main__":
    main()
