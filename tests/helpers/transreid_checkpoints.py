"""TransReID checkpoints and TransReID's forward pass, written from its published code only.

Nothing here imports this project: the key names and shapes follow TransReID's
``model/make_model.py`` (``build_transformer``, ``build_transformer_local``) and
``model/backbones/vit_pytorch.py`` (``TransReID``, ``PatchEmbed_overlap``, ``Block``,
``Attention``, ``Mlp``, ``vit_base_patch16_224_TransReID``), and :func:`reference_forward`
restates its eval-mode forward with plain torch ops, so that the project's mapping and models
are checked against TransReID rather than against themselves.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

PATCH = 16
HEAD_DIM = 64  # ViT-B: 768 / 12 heads
SIZE = (256, 128)  # INPUT.SIZE_TRAIN / SIZE_TEST of every person config
BLOCK = ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
         "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
         "mlp.fc2.weight", "mlp.fc2.bias")


def _block_shapes(prefix: str, dim: int) -> dict[str, tuple[int, ...]]:
    hidden = 4 * dim  # mlp_ratio=4
    shapes = {"norm1.weight": (dim,), "norm1.bias": (dim,), "attn.qkv.weight": (3 * dim, dim),
              "attn.qkv.bias": (3 * dim,), "attn.proj.weight": (dim, dim), "attn.proj.bias": (dim,),
              "norm2.weight": (dim,), "norm2.bias": (dim,), "mlp.fc1.weight": (hidden, dim),
              "mlp.fc1.bias": (hidden,), "mlp.fc2.weight": (dim, hidden), "mlp.fc2.bias": (dim,)}
    return {prefix + k: v for k, v in shapes.items()}


def _bn_shapes(prefix: str, dim: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (dim,), f"{prefix}.bias": (dim,), f"{prefix}.running_mean": (dim,),
            f"{prefix}.running_var": (dim,), f"{prefix}.num_batches_tracked": ()}


def transreid_shapes(stride: int = 11, cameras: int = 0, jpm: bool = False, dim: int = 768,
                     depth: int = 12, num_classes: int = 702,
                     size: tuple[int, int] = SIZE) -> dict[str, tuple[int, ...]]:
    """Every key of a TransReID ``state_dict`` and its shape, in TransReID's registration order.

    ``cameras`` > 1 is SIE (``SIE_CAMERA: True``), ``jpm`` is ``MODEL.JPM: True``; 702 classes
    are Occluded-Duke's training ids.
    """
    num_y = (size[0] - PATCH) // stride + 1
    num_x = (size[1] - PATCH) // stride + 1
    s: dict[str, tuple[int, ...]] = {"base.cls_token": (1, 1, dim),
                                     "base.pos_embed": (1, num_y * num_x + 1, dim)}
    if cameras > 1:
        s["base.sie_embed"] = (cameras, 1, dim)
    s["base.patch_embed.proj.weight"] = (dim, 3, PATCH, PATCH)
    s["base.patch_embed.proj.bias"] = (dim,)
    for i in range(depth):
        s.update(_block_shapes(f"base.blocks.{i}.", dim))
    s["base.norm.weight"], s["base.norm.bias"] = (dim,), (dim,)
    s["base.fc.weight"], s["base.fc.bias"] = (1000, dim), (1000,)  # always built, never used
    if jpm:
        for b in ("b1", "b2"):
            s.update(_block_shapes(f"{b}.0.", dim))
            s[f"{b}.1.weight"], s[f"{b}.1.bias"] = (dim,), (dim,)
    s["classifier.weight"] = (num_classes, dim)
    if jpm:
        for i in range(1, 5):
            s[f"classifier_{i}.weight"] = (num_classes, dim)
    s.update(_bn_shapes("bottleneck", dim))
    if jpm:
        for i in range(1, 5):
            s.update(_bn_shapes(f"bottleneck_{i}", dim))
    return s


def transreid_checkpoint(stride: int = 11, cameras: int = 0, jpm: bool = False,
                         dataparallel: bool = False, dim: int = 768, depth: int = 12,
                         num_classes: int = 702, seed: int = 0) -> dict[str, Tensor]:
    """A TransReID ``state_dict`` with random but trained-looking values.

    Norm scales near 1, small weights, BN running statistics away from (0, 1) so that a mixed-up
    BN would show; the BNNeck shifts are 0 (frozen at init in TransReID). ``dataparallel`` adds
    the ``module.`` prefix ``torch.save(model.state_dict())`` writes under DataParallel.
    """
    g = torch.Generator().manual_seed(seed)
    state: dict[str, Tensor] = {}
    for key, shape in transreid_shapes(stride, cameras, jpm, dim, depth, num_classes).items():
        if key.endswith("num_batches_tracked"):
            value = torch.tensor(1000)
        elif key.endswith("running_var"):
            value = 0.5 + torch.rand(shape, generator=g)
        elif "bottleneck" in key and key.endswith(".bias"):
            value = torch.zeros(shape)
        elif key.endswith("weight") and len(shape) == 1:  # LayerNorm / BN scales
            value = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            value = 0.02 * torch.randn(shape, generator=g)
        state[("module." if dataparallel else "") + key] = value
    return state


def _block(x: Tensor, s: dict[str, Tensor], p: str) -> Tensor:
    """TransReID's ``Block``: pre-norm attention and MLP, LayerNorm eps 1e-6, exact GELU."""
    batch, n, dim = x.shape
    heads = dim // HEAD_DIM
    h = F.layer_norm(x, (dim,), s[p + "norm1.weight"], s[p + "norm1.bias"], eps=1e-6)
    qkv = h @ s[p + "attn.qkv.weight"].t() + s[p + "attn.qkv.bias"]
    qkv = qkv.reshape(batch, n, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = torch.softmax((q @ k.transpose(-2, -1)) * (dim // heads) ** -0.5, dim=-1)
    h = (attn @ v).transpose(1, 2).reshape(batch, n, dim)
    x = x + h @ s[p + "attn.proj.weight"].t() + s[p + "attn.proj.bias"]
    h = F.layer_norm(x, (dim,), s[p + "norm2.weight"], s[p + "norm2.bias"], eps=1e-6)
    h = F.gelu(h @ s[p + "mlp.fc1.weight"].t() + s[p + "mlp.fc1.bias"])
    return x + h @ s[p + "mlp.fc2.weight"].t() + s[p + "mlp.fc2.bias"]


def _norm(x: Tensor, s: dict[str, Tensor], p: str) -> Tensor:
    return F.layer_norm(x, (x.shape[-1],), s[p + "weight"], s[p + "bias"], eps=1e-6)


def _bnneck(f: Tensor, s: dict[str, Tensor], p: str) -> Tensor:
    return (f - s[p + "running_mean"]) / torch.sqrt(s[p + "running_var"] + 1e-5) * s[p + "weight"] \
        + s[p + "bias"]


@torch.no_grad()
def reference_forward(state: dict[str, Tensor], images: Tensor, camids: Tensor, stride: int,
                      sie_coef: float = 3.0, neck_feat: str = "before", shift: int = 5,
                      groups: int = 2) -> Tensor:
    """TransReID's eval-mode output for a (possibly ``module.``-prefixed) checkpoint.

    ``build_transformer``: ``global_feat`` (or its BN) = norm(blocks(x))[CLS].
    ``build_transformer_local``: blocks[:-1], then b1 on all tokens for the global feature, and
    b2 on [CLS | quarter k] of the shifted and shuffled patches for local feature k; the output
    is ``cat([global, local_1 / 4, ..., local_4 / 4])``.
    """
    s = {k.removeprefix("module."): v.float() for k, v in state.items()}
    batch = images.shape[0]
    x = F.conv2d(images, s["base.patch_embed.proj.weight"], s["base.patch_embed.proj.bias"],
                 stride=stride).flatten(2).transpose(1, 2)  # (B, num_y * num_x, D), row-major
    x = torch.cat([s["base.cls_token"].expand(batch, -1, -1), x], dim=1) + s["base.pos_embed"]
    if "base.sie_embed" in s:
        x = x + sie_coef * s["base.sie_embed"][camids]
    depth = 1 + max(int(k.split(".")[2]) for k in s if k.startswith("base.blocks."))
    jpm = "b1.1.weight" in s
    for i in range(depth - 1 if jpm else depth):
        x = _block(x, s, f"base.blocks.{i}.")
    if not jpm:
        feat = _norm(x, s, "base.norm.")[:, 0]
        return _bnneck(feat, s, "bottleneck.") if neck_feat == "after" else feat
    feat = _norm(_block(x, s, "b1.0."), s, "b1.1.")[:, 0]
    # shuffle_unit(features, shift, group, begin=1)
    r = torch.cat([x[:, shift:], x[:, 1:shift]], dim=1)
    if r.shape[1] % groups:
        r = torch.cat([r, r[:, -2:-1]], dim=1)
    r = r.view(batch, groups, -1, r.shape[-1]).transpose(1, 2).reshape(batch, -1, r.shape[-1])
    length = (x.shape[1] - 1) // 4
    parts = []
    for k in range(4):
        tokens = torch.cat([x[:, :1], r[:, k * length:(k + 1) * length]], dim=1)
        part = _norm(_block(tokens, s, "b2.0."), s, "b2.1.")[:, 0]
        parts.append(_bnneck(part, s, f"bottleneck_{k + 1}.") if neck_feat == "after" else part)
    if neck_feat == "after":
        feat = _bnneck(feat, s, "bottleneck.")
    return torch.cat([feat] + [p / 4 for p in parts], dim=1)
