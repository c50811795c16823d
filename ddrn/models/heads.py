"""BNNeck (Luo et al., "Bag of Tricks") and the bias-free ID classifier that reads it."""

from __future__ import annotations

from torch import Tensor, nn


class BNNeck(nn.Module):
    """BatchNorm1d whose bias is frozen at 0, between the triplet and the classification features.

    The triplet loss reads the feature before it, the classifier / margin head the one after it;
    freezing the shift keeps the BN feature centred on the hypersphere the classifier works on.
    Init: weight 1, bias 0 (TransReID's ``weights_init_kaiming`` for BatchNorm).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        self.bn.bias.requires_grad_(False)

    def forward(self, features: Tensor) -> Tensor:
        """(B, D) -> (B, D)."""
        return self.bn(features)


class IDClassifier(nn.Linear):
    """Bias-free linear ID classifier, weights N(0, 0.001) (TransReID's ``weights_init_classifier``)."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__(dim, num_classes, bias=False)
        nn.init.normal_(self.weight, std=0.001)
