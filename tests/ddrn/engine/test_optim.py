"""The TransReID schedule values (reid-anchors 1.4) and the bias-lr parameter groups."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ddrn.config import ModelConfig, TrainConfig
from ddrn.engine.optim import build_optimizer, build_schedule
from ddrn.models import build_model


def lrs_at_epoch(epoch: int, cfg: TrainConfig) -> list[float]:
    """Every group's lr in 1-based ``epoch``: weights, then biases (x bias_lr_factor)."""
    opt = build_optimizer([nn.Linear(2, 2)], cfg)
    build_schedule(opt, cfg).step(epoch)
    return [g["lr"] for g in opt.param_groups]


@pytest.mark.parametrize(("epoch", "expected"), [
    (1, 1.664e-3), (5, 7.966e-3), (30, 6.83e-3), (60, 4.01e-3), (90, 1.19e-3), (120, 1.6e-5)])
def test_paper_schedule_values(epoch: int, expected: float) -> None:
    # The anchors give three significant digits.
    assert lrs_at_epoch(epoch, TrainConfig())[0] == pytest.approx(expected, abs=5e-6)


def test_warmup_is_linear_and_floor_is_absolute_for_the_bias_group() -> None:
    cfg = TrainConfig()
    assert lrs_at_epoch(2, cfg)[0] - lrs_at_epoch(1, cfg)[0] == pytest.approx((0.008 - 8e-5) / 5)
    assert lrs_at_epoch(120, cfg)[1] == pytest.approx(1.6e-5)   # same floor for biases
    assert lrs_at_epoch(5, cfg)[1] == pytest.approx(2 * 7.966e-3, rel=2e-3)


def test_bias_group_gets_double_lr_and_criterion_params_are_included() -> None:
    model, crit = nn.Linear(3, 2), nn.Linear(2, 2, bias=False)
    cfg = TrainConfig()
    opt = build_optimizer([model, crit], cfg)
    assert isinstance(opt, torch.optim.SGD)
    weights, biases = opt.param_groups
    assert weights["lr"] == cfg.lr and biases["lr"] == 2 * cfg.lr
    assert len(weights["params"]) == 2 and len(biases["params"]) == 1
    assert weights["momentum"] == 0.9 and weights["weight_decay"] == biases["weight_decay"] == 1e-4
    assert isinstance(build_optimizer([model], TrainConfig(optimizer="adamw")), torch.optim.AdamW)


@pytest.mark.parametrize("decay", [False, True])
def test_codebook_weight_decay_follows_the_model_config(decay: bool) -> None:
    model = build_model(ModelConfig(embed_dim=16, depth=2, num_heads=2, patch_size=8, stride=8,
                                    embedding_space=True, num_embeddings=8,
                                    codebook_weight_decay=decay), 3, input_size=(32, 16))
    cfg = TrainConfig(optimizer="adamw", weight_decay=0.05)
    opt = build_optimizer([model], cfg)
    codebook = model.embedding_space.weight
    group = next(g for g in opt.param_groups if any(p is codebook for p in g["params"]))
    assert group["weight_decay"] == (0.05 if decay else 0.0)
    assert group["lr"] == cfg.lr
    # Only the codebook is exempt: the position embedding and CLS keep TransReID's decay.
    for p in (model.backbone.pos_embed, model.backbone.cls_token):
        assert next(g for g in opt.param_groups if any(q is p for q in g["params"])
                    )["weight_decay"] == 0.05
    # An AdamW step on a zero gradient: decay alone shrinks the codebook only when it is on.
    before = codebook.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.equal(codebook, before) != decay


def test_schedule_state_round_trip() -> None:
    cfg = TrainConfig()
    opt = build_optimizer([nn.Linear(2, 2)], cfg)
    sched = build_schedule(opt, cfg)
    sched.step(7)
    opt2 = build_optimizer([nn.Linear(2, 2)], cfg)
    sched2 = build_schedule(opt2, cfg)
    sched2.load_state_dict(sched.state_dict())
    sched2.step(8)
    sched.step(8)
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_cpu_parameters_get_the_fused_kernel(optimizer: str) -> None:
    opt = build_optimizer([nn.Linear(3, 2)], TrainConfig(optimizer=optimizer))
    assert opt.defaults["fused"] is True


def test_fused_adamw_takes_the_same_steps_as_the_per_parameter_loop() -> None:
    """The fused kernel is a speed choice, not another optimiser: same update up to rounding."""
    torch.manual_seed(0)
    fused_model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    loop_model = copy.deepcopy(fused_model)
    cfg = TrainConfig(optimizer="adamw", lr=0.01, weight_decay=0.05)
    fused = build_optimizer([fused_model], cfg)
    loop = torch.optim.AdamW([{"params": [p for n, p in loop_model.named_parameters()
                                          if not n.endswith("bias")], "lr": cfg.lr},
                              {"params": [p for n, p in loop_model.named_parameters()
                                          if n.endswith("bias")], "lr": 2 * cfg.lr}],
                             lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=False)
    x = torch.randn(8, 6)
    for _ in range(5):
        for model, opt in ((fused_model, fused), (loop_model, loop)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for a, b in zip(fused_model.parameters(), loop_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
