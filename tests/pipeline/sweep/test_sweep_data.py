"""A sweep worker's data cache: one read per pack and split, a new one when the pack changes."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from ddrn.data import load_dataset, pack_dataset
from pipeline.params import load_config
from pipeline.preflight import pack_source
from pipeline.sweep.data import SweepDataCache, store_fingerprint
from pipeline.sweep.space import apply_knobs
from pipeline.sweep.trial import prepare_trial, validation_split
from pipeline.trial.experiment import prepare_training


def _store(project: Path) -> Path:
    return project / "data" / "packed" / "occluded_duke"


def test_the_same_pack_and_split_give_the_same_object(project: Path) -> None:
    config = load_config(project / "params.yaml")
    split = validation_split(config, project / "data" / "packed")
    cache = SweepDataCache()
    first = cache.get(_store(project), split)
    # A relative spelling of the same folder is the same store.
    again = cache.get(Path(os.path.relpath(_store(project))), split)
    assert again is first and cache.misses == 1 and len(cache) == 1
    assert first.num_classes == len(split.train_ids)
    assert len(first.train) == len(split.train) and len(first.query) == len(split.query)
    assert set(first.train.pids.tolist()) == set(range(first.num_classes))  # renumbered


def test_another_pack_changed_meta_or_a_repack_give_a_new_object(project: Path,
                                                                 tmp_path: Path) -> None:
    config = load_config(project / "params.yaml")
    split = validation_split(config, project / "data" / "packed")
    copy = tmp_path / "occluded_duke"
    shutil.copytree(_store(project), copy)
    cache = SweepDataCache(max_entries=8)
    original = cache.get(_store(project), split)
    other = cache.get(copy, split)
    assert other is not original and cache.misses == 2

    before = store_fingerprint(copy)
    meta = json.loads((copy / "meta.json").read_text())
    (copy / "meta.json").write_text(json.dumps({**meta, "note": "edited"}))
    assert store_fingerprint(copy) != before
    edited = cache.get(copy, split)
    assert edited is not other and cache.misses == 3

    # The preprocess stage rewrites the folder: same meta.json text, new files.
    raw = project / "data" / "raw" / "occluded_duke"
    pack_dataset(load_dataset("occluded_duke", raw, log_table=False), copy, config.input.height,
                 config.input.width, progress=False,
                 source=pack_source(config.datasets["occluded_duke"]))
    repacked = cache.get(copy, split)
    assert repacked is not edited and cache.misses == 4
    assert np.array_equal(repacked.train.images, original.train.images)  # same data, new read
    assert cache.get(_store(project), split) is original  # the first entry is still there


def test_another_validation_split_gives_a_new_object(project: Path) -> None:
    config = load_config(project / "params.yaml")
    split = validation_split(config, project / "data" / "packed")
    other = dataclasses.replace(split, train=split.train[:-1])
    cache = SweepDataCache()
    assert cache.get(_store(project), split) is not cache.get(_store(project), other)


def test_the_cache_keeps_at_most_max_entries(project: Path, tmp_path: Path) -> None:
    config = load_config(project / "params.yaml")
    split = validation_split(config, project / "data" / "packed")
    stores = []
    for i in range(3):
        stores.append(tmp_path / f"copy{i}")
        shutil.copytree(_store(project), stores[-1])
    cache = SweepDataCache(max_entries=2)
    first = cache.get(stores[0], split)
    cache.get(stores[1], split)
    cache.get(stores[2], split)
    assert len(cache) == 2
    assert cache.get(stores[0], split) is not first  # dropped, read again


def test_a_cached_trial_starts_exactly_like_the_train_stage(project: Path) -> None:
    """Two trials of one worker share the data, and each builds the model, criterion and batches
    that prepare_training builds for the same rows: the cache changes the cost, not the trial."""
    config = load_config(project / "params.yaml")
    data_root = project / "data" / "packed"
    split = validation_split(config, data_root)
    spec = apply_knobs(config, {}, "probe")
    cache = SweepDataCache()
    one = prepare_trial(config, spec, data_root, split, cache=cache)
    two = prepare_trial(config, spec, data_root, split, cache=cache)
    reference = prepare_training(config, spec, data_root, train_rows=split.train)
    assert cache.misses == 1 and one.setup.loader.split is two.setup.loader.split
    for trial in (one, two):
        state, ref = trial.setup.model.state_dict(), reference.model.state_dict()
        assert state.keys() == ref.keys()
        assert all(torch.equal(state[k], ref[k]) for k in ref)
        images, pids, camids = next(iter(trial.setup.loader))
        ref_images, ref_pids, ref_camids = next(iter(reference.loader))
        reference.loader.set_epoch(0)
        assert torch.equal(images, ref_images) and torch.equal(pids, ref_pids)
        assert torch.equal(camids, ref_camids)
    assert one.setup.model is not two.setup.model  # each trial trains its own model
