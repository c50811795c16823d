"""preprocess stage: decode every image once into ``data/packed/<dataset>/`` (see :mod:`ddrn.data.packed`).

Each dataset of the profile is parsed from ``data/raw/<dataset>/`` (statistics table in the log),
resized bicubically to ``input.height x input.width`` and packed per split into a memory-mappable
uint8 array plus a manifest. A corrupt image fails the stage with its path and leaves no partial
pack.

    python -m pipeline.preprocess [--dataset NAME] [--params params.yaml] [--profile P]
                                  [--raw-dir data/raw] [--packed-dir data/packed] [--threads N]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ddrn.data import load_dataset, pack_dataset
from ddrn.data.formats import LAYOUTS
from ddrn.errors import DataError
from pipeline.cli import base_parser, load_params, run_stage, selected_datasets
from pipeline.preflight import pack_source

log = logging.getLogger(__name__)


def preprocess_dataset(name: str, raw_dir: Path, packed_dir: Path, height: int, width: int,
                       threads: int = 2, source: dict[str, Any] | None = None) -> Path:
    """Parse ``raw_dir`` as dataset ``name`` and pack it into ``packed_dir``.

    ``source`` (:func:`pipeline.preflight.pack_source`) is recorded in ``meta.json``, so training
    can refuse a pack made from another dataset config.

    Raises:
        DataError: a split of the dataset's layout holds no images (nothing is packed).
    """
    start = time.perf_counter()
    dataset = load_dataset(name, raw_dir)
    for split, folder in LAYOUTS[name].folders.items():
        if not dataset.splits()[split]:
            raise DataError(f"{raw_dir / folder}: split {split!r} of {name} holds no images; "
                            f"expected at least one file named like {LAYOUTS[name].name_example}")
    out = pack_dataset(dataset, packed_dir, height, width, num_threads=threads, source=source)
    n = sum(len(s) for s in dataset.splits().values())
    log.info("%s: packed %d images at %dx%d in %.1f s", out, n, height, width,
             time.perf_counter() - start)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser("Decode, resize and pack the profile's datasets into data/packed/.")
    parser.add_argument("--dataset", default=None, help="only this dataset")
    parser.add_argument("--raw-dir", type=Path, default=Path("data/raw"))
    parser.add_argument("--packed-dir", type=Path, default=Path("data/packed"))
    parser.add_argument("--threads", type=int, default=2, help="decoding threads")
    args = parser.parse_args(argv)
    config = load_params(args)
    for name in selected_datasets(args, config):
        preprocess_dataset(name, args.raw_dir / name, args.packed_dir / name,
                           config.input.height, config.input.width, args.threads,
                           pack_source(config.datasets[name]))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_stage(main))
