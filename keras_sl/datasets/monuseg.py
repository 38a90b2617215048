"""MoNuSeg 2018 nuclei segmentation (Kumar et al., 2017/2020): H&E tiles with Aperio XML polygons."""

from __future__ import annotations

from keras_sl.datasets._common import aperio_polygons, image_size, rasterize_polygons, visible_files
from keras_sl.datasets.base import Dataset, Sample

_TRAIN = "MoNuSeg 2018 Training Data"
_TEST = "MoNuSegTestData"
_IMAGE_SUFFIXES = [".tif", ".tiff", ".png"]


class MoNuSeg(Dataset):
    """Reader for the official MoNuSeg 2018 archives.

    Training: ``MoNuSeg 2018 Training Data/Tissue Images/<TCGA id>.tif`` with
    ``MoNuSeg 2018 Training Data/Annotations/<TCGA id>.xml``; test:
    ``MoNuSegTestData/<TCGA id>.tif`` next to ``<TCGA id>.xml``. The XML files
    are Aperio ImageScope annotations (one ``Region`` polygon per nucleus);
    they are rasterised (PIL ``ImageDraw.polygon``, boundary included) into a
    binary nuclei mask of the image's size. The official train/test folders
    give the split; without the test folder the training images are split
    deterministically with the paper's 37/14 proportion.
    """

    name = "monuseg"
    split_sizes = (37, 14)
    official_split = True
    license = "MoNuSeg: CC BY-NC-SA 4.0 (MoNuSeg challenge data terms)."
    homepage = "https://monuseg.grand-challenge.org/Data/ (registration needed)"
    layout = (
        f"  <root>/{_TRAIN}/Tissue Images/<TCGA id>.tif\n"
        f"  <root>/{_TRAIN}/Annotations/<TCGA id>.xml\n"
        f"  <root>/{_TEST}/<TCGA id>.tif and <root>/{_TEST}/<TCGA id>.xml (official test set, optional)"
    )

    @staticmethod
    def _pairs(image_dir, xml_dir, part):
        images = visible_files(image_dir, _IMAGE_SUFFIXES)
        xmls = visible_files(xml_dir, [".xml"])
        return [Sample(i, images[i], (xmls[i],), {"part": part}) for i in images if i in xmls]

    def find_samples(self):
        train = self.root / _TRAIN if (self.root / _TRAIN / "Tissue Images").is_dir() else self.root
        test = self.root / _TEST
        if (test / "Tissue Images").is_dir():
            test_samples = self._pairs(test / "Tissue Images", test / "Annotations", "test")
        else:
            test_samples = self._pairs(test, test, "test")
        return self._pairs(train / "Tissue Images", train / "Annotations", "train") + test_samples

    def read_target(self, sample):
        return rasterize_polygons(aperio_polygons(sample.targets[0]), image_size(sample.image))
