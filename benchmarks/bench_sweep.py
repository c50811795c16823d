"""What ASHA saves: the same sampled configurations with and without early stopping.

Runs the sweep of the ``demo`` profile (Optuna TPE + ASHA) on a freshly generated synthetic set,
then reruns exactly the configurations it sampled with ASHA disabled (grace period = max epochs),
and prints the trial-epochs each spent and the best mAP each found. The reference is the second
run, measured in the same process: ``ratio = ASHA trial-epochs / full trial-epochs``.

``--quick`` shrinks the data, the model and the budget (6 trials of 3 epochs) to about two
minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _params(quick: bool, tracking_uri: str) -> dict[str, Any]:
    """The repository's params.yaml, the demo profile shrunk to the sweep's training set."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    demo = raw["profiles"]["demo"]
    train_set = demo["sweep"]["train_set"]
    demo["datasets"] = {train_set: demo["datasets"][train_set]}
    demo["experiments"] = {}
    demo["tracking"] = {"experiment_name": "bench-sweep", "tracking_uri": tracking_uri,
                        "log_checkpoints": False}
    demo["ray"] = {**demo.get("ray", {}), "num_cpus": os.cpu_count() or 2, "object_store_mb": 128}
    if quick:
        demo["datasets"][train_set]["synthetic"].update(
            {"num_train_ids": 12, "num_test_ids": 12, "num_distractor_ids": 0,
             "images_per_id": 6, "num_cameras": 2, "height": 64, "width": 32})
        demo["model"].update({"embed_dim": 48, "depth": 2, "num_heads": 2})
        demo["train"].update({"batch_size": 16, "iters_per_epoch": 4, "warmup_epochs": 1})
        demo["sweep"].update({"num_samples": 6, "max_epochs": 3, "grace_period": 1})
    return raw


def _prepare(work: Path, quick: bool) -> Path:
    from ddrn.config import load_config
    from ddrn.data import generate_synthetic, load_dataset, pack_dataset
    from pipeline.preflight import pack_source

    params = work / "params.yaml"
    params.write_text(yaml.safe_dump(_params(quick, f"sqlite:///{work / 'mlflow.db'}")))
    config = load_config(params)
    name = config.sweep.train_set
    generate_synthetic(name, config.datasets[name].synthetic, work / "raw" / name)
    pack_dataset(load_dataset(name, work / "raw" / name, log_table=False),
                 work / "packed" / name, config.input.height, config.input.width, progress=False,
                 source=pack_source(config.datasets[name]))
    return params


def main(argv: Sequence[str] | None = None) -> None:
    """Print ASHA's trial-epochs and best mAP against running every configuration to the end."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 small trials of 3 epochs")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    from ddrn.config import load_config
    from pipeline.sweep import run_sweep

    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        work = Path(tmp)
        config = load_config(_prepare(work, args.quick))
        sweep = config.sweep
        t0 = time.perf_counter()
        asha = run_sweep(config, work, data_root=work / "packed", out_dir=work / "asha",
                         storage_path=str(work / "ray"), fig6=False)
        t_asha = time.perf_counter() - t0
        summary = yaml.safe_load((work / "asha" / "sweep_trials.json").read_text())
        configs = [t["knobs"] for t in summary["trials"]]
        max_epochs = summary["max_epochs"]
        full_cfg = dataclasses.replace(config, cfg=dataclasses.replace(config.cfg, sweep=(
            dataclasses.replace(sweep, name=f"{sweep.name}-full", grace_period=max_epochs,
                                num_samples=len(configs)))))
        t0 = time.perf_counter()
        full = run_sweep(full_cfg, work, data_root=work / "packed", out_dir=work / "full",
                         storage_path=str(work / "ray"), points_to_evaluate=configs, fig6=False)
        t_full = time.perf_counter() - t0
        full_summary = yaml.safe_load((work / "full" / "sweep_trials.json").read_text())

    spent = sum(t["epochs"] for t in summary["trials"])
    full_epochs = sum(t["epochs"] for t in full_summary["trials"])
    print(f"{len(configs)} sampled configurations, at most {max_epochs} epochs each")
    print(f"ASHA : {spent:4d} trial-epochs, {t_asha:6.1f} s, best mAP {asha.best.get('mAP'):.2f} %")
    print(f"full : {full_epochs:4d} trial-epochs, {t_full:6.1f} s, best mAP "
          f"{full.best.get('mAP'):.2f} %")
    print(f"ratio (ASHA / full): trial-epochs {spent / full_epochs:.2f}, wall time "
          f"{t_asha / t_full:.2f}; best mAP difference "
          f"{asha.best.get('mAP') - full.best.get('mAP'):+.2f} points")


if __name__ == "__main__":
    main()
