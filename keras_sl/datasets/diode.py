"""DIODE (Vasiljevic et al., 2019): dense indoor/outdoor laser depth; outdoor only here."""

from __future__ import annotations

import numpy as np

from keras_sl.datasets.base import Sample
from keras_sl.datasets.depth import DepthDataset


class DIODE(DepthDataset):
    """Reader for the official DIODE archives, outdoor scenes only (as in the paper).

    ``<id>.png`` (1024x768 RGB) pairs with ``<id>_depth.npy`` (``(H, W, 1)``
    float32 metres) and ``<id>_depth_mask.npy`` (``(H, W)`` validity mask,
    multiplied in: pixels outside the mask are invalid, 0). The indoor
    scenes (``indoors/``) are ignored.

    DIODE's own train/val division is not the paper's: the outdoor frames of
    ``train/`` and ``val/`` are pooled (16884 + 446 = 17330 in the full
    release) and split 80/20 deterministically (sorted ids, PCG64(seed=2025)).
    Neighbouring scans of a scene are correlated, so this per-frame split is
    optimistic; it is what the paper describes. Sample ids are
    ``<train|val>/<scene>/<scan>/<id>``.
    """

    name = "diode"
    split_sizes = (13864, 3466)
    license = "DIODE: MIT License per the DIODE devkit repository; check https://diode-dataset.org/ for the data terms."
    homepage = "https://diode-dataset.org/"
    download_url = (
        "http://diode-dataset.s3.amazonaws.com/train.tar.gz",
        "http://diode-dataset.s3.amazonaws.com/val.tar.gz",
    )
    layout = (
        "  <root>/{train,val}/outdoor/<scene>/<scan>/<id>.png\n"
        "  <root>/{train,val}/outdoor/<scene>/<scan>/<id>_depth.npy\n"
        "  <root>/{train,val}/outdoor/<scene>/<scan>/<id>_depth_mask.npy"
    )

    def find_samples(self):
        out = []
        for part in ("train", "val"):
            for image in sorted((self.root / part / "outdoor").glob("*/*/*.png")):
                if image.name.startswith("."):  # macOS resource forks (._name)
                    continue
                depth = image.with_name(image.stem + "_depth.npy")
                mask = image.with_name(image.stem + "_depth_mask.npy")
                if depth.is_file() and mask.is_file():
                    scan, scene = image.parent.name, image.parent.parent.name
                    out.append(Sample(f"{part}/{scene}/{scan}/{image.stem}", image, (depth,), {"mask": mask}))
        return out

    def read_raw_depth(self, sample):
        depth = np.load(sample.targets[0], allow_pickle=False)
        if depth.ndim == 3:
            depth = depth[..., 0]
        mask = np.load(sample.extra["mask"], allow_pickle=False)
        if mask.ndim == 3:
            mask = mask[..., 0]
        if mask.shape != depth.shape:
            raise ValueError(f"{sample.extra['mask']}: mask shape {mask.shape} does not match depth {depth.shape}.")
        with np.errstate(invalid="ignore"):
            # NaN * 0 stays NaN: sanitize_depth maps it to 0 afterwards.
            return depth.astype("float64") * (mask.astype("float64") > 0)
