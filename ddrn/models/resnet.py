"""The CNN baseline: "Bag of Tricks" ResNet-50 (Luo et al. 2019) with BNNeck, from timm.

timm's ``resnet50`` (or another depth, ``model.cnn_backbone``) with the last stride set to 1 (a 16x8 map for a 256x128 input instead of
8x4), global average pooling, and the same BNNeck + bias-free classifier as the ViT, so it returns
the same :class:`~ddrn.models.output.ReIDOutput` and trains with the same criterion.
"""

from __future__ import annotations

import timm
from torch import Tensor, nn

from ddrn.errors import CheckpointError
from ddrn.models.heads import BNNeck, IDClassifier
from ddrn.models.output import ReIDOutput
from ddrn.models.weights import load_state_dict_file


class ResNetReID(nn.Module):
    """BoT ResNet: ``features``/``global_features`` are the pooled pre-BN feature (2048-d for 50).

    Args:
        num_classes: training identities C.
        pretrained: a local timm weight file of ``backbone``, or None for random initialisation.
        key: the config key that named ``pretrained``, for error messages.
        backbone: the timm ResNet (``resnet50`` is the paper's comparison baseline).
    """

    def __init__(self, num_classes: int, pretrained: str | None = None,
                 key: str = "model.resnet_pretrained", backbone: str = "resnet50") -> None:
        super().__init__()
        self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0,
                                          global_pool="avg")
        if pretrained is not None:
            state = {k: v for k, v in load_state_dict_file(pretrained, key).items()
                     if not k.startswith("fc.")}
            missing, _ = self.backbone.load_state_dict(state, strict=False)
            if missing:
                raise CheckpointError(f"{key}: {pretrained} lacks {len(missing)} {backbone} weights "
                                      f"(e.g. {missing[0]!r}); expected a timm {backbone} checkpoint")
        # Last stride 1: the first block of layer4 carries the stride (conv2 of a bottleneck, conv1
        # of a basic block, and the downsample path); set every stride-2 conv/pool there to 1.
        for module in self.backbone.layer4[0].modules():
            if isinstance(module, nn.Conv2d) and module.stride == (2, 2):
                module.stride = (1, 1)
            elif isinstance(module, nn.AvgPool2d) and module.stride in (2, (2, 2)):
                module.stride = 1
        self.feature_dim = self.backbone.num_features  # 2048 for resnet50, 512 for resnet18
        self.embedding_space = None  # same attribute as ViTReID; a CNN has no codebook
        self.neck = BNNeck(self.feature_dim)
        self.classifier = IDClassifier(self.feature_dim, num_classes)

    def forward(self, images: Tensor, camids: Tensor | None = None) -> ReIDOutput:
        """(B, 3, H, W) -> ReIDOutput; ``camids`` is accepted for interface parity and unused."""
        feat = self.backbone(images)  # (B, 2048) after global average pooling
        bn = self.neck(feat)
        return ReIDOutput(features=feat, global_features=feat, global_bn=bn,
                          id_logits=self.classifier(bn))
