"""Reading pretrained weight files (``.pth``/``.pt``/``.bin`` or ``.safetensors``) from disk."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ddrn.errors import CheckpointError

_NESTED_KEYS = ("state_dict", "model", "model_state", "module")


def load_state_dict_file(path: str | Path, key: str) -> dict[str, Tensor]:
    """Load a flat ``{name: tensor}`` state dict from a local weight file.

    Handles checkpoints that nest the weights under ``state_dict``/``model`` and strips a
    ``module.`` prefix left by DataParallel.

    Args:
        path: the file.
        key: the config key that named it, quoted in error messages.

    Raises:
        CheckpointError: the file is missing or unreadable (one line saying where to put it).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{key}: pretrained weights file {path} not found; download it and "
                              f"place it at {path} (or set {key}: null to train from scratch)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any decoding failure is a bad file, not a bug here
        raise CheckpointError(f"{key}: cannot read weights file {path} ({type(exc).__name__}); "
                              "expected a PyTorch .pth or a .safetensors file") from None
    return unwrap_state_dict(state, f"{key}: {path}")


def unwrap_state_dict(obj: object, where: str) -> dict[str, Tensor]:
    """The flat ``{name: tensor}`` state dict inside a loaded checkpoint: nested under
    ``state_dict``/``model``/``model_state``/``module`` or not, a DataParallel ``module.`` prefix
    stripped.

    Raises:
        CheckpointError: no state dict of tensors inside; the message starts with ``where``.
    """
    for nested in _NESTED_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(nested), dict):
            obj = obj[nested]
    if not isinstance(obj, dict) or not obj or \
            not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{where} holds no model state dict of tensors; expected a "
                              "state_dict, or a dict with one under 'model' or 'state_dict'")
    return {k.removeprefix("module."): v for k, v in obj.items()}
