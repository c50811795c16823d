"""Atomic checkpoints, RNG capture, and one-line errors for corrupt or mismatched files."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ddrn.engine.checkpoint import (
    capture_rng,
    load_checkpoint,
    load_module_state,
    restore_rng,
    save_checkpoint,
)
from ddrn.errors import CheckpointError


def test_round_trip_and_no_temp_file_left(tmp_path: Path) -> None:
    model = nn.Linear(3, 2)
    path = save_checkpoint(tmp_path / "c" / "last.pt", {"epoch": 3, "model": model.state_dict()})
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]
    state = load_checkpoint(path)
    assert state["epoch"] == 3
    torch.testing.assert_close(state["model"]["weight"], model.weight.detach())


@pytest.mark.parametrize("content", [b"", b"not a zip file at all", None])
def test_corrupt_checkpoint_is_a_one_line_error(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "last.pt"
    if content is None:  # a real checkpoint cut in half
        save_checkpoint(path, {"epoch": 1, "model": nn.Linear(50, 50).state_dict()})
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_missing_and_foreign_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "raw.pt")
    with pytest.raises(CheckpointError, match="not a ddrn training checkpoint"):
        load_checkpoint(tmp_path / "raw.pt")


def test_mismatched_weights_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"shape mismatch at 'weight'.*\(2, 3\)") as err:
        load_module_state(nn.Linear(4, 2), nn.Linear(3, 2).state_dict(), tmp_path / "x.pt")
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="missing keys"):
        load_module_state(nn.Linear(3, 2), {"weight": torch.zeros(2, 3)}, tmp_path / "x.pt")


def test_rng_states_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    state = capture_rng()
    save_checkpoint(tmp_path / "r.pt", {"model": {}, "rng": state})
    a = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng(load_checkpoint(tmp_path / "r.pt")["rng"])
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
