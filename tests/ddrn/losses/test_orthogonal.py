import torch
import torch.nn.functional as F

from ddrn.losses.orthogonal import orthogonal_loss


def test_matches_eq3_frobenius_norm_of_normalised_gram_minus_identity():
    torch.manual_seed(0)
    e = torch.randn(10, 16)
    en = F.normalize(e, dim=1)
    expected = torch.linalg.matrix_norm(en @ en.t() - torch.eye(10), ord="fro")
    torch.testing.assert_close(orthogonal_loss(e), expected, rtol=1e-5, atol=1e-5)
    # Row scale does not matter (rows are normalised first).
    torch.testing.assert_close(orthogonal_loss(e * 7.0), orthogonal_loss(e), rtol=1e-5, atol=1e-5)


def test_zero_with_finite_gradient_for_an_orthonormal_codebook():
    q = torch.linalg.qr(torch.randn(32, 8))[0].t().contiguous()  # (8, 32) orthonormal rows
    q = (q * 3.0).requires_grad_()
    loss = orthogonal_loss(q)
    assert loss.item() < 1e-5
    loss.backward()
    assert torch.isfinite(q.grad).all()


def test_gradient_decreases_the_loss():
    torch.manual_seed(0)
    e = torch.randn(6, 4, requires_grad=True)  # more codes than dims: cannot reach 0
    loss = orthogonal_loss(e)
    loss.backward()
    with torch.no_grad():
        assert orthogonal_loss(e - 0.01 * e.grad) < loss
