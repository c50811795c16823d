"""Evaluate your own checkpoint on a dataset folder: one command, no pipeline needed.

    python -m pipeline.evaluate_checkpoint --checkpoint FILE --dataset-root DIR --dataset NAME \\
        [--rerank] [--neck-feat before|after] [--input-size H W] [--sie-coef 3.0]
        [--variant vit_baseline] [--params params.yaml] [--profile paper]

``FILE`` may be a checkpoint TransReID trained (its raw ``state_dict``, optionally under
``model``/``state_dict`` or with DataParallel's ``module.`` prefix) of any of its ViT kinds:
baseline, SIE, any stride, JPM. Its architecture is read from the weights
(:mod:`ddrn.models.transreid`) and it is evaluated as TransReID's ``test`` does: its input size,
mean/std 0.5, the pre-BN feature (JPM: global + 4 local / 4), L2-normalised; no params file and
no ImageNet file are read. A checkpoint that fits no known layout is a one-line error saying what
was recognised and what was not.

``FILE`` may also be this project's ``runs/<exp>/model.pt`` or ``checkpoints/last.pt``; then
``--variant`` and the profile of ``--params`` describe the network (and input/evaluation settings).

The dataset is read in its official layout and packed once into a temporary folder.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from torch import Tensor, nn

from ddrn.config import DATASET_NAMES
from ddrn.data import load_dataset, open_packed, pack_dataset
from ddrn.engine.checkpoint import load_module_state, read_state_file
from ddrn.errors import DataError
from ddrn.models import build_model
from ddrn.models.jpm import retrieval_feature
from ddrn.models.output import ReIDOutput
from ddrn.models.transreid import is_transreid, read_transreid
from ddrn.models.weights import unwrap_state_dict
from pipeline.cli import base_parser, run_stage
from pipeline.params import ProjectConfig, config_from_dict, load_config
from pipeline.trial.devices import resolve_device
from pipeline.trial.scoring import evaluate_split

log = logging.getLogger(__name__)


class NeckFeature(nn.Module):
    """A model whose ``features`` are taken before or after the BNNeck (TransReID's
    ``TEST.NECK_FEAT``; every TransReID config, and this project, use ``before``)."""

    def __init__(self, model: nn.Module, neck_feat: Literal["before", "after"]) -> None:
        super().__init__()
        self.model, self.neck_feat = model, neck_feat
        self.feature_dim = getattr(model, "feature_dim", 0)

    def forward(self, images: Tensor, camids: Tensor | None = None) -> ReIDOutput:
        out = self.model(images, camids)
        out.features = retrieval_feature(out, self.neck_feat)
        return out


def transreid_model(state: dict[str, Tensor], path: Path, input_size: tuple[int, int] | None,
                    sie_coef: float) -> tuple[nn.Module, tuple[int, int], int]:
    """The network a TransReID checkpoint describes, its weights loaded.

    Returns:
        (model, its input size (H, W), SIE cameras or 0).
    """
    layout, mapped = read_transreid(state, str(path), input_size)
    log.info("%s: TransReID checkpoint: %s", path, layout.describe())
    model = build_model(layout.model_config(sie_coef), layout.num_classes,
                        max(layout.num_cameras, 1), input_size=layout.input_size)
    own = model.state_dict()
    mapped.setdefault("classifier.weight", own["classifier.weight"])  # unused at test time
    load_module_state(model, mapped, path, "TransReID")
    return model, layout.input_size, layout.num_cameras


def evaluate_checkpoint(checkpoint: Path, dataset_root: Path, dataset: str,
                        config: ProjectConfig | None = None, variant: str = "vit_baseline",
                        rerank: bool = False, neck_feat: Literal["before", "after"] = "before",
                        input_size: tuple[int, int] | None = None, sie_coef: float = 3.0,
                        params: Path = Path("params.yaml"),
                        profile: str | None = None) -> dict[str, dict[str, float]]:
    """Metrics (percent) of ``checkpoint`` on ``dataset`` (and its twins when it has them).

    A TransReID checkpoint needs no ``config``; this project's checkpoints use ``config`` (read
    from ``params``/``profile`` when None) and ``variant``.
    """
    state = unwrap_state_dict(read_state_file(checkpoint), str(checkpoint))
    if is_transreid(state):
        model, size, cameras = transreid_model(state, checkpoint, input_size, sie_coef)
        device = resolve_device("auto")
        # TransReID's test settings are this project's defaults (256x128 unless read otherwise,
        # mean/std 0.5, L2-normalised features, CMC to rank 50).
        config = config_from_dict({"profile": "transreid", "profiles": {"transreid": {
            "input": {"height": size[0], "width": size[1]},
            "evaluation": {"batch_size": 64}}}}, source=str(checkpoint))
    else:
        if config is None:
            config = load_config(params, profile)
        spec = config.resolve(dataset, variant, seed=0)
        cls = state.get("classifier.weight")
        sie = state.get("sie_embed")
        cameras = int(sie.shape[0]) if sie is not None else 0
        model = build_model(spec.model, int(cls.shape[0]) if cls is not None else 1,
                            max(cameras, 1), input_size=(config.input.height, config.input.width))
        load_module_state(model, state, checkpoint, "model")
        device = resolve_device(spec.train.device)
    if neck_feat != "before":
        model = NeckFeature(model, neck_feat)
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
        if cameras > 1:
            top = max(max(query.camids, default=0), max(gallery.camids, default=0))
            if top >= cameras:
                raise DataError(f"{dataset_root}: camera id {top + 1} but {checkpoint} has SIE "
                                f"for {cameras} cameras; expected the dataset it was trained on")
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
                        help="this project's checkpoints: the variant that describes the network")
    parser.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking")
    parser.add_argument("--neck-feat", choices=("before", "after"), default="before",
                        help="retrieval feature before/after the BNNeck (TransReID TEST.NECK_FEAT)")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                        help="TransReID checkpoints: the training input size (default: found "
                             "from pos_embed at 256x128, else 384x128)")
    parser.add_argument("--sie-coef", type=float, default=3.0,
                        help="TransReID checkpoints with SIE: MODEL.SIE_COE (its configs: 3.0)")
    args = parser.parse_args(argv)
    results = evaluate_checkpoint(args.checkpoint, args.dataset_root, args.dataset, None,
                                  args.variant, args.rerank, args.neck_feat,
                                  tuple(args.input_size) if args.input_size else None,
                                  args.sie_coef, args.params, args.profile)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_stage(main))
