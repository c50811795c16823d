"""fit() with the real model, criterion and loader: resume equivalence, NaN stop, history."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ddrn.config import InputConfig, LossConfig, ModelConfig, TrainConfig
from ddrn.data import PackedSplit, make_train_loader
from ddrn.engine import fit
from ddrn.engine.checkpoint import load_checkpoint
from ddrn.errors import TrainingError
from ddrn.losses import LossResult, build_criterion
from ddrn.models import build_model

INPUT = InputConfig(height=32, width=16, padding=2)
MODEL = ModelConfig(embed_dim=32, depth=2, num_heads=2, patch_size=8, stride=8, drop_path=0.1,
                    embedding_space=True, num_embeddings=8)
LOSS = LossConfig(margin_head="hs_arcface", orthogonal_weight=1.0)
TRAIN = TrainConfig(epochs=3, batch_size=8, num_instances=4, lr=0.01, warmup_epochs=1,
                    iters_per_epoch=2, device="cpu")


def _split(num_ids: int = 4, per_id: int = 4) -> PackedSplit:
    rng = np.random.default_rng(0)
    n = num_ids * per_id
    return PackedSplit(images=rng.integers(0, 256, (n, 32, 16, 3), dtype=np.uint8),
                       pids=np.repeat(np.arange(num_ids), per_id), camids=np.arange(n) % 2,
                       occluded=np.zeros(n, bool), occluded_known=np.zeros(n, bool),
                       paths=[f"{i}.jpg" for i in range(n)])


def _parts(criterion_wrapper: type | None = None) -> tuple[nn.Module, nn.Module, object]:
    torch.manual_seed(0)
    model = build_model(MODEL, num_classes=4, num_cameras=2, input_size=(32, 16))
    criterion = build_criterion(LOSS, model.feature_dim, 4)
    if criterion_wrapper is not None:
        criterion = criterion_wrapper(criterion)
    loader = make_train_loader(_split(), TRAIN, INPUT, "cpu", seed=0)
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
    assert 1.0 <= metrics["code_perplexity"] <= 8.0
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
