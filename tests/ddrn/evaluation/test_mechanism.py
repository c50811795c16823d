"""Mechanism measurements on hand-made cases with known answers, and on a real tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ddrn.config import InputConfig, ModelConfig
from ddrn.data import PackedSplit
from ddrn.evaluation import extract_features as plain_features
from ddrn.evaluation import mechanism as mech
from ddrn.models import build_model
from ddrn.models.embedding_space import code_usage


def test_patch_windows_follow_the_overlapping_grid_row_major():
    # 20x14 image, kernel 8, stride 6: (20-8)//6+1 = 3 rows, (14-8)//6+1 = 2 columns.
    w = mech.patch_windows(20, 14, 8, 6)
    assert w.tolist() == [[0, 0, 8, 8], [0, 6, 8, 14], [6, 0, 14, 8], [6, 6, 14, 14],
                          [12, 0, 20, 8], [12, 6, 20, 14]]


def test_occluder_patches_of_a_hand_made_occluder():
    # An occluder over rows 10..19, columns 0..7 of a 20x14 image (kernel 8, stride 6).
    twin = np.full((20, 14, 3), 100, np.uint8)
    occluded = twin.copy()
    occluded[10:20, 0:8] = 200
    occluded[0, 13] = 110  # a JPEG-like ripple under the threshold: not occluder
    cover = mech.patch_coverage(mech.occluder_mask(occluded, twin), 8, 6)
    # Patch 2 (rows 6..13, cols 0..7): rows 10..13 covered, 4/8; patch 4 (rows 12..19): all.
    # The overlapping patches 3 and 5 (cols 6..13) see the occluder's columns 6..7: 2/8 of
    # their width, over 4 and 8 of their rows.
    np.testing.assert_allclose(cover, [0, 0, 0.5, 4 * 2 / 64, 1.0, 8 * 2 / 64])
    assert mech.occluder_patches(occluded, twin, 8, 6).tolist() == [
        False, False, True, False, True, False]
    assert mech.occluder_patches(occluded, twin, 8, 6, min_cover=0.6).sum() == 1


def test_mean_pairwise_cosine_excludes_self_pairs():
    parallel = torch.ones(1, 4, 3)
    assert mech.mean_pairwise_cosine(parallel).item() == pytest.approx(1.0)
    basis = torch.eye(3)[None]  # three orthogonal tokens
    assert mech.mean_pairwise_cosine(basis).item() == pytest.approx(0.0, abs=1e-6)
    pair = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]])
    assert mech.mean_pairwise_cosine(pair).item() == pytest.approx(-1.0)


def test_code_usage():
    assert code_usage(torch.tensor([5, 5, 0, 0])) == pytest.approx(
        {"perplexity": 2.0, "dead_codes": 2})


INPUT = InputConfig(height=32, width=16, padding=2)
MODEL = ModelConfig(embed_dim=32, depth=2, num_heads=2, patch_size=8, stride=8,
                    embedding_space=True, num_embeddings=8)


def _split(images: np.ndarray) -> PackedSplit:
    n = len(images)
    return PackedSplit(images=images, pids=np.arange(n) % 3, camids=np.arange(n) % 2,
                       occluded=np.zeros(n, bool), occluded_known=np.zeros(n, bool),
                       paths=[f"{i}.jpg" for i in range(n)])


def test_captures_match_the_model_and_a_constant_code_changes_block_n_only():
    torch.manual_seed(0)
    model = build_model(MODEL, num_classes=3, num_cameras=2, input_size=(32, 16))
    rng = np.random.default_rng(0)
    split = _split(rng.integers(0, 256, (6, 32, 16, 3), dtype=np.uint8))
    caps = list(mech.iterate_captures(model, split, INPUT, 4, "cpu"))
    assert [c.indices.shape for c in caps] == [(4, 8), (2, 8)]
    torch.testing.assert_close(torch.cat([c.features for c in caps]),
                               plain_features(model, split, INPUT, 4, "cpu"))
    # The quantised tokens are codebook rows of the captured indices.
    cap = caps[0]
    torch.testing.assert_close(cap.quantized, model.embedding_space.codes().detach()[cap.indices])
    const = mech.extract_features(model, split, INPUT, 4, "cpu", constant_code=3)
    assert not torch.allclose(const, torch.cat([c.features for c in caps]))
    # With a constant code every image's patch input is the same: only CLS differs.
    const_caps = list(mech.iterate_captures(model, split, INPUT, 6, "cpu", constant_code=3))
    assert (const_caps[0].indices == 3).all()
    stats = mech.code_statistics(model, split, INPUT, 4, "cpu")
    assert sum(stats.histogram) == 6 * 8 and -1.0 <= stats.token_cosine <= 1.0


def test_twin_statistics_of_identical_images_agree_everywhere():
    torch.manual_seed(0)
    model = build_model(MODEL, num_classes=3, num_cameras=2, input_size=(32, 16))
    rng = np.random.default_rng(1)
    twin = rng.integers(0, 256, (4, 32, 16, 3), dtype=np.uint8)
    occluded = twin.copy()
    occluded[:, 16:32, 0:8] = 0  # a black occluder on patch (2, 0) and (3, 0)
    stats = mech.twin_statistics(model, _split(occluded), _split(twin), INPUT, 4, "cpu", 8, 8)
    assert stats["occluder_patches"] == 4 * 2 and stats["patches"] == 4 * 8
    same = mech.twin_statistics(model, _split(twin), _split(twin), INPUT, 4, "cpu", 8, 8)
    assert same["occluder_patches"] == 0 and same["code_agreement_clean"] == 1.0
    assert np.isnan(same["occluder_codes_unused_by_twins"])
