"""FIVES fundus vessel segmentation (Jin et al., 2022): 800 images, 2048x2048."""

from __future__ import annotations

from keras_sl.datasets._common import first_dir, read_binary_mask, visible_files
from keras_sl.datasets.base import Dataset, Sample

_ARCHIVE_FOLDER = "FIVES A Fundus Image Dataset for AI-based Vessel Segmentation"


class FIVES(Dataset):
    """Reader for the official FIVES layout, official 600/200 split.

    Images ``{train,test}/Original/N_C.png`` (``C`` = A(MD), D(R), G(laucoma),
    N(ormal); numbering restarts in ``test``) with vessel maps of the same
    name in ``{train,test}/Ground truth/``. Sample ids are ``train_N_C`` and
    ``test_N_C``. If one of the two parts is missing, the split falls back to
    keras_sl's deterministic split.
    """

    name = "fives"
    split_sizes = (600, 200)
    official_split = True
    license = "FIVES: CC BY 4.0."
    homepage = "https://doi.org/10.6084/m9.figshare.19688169 (figshare, RAR archive)"
    layout = (
        "  <root>/{train,test}/Original/N_C.png\n"
        "  <root>/{train,test}/Ground truth/N_C.png\n"
        f"  (or the same folders in <root>/{_ARCHIVE_FOLDER}/)"
    )

    def _base(self):
        candidates = (self.root, self.root / _ARCHIVE_FOLDER)
        return first_dir(p for p in candidates if (p / "train").is_dir() or (p / "test").is_dir())

    def _part(self, part: str):
        base = self._base()
        if base is None:
            return []
        images = visible_files(base / part / "Original", [".png", ".jpg", ".tif"])
        masks = visible_files(base / part / "Ground truth", [".png", ".jpg", ".tif", ".gif"])
        return [Sample(f"{part}_{i}", images[i], (masks[i],), {"part": part}) for i in images if i in masks]

    def find_samples(self):
        return self._part("train") + self._part("test")

    def read_target(self, sample):
        return read_binary_mask(sample.targets)
