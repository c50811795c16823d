"""The CNN baseline: "Bag of Tricks" ResNet-50 (Luo et al. 2019) with BNNeck, from timm.

timm's ``resnet50`` with the last stride set to 1 (a 16x8 map for a 256x128 input instead of
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
    """BoT ResNet-50: ``features``/``global_features`` are the pooled 2048-d pre-BN feature.

    Args:
        num_classes: training identities C.
        pretrained: a local timm ``resnet50`` weight file, or None for random initialisation.
        key: the config key that named ``pretrained``, for error messages.
    """

    def __init__(self, num_classes: int, pretrained: str | None = None,
                 key: str = "model.resnet_pretrained") -> None:
        super().__init__()
        self.backbone = timm.create_model("resnet50", pretrained=False, num_classes=0,
                                          global_pool="avg")
        if pretrained is not None:
            state = {k: v for k, v in load_state_dict_file(pretrained, key).items()
                     if not k.startswith("fc.")}
            missing, _ = self.backbone.load_state_dict(state, strict=False)
            if missing:
                raise CheckpointError(f"{key}: {pretrained} lacks {len(missing)} resnet50 weights "
                                      f"(e.g. {missing[0]!r}); expected a timm resnet50 checkpoint")
        # Last stride 1: the first bottleneck of layer4 carries the stride in conv2 and downsample.
        first = self.backbone.layer4[0]
        first.conv2.stride = (1, 1)
        if first.downsample is not None:
            for module in first.downsample.modules():
                if isinstance(module, (nn.Conv2d, nn.AvgPool2d)):
                    module.stride = (1, 1) if isinstance(module, nn.Conv2d) else 1
        self.feature_dim = self.backbone.num_features  # 2048
        self.embedding_space = None  # same attribute as ViTReID; a CNN has no codebook
        self.neck = BNNeck(self.feature_dim)
        self.classifier = IDClassifier(self.feature_dim, num_classes)

    def forward(self, images: Tensor, camids: Tensor | None = None) -> ReIDOutput:
        """(B, 3, H, W) -> ReIDOutput; ``camids`` is accepted for interface parity and unused."""
        feat = self.backbone(images)  # (B, 2048) after global average pooling
        bn = self.neck(feat)
        return ReIDOutput(features=feat, global_features=feat, global_bn=bn,
                          id_logits=self.classifier(bn))
