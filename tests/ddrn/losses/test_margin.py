import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from ddrn.losses.margin import (
    ArcFace,
    HSArcFace,
    SubCenterArcFace,
    angular_margin,
    routing_counts,
    routing_metrics,
)


def _batch(b=6, d=8, c=5):
    torch.manual_seed(0)
    return torch.randn(b, d), torch.randint(0, c, (b,))


def test_arcface_puts_cos_theta_plus_m_on_the_target_only():
    x, y = _batch()
    head = ArcFace(8, 5, scale=20.0, margin=0.2)
    cos = F.normalize(x) @ F.normalize(head.weight).t()
    logits = head.logits(x, y)
    expected = cos.clone()
    rows = torch.arange(6)
    expected[rows, y] = torch.cos(torch.acos(cos[rows, y]) + 0.2)
    torch.testing.assert_close(logits, 20.0 * expected)
    torch.testing.assert_close(head(x, y), F.cross_entropy(logits, y))


def test_margin_falls_back_when_theta_plus_m_exceeds_pi():
    m = 0.5
    near_pi = torch.tensor([math.cos(math.pi - 0.1)])  # θ = π - 0.1, θ + m > π
    expected = near_pi - math.sin(math.pi - m) * m
    torch.testing.assert_close(angular_margin(near_pi, m), expected)
    # Monotone and finite with gradients at the clamp ends.
    cos = torch.tensor([-1.0, 1.0], requires_grad=True)
    angular_margin(cos, m).sum().backward()
    assert torch.isfinite(cos.grad).all()


def test_subcenter_is_max_over_subcentres_formula():
    x, y = _batch()
    head = SubCenterArcFace(8, 5, scale=20.0, margin=0.2, k=3)
    w = F.normalize(head.weight, dim=-1)  # (k, C, D)
    cos = torch.stack([F.normalize(x) @ w[i].t() for i in range(3)]).amax(0)  # (B, C)
    torch.testing.assert_close(head.cosine(x), cos)
    arc = ArcFace(8, 5, scale=20.0, margin=0.2)
    rows = torch.arange(6)
    expected = cos.clone()
    expected[rows, y] = torch.cos(torch.acos(cos[rows, y]) + 0.2)
    torch.testing.assert_close(head.logits(x, y), 20.0 * expected)
    assert arc.weight.shape == (5, 8) and head.weight.shape == (3, 5, 8)


def test_hs_arcface_with_k1_equals_arcface_on_the_same_centres():
    x, y = _batch()
    arc = ArcFace(8, 5, scale=20.0, margin=0.2)
    hs = HSArcFace(8, 5, scale=20.0, margin=0.2, k=1)
    with torch.no_grad():
        hs.weight[0].copy_(arc.weight)
    assert hs.marker.shape == (0, 8)
    torch.testing.assert_close(hs.logits(x, y), arc.logits(x, y))  # einsum vs matmul rounding
    torch.testing.assert_close(hs(x, y), arc(x, y))


def test_hs_arcface_routes_through_the_marker_to_the_next_level():
    hs = HSArcFace(2, 2, scale=10.0, margin=0.1, k=2, routing="marker")
    with torch.no_grad():
        hs.weight.copy_(torch.tensor([[[1.0, 0.0], [0.0, 1.0]],     # level 1: e_x, e_y
                                      [[-1.0, 0.0], [0.0, -1.0]]]))  # level 2: -e_x, -e_y
        hs.marker.copy_(torch.tensor([[-1.0, -1.0]]))  # level-1 "N+1" centre
    x = torch.tensor([[1.0, 0.1], [-1.0, -0.9]])  # near class 0 at level 1; near the marker
    cos, marker = hs.level_cosines(x)
    assert hs.stop_level(cos, marker).tolist() == [0, 1]
    y = torch.tensor([0, 0])
    logits = hs.logits(x, y)
    # Sample 2 is scored against level-2 centres: cos to -e_x is its target (with the margin).
    c = F.normalize(x[1:], dim=1) @ torch.tensor([[-1.0, 0.0], [0.0, -1.0]]).t()
    torch.testing.assert_close(logits[1, 1], 10.0 * c[0, 1])
    torch.testing.assert_close(logits[1, 0], 10.0 * torch.cos(torch.acos(c[0, 0]) + 0.1))


@pytest.mark.parametrize("head_cls", [ArcFace, SubCenterArcFace, HSArcFace])
def test_heads_backpropagate_finite_gradients_to_features_and_centres(head_cls):
    x, y = _batch(b=16, d=8, c=4)
    x.requires_grad_()
    k = 1 if head_cls is ArcFace else 3
    head = head_cls(8, 4, scale=20.0, margin=0.2, k=k)
    loss = head(x, y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    assert head.weight.grad is not None and torch.isfinite(head.weight.grad).all()
    assert head.logits(x, y).shape == (16, 4)


def test_hs_markers_are_trained():
    torch.manual_seed(1)
    hs = HSArcFace(4, 3, k=2)
    x = torch.randn(64, 4)
    y = torch.randint(0, 3, (64,))
    hs(x, y).backward()
    assert hs.marker.grad.abs().sum() > 0  # some sample visits level 1 with the marker in play


def test_routing_metrics_from_counts():
    # 10 samples: 6 stop at level 1, 3 at level 2, 1 at level 3; the marker won for 4 of the 10
    # at level 1 and for 1 of the 4 that reached level 2.
    m = routing_metrics(torch.tensor([[6, 3, 1], [4, 1, 0]]))
    assert m == pytest.approx({"hs_stop_share_1": 0.6, "hs_stop_share_2": 0.3,
                               "hs_stop_share_3": 0.1, "hs_marker_win_rate_1": 0.4,
                               "hs_marker_win_rate_2": 0.25})
    # A level nobody reaches: its win rate is 0.0, not NaN, so the keys stay stable.
    dead = routing_metrics(torch.tensor([[5, 0, 0], [0, 0, 0]]))
    assert dead["hs_marker_win_rate_2"] == 0.0 and dead["hs_stop_share_1"] == 1.0


def _two_level_head(routing: str) -> HSArcFace:
    hs = HSArcFace(2, 2, scale=10.0, margin=0.1, k=2, routing=routing)
    with torch.no_grad():
        hs.weight.copy_(torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[-1.0, 0.0], [0.0, -1.0]]]))
        hs.marker.copy_(torch.tensor([[-1.0, -1.0]]))
    return hs


def test_marker_routing_follows_the_marker_and_counts_its_wins():
    hs = _two_level_head("marker")
    x = torch.tensor([[1.0, 0.1], [-1.0, -0.9], [-0.5, -0.6]])
    y = torch.tensor([1, 0, 0])
    stop, wins = hs.route(x, y)
    assert stop.tolist() == [0, 1, 1] and wins[:, 0].tolist() == [False, True, True]
    m = routing_metrics(routing_counts(stop, wins))
    assert m["hs_stop_share_2"] == pytest.approx(2 / 3) and m["hs_marker_win_rate_1"] == \
        pytest.approx(2 / 3)


def test_hard_routing_sends_margin_violations_to_the_next_level():
    hs = _two_level_head("hard")
    # Sample 0 is near class 0 at level 1 (classified with the margin: stops there) although
    # labelled 1, so it is hard at level 1 and goes on; sample 1 is class 0 at cos ~0.995 vs
    # 0.1: it stops at level 1 whatever the marker says; sample 2 sits between both classes
    # (cos 0.707 each): the margin fails, so it moves on.
    x = torch.tensor([[1.0, 0.1], [1.0, 0.1], [1.0, 1.0]])
    y = torch.tensor([1, 0, 0])
    stop, wins = hs.route(x, y)
    assert stop.tolist() == [1, 0, 1]
    assert not wins.any()  # the marker (-1, -1) wins for none of them
    m = routing_metrics(routing_counts(stop, wins))
    assert m == pytest.approx({"hs_stop_share_1": 1 / 3, "hs_stop_share_2": 2 / 3,
                               "hs_marker_win_rate_1": 0.0})
    # The loss routes the same way: sample 0 is scored against the level-2 centres.
    c = F.normalize(x[:1], dim=1) @ torch.tensor([[-1.0, 0.0], [0.0, -1.0]]).t()
    torch.testing.assert_close(hs.logits(x, y)[0, 0], 10.0 * c[0, 0])


def _trained_routing(routing: str) -> tuple[dict[str, float], Tensor, Tensor]:
    """Train HS-ArcFace (k = 3) 150 steps on fixed clustered features, 30% of them heavily
    perturbed (an "occlusion"); returns the routing shares, stop levels and the noisy mask."""
    g = torch.Generator().manual_seed(0)
    classes, dim, per_class = 8, 16, 24
    y = torch.arange(classes).repeat_interleave(per_class)
    noisy = torch.rand(len(y), generator=g) < 0.3
    x = torch.randn(classes, dim, generator=g)[y] + torch.where(noisy, 2.0, 0.5)[:, None] * \
        torch.randn(len(y), dim, generator=g)
    torch.manual_seed(0)
    head = HSArcFace(dim, classes, scale=20.0, margin=0.2, k=3, routing=routing)
    opt = torch.optim.Adam(head.parameters(), lr=0.01)
    for _ in range(150):
        loss = head(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    stop, wins = head.route(x, y)
    return routing_metrics(routing_counts(stop, wins)), stop, noisy


def test_hard_routing_is_non_degenerate_and_sends_noisy_samples_deeper():
    shares, stop, noisy = _trained_routing("hard")
    assert max(shares[f"hs_stop_share_{i}"] for i in (1, 2, 3)) < 0.95, shares
    assert (stop[noisy] > 0).float().mean() > 5 * (stop[~noisy] > 0).float().mean()


def test_marker_routing_collapses_to_level_one():
    """The reading behind the ``hard`` default: routed by its own argmax, the marker is a
    negative for every sample that stops, so it stops winning (measured: 99% at level 1 here,
    96.5% on the demo's occluded_duke at epoch 30)."""
    shares, _, _ = _trained_routing("marker")
    assert shares["hs_stop_share_1"] > 0.95, shares
