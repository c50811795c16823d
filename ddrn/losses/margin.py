"""Angular-margin heads: ArcFace, Sub-center ArcFace and DDRN's HS-ArcFace (sec. 3.5, Eq. 4).

All three take ``(in_features, num_classes, scale=, margin=, k=)``, keep their class centres in
``.weight``, and offer ``logits(features, labels)``: the scaled cosines (B, C) with the angular
margin on each sample's target class. ``forward(features, labels)`` is the loss. Margins are in
radians (insightface / TransReID convention; pytorch-metric-learning uses degrees). Everything
runs in fp32 with autocast off: acos near ±1 and s = 20 have no room for fp16.

Margin: the target cosine cos θ becomes cos(θ + m), with θ = acos(clamp(cos, ±(1 - 1e-7))) (acos
has an infinite slope at ±1). Where θ + m > π, cos(θ + m) would start to *grow* again, so, as
TransReID's ``Arcface``, we use the monotone fallback cos θ - sin(π - m)·m there.

Eq. 4 as printed writes the target logit as s(cos θ_y + m), which would *raise* the target's
score (an easier target, the opposite of a margin). The paper also says "Finally we apply the
ArcFace operation to the output" and "When k=1, HS-Arcface degenerates into ArcFace", so we read
it as ArcFace's s·cos(θ_y + m).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_ACOS_EPS = 1e-7


def angular_margin(cos_target: Tensor, margin: float) -> Tensor:
    """cos(θ + m) for θ = acos(cos_target), with TransReID's fallback where θ + m > π."""
    cos = cos_target.clamp(-1.0 + _ACOS_EPS, 1.0 - _ACOS_EPS)
    theta = torch.acos(cos)
    fallback = cos - math.sin(math.pi - margin) * margin
    return torch.where(theta + margin <= math.pi, torch.cos(theta + margin), fallback)


def margin_logits(cosine: Tensor, labels: Tensor, margin: float, scale: float) -> Tensor:
    """s·cos with cos(θ_y + m) in each row's target column. cosine: (B, C) -> (B, C)."""
    index = labels[:, None]  # (B, 1)
    target = angular_margin(cosine.gather(1, index), margin)
    return cosine.scatter(1, index, target) * scale


def _unit(x: Tensor) -> Tensor:
    return F.normalize(x.float(), dim=-1)


class ArcFace(nn.Module):
    """ArcFace (Deng et al. 2019): one centre per class, ``weight`` (C, D).

    ``k`` is accepted for a uniform signature and must be 1.
    """

    def __init__(self, in_features: int, num_classes: int, scale: float = 20.0,
                 margin: float = 0.2, k: int = 1) -> None:
        super().__init__()
        if k != 1:
            raise ValueError(f"ArcFace has one centre per class; got k={k} (use SubCenterArcFace)")
        self.scale, self.margin, self.k = scale, margin, k
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.normal_(self.weight, std=0.01)  # only the direction matters: uniform on the sphere

    def cosine(self, features: Tensor) -> Tensor:
        """(B, D) -> (B, C) cosines to the class centres."""
        return _unit(features) @ _unit(self.weight).t()

    def logits(self, features: Tensor, labels: Tensor) -> Tensor:
        with torch.autocast(device_type=features.device.type, enabled=False):
            return margin_logits(self.cosine(features), labels, self.margin, self.scale)

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(self.logits(features, labels), labels)


class SubCenterArcFace(ArcFace):
    """Sub-center ArcFace (Deng et al. 2020): k centres per class, ``weight`` (k, C, D).

    A class's cosine is the max over its k sub-centres (insightface's ``reshape(-1, C, K)`` and
    max over K); the margin is applied after that pooling, to the target class only.
    """

    def __init__(self, in_features: int, num_classes: int, scale: float = 20.0,
                 margin: float = 0.2, k: int = 3) -> None:
        nn.Module.__init__(self)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.scale, self.margin, self.k = scale, margin, k
        self.weight = nn.Parameter(torch.empty(k, num_classes, in_features))
        nn.init.normal_(self.weight, std=0.01)

    def cosine(self, features: Tensor) -> Tensor:
        """(B, D) -> (B, C): max over the k sub-centres of each class."""
        per_centre = torch.einsum("bd,kcd->bkc", _unit(features), _unit(self.weight))
        return per_centre.amax(dim=1)


class HSArcFace(nn.Module):
    """Hierarchical Sub-center ArcFace (DDRN, sec. 3.5, Fig. 4c/5, Eq. 4).

    Paper (Fig. 5): "We select the i-th sub-center among the K sub-center representations and
    compute its similarity with the input feature. Then, we determine its corresponding class
    label. If the class label equals N+1, we consider the need for further classification at the
    next level. So HS-Arcface introduces an additional clustering center (N+1) as a marker for the
    following layer classification. If i is less than K, ... we increment i by one and continue
    the loop. Finally, we apply the ArcFace operation to the output." No public implementation
    exists; the choices we made:

    1. **Parameters.** ``weight`` (k, C, D): level i holds the i-th sub-centre of every class
       (N in the paper's text = C classes here); ``marker`` (k-1, D): the extra "N+1" centre of
       levels 1..k-1. The last level has no marker ("If i is less than K"), so with k = 1 there
       is none and the head is exactly ArcFace on ``weight[0]``.
    2. **Routing** (no gradient). ``routing="marker"``: at level i the sample is classified
       among the C sub-centres and the marker by cosine; if the marker wins it moves on to level
       i+1, otherwise it stops. ``routing="hard"`` (the default, see point 5): in training the
       sample moves on while level i cannot classify it *with the margin*. Every sample stops by
       level k.
    3. **Logits** (``logits``, Eq. 4): ArcFace on the C cosines of the sample's stop level, margin
       on the target class: s·cos(θ_y + m) against s·cos θ_j.
    4. **Loss** (``forward``): at every level a sample visits it is classified among C+1 labels
       ("determine its corresponding class label"): the target is its class y (with the angular
       margin) at its stop level, and the marker, "N+1" (no margin: the marker is a routing label,
       not an identity), at the levels it passed. The marker is thus a real clustering centre
       ("an additional clustering center"): pulled towards the samples it routes on and pushed
       away from those that stop at its level, which keeps it from swallowing well-separated
       samples ("ensuring appropriate inter-class distances", Fig. 4c). Per-sample losses are
       summed over the visited levels and averaged over the batch. With k = 1 this is
       cross-entropy of ``logits`` (ArcFace); with k > 1 it also includes the marker columns.
       This is the ``routing="marker"`` loss.
    5. **Why "hard" routing is the default: the measured reading.** Point 4 makes the marker a
       negative for every sample that stops at its level and a positive only for the few that
       pass, and routes by the marker's own argmax, so it is self-reinforcing. On the demo
       (``hs``, occluded_duke, 30 epochs) the share stopping at level 1 went, for seed 0, 82.5%
       -> 66% (epoch 5) -> 91% (16) -> 96.5% (30) with two torch threads and 82.5% -> 64% ->
       83% -> 89.5% with one; seed 1 stopped 100% at level 1 from the first epoch (the marker
       never won) and seed 2 likewise in all 30 epochs. In every run the level-2 marker never
       won and level 3 was never reached: HS-ArcFace had become ArcFace plus an extra class
       that (nearly) never routes. The fix stays inside Fig. 5 ("if the class label equals N+1 ... further classification at
       the next level"; "samples falling into this extra clustering center proceed to the next
       layer") and Fig. 4c (extra levels for the samples one centre per class cannot hold) and
       only decides *which* samples fall into N+1: those level i cannot classify with the margin
       (s·cos(θ_y + m) does not beat every other class; :meth:`hard_stop_level`). The loss is
       Eq. 4 (ArcFace over the C sub-centres) at every visited level, averaged over those
       levels (one ArcFace's worth per sample; summing them weighed the margin term ~3x and cost
       twin R1: 47.1/47.1/49.4 vs 54.1/52.9/51.8, 3 seeds), so the level-i centres learn from
       every sample that reaches them; and a logistic "marker vs best class" term, on detached
       features, teaches the marker to recognise the samples level i cannot classify (it
       predicts routing; it does not bend the retrieval feature). Measured on the demo (``hs``,
       seeds 0/1/2, epoch 30): 44.8/44.3/42.7% stop at level 1, 2.9/3.5/2.5% at level 2,
       52.4/52.2/54.7% at level 3. Early in training it is degenerate the other way: every
       sample is hard, so 100% reach level 3 in epoch 1 and the share first drops to <= 95% at
       epoch 9/10/11. The marker itself learns little: at epoch 30 it wins for 0.6/1.3% (seed 2)
       of the samples at levels 1/2 while ~55% move on; the margin test, not the marker's
       cosine, decides the training route. It does not close the gap to the baseline:
       occluded R1 20.0/12.9/16.5 (baseline 28.2/31.8/21.2 in the same conditions;
       ``marker`` routing 14.1/15.3/21.2), mAP 19.7/17.4/18.0 (baseline 27.4/32.2/25.6;
       ``marker`` 14.6/17.8/21.1). Where the gap comes from (seed 0 only): the local ID
       feature with no margin head scores R1 30.6 / mAP 29.1, the same with plain ArcFace 18.8 /
       20.9: on this from-scratch demo the margin head itself costs the accuracy, not HS's
       routing.

    Fully vectorised (every level is scored, masks select the visited ones): no host syncs.
    """

    def __init__(self, in_features: int, num_classes: int, scale: float = 20.0,
                 margin: float = 0.2, k: int = 3, routing: str = "hard") -> None:
        super().__init__()
        if k < 1 or routing not in ("hard", "marker"):
            raise ValueError(f"HSArcFace: k must be >= 1 and routing 'hard' or 'marker', got "
                             f"k={k}, routing={routing!r}")
        self.scale, self.margin, self.k, self.routing = scale, margin, k, routing
        self.num_classes = num_classes
        self.weight = nn.Parameter(torch.empty(k, num_classes, in_features))
        self.marker = nn.Parameter(torch.empty(k - 1, in_features))
        nn.init.normal_(self.weight, std=0.01)
        nn.init.normal_(self.marker, std=0.01)

    def level_cosines(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Cosines to every level's sub-centres (B, k, C) and markers (B, k); last marker = -inf."""
        unit = _unit(features)  # (B, D)
        cos = torch.einsum("bd,kcd->bkc", unit, _unit(self.weight))  # (B, k, C)
        marker = F.pad(unit @ _unit(self.marker).t(), (0, 1), value=float("-inf"))  # (B, k)
        return cos, marker

    @staticmethod
    def stop_level(cos: Tensor, marker: Tensor) -> Tensor:
        """(B,) the first level whose best class beats its marker (Fig. 5's loop)."""
        stops = marker <= cos.amax(dim=-1)  # (B, k); the last level always stops (-inf marker)
        return stops.int().argmax(dim=1)  # argmax returns the first maximal index

    def hard_stop_level(self, cos: Tensor, labels: Tensor) -> Tensor:
        """(B,) the first level that classifies the sample *with the margin* (``routing="hard"``).

        A sample is hard at level i when its margin target s·cos(θ_y + m) does not beat every
        other class there; hard samples are labelled "N+1" at that level and move on.
        """
        index = labels[:, None, None].expand(-1, cos.shape[1], 1)  # (B, k, 1)
        target = cos.gather(2, index).squeeze(2)  # (B, k)
        others = cos.scatter(2, index, float("-inf")).amax(dim=-1)  # (B, k)
        stops = angular_margin(target, self.margin) > others
        stops[:, -1] = True  # the last level has no marker: everyone stops there
        return stops.int().argmax(dim=1)

    def _stop(self, cos: Tensor, marker: Tensor, labels: Tensor) -> Tensor:
        if self.routing == "marker":
            return self.stop_level(cos.detach(), marker.detach())
        return self.hard_stop_level(cos.detach(), labels)

    @torch.no_grad()
    def route(self, features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Where the loss routes each sample, and where the marker wins (for statistics).

        Returns:
            ``stop`` (B,) int64 0-based stop level used by :meth:`forward`, and ``marker_wins``
            (B, k) bool: the marker's cosine beats every class at that level (False at level k).
        """
        with torch.autocast(device_type=features.device.type, enabled=False):
            cos, marker = self.level_cosines(features)
            return self._stop(cos, marker, labels), marker > cos.amax(dim=-1)

    def logits(self, features: Tensor, labels: Tensor) -> Tensor:
        """(B, D), (B,) -> (B, C): Eq. 4's scaled logits at each sample's stop level."""
        with torch.autocast(device_type=features.device.type, enabled=False):
            cos, marker = self.level_cosines(features)
            stop = self._stop(cos, marker, labels)
            at_stop = cos.gather(1, stop[:, None, None].expand(-1, 1, cos.shape[-1])).squeeze(1)
            return margin_logits(at_stop, labels, self.margin, self.scale)

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        if self.routing == "hard":
            return self._hard_loss(features, labels)
        with torch.autocast(device_type=features.device.type, enabled=False):
            cos, marker = self.level_cosines(features)
            stop = self._stop(cos, marker, labels)  # (B,)
            batch, levels, classes = cos.shape
            level = torch.arange(levels, device=cos.device)[None, :]  # (1, k)
            visited = level <= stop[:, None]  # (B, k)
            is_stop = level == stop[:, None]
            target = torch.where(is_stop, labels[:, None], classes)  # (B, k); C = the marker
            scores = torch.cat([cos, marker[..., None]], dim=-1)  # (B, k, C+1)
            picked = scores.gather(2, target[..., None])  # (B, k, 1)
            # Unvisited levels may pick the -inf last marker; clamp inside angular_margin and the
            # where below keep them finite, and the visited mask drops them from the loss.
            picked = torch.where(is_stop[..., None], angular_margin(picked, self.margin),
                                 picked.clamp_min(-1.0))
            scores = scores.scatter(2, target[..., None], picked) * self.scale
            ce = F.cross_entropy(scores.reshape(batch * levels, classes + 1), target.reshape(-1),
                                 reduction="none").reshape(batch, levels)
            return torch.where(visited, ce, torch.zeros_like(ce)).sum(dim=1).mean()

    def _hard_loss(self, features: Tensor, labels: Tensor) -> Tensor:
        """``routing="hard"``: Eq. 4 at every visited level, the marker trained to spot hard
        samples (see the class docstring, point 5)."""
        with torch.autocast(device_type=features.device.type, enabled=False):
            cos, _ = self.level_cosines(features)  # (B, k, C)
            batch, levels, classes = cos.shape
            stop = self.hard_stop_level(cos.detach(), labels)  # (B,)
            level = torch.arange(levels, device=cos.device)[None, :]  # (1, k)
            visited = level <= stop[:, None]  # (B, k)
            per_level = labels[:, None].expand(-1, levels)  # (B, k)
            index = per_level[..., None]  # (B, k, 1)
            scores = cos.scatter(2, index, angular_margin(cos.gather(2, index), self.margin))
            ce = F.cross_entropy(self.scale * scores.reshape(batch * levels, classes),
                                 per_level.reshape(-1), reduction="none").reshape(batch, levels)
            # Mean over the visited levels: one ArcFace's worth per sample, as Eq. 4 (a sum made
            # the margin term ~3x heavier for the many hard samples: twin R1 47.1 vs 57.6).
            loss = torch.where(visited, ce, torch.zeros_like(ce)).sum(dim=1) / (stop + 1)
            if levels > 1:
                # The marker learns "level i cannot classify this sample": a logistic decision
                # marker vs best class, on detached features (routing must not bend the
                # retrieval feature; the class terms above shape it).
                unit = _unit(features.detach())
                marker = unit @ _unit(self.marker).t()  # (B, k-1)
                best = cos.detach()[:, :-1].amax(dim=-1)  # (B, k-1)
                passed = (level[:, :-1] < stop[:, None]).float()  # (B, k-1): hard, moved on
                route = F.binary_cross_entropy_with_logits(self.scale * (marker - best), passed,
                                                           reduction="none")
                loss = loss + torch.where(visited[:, :-1], route, torch.zeros_like(route)).sum(1)
            return loss.mean()


def routing_counts(stop: Tensor, marker_wins: Tensor) -> Tensor:
    """(2, k) counts of one batch: samples stopping at each level, and samples that reached each
    level and whose marker won there (``stop`` (B,), ``marker_wins`` (B, k))."""
    k = marker_wins.shape[1]
    reached = torch.arange(k, device=stop.device)[None, :] <= stop[:, None]  # (B, k)
    return torch.stack([torch.bincount(stop, minlength=k), (reached & marker_wins).sum(dim=0)])


def routing_metrics(counts: Tensor) -> dict[str, float]:
    """HS-ArcFace routing shares from :func:`routing_counts` (e.g. summed over an epoch).

    Returns:
        ``hs_stop_share_i`` (i = 1..k): the share of samples the loss classified at level i;
        ``hs_marker_win_rate_i`` (i = 1..k-1): of the samples that reached level i, the share
        whose marker ("N+1") beat every class there. A level no sample reached gets 0.0, so
        every key is always present and finite. With ``routing="marker"`` the win rate at level
        i is exactly the share that moved on from it.
    """
    counts = counts.double().cpu()
    stops, wins = counts[0], counts[1]
    k = stops.numel()
    total = max(float(stops.sum()), 1.0)
    reached = stops.flip(0).cumsum(0).flip(0)  # (k,) samples that reached level i
    out = {f"hs_stop_share_{i + 1}": float(stops[i]) / total for i in range(k)}
    for i in range(k - 1):
        out[f"hs_marker_win_rate_{i + 1}"] = float(wins[i]) / max(float(reached[i]), 1.0)
    return out
