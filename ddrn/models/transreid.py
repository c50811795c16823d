"""TransReID checkpoints: read the architecture from the weights and map them onto this project.

TransReID (github.com/damo-cv/TransReID) saves ``model.state_dict()`` of ``build_transformer``
(ViT + BNNeck) or ``build_transformer_local`` (+ JPM), with a ``module.`` prefix when trained
under DataParallel/DDP. Its layout, per ``model/make_model.py`` and
``model/backbones/vit_pytorch.py``:

* ``base.*``: the ViT (``cls_token`` (1, 1, D), ``pos_embed`` (1, 1+N, D) at the training grid,
  ``patch_embed.proj`` (D, 3, 16, 16) with the configured stride, ``blocks.<i>.*`` in timm's
  names, ``norm``), plus ``base.fc`` (1000, D): an ImageNet head the factory always builds and
  nothing uses, dropped here;
* ``base.sie_embed`` (cams, 1, D) when SIE is on (added x ``SIE_COE``, 3.0 in its configs);
* ``bottleneck.*`` (BNNeck) and ``classifier.weight`` (C, D, bias-free);
* JPM only: ``b1`` / ``b2`` = (copy of the last block, copy of ``norm``) for the global and the
  jigsaw branch, ``bottleneck_1..4``, ``classifier_1..4``. The backbone's own last block and
  ``norm`` are then never run (its ``local_feature`` forward stops one block early).

Nothing records the stride, the heads or the input size. Width and depth come from the blocks;
the stride is the one whose patch grid at the input size (256x128, else 384x128, TransReID's
person sizes) has ``pos_embed``'s token count; the heads are D / 64 (64-channel heads in every
TransReID ViT with a qkv bias: ViT-B 768/12, DeiT-S 384/6).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from timm.layers import resample_abs_pos_embed
from torch import Tensor

from ddrn.config import ModelConfig
from ddrn.errors import CheckpointError

PERSON_SIZES = ((256, 128), (384, 128))
"""TransReID's person ``INPUT.SIZE_TEST`` values, tried in order to find the stride."""
HEAD_DIM = 64
NUM_PARTS = 4
_BLOCK_KEYS = ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
               "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
               "mlp.fc2.weight", "mlp.fc2.bias")
_BN_KEYS = ("weight", "bias", "running_mean", "running_var")


@dataclass(frozen=True)
class TransReIDLayout:
    """What a TransReID checkpoint holds, read from its weights."""

    embed_dim: int
    depth: int
    patch_size: int
    stride: int
    input_size: tuple[int, int]
    num_classes: int
    num_cameras: int  # SIE entries; 0 without SIE
    jpm: bool

    @property
    def num_heads(self) -> int:
        return self.embed_dim // HEAD_DIM

    def model_config(self, sie_coef: float = 3.0) -> ModelConfig:
        """The :class:`ModelConfig` that builds this network (no pretrained file, no drop path)."""
        return ModelConfig(embed_dim=self.embed_dim, depth=self.depth, num_heads=self.num_heads,
                           patch_size=self.patch_size, stride=self.stride, drop_path=0.0,
                           sie=self.num_cameras > 1, sie_coef=sie_coef, jpm=self.jpm)

    def describe(self) -> str:
        h, w = self.input_size
        parts = [f"ViT {self.embed_dim}-d x {self.depth} blocks, stride {self.stride} at {h}x{w}"]
        if self.num_cameras > 1:
            parts.append(f"SIE ({self.num_cameras} cameras)")
        if self.jpm:
            parts.append("JPM")
        parts.append(f"{self.num_classes} classes")
        return ", ".join(parts)


def is_transreid(state: dict[str, Tensor]) -> bool:
    """Whether ``state`` (``module.`` already stripped) uses TransReID's ``base.*`` names."""
    return any(k.startswith("base.") for k in state)


def grid_size(input_size: tuple[int, int], patch_size: int, stride: int) -> tuple[int, int]:
    """TransReID's ``PatchEmbed_overlap`` grid: ((H - p) // s + 1, (W - p) // s + 1)."""
    return ((input_size[0] - patch_size) // stride + 1, (input_size[1] - patch_size) // stride + 1)


def find_stride(num_tokens: int, patch_size: int,
                sizes: tuple[tuple[int, int], ...] = PERSON_SIZES) -> tuple[int, tuple[int, int]] | None:
    """(stride, input size) whose grid has ``num_tokens`` patches, largest stride first."""
    for size in sizes:
        for stride in range(patch_size, 0, -1):
            gh, gw = grid_size(size, patch_size, stride)
            if gh * gw == num_tokens:
                return stride, size
    return None


class _Reader:
    """Consumes a TransReID state dict, noting what it recognised and what it did not."""

    def __init__(self, state: dict[str, Tensor], path: str) -> None:
        self.state, self.path = state, path
        self.used: set[str] = set()
        self.found: list[str] = []
        self.problems: list[str] = []

    def take(self, *keys: str) -> bool:
        ok = all(k in self.state for k in keys)
        if ok:
            self.used.update(keys)
        return ok

    def fail(self) -> CheckpointError:
        found = "; ".join(self.found) or "nothing"
        return CheckpointError(
            f"{self.path}: not a TransReID checkpoint this project can rebuild: recognised "
            f"{found}; not recognised: {'; '.join(self.problems)}")

    def backbone(self, input_size: tuple[int, int] | None) -> tuple[int, int, int, int,
                                                                     tuple[int, int]] | None:
        """(D, depth, patch, stride, input size) of the ``base.*`` ViT, or None (problems noted)."""
        s = self.state
        if "base.conv1.weight" in s:
            self.problems.append("a ResNet-50 backbone (base.conv1.weight): only TransReID's ViTs "
                                 "are supported")
            return None
        proj = s.get("base.patch_embed.proj.weight")
        if proj is None or proj.dim() != 4 or not self.take(
                "base.patch_embed.proj.weight", "base.patch_embed.proj.bias", "base.cls_token",
                "base.pos_embed", "base.norm.weight", "base.norm.bias"):
            self.problems.append("no ViT backbone (base.patch_embed.proj.weight (D, 3, p, p), "
                                 "base.cls_token, base.pos_embed, base.norm)")
            return None
        dim, patch = int(proj.shape[0]), int(proj.shape[-1])
        indices = {int(m.group(1)) for k in s if (m := re.match(r"base\.blocks\.(\d+)\.", k))}
        depth = len(indices)
        if depth < 2 or indices != set(range(depth)):
            self.problems.append(f"blocks base.blocks.* numbered {sorted(indices)}; expected "
                                 "0..depth-1 with depth >= 2")
            return None
        for i in range(depth):
            names = [f"base.blocks.{i}.{k}" for k in _BLOCK_KEYS]
            if not self.take(*names):
                lacking = next(n for n in names if n not in s)
                why = (" (blocks without a qkv bias: TransReID's vit_small, whose 8 heads and "
                       "qk_scale 768^-0.5 are not supported)" if "qkv.bias" in lacking else "")
                self.problems.append(f"{lacking} is missing{why}")
                return None
        hidden = int(s["base.blocks.0.mlp.fc1.weight"].shape[0])
        if hidden != 4 * dim or dim % HEAD_DIM:
            self.problems.append(f"a {dim}-d ViT with MLP width {hidden}; expected 4 x D and D a "
                                 f"multiple of {HEAD_DIM} (TransReID's ViT-B / DeiT-S)")
            return None
        self.found.append(f"a {dim}-d ViT with {depth} blocks and {patch}x{patch} patches")
        tokens = int(s["base.pos_embed"].shape[1]) - 1
        sizes = (tuple(input_size),) if input_size is not None else PERSON_SIZES
        hit = find_stride(tokens, patch, sizes)  # type: ignore[arg-type]
        if hit is None:
            tried = " or ".join(f"{h}x{w}" for h, w in sizes)
            self.problems.append(f"base.pos_embed has {tokens} patch tokens, which no stride in "
                                 f"1..{patch} gives at {tried} (pass the training input size)")
            return None
        stride, size = hit
        self.found.append(f"stride {stride} at {size[0]}x{size[1]}")
        self.used.update(k for k in s if k.startswith("base.fc."))  # the unused ImageNet head
        return dim, depth, patch, stride, size


def _bn(prefix: str) -> list[str]:
    return [f"{prefix}.{k}" for k in _BN_KEYS]


def read_transreid(state: dict[str, Tensor], path: str,
                   input_size: tuple[int, int] | None = None) -> tuple[TransReIDLayout,
                                                                       dict[str, Tensor]]:
    """The layout of a TransReID checkpoint and its weights under this project's names.

    Args:
        state: the checkpoint's state dict, ``module.`` prefixes already stripped.
        path: the file, quoted in errors.
        input_size: (H, W) it was trained at; None tries TransReID's 256x128, then 384x128.

    Returns:
        The layout (build the model with ``layout.model_config()``) and a state dict that loads
        strictly into :class:`~ddrn.models.ViTReID` or, with JPM, :class:`~ddrn.models.JPMReID`
        (``classifier.weight`` is absent when the checkpoint has no classifier).

    Raises:
        CheckpointError: one line with what was recognised and what was not.
    """
    rd = _Reader(state, path)
    dims = rd.backbone(input_size)
    if dims is None:
        raise rd.fail()
    dim, depth, patch, stride, size = dims
    num_cameras = 0
    sie = state.get("base.sie_embed")
    if sie is not None:
        if sie.dim() != 3 or tuple(sie.shape[1:]) != (1, dim):
            rd.problems.append(f"base.sie_embed of shape {tuple(sie.shape)}; expected (cams, 1, {dim})")
        else:
            num_cameras = int(sie.shape[0])
            rd.used.add("base.sie_embed")
            rd.found.append(f"SIE over {num_cameras} cameras")
    if rd.take(*_bn("bottleneck")):
        rd.take("bottleneck.num_batches_tracked")
        rd.found.append("the BNNeck")
    else:
        rd.problems.append("no BNNeck (bottleneck.weight/bias/running_mean/running_var)")
    cls = state.get("classifier.weight")
    num_classes = 1
    if cls is not None and cls.dim() == 2 and cls.shape[1] == dim:
        num_classes = int(cls.shape[0])
        rd.used.add("classifier.weight")
    jpm = any(k.startswith(("b1.", "b2.")) for k in state)
    if jpm:
        branch = [f"{b}.0.{k}" for b in ("b1", "b2") for k in _BLOCK_KEYS]
        branch += [f"{b}.1.{k}" for b in ("b1", "b2") for k in ("weight", "bias")]
        heads = [n for i in range(1, NUM_PARTS + 1) for n in _bn(f"bottleneck_{i}")]
        heads += [f"classifier_{i}.weight" for i in range(1, NUM_PARTS + 1)]
        lacking = [k for k in branch + heads if k not in state]
        if lacking:
            rd.problems.append(f"JPM keys b1/b2 present but {lacking[0]} is missing "
                               f"({len(lacking)} JPM keys missing)")
        else:
            rd.take(*branch, *heads)
            rd.take(*(f"bottleneck_{i}.num_batches_tracked" for i in range(1, NUM_PARTS + 1)))
            # TransReID's JPM never runs the backbone's last block or final norm: drop them.
            rd.used.update(k for k in state
                           if k.startswith((f"base.blocks.{depth - 1}.", "base.norm.")))
            rd.found.append("JPM (b1, b2, 4 local heads)")
    unknown = sorted(k for k in state if k not in rd.used)
    if unknown:
        rd.problems.append(f"{len(unknown)} keys of no TransReID layout (e.g. {unknown[0]!r})")
    if rd.problems:
        raise rd.fail()
    layout = TransReIDLayout(dim, depth, patch, stride, size, num_classes, num_cameras, jpm)
    return layout, _rename(state, rd.used, layout)


def _rename(state: dict[str, Tensor], used: set[str], layout: TransReIDLayout) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    dropped = ("base.fc.",) + ((f"base.blocks.{layout.depth - 1}.", "base.norm.") if layout.jpm
                               else ())
    for k in sorted(used):
        v = state[k]
        if k.startswith(dropped):
            continue
        if k == "base.sie_embed":
            name = "sie_embed"
        elif k.startswith("base."):
            name = "backbone." + k[len("base."):]
        elif k.startswith("bottleneck."):
            name = "global_neck.bn." + k[len("bottleneck."):]
        elif m := re.match(r"bottleneck_(\d)\.(.+)", k):
            name = f"part_necks.{int(m.group(1)) - 1}.bn.{m.group(2)}"
        elif m := re.match(r"classifier_(\d)\.weight", k):
            name = f"part_classifiers.{int(m.group(1)) - 1}.weight"
        elif k.startswith("b1."):
            name = "global_branch." + k[len("b1."):]
        elif k.startswith("b2."):
            name = "part_branch." + k[len("b2."):]
        else:  # classifier.weight
            name = k
        out[name] = v
    return out


def transreid_backbone_weights(state: dict[str, Tensor], grid: tuple[int, int],
                               source: str) -> dict[str, Tensor]:
    """A TransReID checkpoint's ViT under timm's names, position grid resampled to ``grid``.

    For fine-tuning (``model.pretrained``): the SIE table, heads and ImageNet ``fc`` are left out.
    From a JPM checkpoint the last block and final norm come from its global branch ``b1`` (the
    backbone's own copies were never trained). ``pos_embed`` is resampled bilinearly from the
    checkpoint's grid (found from its token count, see :func:`find_stride`) to ``grid``.

    Raises:
        CheckpointError: no ViT backbone, or a position grid no stride explains.
    """
    rd = _Reader(state, source)
    dims = rd.backbone(None)
    if dims is None:
        raise rd.fail()
    _, depth, patch, stride, size = dims
    out = {k[len("base."):]: v for k, v in state.items()
           if k.startswith("base.") and not k.startswith(("base.fc.", "base.sie_embed"))}
    if all(f"b1.0.{k}" in state for k in _BLOCK_KEYS) and "b1.1.weight" in state:
        for k in _BLOCK_KEYS:
            out[f"blocks.{depth - 1}.{k}"] = state[f"b1.0.{k}"]
        out["norm.weight"], out["norm.bias"] = state["b1.1.weight"], state["b1.1.bias"]
    old = grid_size(size, patch, stride)
    if tuple(old) != tuple(grid):
        out["pos_embed"] = resample_abs_pos_embed(
            out["pos_embed"].float(), new_size=list(grid), old_size=list(old),
            num_prefix_tokens=1, interpolation="bilinear", antialias=False)
    return out
