import numpy as np
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


def _store(n: int = 40, h: int = 16, w: int = 8) -> np.ndarray:
    store = np.random.default_rng(0).integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    store.setflags(write=False)                                # any write would raise
    return store


def test_gather_from_store_equals_call_on_its_rows() -> None:
    store = _store()
    index = np.array([7, 3, 3, 30, 0, 12, 39, 7])              # unsorted, with repeats
    aug = BatchAugment(InputConfig(height=16, width=8, padding=2, erasing_prob=0.7), True)
    out = aug.gather(store, index, seed=11)
    assert torch.equal(out, aug(torch.from_numpy(store[index]), seed=11))
    assert out.shape == (8, 3, 16, 8)


def test_cpu_path_matches_device_path() -> None:
    """The CPU fast path and the gather path used on GPUs draw the same parameters."""
    x = _batch()

    def both(erasing: float) -> tuple[torch.Tensor, torch.Tensor]:
        aug = BatchAugment(InputConfig(height=16, width=8, padding=3, erasing_prob=erasing), True)
        return aug(x, seed=5), aug._torch(x, torch.Generator().manual_seed(5))

    cpu, dev = both(0.0)
    assert torch.allclose(cpu, dev, atol=1e-6)
    cpu_erased, dev_erased = both(1.0)
    # the same boxes, filled with other noise
    assert torch.equal(~torch.isclose(cpu_erased, cpu), ~torch.isclose(dev_erased, dev))


def test_call_seed_is_independent_of_history() -> None:
    x, aug = _batch(), BatchAugment(CFG, True, seed=0)
    first = aug(x, seed=9)
    aug(x)                                                     # advances the object's generator
    assert torch.equal(aug(x, seed=9), first)
    assert not torch.equal(aug(x, seed=10), first)


def test_resize_when_store_size_differs() -> None:
    store = _store(6, 8, 4)
    out = BatchAugment(CFG, True, seed=0).gather(store, np.arange(6))
    assert out.shape == (6, 3, 16, 8)
    plain = BatchAugment(CFG, False).gather(store, np.arange(6))
    assert plain.min() >= -1.0 and plain.max() <= 1.0          # bicubic overshoot clamped


def test_flip_and_erasing_rates_and_noise() -> None:
    """Statistics over many images: the probabilities, box sizes and noise of the recipe."""
    n, h, w = 1000, 32, 16
    rows = np.arange(w, dtype=np.uint8) * 15                   # a ramp: flips are visible
    store = np.broadcast_to(rows[None, None, :, None], (n, h, w, 3)).copy()
    flipped = BatchAugment(InputConfig(height=h, width=w, padding=0, erasing_prob=0.0), True)
    out = flipped.gather(store, np.arange(n), seed=1)
    rate = (out[:, 0, 0, 0] > out[:, 0, 0, -1]).float().mean().item()
    assert abs(rate - 0.5) < 0.05
    cfg = InputConfig(height=h, width=w, padding=0, flip_prob=0.0, erasing_prob=0.5)
    out = BatchAugment(cfg, True).gather(store, np.arange(n), seed=2)
    changed = ~torch.isclose(out, BatchAugment(cfg, False).gather(store, np.arange(n)))
    erased = changed.any(dim=(1, 2, 3))
    assert abs(erased.float().mean().item() - 0.5) < 0.05
    area = changed[erased].any(1).float().mean(dim=(1, 2))     # share of the image per box
    assert area.min() > 0.01 and area.max() < 0.40 and 0.10 < area.mean() < 0.22
    noise = out[changed.any(1, keepdim=True).expand_as(out)]
    assert abs(noise.mean().item()) < 0.05 and abs(noise.std().item() - 1.0) < 0.05
