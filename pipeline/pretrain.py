"""pretrain stage: the backbone every re-ID variant of the profile fine-tunes from.

The paper fine-tunes an ImageNet ViT-B/16. With ``pretrain.corpus: null`` (the ``paper`` profile)
this stage only checks that ``model.pretrained`` names a file that is there, and says where to put
it otherwise (one line, exit 2). With a ``pretrain.corpus`` (the ``demo`` profile, whose tiny ViT has
no published checkpoint) it is the stand-in for ImageNet: it generates that synthetic corpus (its
own seed, whole bodies, identities drawn apart from every re-ID set), trains the profile's plain
ViT on it (identity classification + triplet, :meth:`~pipeline.params.ProjectConfig.pretrain_spec`),
and writes the ViT as a timm state dict to ``pretrain.output``, the file ``model.pretrained``
then names: the demo and the paper share one loading path (:func:`ddrn.models.vit.load_vit_weights`).

``data/pretrained/backbone.json`` records what the backbone is and how good it is *before*
fine-tuning: nearest-neighbour R1/mAP of its features on every test set with unoccluded twins,
next to a randomly initialised ViT of the same shape (the report shows both). It holds no
wall times, so an unchanged rerun writes the same bytes.

    python -m pipeline.pretrain [--params params.yaml] [--profile P] [--work-dir data/pretrain_work]
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ddrn.atomic import atomic_path, atomic_write_text
from ddrn.data import open_packed
from ddrn.data.synthetic import generate_synthetic
from ddrn.engine import fit
from pipeline.cli import base_parser, load_params, run_stage
from pipeline.file_digest import weights_file_digest
from pipeline.params import PRETRAIN_SET, ProjectConfig
from pipeline.preflight import pretrained_source
from pipeline.preprocess import preprocess_dataset
from pipeline.trial.experiment import build_experiment_model, prepare_training
from pipeline.trial.scoring import evaluate_split

log = logging.getLogger(__name__)

SUMMARY = Path("data") / "pretrained" / "backbone.json"
CORPUS_FORMAT = "dukemtmc"
"""The layout the corpus is written in (any of the five would do; Duke's allows 8 cameras)."""


def check_pretrained_file(config: ProjectConfig) -> dict[str, Any]:
    """The ``paper`` case: ``model.pretrained`` must name a file that exists (or timm's hub). A
    profile that sets neither it nor a corpus trains from random weights, recorded as such.

    Raises:
        CheckpointError: the file is missing (one line saying where to put it).
    """
    source: dict[str, Any] = pretrained_source(
        config.model.pretrained, f"profiles.{config.profile}.model.pretrained",
        config.model.backbone)
    if "path" in source:
        source["sha256_16"] = weights_file_digest(source["path"])
    return source


def pretrain_backbone(config: ProjectConfig, work_dir: Path, threads: int = 2) -> dict[str, Any]:
    """Generate the corpus, train the plain ViT on it, write the backbone; returns the summary.

    ``work_dir`` holds the corpus and the run's checkpoints, so a killed stage resumes its
    training; it is removed once the backbone is written.
    """
    pre = config.pretrain
    assert pre.corpus is not None
    spec = config.pretrain_spec()
    fingerprint = config.fingerprint(spec)
    # Keyed by the fingerprint (corpus, recipe, code): a killed run resumes only its own work.
    scratch = work_dir / fingerprint
    raw, packed_root = scratch / "raw", scratch / "packed"
    corpus_dir = packed_root / PRETRAIN_SET
    if not (corpus_dir / "meta.json").is_file():
        log.info("pretrain: generating the corpus (%d identities, seed %d)",
                 pre.corpus.num_train_ids, pre.corpus.seed)
        shutil.rmtree(raw, ignore_errors=True)
        generate_synthetic(CORPUS_FORMAT, pre.corpus, raw)
        preprocess_dataset(CORPUS_FORMAT, raw, corpus_dir, config.input.height, config.input.width,
                           threads, {"pretrain_corpus": dataclasses.asdict(pre.corpus)})
        shutil.rmtree(raw, ignore_errors=True)
    setup = prepare_training(config, spec, packed_root)
    train = setup.packed.splits["train"]
    log.info("pretrain: %d images of %d identities, %d epochs", len(train), setup.packed.num_classes,
             spec.train.epochs)
    result = fit(setup.model, setup.criterion, setup.loader, spec.train, scratch / "run",
                 setup.device, resume=True, seed=spec.seed, owner=(spec.name, fingerprint))
    output = Path(pre.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    backbone = {k: v.detach().cpu().contiguous() for k, v in setup.model.backbone.state_dict().items()}
    with atomic_path(output) as tmp:
        torch.save(backbone, tmp)
    summary = {
        "source": "synthetic corpus", "path": str(output),
        "sha256_16": weights_file_digest(output),
        "corpus": {"format": CORPUS_FORMAT, "identities": int(setup.packed.num_classes),
                   "images": int(len(train)), **dataclasses.asdict(pre.corpus)},
        "pretext": "identity classification + triplet (the plain ViT of the profile)",
        "train": dataclasses.asdict(spec.train),
        "final_loss": _last_loss(result.history),
        "quality": backbone_quality(config, spec, setup.model, setup.device),
    }
    shutil.rmtree(work_dir, ignore_errors=True)
    return summary


def backbone_quality(config: ProjectConfig, spec, model: torch.nn.Module,
                     device: torch.device) -> dict[str, Any]:
    """kNN R1/mAP (%) of ``model``'s features, before any fine-tuning, on every packed test set
    with unoccluded twins, next to a randomly initialised model of the same shape."""
    packed_root = Path("data") / "packed"
    random_model = build_experiment_model(config, spec, 1, 1).to(device)
    out: dict[str, Any] = {}
    for name in sorted(config.datasets):
        folder = packed_root / name
        if not (folder / "meta.json").is_file():
            continue
        packed = open_packed(folder)
        twin = packed.splits.get("query_twin")
        if twin is None or not len(twin):
            continue
        gallery = packed.splits["gallery"]
        row: dict[str, Any] = {"queries": len(packed.splits["query"]), "gallery": len(gallery)}
        for label, net in (("pretrained", model), ("random_init", random_model)):
            net.eval()
            occluded = evaluate_split(net, config, packed.splits["query"], gallery, device)
            whole = evaluate_split(net, config, twin, gallery, device, occluded["gallery_features"])
            row[label] = {"occluded": _headline(occluded["metrics"]),
                          "twin": _headline(whole["metrics"])}
        out[name] = row
        log.info("pretrain: %s before fine-tuning: twin R1 %.1f (random init %.1f), occluded R1 "
                 "%.1f (%.1f)", name, row["pretrained"]["twin"]["R1"],
                 row["random_init"]["twin"]["R1"], row["pretrained"]["occluded"]["R1"],
                 row["random_init"]["occluded"]["R1"])
    return out


def _headline(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(float(metrics[k]), 2) for k in ("R1", "mAP")}


def _last_loss(history: Any) -> float | None:
    if isinstance(history, list) and history and isinstance(history[-1], dict):
        loss = history[-1].get("loss")
        return None if loss is None else round(float(loss), 4)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser("Pretrain the profile's ViT backbone on its synthetic corpus, or check "
                         "that the ImageNet file model.pretrained names is present.")
    parser.add_argument("--work-dir", type=Path, default=Path("data") / "pretrain_work",
                        help="corpus and checkpoints while training (removed at the end)")
    parser.add_argument("--threads", type=int, default=2, help="image decoding threads")
    args = parser.parse_args(argv)
    config = load_params(args)
    if config.pretrain.corpus is None:
        summary = check_pretrained_file(config)
        log.info("pretrain: profile %s starts from %s", config.profile,
                 summary.get("path", summary["source"]))
    else:
        summary = pretrain_backbone(config, args.work_dir, args.threads)
    atomic_write_text(SUMMARY, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_stage(main))
