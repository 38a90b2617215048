"""Sartorius Cell Instance Segmentation (Kaggle, 2021): neuronal cells in phase-contrast images."""

from __future__ import annotations

import csv
from collections import defaultdict

import numpy as np

from keras_sl.datasets._common import rle_decode, visible_files
from keras_sl.datasets.base import Dataset, Sample


class Sartorius(Dataset):
    """Reader for the Kaggle competition layout.

    Images ``train/<id>.png`` (grey, 704x520) and ``train.csv`` with one row
    per cell: ``id, annotation, width, height, ...``, where ``annotation`` is
    a run-length encoding (space-separated ``start length`` pairs, starts
    1-indexed over the row-major flattened ``height x width`` image). All
    cells of an image are merged into one binary mask. ``test/`` (3 images
    without masks), ``train_semi_supervised/`` and ``LIVECell_dataset_2021/``
    are not used. The paper uses 540 train / 66 test of the 606 annotated
    images; keras_sl's split is deterministic (sorted ids, PCG64(seed=2025)).
    """

    name = "sartorius"
    split_sizes = (540, 66)
    license = "Sartorius Cell Instance Segmentation: Kaggle competition data, under the competition rules."
    homepage = "https://www.kaggle.com/competitions/sartorius-cell-instance-segmentation"
    layout = (
        "  <root>/train.csv  (columns id, annotation, width, height, ...)\n"
        "  <root>/train/<id>.png"
    )

    def find_samples(self):
        table = self.root / "train.csv"
        if not table.is_file():
            return []
        runs, shapes = defaultdict(list), {}
        with open(table, newline="") as f:
            for row in csv.DictReader(f):
                runs[row["id"]].append(row["annotation"])
                shapes[row["id"]] = (int(row["height"]), int(row["width"]))
        images = visible_files(self.root / "train", [".png"])
        return [
            Sample(i, images[i], (table,), {"rle": tuple(runs[i]), "shape": shapes[i]})
            for i in images
            if i in runs
        ]

    def read_target(self, sample):
        height, width = sample.extra["shape"]
        mask = np.zeros((height, width), dtype=bool)
        for rle in sample.extra["rle"]:
            mask |= rle_decode(rle, height, width)
        return mask.astype("float32")[..., None]
