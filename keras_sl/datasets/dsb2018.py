"""2018 Data Science Bowl, stage1_train: nuclei in microscopy images."""

from __future__ import annotations

from keras_sl.datasets.base import Dataset, Sample, files_with_suffix


class DSB2018(Dataset):
    """Reader for both common layouts of DSB2018 stage1_train.

    * official: ``stage1_train/<id>/images/<id>.png`` with one PNG per nucleus
      in ``stage1_train/<id>/masks/`` (merged into one mask on load);
    * resized (e.g. UNet++'s 96x96 copy): ``images/<id>.png`` and
      ``masks/0/<id>.png`` (all nuclei already merged).

    The paper uses 600 train / 70 test; keras_sl's split is deterministic
    (sorted ids, PCG64(seed=2025)).
    """

    name = "dsb2018"
    split_sizes = (600, 70)
    license = "DSB2018 stage1 data: CC0 per the Kaggle competition terms (Broad Bioimage Benchmark Collection BBBC038)."
    homepage = "https://www.kaggle.com/c/data-science-bowl-2018 (login needed) or https://bbbc.broadinstitute.org/BBBC038"
    layout = (
        "  <root>/stage1_train/<id>/images/<id>.png and <root>/stage1_train/<id>/masks/*.png\n"
        "  or <root>/images/<id>.png and <root>/masks/0/<id>.png"
    )

    def find_samples(self):
        official = self.root / "stage1_train" if (self.root / "stage1_train").is_dir() else self.root
        samples = []
        for folder in sorted(p for p in official.iterdir() if (p / "images").is_dir() and (p / "masks").is_dir()):
            images = files_with_suffix(folder / "images", [".png"])
            masks = tuple(files_with_suffix(folder / "masks", [".png"]).values())
            if folder.name in images and masks:
                samples.append(Sample(folder.name, images[folder.name], masks))
        if samples:
            return samples
        images = files_with_suffix(self.root / "images", [".png"])
        masks = files_with_suffix(self.root / "masks" / "0", [".png"])
        return [Sample(i, images[i], (masks[i],)) for i in images if i in masks]
