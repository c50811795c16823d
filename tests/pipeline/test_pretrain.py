"""pipeline.pretrain: the demo's synthetic-corpus backbone and the paper profile's file check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from tiny_project import TINY_SYN, pack_synthetic, tiny_params

from ddrn.data.synthetic import _identities
from ddrn.models import build_model
from pipeline import pretrain
from pipeline.params import config_from_dict, load_config

CORPUS = {**TINY_SYN, "num_train_ids": 6, "num_test_ids": 1, "query_occlusion": 0.0,
          "gallery_occlusion": 0.0, "train_occlusion": 0.0, "seed": 21}


def pretrain_params(output: str = "data/pretrained/vit_backbone.pth") -> dict:
    raw = tiny_params()
    profile = raw["profiles"]["tiny"]
    profile["pretrain"] = {"corpus": CORPUS, "train": {"epochs": 2}, "output": output}
    profile["model"]["pretrained"] = output
    return raw


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny profile with a pretrain corpus, its O-Duke-like test set packed for real."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(pretrain_params()))
    config = load_config(tmp_path / "params.yaml")
    pack_synthetic(config, tmp_path / "data")
    return tmp_path


def test_pretrained_backbone_loads_through_model_pretrained(project: Path) -> None:
    assert pretrain.main(["--params", "params.yaml"]) == 0
    config = load_config(project / "params.yaml")
    weights = project / config.pretrain.output
    state = torch.load(weights, map_location="cpu", weights_only=True)
    # A flat timm ViT state dict, like timm's ImageNet file: no re-ID heads, no classifier.
    assert "cls_token" in state and "pos_embed" in state and "blocks.0.attn.qkv.weight" in state
    assert not any(k.startswith(("head", "classifier", "bottleneck")) for k in state)

    # Every variant's model starts from it (the same loading path as ImageNet weights) ...
    for spec in config.experiments_list():
        model = build_model(spec.model, 3, 2, input_size=(32, 16))
        loaded = model.backbone.state_dict()
        for name, value in state.items():
            assert torch.equal(loaded[name], value), (spec.name, name)

    # ... and the summary says what it is and how good it is before fine-tuning.
    summary = json.loads((project / pretrain.SUMMARY).read_text())
    assert summary["source"] == "synthetic corpus" and summary["corpus"]["identities"] == 6
    quality = summary["quality"]["occluded_duke"]
    for which in ("pretrained", "random_init"):
        for split in ("twin", "occluded"):
            assert 0.0 <= quality[which][split]["R1"] <= 100.0
    assert not (project / "data/pretrain_work").exists() or \
        not any((project / "data/pretrain_work").iterdir())


def test_rerun_writes_the_same_bytes(project: Path) -> None:
    """No wall times in the outputs and a deterministic run: dvc.lock stays put on a rerun."""
    assert pretrain.main(["--params", "params.yaml"]) == 0
    first = {p.name: p.read_bytes() for p in (project / "data/pretrained").iterdir()}
    assert pretrain.main(["--params", "params.yaml"]) == 0
    second = {p.name: p.read_bytes() for p in (project / "data/pretrained").iterdir()}
    assert first == second


def test_new_pretrained_weights_change_the_fingerprint(project: Path) -> None:
    config = load_config(project / "params.yaml")
    spec = config.experiments_list()[0]
    weights = project / config.pretrain.output
    weights.parent.mkdir(parents=True)
    torch.save({"w": torch.zeros(1)}, weights)
    before = config.fingerprint(spec)
    torch.save({"w": torch.ones(1)}, weights)
    assert config.fingerprint(spec) != before


def test_paper_profile_only_checks_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    raw = tiny_params()
    raw["profiles"]["tiny"]["model"]["pretrained"] = "weights/jx_vit_base_p16_224-80ecf9dd.pth"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    code = pretrain.run_stage(pretrain.main, ["--params", "params.yaml"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "weights/jx_vit_base_p16_224-80ecf9dd.pth not found" in err and "place it at" in err

    (tmp_path / "weights").mkdir()
    torch.save({"cls_token": torch.zeros(1, 1, 16)}, tmp_path / "weights/jx_vit_base_p16_224-80ecf9dd.pth")
    assert pretrain.run_stage(pretrain.main, ["--params", "params.yaml"]) == 0
    summary = json.loads((tmp_path / pretrain.SUMMARY).read_text())
    assert summary["source"] == "file" and len(summary["sha256_16"]) == 16


def test_corpus_identities_are_not_the_test_sets() -> None:
    """The demo corpus draws its people from its own seed: none equals a re-ID set's person."""
    config = load_config(Path(__file__).resolve().parents[2] / "params.yaml")
    corpus = config.pretrain.corpus
    assert corpus is not None and corpus.seed not in {
        ds.synthetic.seed for ds in config.datasets.values()}
    pool = {json.dumps(vars(i), sort_keys=True) for i in _identities(corpus, corpus.num_train_ids)}
    for name, ds in config.datasets.items():
        n = ds.synthetic.num_train_ids + ds.synthetic.num_test_ids + ds.synthetic.num_distractor_ids
        others = {json.dumps(vars(i), sort_keys=True) for i in _identities(ds.synthetic, n)}
        assert not pool & others, name


def test_pretrain_section_rejects_a_bad_key() -> None:
    raw = pretrain_params()
    raw["profiles"]["tiny"]["pretrain"]["train"] = {"epoch": 3}
    with pytest.raises(Exception, match=r"pretrain\.train\.epoch: unknown key"):
        config_from_dict(raw)
