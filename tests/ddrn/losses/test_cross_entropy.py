import torch

from ddrn.losses.cross_entropy import id_loss


def test_label_smoothing_matches_transreid_formula():
    torch.manual_seed(0)
    logits, labels, eps = torch.randn(4, 6), torch.tensor([0, 5, 2, 2]), 0.1
    target = torch.full((4, 6), eps / 6)
    target[torch.arange(4), labels] += 1 - eps
    expected = -(target * logits.log_softmax(1)).sum(1).mean()
    torch.testing.assert_close(id_loss(logits, labels, eps), expected)
    assert id_loss(logits.half(), labels).dtype == torch.float32
