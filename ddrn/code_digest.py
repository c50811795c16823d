"""A digest of the source code that decides trained weights, part of every experiment fingerprint.

The train stage skips an experiment whose ``done.json`` carries the current fingerprint. With a
fingerprint of the settings alone, an edit to the training code (a loss, the sampler, the
optimiser) made DVC rerun the stage, which then skipped every experiment and kept the weights of
the old code: ``dvc repro`` reported fresh results that were stale. The digest closes that hole:
any change to these files, comments included, retrains (correct over fast: nobody can tell by
eye which edits leave the weights alone).

Covered: the library's training packages and ``config.py``, plus the pipeline module that wires
them for a trial (``pipeline/trial/experiment.py``, found next to the package when the repository is
checked out). Evaluation, reporting and tracking code are not: they do not change the weights.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
TRAINING_CODE = ("config.py", "atomic.py", "errors.py", "models", "losses", "data", "engine")
"""Paths under ``ddrn/`` whose source decides the trained weights."""


def training_code_files(package: Path = PACKAGE) -> list[Path]:
    """The training source files of the ``ddrn`` package at ``package``, in a fixed order."""
    files: list[Path] = []
    for name in TRAINING_CODE:
        path = package / name
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    wiring = package.parent / "pipeline" / "trial" / "experiment.py"
    return files + ([wiring] if wiring.is_file() else [])


def digest_files(files: list[Path], root: Path) -> str:
    """16 hex digits over the ``root``-relative path and the bytes of every file."""
    h = hashlib.sha256()
    for path in files:
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


@functools.cache
def training_code_digest() -> str:
    """The digest of this checkout's training code (computed once per process)."""
    return digest_files(training_code_files(), PACKAGE.parent)
