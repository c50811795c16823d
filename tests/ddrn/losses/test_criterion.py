import pytest
import torch

from ddrn.config import LossConfig
from ddrn.errors import ConfigError
from ddrn.losses import HSArcFace, build_criterion, orthogonal_loss, triplet_loss
from ddrn.models import ReIDOutput


def _output(local=False, codebook=False):
    torch.manual_seed(0)
    g = torch.randn(8, 6, requires_grad=True)
    return ReIDOutput(features=g, global_features=g, global_bn=g * 2, id_logits=torch.randn(8, 4),
                      local_features=torch.randn(8, 6) if local else None,
                      codebook=torch.randn(5, 6) if codebook else None)


PIDS = torch.arange(4).repeat_interleave(2)


def test_terms_are_weighted_named_and_summed_once():
    cfg = LossConfig(id_weight=0.5, triplet_weight=2.0, margin_head="hs_arcface", margin_weight=3.0,
                     orthogonal_weight=0.25)
    crit = build_criterion(cfg, 6, 4)
    assert isinstance(crit.margin_head, HSArcFace) and crit.margin_head.k == 3
    out = _output(local=True, codebook=True)
    res = crit(out, PIDS)
    assert set(res.terms) == {"id", "triplet", "margin", "orthogonal"}
    tri = (triplet_loss(out.global_features, PIDS) + triplet_loss(out.local_features, PIDS)) / 2
    torch.testing.assert_close(res.terms["triplet"], 2.0 * tri)
    torch.testing.assert_close(res.terms["orthogonal"], 0.25 * orthogonal_loss(out.codebook))
    torch.testing.assert_close(res.terms["margin"], 3.0 * crit.margin_head(out.global_bn, PIDS))
    torch.testing.assert_close(res.total, sum(res.terms.values()))
    assert len(list(crit.parameters())) == 2  # the margin head's centres and markers


def test_baseline_has_only_id_and_triplet():
    res = build_criterion(LossConfig(), 6, 4)(_output(), PIDS)
    assert set(res.terms) == {"id", "triplet"}


def test_orthogonal_weight_without_codebook_is_a_config_error():
    with pytest.raises(ConfigError, match="loss.orthogonal_weight"):
        build_criterion(LossConfig(orthogonal_weight=1.0), 6, 4)(_output(), PIDS)
