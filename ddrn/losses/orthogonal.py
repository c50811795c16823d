"""DDRN's orthogonal loss on the Embedding Space (paper sec. 3.4, Eq. 3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def orthogonal_loss(codebook: Tensor, eps: float = 1e-12) -> Tensor:
    """L_Orthogonal = ||Ê Êᵀ - I||_F (Eq. 3), Ê = the codebook with L2-normalised rows.

    Paper: "The matrix Ë is obtained by normalizing the E matrix, ensuring that each row is L2
    normalized", and the norm is the Frobenius norm itself, not its square (lucidrains and DPM
    use the squared, n²-normalised form; we keep the paper's). The gradient of a norm,
    (ÊÊᵀ - I)/||ÊÊᵀ - I||_F, is 0/0 at an exactly orthonormal codebook (reachable: 128 codes in
    768 dimensions, and our initialisation), so we take sqrt(sum of squares + eps): the value is
    off by at most sqrt(eps) = 1e-6 and the gradient there is 0 instead of NaN.

    Args:
        codebook: (x, D) Embedding Space weight E (any float dtype; computed in fp32).
        eps: added inside the square root.

    Returns:
        A scalar fp32 tensor.
    """
    unit = F.normalize(codebook.float(), dim=1)  # (x, D)
    gram = unit @ unit.t()  # (x, x) cosines between codes
    residual = gram - torch.eye(gram.shape[0], device=gram.device, dtype=gram.dtype)
    return torch.sqrt(residual.pow(2).sum() + eps)
