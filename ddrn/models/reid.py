"""The ViT re-ID network: TransReID's baseline, and DDRN when the Embedding Space is on.

Forward (paper sec. 3.1-3.2, Fig. 2), B images, N patch tokens, D channels::

    images (B,3,H,W) -> overlapping patch embed (B,N,D) -> [CLS | tokens] + pos (+ SIE) (B,1+N,D)
    -> blocks 1..N-1 ("the encoder")                                              (B,1+N,D)
       |-> CLS -> norm -> local feature  (the "CLS token, which fuses local features")
    -> Embedding Space replaces the N patch tokens, CLS untouched                  (B,1+N,D)
    -> block N ("the decoder") -> norm -> CLS -> global feature ("the final global CLS token")

Interpretation of the two CLS tokens ("The final global CLS token utilizes our proposed HS-Arcface
loss. The CLS token, which fuses local features, adapts ID loss.", Fig. 2; "The proposed
HS-Arcface constrains global CLS token, while standard ID Loss constrains CLS token with local
information. Triplet losses, computed with corresponding Bottle Neck layers", sec. 3.1):

* the *global* CLS is the one after block N, which has attended only to the reconstructed
  (codebook) tokens; it goes through its BNNeck to the margin head (``global_bn``);
* the *local* CLS is the same token one block earlier, after block N-1: the last CLS that has
  attended to the raw local patch tokens. It shares the final LayerNorm and has its own BNNeck
  and the ID classifier. No block is duplicated (TransReID's JPM copies the last block; that
  would cost 1/depth more compute), so DDRN costs the baseline only the Embedding Space, one
  LayerNorm + BN on a (B, D) token and the margin head;
* each branch gets a triplet loss on its pre-BN feature (``global_features``, ``local_features``).

``id_feature="global"`` (the default) is TransReID's baseline: no local branch, the ID classifier
reads the global BN feature (``local_features`` is None). The retrieval feature ``features`` is
always the pre-BN global feature (TransReID's ``NECK_FEAT: before``).
"""

from __future__ import annotations

from typing import Literal

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from ddrn.models.embedding_space import EmbeddingSpace
from ddrn.models.heads import BNNeck, IDClassifier
from ddrn.models.output import ReIDOutput
from ddrn.models.vit import embed_tokens, sie_embedding


class ViTReID(nn.Module):
    """ViT re-ID model; the variant is decided by its constructor arguments, not by subclasses.

    Args:
        backbone: a timm ViT with a class token (see :func:`ddrn.models.vit.build_vit`).
        num_classes: training identities C.
        embedding_space: the codebook between blocks N-1 and N, or None (baseline).
        id_feature: ``global`` (baseline) or ``local`` (DDRN's local CLS; see module docstring).
        num_cameras: cameras for SIE; SIE exists only when ``sie`` and ``num_cameras > 1``.
        sie: add a learned per-camera embedding to every token (TransReID's SIE).
        sie_coef: its weight (TransReID: 3.0).
    """

    def __init__(self, backbone: VisionTransformer, num_classes: int,
                 embedding_space: EmbeddingSpace | None = None,
                 id_feature: Literal["global", "local"] = "global", num_cameras: int = 1,
                 sie: bool = False, sie_coef: float = 3.0) -> None:
        super().__init__()
        if len(backbone.blocks) < 2 or backbone.cls_token is None:
            raise ValueError("ViTReID needs a ViT with a class token and at least 2 blocks")
        self.backbone = backbone
        dim = backbone.embed_dim
        self.feature_dim = dim
        self.embedding_space = embedding_space
        self.id_feature = id_feature
        self.sie_coef = sie_coef
        self.sie_embed = sie_embedding(sie, num_cameras, dim)
        self.global_neck = BNNeck(dim)
        self.local_neck = BNNeck(dim) if id_feature == "local" else None
        self.classifier = IDClassifier(dim, num_classes)

    @property
    def num_patches(self) -> int:
        return self.backbone.patch_embed.num_patches

    def forward(self, images: Tensor, camids: Tensor | None = None) -> ReIDOutput:
        """Embed a batch.

        Args:
            images: (B, 3, H, W) normalised images of the size the model was built for.
            camids: (B,) camera ids; required when SIE is on, ignored otherwise.
        """
        vit = self.backbone
        x = embed_tokens(vit, images, self.sie_embed, self.sie_coef, camids)  # (B, 1+N, D)
        *encoder, decoder = vit.blocks
        for block in encoder:  # blocks 1..N-1
            x = block(x)
        local = vit.norm(x[:, 0]) if self.local_neck is not None else None  # (B, D)
        codes = None
        if self.embedding_space is not None:
            tokens, codes = self.embedding_space(x[:, 1:])  # (B, N, D), (B, N)
            x = torch.cat([x[:, :1], tokens], dim=1)
        x = decoder(x)  # block N
        global_feat = vit.norm(x[:, 0])  # (B, D); LayerNorm is per token, so only CLS is normed
        global_bn = self.global_neck(global_feat)
        if self.local_neck is not None and local is not None:
            id_logits = self.classifier(self.local_neck(local))
        else:
            id_logits = self.classifier(global_bn)
        return ReIDOutput(
            features=global_feat,
            global_features=global_feat,
            global_bn=global_bn,
            id_logits=id_logits,
            local_features=local,
            code_indices=codes,
            codebook=self.embedding_space.weight if self.embedding_space is not None else None,
        )
