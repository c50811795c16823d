"""A real ``mlflow server`` on loopback for the tests (SQLite store, proxied artifacts).

Test-only: the pipeline talks to whatever server ``tracking.uri`` names (docs: README, "MLflow").
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ddrn.errors import DDRNError


class MlflowServer:
    """A real ``mlflow server`` on 127.0.0.1, in its own process group.

    Use as a context manager; :attr:`uri` is the ``http://127.0.0.1:<port>`` tracking URI.
    """

    def __init__(self, workdir: str | Path, port: int | None = None, timeout_s: float = 90.0) -> None:
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.timeout_s = timeout_s
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MlflowServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        env.pop("MLFLOW_TRACKING_URI", None)
        cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{(self.workdir / 'mlflow.db').resolve()}",
               "--artifacts-destination", str((self.workdir / "mlartifacts").resolve())]
        self._log = open(self.workdir / "server.log", "wb")  # noqa: SIM115 (closed in stop())
        self._proc = subprocess.Popen(cmd, env=env, cwd=self.workdir, stdout=self._log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise DDRNError(f"mlflow server exited with code {self._proc.returncode}; see "
                                f"{self.workdir / 'server.log'}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise DDRNError(f"mlflow server on {self.uri} not healthy after {self.timeout_s:.0f} s; "
                        f"see {self.workdir / 'server.log'}")

    def stop(self) -> None:
        """Terminate the server's process group (the server and its workers)."""
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        self._proc = None
        if getattr(self, "_log", None) is not None:
            self._log.close()

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
