"""BCCD blood cell segmentation ("BCCD Dataset with mask", Kaggle; 1328 images)."""

from __future__ import annotations

from keras_sl.datasets._common import first_dir, read_binary_mask, visible_files
from keras_sl.datasets.base import Dataset, Sample

_ARCHIVE_FOLDER = "BCCD Dataset with mask"


class BCCD(Dataset):
    """Reader for the Kaggle "BCCD Dataset with mask" layout, official 1169/159 split.

    Images ``{train,test}/original/<name>.png`` with binary masks of the same
    stem in ``{train,test}/mask/``. Sample ids are ``train_<name>`` and
    ``test_<name>``. Masks stored as 0/1 or 0/255 are both accepted. If one
    part is missing, the split falls back to keras_sl's deterministic split.
    """

    name = "bccd"
    split_sizes = (1169, 159)
    official_split = True
    license = "BCCD Dataset with mask (Kaggle, jeetblahiri): see the Kaggle dataset page; BCCD itself is MIT-licensed."
    homepage = "https://www.kaggle.com/datasets/jeetblahiri/bccd-dataset-with-mask"
    layout = (
        f"  <root>/{_ARCHIVE_FOLDER}/{{train,test}}/original/<name>.png\n"
        f"  <root>/{_ARCHIVE_FOLDER}/{{train,test}}/mask/<name>.png\n"
        f"  (or <root> itself being the '{_ARCHIVE_FOLDER}' folder)"
    )

    def _part(self, part: str):
        candidates = (self.root / _ARCHIVE_FOLDER, self.root)
        base = first_dir(p for p in candidates if (p / part / "original").is_dir())
        if base is None:
            return []
        images = visible_files(base / part / "original", [".png", ".jpg", ".jpeg"])
        masks = visible_files(base / part / "mask", [".png", ".jpg", ".jpeg"])
        return [Sample(f"{part}_{i}", images[i], (masks[i],), {"part": part}) for i in images if i in masks]

    def find_samples(self):
        return self._part("train") + self._part("test")

    def read_target(self, sample):
        return read_binary_mask(sample.targets)
