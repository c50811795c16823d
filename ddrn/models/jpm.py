"""TransReID proper: the ViT with its Jigsaw Patch Module (JPM), the Table 1 "TransReID" row.

He et al., "TransReID" (ICCV 2021), sec. 3.3: the last transformer layer is duplicated into two
branches that start from the same ImageNet weights. The *global* branch runs it over every token;
the *jigsaw* branch shifts and shuffles the patch tokens, cuts them into ``num_parts`` groups and
runs its copy over ``[CLS | group k]`` for each k, giving one local CLS per group::

    images -> patch embed + pos (+ SIE) -> blocks 1..N-1                       (B, 1+N, D)
      |-> global branch (block N copy + LayerNorm) -> CLS -> global_feat       (B, D)
      |-> shift by ``shift`` and shuffle into ``groups`` -> split into 4 parts (B, N/4, D) each
          -> jigsaw branch ([CLS | part k]) -> CLS -> part_feat_k              (B, D) each

Each of the five features has its own BNNeck and bias-free ID classifier; the losses average
the four local terms and weigh them 0.5 against the global term (:mod:`ddrn.losses.criterion`).
The retrieval feature is TransReID's ``test`` output::

    f = [global_feat, part_feat_1 / 4, ..., part_feat_4 / 4]                   (B, 5D)

The backbone's own last block and final LayerNorm are never used by TransReID's JPM model (its
``local_feature`` forward stops after block N-1), so here they are removed after being copied:
a TransReID JPM checkpoint's ``base.blocks.<N-1>`` / ``base.norm`` are dropped, not loaded.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from ddrn.models.heads import BNNeck, IDClassifier
from ddrn.models.output import ReIDOutput
from ddrn.models.vit import embed_tokens, sie_embedding


def shift_and_shuffle(tokens: Tensor, shift: int, groups: int) -> Tensor:
    """TransReID's ``shuffle_unit``: rotate the patch tokens, then interleave ``groups`` chunks.

    Args:
        tokens: (B, 1+N, D) CLS followed by N patch tokens.
        shift: TransReID's ``SHIFT_NUM``; the patches are rotated left by ``shift - 1`` (TransReID
            slices ``[shift:]`` of the sequence *with* its CLS, so the first ``shift - 1`` patches
            move to the end).
        groups: TransReID's ``SHUFFLE_GROUP``.

    Returns:
        (B, N', D) patch tokens, N' = N rounded up to a multiple of ``groups`` by repeating the
        second-to-last token, as TransReID does when the count does not divide.
    """
    batch, _, dim = tokens.shape
    x = torch.cat([tokens[:, shift:], tokens[:, 1:shift]], dim=1)  # (B, N, D)
    if x.shape[1] % groups:
        x = torch.cat([x, x[:, -2:-1]], dim=1)
    # (B, groups, N/groups, D) -> transpose -> token i of every group next to each other
    return x.view(batch, groups, -1, dim).transpose(1, 2).reshape(batch, -1, dim)


class JPMReID(nn.Module):
    """TransReID with JPM (and optionally SIE); returns a :class:`ReIDOutput` like every model.

    Args:
        backbone: a timm ViT with a class token and at least 2 blocks; its last block and final
            norm are copied into the two branches and removed from it.
        num_classes: training identities C.
        num_cameras: cameras for SIE; SIE exists only when ``sie`` and ``num_cameras > 1``.
        sie: TransReID's side-information embedding (per-camera token offset).
        sie_coef: its weight (TransReID's ``SIE_COE``, 3.0 in its configs).
        shift: TransReID's ``SHIFT_NUM`` (5).
        groups: TransReID's ``SHUFFLE_GROUP`` (2).
        num_parts: TransReID's ``DEVIDE_LENGTH`` (4); the classifier names ``classifier_1..4``
            of its checkpoints assume 4.
        rearrange: TransReID's ``RE_ARRANGE``: shift and shuffle before splitting (True in every
            JPM config).

    ``feature_dim`` is D, the width of each branch feature (the margin heads read ``global_bn``);
    ``retrieval_dim`` is (1 + num_parts) x D, the width of ``output.features``.
    """

    def __init__(self, backbone: VisionTransformer, num_classes: int, num_cameras: int = 1,
                 sie: bool = False, sie_coef: float = 3.0, shift: int = 5, groups: int = 2,
                 num_parts: int = 4, rearrange: bool = True) -> None:
        super().__init__()
        if len(backbone.blocks) < 2 or backbone.cls_token is None:
            raise ValueError("JPMReID needs a ViT with a class token and at least 2 blocks")
        dim = backbone.embed_dim
        last, norm = backbone.blocks[-1], backbone.norm
        self.global_branch = nn.Sequential(copy.deepcopy(last), copy.deepcopy(norm))
        self.part_branch = nn.Sequential(copy.deepcopy(last), copy.deepcopy(norm))
        backbone.blocks = backbone.blocks[:-1]  # TransReID never runs it (local_feature=True)
        backbone.norm = nn.Identity()
        self.backbone = backbone
        self.feature_dim = dim
        self.embedding_space = None  # the model contract's attribute; JPM has no codebook
        self.num_parts = num_parts
        self.retrieval_dim = (1 + num_parts) * dim
        self.shift, self.groups, self.rearrange = shift, groups, rearrange
        self.sie_coef = sie_coef
        self.sie_embed = sie_embedding(sie, num_cameras, dim)
        self.global_neck = BNNeck(dim)
        self.classifier = IDClassifier(dim, num_classes)
        self.part_necks = nn.ModuleList(BNNeck(dim) for _ in range(num_parts))
        self.part_classifiers = nn.ModuleList(IDClassifier(dim, num_classes)
                                              for _ in range(num_parts))

    @property
    def num_patches(self) -> int:
        return self.backbone.patch_embed.num_patches

    def forward(self, images: Tensor, camids: Tensor | None = None) -> ReIDOutput:
        """Embed a batch: arguments as :meth:`ddrn.models.reid.ViTReID.forward`."""
        vit = self.backbone
        x = embed_tokens(vit, images, self.sie_embed, self.sie_coef, camids)  # (B, 1+N, D)
        for block in vit.blocks:  # blocks 1..N-1
            x = block(x)
        global_feat = self.global_branch(x)[:, 0]  # (B, D)
        patches = shift_and_shuffle(x, self.shift, self.groups) if self.rearrange else x[:, 1:]
        length = (x.shape[1] - 1) // self.num_parts  # TransReID: of the unpadded count
        cls = x[:, :1]
        parts = torch.stack([
            self.part_branch(torch.cat([cls, patches[:, k * length:(k + 1) * length]], dim=1))[:, 0]
            for k in range(self.num_parts)], dim=1)  # (B, P, D)
        global_bn = self.global_neck(global_feat)
        part_bn = torch.stack([neck(parts[:, k]) for k, neck in enumerate(self.part_necks)], dim=1)
        part_logits = torch.stack([head(part_bn[:, k])
                                   for k, head in enumerate(self.part_classifiers)], dim=1)
        out = ReIDOutput(features=global_feat, global_features=global_feat, global_bn=global_bn,
                         id_logits=self.classifier(global_bn), part_features=parts,
                         part_bn=part_bn, part_logits=part_logits)
        out.features = retrieval_feature(out, "before")
        return out


def retrieval_feature(output: ReIDOutput, neck_feat: Literal["before", "after"]) -> Tensor:
    """The test feature TransReID returns for ``TEST.NECK_FEAT`` (its configs use ``before``).

    Without parts: the global feature before or after its BNNeck, (B, D). With JPM parts:
    ``[global, part_1 / 4, ..., part_4 / 4]`` from the same side of the BNNecks, (B, 5D); the
    division is by TransReID's fixed 4, which is also its number of parts.
    """
    after = neck_feat == "after"
    glob = output.global_bn if after else output.global_features
    parts = output.part_bn if after else output.part_features
    if parts is None:
        return glob
    return torch.cat([glob, *(parts[:, k] / 4 for k in range(parts.shape[1]))], dim=1)
