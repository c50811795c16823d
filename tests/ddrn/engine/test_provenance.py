"""ddrn.engine.provenance and the safe loaders: no file can run code, no foreign weights trusted."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from ddrn.engine.checkpoint import error_reason, load_checkpoint, read_state_file
from ddrn.engine.provenance import check_provenance, load_weights, provenance, save_weights
from ddrn.errors import CheckpointError
from ddrn.models.weights import load_state_dict_file

ROOT = Path(__file__).resolve().parents[3]


class _Payload:
    """Unpickling this object calls ``open(marker, "w")``: a harmless stand-in for any code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


@pytest.fixture
def malicious(tmp_path: Path) -> tuple[Path, Path]:
    """A torch file whose full unpickling would create ``marker`` (i.e. run code)."""
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    torch.save({"format": 1, "model": {"w": torch.zeros(1)}, "evil": _Payload(marker)}, path)
    assert not marker.exists()
    return path, marker


def test_malicious_pickle_runs_nothing_in_any_loader(malicious: tuple[Path, Path],
                                                     tmp_path: Path) -> None:
    from pipeline.report.build import load_codebook

    path, marker = malicious
    loaders = [
        lambda: read_state_file(path),
        lambda: load_checkpoint(path),
        lambda: load_weights(path, "exp", "fp"),
        lambda: load_state_dict_file(path, "model.pretrained"),
        lambda: load_codebook(path.parent, "exp", "fp"),
    ]
    for load in loaders:
        with pytest.raises(CheckpointError) as info:
            load()
        message = str(info.value)
        assert "\n" not in message and "\x1b" not in message and str(path) in message
        assert not marker.exists(), "unpickling ran code"
    assert "weights-only load refuses" in str(pytest.raises(CheckpointError, read_state_file,
                                                            path).value)


def test_no_unsafe_load_remains_in_the_code() -> None:
    """Every load of a file is weights-only / safe_load / pickle-free (checked in the source)."""
    unsafe = re.compile(r"weights_only\s*=\s*False|allow_pickle\s*=\s*True|\bpickle\.loads?\(|"
                        r"yaml\.load\(|yaml\.unsafe_load|torch\.load\((?![^)]*weights_only=True)")
    found = []
    for folder in ("ddrn", "pipeline", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if unsafe.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, found


def test_provenance_refuses_foreign_stale_and_unfinished_weights(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    save_weights(path, {"w": torch.ones(2)}, provenance("exp-s0", "fp1", 30, 30, finished=True))
    state, record = load_weights(path, "exp-s0", "fp1")
    assert torch.equal(state["w"], torch.ones(2)) and record["finished"]
    with pytest.raises(CheckpointError, match=r"belongs to experiment 'exp-s0', not 'exp-s1'"):
        load_weights(path, "exp-s1", "fp1")
    with pytest.raises(CheckpointError, match="trained with other settings"):
        load_weights(path, "exp-s0", "fp2")
    save_weights(path, {"w": torch.ones(2)}, provenance("exp-s0", "fp1", 8, 30, finished=False))
    with pytest.raises(CheckpointError, match=r"unfinished \(epoch 8 of 30\).*--allow-partial"):
        load_weights(path, "exp-s0", "fp1")
    assert load_weights(path, "exp-s0", "fp1", require_finished=False)[1]["epoch"] == 8
    # A bare state_dict (this project before provenance, or someone else's file) is refused too.
    torch.save({"w": torch.ones(2)}, path)
    with pytest.raises(CheckpointError, match="not a ddrn weights file"):
        load_weights(path, "exp-s0", "fp1")
    with pytest.raises(CheckpointError, match="carries no provenance"):
        check_provenance(path, None, "exp-s0", "fp1", require_finished=False)


def test_corrupt_file_message_is_clean_and_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    torch.save({"format": 1, "model": {"w": torch.zeros(100)}}, path)
    path.write_bytes(path.read_bytes()[:200])  # truncated by a full disk or a kill
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and "\x1b" not in message
    assert message.endswith("the train stage then trains that run again)"), message


def test_error_reason_strips_colour_codes_and_cuts_at_a_word() -> None:
    assert error_reason(ValueError("\x1b[1mWeights only load failed\x1b[0m. More\nsecond")) == \
        "Weights only load failed. More"
    long = ValueError("If you trust the source of this checkpoint " * 5)
    reason = error_reason(long, limit=60)
    assert reason.endswith(" ...") and len(reason) <= 64
    assert long.args[0].startswith(reason[:-4]) and long.args[0][len(reason) - 4] == " "
