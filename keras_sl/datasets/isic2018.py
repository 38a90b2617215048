"""ISIC 2018 Task 1: skin lesion boundary segmentation (Codella et al., 2019)."""

from __future__ import annotations

from keras_sl.datasets._common import visible_files
from keras_sl.datasets.base import Dataset, Sample

_PARTS = {
    "train": ("ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth"),
    "test": ("ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1_Test_GroundTruth"),
}


class ISIC2018(Dataset):
    """Reader for the official ISIC 2018 Task 1 archives (extracted side by side;
    ``download_url`` lists the four public archives, about 11 GB in all).

    Images ``ISIC_NNNNNNN.jpg`` with masks ``ISIC_NNNNNNN_segmentation.png``
    (0/255). The paper uses the 2594 training images for training and the
    1000 official test images for testing: when the test folders are present
    that official split is used; otherwise the training images are split
    deterministically (sorted ids, PCG64(seed=2025), test fraction 1000/3594).
    The 100 validation images (``ISIC2018_Task1-2_Validation_Input``) are not used.
    """

    name = "isic2018"
    split_sizes = (2594, 1000)
    official_split = True
    license = "ISIC 2018: CC BY-NC 4.0 (ISIC Archive terms; see the archives' LICENSE.txt/ATTRIBUTION.txt)."
    homepage = "https://challenge.isic-archive.com/data/#2018"
    # One public archive per folder of the layout (each zip holds its folder).
    download_url = tuple(
        f"https://isic-challenge-data.s3.amazonaws.com/2018/{folder}.zip" for pair in _PARTS.values() for folder in pair
    )
    layout = (
        "  <root>/ISIC2018_Task1-2_Training_Input/ISIC_NNNNNNN.jpg\n"
        "  <root>/ISIC2018_Task1_Training_GroundTruth/ISIC_NNNNNNN_segmentation.png\n"
        "  optional official test set (else a deterministic split of the training images):\n"
        "  <root>/ISIC2018_Task1-2_Test_Input/ISIC_NNNNNNN.jpg\n"
        "  <root>/ISIC2018_Task1_Test_GroundTruth/ISIC_NNNNNNN_segmentation.png"
    )

    def _part(self, part: str):
        image_dir, mask_dir = _PARTS[part]
        images = visible_files(self.root / image_dir, [".jpg", ".jpeg", ".png"])
        masks = visible_files(self.root / mask_dir, [".png"])
        return [
            Sample(i, images[i], (masks[f"{i}_segmentation"],), {"part": part})
            for i in images
            if f"{i}_segmentation" in masks
        ]

    def find_samples(self):
        return self._part("train") + self._part("test")

