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
    for nested in _NESTED_KEYS:
        if isinstance(state, dict) and isinstance(state.get(nested), dict):
            state = state[nested]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{key}: {path} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}
