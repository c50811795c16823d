"""DDRN's Embedding Space (paper sec. 3.3, Eq. 1-2): patch tokens replaced by codebook vectors.

Paper: "The features between the N-1th and Nth layers are replaced by the most similar vectors
in the Embedding Space" (Fig. 2), and "During the forward pass, Argmax is employed, while Gumbel
Softmax is used for backpropagation in the backward pass" (sec. 3.3), with

    t'_i = sum_j G(S(t_i E^T))_j E_j                                   (Eq. 1)
    G(v_i) = exp((v_i + G_i) / tau) / sum_j exp((v_j + G_j) / tau)     (Eq. 2)

Choices the paper leaves open, made here:

* **Which index the forward pass uses.** The clean argmax of the logits t_i E^T ("replaced by the
  most similar vectors", "During the forward pass, Argmax is employed"), not the noisy argmax of
  ``F.gumbel_softmax(hard=True)``. The Gumbel noise only shapes the surrogate gradient, so
  training and evaluation pick codes by the same rule and evaluation is deterministic.
* **The surrogate.** Eq. 2 applied to the logits v = t_i E^T: ``soft = softmax((v + G) / tau)``.
  Eq. 1 writes G(S(.)), a Gumbel-Softmax of the softmax; we read S as naming the softmax inside
  G (applying Eq. 2 to probabilities would squash every logit into [0, 1] and make tau, not the
  tokens, decide the sample). ``sampling="default"`` is the "default method [17] of copying
  decoder gradients to the encoder": the same straight-through estimator with the noise-free
  ``softmax(v / tau)`` (the Fig. 6 comparison).
* **Exactness.** The output is computed as ``E[index] + (soft - soft.detach()) @ E``: the second
  term is exactly zero in the forward pass, so each token is *bit-for-bit* a codebook row, while
  the gradient equals that of the usual ``(hard - soft.detach() + soft) @ E``: the chosen rows get
  the task gradient directly, and tokens and all rows get it through ``soft``.
* **Precision.** Logits, noise and softmax run in fp32 with autocast off (tau = 0.1 multiplies
  the logits by 10, and fp16 Gumbel noise is a known NaN source); the Exp(1) draw behind the
  noise is clamped away from 0, so its logarithm is finite.
* **Initialisation.** Random Gaussian rows with std 1/sqrt(D), so each row has norm ~1 (the
  scale of a LayerNorm'd token's direction) and the rows are *not* orthogonal to start with
  (cosines ~ N(0, 1/D)). The paper adds the orthogonal loss "to ensure that these discrete
  vectors span the entire feature space" (sec. 1) and shows in Fig. 3 what it changes; an
  orthonormal initialisation would start at the loss's minimum and hide exactly that effect
  (Table 2, index 1 vs 3). Block N starts with a LayerNorm, so the code scale only sets how
  sharp the surrogate softmax is, not what block N sees.
* **Compile-friendly.** No ``.item()``, no host syncs, no data-dependent Python branches; the only
  branch is on ``self.training``. Code usage statistics live in :meth:`EmbeddingSpace.usage`,
  called outside the forward pass.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class EmbeddingSpace(nn.Module):
    """A learnable codebook of ``num_embeddings`` vectors that replaces each token by one of them.

    Args:
        num_embeddings: x, the number of code vectors (paper: 128).
        dim: D, the token width.
        tau: the Gumbel-Softmax temperature of Eq. 2 (paper: 0.1).
        sampling: ``gumbel`` (Eq. 2) or ``default`` (noise-free straight-through softmax).
    """

    def __init__(self, num_embeddings: int, dim: int, tau: float = 0.1,
                 sampling: Literal["gumbel", "default"] = "gumbel") -> None:
        super().__init__()
        if num_embeddings < 2 or tau <= 0 or sampling not in ("gumbel", "default"):
            raise ValueError(f"bad EmbeddingSpace({num_embeddings}, {dim}, tau={tau}, "
                             f"sampling={sampling!r})")
        self.num_embeddings = num_embeddings
        self.dim = dim
        self.tau = tau
        self.sampling = sampling
        self.weight = nn.Parameter(torch.empty(num_embeddings, dim))  # E: (x, D)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=self.dim ** -0.5)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.dim}, tau={self.tau}, sampling={self.sampling}"

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Replace every token by a codebook row.

        Args:
            tokens: (B, N, D) patch tokens after block N-1 (the CLS token is not passed in).

        Returns:
            ``(quantized, indices)``: (B, N, D) in ``tokens``' dtype, each row exactly
            ``weight[indices]``; (B, N) int64 code indices.
        """
        with torch.autocast(device_type=tokens.device.type, enabled=False):
            codebook = self.weight.float()  # (x, D)
            logits = tokens.float() @ codebook.t()  # (B, N, x), Eq. 1's t_i E^T
            indices = logits.argmax(dim=-1)  # (B, N): clean argmax, the code actually used
            quantized = F.embedding(indices, codebook)  # (B, N, D) exact rows
            if self.training:
                if self.sampling == "gumbel":
                    logits = logits + _gumbel_noise(logits)
                soft = torch.softmax(logits / self.tau, dim=-1)  # (B, N, x), Eq. 2
                # Zero in value, straight-through gradient in backward (see module docstring).
                quantized = quantized + (soft - soft.detach()) @ codebook
        return quantized.to(tokens.dtype), indices

    @torch.no_grad()
    def usage(self, indices: Tensor) -> dict[str, Tensor | float | int]:
        """Code usage of a batch (or an epoch's concatenated indices), for logging.

        Returns:
            ``histogram`` (x,) int64 counts, ``perplexity`` exp(entropy) of the code frequencies
            (x when all codes are used evenly, 1 when one code takes every token) and
            ``dead_codes`` the number of codes never chosen.
        """
        hist = torch.bincount(indices.reshape(-1).long().cpu(), minlength=self.num_embeddings)
        probs = hist.double() / max(int(hist.sum()), 1)
        entropy = -(probs * torch.log(probs.clamp_min(1e-30))).sum()
        return {"histogram": hist, "perplexity": float(math.exp(float(entropy))),
                "dead_codes": int((hist == 0).sum())}


def _gumbel_noise(like: Tensor) -> Tensor:
    """Standard Gumbel samples -log(e), e ~ Exp(1), in fp32 (one log instead of two).

    ``exponential_`` can return exactly 0 (pytorch #22442); clamping to the smallest normal
    float keeps the noise finite (at most ~87).
    """
    expo = torch.empty_like(like, dtype=torch.float32).exponential_()
    return -torch.log(expo.clamp_min_(torch.finfo(torch.float32).tiny))
