import pytest
import torch
from packed_splits import synthetic_train_split

from ddrn.config import InputConfig, SyntheticConfig, TrainConfig
from ddrn.data import PackedSplit, TrainLoader, make_train_loader

INPUT = InputConfig(height=32, width=16, padding=2)
TRAIN = TrainConfig(batch_size=8, num_instances=2, iters_per_epoch=5)


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> PackedSplit:
    tmp = tmp_path_factory.mktemp("loader")
    cfg = SyntheticConfig(num_train_ids=6, num_test_ids=2, num_distractor_ids=0, images_per_id=4,
                          num_cameras=3, height=32, width=16, seed=1)
    return synthetic_train_split("dukemtmc", cfg, tmp, 32, 16)


def test_train_loader_batches(split: PackedSplit) -> None:
    loader = make_train_loader(split, TRAIN, INPUT, "cpu", 0)
    batches = list(loader)
    assert len(batches) == len(loader) == 5
    images, pids, camids = batches[0]
    assert images.shape == (8, 3, 32, 16) and images.dtype == torch.float32
    assert pids.dtype == torch.int64 and camids.shape == (8,)
    assert (pids.view(4, 2) == pids.view(4, 2)[:, :1]).all()
    assert int(pids.max()) < 6
    again = make_train_loader(split, TRAIN, INPUT, "cpu", 0)
    first = next(iter(again))                                 # same seed: same batch, same pixels
    assert torch.equal(first[1], pids) and torch.equal(first[0], images)


def _epoch(loader: TrainLoader, epoch: int) -> list[tuple[torch.Tensor, ...]]:
    loader.set_epoch(epoch)
    return list(loader)


def test_workers_give_the_same_batches_and_epochs_replay(split: PackedSplit) -> None:
    inline = make_train_loader(split, TRAIN, INPUT, "cpu", 3, workers=0)
    threaded = make_train_loader(split, TRAIN, INPUT, "cpu", 3, workers=2)
    for epoch in (0, 1):
        a, b = _epoch(inline, epoch), _epoch(threaded, epoch)
        assert all(torch.equal(x, y) for ba, bb in zip(a, b, strict=True)
                   for x, y in zip(ba, bb, strict=True))
    assert not torch.equal(_epoch(inline, 0)[0][0], _epoch(inline, 1)[0][0])  # epochs differ
    assert len(_epoch(threaded, 4)) == 5                      # resumed epoch: set_epoch replays


def test_stopping_early_and_matching_the_store(split: PackedSplit) -> None:
    loader = make_train_loader(split, TRAIN, INPUT, "cpu", 0, workers=2)
    for i, _ in enumerate(loader):                            # leaves the pool cleanly
        if i == 1:
            break
    before = split.images.copy()
    plain = InputConfig(height=32, width=16, padding=0, flip_prob=0.0, erasing_prob=0.0)
    loader = make_train_loader(split, TRAIN, plain, "cpu", 0)
    images, pids, _ = next(iter(loader))
    loader.sampler.set_epoch(0)
    idx = next(iter(loader.sampler))                          # the indices of epoch 0, batch 0
    # without random augmentation a batch is exactly the normalised store rows
    expected = torch.from_numpy(split.images[idx]).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert torch.allclose(images, expected, atol=1e-6)
    assert torch.equal(pids, torch.from_numpy(split.pids[idx]))
    assert (split.images == before).all()
    with pytest.raises(ValueError, match="workers"):
        make_train_loader(split, TRAIN, INPUT, "cpu", 0, workers=-1)


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA: benchmarks/gpu_check.py runs it on a GPU"))]


@pytest.mark.parametrize("device", DEVICES)
def test_device_resident_store_gives_the_memmap_batches(split: PackedSplit, device: str) -> None:
    # The GPU's path (the whole split copied to the device, batches fancy-indexed there) forced
    # on the given device, against the same loader reading the memmap: same batches, same pixels.
    resident = make_train_loader(split, TRAIN, INPUT, device, 2, workers=1, resident=True)
    streamed = make_train_loader(split, TRAIN, INPUT, device, 2, workers=0, resident=False)
    assert resident.resident and not streamed.resident
    assert resident._store.device.type == device and resident._store.dtype == torch.uint8
    for epoch in (0, 1):
        a, b = _epoch(resident, epoch), _epoch(streamed, epoch)
        assert len(a) == len(b) == 5
        for (xa, pa, ca), (xb, pb, cb) in zip(a, b, strict=True):
            assert xa.device.type == pa.device.type == ca.device.type == device
            assert xa.shape == (8, 3, 32, 16) and xa.dtype == torch.float32
            assert torch.equal(xa, xb) and torch.equal(pa, pb) and torch.equal(ca, cb)
    # auto: resident on CUDA only (when the split fits), never on the CPU
    assert make_train_loader(split, TRAIN, INPUT, device, 0).resident == (device == "cuda")
