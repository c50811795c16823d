"""Mechanism measurements of one trained experiment, written by the evaluate stage.

:func:`write_mechanism` runs where :func:`pipeline.trial.scoring.evaluate_experiment` already has the
model and the packed test sets open, and writes ``eval/<exp>/mechanism.json`` (one
:class:`MechanismRecord`), which the report's "Mechanism health" section reads
(:mod:`pipeline.report.mechanism`). Models without an Embedding Space get no file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ddrn.atomic import atomic_write_text
from ddrn.data import PackedDataset
from ddrn.evaluation import evaluate_rank, pairwise_distance
from ddrn.evaluation import mechanism as mech
from ddrn.models.embedding_space import code_usage
from pipeline.params import ExperimentSpec, ProjectConfig

MECHANISM_FILE = "mechanism.json"
"""Name of the record inside ``eval/<exp>/``."""


@dataclass
class MechanismRecord:
    """What ``eval/<exp>/mechanism.json`` holds (one record per experiment).

    ``test_sets[<set>]`` has: ``histogram`` (code counts over every query and gallery patch),
    ``perplexity``, ``dead_codes``, ``token_cosine`` (mean pairwise cosine of one image's patch
    tokens entering the Embedding Space), ``constant_code`` (the most used code),
    ``R1``/``mAP`` and ``R1_constant``/``mAP_constant`` (retrieval with block N's patch inputs all
    replaced by that code; no re-ranking in either), and ``twin``
    (:func:`ddrn.evaluation.mechanism.twin_statistics`) when the set has unoccluded twins.
    """

    experiment: str
    variant: str
    seed: int
    num_embeddings: int
    test_sets: dict[str, dict[str, Any]] = field(default_factory=dict)


def _retrieval(qf: torch.Tensor, gf: torch.Tensor, query: Any, gallery: Any,
               config: ProjectConfig) -> dict[str, float]:
    """R1 and mAP as the evaluate stage computes them, without re-ranking."""
    ev = config.evaluation
    if ev.feat_norm:
        qf, gf = F.normalize(qf, dim=1), F.normalize(gf, dim=1)
    res = evaluate_rank(pairwise_distance(qf, gf, "euclidean"), query.pids, gallery.pids,
                        query.camids, gallery.camids, max_rank=ev.max_rank).as_percentages()
    return {"R1": res["R1"], "mAP": res["mAP"]}


def measure_test_set(model: nn.Module, config: ProjectConfig, spec: ExperimentSpec,
                     packed: PackedDataset, device: torch.device) -> dict[str, Any]:
    """The mechanism numbers of one test set (see :class:`MechanismRecord`)."""
    ev, inp = config.evaluation, config.input
    query, gallery = packed.splits["query"], packed.splits["gallery"]
    q = mech.code_statistics(model, query, inp, ev.batch_size, device)
    g = mech.code_statistics(model, gallery, inp, ev.batch_size, device)
    hist = torch.tensor(q.histogram) + torch.tensor(g.histogram)
    use = code_usage(hist)
    n_q, n_g = len(query), len(gallery)
    code = int(hist.argmax())
    const_q = mech.extract_features(model, query, inp, ev.batch_size, device, constant_code=code)
    const_g = mech.extract_features(model, gallery, inp, ev.batch_size, device, constant_code=code)
    normal = _retrieval(q.features, g.features, query, gallery, config)
    constant = _retrieval(const_q, const_g, query, gallery, config)
    out: dict[str, Any] = {
        "histogram": hist.tolist(), **use,
        "token_cosine": (q.token_cosine * n_q + g.token_cosine * n_g) / max(n_q + n_g, 1),
        "constant_code": code, **normal,
        "R1_constant": constant["R1"], "mAP_constant": constant["mAP"],
    }
    twin = packed.splits.get("query_twin")
    if twin is not None and len(twin) == len(query) and len(twin):
        out["twin"] = mech.twin_statistics(model, query, twin, inp, ev.batch_size, device,
                                           spec.model.patch_size, spec.model.stride)
    return out


def write_mechanism(model: nn.Module, config: ProjectConfig, spec: ExperimentSpec,
                    test_sets: dict[str, PackedDataset], device: torch.device,
                    eval_dir: Path) -> Path | None:
    """Measure every test set and write ``<eval_dir>/mechanism.json``; None without a codebook."""
    space = getattr(model, "embedding_space", None)
    if space is None:
        return None
    record = MechanismRecord(spec.name, spec.variant, spec.seed, int(space.num_embeddings))
    for name, packed in test_sets.items():
        record.test_sets[name] = measure_test_set(model, config, spec, packed, device)
    path = Path(eval_dir) / MECHANISM_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(asdict(record), indent=1, sort_keys=True) + "\n")
    return path


def read_mechanism(eval_dir: Path) -> MechanismRecord | None:
    """``<eval_dir>/mechanism.json`` as a record, or None when the experiment has none."""
    path = Path(eval_dir) / MECHANISM_FILE
    if not path.is_file():
        return None
    return MechanismRecord(**json.loads(path.read_text()))
