"""Evaluate your own checkpoint on a dataset folder: one command, no pipeline needed.

    python -m pipeline.evaluate_checkpoint --checkpoint FILE --dataset-root DIR --dataset NAME \\
        [--variant vit_baseline] [--params params.yaml] [--profile paper] [--rerank]

``FILE`` may be this project's ``runs/<exp>/model.pt`` or ``checkpoints/last.pt``, or a
TransReID-style raw ``state_dict`` of the ViT baseline (keys ``base.*``, ``bottleneck.*``,
``classifier.*``, optionally under ``model``/``state_dict`` or with a ``module.`` prefix), whose
keys are mapped onto this model. The variant's model section (from the profile) must describe
the same network; a checkpoint that does not fit is a one-line error naming the first misfit
key. The dataset is read in its official layout and packed once into a temporary folder.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ddrn.config import DATASET_NAMES
from ddrn.data import load_dataset, open_packed, pack_dataset
from ddrn.engine.checkpoint import load_module_state, read_state_file
from ddrn.errors import CheckpointError
from ddrn.models import build_model
from pipeline.cli import base_parser, load_params, run_stage
from pipeline.experiment import evaluate_split, resolve_device

TRANSREID_PREFIXES = (("base.", "backbone."), ("bottleneck.", "global_neck.bn."))
"""TransReID ``build_transformer`` names -> this project's :class:`~ddrn.models.ViTReID` names."""


def extract_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The model ``state_dict`` inside a loaded checkpoint file, TransReID names mapped."""
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: no model state_dict found; expected a state_dict, or a "
                              "dict with 'model' or 'state_dict'")
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    if any(k.startswith("base.") for k in state):
        mapped = {}
        for k, v in state.items():
            for old, new in TRANSREID_PREFIXES:
                if k.startswith(old):
                    k = new + k[len(old):]
                    break
            if k == "backbone.sie_embed":
                k = "sie_embed"
            mapped[k] = v
        state = mapped
    return state


def evaluate_checkpoint(checkpoint: Path, dataset_root: Path, dataset: str, config: Any,
                        variant: str, rerank: bool = False) -> dict[str, dict[str, float]]:
    """Metrics (percent) of ``checkpoint`` on ``dataset`` (and its twins when it has them)."""
    state = extract_state_dict(read_state_file(checkpoint), checkpoint)
    spec = config.resolve(dataset, variant, seed=0)
    cls = state.get("classifier.weight")
    num_classes = int(cls.shape[0]) if cls is not None else 1
    sie = state.get("sie_embed")
    num_cameras = int(sie.shape[0]) if sie is not None else 1
    model = build_model(spec.model, num_classes, num_cameras,
                        input_size=(config.input.height, config.input.width))
    load_module_state(model, state, checkpoint, "model")
    device = resolve_device(spec.train.device)
    model.to(device)
    if rerank:
        config = dataclasses.replace(config, cfg=dataclasses.replace(
            config.cfg, evaluation=dataclasses.replace(config.evaluation, rerank=True)))
    parsed = load_dataset(dataset, dataset_root)
    results = {}
    with tempfile.TemporaryDirectory(prefix="ddrn-eval-") as tmp:
        pack_dataset(parsed, Path(tmp) / dataset, config.input.height, config.input.width)
        packed = open_packed(Path(tmp) / dataset)
        query, gallery = packed.splits["query"], packed.splits["gallery"]
        out = evaluate_split(model, config, query, gallery, device)
        results[dataset] = out["metrics"]
        twin = packed.splits.get("query_twin")
        if twin is not None and len(twin):
            results[f"{dataset}/twin"] = evaluate_split(model, config, twin, gallery, device,
                                                        out["gallery_features"])["metrics"]
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--dataset-root", type=Path, required=True,
                        help="the dataset folder in its official layout")
    parser.add_argument("--dataset", required=True, choices=DATASET_NAMES)
    parser.add_argument("--variant", default="vit_baseline",
                        help="the variant whose model section describes the checkpoint")
    parser.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking")
    args = parser.parse_args(argv)
    config = load_params(args)
    results = evaluate_checkpoint(args.checkpoint, args.dataset_root, args.dataset, config,
                                  args.variant, args.rerank)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_stage(main))
