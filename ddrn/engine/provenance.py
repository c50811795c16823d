"""Where a weights file comes from: the experiment, its fingerprint and whether training finished.

A checkpoint (``checkpoints/last.pt``) and the final weights (``model.pt``) both carry a
``provenance`` dict ``{"experiment", "fingerprint", "finished", "epoch", "epochs"}``. Whoever
reads weights it did not just write (resume, evaluate, report) checks it first with
:func:`check_provenance`, so a file copied from another experiment, left by other settings, or
written by a run that was killed halfway is refused in one line instead of being trusted.

``model.pt`` is ``{"format": 1, "model": state_dict, "provenance": {...}}``; everything in it is a
tensor or a plain value, so it loads with ``weights_only=True`` (no file can run code here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ddrn.engine.checkpoint import atomic_save, read_state_file
from ddrn.errors import CheckpointError

WEIGHTS_FORMAT = 1


def provenance(experiment: str, fingerprint: str, epoch: int, epochs: int,
               finished: bool) -> dict[str, Any]:
    """The provenance record stored next to the weights (plain values only)."""
    return {"experiment": str(experiment), "fingerprint": str(fingerprint), "epoch": int(epoch),
            "epochs": int(epochs), "finished": bool(finished)}


def check_provenance(path: Path, found: Any, experiment: str, fingerprint: str,
                     require_finished: bool) -> dict[str, Any]:
    """Return ``found`` if it names ``experiment`` at ``fingerprint`` (and finished, if required).

    Raises:
        CheckpointError: one line naming the file and what it belongs to.
    """
    if not isinstance(found, dict) or "experiment" not in found or "fingerprint" not in found:
        raise CheckpointError(f"{path}: carries no provenance (experiment, fingerprint); expected "
                              f"weights written by the train stage for {experiment!r}; delete the "
                              "run dir and train again")
    if found["experiment"] != experiment:
        raise CheckpointError(f"{path}: belongs to experiment {found['experiment']!r}, not "
                              f"{experiment!r}; expected this experiment's own weights (was the "
                              "file copied from another run dir?)")
    if found["fingerprint"] != fingerprint:
        raise CheckpointError(f"{path}: trained with other settings (fingerprint "
                              f"{found['fingerprint']}, current {fingerprint}); expected weights of "
                              f"the current params; train {experiment!r} again")
    if require_finished and not found.get("finished"):
        raise CheckpointError(f"{path}: training of {experiment!r} is unfinished (epoch "
                              f"{found.get('epoch')} of {found.get('epochs')}); expected a finished "
                              "run; rerun the train stage (or evaluate with --allow-partial)")
    return found


def save_weights(path: str | Path, state_dict: dict[str, torch.Tensor],
                 record: dict[str, Any]) -> Path:
    """Write the final weights with their provenance, atomically."""
    return atomic_save({"format": WEIGHTS_FORMAT, "model": state_dict, "provenance": record}, path)


def load_weights(path: str | Path, experiment: str, fingerprint: str,
                 require_finished: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read ``model.pt`` safely and check its provenance; returns ``(state_dict, provenance)``.

    Raises:
        CheckpointError: missing, unreadable, not this project's weights file, or of another
            experiment / fingerprint / an unfinished run.
    """
    path = Path(path)
    obj = read_state_file(path)
    if not isinstance(obj, dict) or obj.get("format") != WEIGHTS_FORMAT or \
            not isinstance(obj.get("model"), dict):
        raise CheckpointError(f"{path}: not a ddrn weights file (format {WEIGHTS_FORMAT}); expected "
                              "runs/<experiment>/model.pt written by the train stage; train again")
    record = check_provenance(path, obj.get("provenance"), experiment, fingerprint,
                              require_finished)
    return obj["model"], record
