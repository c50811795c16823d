"""The whole DVC graph on a tiny profile: real git + DVC repo, real local Ray, real MLflow server.

A scratch copy of the project (``dvc.yaml``, ``ddrn/``, ``pipeline/``, a ``params.yaml`` whose only
profile is tiny) is built once per module, with its datasets downloaded and packed by
``dvc repro preprocess``; each test then works on its own copy of it:

- ``dvc repro`` trains (Ray Tune trials), evaluates and reports; the reports, ``dvc metrics show``
  and the MLflow runs read back with :class:`mlflow.MlflowClient` agree, and a second
  ``dvc repro`` reruns nothing;
- killing the train stage's process group halfway and running ``dvc repro`` again resumes the
  unfinished trials from ``runs/<exp>/checkpoints/last.pt`` instead of starting over.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from mlflow_server import MlflowServer
from tiny_project import five_synthetic_sets

from pipeline.trial.rundir import SCRATCH_PREFIX

PROJECT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
SYN = {"num_distractor_ids": 1, "images_per_id": 4, "num_cameras": 2, "height": 32, "width": 16}
EXPERIMENTS = ("occluded_duke-ddrn-s0", "occluded_duke-es_orth-s0", "occluded_duke-vit_baseline-s0")
TEST_SETS = ("occluded_duke", "partial_reid")


def tiny_params(experiment_name: str, epochs: int = 2, iters_per_epoch: int = 2) -> dict:
    """params.yaml of the scratch repo: the project's variants and one tiny profile."""
    variants = yaml.safe_load((PROJECT / "params.yaml").read_text())["variants"]
    datasets = five_synthetic_sets({"occluded_duke": (6, 5), "market1501": (2, 2),
                                    "dukemtmc": (2, 2)})
    return {"profile": "tiny", "variants": variants, "profiles": {"tiny": {
        "seed": 0,
        "datasets": {k: {"source": "synthetic", "synthetic": {**SYN, **v}}
                     for k, v in datasets.items()},
        "input": {"height": 32, "width": 16, "padding": 2},
        "model": {"embed_dim": 16, "depth": 2, "num_heads": 2, "patch_size": 8, "stride": 8,
                  "num_embeddings": 8, "drop_path": 0.0,
                  "pretrained": "data/pretrained/vit_backbone.pth"},
        # The demo's shape: every ViT fine-tunes from the pretrain stage's corpus backbone.
        "pretrain": {"corpus": {**SYN, "num_train_ids": 4, "num_test_ids": 1,
                                "num_distractor_ids": 0, "query_occlusion": 0.0,
                                "gallery_occlusion": 0.0, "train_occlusion": 0.0, "seed": 9},
                     "train": {"epochs": 1}},
        "train": {"epochs": epochs, "batch_size": 8, "num_instances": 2, "warmup_epochs": 0,
                  "optimizer": "adamw", "lr": 0.003, "device": "cpu",
                  "iters_per_epoch": iters_per_epoch},
        # dvc.yaml lists every section under `params:`, and DVC fails on a missing one: a profile
        # must name each section, if only as {} (= the paper's defaults).
        "loss": {},
        "evaluation": {"batch_size": 64},
        "experiments": {"ablation": {"train_set": "occluded_duke", "test_sets": list(TEST_SETS),
                                     "variants": ["vit_baseline", "es_orth", "ddrn"],
                                     "seeds": [0]}},
        "ray": {"cpus_per_trial": 1, "max_concurrent_trials": 2, "max_failures": 1,
                "num_cpus": 2, "object_store_mb": 100},
        "tracking": {"experiment_name": experiment_name},
        "report": {"tsne_ids": 4, "topk": 3, "retrieval_queries": 2},
    }}}


def write_params(repo: Path, experiment_name: str, **kw: int) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny_params(experiment_name, **kw),
                                                     sort_keys=False))


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n" \
                                 f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    return proc.stdout + proc.stderr


def marked_processes(marker: str) -> dict[int, str]:
    """``{pid: command line}`` of every live process whose environment carries ``marker`` (only
    ours: the test put it there)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes() and \
                    (entry / "stat").read_text().split(")")[-1].split()[0] != "Z":
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(
                    b"\0", b" ").decode().strip()[:120]
        except OSError:
            continue
    return found


def kill_marked(marker: str) -> dict[int, str]:
    """SIGKILL every process :func:`marked_processes` finds (nothing the stages started may
    outlive the test) and return them."""
    found = marked_processes(marker)
    for pid in found:
        with contextlib.suppress(OSError):  # exited meanwhile
            os.kill(pid, signal.SIGKILL)
    return found


class Repo:
    """A scratch git + DVC project and the environment its commands run with."""

    def __init__(self, path: Path, mlflow_uri: str | None = None) -> None:
        self.path = path
        self.marker = f"DDRN_GRAPH_TEST={uuid.uuid4().hex}"
        self.ray_tmp = Path("/tmp") / f"ddrn-rt-{uuid.uuid4().hex[:8]}"  # short: AF_UNIX paths
        # The stages' own temp dir, so a test can tell what they left behind in it.
        self.tmp = path.parent / f"{path.name}-tmp"
        self.tmp.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items()
               if k not in ("RAY_ADDRESS", "MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI", "PYTHONPATH")}
        env.update({
            "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONPATH": str(path),  # trials (Ray workers) import this copy, not /work/main's
            "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
            "TUNE_GLOBAL_CHECKPOINT_S": "1", "DVC_NO_ANALYTICS": "1", "RAY_TMPDIR": str(self.ray_tmp),
            "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg", "TMPDIR": str(self.tmp),
            self.marker.split("=")[0]: self.marker.split("=")[1],
        })
        if mlflow_uri:
            env["MLFLOW_TRACKING_URI"] = mlflow_uri
        self.env = env

    def run(self, *cmd: str, timeout: float = 300) -> str:
        return _run(list(cmd), self.path, self.env, timeout)

    def init(self, author: str) -> None:
        """``git init`` and ``dvc init`` here, with a committer and without DVC's analytics."""
        self.run("git", "init", "-q")
        self.run("git", "config", "user.email", "test@example.com")
        self.run("git", "config", "user.name", author)
        self.dvc("init", "-q")
        self.dvc("config", "core.analytics", "false")

    def dvc(self, *args: str, timeout: float = 300) -> str:
        return self.run(str(VENV_BIN / "dvc"), *args, timeout=timeout)

    def cleanup(self) -> None:
        kill_marked(self.marker.split("=")[1])
        shutil.rmtree(self.ray_tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The scratch project with every dataset downloaded and packed (``dvc repro preprocess``)."""
    path = tmp_path_factory.mktemp("graph") / "template"
    path.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("ddrn", "pipeline"):
        shutil.copytree(PROJECT / name, path / name, ignore=ignore)
    shutil.copy2(PROJECT / "dvc.yaml", path / "dvc.yaml")
    write_params(path, "unused")
    repo = Repo(path)
    try:
        repo.init("graph test")
        repo.dvc("config", "core.check_update", "false")
        for name in (".gitignore", ".dvcignore"):
            shutil.copy2(PROJECT / name, path / name)
        # the plots' template and the offline page (`dvc plots show` without network)
        shutil.copytree(PROJECT / ".dvc" / "plots", path / ".dvc" / "plots")
        repo.dvc("config", "plots.html_template", "plots/offline.html")
        repo.run("git", "add", "-A")
        repo.run("git", "commit", "-q", "-m", "scratch project")
        repo.dvc("repro", "preprocess")
        yield path
    finally:
        repo.cleanup()


@pytest.fixture
def repo(template: Path, tmp_path: Path, mlflow_server: MlflowServer) -> Iterator[Repo]:
    path = tmp_path / "repo"
    shutil.copytree(template, path, symlinks=True)
    scratch = Repo(path, mlflow_server.uri)
    try:
        yield scratch
    finally:
        scratch.cleanup()


def _metrics_show(repo: Repo) -> dict[str, dict]:
    """``dvc metrics show --json`` as ``{metrics file (repository-relative): its document}``."""
    doc = json.loads(repo.dvc("metrics", "show", "--json").strip().splitlines()[-1])
    data = doc[""]["data"]
    out = {}
    for path, entry in data.items():
        if "data" not in entry:
            continue
        if path.endswith(".json"):
            out[path] = entry["data"]
        else:  # a metrics directory: {file: doc}
            out.update(entry["data"])
    return out


def _dvc_status(repo: Repo) -> dict:
    lines = repo.dvc("status", "--json").strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def _table_cells(markdown: str, variant: str) -> list[str]:
    """The cells of the first markdown table row mentioning ``variant`` (as `variant`)."""
    for line in markdown.splitlines():
        if line.startswith("|") and f"`{variant}`" in line:
            return [c.strip() for c in line.strip().strip("|").split("|")]
    raise AssertionError(f"no row for {variant} in:\n{markdown}")


def _cell_mean(cell: str) -> str:
    """The mean of a table cell ``mean [low, high]``, checked to lie inside its interval."""
    mean, _, interval = cell.partition(" [")
    if interval:
        low, high = (float(v) for v in interval.rstrip("]").split(","))
        assert low <= float(mean) <= high, cell
    return mean


@pytest.mark.slow
def test_graph_end_to_end_agrees_and_reruns_nothing(repo: Repo, mlflow_server: MlflowServer,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    from pipeline.params import load_config

    write_params(repo.path, "graph-e2e")
    t0 = time.perf_counter()
    out = repo.dvc("repro", timeout=420)
    first = time.perf_counter() - t0
    root = repo.path
    # params.yaml paths (model.pretrained, whose digest is in the fingerprint) are relative to
    # the repository root, where every stage runs.
    monkeypatch.chdir(root)
    config = load_config(root / "params.yaml")
    assert [s.name for s in config.experiments_list()] == list(EXPERIMENTS)

    # --- runs/: one finished run per experiment, written by a Ray trial ---
    for spec in config.experiments_list():
        run = root / "runs" / spec.name
        done = json.loads((run / "done.json").read_text())
        assert done["fingerprint"] == config.fingerprint(spec) and done["resumed_from"] == 0
        history = json.loads((run / "history.json").read_text())
        assert [e["epoch"] for e in history] == [1, 2]
        assert {"loss", "lr", "images_per_s", "loss/id", "loss/triplet"} <= set(history[0])
        assert ("code_perplexity" in history[0]) == spec.model.embedding_space
        assert (run / "checkpoints" / "last.pt").is_file() and (run / "model.pt").is_file()
    assert list((root / ".ray_results").glob("train-tiny-*/*/result.json")), "no Tune trials"

    # --- reports ---
    reports = root / "reports"
    stage_outs = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["report"]["outs"]
    for out_path in (next(iter(o)) if isinstance(o, dict) else o for o in stage_outs):
        assert (root / out_path).exists(), out_path
    id_loss = (reports / "curves" / "id_loss.csv").read_text()
    for spec in config.experiments_list():
        assert f",{spec.name}," in id_loss
    assert "no evaluated baseline" not in (reports / "results.md").read_text()

    # --- dvc metrics show: one narrow row per (test set, variant), = metrics/*.json ---
    shown = _metrics_show(repo)
    files = {p.name: json.loads(p.read_text()) for p in (root / "metrics").glob("*.json")}
    assert sorted(files) == sorted(f"{e}.json" for e in EXPERIMENTS)
    assert sorted(shown) == sorted(f"reports/metrics/{t}/{e.split('-')[1]}.json"
                                   for t in TEST_SETS for e in EXPERIMENTS)
    for name, doc in files.items():
        for test_set in TEST_SETS:
            row = shown[f"reports/metrics/{test_set}/{doc['variant']}.json"]
            assert row["mAP"] == round(doc["results"][test_set]["mAP"], 2), name
        assert doc["fingerprint"] == config.fingerprint(config.experiment(doc["experiment"]))
    assert max(len(line) for line in repo.dvc("metrics", "show").splitlines()) <= 200

    # --- dvc plots show: the comparison charts, on a page that needs no network ---
    repo.dvc("plots", "show", "-o", "dvc_plots")
    page = (root / "dvc_plots" / "index.html").read_text()
    assert "cdn.jsdelivr" not in page and "vegaEmbed" in page
    for title in ("ID (cross-entropy) loss per epoch", "Embedding Space code perplexity per epoch"):
        assert title in page
        assert {*TEST_SETS, "occluded_duke/twin"} <= set(doc["results"])
    table2 = (reports / "table2.md").read_text()
    table1 = (reports / "table1.md").read_text()
    header = [c.strip() for c in next(line for line in table2.splitlines()
                                       if line.startswith("| Index")).strip("|").split("|")]
    for spec in config.experiments_list():
        res = files[f"{spec.name}.json"]["results"]["occluded_duke"]
        row = dict(zip(header, _table_cells(table2, spec.variant), strict=True))
        assert _cell_mean(row["R@1 (measured)"]) == f"{res['R1']:.1f}"
        assert _cell_mean(row["mAP (measured)"]) == f"{res['mAP']:.1f}"
    t1_header = [c.strip() for c in next(line for line in table1.splitlines()
                                         if line.startswith("| Method")).strip("|").split("|")]
    for variant in ("vit_baseline", "ddrn"):  # Table 1 shows all but Table 2's middle rows
        res = files[f"occluded_duke-{variant}-s0.json"]["results"]["occluded_duke"]
        row = dict(zip(t1_header, _table_cells(table1, variant), strict=True))
        # One seed per row here: the cell's mean is that seed's number.
        assert (_cell_mean(row["O-Duke R@1"]), _cell_mean(row["O-Duke mAP"])) == \
            (f"{res['R1']:.1f}", f"{res['mAP']:.1f}")

    # --- MLflow: a parent run per stage, a nested run per trial with its final metrics ---
    client = MlflowClient(mlflow_server.uri)
    exp = client.get_experiment_by_name("graph-e2e")
    runs = client.search_runs([exp.experiment_id], max_results=200)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(r.data.tags["stage"] for r in parents) == ["evaluate", "report", "train"]
    assert all(r.info.status == "FINISHED" for r in runs)
    train_parent = next(r for r in parents if r.data.tags["stage"] == "train")
    assert train_parent.data.metrics["trained"] == 3.0
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == train_parent.info.run_id]
    assert sorted(r.data.tags["experiment"] for r in trials) == list(EXPERIMENTS)
    for trial in trials:
        doc = files[f"{trial.data.tags['experiment']}.json"]
        assert trial.data.tags["fingerprint"] == doc["fingerprint"]
        for test_set, res in doc["results"].items():
            for key in ("R1", "mAP", "mINP"):
                # logged rounded for display (the exact values are in metrics/<exp>.json)
                assert trial.data.metrics[f"{test_set}.{key}"] == round(res[key], 2)
        assert [m.step for m in client.get_metric_history(trial.info.run_id, "lr")] == [1, 2]
        assert "checkpoint" in {a.path for a in client.list_artifacts(trial.info.run_id)}

    # --- nothing changed: nothing reruns ---
    t0 = time.perf_counter()
    again = repo.dvc("repro")
    second = time.perf_counter() - t0
    assert "Running stage" not in again, again
    assert _dvc_status(repo) == {}

    # --- byte-stable: commit the outputs, rerun everything from scratch, git stays clean ---
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-q", "-m", "outputs")
    for name in ("runs", "eval", ".ray_results"):
        shutil.rmtree(root / name, ignore_errors=True)
    repo.dvc("repro", timeout=420)
    assert repo.run("git", "status", "--porcelain").strip() == ""
    print(f"\nfirst dvc repro (train/evaluate/report) {first:.1f} s, second {second:.1f} s;"
          f" {out.count('Running stage')} stages ran first")


def _checkpoint_epoch(path: Path) -> int:
    from ddrn.engine.checkpoint import load_checkpoint

    return int(load_checkpoint(path)["epoch"])


@pytest.mark.slow
def test_killed_train_stage_resumes_from_checkpoints(repo: Repo, mlflow_server: MlflowServer) -> None:
    from mlflow import MlflowClient

    epochs = 5
    write_params(repo.path, "graph-kill", epochs=epochs, iters_per_epoch=3)
    runs = repo.path / "runs"
    log = open(repo.path / "killed-train.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([str(VENV_BIN / "dvc"), "repro", "train"], cwd=repo.path,
                            env=repo.env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)

    def unfinished_with_checkpoint() -> list[Path]:
        return [d for d in runs.glob("*") if (d / "checkpoints" / "last.pt").is_file()
                and not (d / "done.json").is_file()] if runs.is_dir() else []

    try:
        deadline = time.monotonic() + 240
        while not unfinished_with_checkpoint():
            assert proc.poll() is None, (repo.path / "killed-train.log").read_text()[-4000:]
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    # Ray's trial workers are not in the killed group: they notice that their raylet is gone
    # and exit on their own (Ray checks about once a second). None may keep writing into runs/.
    marker, t_kill = repo.marker.split("=")[1], time.monotonic()
    while marked_processes(marker) and time.monotonic() - t_kill < 30:
        time.sleep(0.5)
    orphan_seconds = time.monotonic() - t_kill
    leftovers = kill_marked(marker)
    assert not leftovers, f"processes survived the kill by 30 s: {leftovers}"
    # Nor any temporary folder: Tune's hand-over folders live in the run dirs, which the rerun
    # cleans (checked below), never in the temp dir.
    assert not list(repo.tmp.glob("ddrn-*")), list(repo.tmp.iterdir())

    at_kill = {d.name: _checkpoint_epoch(d / "checkpoints" / "last.pt")
               for d in unfinished_with_checkpoint()}
    finished_before = {d.name: json.loads((d / "done.json").read_text())
                       for d in runs.glob("*") if (d / "done.json").is_file()}
    assert at_kill, "no unfinished trial with a checkpoint after the kill"
    assert all(1 <= e <= epochs for e in at_kill.values()), at_kill
    # Evaluating now refuses the half-trained weights in one line (no metrics for epoch-k weights).
    refused = subprocess.run(
        [str(VENV_BIN / "python"), "-m", "pipeline.evaluate", "--no-tracking",
         "--experiment", sorted(at_kill)[0],
         "--eval-dir", str(repo.tmp / "eval"), "--metrics-dir", str(repo.tmp / "metrics")],
        cwd=repo.path, env=repo.env, capture_output=True, text=True, timeout=300)
    last = refused.stderr.strip().splitlines()[-1]
    assert refused.returncode == 2 and last.startswith("error: ") and "unfinished" in last, \
        refused.stderr[-3000:]
    assert "Traceback" not in refused.stderr
    shutil.rmtree(repo.tmp / "eval", ignore_errors=True)
    shutil.rmtree(repo.tmp / "metrics", ignore_errors=True)

    out = repo.dvc("repro", timeout=420)
    assert "Running stage 'train'" in out
    for name in EXPERIMENTS:
        done = json.loads((runs / name / "done.json").read_text())
        history = json.loads((runs / name / "history.json").read_text())
        assert [e["epoch"] for e in history] == list(range(1, epochs + 1)), name
        if name in at_kill:  # resumed where the checkpoint was, not started over
            assert done["resumed_from"] == at_kill[name] and done["attempts"] == 2, done
        elif name in finished_before:  # skipped: untouched
            assert done == finished_before[name]
        else:  # not started before the kill
            assert done["resumed_from"] == 0
    assert _dvc_status(repo) == {}
    assert not list(runs.glob(f"*/{SCRATCH_PREFIX}*"))
    assert not list(repo.tmp.glob("ddrn-*")), list(repo.tmp.iterdir())

    # MLflow: the killed invocation's parent run was marked KILLED by the rerun, which FINISHED.
    client = MlflowClient(mlflow_server.uri)
    exp = client.get_experiment_by_name("graph-kill")
    parents = [r for r in client.search_runs([exp.experiment_id], "tags.stage = 'train'")
               if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(r.info.status for r in parents) == ["FINISHED", "KILLED"], parents
    # The killed invocation's trial runs are closed as KILLED; the resumed trial's new
    # run has the whole curve (epochs before the kill backfilled from history.json).
    for name in at_kill:
        trial_runs = client.search_runs([exp.experiment_id], f"tags.experiment = '{name}'")
        statuses = sorted(r.info.status for r in trial_runs)
        assert statuses == ["FINISHED", "KILLED"], statuses
        final = next(r for r in trial_runs if r.info.status == "FINISHED")
        steps = [m.step for m in client.get_metric_history(final.info.run_id, "lr")]
        assert sorted(set(steps)) == list(range(1, epochs + 1)), steps
    print(f"\nkilled with checkpoints at {at_kill}; finished before the kill: "
          f"{sorted(finished_before)}; Ray workers gone {orphan_seconds:.1f} s after the kill")


def test_every_profile_names_every_section_dvc_yaml_lists() -> None:
    """DVC refuses a stage whose ``params:`` key is missing from params.yaml (``Parameters
    'profiles.demo.loss' are missing``), so every profile must name each listed section (``{}``
    = the paper's defaults). Fast: reads the project's dvc.yaml and params.yaml only."""
    stages = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    listed = set()
    for stage in stages.values():
        for key in stage.get("do", stage).get("params", []):
            if isinstance(key, str) and key.startswith("profiles.${profile}."):
                listed.add(key.split(".")[2])  # the section: input, model, loss, ...
    missing = {name: sorted(listed - set(profile)) for name, profile in params["profiles"].items()}
    assert all(not m for m in missing.values()), f"params.yaml profiles lack sections: {missing}"
