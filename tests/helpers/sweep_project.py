"""A tiny project for the sweep tests: params.yaml with a 2-epoch sweep profile and packed data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from tiny_project import pack_synthetic

ROOT = Path(__file__).resolve().parents[2]


def tiny_params(tracking_uri: str, *, num_samples: int = 4, max_epochs: int = 2,
                grace_period: int = 1, num_cpus: int = 2,
                fig6: dict[str, Any] | None = None) -> dict[str, Any]:
    """The repository's params.yaml with a ``tiny`` profile: one small synthetic set, a 2-block
    ViT on 32x16 images, 2 iterations per epoch, and a sweep over every Fig. 6 knob that selects
    on 2 held-out training identities. ``fig6`` is its ``sweep.fig6`` section (default: no
    grid)."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["profiles"]["tiny"] = {
        "seed": 0,
        "datasets": {"occluded_duke": {"source": "synthetic", "synthetic": {
            "num_train_ids": 8, "num_test_ids": 6, "num_distractor_ids": 0, "images_per_id": 4,
            "num_cameras": 2, "height": 32, "width": 16, "seed": 3}}},
        "input": {"height": 32, "width": 16, "padding": 2},
        "model": {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 8, "stride": 8,
                  "drop_path": 0.0, "num_embeddings": 16},
        "train": {"epochs": max_epochs, "batch_size": 8, "num_instances": 2, "warmup_epochs": 0,
                  "iters_per_epoch": 2, "device": "cpu", "lr": 0.01},
        "evaluation": {"batch_size": 64},
        "ray": {"cpus_per_trial": 1, "gpus_per_trial": 0.5, "max_concurrent_trials": 2,
                "max_failures": 2, "num_cpus": num_cpus, "object_store_mb": 100},
        "tracking": {"experiment_name": "sweep-test", "tracking_uri": tracking_uri,
                     "log_checkpoints": False},
        "sweep": {
            "name": "tiny", "train_set": "occluded_duke", "base_variant": "ddrn",
            "num_samples": num_samples, "max_concurrent_trials": 2, "max_epochs": max_epochs,
            "grace_period": grace_period, "reduction_factor": 2, "seed": 0,
            # 2 of the 8 training ids held out for selection; P = 4 ids per batch from the rest.
            "validation": {"fraction": 0.25, "seed": 0},
            "space": {
                "margin_head": {"choices": ["arcface", "subcenter", "hs_arcface"]},
                "sampling": {"choices": ["default", "gumbel"]},
                "num_embeddings": {"choices": [8, 16]},
                "tau": {"low": 0.05, "high": 2.0, "log": True},
                "k": {"low": 1, "high": 3, "integer": True},
                "margin": {"low": 0.1, "high": 0.5},
                "scale": {"low": 10.0, "high": 40.0},
            },
            "fig6": {"values": {}} if fig6 is None else fig6,
        },
    }
    raw["profile"] = "tiny"
    return raw


def write_tiny_project(root: Path, tracking_uri: str, **kwargs: Any) -> Path:
    """Write ``root/params.yaml`` and pack the tiny dataset into ``root/data/packed``; return the
    params path."""
    from pipeline.params import load_config

    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params(tracking_uri, **kwargs), sort_keys=False))
    config = load_config(params)
    pack_synthetic(config, root / "data")
    return params
