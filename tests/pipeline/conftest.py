"""Shared fixtures of the pipeline tests: a real MLflow server and a real local Ray.

Both are session-scoped (each costs seconds to start) and started only by tests that ask for them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from mlflow_server import MlflowServer


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real ``mlflow server`` on 127.0.0.1 (SQLite store, proxied artifacts), stopped at the end."""
    with MlflowServer(tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """A private local Ray for the session (2 CPUs, no dashboard, 100 MB object store).

    Environment as in pipeline-facts: auth off, no usage stats, Tune state snapshots every second.
    """
    env = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=100 * 2**20)
    try:
        yield
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def no_tracking_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make sure an MLFLOW_TRACKING_URI of the developer's shell does not leak into a test."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)

