"""A profile small enough to train in seconds on one core, for the train-stage tests."""

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
