"""Atomic text writes: a temporary file in the same folder, then a rename over the target.

A kill at any moment leaves either the previous file or the new one, never a half-written one.
Used for every JSON/markdown file the library and the pipeline write (history, run markers,
metrics, sweep summaries); checkpoints go through :func:`ddrn.engine.checkpoint.atomic_save`.
"""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically, creating its folder if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
