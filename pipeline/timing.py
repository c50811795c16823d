"""Record how long each DVC stage took, for the report's header.

``dvc.yaml`` runs every stage as ``python -m pipeline.timing <stage> -- <command...>``: the
command runs unchanged (same exit code, same output) and ``timings/<stage>.json`` records
``{"stage", "seconds", "started", "exit_code"}``. DVC keeps no durations, and this keeps the
timing out of the stages' own code. The report sums the latest time of every stage, i.e. what it
cost to produce everything the report shows.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.trial.rundir import read_json, write_json

TIMINGS_DIR = Path("timings")


def timing_path(stage: str, root: Path = TIMINGS_DIR) -> Path:
    """``timings/<stage>.json`` (``@`` in foreach stage names is kept: ``download@market1501``)."""
    return root / f"{stage}.json"


def run_timed(stage: str, command: Sequence[str], root: Path = TIMINGS_DIR) -> int:
    """Run ``command``, record its wall time under ``stage`` (also on failure) and return its code."""
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    t0 = time.perf_counter()
    try:
        code = subprocess.call(list(command))
    except KeyboardInterrupt:
        code = 130
    write_json(timing_path(stage, root), {"stage": stage, "seconds": round(time.perf_counter() - t0, 2),
                                          "started": started, "exit_code": code})
    return code


def load_timings(root: Path = TIMINGS_DIR) -> dict[str, dict[str, Any]]:
    """Every recorded stage time, by stage name (unreadable files are skipped)."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(root.glob("*.json")) if root.is_dir() else []:
        doc = read_json(path)
        if doc is not None and "seconds" in doc:
            out[str(doc.get("stage", path.stem))] = doc
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m pipeline.timing STAGE -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    return run_timed(argv[0], argv[2:])


if __name__ == "__main__":
    raise SystemExit(main())
