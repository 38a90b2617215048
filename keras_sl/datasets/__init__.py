"""Dataset readers, deterministic splits and the input pipeline."""

from keras_sl.datasets.base import Dataset, DatasetNotFoundError, Sample
from keras_sl.datasets.drive import DRIVE
from keras_sl.datasets.dsb2018 import DSB2018
from keras_sl.datasets.kvasir import KvasirSEG
from keras_sl.datasets.pipeline import SegmentationLoader
from keras_sl.datasets.splits import deterministic_split

DATASETS = {cls.name: cls for cls in (KvasirSEG, DSB2018, DRIVE)}


def get(name: str, root) -> Dataset:
    """Open dataset ``name`` (see ``DATASETS``) stored under ``root``."""
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; available: {', '.join(sorted(DATASETS))}.")
    return DATASETS[name](root)


__all__ = [
    "DATASETS",
    "DRIVE",
    "DSB2018",
    "Dataset",
    "DatasetNotFoundError",
    "KvasirSEG",
    "Sample",
    "SegmentationLoader",
    "deterministic_split",
    "get",
]
