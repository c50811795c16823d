"""The sweep on a REAL 2-node Ray cluster on this machine, with a real MLflow tracking server.

The head (``ray start --head``, resource ``head_slot``) and a worker node (``ray start --address``)
each get one CPU, so two trials run at once, one per node. Every process group started here is
killed here (never ``ray stop``, which would kill every Ray on the machine). Nodes advertise the
host's routable IP rather than 127.0.0.1 (Ray rewrites loopback), but all traffic stays on this host.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow_server import free_port
from sweep_project import write_tiny_project

pytestmark = pytest.mark.slow

RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
RAY_BIN = str(Path(sys.executable).with_name("ray"))


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each process group we started, then SIGKILL what is left after 30 s."""
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``127.0.0.1:<port>`` of a running head + worker cluster (2 alive nodes)."""
    logs = tmp_path_factory.mktemp("ray-cluster")
    port = free_port()
    env = {**os.environ, **RAY_ENV}
    env.pop("RAY_ADDRESS", None)
    common = ["--object-store-memory=100000000", "--disable-usage-stats", "--block"]
    procs: list[subprocess.Popen] = []
    try:
        procs.append(subprocess.Popen(
            [RAY_BIN, "start", "--head", f"--port={port}", "--num-cpus=1",
             '--resources={"head_slot": 1}', "--include-dashboard=false", *common],
            env=env, stdout=open(logs / "head.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
            start_new_session=True))
        _wait_port(port, procs[0], timeout=90)
        procs.append(subprocess.Popen(
            [RAY_BIN, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1", *common],
            env=env, stdout=open(logs / "worker.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
            start_new_session=True))
        probe = (f"import ray, time\nray.init(address='127.0.0.1:{port}', log_to_driver=False)\n"
                 "t = time.time()\n"
                 "while sum(n['Alive'] for n in ray.nodes()) < 2 and time.time() - t < 90:\n"
                 "    time.sleep(0.5)\n"
                 "print(sum(n['Alive'] for n in ray.nodes()))\n")
        out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                             text=True, timeout=150)
        assert out.stdout.strip().endswith("2"), f"cluster did not reach 2 nodes: {out.stderr[-2000:]}"
        yield f"127.0.0.1:{port}"
    finally:
        _stop(procs)


def _wait_port(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "ray start --head exited early"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError(f"Ray head did not open port {port} in {timeout} s")


def _sweep_cmd(tmp_path: Path, params: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.sweep", "--params", str(params),
            "--data", str(tmp_path / "data" / "packed"), "--out", str(tmp_path / "reports"),
            "--storage-path", str(tmp_path / "ray_results"), *extra]


def _env(address: str, mlflow_uri: str) -> dict[str, str]:
    env = {**os.environ, **RAY_ENV, "RAY_ADDRESS": address, "MLFLOW_TRACKING_URI": mlflow_uri,
           "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    env.pop("MLFLOW_RUN_ID", None)
    return env


def _nested_runs(uri: str, sweep_name: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("sweep-test")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r.info.run_id for r in runs if r.data.tags.get("sweep") == sweep_name]
    assert len(parents) == 1
    return [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0]]


def test_sweep_spreads_over_two_nodes(tmp_path: Path, ray_cluster: str, mlflow_server) -> None:
    params = write_tiny_project(tmp_path, mlflow_server.uri, num_samples=8, max_epochs=3)
    proc = subprocess.run(_sweep_cmd(tmp_path, params), env=_env(ray_cluster, mlflow_server.uri),
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "dvc exp run -S" in proc.stdout

    summary = json.loads((tmp_path / "reports" / "sweep_trials.json").read_text())
    trials = summary["trials"]
    assert len(trials) == 8 and all(t["status"] == "TERMINATED" for t in trials)
    assert len({n for t in trials for n in t["nodes"]}) == 2 and summary["num_nodes"] == 2
    assert any(t["stopped_early"] for t in trials), "ASHA stopped no trial"
    assert sum(t["epochs"] for t in trials) < 8 * 3
    runs = _nested_runs(mlflow_server.uri, summary["name"])
    assert {r.data.tags["experiment"] for r in runs} == {
        f"sweep-tiny-{t['trial_id']}" for t in trials}
    assert (tmp_path / "reports" / "sweep_best_params.yaml").read_text().count("variants:") == 1
    assert (tmp_path / "reports" / "sweep.md").is_file()


def test_sweep_survives_a_killed_trial_worker(tmp_path: Path, ray_cluster: str,
                                              mlflow_server) -> None:
    # Longer epochs (more iterations) so a trial is surely still running when it is killed.
    params = write_tiny_project(tmp_path, mlflow_server.uri, num_samples=4, max_epochs=4,
                                grace_period=4)
    text = params.read_text().replace("iters_per_epoch: 2", "iters_per_epoch: 300")
    # Its own sweep name: the slow --resume test in test_sweep.py runs the same settings against
    # the same session-wide MLflow server, and the parent run is found by this name.
    assert text.count("name: tiny\n") == 1
    params.write_text(text.replace("name: tiny\n", "name: tiny-kill\n"))
    log = open(tmp_path / "sweep.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(_sweep_cmd(tmp_path, params), env=_env(ray_cluster, mlflow_server.uri),
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    killed = None
    try:
        deadline = time.monotonic() + 300
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            for result in (tmp_path / "ray_results").glob("sweep-*/*/result.json"):
                lines = result.read_text().splitlines()
                try:
                    last = json.loads(lines[-1]) if lines else {}
                except ValueError:  # a line being written
                    continue
                if 1 <= last.get("epoch", 0) < 3:
                    os.kill(int(last["pid"]), signal.SIGKILL)  # the trial's Ray worker process
                    killed = last["trial_id"]
                    break
            time.sleep(0.2)
        assert killed is not None, "no trial was caught mid-run"
        assert proc.wait(timeout=600) == 0, (tmp_path / "sweep.log").read_text()[-4000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()

    summary = json.loads((tmp_path / "reports" / "sweep_trials.json").read_text())
    trials = {t["trial_id"]: t for t in summary["trials"]}
    assert len(trials) == 4 and all(t["status"] == "TERMINATED" for t in trials.values())
    victim = trials[killed]
    assert victim["epochs"] == 4 and victim["resumed_from_epoch"] >= 1  # resumed, not restarted
    assert [e for e, _ in victim["curve"]] == [1, 2, 3, 4]
    runs = _nested_runs(mlflow_server.uri, summary["name"])
    assert {r.data.tags["experiment"] for r in runs} == {f"sweep-tiny-kill-{t}" for t in trials}
