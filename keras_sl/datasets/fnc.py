"""Fluorescent Neuronal Cells (Morelli et al., 2021): 283 fluorescence images of mouse brain slices."""

from __future__ import annotations

from keras_sl.datasets._common import read_binary_mask, subdirs, visible_files
from keras_sl.datasets.base import Dataset, Sample


class FluorescentNeuronalCells(Dataset):
    """Reader for the official Fluorescent Neuronal Cells (v1) layout.

    Images ``all_images/images/<name>.png`` (1600x1200) with binary masks of
    the same name in ``all_masks/masks/``. No split ships with the data; the
    paper uses 200 train / 83 test, keras_sl's split is deterministic
    (sorted ids, PCG64(seed=2025)).
    """

    name = "fnc"
    split_sizes = (200, 83)
    license = "Fluorescent Neuronal Cells: open access on AMS Acta (Univ. of Bologna); see the record for its terms."
    homepage = "http://amsacta.unibo.it/6706/"
    layout = (
        "  <root>/all_images/images/<name>.png\n"
        "  <root>/all_masks/masks/<name>.png\n"
        "  (or the same folders in one sub-folder of <root>)"
    )

    def find_samples(self):
        for folder in [self.root, *subdirs(self.root)]:
            images = visible_files(folder / "all_images" / "images", [".png", ".jpg", ".tif"])
            masks = visible_files(folder / "all_masks" / "masks", [".png", ".jpg", ".tif"])
            samples = [Sample(i, images[i], (masks[i],)) for i in images if i in masks]
            if samples:
                return samples
        return []

    def read_target(self, sample):
        return read_binary_mask(sample.targets)
