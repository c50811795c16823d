"""One experiment's training, built from the config: the wiring between the library and a trial.

Used by the train stage (one Ray Tune trial per experiment), the pretrain stage, the sweep's
trials and the tests: :func:`train_experiment` writes
``runs/<exp>/{checkpoints/last.pt, history.json, model.pt}`` (``done.json`` is the caller's, see
:mod:`pipeline.trial.rundir`). Scoring a trained model is :mod:`pipeline.trial.scoring`'s: this module is part
of the training code digest (:mod:`ddrn.code_digest`), so what is here decides the weights and
nothing else, and an edit to the evaluation never retrains.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ddrn.data import PackedDataset, TrainLoader, make_train_loader, open_packed, select_rows
from ddrn.engine import TrainResult, fit
from ddrn.engine.provenance import provenance, save_weights
from ddrn.engine.trainer import EpochCallback
from ddrn.losses import build_criterion
from ddrn.models import build_model
from pipeline.params import ExperimentSpec, ProjectConfig
from pipeline.trial.devices import resolve_device

PACKED_ROOT = Path("data") / "packed"


def build_experiment_model(config: ProjectConfig, spec: ExperimentSpec, num_classes: int,
                           num_cameras: int) -> nn.Module:
    """The experiment's model, initialised from its seed."""
    torch.manual_seed(spec.seed)
    return build_model(spec.model, num_classes, num_cameras,
                       input_size=(config.input.height, config.input.width))


@dataclass(frozen=True)
class TrainingSetup:
    """Everything :func:`~ddrn.engine.fit` needs for one experiment, built from the config."""

    packed: PackedDataset
    device: torch.device
    model: nn.Module
    criterion: nn.Module
    loader: TrainLoader


def prepare_training(config: ProjectConfig, spec: ExperimentSpec,
                     packed_root: str | Path = PACKED_ROOT,
                     train_rows: np.ndarray | None = None) -> TrainingSetup:
    """Open ``<packed_root>/<train_set>`` and build the seeded model, criterion and loader.

    Shared by :func:`train_experiment` and the sweep's trials, which need the model for their
    per-epoch scoring callback before training starts.

    Args:
        train_rows: train on these rows of the train split only (the sweep's training
            identities, :func:`ddrn.data.split_validation`); their identities are renumbered and
            the classifier is sized for them. ``None``: the whole train split.
    """
    packed = open_packed(Path(packed_root) / spec.train_set)
    split, num_classes = packed.splits["train"], packed.num_classes
    if train_rows is not None:
        split = select_rows(split, train_rows, relabel=True)
        num_classes = len(np.unique(split.pids))
    device = resolve_device(spec.train.device)
    model = build_experiment_model(config, spec, num_classes, packed.num_cameras).to(device)
    criterion = build_criterion(spec.loss, model.feature_dim, num_classes).to(device)
    loader = make_train_loader(split, spec.train, config.input, device, spec.seed)
    return TrainingSetup(packed, device, model, criterion, loader)


def train_experiment(config: ProjectConfig, spec: ExperimentSpec, run_dir: str | Path,
                     callbacks: Sequence[EpochCallback] = (), resume: bool = True,
                     packed_root: str | Path = PACKED_ROOT) -> TrainResult:
    """Train one experiment on ``<packed_root>/<train_set>``; resumes from ``run_dir`` by default.

    Writes ``checkpoints/last.pt`` and ``history.json`` as it goes and ``model.pt`` (the final
    model ``state_dict`` with its provenance, :mod:`ddrn.engine.provenance`) at the end. A resume
    refuses a checkpoint of another experiment or fingerprint.
    """
    run_dir = Path(run_dir)
    setup = prepare_training(config, spec, packed_root)
    owner = (spec.name, config.fingerprint(spec))
    result = fit(setup.model, setup.criterion, setup.loader, spec.train, run_dir, setup.device,
                 callbacks=callbacks, resume=resume, seed=spec.seed, owner=owner)
    save_weights(run_dir / "model.pt", setup.model.state_dict(),
                 provenance(*owner, spec.train.epochs, spec.train.epochs, finished=True))
    return result
