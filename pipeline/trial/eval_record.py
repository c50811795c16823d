"""The eval file, ``eval/<exp>/<test_set>.npz``: the one record the evaluate stage writes and the
report reads.

Everything the report shows about a trained model's retrievals comes from here, never from a
recomputation: the features (Fig. 7), the per-query results that the bootstrap intervals resample
(:mod:`pipeline.report.stats`) and the top-k gallery ranking of every query (Fig. 1), ranked by
the evaluation's own distance with the protocol's junk (same identity *and* camera) left out.

On disk it is a zip of ``.npy`` members with fixed dates (byte-stable: the same evaluation gives the
same file, so DVC's hash of ``eval/`` does not move), one member per field::

    <split>_{features, pids, camids, occluded, paths}   split: query, gallery, twin
    <split>_{scored, first_hit, ap, inp, topk, topk_distances}   split: query, twin

(``topk``/``topk_distances`` of the query split are stored as ``topk``/``topk_distances``.)
``twin_*`` exists when the test set has unoccluded twins of its occluded queries.
"""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path

import numpy as np

from ddrn.atomic import atomic_path
from ddrn.errors import DataError
from ddrn.evaluation import QueryMetrics

QUERY_KEYS = ("scored", "first_hit", "ap", "inp")
"""Per-query result fields, in :class:`~ddrn.evaluation.QueryMetrics`' order."""

SPLIT_KEYS = ("features", "pids", "camids", "occluded", "paths")


@dataclasses.dataclass(frozen=True)
class SplitImages:
    """One split's images as evaluated: features (float16 on disk) and labels, in split order."""

    features: np.ndarray
    pids: np.ndarray
    camids: np.ndarray
    occluded: np.ndarray
    paths: np.ndarray


@dataclasses.dataclass(frozen=True)
class QueryResults:
    """How every query of a split ranked the gallery.

    ``per_query`` holds the scored queries' first hit, AP and INP (its ``index`` says which
    queries: one without a valid match is not scored); ``topk``/``topk_distances`` are the first
    gallery indices of *every* query, by the evaluation's distance, junk excluded.
    """

    per_query: QueryMetrics
    topk: np.ndarray
    topk_distances: np.ndarray


@dataclasses.dataclass(frozen=True)
class EvalRecord:
    """One trained model on one test set (see the module docstring for the file layout)."""

    query: SplitImages
    gallery: SplitImages
    query_results: QueryResults
    twin: SplitImages | None = None
    twin_results: QueryResults | None = None

    def ranked(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The first ``k`` gallery indices of every query and whether each is its identity:
        (Q, k), (Q, k). Raises ``ValueError`` for a ``k`` beyond what the file keeps."""
        top = self.query_results.topk
        if k > top.shape[1]:
            raise ValueError(f"report.topk = {k} but the eval files keep the first {top.shape[1]} "
                             "gallery images per query; expected report.topk <= that")
        top = top[:, :k]
        return top, self.gallery.pids[top] == self.query.pids[:, None]

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The npz members, by name."""
        out: dict[str, np.ndarray] = {}
        for prefix, images in (("query", self.query), ("gallery", self.gallery),
                               ("twin", self.twin)):
            if images is not None:
                out.update(_split_arrays(prefix, images))
        for prefix, results in (("query", self.query_results), ("twin", self.twin_results)):
            if results is not None:
                out.update(_result_arrays(prefix, results))
        return out

    def save(self, path: str | Path) -> Path:
        """Write the record to ``path`` atomically and byte-stably; returns ``path``.

        ``np.savez`` stamps every zip member with the current time, so the same features gave a
        new file (and a new ``eval`` hash in dvc.lock) on every run: members get a fixed date.
        """
        path = Path(path)
        with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w",
                                                       compression=zipfile.ZIP_DEFLATED) as zf:
            for name, value in sorted(self.to_arrays().items()):
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                with zf.open(info, "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)
        return path

    @classmethod
    def load(cls, path: str | Path) -> EvalRecord:
        """Read an eval file.

        Raises:
            DataError: unreadable, or a member missing (one line naming the file and the member).
        """
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise DataError(f"{path}: not a readable eval file ({exc}); run the evaluate stage "
                            "again") from exc
        return cls.from_arrays(arrays, path)

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], path: str | Path = "<arrays>") -> EvalRecord:
        """The record of :meth:`to_arrays`' members (``path`` names the source in errors)."""

        def get(name: str) -> np.ndarray:
            if name not in arrays:
                raise DataError(f"{path}: eval file lacks {name!r}; expected the members "
                                "pipeline.trial.eval_record writes; run the evaluate stage again")
            return arrays[name]

        def images(prefix: str) -> SplitImages:
            feats, *rest = (get(f"{prefix}_{key}") for key in SPLIT_KEYS)
            return SplitImages(np.asarray(feats, dtype=np.float32), *rest)

        def results(prefix: str) -> QueryResults:
            per = QueryMetrics(*(np.asarray(get(f"{prefix}_{key}")) for key in QUERY_KEYS))
            return QueryResults(per, get(_ranking_key(prefix, "topk")),
                                get(_ranking_key(prefix, "topk_distances")))

        has_twin = "twin_pids" in arrays
        return cls(images("query"), images("gallery"), results("query"),
                   images("twin") if has_twin else None, results("twin") if has_twin else None)


def _ranking_key(prefix: str, key: str) -> str:
    return key if prefix == "query" else f"{prefix}_{key}"


def _split_arrays(prefix: str, images: SplitImages) -> dict[str, np.ndarray]:
    return {f"{prefix}_features": np.asarray(images.features).astype(np.float16),
            f"{prefix}_pids": np.asarray(images.pids, dtype=np.int64),
            f"{prefix}_camids": np.asarray(images.camids, dtype=np.int64),
            f"{prefix}_occluded": np.asarray(images.occluded, dtype=bool),
            f"{prefix}_paths": np.asarray(images.paths, dtype=str)}


def _result_arrays(prefix: str, results: QueryResults) -> dict[str, np.ndarray]:
    per = results.per_query
    return {f"{prefix}_scored": per.index.astype(np.int64),
            f"{prefix}_first_hit": per.first_hit.astype(np.int64),
            f"{prefix}_ap": per.ap.astype(np.float64),
            f"{prefix}_inp": per.inp.astype(np.float64),
            _ranking_key(prefix, "topk"): np.asarray(results.topk, dtype=np.int32),
            _ranking_key(prefix, "topk_distances"): np.asarray(results.topk_distances,
                                                               dtype=np.float32)}
