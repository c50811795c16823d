"""Training checkpoints: written atomically, read back with one-line errors.

A checkpoint is one ``torch.save`` dict holding everything that determines the rest of the run:
model, criterion (margin-head centres), optimizer, lr schedule, AMP grad scaler, the number of
finished epochs, the history so far and every random state (torch CPU/CUDA, numpy, python, and
a loader's own state when it keeps one). Restoring it and training on gives the same weights as an
uninterrupted run.

It is written to a temporary file in the same folder, flushed to disk and renamed over the old
one, so a kill at any moment leaves either the previous or the new checkpoint, never a torn one.
Only tensors and plain Python values are stored, so it loads with ``weights_only=True``.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ddrn.atomic import atomic_path
from ddrn.errors import CheckpointError

FORMAT = 1


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write a training ``state`` to ``path`` atomically (temp file, fsync, rename)."""
    return atomic_save({"format": FORMAT, **state}, path)


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj, path)`` through :func:`ddrn.atomic.atomic_path`."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def load_checkpoint(path: str | Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: missing, truncated/corrupt, or not a ddrn training checkpoint.
    """
    path = Path(path)
    state = read_state_file(path, map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT or "model" not in state:
        raise CheckpointError(f"{path}: not a ddrn training checkpoint (format {FORMAT}); expected "
                              "runs/<experiment>/checkpoints/last.pt written by the train stage")
    return state


def read_state_file(path: Path, map_location: torch.device | str = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True``; any failure becomes a one-line CheckpointError.

    ``weights_only=True`` is what makes reading a file safe: a pickle that would build arbitrary
    Python objects (and so run code) is refused instead of executed.
    """
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; expected a file written by torch.save")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # zip/pickle/EOF errors all mean the same thing to the user
        if "weights only load failed" in str(exc).lower():
            raise CheckpointError(f"{path}: holds Python objects that a weights-only load refuses "
                                  "(it could run code); expected tensors and plain values only; "
                                  "delete the file or replace it with one of this project's") from None
        raise CheckpointError(f"{path}: cannot be read (truncated or corrupt: {error_reason(exc)}); "
                              "expected a complete file written by torch.save; delete it (a run "
                              "dir's file: the train stage then trains that run again)") from None


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def error_reason(exc: BaseException, limit: int = 100) -> str:
    """The first line of ``exc``'s message, without terminal colour codes, cut at a word."""
    text = _ANSI.sub("", str(exc)).strip()
    text = text.splitlines()[0].strip() if text else type(exc).__name__
    if len(text) > limit:
        cut = text[:limit].rsplit(" ", 1)[0].rstrip(" ,;:.")
        text = f"{cut} ..."
    return text


def load_module_state(module: nn.Module, state: dict[str, torch.Tensor], path: Path,
                      what: str = "model") -> None:
    """``module.load_state_dict(state)`` (strict) with a one-line error naming the first misfit."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]!r})")
        if shape:
            k = shape[0]
            parts.append(f"shape mismatch at {k!r}: checkpoint {tuple(state[k].shape)} vs model "
                         f"{tuple(own[k].shape)}")
        raise CheckpointError(f"{path}: {what} weights do not fit this {what} ({'; '.join(parts)}); "
                              "expected a checkpoint of the same variant and dataset")
    module.load_state_dict(state)


# ---- random states -------------------------------------------------------------------------


def capture_rng(loader: Any = None) -> dict[str, Any]:
    """Every random state the next epoch depends on, as tensors and plain values."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "state": torch.tensor(py_state[1], dtype=torch.int64),
                   "gauss": py_state[2]},
        "loader": _loader_state(loader),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], loader: Any = None) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    _restore_loader_state(loader, state.get("loader") or {})


def _loader_state(loader: Any) -> dict[str, Any]:
    """A loader's own state, for loaders that keep one (``state_dict()``).

    :class:`ddrn.data.TrainLoader` keeps none: its sampler and every batch's augmentation are
    seeded from (seed, epoch, batch), and ``fit`` calls ``set_epoch`` before each epoch, so a
    resumed epoch replays exactly without saving anything here.
    """
    if loader is None or not hasattr(loader, "state_dict"):
        return {}
    return {"state_dict": loader.state_dict()}


def _restore_loader_state(loader: Any, state: dict[str, Any]) -> None:
    if loader is not None and "state_dict" in state and hasattr(loader, "load_state_dict"):
        loader.load_state_dict(state["state_dict"])
