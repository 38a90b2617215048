"""Kvasir-SEG (Jha et al., 2020): 1000 colonoscopy images with polyp masks."""

from __future__ import annotations

from keras_sl.datasets.base import Dataset, Sample, files_with_suffix


class KvasirSEG(Dataset):
    """Reader for the official Kvasir-SEG layout.

    No split file ships with the data; the paper uses 880 train / 120 test.
    keras_sl's split: sorted image ids, PCG64(seed=2025) permutation, first
    120 ids are the test set (:func:`keras_sl.datasets.splits.deterministic_split`).
    Masks are JPEG and binarised at 128.
    """

    name = "kvasir"
    split_sizes = (880, 120)
    license = "Kvasir-SEG: free for research and education; commercial use needs the authors' permission."
    homepage = "https://datasets.simula.no/kvasir-seg/"
    download_url = "https://datasets.simula.no/downloads/kvasir-seg.zip"
    layout = "  <root>/images/<id>.jpg\n  <root>/masks/<id>.jpg"

    def find_samples(self):
        root = self.root / "Kvasir-SEG" if (self.root / "Kvasir-SEG" / "images").is_dir() else self.root
        images = files_with_suffix(root / "images", [".jpg", ".jpeg", ".png"])
        masks = files_with_suffix(root / "masks", [".jpg", ".jpeg", ".png"])
        return [Sample(i, images[i], (masks[i],)) for i in images if i in masks]
