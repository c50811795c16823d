"""The ``train.device`` setting resolved to a torch device.

Its own module so that the preflight checks (run by ``preprocess`` too) do not import the whole
training path, and DVC's deps of those stages stay narrow.
"""
from __future__ import annotations

import torch

from ddrn.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``train.device``: ``auto`` = CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} but no CUDA device is available; expected "
                          "'auto' or 'cpu'")
    return device
