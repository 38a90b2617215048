"""CHASE_DB1 retinal vessel segmentation (Fraz et al., 2012)."""

from __future__ import annotations

import re

from keras_sl.datasets._common import read_binary_mask, visible_files
from keras_sl.datasets.base import Dataset, Sample

_IMAGE = re.compile(r"^Image_\d+[LR]$")


class CHASEDB1(Dataset):
    """Reader for the official CHASE_DB1 archive (``CHASEDB1.zip``, flat).

    28 fundus images ``Image_NN{L,R}.jpg`` (14 children, left/right eye);
    targets are the first observer's vessel maps ``Image_NN{L,R}_1stHO.png``
    (the second observer's ``_2ndHO.png`` are ignored). No split ships with
    the data; the paper uses 21 train / 7 test, keras_sl's split is
    deterministic (sorted ids, PCG64(seed=2025)).
    """

    name = "chase_db1"
    split_sizes = (21, 7)
    license = "CHASE_DB1: CC BY 4.0 (Kingston University research data repository)."
    homepage = "https://researchdata.kingston.ac.uk/96/"
    download_url = "https://researchdata.kingston.ac.uk/96/1/CHASEDB1.zip"
    layout = (
        "  <root>/Image_NN{L,R}.jpg\n"
        "  <root>/Image_NN{L,R}_1stHO.png\n"
        "  (or the same files in <root>/CHASEDB1/)"
    )

    def find_samples(self):
        folder = self.root / "CHASEDB1" if (self.root / "CHASEDB1").is_dir() else self.root
        images = visible_files(folder, [".jpg", ".jpeg"])
        masks = visible_files(folder, [".png"])
        return [
            Sample(i, images[i], (masks[f"{i}_1stHO"],))
            for i in images
            if _IMAGE.match(i) and f"{i}_1stHO" in masks
        ]

    def read_target(self, sample):
        return read_binary_mask(sample.targets)
