"""sha256 of files: downloaded archives, trained weights, pretrained weight files."""

import functools
import hashlib
from pathlib import Path


def sha256_file(path: str | Path) -> str:
    """The sha256 of a file's bytes (hex), read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_file_digest(path: str | Path) -> str | None:
    """16 hex digits of a weight file's bytes (None when it is not there yet: the preflight
    reports that), cached per (path, size, mtime) because ViT-B/16's file is 330 MB."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        return None
    return _cached_sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)[:16]


@functools.lru_cache(maxsize=8)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)
