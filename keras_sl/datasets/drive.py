"""DRIVE retinal vessel segmentation (Staal et al., 2004)."""

from __future__ import annotations

from keras_sl.datasets.base import Dataset, Sample


class DRIVE(Dataset):
    """Reader for the official DRIVE layout, official 20/20 split.

    Targets are the first observer's manual vessel maps (``1st_manual``);
    the field-of-view mask is kept in ``sample.extra["fov"]`` (metrics and
    training patches stay inside it) and, on the test set, the second
    observer's maps (``2nd_manual``, the human reference) in
    ``sample.extra["second_observer"]``.
    """

    name = "drive"
    split_sizes = (20, 20)
    official_split = True
    #: The ``extra`` key of the field-of-view mask: patches are sampled and metrics computed inside it.
    region_of_interest = "fov"
    license = "DRIVE: research use under the DRIVE database terms."
    homepage = "https://drive.grand-challenge.org/ (registration needed)"
    layout = (
        "  <root>/{training,test}/images/NN_{training,test}.tif\n"
        "  <root>/{training,test}/1st_manual/NN_manual1.gif\n"
        "  <root>/{training,test}/mask/NN_{training,test}_mask.gif\n"
        "  <root>/test/2nd_manual/NN_manual2.gif (optional: second observer)"
    )

    def _part(self, part: str):
        folder = self.root / part
        out = []
        for image in sorted((folder / "images").glob(f"*_{part}.tif")):
            nn = image.stem.split("_")[0]
            manual = folder / "1st_manual" / f"{nn}_manual1.gif"
            if manual.is_file():
                extra = {"fov": folder / "mask" / f"{nn}_{part}_mask.gif",
                         "second_observer": folder / "2nd_manual" / f"{nn}_manual2.gif"}
                out.append(Sample(f"{part}_{nn}", image, (manual,), {k: p for k, p in extra.items() if p.is_file()}))
        return out

    def find_samples(self):
        return self._part("training") + self._part("test")

    def official_splits(self):
        return {"train": self._part("training"), "test": self._part("test")}
