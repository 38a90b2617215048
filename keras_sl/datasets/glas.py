"""GlaS (MICCAI 2015 Gland Segmentation, Warwick QU dataset; Sirinukunwattana et al., 2017)."""

from __future__ import annotations

import re

from keras_sl.datasets._common import read_label_mask, subdirs, visible_files
from keras_sl.datasets.base import Dataset, Sample

_IMAGE = re.compile(r"^(train|testA|testB)_\d+$")


class GlaS(Dataset):
    """Reader for the official Warwick QU layout (one flat folder of BMPs).

    Images ``{train,testA,testB}_N.bmp`` with instance annotations
    ``{train,testA,testB}_N_anno.bmp`` (each gland has its own label; any
    nonzero label is gland). Official split: 85 ``train`` images / 80 test
    images (60 ``testA`` + 20 ``testB``). If one part is missing, the split
    falls back to keras_sl's deterministic split.
    """

    name = "glas"
    split_sizes = (85, 80)
    official_split = True
    license = "GlaS / Warwick QU: research use only, under the GlaS challenge terms."
    homepage = "https://warwick.ac.uk/fac/cross_fac/tia/data/glascontest/"
    layout = (
        "  <root>/{train,testA,testB}_N.bmp\n"
        "  <root>/{train,testA,testB}_N_anno.bmp\n"
        "  (or the same files in one sub-folder, e.g. <root>/Warwick QU Dataset (Released 2016_07_08)/)"
    )

    def find_samples(self):
        for folder in [self.root, *subdirs(self.root)]:
            images = visible_files(folder, [".bmp", ".png"])
            samples = [
                Sample(i, images[i], (images[f"{i}_anno"],), {"part": "train" if i.startswith("train") else "test"})
                for i in images
                if _IMAGE.match(i) and f"{i}_anno" in images
            ]
            if samples:
                return samples
        return []

    def read_target(self, sample):
        return read_label_mask(sample.targets)
