"""The project's user-facing error type.

Anything the user can fix (a bad parameter, a missing file, a corrupt archive) is raised as a
:class:`DDRNError` whose message is one line: *what* went wrong, *where* (file, key or path) and
*what was expected*. Pipeline stages catch it and print that line with a non-zero exit; any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class DDRNError(Exception):
    """A problem the user can fix, described in one line."""

    def __init__(self, message: str) -> None:
        # Collapse accidental newlines so the one-line contract holds for every caller.
        super().__init__(" ".join(str(message).split()))


class ConfigError(DDRNError):
    """An invalid value in ``params.yaml`` (or a config built in code)."""


class DataError(DDRNError):
    """A dataset folder, archive, image or packed store that is missing or malformed."""


class CheckpointError(DDRNError):
    """A checkpoint that cannot be read or does not fit the model."""


class TrainingError(DDRNError):
    """Training cannot go on (e.g. a non-finite loss)."""
