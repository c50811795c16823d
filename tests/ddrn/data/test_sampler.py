import numpy as np
import pytest

from ddrn.data import PKSampler
from ddrn.errors import DataError

PIDS = np.array([0] * 9 + [1] * 4 + [2] * 2 + [3] * 6 + [4] * 1 + [5] * 8)


def test_every_batch_is_p_ids_by_k() -> None:
    sampler = PKSampler(PIDS, batch_size=12, num_instances=4, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == (2 + 1 + 1 + 1 + 1 + 2) // 3
    for b in batches:
        assert b.shape == (12,)
        groups = PIDS[b].reshape(3, 4)
        assert (groups == groups[:, :1]).all()                 # K images of one id per group
        assert len(set(groups[:, 0])) == 3                     # P distinct ids


def test_replacement_for_small_ids_and_no_repeats_otherwise() -> None:
    seen = np.concatenate(list(PKSampler(PIDS, 24, 4, seed=1)))
    for pid in (2, 4):   # fewer than K images: sampled with replacement
        assert set(seen[PIDS[seen] == pid]) <= set(np.flatnonzero(pid == PIDS))
    batch = next(iter(PKSampler(PIDS, 24, 4, seed=1)))
    for pid in (0, 5):   # enough images: a chunk never repeats an index
        idx = batch[PIDS[batch] == pid]
        assert len(idx) in (0, 4) and len(set(idx)) == len(idx)


def test_deterministic_per_seed_and_epoch() -> None:
    a, b = PKSampler(PIDS, 8, 4, seed=5), PKSampler(PIDS, 8, 4, seed=5)
    assert all((x == y).all() for x, y in zip(a, b, strict=False))
    first = [x.copy() for x in a]
    a.set_epoch(1)
    assert any((x != y).any() for x, y in zip(first, a, strict=False))


def test_errors() -> None:
    with pytest.raises(DataError, match="multiple of num_instances"):
        PKSampler(PIDS, 10, 4)
    with pytest.raises(DataError, match="fewer than the 8 ids per batch"):
        PKSampler(PIDS, 32, 4)
