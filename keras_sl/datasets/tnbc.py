"""TNBC nuclei segmentation (Naylor et al., 2018): 50 H&E tiles of triple-negative breast cancer."""

from __future__ import annotations

import re

from keras_sl.datasets._common import read_binary_mask, visible_files
from keras_sl.datasets.base import Dataset, Sample

_SLIDE = re.compile(r"^Slide_(\d+)$")


class TNBC(Dataset):
    """Reader for the official Zenodo archive ``TNBC_NucleiSegmentation.zip``.

    Images ``Slide_NN/NN_K.png`` (512x512, RGBA; alpha dropped) with binary
    nuclei masks of the same name in ``GT_NN/``. No split ships with the
    data; the paper uses 36 train / 14 test, keras_sl's split is
    deterministic (sorted ids, PCG64(seed=2025)).
    """

    name = "tnbc"
    split_sizes = (36, 14)
    license = "TNBC: CC BY 4.0 (Zenodo record 1175282)."
    homepage = "https://zenodo.org/records/1175282"
    download_url = "https://zenodo.org/records/1175282/files/TNBC_NucleiSegmentation.zip"
    layout = (
        "  <root>/TNBC_NucleiSegmentation/Slide_NN/NN_K.png\n"
        "  <root>/TNBC_NucleiSegmentation/GT_NN/NN_K.png\n"
        "  (or Slide_NN/ and GT_NN/ directly under <root>)"
    )

    def find_samples(self):
        base = self.root / "TNBC_NucleiSegmentation"
        base = base if base.is_dir() else self.root
        samples = []
        for slide in sorted(p for p in base.iterdir() if p.is_dir() and _SLIDE.match(p.name)):
            images = visible_files(slide, [".png"])
            masks = visible_files(base / f"GT_{_SLIDE.match(slide.name).group(1)}", [".png"])
            samples += [Sample(i, images[i], (masks[i],)) for i in images if i in masks]
        return samples

    def read_target(self, sample):
        return read_binary_mask(sample.targets)
