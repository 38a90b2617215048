"""MoNuSAC 2020 multi-organ nuclei segmentation and classification (Verma et al., 2021)."""

from __future__ import annotations

from keras_sl.datasets._common import aperio_polygons, image_size, rasterize_polygons, subdirs, visible_files
from keras_sl.datasets.base import Dataset, Sample

_TRAIN = ("MoNuSAC_images_and_annotations", "MoNuSAC_images_and_annotations_trainning")
_TEST = ("MoNuSAC Testing Data and Annotations", "MoNuSAC_Testing_Data_and_Annotations")


class MoNuSAC(Dataset):
    """Reader for the official MoNuSAC 2020 archives.

    One folder per patient slide, ``<patient>/<patient>_K.tif`` (``.svs``
    copies are used only when the ``.tif`` is missing; PIL may not read every
    ``.svs``) with Aperio XML annotations ``<patient>/<patient>_K.xml``: one
    ``Annotation`` per class (Epithelial, Lymphocyte, Neutrophil, Macrophage)
    holding one ``Region`` polygon per nucleus. All classes are rasterised
    (PIL ``ImageDraw.polygon``) into one binary nuclei mask; the test set's
    ``Ambiguous`` regions (excluded from the challenge evaluation) are left as
    background.

    The official training/testing folders give the split (sample ids
    ``train_<image>`` / ``test_<image>``). Without them (patient folders
    directly under ``<root>``), ids are the image names and the split is
    deterministic with the paper's 209/85 proportion.
    """

    name = "monusac"
    split_sizes = (209, 85)
    official_split = True
    license = "MoNuSAC 2020: CC BY-NC-SA 4.0 (challenge data terms)."
    homepage = "https://monusac-2020.grand-challenge.org/Data/ (registration needed)"
    layout = (
        f"  <root>/{_TRAIN[0]}/<patient>/<patient>_K.tif and <patient>_K.xml\n"
        f"  <root>/{_TEST[0]}/<patient>/<patient>_K.tif and <patient>_K.xml\n"
        "  (or patient folders directly under <root>)"
    )
    skip_classes = ("Ambiguous",)

    @staticmethod
    def _patients(folder, prefix, part):
        samples = []
        for patient in subdirs(folder):
            xmls = visible_files(patient, [".xml"])
            tifs = visible_files(patient, [".tif", ".tiff"])
            svs = visible_files(patient, [".svs"])
            for stem, xml in xmls.items():
                image = tifs.get(stem) or svs.get(stem)
                if image is not None:
                    samples.append(Sample(f"{prefix}{stem}", image, (xml,), {"part": part}))
        return samples

    def find_samples(self):
        train = next((self.root / n for n in _TRAIN if (self.root / n).is_dir()), None)
        test = next((self.root / n for n in _TEST if (self.root / n).is_dir()), None)
        if train is None and test is None:
            return self._patients(self.root, "", "all")
        samples = []
        if train is not None:
            samples += self._patients(train, "train_", "train")
        if test is not None:
            samples += self._patients(test, "test_", "test")
        return samples

    def read_target(self, sample):
        polygons = aperio_polygons(sample.targets[0], skip_classes=self.skip_classes)
        return rasterize_polygons(polygons, image_size(sample.image))
