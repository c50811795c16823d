"""Nothing listens beyond what it must: Ray keeps its auth, MLflow binds to loopback or sits behind
authentication, and DVC ignores bytecode (so importing the package reruns no stage)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]

_PROBE = r"""
import json, psutil
from ray import tune  # imported before the session, as the train stage and the sweep do
from pipeline.params import RayConfig
from pipeline.trial.tune import ray_session
with ray_session(RayConfig(num_cpus=1, object_store_mb=100)):
    from ray._raylet import AuthenticationMode, get_authentication_mode
    me = psutil.Process()
    pids = {p.pid for p in me.children(recursive=True)} | {me.pid}
    listen = sorted({c.laddr.ip for c in psutil.net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN and c.pid in pids})
    print(json.dumps({"token": get_authentication_mode() == AuthenticationMode.TOKEN,
                      "listen": listen}))
"""


@pytest.fixture(scope="module")
def private_ray(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """How the train stage's private Ray runs when nothing sets ``RAY_AUTH_MODE`` (as under
    ``make reproduce``). ``HOME`` is a scratch folder, so Ray's generated token lands there."""
    home = tmp_path_factory.mktemp("home")
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT), RAY_USAGE_STATS_ENABLED="0")
    proc = subprocess.run([sys.executable, "-c", _PROBE], cwd=home, env=env, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_private_ray_keeps_token_auth(private_ray: dict) -> None:
    assert private_ray["token"], private_ray


def test_private_ray_listens_on_loopback_only(private_ray: dict) -> None:
    # IPv4-mapped loopback is how Ray's dual-stack gRPC servers report a 127.0.0.1 bind.
    assert private_ray["listen"], private_ray
    assert set(private_ray["listen"]) <= {"127.0.0.1", "::1", "::ffff:127.0.0.1"}, \
        private_ray["listen"]


def test_makefile_turns_ray_auth_off_only_for_tests() -> None:
    text = (ROOT / "Makefile").read_text()
    assert not re.search(r"^export RAY_AUTH_MODE", text, re.M), "auth off for every target"
    recipes = dict(re.findall(r"^([a-z-]+):[^\n]*\n((?:\t[^\n]*\n)+)", text, re.M))
    assert "RAY_AUTH_MODE" not in recipes["reproduce"] + recipes["bench"]
    assert "$(TEST_ENV)" in recipes["test"] and "TEST_ENV := RAY_AUTH_MODE=disabled" in text


def _mlflow_server_commands(text: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line for line in joined.splitlines() if "mlflow server --" in line]


def test_readme_mlflow_server_binds_loopback() -> None:
    commands = _mlflow_server_commands((ROOT / "README.md").read_text())
    assert commands
    for command in commands:
        assert "--host 127.0.0.1" in command and "0.0.0.0" not in command, command
        assert not re.search(r"--allowed-hosts\s*=?\s*['\"]?\*", command), command


def test_cluster_mlflow_is_behind_basic_auth() -> None:
    head = yaml.safe_load((ROOT / "deploy/ray-cluster.yaml").read_text())
    command = " ".join(c for c in head["head_setup_commands"] if "mlflow server" in c)
    assert "--app-name basic-auth" in command and "MLFLOW_AUTH_ADMIN_PASSWORD" in command
    assert '"*"' not in command and "0.0.0.0" not in command
    docs = list(yaml.safe_load_all((ROOT / "deploy/kuberay-cluster.yaml").read_text()))
    deployment = next(d for d in docs if d and d.get("kind") == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "--app-name=basic-auth" in container["args"]
    assert not any(a.startswith("--allowed-hosts=*") for a in container["args"])
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" in {e["name"] for e in container["env"]}
    submit = (ROOT / "deploy/submit_sweep.sh").read_text()
    assert "MLFLOW_TRACKING_PASSWORD" in submit


def test_dvc_ignores_bytecode() -> None:
    from dvc.repo import Repo

    repo = Repo(str(ROOT))
    try:
        assert repo.dvcignore.is_ignored_file(str(ROOT / "ddrn/__pycache__/config.cpython-311.pyc"))
        assert not repo.dvcignore.is_ignored_file(str(ROOT / "ddrn/config.py"))
    finally:
        repo.close()
