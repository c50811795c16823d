"""The ViT backbone: timm's ``VisionTransformer`` with TransReID's overlapping patch embedding.

Nothing is forked: the overlapping embedding is injected through timm's ``embed_layer=`` hook,
position embeddings are resampled with timm's ``resample_abs_pos_embed`` and the re-ID network
(:mod:`ddrn.models.reid`) slices ``backbone.blocks`` where the Embedding Space goes.
"""

from __future__ import annotations

import functools
from pathlib import Path

import timm
import torch
from timm.layers import resample_abs_pos_embed, resample_patch_embed, trunc_normal_
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from ddrn.config import ModelConfig
from ddrn.errors import CheckpointError, ConfigError
from ddrn.models.transreid import is_transreid, transreid_backbone_weights
from ddrn.models.weights import load_state_dict_file


class OverlapPatchEmbed(nn.Module):
    """Conv2d(kernel=patch_size, stride=stride) patch embedding (TransReID's ``PatchEmbed_overlap``).

    With kernel 16 and stride 11 a 256x128 image gives a 22x11 grid = 242 tokens, against 16x8 =
    128 for non-overlapping patches. Takes timm's ``embed_layer`` keyword arguments.
    """

    def __init__(self, img_size: tuple[int, int], patch_size: int = 16, in_chans: int = 3,
                 embed_dim: int = 768, bias: bool = True, stride: int = 16,
                 dynamic_img_pad: bool = False, device: torch.device | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if dynamic_img_pad:
            raise ValueError("OverlapPatchEmbed has a fixed input size; dynamic_img_pad is unsupported")
        height, width = img_size
        self.img_size = (height, width)
        self.patch_size = (patch_size, patch_size)
        self.stride = stride
        self.grid_size = ((height - patch_size) // stride + 1, (width - patch_size) // stride + 1)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=stride, bias=bias,
                              device=device, dtype=dtype)

    def feat_ratio(self, as_scalar: bool = True) -> int | tuple[int, int]:
        return self.stride if as_scalar else (self.stride, self.stride)

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, N, D) with N = grid height x grid width, row-major."""
        if tuple(images.shape[-2:]) != self.img_size:
            raise ValueError(f"input is {tuple(images.shape[-2:])} but the model was built for "
                             f"{self.img_size}; pass input_size=(H, W) to build_model")
        return self.proj(images).flatten(2).transpose(1, 2)


def sie_embedding(enabled: bool, num_cameras: int, dim: int) -> nn.Parameter | None:
    """TransReID's Side Information Embedding: one learned (1, D) vector per camera that
    :func:`embed_tokens` adds to every token; None when off or with a single camera."""
    if not enabled or num_cameras <= 1:
        return None
    embed = nn.Parameter(torch.empty(num_cameras, 1, dim))  # (cams, 1, D)
    trunc_normal_(embed, std=0.02)
    return embed


def embed_tokens(vit: VisionTransformer, images: Tensor, sie_embed: Tensor | None = None,
                 sie_coef: float = 1.0, camids: Tensor | None = None) -> Tensor:
    """The token sequence block 1 reads: patches, CLS prepended, positions added, and with
    TransReID's Side Information Embedding (``sie_embed``: (cams, 1, D)) the camera's vector
    scaled by ``sie_coef`` added to every token. Returns (B, 1+N, D).

    Raises:
        ValueError: SIE is on and ``camids`` is missing.
    """
    x = vit._pos_embed(vit.patch_embed(images))  # (B, 1+N, D)
    if sie_embed is not None:
        if camids is None:
            raise ValueError("this model uses SIE (model.sie: true); pass camids")
        x = x + sie_coef * sie_embed[camids]  # (B, 1, D) broadcast to every token
    return vit.norm_pre(vit.patch_drop(x))


def backbone_dims(backbone: str) -> dict[str, float]:
    """``embed_dim``, ``depth``, ``num_heads`` and ``mlp_ratio`` of a timm ViT, read without weights.

    The model is built on the ``meta`` device, so this costs no memory and no download.

    Raises:
        ConfigError: ``backbone`` is not a timm VisionTransformer name.
    """
    try:
        with torch.device("meta"):
            model = timm.create_model(backbone, pretrained=False)
    except RuntimeError:
        raise ConfigError(f"model.backbone: unknown timm model {backbone!r}; expected a ViT name "
                          "such as vit_base_patch16_224") from None
    if not isinstance(model, VisionTransformer):
        raise ConfigError(f"model.backbone: {backbone!r} is a {type(model).__name__}; expected a "
                          "timm VisionTransformer (e.g. vit_base_patch16_224)")
    block = model.blocks[0]
    return {"embed_dim": model.embed_dim, "depth": len(model.blocks),
            "num_heads": block.attn.num_heads,
            "mlp_ratio": block.mlp.fc1.out_features / model.embed_dim}


def build_vit(cfg: ModelConfig, input_size: tuple[int, int]) -> VisionTransformer:
    """A randomly initialised timm ViT sized by ``cfg`` for ``input_size`` (H, W) images.

    ``embed_dim``/``depth``/``num_heads`` left as None come from ``cfg.backbone``. The classifier
    head is dropped (``num_classes=0``); the re-ID heads live in :mod:`ddrn.models.heads`.
    """
    dims = backbone_dims(cfg.backbone)
    height, width = input_size
    if height < cfg.patch_size or width < cfg.patch_size:
        raise ConfigError(f"input.height/width: {height}x{width} is smaller than "
                          f"model.patch_size={cfg.patch_size}")
    return VisionTransformer(
        img_size=(height, width),
        patch_size=cfg.patch_size,
        embed_dim=cfg.embed_dim or int(dims["embed_dim"]),
        depth=cfg.depth or int(dims["depth"]),
        num_heads=cfg.num_heads or int(dims["num_heads"]),
        mlp_ratio=dims["mlp_ratio"],
        qkv_bias=True,
        class_token=True,
        global_pool="token",
        num_classes=0,
        drop_path_rate=cfg.drop_path,
        embed_layer=functools.partial(OverlapPatchEmbed, stride=cfg.stride),
    )


def load_vit_weights(vit: VisionTransformer, source: str, backbone: str,
                     key: str = "model.pretrained") -> None:
    """Copy pretrained ImageNet weights into ``vit`` (in place).

    ``source`` is a local ``.pth``/``.safetensors`` file (e.g. timm's
    ``jx_vit_base_p16_224-80ecf9dd.pth``, the file TransReID starts from, or a checkpoint TransReID
    trained, see :func:`~ddrn.models.transreid.transreid_backbone_weights`), ``hub`` (timm's
    default weights for ``backbone``) or an ``hf-hub:`` id; the hub is only tried for those two.
    The 14x14 position grid is resampled to the model's grid bilinearly, as TransReID's
    ``resize_pos_embed`` does (the CLS position is kept); the patch-embedding kernel is copied
    (resampled only if its size differs); the ImageNet classifier is dropped.

    Raises:
        CheckpointError: the file is missing or does not fit the model (one line).
    """
    if source == "hub" or source.startswith("hf-hub:"):
        name = backbone if source == "hub" else source
        try:
            state = timm.create_model(name, pretrained=True).state_dict()
        except Exception as exc:  # offline, unknown id, ...: all user-fixable
            raise CheckpointError(
                f"{key}: could not download {name!r} weights from the hub ({type(exc).__name__}); "
                f"place a timm ViT checkpoint (e.g. weights/jx_vit_base_p16_224-80ecf9dd.pth) "
                f"locally and set {key} to its path") from None
    else:
        state = load_state_dict_file(Path(source), key)
        if is_transreid(state):  # a TransReID re-ID checkpoint: its ViT, at its own grid
            state = transreid_backbone_weights(state, vit.patch_embed.grid_size, source)
    state = _adapt_state(state, vit, source, key)
    missing, _ = vit.load_state_dict(state, strict=False)
    if missing:
        raise CheckpointError(f"{key}: {source} lacks {len(missing)} backbone weights (e.g. "
                              f"{missing[0]!r}); expected a timm ViT checkpoint of {backbone}")


def _adapt_state(state: dict[str, Tensor], vit: VisionTransformer, source: str,
                 key: str) -> dict[str, Tensor]:
    own = vit.state_dict()
    out: dict[str, Tensor] = {}
    for name, value in state.items():
        if name not in own:  # head.*, pre_logits.*, fc_norm of other recipes: not used here
            continue
        if name == "pos_embed" and value.shape != own[name].shape:
            value = resample_abs_pos_embed(value.float(), new_size=list(vit.patch_embed.grid_size),
                                           num_prefix_tokens=1, interpolation="bilinear",
                                           antialias=False)
        elif name == "patch_embed.proj.weight" and value.shape[-2:] != own[name].shape[-2:]:
            value = resample_patch_embed(value.float(), list(own[name].shape[-2:]))
        if value.shape != own[name].shape:
            raise CheckpointError(f"{key}: {source} has {name} of shape {tuple(value.shape)}, the "
                                  f"model needs {tuple(own[name].shape)}; set model.embed_dim/"
                                  "depth/num_heads to match the checkpoint (null = the backbone's)")
        out[name] = value.to(own[name].dtype)
    return out
