"""Pre-flight: everything that can be checked before training, checked before Ray starts.

The train stage, the evaluate stage and the sweep call :func:`check_experiments` once, in the
driver, before any trial. A problem that needs no training to find (missing pretrained weights,
a pack made at another input size or from another dataset config, an empty split, a CUDA device
that is not there) is then one line with exit code 2 in seconds, instead of a traceback inside
every Ray trial, retried ``max_failures`` times. (Config rules across fields are checked even
earlier, when ``params.yaml`` is read: :mod:`ddrn.config`.)

A pack records what it was made from (``meta.json["source"]``, written by the preprocess stage):
the fingerprint of the dataset's config (:func:`dataset_fingerprint`). A pack whose source does
not match the profile's dataset config, e.g. the demo's synthetic pack under the ``paper``
profile, is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ddrn.config import DatasetConfig, ExperimentSpec, ProjectConfig
from ddrn.data import read_meta
from ddrn.errors import CheckpointError, DataError
from pipeline.devices import resolve_device

TRAIN_SPLITS = ("train",)
TEST_SPLITS = ("query", "gallery")


def dataset_fingerprint(dataset: DatasetConfig) -> str:
    """A short hash of a dataset's config (source, checksum, synthetic sizes)."""
    blob = json.dumps(dataclasses.asdict(dataset), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def pack_source(dataset: DatasetConfig) -> dict[str, Any]:
    """What the preprocess stage records in ``meta.json["source"]``."""
    return {"dataset_fingerprint": dataset_fingerprint(dataset), "source": dataset.source}


def check_pack(config: ProjectConfig, name: str, packed_root: Path,
               splits: Iterable[str]) -> dict[str, Any]:
    """Check ``<packed_root>/<name>`` against the profile and return its ``meta.json``.

    Raises:
        DataError: missing/unreadable pack, other input size, other dataset config, or one of
            ``splits`` missing or empty.
    """
    directory = packed_root / name
    redo = f"re-run `dvc repro preprocess@{name}` (or `python -m pipeline.preprocess --dataset " \
           f"{name}`)"
    if not (directory / "meta.json").is_file():
        raise DataError(f"{directory}: packed dataset not found; expected the output of "
                        f"the preprocess stage; {redo}")
    meta = read_meta(directory)
    size = (int(meta["height"]), int(meta["width"]))
    want = (config.input.height, config.input.width)
    if size != want:
        raise DataError(f"{directory}: packed at {size[0]}x{size[1]} but profiles.{config.profile}"
                        f".input is {want[0]}x{want[1]}; {redo}")
    dataset = config.datasets.get(name)
    found = (meta.get("source") or {}).get("dataset_fingerprint")
    if dataset is not None and found != dataset_fingerprint(dataset):
        what = "of unknown origin" if found is None else "made from another dataset config"
        raise DataError(f"{directory}: pack {what} (source {meta.get('source', {}).get('source')!r})"
                        f"; expected profiles.{config.profile}.datasets.{name} (source "
                        f"{dataset.source!r}); {redo}")
    for split in splits:
        n = meta["splits"].get(split)
        if not n:
            raise DataError(f"{directory}: split {split!r} is {'missing' if n is None else 'empty'}"
                            f"; expected at least one image (check data/raw/{name}); {redo}")
    return meta


def check_pretrained(spec: ExperimentSpec, config: ProjectConfig) -> None:
    """The pretrained weight file the experiment's model loads exists (not read here)."""
    model = spec.model
    key, path = (("resnet_pretrained", model.resnet_pretrained)
                 if model.arch == "resnet50" else ("pretrained", model.pretrained))
    if path is not None and not Path(path).is_file():
        raise CheckpointError(f"profiles.{config.profile}.model.{key} (variant {spec.variant}): "
                              f"pretrained weights file {path} not found; download it and place "
                              f"it there (or set {key}: null to train from scratch)")


def check_experiments(config: ProjectConfig, specs: Sequence[ExperimentSpec], packed_root: Path,
                      train: bool = True, test: bool = False) -> None:
    """Everything ``specs`` need before training (``train``) and/or evaluation (``test``).

    Raises:
        DDRNError: the first problem, in one line.
    """
    for spec in specs:  # building the model reads the pretrained file, for evaluation too
        resolve_device(spec.train.device)
        check_pretrained(spec, config)
    if train:
        for name in sorted({s.train_set for s in specs}):
            check_pack(config, name, packed_root, TRAIN_SPLITS)
    if test:
        test_sets = {t for s in specs for t in s.test_sets}
        for name in sorted(test_sets | {s.train_set for s in specs}):
            # The training set's pack is read for its class and camera counts.
            check_pack(config, name, packed_root, TEST_SPLITS if name in test_sets else ())
