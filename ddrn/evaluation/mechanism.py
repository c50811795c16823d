"""Is the Embedding Space at work? Measurements of a trained model's codebook on a test split.

The paper claims that replacing the patch tokens after block N-1 by their nearest codebook
vectors "reconstructs the data distribution" and so restores what an occluder hides (sec. 1,
3.3, Fig. 2). A re-ID metric cannot tell whether that happens; these functions measure it:

* :func:`code_statistics`: the code histogram of every patch token of a split (usage, perplexity,
  dead codes) and the diversity of the tokens *entering* the Embedding Space (mean pairwise
  cosine of the patch tokens of one image: near 1 means the tokens are nearly parallel and the
  codebook has little to tell apart).
* :func:`extract_features` with ``constant_code``: the retrieval feature when block N's patch
  inputs are all replaced by one code; the R1 drop against the normal feature is how much the
  retrieval feature depends on the quantised tokens at all.
* :func:`occluder_patches` / :func:`twin_statistics`: on a synthetic set, where every occluded
  query has an unoccluded twin (same scene, pose and pixel noise, no occluder), the occluder's
  pixels are where the two images differ; each overlapping patch (kernel ``patch``, ``stride``,
  the model's patch embedding) is an *occluder patch* when at least ``min_cover`` of it is
  covered. We then compare the codes and tokens of query and twin at those patches.

Everything runs under ``torch.inference_mode`` through a forward hook on
``model.embedding_space``, so the model is not modified.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddrn.config import InputConfig
from ddrn.data import BatchAugment, PackedSplit
from ddrn.models.embedding_space import code_usage

OCCLUDER_DIFF = 24
"""A pixel belongs to the occluder when query and twin differ by more than this (uint8, max over
channels). Both images share the pixel noise; JPEG artefacts leave a median difference of 2 and
the occluders' contrast is mostly > 30 (measured on the demo's occluded_duke queries)."""


@dataclass
class Captured:
    """What one forward pass saw around the Embedding Space, for B images with N patch tokens.

    Attributes:
        features: (B, D) the retrieval feature (``output.features``).
        tokens: (B, N, D) the patch tokens entering the Embedding Space (block N-1's output).
        quantized: (B, N, D) what block N received instead.
        indices: (B, N) the code of every patch token.
    """

    features: Tensor
    tokens: Tensor
    quantized: Tensor
    indices: Tensor


@contextmanager
def _capture(space: nn.Module, store: dict[str, Tensor],
             constant_code: int | None) -> Iterator[None]:
    def hook(_module: nn.Module, args: tuple[Tensor, ...], output: tuple[Tensor, Tensor]
             ) -> tuple[Tensor, Tensor] | None:
        quantized, indices = output
        store["tokens"], store["quantized"], store["indices"] = args[0], quantized, indices
        if constant_code is None:
            return None
        code = space.codes()[constant_code].to(quantized.dtype)  # (D,): what the lookup returns
        quantized = code.expand_as(quantized)  # every patch input of block N is the same code
        indices = torch.full_like(indices, constant_code)
        store["quantized"], store["indices"] = quantized, indices
        return quantized, indices

    handle = space.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _space(model: nn.Module) -> nn.Module:
    space = getattr(model, "embedding_space", None)
    if space is None:
        raise ValueError(f"{type(model).__name__} has no Embedding Space (model.embedding_space)")
    return space


@torch.inference_mode()
def iterate_captures(model: nn.Module, split: PackedSplit, input_cfg: InputConfig,
                     batch_size: int, device: torch.device | str,
                     constant_code: int | None = None) -> Iterator[Captured]:
    """Forward ``split`` in order, batch by batch, yielding what the Embedding Space saw.

    Args:
        constant_code: replace every patch token entering block N by this code's vector.
    """
    device = torch.device(device)
    space = _space(model)
    transform = BatchAugment(input_cfg, train=False)
    was_training = model.training
    model.eval()
    store: dict[str, Tensor] = {}
    try:
        with _capture(space, store, constant_code):
            for start in range(0, len(split), batch_size):
                raw = torch.from_numpy(np.array(split.images[start:start + batch_size]))
                camids = torch.as_tensor(np.asarray(split.camids[start:start + batch_size]))
                out = model(transform(raw.to(device)), camids.to(device))
                yield Captured(out.features.float().cpu(), store["tokens"].float().cpu(),
                               store["quantized"].float().cpu(), store["indices"].cpu())
    finally:
        model.train(was_training)


def extract_features(model: nn.Module, split: PackedSplit, input_cfg: InputConfig,
                     batch_size: int, device: torch.device | str,
                     constant_code: int | None = None) -> Tensor:
    """(len(split), D) retrieval features, optionally with every patch input of block N
    replaced by ``constant_code``."""
    feats = [c.features for c in iterate_captures(model, split, input_cfg, batch_size, device,
                                                  constant_code)]
    return torch.cat(feats) if feats else torch.zeros(0, getattr(model, "feature_dim", 0))


def mean_pairwise_cosine(tokens: Tensor) -> Tensor:
    """(B, N, D) -> (B,) mean cosine between the N tokens of each item, self-pairs excluded."""
    unit = F.normalize(tokens.float(), dim=-1)
    n = unit.shape[1]
    summed = unit.sum(dim=1)  # (B, D): |sum u|^2 = sum_ij u_i.u_j = N + sum_{i != j} u_i.u_j
    return ((summed * summed).sum(-1) - n) / max(n * (n - 1), 1)


@dataclass
class CodeStatistics:
    """Code usage and token diversity of one split (see :func:`code_statistics`)."""

    histogram: list[int]
    perplexity: float
    dead_codes: int
    token_cosine: float
    features: Tensor = field(repr=False)


def code_statistics(model: nn.Module, split: PackedSplit, input_cfg: InputConfig,
                    batch_size: int, device: torch.device | str) -> CodeStatistics:
    """The code histogram over every patch token of ``split`` and the tokens' diversity."""
    size = int(_space(model).num_embeddings)
    hist = torch.zeros(size, dtype=torch.long)
    cosines, feats = [], []
    for cap in iterate_captures(model, split, input_cfg, batch_size, device):
        hist += torch.bincount(cap.indices.reshape(-1), minlength=size)
        cosines.append(mean_pairwise_cosine(cap.tokens))
        feats.append(cap.features)
    use = code_usage(hist)
    return CodeStatistics(hist.tolist(), use["perplexity"], use["dead_codes"],
                          float(torch.cat(cosines).mean()) if cosines else float("nan"),
                          torch.cat(feats) if feats else torch.zeros(0))


def patch_windows(height: int, width: int, patch: int, stride: int) -> np.ndarray:
    """(N, 4) ``top, left, bottom, right`` pixel windows of the overlapping patch grid, row-major
    (the order of :class:`~ddrn.models.vit.OverlapPatchEmbed`'s tokens)."""
    rows, cols = (height - patch) // stride + 1, (width - patch) // stride + 1
    top = np.repeat(np.arange(rows) * stride, cols)
    left = np.tile(np.arange(cols) * stride, rows)
    return np.stack([top, left, top + patch, left + patch], axis=1)


def patch_coverage(mask: np.ndarray, patch: int, stride: int) -> np.ndarray:
    """(N,) the share of each patch's pixels that ``mask`` (H, W) bool covers."""
    windows = patch_windows(mask.shape[0], mask.shape[1], patch, stride)
    return np.array([mask[t:b, left:r].mean() for t, left, b, r in windows], dtype=np.float64)


def occluder_mask(occluded: np.ndarray, twin: np.ndarray, threshold: int = OCCLUDER_DIFF
                  ) -> np.ndarray:
    """(H, W) bool: where an occluded image differs from its unoccluded twin (uint8 (H, W, 3))."""
    diff = np.abs(occluded.astype(np.int16) - twin.astype(np.int16)).max(axis=-1)
    return diff > threshold


def occluder_patches(occluded: np.ndarray, twin: np.ndarray, patch: int, stride: int,
                     min_cover: float = 0.5, threshold: int = OCCLUDER_DIFF) -> np.ndarray:
    """(N,) bool: the patches at least ``min_cover`` covered by the occluder."""
    return patch_coverage(occluder_mask(occluded, twin, threshold), patch, stride) >= min_cover


def _cos(a: Tensor, b: Tensor) -> Tensor:
    return F.cosine_similarity(a.float(), b.float(), dim=-1)


def twin_statistics(model: nn.Module, query: PackedSplit, twin: PackedSplit,
                    input_cfg: InputConfig, batch_size: int, device: torch.device | str,
                    patch: int, stride: int, min_cover: float = 0.5) -> dict[str, float]:
    """Codes and tokens of occluded queries against their unoccluded twins (row i = twin of i).

    Returns (``nan`` where a set is empty):
        ``occluder_patches``: how many patches the occluders cover (of ``patches``);
        ``occluder_codes_unused_by_twins``: the share of occluder patches whose code no patch of
        any twin image uses (codes the Embedding Space reserves for occluders);
        ``code_agreement_occluder`` / ``code_agreement_clean``: the share of occluder / other
        patches whose code equals the twin's code at the same position;
        ``chance_agreement``: the agreement two independent draws from the twins' code
        frequencies would reach (sum of p^2);
        ``cos_continuous_occluder`` / ``cos_quantized_occluder``: the mean cosine between query and
        twin at the occluder patches, of the tokens entering the Embedding Space and of what
        block N receives; the difference ``twin_pull`` = quantized - continuous is how much
        quantisation moves an occluded patch towards its unoccluded twin (> 0: closer).
    """
    if len(query) != len(twin):
        raise ValueError(f"query has {len(query)} images but twin {len(twin)}; expected pairs")
    size = int(_space(model).num_embeddings)
    q_caps = iterate_captures(model, query, input_cfg, batch_size, device)
    t_caps = iterate_captures(model, twin, input_cfg, batch_size, device)
    twin_hist = torch.zeros(size, dtype=torch.long)
    occ_codes, occ_agree, clean_agree, cos_c, cos_q = [], [], [], [], []
    start = 0
    for qc, tc in zip(q_caps, t_caps, strict=True):
        b = qc.indices.shape[0]
        covered = torch.from_numpy(np.stack([
            occluder_patches(np.asarray(query.images[i]), np.asarray(twin.images[i]), patch,
                             stride, min_cover) for i in range(start, start + b)]))  # (b, N)
        start += b
        twin_hist += torch.bincount(tc.indices.reshape(-1), minlength=size)
        same = qc.indices == tc.indices  # (b, N)
        occ_codes.append(qc.indices[covered])
        occ_agree.append(same[covered])
        clean_agree.append(same[~covered])
        cos_c.append(_cos(qc.tokens, tc.tokens)[covered])
        cos_q.append(_cos(qc.quantized, tc.quantized)[covered])
    codes = torch.cat(occ_codes) if occ_codes else torch.zeros(0, dtype=torch.long)
    probs = twin_hist.double() / max(float(twin_hist.sum()), 1.0)

    def mean(parts: list[Tensor]) -> float:
        x = torch.cat(parts).float() if parts else torch.zeros(0)
        return float(x.mean()) if x.numel() else float("nan")

    continuous, quantized = mean(cos_c), mean(cos_q)
    patches = sum(int(a.numel()) + int(c.numel()) for a, c in zip(occ_agree, clean_agree, strict=True))
    return {
        "pairs": float(len(query)),
        "patches": float(patches),
        "occluder_patches": float(codes.numel()),
        "occluder_codes_unused_by_twins": (float((twin_hist[codes] == 0).float().mean())
                                           if codes.numel() else float("nan")),
        "code_agreement_occluder": mean(occ_agree),
        "code_agreement_clean": mean(clean_agree),
        "chance_agreement": float((probs * probs).sum()),
        "cos_continuous_occluder": continuous,
        "cos_quantized_occluder": quantized,
        "twin_pull": quantized - continuous,
    }
