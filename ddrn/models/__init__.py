"""Re-ID models: the DDRN/ViT network, its Embedding Space, BNNeck heads and the CNN baseline."""

from ddrn.models.embedding_space import EmbeddingSpace
from ddrn.models.factory import build_model
from ddrn.models.heads import BNNeck, IDClassifier
from ddrn.models.output import ReIDOutput
from ddrn.models.reid import ViTReID
from ddrn.models.resnet import ResNetReID
from ddrn.models.vit import OverlapPatchEmbed, build_vit, load_vit_weights

__all__ = [
    "BNNeck", "EmbeddingSpace", "IDClassifier", "OverlapPatchEmbed", "ReIDOutput", "ResNetReID",
    "ViTReID", "build_model", "build_vit", "load_vit_weights",
]
