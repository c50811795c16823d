"""DDRN's Embedding Space (paper sec. 3.3, Eq. 1-2): patch tokens replaced by codebook vectors.

Paper: "The features between the N-1th and Nth layers are replaced by the most similar vectors
in the Embedding Space" (Fig. 2), and "During the forward pass, Argmax is employed, while Gumbel
Softmax is used for backpropagation in the backward pass" (sec. 3.3), with

    t'_i = sum_j G(S(t_i E^T))_j E_j                                   (Eq. 1)
    G(v_i) = exp((v_i + G_i) / tau) / sum_j exp((v_j + G_j) / tau)     (Eq. 2)

Why a codebook of our own and not ``vector-quantize-pytorch``: that library's ``VectorQuantize``
trains its codes by EMA k-means updates or a commitment loss, not by the paper's straight-through
Gumbel-Softmax gradient of Eq. 1-2, and its orthogonal regulariser is not Eq. 3; wrapping it would
hide the paper's mechanism behind options that replace it. What we learned from it and adopted
here, where the paper is silent: k-means initialisation of the codes from the first batch
(``kmeans_init``), cosine similarity on L2-normalised tokens and codes (``use_cosine_sim``, after
ViT-VQGAN), and expiring codes whose EMA usage falls below a threshold by re-seeding them with
random batch tokens (``threshold_ema_dead_code``), checked at every step with a fast usage EMA
(its decay 0.8 is that library's default).

The measurements behind every default are in ``docs/embedding_space_diagnostics.md`` (demo ``es``
on the synthetic Occluded-Duke set, 30 epochs, 3 seeds, made by
``python -m benchmarks.diagnose_codebook``). The paper's recipe with none of the fixes (dot
product, random codes, no restart, weight decay on the codebook) collapses to one or two codes.

Choices the paper leaves open, made here:

* **Similarity** (``similarity``). ``cosine`` (default): Eq. 1's ``t_i E^T`` on L2-normalised
  tokens and codes, so the logits are cosines in [-1, 1] and a code cannot win every token by its
  norm alone (ViT-VQGAN's fix for codebook collapse); the token is replaced by the normalised
  code (block N starts with a LayerNorm, so only the direction reaches its attention). ``dot``:
  raw dot product on the raw (pre-LayerNorm) tokens, the original reading. Cosine alone does not
  keep the codes alive (the tokens entering the Embedding Space are nearly parallel, so one code
  still wins); with the dead-code restart it does (see the diagnostics).
* **Which index the training forward pass uses** (``train_index``). ``argmax`` (default): the
  clean argmax of the logits ("replaced by the most similar vectors", "During the forward pass,
  Argmax is employed"); the Gumbel noise only shapes the surrogate gradient, so training and
  evaluation pick codes by the same rule. ``sample``: the noisy argmax of Eq. 2, ``argmax(v + G)``
  (what ``F.gumbel_softmax(hard=True)`` returns), so other codes are tried in training; evaluation
  always takes the clean argmax. With cosine logits in [-1, 1] the Gumbel noise (std 1.28)
  dominates and the sample is nearly uniform, so it is off by default.
* **The surrogate.** Eq. 2 applied to the logits v: ``soft = softmax((v + G) / tau)``.
  Eq. 1 writes G(S(.)), a Gumbel-Softmax of the softmax; we read S as naming the softmax inside
  G (applying Eq. 2 to probabilities would squash every logit into [0, 1] and make tau, not the
  tokens, decide the sample). ``sampling="default"`` is the "default method [17] of copying
  decoder gradients to the encoder": the same straight-through estimator with the noise-free
  ``softmax(v / tau)`` (the Fig. 6 comparison).
* **Exactness.** The output is computed as ``C[index] + (soft - soft.detach()) @ C`` (C the codes
  the lookup uses: E, or E with normalised rows): the second term is exactly zero in the forward
  pass, so each token is *bit-for-bit* a code, while the gradient equals that of the usual
  ``(hard - soft.detach() + soft) @ C``: the chosen rows get the task gradient directly, and
  tokens and all rows get it through ``soft``.
* **Precision.** Logits, noise and softmax run in fp32 with autocast off (tau = 0.1 multiplies
  the logits by 10, and fp16 Gumbel noise is a known NaN source); the Exp(1) draw behind the
  noise is clamped away from 0, so its logarithm is finite.
* **Initialisation** (``kmeans_init``). Default: the codes are set, at the first training step,
  to a k-means of that batch's block N-1 tokens (spherical k-means with cosine similarity), so
  every code starts where tokens are (vector-quantize-pytorch's ``kmeans_init``). Otherwise, and
  until that step, random Gaussian rows with std 1/sqrt(D) (norm ~1, *not* orthogonal to start
  with, so Eq. 3's effect stays visible, Table 2 index 1 vs 3). Whether the init has happened is
  the ``initialized`` buffer, saved in checkpoints, so a resumed run does not re-initialise.
* **Dead-code restart** (``dead_code_threshold``, ``restart_every``). Every training step updates
  an EMA (decay ``usage_decay`` = 0.8) of each code's share of the batch's tokens (buffer
  ``usage_ema``, starts uniform at 1/x). Every ``restart_every`` steps (default 1), codes whose
  EMA share is below ``dead_code_threshold / x`` are re-seeded with random tokens of the current
  batch and their EMA reset to 1/x, which gives a restarted code ~10 steps of grace before it can
  be judged dead again. A first version checked every 20 steps with decay 0.9: a code could then
  sit unused for ~40 steps, more than a demo epoch (30 steps), and the collapse test's short
  training of the demo ``ddrn`` (8 epochs of 6 steps) ended at perplexity 36.3 but with 18 of
  64 codes unused in its last epoch. The draw uses the global
  generator, so it follows the project's seeding and a resumed run (which restores the
  generators and the buffers) repeats it. ``dead_code_threshold: 0`` turns it off.
* **Weight decay** (``weight_decay=False`` by default). :meth:`exclude_from_weight_decay` names
  the codebook so :func:`ddrn.engine.optim.build_optimizer` leaves it out of weight decay: decay shrinks the
  codes no token picks (they get no task gradient), which under the dot product makes them lose
  every comparison for good.
* **Compile-friendly.** No ``.item()`` and no host syncs in the forward pass; the only Python
  branches are on ``self.training``, the options, and a Python mirror of ``initialized`` (kept in
  step with the buffer by ``_load_from_state_dict``). Code usage statistics live in
  :meth:`EmbeddingSpace.usage`, called outside the forward pass.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def code_usage(histogram: Tensor) -> dict[str, Any]:
    """``perplexity``: exp(entropy) of the code frequencies of a (x,) histogram (x when every code
    is used evenly, 1 when one code takes every token); ``dead_codes``: codes never chosen."""
    probs = histogram.double() / max(float(histogram.sum()), 1.0)
    entropy = -(probs * torch.log(probs.clamp_min(1e-30))).sum()
    return {"perplexity": float(torch.exp(entropy)), "dead_codes": int((histogram == 0).sum())}


class EmbeddingSpace(nn.Module):
    """A learnable codebook of ``num_embeddings`` vectors that replaces each token by one of them.

    Args:
        num_embeddings: x, the number of code vectors (paper: 128).
        dim: D, the token width.
        tau: the Gumbel-Softmax temperature of Eq. 2 (paper: 0.1).
        sampling: ``gumbel`` (Eq. 2) or ``default`` (noise-free straight-through softmax).
        similarity: ``cosine`` (L2-normalised tokens and codes) or ``dot`` (raw dot product).
        train_index: ``argmax`` (clean argmax in training, the paper's forward) or ``sample``
            (the noisy argmax of Eq. 2 in training; evaluation keeps the clean argmax).
        kmeans_init: set the codes to a k-means of the first training batch's tokens.
        kmeans_iters: Lloyd iterations of that k-means.
        dead_code_threshold: restart codes whose EMA token share is below this fraction of the
            uniform share 1/x (0: never restart).
        restart_every: training steps between two restarts.
        usage_decay: decay of the per-code usage EMA.
        weight_decay: whether the optimiser may apply weight decay to the codebook.
    """

    def __init__(self, num_embeddings: int, dim: int, tau: float = 0.1,
                 sampling: Literal["gumbel", "default"] = "gumbel", *,
                 similarity: Literal["cosine", "dot"] = "cosine",
                 train_index: Literal["argmax", "sample"] = "argmax",
                 kmeans_init: bool = True, kmeans_iters: int = 10,
                 dead_code_threshold: float = 0.1, restart_every: int = 1,
                 usage_decay: float = 0.8, weight_decay: bool = False) -> None:
        super().__init__()
        if (num_embeddings < 2 or tau <= 0 or sampling not in ("gumbel", "default")
                or similarity not in ("cosine", "dot") or train_index not in ("argmax", "sample")
                or dead_code_threshold < 0 or restart_every < 1 or not 0 <= usage_decay < 1
                or kmeans_iters < 1):
            raise ValueError(f"bad EmbeddingSpace({num_embeddings}, {dim}, tau={tau}, "
                             f"sampling={sampling!r}, similarity={similarity!r}, "
                             f"train_index={train_index!r}, kmeans_iters={kmeans_iters}, "
                             f"dead_code_threshold={dead_code_threshold}, "
                             f"restart_every={restart_every}, usage_decay={usage_decay})")
        # Eq. 1-2: the codebook E and its Gumbel-Softmax.
        self.num_embeddings = num_embeddings
        self.dim = dim
        self.tau = tau
        self.sampling = sampling
        self.weight = nn.Parameter(torch.empty(num_embeddings, dim))  # E: (x, D)
        # Where the paper is silent (module docstring): how codes are compared and picked, ...
        self.similarity = similarity
        self.train_index = train_index
        self.weight_decay = weight_decay
        # ... and how they start and stay alive.
        self.kmeans_init = kmeans_init
        self.kmeans_iters = kmeans_iters
        self.dead_code_threshold = dead_code_threshold
        self.restart_every = restart_every
        self.usage_decay = usage_decay
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.register_buffer("usage_ema", torch.empty(num_embeddings))  # (x,) token shares
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # training steps seen
        self._initialized = False  # Python mirror of ``initialized``: no host sync per step
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=self.dim ** -0.5)
        self.initialized.fill_(False)
        self._initialized = False
        self.usage_ema.fill_(1.0 / self.num_embeddings)
        self.steps.zero_()

    def extra_repr(self) -> str:
        return (f"{self.num_embeddings}, {self.dim}, tau={self.tau}, sampling={self.sampling}, "
                f"similarity={self.similarity}, train_index={self.train_index}, "
                f"kmeans_init={self.kmeans_init}, dead_code_threshold={self.dead_code_threshold}")

    def exclude_from_weight_decay(self) -> set[str]:
        """Parameter names (relative to this module) the optimiser must not decay."""
        return set() if self.weight_decay else {"weight"}

    def codes(self) -> Tensor:
        """(x, D) the vectors the lookup compares with and returns: E, or E's unit rows."""
        weight = self.weight.float()
        return F.normalize(weight, dim=-1) if self.similarity == "cosine" else weight

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Replace every token by a code.

        Args:
            tokens: (B, N, D) patch tokens after block N-1 (the CLS token is not passed in).

        Returns:
            ``(quantized, indices)``: (B, N, D) in ``tokens``' dtype, each row exactly
            ``codes()[indices]``; (B, N) int64 code indices.
        """
        with torch.autocast(device_type=tokens.device.type, enabled=False):
            flat = tokens.detach().float().reshape(-1, tokens.shape[-1])  # (B*N, D)
            if self.training:
                self._maintain(flat)  # before E is used, so autograd sees the new rows
            codebook = self.codes()  # (x, D)
            queries = tokens.float()
            if self.similarity == "cosine":
                queries = F.normalize(queries, dim=-1)
            clean = queries @ codebook.t()  # (B, N, x), Eq. 1's t_i E^T
            if self.training:
                logits = clean + _gumbel_noise(clean) if self.sampling == "gumbel" else clean
                # The noisy argmax of Eq. 2 (sample) or the clean argmax (the paper's forward).
                indices = (logits if self.train_index == "sample" else clean).argmax(dim=-1)
                soft = torch.softmax(logits / self.tau, dim=-1)  # (B, N, x), Eq. 2
                quantized = F.embedding(indices, codebook)  # (B, N, D) exact rows
                # Zero in value, straight-through gradient in backward (see module docstring).
                quantized = quantized + (soft - soft.detach()) @ codebook
                if self.dead_code_threshold > 0:
                    self._track_usage(indices)
            else:
                indices = clean.argmax(dim=-1)  # (B, N): clean argmax
                quantized = F.embedding(indices, codebook)
        return quantized.to(tokens.dtype), indices

    @torch.no_grad()
    def _maintain(self, flat: Tensor) -> None:
        """Lazy k-means init on the first training batch, then the periodic dead-code restart."""
        if self.kmeans_init and not self._initialized:
            self.weight.copy_(_kmeans(flat, self.num_embeddings, self.kmeans_iters,
                                      self.similarity == "cosine"))
            self.initialized.fill_(True)
            self._initialized = True
        if self.dead_code_threshold > 0:
            # Restart only on every restart_every-th step, decided on the device (no host sync).
            due = (self.steps % self.restart_every == self.restart_every - 1)
            dead = (self.usage_ema < self.dead_code_threshold / self.num_embeddings) & due  # (x,)
            pick = torch.randint(0, flat.shape[0], (self.num_embeddings,), device=flat.device)
            seeds = flat[pick]  # (x, D) random batch tokens
            if self.similarity == "cosine":
                seeds = F.normalize(seeds, dim=-1)
            self.weight.copy_(torch.where(dead[:, None], seeds.to(self.weight.dtype), self.weight))
            self.usage_ema.copy_(torch.where(dead, torch.full_like(self.usage_ema,
                                                                   1.0 / self.num_embeddings),
                                             self.usage_ema))

    @torch.no_grad()
    def _track_usage(self, indices: Tensor) -> None:
        counts = torch.bincount(indices.reshape(-1), minlength=self.num_embeddings).float()
        share = counts / counts.sum().clamp_min(1.0)  # (x,)
        self.usage_ema.mul_(self.usage_decay).add_(share, alpha=1.0 - self.usage_decay)
        self.steps.add_(1)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any,
                              **kwargs: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        flag = state_dict.get(prefix + "initialized")
        if flag is not None:
            self._initialized = bool(flag)

    @torch.no_grad()
    def usage(self, indices: Tensor) -> dict[str, Tensor | float | int]:
        """Code usage of a batch (or an epoch's concatenated indices), for logging.

        Returns:
            ``histogram`` (x,) int64 counts, ``perplexity`` exp(entropy) of the code frequencies
            (x when all codes are used evenly, 1 when one code takes every token) and
            ``dead_codes`` the number of codes never chosen.
        """
        hist = torch.bincount(indices.reshape(-1).long().cpu(), minlength=self.num_embeddings)
        return {"histogram": hist, **code_usage(hist)}


def _kmeans(points: Tensor, k: int, iters: int, spherical: bool) -> Tensor:
    """Lloyd's k-means of (T, D) ``points`` into (k, D) centres, seeded from k random points.

    ``spherical``: points and centres on the unit sphere, assignment by cosine. A centre that
    loses all its points keeps its previous value. Draws from the global generator.
    """
    if spherical:
        points = F.normalize(points, dim=-1)
    # With fewer tokens than codes, some centres repeat (then restart spreads them later).
    pick = (torch.randperm(points.shape[0], device=points.device)[:k] if points.shape[0] >= k
            else torch.randint(0, points.shape[0], (k,), device=points.device))
    centres = points[pick].clone()  # (k, D)
    for _ in range(iters):
        if spherical:
            assign = (points @ centres.t()).argmax(dim=-1)  # (T,)
        else:
            assign = torch.cdist(points, centres).argmin(dim=-1)
        sums = torch.zeros_like(centres).index_add_(0, assign, points)  # (k, D)
        counts = torch.bincount(assign, minlength=k).to(points.dtype)[:, None]  # (k, 1)
        means = sums / counts.clamp_min(1.0)
        if spherical:
            means = F.normalize(means, dim=-1)
        centres = torch.where(counts > 0, means, centres)
    return centres


def _gumbel_noise(like: Tensor) -> Tensor:
    """Standard Gumbel samples -log(e), e ~ Exp(1), in fp32 (one log instead of two).

    ``exponential_`` can return exactly 0 (pytorch #22442); clamping to the smallest normal
    float keeps the noise finite (at most ~87).
    """
    expo = torch.empty_like(like, dtype=torch.float32).exponential_()
    return -torch.log(expo.clamp_min_(torch.finfo(torch.float32).tiny))
