"""Close the MLflow parent runs of stage invocations that were killed.

A stage killed with SIGKILL cannot end its own parent run, which would stay RUNNING forever.
Each parent run is tagged with the host and process id that opened it; the next invocation of
the same stage marks every RUNNING parent run of that stage whose process is gone as KILLED.
Only runs opened on this host are judged (a process id means nothing on another machine), and a
run whose process is alive (a concurrent invocation) is left alone.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

log = logging.getLogger(__name__)

TAG_HOST = "ddrn.host"
TAG_PID = "ddrn.pid"
TAG_STARTED = "ddrn.process_start"


def owner_tags() -> dict[str, str]:
    """Tags naming this process (host, pid and its start time, which guards against pid reuse)."""
    return {TAG_HOST: socket.gethostname(), TAG_PID: str(os.getpid()),
            TAG_STARTED: _process_start(os.getpid()) or ""}


def process_alive(pid: int, started: str) -> bool:
    """Whether ``pid`` runs and is the process that started at ``started`` (``/proc`` stat)."""
    now = _process_start(pid)
    return now is not None and (not started or now == started)


def close_dead_stage_runs(client: Any, experiment_id: str, stage: str) -> list[str]:
    """Mark RUNNING parent runs of ``stage`` whose process on this host is gone as KILLED.

    Returns:
        The ids of the runs closed.
    """
    host = socket.gethostname()
    query = (f"tags.stage = '{stage}' and attributes.status = 'RUNNING' and "
             f"tags.`{TAG_HOST}` = '{host}'")
    closed = []
    for run in client.search_runs([experiment_id], query, max_results=200):
        tags = run.data.tags
        if "mlflow.parentRunId" in tags or not tags.get(TAG_PID, "").isdigit():
            continue
        if process_alive(int(tags[TAG_PID]), tags.get(TAG_STARTED, "")):
            continue
        client.set_terminated(run.info.run_id, "KILLED")
        closed.append(run.info.run_id)
        log.info("MLflow: %s run %s of a killed invocation (pid %s) marked KILLED", stage,
                 run.info.run_id, tags[TAG_PID])
    return closed


def _process_start(pid: int) -> str | None:
    """Field 22 of ``/proc/<pid>/stat`` (start time in clock ticks); ``None`` if no such process.

    Where ``/proc`` is missing (not Linux), falls back to ``os.kill(pid, 0)`` with an empty
    start time.
    """
    try:
        stat = open(f"/proc/{pid}/stat").read()  # noqa: SIM115 (tiny read)
    except FileNotFoundError:
        if os.path.isdir("/proc"):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return ""
        return ""
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    if fields and fields[0] == "Z":  # a zombie has finished
        return None
    return fields[19] if len(fields) > 19 else ""
