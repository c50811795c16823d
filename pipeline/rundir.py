"""The state of one ``runs/<experiment>/`` directory, which decides what the train stage does.

A run dir carries two small files besides the engine's checkpoints and history:

- ``spec.json`` written when a trial starts: ``{"experiment", "fingerprint", ...}``, so an
  *unfinished* run can be told apart from a stale one trained with other settings;
- ``done.json`` written when the trial finished: ``{"experiment", "fingerprint", "epochs",
  "seconds", "finished_at"}``.

``fingerprint`` is :meth:`ddrn.config.ExperimentSpec.fingerprint` of everything that determines
the weights, so changing one variant's knob retrains only that variant's experiments.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Literal

from ddrn.config import ExperimentSpec, InputConfig

RunState = Literal["done", "partial", "stale", "empty"]

SPEC_FILE = "spec.json"
DONE_FILE = "done.json"


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or ``None`` if it is missing or unreadable (a torn write)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_json(path: Path, value: dict[str, Any]) -> None:
    """Write atomically (temp file + rename), so a kill never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def run_state(run_dir: Path, fingerprint: str) -> RunState:
    """``done`` (finished with this fingerprint), ``partial`` (started with it: resume),
    ``stale`` (anything else in the directory) or ``empty``."""
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return "empty"
    done = read_json(run_dir / DONE_FILE)
    if done is not None:
        return "done" if done.get("fingerprint") == fingerprint else "stale"
    spec = read_json(run_dir / SPEC_FILE)
    if spec is not None and spec.get("fingerprint") == fingerprint:
        return "partial"
    return "stale"


def prepare(run_dir: Path, spec: ExperimentSpec, input_cfg: InputConfig) -> RunState:
    """Clear a stale run dir, (re)write ``spec.json`` and return the state found."""
    fingerprint = spec.fingerprint(input_cfg)
    state = run_state(run_dir, fingerprint)
    if state == "stale":
        shutil.rmtree(run_dir)
    if state != "done":
        write_json(run_dir / SPEC_FILE, {
            "experiment": spec.name, "fingerprint": fingerprint, "variant": spec.variant,
            "seed": spec.seed, "train_set": spec.train_set, "test_sets": list(spec.test_sets),
        })
    return state


def mark_done(run_dir: Path, spec: ExperimentSpec, input_cfg: InputConfig, epochs: int,
              seconds: float) -> dict[str, Any]:
    """Write ``done.json`` (the last file a trial writes) and return it."""
    done = {"experiment": spec.name, "fingerprint": spec.fingerprint(input_cfg), "epochs": epochs,
            "seconds": round(seconds, 2), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json(run_dir / DONE_FILE, done)
    return done
