"""The optimiser and learning-rate schedule of TransReID's recipe, which DDRN trains with.

- SGD (momentum 0.9) or AdamW over the model's *and the criterion's* parameters (the margin
  heads own their class centres); biases get ``lr x bias_lr_factor`` (2) and the same weight
  decay, as TransReID's ``make_optimizer`` (no decay exclusion for norms or position embeddings).
  The one exclusion: parameters a module names in ``exclude_from_weight_decay()`` (the Embedding
  Space's codebook unless ``model.codebook_weight_decay``; not timm's ``no_weight_decay``, which
  would also exempt the position embedding) go to a third group without weight decay, because
  decay shrinks the codes no token picks until they can never win.
- Learning rate per *epoch* (timm ``CosineLRScheduler`` as TransReID configures it, stepped with
  the 1-based epoch at the start of every epoch): linear warm-up from ``warmup_lr_factor x lr``
  over ``warmup_epochs``, then cosine from the group's base lr to ``min_lr_factor x lr`` at the
  last epoch. The warm-up start and the floor are absolute (the same for the bias group).
  Paper recipe: epoch 1 1.664e-3, 5 7.97e-3, 30 6.83e-3, 60 4.01e-3, 90 1.19e-3, 120 1.6e-5.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ddrn.config import TrainConfig


def build_optimizer(modules: Iterable[nn.Module], cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD or AdamW with two parameter groups: weights (lr) and biases (lr x bias_lr_factor).

    Args:
        modules: every module with trainable parameters (model, criterion); shared parameters
            are counted once.
        cfg: the ``train`` section.
    """
    seen: set[int] = set()
    modules = list(modules)
    undecayed = _no_weight_decay_ids(modules)
    weights, biases, no_decay = [], [], []
    for module in modules:
        for name, p in module.named_parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if id(p) in undecayed:
                no_decay.append(p)
            else:
                (biases if name.endswith("bias") else weights).append(p)
    groups = [{"params": weights, "lr": cfg.lr, "base_lr": cfg.lr},
              {"params": biases, "lr": cfg.lr * cfg.bias_lr_factor,
               "base_lr": cfg.lr * cfg.bias_lr_factor},
              {"params": no_decay, "lr": cfg.lr, "base_lr": cfg.lr, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def _no_weight_decay_ids(modules: Iterable[nn.Module]) -> set[int]:
    """ids of the parameters that submodules list in their ``exclude_from_weight_decay()`` hook."""
    ids: set[int] = set()
    for module in modules:
        for sub in module.modules():
            hook = getattr(sub, "exclude_from_weight_decay", None)
            if callable(hook):
                params = dict(sub.named_parameters())
                ids.update(id(params[n]) for n in hook() if n in params)
    return ids


def lr_at_epoch(epoch: int, base_lr: float, cfg: TrainConfig) -> float:
    """The learning rate of 1-based ``epoch`` for a group whose peak is ``base_lr``."""
    warmup_start = cfg.warmup_lr_factor * cfg.lr
    floor = cfg.min_lr_factor * cfg.lr
    if epoch < cfg.warmup_epochs:
        return warmup_start + epoch * (base_lr - warmup_start) / cfg.warmup_epochs
    if epoch >= cfg.epochs:
        return floor
    return floor + 0.5 * (base_lr - floor) * (1.0 + math.cos(math.pi * epoch / cfg.epochs))


class WarmupCosineSchedule:
    """Sets every group's lr from :func:`lr_at_epoch`; call :meth:`step` at the start of an epoch."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> None:
        self.optimizer = optimizer
        self.cfg = cfg
        self.last_epoch = 0

    def step(self, epoch: int) -> None:
        """Enter 1-based ``epoch``."""
        self.last_epoch = epoch
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at_epoch(epoch, group["base_lr"], self.cfg)

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_epoch = int(state["last_epoch"])
        if self.last_epoch:
            self.step(self.last_epoch)
