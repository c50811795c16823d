import torch
import torch.nn.functional as F

from ddrn.losses.triplet import pairwise_euclidean, triplet_loss


def _brute(features, labels, margin):
    losses = []
    d = torch.cdist(features, features)
    for i in range(len(labels)):
        pos = d[i][labels == labels[i]].max()
        neg = d[i][labels != labels[i]].min()
        losses.append(F.softplus(pos - neg) if margin is None else F.relu(pos - neg + margin))
    return torch.stack(losses).mean()


def test_batch_hard_matches_brute_force_for_soft_and_hard_margins():
    torch.manual_seed(0)
    x = torch.randn(12, 5)
    y = torch.arange(3).repeat_interleave(4)
    torch.testing.assert_close(triplet_loss(x, y, None), _brute(x, y, None))
    torch.testing.assert_close(triplet_loss(x, y, 0.3), _brute(x, y, 0.3))


def test_distances_and_gradients_are_finite_with_duplicate_features():
    x = torch.ones(4, 3, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1])
    torch.testing.assert_close(pairwise_euclidean(x.detach()), torch.full((4, 4), 1e-6))
    triplet_loss(x, y).backward()
    assert torch.isfinite(x.grad).all()


def test_unequal_id_counts_and_anchor_without_negatives():
    x = torch.randn(5, 3)
    assert torch.isfinite(triplet_loss(x, torch.tensor([0, 0, 0, 1, 2]), 0.3))
    assert triplet_loss(x, torch.zeros(5, dtype=torch.long), None) == 0
