"""pipeline.trial.scoring: the gallery ranking evaluate saves for the report."""

from __future__ import annotations

import numpy as np
import torch

from ddrn.data.packed import PackedSplit
from pipeline.trial.scoring import ranked_gallery


def _split(pids: list[int], camids: list[int]) -> PackedSplit:
    n = len(pids)
    return PackedSplit(np.zeros((n, 4, 2, 3), np.uint8), np.array(pids), np.array(camids),
                       np.zeros(n, bool), np.zeros(n, bool), [f"{i}.jpg" for i in range(n)])


def test_ranked_gallery_skips_same_identity_same_camera() -> None:
    query, gallery = _split([1, 2], [0, 0]), _split([1, 1, 2, 3], [0, 1, 1, 0])
    # Gallery 0 is query 0's nearest, but it is the same person seen by the same camera (junk).
    dist = torch.tensor([[0.0, 0.5, 0.2, 0.9], [0.3, 0.4, 0.1, 0.8]])
    out = ranked_gallery(dist, query, gallery, 3)
    assert out["topk"].tolist() == [[2, 1, 3], [2, 0, 1]]
    assert torch.allclose(out["topk_distances"], torch.tensor([[0.2, 0.5, 0.9], [0.1, 0.3, 0.4]]))
    assert out["topk"].dtype == torch.int32
