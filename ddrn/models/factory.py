"""``build_model``: every variant (Table 2 rows, Fig. 6, baselines) is a :class:`ModelConfig`."""

from __future__ import annotations

from torch import nn

from ddrn.config import ModelConfig
from ddrn.errors import ConfigError
from ddrn.models.embedding_space import EmbeddingSpace
from ddrn.models.jpm import JPMReID
from ddrn.models.reid import ViTReID
from ddrn.models.resnet import ResNetReID
from ddrn.models.vit import build_vit, load_vit_weights


def build_model(model_cfg: ModelConfig, num_classes: int, num_cameras: int = 1,
                input_size: tuple[int, int] = (256, 128)) -> nn.Module:
    """Build the re-ID model a config describes (pretrained weights loaded when configured).

    Args:
        model_cfg: the resolved ``model`` section (profile + variant overrides).
        num_classes: training identities C (ID classifier width).
        num_cameras: cameras in the training set (SIE only).
        input_size: (H, W) of the input images, ``(input.height, input.width)``; fixes the patch
            grid and the position embeddings.

    Returns:
        :class:`~ddrn.models.reid.ViTReID`, :class:`~ddrn.models.jpm.JPMReID` or
        :class:`~ddrn.models.resnet.ResNetReID`; all
        return a :class:`~ddrn.models.output.ReIDOutput` and have ``feature_dim``.

    Raises:
        ConfigError / CheckpointError: one line naming the key or file at fault.
    """
    if num_classes < 1:
        raise ConfigError(f"build_model: num_classes must be >= 1, got {num_classes}")
    if model_cfg.arch == "resnet50":
        return ResNetReID(num_classes, pretrained=model_cfg.resnet_pretrained,
                          backbone=model_cfg.cnn_backbone)
    vit = build_vit(model_cfg, input_size)
    if model_cfg.pretrained is not None:
        load_vit_weights(vit, model_cfg.pretrained, model_cfg.backbone)
    if model_cfg.jpm:  # after loading: both branches start from the pretrained last block
        return JPMReID(vit, num_classes, num_cameras, sie=model_cfg.sie,
                       sie_coef=model_cfg.sie_coef)
    space = None
    if model_cfg.embedding_space:
        space = EmbeddingSpace(model_cfg.num_embeddings, vit.embed_dim, tau=model_cfg.tau,
                               sampling=model_cfg.sampling, similarity=model_cfg.similarity,
                               train_index=model_cfg.train_index,
                               kmeans_init=model_cfg.kmeans_init,
                               dead_code_threshold=model_cfg.dead_code_threshold,
                               restart_every=model_cfg.restart_every,
                               weight_decay=model_cfg.codebook_weight_decay)
    return ViTReID(vit, num_classes, embedding_space=space, id_feature=model_cfg.id_feature,
                   num_cameras=num_cameras, sie=model_cfg.sie, sie_coef=model_cfg.sie_coef)
