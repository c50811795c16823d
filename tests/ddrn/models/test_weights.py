"""Weight files: one unwrapping of nested / DataParallel checkpoints, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ddrn.errors import CheckpointError
from ddrn.models.weights import load_state_dict_file, unwrap_state_dict


@pytest.mark.parametrize("wrap", [lambda s: s, lambda s: {"model": s}, lambda s: {"state_dict": s},
                                  lambda s: {"state_dict": {"module": s}, "epoch": 3}])
def test_nested_and_data_parallel_checkpoints_unwrap_to_the_same_state(wrap) -> None:
    state = {"module.w": torch.ones(2), "module.b": torch.zeros(1)}
    assert list(unwrap_state_dict(wrap(state), "x.pth")) == ["w", "b"]


@pytest.mark.parametrize("obj", [{"epoch": 3}, {}, [torch.ones(1)], {"model": {"w": 1.0}}])
def test_no_state_dict_is_one_line_naming_the_file(obj) -> None:
    with pytest.raises(CheckpointError, match=r"^x\.pth holds no model state dict") as err:
        unwrap_state_dict(obj, "x.pth")
    assert "\n" not in str(err.value)


def test_file_loader_unwraps_and_names_the_config_key(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    torch.save({"model": {"module.w": torch.ones(2)}}, path)
    assert list(load_state_dict_file(path, "model.pretrained")) == ["w"]
    torch.save({"epoch": 1}, path)
    with pytest.raises(CheckpointError, match=r"^model\.pretrained: .*w\.pth holds no model"):
        load_state_dict_file(path, "model.pretrained")
