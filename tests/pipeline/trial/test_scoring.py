"""pipeline.trial.scoring: the gallery ranking evaluate saves for the report."""

from __future__ import annotations

import torch
from packed_splits import labelled_split

from pipeline.trial.scoring import ranked_gallery


def test_ranked_gallery_skips_same_identity_same_camera() -> None:
    query, gallery = labelled_split([1, 2], [0, 0]), labelled_split([1, 1, 2, 3], [0, 1, 1, 0])
    # Gallery 0 is query 0's nearest, but it is the same person seen by the same camera (junk).
    dist = torch.tensor([[0.0, 0.5, 0.2, 0.9], [0.3, 0.4, 0.1, 0.8]])
    out = ranked_gallery(dist, query, gallery, 3)
    assert out["topk"].tolist() == [[2, 1, 3], [2, 0, 1]]
    assert torch.allclose(out["topk_distances"], torch.tensor([[0.2, 0.5, 0.9], [0.1, 0.3, 0.4]]))
    assert out["topk"].dtype == torch.int32
