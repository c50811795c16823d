"""Profiles small enough to train in seconds on one core, and the packed set they train on."""

from pathlib import Path

from packed_splits import pack_synthetic_set

TINY_SYN = {"num_train_ids": 4, "num_test_ids": 4, "num_distractor_ids": 0, "images_per_id": 4,
            "num_cameras": 2, "height": 32, "width": 16}


def tiny_params(epochs: int = 2) -> dict:
    """A profile small enough to train in seconds on one core."""
    return {"profile": "tiny", "variants": {
        "vit_baseline": {"table2_index": 0},
        "ddrn": {"table2_index": 4, "model": {"embedding_space": True},
                 "loss": {"orthogonal_weight": 1.0, "margin_head": "hs_arcface"}}},
        "profiles": {"tiny": {
            "datasets": {"occluded_duke": {"synthetic": {**TINY_SYN, "seed": 1}}},
            "input": {"height": 32, "width": 16, "padding": 2},
            "model": {"embed_dim": 16, "depth": 2, "num_heads": 2, "patch_size": 8, "stride": 8,
                      "num_embeddings": 8, "drop_path": 0.0},
            "train": {"epochs": epochs, "batch_size": 8, "num_instances": 2, "warmup_epochs": 0,
                      "device": "cpu", "iters_per_epoch": 2},
            "experiments": {"ablation": {"train_set": "occluded_duke",
                                         "test_sets": ["occluded_duke"],
                                         "variants": ["vit_baseline", "ddrn"], "seeds": [0]}},
            "ray": {"cpus_per_trial": 1, "max_concurrent_trials": 2, "max_failures": 1},
            "tracking": {"experiment_name": "tiny"}}}}


SCRATCH_SYN = {"num_train_ids": 6, "num_test_ids": 5, "num_distractor_ids": 1, "images_per_id": 4,
               "num_cameras": 2, "height": 32, "width": 16, "seed": 3}
DDRN_VARIANT = {"model": {"embedding_space": True},
                "loss": {"orthogonal_weight": 1.0, "margin_head": "hs_arcface"}}


def scratch_params(variants: dict, *, stride: int = 8, epochs: int = 2, iters_per_epoch: int = 2,
                   loss: dict | None = None) -> dict:
    """A one-experiment profile (the ``ablation`` group over ``variants`` on a synthetic
    Occluded-Duke, seed 0) for tests that train and evaluate in-process, without Ray."""
    profile = {
        "seed": 0,
        "datasets": {"occluded_duke": {"source": "synthetic", "synthetic": SCRATCH_SYN}},
        "input": {"height": 32, "width": 16, "padding": 2},
        "model": {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 8, "stride": stride,
                  "drop_path": 0.0, "num_embeddings": 8},
        "train": {"epochs": epochs, "batch_size": 8, "num_instances": 4, "lr": 0.01,
                  "warmup_epochs": 1, "iters_per_epoch": iters_per_epoch, "device": "cpu"},
        "evaluation": {"batch_size": 16},
        "tracking": {"enabled": False},
        "experiments": {"ablation": {"train_set": "occluded_duke", "test_sets": ["occluded_duke"],
                                     "variants": list(variants), "seeds": [0]}},
    }
    if loss is not None:
        profile["loss"] = loss
    return {"profile": "tiny", "variants": variants, "profiles": {"tiny": profile}}


def pack_synthetic(config, root: Path, name: str = "occluded_duke") -> Path:
    """``name``'s synthetic set of the profile ``config`` under ``root/raw/<name>``, packed at the
    profile's input size into ``root/packed/<name>`` (returned)."""
    from pipeline.preflight import pack_source

    dataset = config.datasets[name]
    return pack_synthetic_set(name, dataset.synthetic, root / "raw" / name, root / "packed" / name,
                              config.input.height, config.input.width, pack_source(dataset))


def five_synthetic_sets(train_test_ids: dict[str, tuple[int, int]]) -> dict[str, dict]:
    """Per-dataset synthetic overrides for the five sets, one seed each: the three training sets
    get the given (train, test) identity counts (Market and Duke holistic: no occluded queries);
    Occluded-REID and Partial-REID are test-only (1 train id, 3 test ids, no distractors)."""
    sets = {name: {"num_train_ids": train, "num_test_ids": test}
            for name, (train, test) in train_test_ids.items()}
    for holistic in ("market1501", "dukemtmc"):
        sets[holistic]["query_occlusion"] = 0.0
    for test_only in ("occluded_reid", "partial_reid"):
        sets[test_only] = {"num_train_ids": 1, "num_test_ids": 3, "num_distractor_ids": 0}
    order = ("occluded_duke", "market1501", "dukemtmc", "occluded_reid", "partial_reid")
    return {name: {**sets[name], "seed": seed} for seed, name in enumerate(order, start=1)}
