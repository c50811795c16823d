"""The ``paper`` profile at full size on the CPU: ``make paper-smoke`` (slow).

A scratch git + DVC copy of the project whose ``params.yaml`` keeps the paper recipe (ViT-B/16,
256x128 input, stride 11 -> 22x11 = 242 patch tokens, SGD, TransReID augmentation, the paper's
loss settings) and changes only what a CPU box cannot afford: the five datasets are the
synthetic generator's at full size (256x128, official layouts) with a few ids each, training is
one epoch of ``DDRN_SMOKE_ITERS`` iterations (default 1) at batch ``DDRN_SMOKE_BATCH`` (default 8;
the paper's 64 needs ~10 GB per trial on the CPU), and Ray runs one trial at a time. The ViT-B/16
and ResNet-50 weight files at the paths the profile names are written by the test in timm's
ImageNet format from randomly initialised timm models (the real ones cannot be downloaded here),
so ``build_model`` loads them and resamples the 14x14 position grid to 22x11.

``dvc repro`` then runs download -> preprocess -> train (Ray Tune, MLflow) -> evaluate -> report
for every variant the profile trains (all seven, on all three training sets and five test sets).
The test prints each variant's step time and the peak memory of its trial process.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import pytest
import torch
import yaml
from test_graph import PROJECT, Repo  # the scratch-repo helper of the DVC graph test
from tiny_project import five_synthetic_sets

BATCH = int(os.environ.get("DDRN_SMOKE_BATCH", "8"))
ITERS = int(os.environ.get("DDRN_SMOKE_ITERS", "1"))
SYN = {"num_distractor_ids": 1, "images_per_id": 4, "num_cameras": 2, "height": 256, "width": 128}
DATASETS = five_synthetic_sets({name: (4, 3) for name in ("occluded_duke", "market1501",
                                                        "dukemtmc")})
# Every variant the paper profile trains, each once: Table 2 on Occluded-Duke, the Table 1
# baselines on Market (tested on Market, O-REID and P-REID) and DDRN on DukeMTMC.
EXPERIMENTS = {
    "ablation": {"train_set": "occluded_duke", "test_sets": ["occluded_duke"],
                 "variants": ["vit_baseline", "es", "hs", "es_orth", "ddrn"], "seeds": [1234]},
    "market": {"train_set": "market1501",
               "test_sets": ["market1501", "occluded_reid", "partial_reid"],
               "variants": ["subcenter", "bot_resnet50"], "seeds": [1234]},
    "duke": {"train_set": "dukemtmc", "test_sets": ["dukemtmc"], "variants": ["ddrn"],
             "seeds": [1234]},
}


def paper_smoke_params(experiment_name: str) -> dict:
    """The project's params.yaml with the ``paper`` profile cut to CPU size (see the docstring)."""
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    paper = params["profiles"]["paper"]
    paper["datasets"] = {name: {"source": "synthetic", "synthetic": {**SYN, **syn}}
                         for name, syn in DATASETS.items()}
    paper["train"] = {"epochs": 1, "warmup_epochs": 0, "iters_per_epoch": ITERS,
                      "batch_size": BATCH, "device": "cpu"}
    paper["experiments"] = EXPERIMENTS
    paper["ray"] = {"cpus_per_trial": 2, "gpus_per_trial": 0, "max_concurrent_trials": 1,
                    "max_failures": 0, "num_cpus": 2, "object_store_mb": 100}
    paper["tracking"] = {"experiment_name": experiment_name}
    paper["report"] = {"tsne_ids": 3, "topk": 3, "retrieval_queries": 2}
    return {**params, "profile": "paper", "profiles": {"paper": paper}}


def write_timm_weights(repo: Path, paper: dict) -> None:
    """timm ImageNet-format weight files at the profile's paths, from random timm models."""
    import timm

    torch.manual_seed(0)
    for key, arch in (("pretrained", "vit_base_patch16_224"), ("resnet_pretrained", "resnet50")):
        path = repo / paper["model"][key]
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(timm.create_model(arch, pretrained=False).state_dict(), path)


@pytest.mark.slow
def test_paper_profile_full_size_on_cpu(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    path.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("ddrn", "pipeline"):
        shutil.copytree(PROJECT / name, path / name, ignore=ignore)
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy2(PROJECT / name, path / name)
    experiment_name = f"paper-smoke-{uuid.uuid4().hex[:6]}"
    params = paper_smoke_params(experiment_name)
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    paper = params["profiles"]["paper"]
    write_timm_weights(path, paper)
    repo = Repo(path)
    try:
        repo.init("paper smoke")
        repo.run("git", "add", "-A")
        repo.run("git", "commit", "-q", "-m", "scratch project")
        repo.dvc("repro", timeout=3000)
    finally:
        repo.cleanup()

    names = [f"{g['train_set']}-{v}-s1234" for g in EXPERIMENTS.values() for v in g["variants"]]
    print(f"\npaper profile smoke: ViT-B/16 256x128 stride 11, batch {BATCH}, {ITERS} iteration(s)"
          f" per variant, CPU threads {torch.get_num_threads()}")
    for name in names:
        history = json.loads((path / "runs" / name / "history.json").read_text())
        assert len(history) == 1 and all(v == v for v in history[0].values()), name  # no NaN
        metrics = json.loads((path / "metrics" / f"{name}.json").read_text())
        group = next(g for g in EXPERIMENTS.values() if name.startswith(g["train_set"] + "-"))
        assert set(group["test_sets"]) <= set(metrics["results"]), name
        h = history[0]
        print(f"  {name:36s} step {h['epoch_seconds'] / ITERS:7.1f} s   "
              f"peak RSS {h['peak_rss_mb'] / 1024:5.2f} GB   loss {h['loss']:.3f}")
    # the 242-token grid: the model in the repo loads the written ViT-B/16 weights and resamples
    state = torch.load(path / "runs" / names[0] / "model.pt", map_location="cpu",
                       weights_only=True)["model"]  # {format, model, provenance}
    pos = next(v for k, v in state.items() if k.endswith("pos_embed"))
    assert tuple(pos.shape) == (1, 1 + 22 * 11, 768)
    report = (path / "reports" / "results.md").read_text()
    assert "paper" in report and all(v in report for v in ("vit_baseline", "ddrn"))
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{path / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment_name)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    # Run names start with what differs (issue 16); the experiment is the run's tag.
    trained = {r.data.tags.get("experiment") for r in runs if r.data.tags.get("run_kind") == "trial"}
    assert set(names) <= trained, sorted(trained)
