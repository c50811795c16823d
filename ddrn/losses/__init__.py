"""Re-ID losses: ID cross-entropy, batch-hard triplet, angular-margin heads, orthogonal loss."""

from ddrn.losses.criterion import LossResult, ReIDCriterion, build_criterion
from ddrn.losses.cross_entropy import id_loss
from ddrn.losses.margin import ArcFace, HSArcFace, SubCenterArcFace, angular_margin, margin_logits
from ddrn.losses.orthogonal import orthogonal_loss
from ddrn.losses.triplet import pairwise_euclidean, triplet_loss

__all__ = [
    "ArcFace", "HSArcFace", "LossResult", "ReIDCriterion", "SubCenterArcFace", "angular_margin",
    "build_criterion", "id_loss", "margin_logits", "orthogonal_loss", "pairwise_euclidean",
    "triplet_loss",
]
