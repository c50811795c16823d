"""Atomic writes: a temporary file in the same folder, flushed to disk, then renamed over the target.

A kill at any moment leaves either the previous file or the new one, never a half-written one.
Every file the library and the pipeline write goes through :func:`atomic_path`: text (history,
run markers, metrics, reports) through :func:`atomic_write_text`, checkpoints through
:func:`ddrn.engine.checkpoint.atomic_save`, evaluation arrays through the evaluate stage.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; when the block ends without an error it
    is fsynced and renamed over ``path``; on an error it is removed and ``path`` is untouched.
    The folder is created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically, creating its folder if needed."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)
