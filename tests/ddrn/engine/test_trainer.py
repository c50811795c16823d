"""fit() with the real model, criterion and loader: resume equivalence, NaN stop, history, and a
short real training of the demo model whose Embedding Space must keep its codes alive."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from packed_splits import random_split, synthetic_train_split
from torch import nn

from ddrn.config import InputConfig, LossConfig, ModelConfig, SyntheticConfig, TrainConfig
from ddrn.data import PackedSplit, make_train_loader
from ddrn.engine import fit
from ddrn.engine.checkpoint import load_checkpoint
from ddrn.errors import TrainingError
from ddrn.losses import LossResult, build_criterion
from ddrn.models import build_model
from pipeline.params import load_config

INPUT = InputConfig(height=32, width=16, padding=2)
MODEL = ModelConfig(embed_dim=32, depth=2, num_heads=2, patch_size=8, stride=8, drop_path=0.1,
                    embedding_space=True, num_embeddings=8)
LOSS = LossConfig(margin_head="hs_arcface", orthogonal_weight=1.0)
TRAIN = TrainConfig(epochs=3, batch_size=8, num_instances=4, lr=0.01, warmup_epochs=1,
                    iters_per_epoch=2, device="cpu")


def _parts(criterion_wrapper: type | None = None) -> tuple[nn.Module, nn.Module, object]:
    torch.manual_seed(0)
    model = build_model(MODEL, num_classes=4, num_cameras=2, input_size=(32, 16))
    criterion = build_criterion(LOSS, model.feature_dim, 4)
    if criterion_wrapper is not None:
        criterion = criterion_wrapper(criterion)
    loader = make_train_loader(random_split(), TRAIN, INPUT, "cpu", seed=0)
    return model, criterion, loader


class _Recorder:
    def __init__(self, stop_after: int | None = None) -> None:
        self.calls: list[tuple[int, dict, Path | None]] = []
        self.stop_after = stop_after

    def on_epoch_end(self, epoch: int, metrics: dict, checkpoint: Path | None) -> None:
        self.calls.append((epoch, metrics, checkpoint))
        if epoch == self.stop_after:
            raise KeyboardInterrupt  # a kill right after the epoch-2 checkpoint


def test_resume_reaches_the_same_weights(tmp_path: Path) -> None:
    model, criterion, loader = _parts()
    rec = _Recorder()
    full = fit(model, criterion, loader, TRAIN, tmp_path / "a", "cpu", callbacks=[rec], seed=0)
    assert [c[0] for c in rec.calls] == [1, 2, 3]
    assert all(c[2] == tmp_path / "a" / "checkpoints" / "last.pt" for c in rec.calls)
    metrics = full.history[-1]
    for key in ("loss", "loss/id", "loss/triplet", "loss/margin", "loss/orthogonal", "lr",
                "images_per_s", "code_perplexity", "dead_codes"):
        assert key in metrics, key
    assert 1.0 <= metrics["code_perplexity"] <= 8.0 and 0 <= metrics["dead_codes"] <= 8
    assert json.loads((tmp_path / "a" / "history.json").read_text()) == full.history

    model2, criterion2, loader2 = _parts()
    with pytest.raises(KeyboardInterrupt):
        fit(model2, criterion2, loader2, TRAIN, tmp_path / "b", "cpu",
            callbacks=[_Recorder(stop_after=2)], seed=0)
    assert load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["epoch"] == 2
    model3, criterion3, loader3 = _parts()  # a fresh process: new objects, same seed
    resumed = fit(model3, criterion3, loader3, TRAIN, tmp_path / "b", "cpu", resume=True, seed=0)
    assert resumed.resumed_from == 2 and len(resumed.history) == 3
    for (k, v), (k3, v3) in zip(model.state_dict().items(), model3.state_dict().items(), strict=True):
        assert k == k3 and torch.equal(v, v3), k
    for (k, v), v3 in zip(criterion.state_dict().items(), criterion3.state_dict().values(), strict=True):
        assert torch.equal(v, v3), k


class _NaNAfter:
    """The real criterion, with the triplet term turned to NaN from the third step (epoch 2)."""

    def __init__(self, inner: nn.Module) -> None:
        self.inner, self.steps = inner, 0

    def __getattr__(self, name: str):  # noqa: ANN204 - parameters(), state_dict(), train() ...
        return getattr(self.inner, name)

    def __call__(self, output, pids) -> LossResult:  # noqa: ANN001
        self.steps += 1
        res = self.inner(output, pids)
        if self.steps > 2:
            res.terms["triplet"] = res.terms["triplet"] * float("nan")
            res = LossResult(sum(res.terms.values()), res.terms)
        return res


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    model, criterion, loader = _parts(_NaNAfter)
    with pytest.raises(TrainingError) as err:
        fit(model, criterion, loader, TRAIN, tmp_path, "cpu", seed=0)
    msg = str(err.value)
    assert "epoch 2" in msg and "'triplet'" in msg and "step 1" in msg
    assert "(epoch 1) is kept" in msg and "\n" not in msg
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


PARAMS = Path(__file__).resolve().parents[3] / "params.yaml"
OLD_CODEBOOK = {"similarity": "dot", "train_index": "argmax", "kmeans_init": False,
                "dead_code_threshold": 0.0, "codebook_weight_decay": True}
"""The Embedding Space before issue 11, which collapsed to 1-2 codes in every demo run."""


@pytest.fixture(scope="module")
def occluded_train(tmp_path_factory: pytest.TempPathFactory) -> PackedSplit:
    """A small synthetic Occluded-Duke training split at the demo's 64x32 input."""
    root = tmp_path_factory.mktemp("codebook")
    syn = SyntheticConfig(num_train_ids=16, num_test_ids=2, num_distractor_ids=0, images_per_id=8,
                          num_cameras=4, occluded_area=(0.25, 0.55), seed=11)
    return synthetic_train_split("occluded_duke", syn, root, 64, 32)


@pytest.mark.parametrize(("variant", "old"), [("es", False), ("ddrn", False), ("es", True)],
                         ids=["es", "ddrn", "es-old-collapses"])
def test_demo_embedding_space_keeps_its_codes_alive(occluded_train: PackedSplit, tmp_path: Path,
                                                    variant: str, old: bool) -> None:
    """The issue's bar: perplexity >= x/4 and at most x/4 dead codes at the end of training.

    The demo model and recipe of params.yaml (x = 64), shortened to 5 epochs of 12 steps on 128
    images. The old behaviour must fail the same bar, or this test could not catch a collapse.
    """
    config = load_config(PARAMS, "demo")
    spec = config.resolve("occluded_duke", variant, 0)
    # From random weights, as before the pretrain stage (its output is absent from a fresh clone).
    model_cfg = dataclasses.replace(spec.model, pretrained=None,
                                    **(OLD_CODEBOOK if old else {}))
    train_cfg = dataclasses.replace(spec.train, epochs=5, iters_per_epoch=12, warmup_epochs=1)
    num_classes = int(np.unique(occluded_train.pids).size)
    torch.manual_seed(0)
    model = build_model(model_cfg, num_classes, 4, (config.input.height, config.input.width))
    criterion = build_criterion(spec.loss, model.feature_dim, num_classes)
    loader = make_train_loader(occluded_train, train_cfg, config.input, "cpu", seed=0)
    history = fit(model, criterion, loader, train_cfg, tmp_path, "cpu", seed=0).history
    x = model_cfg.num_embeddings
    last = history[-1]
    healthy = last["code_perplexity"] >= x / 4 and last["dead_codes"] <= x / 4
    assert healthy != old, (f"{variant} ({'old' if old else 'defaults'}): perplexity "
                            f"{last['code_perplexity']:.1f}, {last['dead_codes']:.0f} dead of {x}")
