"""The one output type every re-ID model returns, in training and in evaluation alike."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class ReIDOutput:
    """What a re-ID model computes for a batch (B images, D = ``model.feature_dim``, C ids).

    Attributes:
        features: (B, D) the retrieval feature used at test time: the pre-BN global feature
            (TransReID's ``NECK_FEAT: before``).
        global_features: (B, D) pre-BN global feature (triplet loss).
        global_bn: (B, D) the same after the BNNeck (margin-head input).
        id_logits: (B, C) bias-free classifier on a BN feature (ID loss): the global one, or the
            local one when the model reads its ID from the local CLS token.
        local_features: (B, D) pre-BN local feature (second triplet term), or None when the model
            has no local branch.
        code_indices: (B, N) the Embedding Space code chosen for every patch token, or None.
        codebook: (x, D) the Embedding Space weight itself (not a copy), or None.
        part_features: (B, P, D) pre-BN JPM local features (TransReID's jigsaw branch), or None.
        part_bn: (B, P, D) the same after their BNNecks, or None.
        part_logits: (B, P, C) their ID classifiers' logits, or None.

    With JPM, ``features`` is (B, (1 + P) x D): the global feature and the P local ones / 4.
    """

    features: Tensor
    global_features: Tensor
    global_bn: Tensor
    id_logits: Tensor
    local_features: Tensor | None = None
    code_indices: Tensor | None = None
    codebook: Tensor | None = None
    part_features: Tensor | None = None
    part_bn: Tensor | None = None
    part_logits: Tensor | None = None
