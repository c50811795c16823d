"""Batch augmentations on uint8 images, on whatever device they live (TransReID's recipe).

Train: horizontal flip (p = ``flip_prob``) -> zero-pad by ``padding`` and random-crop back to
H x W -> scale to [0, 1] and normalise -> random erasing (p = ``erasing_prob``) filled with
per-pixel N(0, 1) noise in normalised space, as timm's ``RandomErasing(mode='pixel', max_count=1)``
(area 2%..33%, log-uniform aspect 0.3..3.3, up to 10 tries). Test: scale and normalise only.

Two paths draw the same random parameters from the same generator, in the same order:

- CPU: one numpy pass per image reads the (flipped) crop window straight from the source rows
  (a memory-mapped store too, see :meth:`BatchAugment.gather`), converts, normalises and writes
  channels-first floats; only the padding strips are filled separately and only the erased boxes
  get noise. numpy runs single-threaded and releases the GIL, so loader threads scale, whereas
  torch's OpenMP ops on small tensors stall badly on a shared, oversubscribed CPU.
- CUDA (any non-CPU device): flip, pad and crop are one gather on the uint8 batch, then one float
  pass, and erasing is a masked select against full-batch noise (cheap on a GPU).

The caller's tensor or array is never written to.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ddrn.config import InputConfig

_ERASE_AREA = (0.02, 1 / 3)
_ERASE_LOG_ASPECT = (math.log(0.3), math.log(1 / 0.3))
_ERASE_TRIES = 10


class BatchAugment:
    """uint8 (B, H, W, 3) -> float (B, 3, height, width), normalised.

    Args:
        input_cfg: size, mean/std and augmentation probabilities.
        train: apply the random augmentations.
        seed: seed of this object's own generators (``None`` = torch's global RNG); a call may
            pass its own ``seed`` instead, which makes that call independent of earlier ones.
    """

    def __init__(self, input_cfg: InputConfig, train: bool, seed: int | None = None) -> None:
        self.cfg = input_cfg
        self.train = train
        self.seed = seed
        self._generators: dict[str, torch.Generator] = {}
        std = np.asarray(input_cfg.std, dtype=np.float32)
        # (x / 255 - mean) / std == x * scale + shift, per channel, shaped (3, 1, 1)
        self._scale = (1.0 / (255.0 * std)).reshape(3, 1, 1)
        self._shift = (-np.asarray(input_cfg.mean, dtype=np.float32) / std).reshape(3, 1, 1)

    def __call__(self, images: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected uint8 (B, H, W, 3) images, got {images.dtype} "
                             f"{tuple(images.shape)}")
        g = self._generator(images.device, seed)
        if images.device.type == "cpu":
            return self._cpu(images.numpy(), np.arange(images.shape[0]), g)
        return self._torch(images, g)

    def gather(self, store: np.ndarray, index: Sequence[int] | np.ndarray,
               seed: int | None = None) -> torch.Tensor:
        """Augment rows ``index`` of a uint8 (N, H, W, 3) array (e.g. the packed memmap), on CPU.

        Same result as ``self(torch.from_numpy(store[index]), seed)`` without the intermediate
        uint8 batch: each crop window is read from the store once, in store order.
        """
        index = np.asarray(index, dtype=np.int64)
        if store.dtype != np.uint8 or store.ndim != 4 or store.shape[-1] != 3:
            raise ValueError(f"expected a uint8 (N, H, W, 3) store, got {store.dtype} {store.shape}")
        return self._cpu(store, index, self._generator(torch.device("cpu"), seed))

    # -- generators -----------------------------------------------------------------------------

    def _generator(self, device: torch.device, seed: int | None) -> torch.Generator | None:
        if seed is not None:
            return torch.Generator(device=device).manual_seed(seed)
        return self._gen(device)

    def _gen(self, device: torch.device) -> torch.Generator | None:
        """This object's own generator for ``device`` (kept across calls; checkpointed by the engine)."""
        if self.seed is None:
            return None
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[key]

    def _draw_crop(self, b: int, dev: torch.device, g: torch.Generator | None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per image: flip (bool) and the crop offsets (dy, dx) in [-padding, padding]."""
        pad = self.cfg.padding
        flip = torch.rand(b, device=dev, generator=g) < self.cfg.flip_prob
        oy = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=g) - pad
        ox = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=g) - pad
        return flip, oy, ox

    def _draw_boxes(self, b: int, h: int, w: int, dev: torch.device, g: torch.Generator | None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per image: erase or not, and the box (top, left, height, width), as timm draws it."""
        area = h * w * torch.empty(b, _ERASE_TRIES, device=dev).uniform_(*_ERASE_AREA, generator=g)
        aspect = torch.exp(torch.empty(b, _ERASE_TRIES, device=dev).uniform_(*_ERASE_LOG_ASPECT,
                                                                              generator=g))
        eh = torch.sqrt(area * aspect).round().long()
        ew = torch.sqrt(area / aspect).round().long()
        fits = (eh < h) & (ew < w)
        first = torch.argmax(fits.int(), dim=1)[:, None]                  # the first try that fits
        eh, ew = eh.gather(1, first).squeeze(1), ew.gather(1, first).squeeze(1)
        apply = (torch.rand(b, device=dev, generator=g) < self.cfg.erasing_prob) & fits.any(1)
        top = (torch.rand(b, device=dev, generator=g) * (h - eh + 1)).long()
        left = (torch.rand(b, device=dev, generator=g) * (w - ew + 1)).long()
        return apply, top, left, eh, ew

    # -- CPU path -------------------------------------------------------------------------------

    def _cpu(self, store: np.ndarray, index: np.ndarray, g: torch.Generator | None) -> torch.Tensor:
        store = np.asarray(store)  # a memmap as a plain ndarray view: no per-row subclass overhead
        b, (h, w) = len(index), store.shape[1:3]
        cpu = torch.device("cpu")
        if self.train:
            flip, oy, ox = (t.tolist() for t in self._draw_crop(b, cpu, g))
        else:
            flip, oy, ox = [False] * b, [0] * b, [0] * b
        out = np.empty((b, 3, h, w), dtype=np.float32)
        for i in np.argsort(index, kind="stable").tolist():  # store order: sequential memmap reads
            src = store[index[i]]                                         # (h, w, 3) view
            if flip[i]:
                src = src[:, ::-1]  # flip first, then pad and crop, as TransReID
            self._window(src, out[i], oy[i], ox[i])
        x = torch.from_numpy(out)
        if (h, w) != (self.cfg.height, self.cfg.width):
            # Normalisation is affine, so resizing after it equals resizing the raw pixels;
            # the clamp keeps bicubic overshoot inside the normalised [0, 255] range.
            lo, hi = torch.from_numpy(self._shift), torch.from_numpy(255 * self._scale + self._shift)
            x = F.interpolate(x, size=(self.cfg.height, self.cfg.width), mode="bicubic",
                              align_corners=False)
            x = torch.minimum(torch.maximum(x, lo), hi).contiguous()
        if self.train and self.cfg.erasing_prob > 0:
            self._erase_boxes(x, g)
        return x

    def _window(self, src: np.ndarray, dst: np.ndarray, dy: int, dx: int) -> None:
        """dst (3, h, w) float = normalised src (h, w, 3) shifted by (dy, dx), zero-padded."""
        h, w = dst.shape[1:]
        # output row r shows source row r + dy (black outside), likewise for columns
        r0, r1, c0, c1 = max(0, -dy), h - max(0, dy), max(0, -dx), w - max(0, dx)
        inner = dst[:, r0:r1, c0:c1]
        np.multiply(src[r0 + dy:r1 + dy, c0 + dx:c1 + dx].transpose(2, 0, 1), self._scale, out=inner)
        np.add(inner, self._shift, out=inner)
        black = self._shift                                                # normalised 0
        if r0 > 0:
            dst[:, :r0] = black
        if r1 < h:
            dst[:, r1:] = black
        if c0 > 0:
            dst[:, r0:r1, :c0] = black
        if c1 < w:
            dst[:, r0:r1, c1:] = black

    def _erase_boxes(self, x: torch.Tensor, g: torch.Generator | None) -> None:
        """Fill only the drawn boxes of ``x`` (our own buffer) with N(0, 1) noise, in place."""
        b, c, h, w = x.shape
        apply, top, left, eh, ew = (t.tolist() for t in self._draw_boxes(b, h, w, x.device, g))
        boxes = [(i, top[i], left[i], eh[i], ew[i]) for i in range(b) if apply[i]]
        if not boxes:
            return
        noise = torch.randn(sum(c * bh * bw for *_, bh, bw in boxes), generator=g).numpy()
        xs, k = x.numpy(), 0
        for i, t, lft, bh, bw in boxes:
            n = c * bh * bw
            xs[i, :, t:t + bh, lft:lft + bw] = noise[k:k + n].reshape(c, bh, bw)
            k += n

    # -- device path ----------------------------------------------------------------------------

    def _torch(self, images: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        x = self._flip_pad_crop(images, g) if self.train else images
        # Channels-first while still bytes, then one float copy that is ours to modify in place.
        x = x.permute(0, 3, 1, 2).contiguous().float()                # (B, 3, H, W) in [0, 255]
        if x.shape[-2:] != (self.cfg.height, self.cfg.width):
            x = F.interpolate(x, size=(self.cfg.height, self.cfg.width), mode="bicubic",
                              align_corners=False).clamp_(0, 255)
        x.mul_(torch.from_numpy(self._scale).to(x.device)).add_(
            torch.from_numpy(self._shift).to(x.device))
        if self.train and self.cfg.erasing_prob > 0:
            x = self._erase_masked(x, g)
        return x

    def _flip_pad_crop(self, images: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        b, h, w, _ = images.shape
        dev = images.device
        flip, oy, ox = self._draw_crop(b, dev, g)
        rows = oy[:, None] + torch.arange(h, device=dev)                          # (B, H)
        cols = ox[:, None] + torch.arange(w, device=dev)                          # (B, W)
        # Padding is symmetric, so flip-then-crop equals crop with mirrored column indices.
        cols = torch.where(flip[:, None], (w - 1) - cols, cols)
        valid = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
        out = images[torch.arange(b, device=dev)[:, None, None],
                     rows.clamp(0, h - 1)[:, :, None], cols.clamp(0, w - 1)[:, None, :]]  # (B, H, W, 3)
        return out * valid[..., None]  # zero padding (black, as torchvision's Pad)

    def _erase_masked(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        b, _, h, w = x.shape
        dev = x.device
        apply, top, left, eh, ew = self._draw_boxes(b, h, w, dev, g)
        ys = torch.arange(h, device=dev)[None, :]
        xs = torch.arange(w, device=dev)[None, :]
        in_y = (ys >= top[:, None]) & (ys < (top + eh)[:, None])                  # (B, H)
        in_x = (xs >= left[:, None]) & (xs < (left + ew)[:, None])                # (B, W)
        mask = (in_y[:, :, None] & in_x[:, None, :] & apply[:, None, None])[:, None]  # (B, 1, H, W)
        noise = torch.randn(x.shape, device=dev, generator=g, dtype=x.dtype)
        return torch.where(mask, noise, x)
