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

from ddrn.config import DatasetConfig
from ddrn.data import read_meta
from ddrn.errors import CheckpointError, DataError
from pipeline.params import ExperimentSpec, ProjectConfig
from pipeline.trial.devices import resolve_device

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


HUB_SOURCES = ("hub", "hf-hub:")
"""``model.pretrained`` values timm resolves itself (its default weights, a Hugging Face id)."""


def pretrained_source(path: str | None, key: str, backbone: str,
                      hub: bool = True) -> dict[str, str]:
    """Where a model's pretrained weights come from: ``{"source": ...}`` plus ``path`` for a file.

    The one check of a ``*pretrained`` setting, shared by every stage that builds a model and by
    the pretrain stage of the ``paper`` profile: ``None`` means random initialisation, ``hub`` /
    ``hf-hub:<id>`` are left to timm (``hub``: the model can fetch them; timm's ViT can, the CNN
    baseline's loader cannot), anything else must be an existing file (not read here).

    Raises:
        CheckpointError: the file is missing (one line naming ``key`` and where to put it).
    """
    if path is None:
        return {"source": "none (random initialisation)"}
    if hub and (path == HUB_SOURCES[0] or path.startswith(HUB_SOURCES[1])):
        return {"source": path}
    if not Path(path).is_file():
        raise CheckpointError(f"{key}: pretrained weights {path} not found; download timm's "
                              f"{backbone} checkpoint and place it at {path} (or set it to null "
                              f"to train from random weights)")
    return {"source": "file", "path": path}


def check_pretrained(spec: ExperimentSpec, config: ProjectConfig) -> None:
    """The pretrained weights the experiment's model loads are where its config says."""
    model = spec.model
    resnet = model.arch == "resnet50"
    key = "resnet_pretrained" if resnet else "pretrained"
    pretrained_source(model.resnet_pretrained if resnet else model.pretrained,
                      f"profiles.{config.profile}.model.{key} (variant {spec.variant})",
                      model.cnn_backbone if resnet else model.backbone, hub=not resnet)


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
