"""NuInsSeg (Mahbod et al., 2024): H&E nuclei instance segmentation, 31 human and mouse organs."""

from __future__ import annotations

from keras_sl.datasets._common import read_label_mask, subdirs, visible_files
from keras_sl.datasets.base import Dataset, Sample


class NuInsSeg(Dataset):
    """Reader for the official NuInsSeg layout (one folder per tissue).

    Images ``<tissue>/tissue images/<name>.png`` with instance label masks
    ``<tissue>/label masks modify/<name>.tif`` (``label masks/`` when the
    modified masks are absent); any nonzero label is nucleus. Sample ids are
    the image names (they already carry the tissue, e.g. ``human_bladder_01``),
    prefixed with the tissue folder only if two tissues share a name. No split
    ships with the data; the paper uses 510 train / 155 test, keras_sl's
    split is deterministic (sorted ids, PCG64(seed=2025)).
    """

    name = "nuinsseg"
    split_sizes = (510, 155)
    license = "NuInsSeg: CC BY 4.0."
    homepage = "https://zenodo.org/records/10518968 or https://www.kaggle.com/datasets/ipateam/nuinsseg"
    layout = (
        "  <root>/<tissue>/tissue images/<name>.png\n"
        "  <root>/<tissue>/label masks modify/<name>.tif\n"
        "  (or the tissue folders in <root>/NuInsSeg/)"
    )

    def _tissues(self):
        for base in (self.root, self.root / "NuInsSeg"):
            tissues = [t for t in subdirs(base) if (t / "tissue images").is_dir()]
            if tissues:
                return tissues
        return []

    def find_samples(self):
        pairs = []
        for tissue in self._tissues():
            images = visible_files(tissue / "tissue images", [".png", ".tif", ".jpg"])
            masks = visible_files(tissue / "label masks modify", [".tif", ".tiff", ".png"])
            if not masks:
                masks = visible_files(tissue / "label masks", [".tif", ".tiff", ".png"])
            pairs += [(tissue.name, i, images[i], masks[i]) for i in images if i in masks]
        stems = [stem for _, stem, _, _ in pairs]
        unique = len(set(stems)) == len(stems)
        return [
            Sample(stem if unique else f"{tissue.replace(' ', '_')}__{stem}", image, (mask,))
            for tissue, stem, image, mask in pairs
        ]

    def read_target(self, sample):
        return read_label_mask(sample.targets)
