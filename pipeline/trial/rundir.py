"""The state of one ``runs/<experiment>/`` directory, which decides what the train stage does.

A run dir carries two small files besides the engine's checkpoints and history:

- ``spec.json`` written when a trial starts: ``{"experiment", "fingerprint", ...}``, so an
  *unfinished* run can be told apart from a stale one trained with other settings;
- ``done.json`` written when the trial finished: ``{"experiment", "fingerprint", "epochs",
  "seconds", "finished_at", "resumed_from", "attempts", "model_sha256"}`` (``resumed_from``: epochs found in the
  checkpoint when the last attempt started, 0 for a run trained in one go; ``attempts``: how many
  times a trial started on this run dir).

``fingerprint`` is :meth:`pipeline.params.ProjectConfig.fingerprint` of everything that determines
the weights (the resolved spec and the training set's config), so changing one variant's knob
retrains only that variant's experiments.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Literal

from ddrn.atomic import atomic_write_text
from pipeline.file_digest import sha256_file
from pipeline.params import ExperimentSpec

RunState = Literal["done", "partial", "stale", "corrupt", "empty"]

SPEC_FILE = "spec.json"
DONE_FILE = "done.json"
MODEL_FILE = "model.pt"
SCRATCH_PREFIX = ".tune-scratch-"
"""Folders a trial fills to hand files to Tune; a killed trial's are removed by :func:`prepare`."""


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or ``None`` if it is missing or unreadable (a torn write)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_json(path: Path, value: dict[str, Any]) -> None:
    """Write atomically (temp file + rename), so a kill never leaves a half-written file."""
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def model_digest(path: Path) -> str | None:
    """sha256 of ``model.pt`` (``None`` when it is missing)."""
    return sha256_file(path) if path.is_file() else None


def run_state(run_dir: Path, fingerprint: str) -> RunState:
    """``done`` (finished with this fingerprint, ``model.pt`` intact), ``corrupt`` (finished, but
    ``model.pt`` is missing or not the file ``done.json`` recorded: train it again), ``partial``
    (started with it: resume), ``stale`` (anything else in the directory) or ``empty``."""
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return "empty"
    done = read_json(run_dir / DONE_FILE)
    if done is not None:
        if done.get("fingerprint") != fingerprint:
            return "stale"
        intact = done.get("model_sha256") is not None and \
            model_digest(run_dir / MODEL_FILE) == done["model_sha256"]
        return "done" if intact else "corrupt"
    spec = read_json(run_dir / SPEC_FILE)
    if spec is not None and spec.get("fingerprint") == fingerprint:
        return "partial"
    return "stale"


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (free on one filesystem; Tune copies a reported checkpoint
    folder into its storage anyway), or copy it across filesystems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def clear_scratch(run_dir: Path) -> None:
    """Remove the Tune scratch folders a killed attempt left in ``run_dir`` (one killed while
    reporting its finished run leaves one beside a complete ``done.json``)."""
    for scratch in run_dir.glob(f"{SCRATCH_PREFIX}*"):
        shutil.rmtree(scratch, ignore_errors=True)


def prepare(run_dir: Path, spec: ExperimentSpec, fingerprint: str) -> RunState:
    """Clear a stale run dir, (re)write ``spec.json`` and return the state found.

    Args:
        run_dir: ``runs/<experiment>/``.
        spec: the experiment.
        fingerprint: ``config.fingerprint(spec)``.
    """
    clear_scratch(run_dir)
    state = run_state(run_dir, fingerprint)
    if state in ("stale", "corrupt"):
        shutil.rmtree(run_dir)
    if state != "done":
        previous = read_json(run_dir / SPEC_FILE) if state == "partial" else None
        attempts = int(previous.get("attempts", 1)) + 1 if previous else 1
        write_json(run_dir / SPEC_FILE, {
            "experiment": spec.name, "fingerprint": fingerprint, "variant": spec.variant,
            "seed": spec.seed, "train_set": spec.train_set, "test_sets": list(spec.test_sets),
            "attempts": attempts,
        })
    return state


def mark_done(run_dir: Path, spec: ExperimentSpec, fingerprint: str, epochs: int,
              seconds: float, resumed_from: int = 0) -> dict[str, Any]:
    """Write ``done.json`` (the last file a trial writes) and return it.

    ``resumed_from`` is :attr:`ddrn.engine.TrainResult.resumed_from` of the attempt that finished
    (0: trained from scratch in one go), so a resumed run can be told from a restarted one.
    """
    spec_doc = read_json(run_dir / SPEC_FILE) or {}
    done = {"experiment": spec.name, "fingerprint": fingerprint, "epochs": epochs,
            "seconds": round(seconds, 2), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "resumed_from": int(resumed_from), "attempts": int(spec_doc.get("attempts", 1)),
            "model_sha256": model_digest(run_dir / MODEL_FILE)}
    write_json(run_dir / DONE_FILE, done)
    return done
