"""The ID loss: cross-entropy on the bias-free classifier's logits, optional label smoothing."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def id_loss(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy, in fp32.

    With ``label_smoothing`` ε the target is (1-ε)·one-hot + ε/C, the same as TransReID's
    ``CrossEntropyLabelSmooth`` (which every person re-ID config of TransReID turns off).

    Args:
        logits: (B, C).
        labels: (B,) int64 class indices.
        label_smoothing: ε in [0, 1).
    """
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
