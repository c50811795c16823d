import pytest
import torch

from ddrn.config import InputConfig
from ddrn.data import BatchAugment

CFG = InputConfig(height=16, width=8, padding=2)


def _batch() -> torch.Tensor:
    return torch.randint(0, 256, (6, 16, 8, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_shapes_and_caller_tensor_untouched() -> None:
    x = _batch()
    before = x.clone()
    out = BatchAugment(CFG, train=True, seed=0)(x)
    assert out.shape == (6, 3, 16, 8) and out.dtype == torch.float32
    assert torch.equal(x, before)


def test_eval_is_exact_normalisation() -> None:
    x = _batch()
    out = BatchAugment(CFG, train=False)(x)
    expected = (x.permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    assert torch.allclose(out, expected, atol=1e-6)


def test_flip_and_pad_crop() -> None:
    x = _batch()
    flip = BatchAugment(InputConfig(height=16, width=8, padding=0, flip_prob=1.0, erasing_prob=0.0),
                        train=True, seed=0)(x)
    plain = BatchAugment(CFG, train=False)(x)
    assert torch.allclose(flip, plain.flip(-1))
    crop = BatchAugment(InputConfig(height=16, width=8, padding=2, flip_prob=0.0, erasing_prob=0.0),
                        train=True, seed=1)(x)
    # Every output is a shifted window of its input (with black = -1 where it leaves the image).
    for i in range(len(x)):
        padded = torch.nn.functional.pad(plain[i], (2, 2, 2, 2), value=-1.0)
        windows = [padded[:, dy:dy + 16, dx:dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.allclose(crop[i], w) for w in windows)


def test_erasing_fills_noise_boxes() -> None:
    x = _batch()
    cfg = InputConfig(height=16, width=8, padding=0, flip_prob=0.0, erasing_prob=1.0)
    out = BatchAugment(cfg, train=True, seed=2)(x)
    changed = ~torch.isclose(out, BatchAugment(cfg, train=False)(x))
    assert changed.any(dim=(1, 2, 3)).all()                   # p = 1: every image erased
    frac = changed.any(1).float().mean(dim=(1, 2))
    assert (frac < 0.5).all()                                 # at most ~1/3 of the area


def test_same_seed_same_output_and_bad_input() -> None:
    x = _batch()
    assert torch.equal(BatchAugment(CFG, True, seed=3)(x), BatchAugment(CFG, True, seed=3)(x))
    with pytest.raises(ValueError, match="uint8"):
        BatchAugment(CFG, True)(x.float())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda() -> None:
    out = BatchAugment(CFG, True, seed=0)(_batch().cuda())
    assert out.is_cuda and out.shape == (6, 3, 16, 8)
