"""Person re-ID data: parse -> (synthesise) -> pack -> sample -> augment.

- :func:`load_dataset` parses the five official layouts (:mod:`ddrn.data.formats`).
- :func:`generate_synthetic` writes the synthetic occluded-person benchmark in those layouts.
- :func:`pack_dataset` / :func:`open_packed` decode every image once into a memory-mapped store.
- :class:`PKSampler`, :class:`BatchAugment` and :func:`make_train_loader` feed training.
- :func:`split_validation` holds training identities out for model selection.
"""

from ddrn.data.augment import BatchAugment
from ddrn.data.formats import LAYOUTS, load_dataset
from ddrn.data.loader import TrainLoader, make_train_loader
from ddrn.data.packed import PackedDataset, PackedSplit, open_packed, pack_dataset, read_meta
from ddrn.data.preview import dataset_grid, save_dataset_grid
from ddrn.data.sampler import PKSampler
from ddrn.data.samples import ReIDDataset, Sample
from ddrn.data.stats import check_known_counts, stats_table
from ddrn.data.synthetic import generate_synthetic
from ddrn.data.validation import ValidationSplit, select_rows, split_validation

__all__ = [
    "LAYOUTS", "BatchAugment", "PKSampler", "PackedDataset", "PackedSplit", "ReIDDataset", "Sample",
    "TrainLoader", "ValidationSplit", "check_known_counts", "dataset_grid", "generate_synthetic", "load_dataset",
    "make_train_loader", "open_packed", "pack_dataset", "read_meta", "save_dataset_grid", "select_rows",
    "split_validation", "stats_table",
]
