"""The training loop: ``fit`` (epochs, checkpoints, resume, callbacks) and ``train_one_epoch``.

The same ``fit`` runs under pytest, the DVC train stage and Ray Tune trials; MLflow and Tune plug
in as callbacks with ``on_epoch_end(epoch, metrics, checkpoint)``.
"""

from __future__ import annotations

import json
import logging
import random
import resource
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from ddrn.atomic import atomic_write_text
from ddrn.config import TrainConfig
from ddrn.engine.checkpoint import (
    capture_rng,
    load_checkpoint,
    load_module_state,
    restore_rng,
    save_checkpoint,
)
from ddrn.engine.optim import build_optimizer, build_schedule
from ddrn.engine.provenance import check_provenance, provenance
from ddrn.errors import ConfigError, TrainingError
from ddrn.losses.margin import routing_metrics
from ddrn.models.embedding_space import code_usage

log = logging.getLogger(__name__)

CHECKPOINT = Path("checkpoints") / "last.pt"
"""Where :func:`fit` keeps its checkpoint, relative to the run dir."""


class NonFiniteLoss(TrainingError):
    """A loss term became NaN or infinite (raised by :func:`train_one_epoch`)."""


class EpochCallback(Protocol):
    def on_epoch_end(self, epoch: int, metrics: dict[str, float],
                     checkpoint: Path | None) -> None: ...


@dataclass
class TrainResult:
    """What :func:`fit` did.

    Attributes:
        history: one dict of metrics per finished epoch (including those before a resume).
        resumed_from: finished epochs found in the checkpoint (0 = a fresh run).
        checkpoint: the last checkpoint written (or found).
    """

    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int = 0
    checkpoint: Path | None = None


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and python's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.amp`` on ``device`` (None = full precision).

    ``auto``: bf16 on CUDA cards that support it, fp16 (with a GradScaler) on older ones, off on
    the CPU. ``bf16`` on a CPU without native bf16 instructions (AVX512-BF16 or AMX) still works,
    emulated and slower than fp32: a warning says so.
    """
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if mode == "fp16" and device.type != "cuda":
        raise ConfigError(f"train.amp: 'fp16' needs a CUDA device, got {device}; expected 'auto', "
                          "'bf16' or 'off'")
    if mode == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        log.warning("train.amp: bf16 on a CPU without AVX512-BF16 or AMX runs emulated, slower "
                    "than fp32; set train.amp: off on this machine")
    return torch.bfloat16 if mode == "bf16" else torch.float16


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX tiles), as oneDNN uses it."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def fit(model: nn.Module, criterion: nn.Module, loader: Any, train_cfg: TrainConfig,
        run_dir: str | Path, device: torch.device | str, *,
        callbacks: Sequence[EpochCallback] = (), resume: bool = False,
        seed: int = 0, owner: tuple[str, str] | None = None) -> TrainResult:
    """Train ``model`` for ``train_cfg.epochs`` epochs, checkpointing into ``run_dir``.

    Args:
        model: returns :class:`~ddrn.models.ReIDOutput`; already on ``device``.
        criterion: ``criterion(output, pids) -> LossResult``; its parameters are optimised too.
        loader: yields ``(images, pids, camids)`` on ``device``; ``len()`` = steps per epoch;
            ``set_epoch(e)`` (0-based) is called before each epoch when it exists.
        train_cfg: the ``train`` section.
        run_dir: ``checkpoints/last.pt`` and ``history.json`` are written here.
        device: where training runs.
        callbacks: ``on_epoch_end(epoch, metrics, checkpoint_path_or_None)`` after every epoch.
        resume: continue from ``run_dir/checkpoints/last.pt`` when it exists.
        seed: seeds the global generators of a fresh run (a resumed run restores them).
        owner: ``(experiment, fingerprint)`` recorded in each checkpoint's provenance; a resume
            refuses a checkpoint of another experiment or fingerprint.

    Raises:
        TrainingError: a non-finite loss (names the epoch and the loss term; the last good
            checkpoint is kept).
        CheckpointError: an unreadable checkpoint, or one of another model.
    """
    run_dir, device = Path(run_dir), torch.device(device)
    ckpt_path = run_dir / CHECKPOINT
    optimizer = build_optimizer([model, criterion], train_cfg)
    schedule = build_schedule(optimizer, train_cfg)
    dtype = amp_dtype(train_cfg.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    result = TrainResult()
    if resume and ckpt_path.is_file():
        state = load_checkpoint(ckpt_path, map_location=device)
        if owner is not None:  # never resume from a checkpoint copied from another run
            check_provenance(ckpt_path, state.get("provenance"), *owner, require_finished=False)
        load_module_state(model, state["model"], ckpt_path, "model")
        load_module_state(criterion, state["criterion"], ckpt_path, "criterion")
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"], loader)
        result.history = list(state["history"])
        result.resumed_from = int(state["epoch"])
        result.checkpoint = ckpt_path
        log.info("resuming %s from epoch %d", run_dir, result.resumed_from)
    else:
        seed_everything(seed)
    step_model = torch.compile(model) if train_cfg.compile else model
    saved_epoch = result.resumed_from

    for epoch in range(result.resumed_from + 1, train_cfg.epochs + 1):
        schedule.step(epoch)
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch - 1)
        try:
            metrics = train_one_epoch(step_model, criterion, loader, optimizer, scaler, device,
                                      dtype, epoch, codebook_size=_codebook_size(model),
                                      routing_levels=_routing_levels(criterion))
        except NonFiniteLoss as exc:
            kept = (f"the last good checkpoint {ckpt_path} (epoch {saved_epoch}) is kept"
                    if saved_epoch else "no checkpoint had been written")
            raise TrainingError(f"{run_dir}: {exc}; {kept}; expected finite losses (lower "
                                "train.lr or check the loss weights)") from None
        metrics["lr"] = optimizer.param_groups[0]["lr"]
        result.history.append({"epoch": float(epoch), **metrics})
        written = None
        if epoch % train_cfg.checkpoint_every == 0 or epoch == train_cfg.epochs:
            written = save_checkpoint(ckpt_path, {
                "epoch": epoch, "model": model.state_dict(), "criterion": criterion.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": schedule.state_dict(),
                "scaler": scaler.state_dict(), "rng": capture_rng(loader),
                "history": result.history,
                **({"provenance": provenance(*owner, epoch, train_cfg.epochs, finished=False)}
                   if owner is not None else {}),
            })
            result.checkpoint, saved_epoch = written, epoch
        _write_json(run_dir / "history.json", result.history)
        _log_epoch(epoch, train_cfg.epochs, metrics)
        for cb in callbacks:
            cb.on_epoch_end(epoch, dict(metrics), written)
    return result


def train_one_epoch(model: nn.Module, criterion: nn.Module, loader: Iterable[Any],
                    optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                    device: torch.device, dtype: torch.dtype | None, epoch: int,
                    codebook_size: int | None = None,
                    routing_levels: int | None = None) -> dict[str, float]:
    """One pass over ``loader``; returns the epoch's mean losses, throughput and code usage.

    Returns:
        ``loss`` (mean total), ``loss/<term>`` (mean of each weighted term), ``images_per_s``,
        ``epoch_seconds``, ``peak_rss_mb`` (the process's peak resident memory so far; plus
        ``peak_gpu_mb`` on CUDA); when the model has an Embedding Space, ``code_perplexity`` and
        ``dead_codes`` over every token of the epoch; with an HS-ArcFace head of
        ``routing_levels`` = k levels, ``hs_stop_share_1..k`` and ``hs_marker_win_rate_1..k-1``
        over every sample of the epoch (:func:`~ddrn.losses.margin.routing_metrics`).
    """
    model.train()
    criterion.train()
    sums: dict[str, torch.Tensor] = {}
    hist = torch.zeros(codebook_size, dtype=torch.long, device=device) if codebook_size else None
    routing = (torch.zeros(2, routing_levels, dtype=torch.long, device=device)
               if routing_levels else None)
    images_seen, steps = 0, 0
    names: list[str] = []
    first_bad: torch.Tensor | None = None   # (T,) which terms were non-finite at the first bad step
    total_steps = len(loader) if hasattr(loader, "__len__") else None
    bar = None
    if sys.stderr.isatty():
        from tqdm import tqdm
        bar = tqdm(total=total_steps, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True)
    t0 = time.perf_counter()
    for images, pids, camids in loader:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            output = model(images, camids)
            loss = criterion(output, pids)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss.total).backward()
        scaler.step(optimizer)
        scaler.update()
        # Accumulate on the device: no host sync per step.
        values = {"loss": loss.total, **{f"loss/{k}": v for k, v in loss.terms.items()}}
        for name, value in values.items():
            v = value.detach().float()
            sums[name] = sums[name] + v if name in sums else v
        if not names:
            names = list(values)
        bad = ~torch.isfinite(torch.stack([v.detach().float() for v in values.values()]))
        # Remember the first bad step only: after it every term is NaN (the weights are).
        first_bad = bad if first_bad is None else torch.where(first_bad.any(), first_bad, bad)
        if hist is not None and output.code_indices is not None:
            hist += torch.bincount(output.code_indices.reshape(-1), minlength=codebook_size)
        if routing is not None and loss.routing is not None:
            routing += loss.routing
        images_seen += images.shape[0]
        steps += 1
        if (steps % 20 == 0 or device.type == "cpu") and bool(first_bad.any()):
            break
        if bar is not None:
            bar.update(1)
            if steps % 10 == 0:
                bar.set_postfix(loss=f"{float(loss.total):.3f}")
    if bar is not None:
        bar.close()
    if first_bad is not None and bool(first_bad.any()):
        flags = first_bad.tolist()
        terms = [n for n, f in zip(names, flags, strict=True) if f and n != "loss"] or ["loss"]
        term = terms[0].removeprefix("loss/")
        raise NonFiniteLoss(f"epoch {epoch}: loss term {term!r} is not finite (NaN or inf) "
                            f"at step {steps}")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    metrics = {name: float(v) / max(steps, 1) for name, v in sums.items()}
    metrics["images_per_s"] = images_seen / max(seconds, 1e-9)
    metrics["epoch_seconds"] = seconds
    # Memory at full size is what decides whether a recipe fits a machine: record it per epoch.
    metrics["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    if device.type == "cuda":
        metrics["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    if hist is not None:
        usage = code_usage(hist)
        metrics["code_perplexity"] = usage["perplexity"]
        metrics["dead_codes"] = float(usage["dead_codes"])
    if routing is not None:
        metrics.update(routing_metrics(routing))
    return metrics


def _codebook_size(model: nn.Module) -> int | None:
    space = getattr(model, "embedding_space", None)
    return int(space.num_embeddings) if space is not None else None


def _routing_levels(criterion: nn.Module) -> int | None:
    """k of the criterion's HS-ArcFace head (it has ``route``), else None."""
    head = getattr(criterion, "margin_head", None)
    return int(head.k) if head is not None and hasattr(head, "route") else None


def _write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=1) + "\n")


def _log_epoch(epoch: int, epochs: int, metrics: dict[str, float]) -> None:
    terms = " ".join(f"{k.removeprefix('loss/')}={v:.3f}" for k, v in metrics.items()
                     if k.startswith("loss/"))
    extra = (f" perplexity={metrics['code_perplexity']:.1f} dead={metrics['dead_codes']:.0f}"
             if "code_perplexity" in metrics else "")
    log.info("epoch %d/%d loss=%.4f (%s) lr=%.2e %.0f img/s%s", epoch, epochs, metrics["loss"],
             terms, metrics["lr"], metrics["images_per_s"], extra)
