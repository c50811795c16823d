from pathlib import Path

import torch

from ddrn.config import InputConfig, SyntheticConfig, TrainConfig
from ddrn.data import generate_synthetic, load_dataset, make_train_loader, open_packed, pack_dataset


def test_train_loader_batches(tmp_path: Path) -> None:
    cfg = SyntheticConfig(num_train_ids=6, num_test_ids=2, num_distractor_ids=0, images_per_id=4,
                          num_cameras=3, height=32, width=16, seed=1)
    generate_synthetic("dukemtmc", cfg, tmp_path / "raw")
    pack_dataset(load_dataset("dukemtmc", tmp_path / "raw"), tmp_path / "packed", 32, 16)
    split = open_packed(tmp_path / "packed").splits["train"]
    train = TrainConfig(batch_size=8, num_instances=2, iters_per_epoch=5)
    loader = make_train_loader(split, train, InputConfig(height=32, width=16, padding=2), "cpu", 0)
    batches = list(loader)
    assert len(batches) == len(loader) == 5
    images, pids, camids = batches[0]
    assert images.shape == (8, 3, 32, 16) and images.dtype == torch.float32
    assert pids.dtype == torch.int64 and camids.shape == (8,)
    assert (pids.view(4, 2) == pids.view(4, 2)[:, :1]).all()
    assert int(pids.max()) < 6
    again = make_train_loader(split, train, InputConfig(height=32, width=16, padding=2), "cpu", 0)
    first = next(iter(again))                                 # same seed: same batch, same pixels
    assert torch.equal(first[1], pids) and torch.equal(first[0], images)
