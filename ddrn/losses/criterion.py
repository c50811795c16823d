"""The training objective: every loss term and its weight, combined in exactly this one place."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ddrn.config import LossConfig
from ddrn.errors import ConfigError
from ddrn.losses.cross_entropy import id_loss
from ddrn.losses.margin import ArcFace, HSArcFace, SubCenterArcFace, routing_counts
from ddrn.losses.orthogonal import orthogonal_loss
from ddrn.losses.triplet import triplet_loss
from ddrn.models.output import ReIDOutput

_MARGIN_HEADS = {"arcface": ArcFace, "subcenter": SubCenterArcFace, "hs_arcface": HSArcFace}


@dataclass
class LossResult:
    """``total`` (scalar) is the sum of ``terms`` (already weighted), named for logging.

    ``routing`` (2, k) is HS-ArcFace's :func:`~ddrn.losses.margin.routing_counts` of the batch
    (None without an HS-ArcFace head): the trainer sums it into per-epoch routing shares.
    """

    total: Tensor
    terms: dict[str, Tensor]
    routing: Tensor | None = None


class ReIDCriterion(nn.Module):
    """Weighted sum of the terms a :class:`LossConfig` switches on.

    * ``id``: cross-entropy of ``output.id_logits`` (the global or the local BN feature);
    * ``triplet``: batch-hard triplet on the pre-BN ``global_features``, averaged with the same on
      ``local_features`` when the model has a local branch ("Triplet losses, computed with
      corresponding Bottle Neck layers", sec. 3.1);
    * ``margin``: the margin head (ArcFace / Sub-center / HS-ArcFace) on ``global_bn``;
    * ``orthogonal``: Eq. 3 on ``output.codebook``.

    With TransReID's JPM parts (``output.part_logits``/``part_features``) the id and triplet
    terms are 0.5 x the global term + 0.5 x the mean of the part terms, as TransReID weighs them.

    A term is present when its weight is > 0 (and, for ``margin``, a head is configured). The
    margin head's centres are parameters of this module, so optimise ``criterion.parameters()``
    along with the model's.
    """

    def __init__(self, cfg: LossConfig, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.margin_head: nn.Module | None = None
        if cfg.margin_head != "none" and cfg.margin_weight > 0:
            head = _MARGIN_HEADS[cfg.margin_head]
            k = 1 if cfg.margin_head == "arcface" else cfg.k
            extra = {"routing": cfg.hs_routing} if head is HSArcFace else {}
            self.margin_head = head(feature_dim, num_classes, scale=cfg.scale, margin=cfg.margin,
                                    k=k, **extra)

    def forward(self, output: ReIDOutput, pids: Tensor) -> LossResult:
        """Loss of one batch.

        Args:
            output: the model's output for the batch.
            pids: (B,) int64 training labels in [0, C).

        Raises:
            ConfigError: ``orthogonal_weight`` > 0 for a model without an Embedding Space.
        """
        cfg = self.cfg
        terms: dict[str, Tensor] = {}
        if cfg.id_weight > 0:
            ide = id_loss(output.id_logits, pids, cfg.label_smoothing)
            if output.part_logits is not None:
                ide = _with_parts(ide, [id_loss(output.part_logits[:, k], pids, cfg.label_smoothing)
                                        for k in range(output.part_logits.shape[1])])
            terms["id"] = cfg.id_weight * ide
        if cfg.triplet_weight > 0:
            branches = [output.global_features]
            if output.local_features is not None:
                branches.append(output.local_features)
            tri = torch.stack([triplet_loss(f, pids, cfg.triplet_margin) for f in branches]).mean()
            if output.part_features is not None:
                tri = _with_parts(tri, [triplet_loss(output.part_features[:, k], pids,
                                                     cfg.triplet_margin)
                                        for k in range(output.part_features.shape[1])])
            terms["triplet"] = cfg.triplet_weight * tri
        if self.margin_head is not None:
            terms["margin"] = cfg.margin_weight * self.margin_head(output.global_bn, pids)
        if cfg.orthogonal_weight > 0:
            if output.codebook is None:
                raise ConfigError("loss.orthogonal_weight: > 0 but the model has no Embedding "
                                  "Space; expected model.embedding_space: true or weight 0")
            terms["orthogonal"] = cfg.orthogonal_weight * orthogonal_loss(output.codebook)
        if not terms:
            raise ConfigError("loss: every term has weight 0; expected at least one of id_weight, "
                              "triplet_weight, margin_weight, orthogonal_weight > 0")
        total = torch.stack(list(terms.values())).sum()
        routing = (routing_counts(*self.margin_head.route(output.global_bn, pids))
                   if isinstance(self.margin_head, HSArcFace) else None)
        return LossResult(total=total, terms=terms, routing=routing)


def _with_parts(global_term: Tensor, part_terms: list[Tensor]) -> Tensor:
    """TransReID's JPM weighting (its ``make_loss``): 0.5 x global + 0.5 x mean over parts."""
    return 0.5 * global_term + 0.5 * torch.stack(part_terms).mean()


def build_criterion(loss_cfg: LossConfig, feature_dim: int, num_classes: int) -> ReIDCriterion:
    """The criterion for a resolved ``loss`` section; ``feature_dim`` = ``model.feature_dim``."""
    return ReIDCriterion(loss_cfg, feature_dim, num_classes)
