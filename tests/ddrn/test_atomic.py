"""Atomic text writes never leave a half-written target or a stray temporary file."""

from __future__ import annotations

from pathlib import Path

import pytest

from ddrn.atomic import atomic_path, atomic_write_text


def test_writes_creates_folder_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "x.json"
    assert atomic_write_text(target, "one\n") == target
    atomic_write_text(target, "two\n")
    assert target.read_text() == "two\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.json"]


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "x.md"
    atomic_write_text(target, "old")
    with pytest.raises(UnicodeEncodeError):
        # Text that cannot be encoded fails inside the temporary file's write, before the rename.
        atomic_write_text(target, "\udcff")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.md"]


def test_binary_writers_share_the_same_guarantee(tmp_path: Path) -> None:
    # A writer that fails half-way (a torch.save of something unpicklable, a zip being filled)
    # leaves the previous file and no temporary one.
    target = tmp_path / "model.pt"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
