"""NYU Depth V2 (Silberman et al., 2012): indoor Kinect RGB-D, labeled subset."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import scipy.io

from keras_sl.datasets.base import DatasetNotFoundError, Sample
from keras_sl.datasets.depth import DepthDataset, read_png_array


def read_split_indices(path) -> tuple[np.ndarray, np.ndarray]:
    """0-based ``(train, test)`` indices from NYU's ``splits.mat``
    (``trainNdxs``/``testNdxs``, 1-based, MATLAB v5 or v7.3)."""
    try:
        mat = scipy.io.loadmat(path, variable_names=["trainNdxs", "testNdxs"])
    except NotImplementedError:  # MATLAB v7.3 (HDF5)
        with h5py.File(path, "r") as f:
            mat = {k: f[k][()] for k in ("trainNdxs", "testNdxs") if k in f}
    if "trainNdxs" not in mat or "testNdxs" not in mat:
        raise ValueError(f"{path}: expected the variables trainNdxs and testNdxs (NYU's splits.mat).")
    train, test = mat["trainNdxs"], mat["testNdxs"]
    return np.asarray(train).astype(int).ravel() - 1, np.asarray(test).astype(int).ravel() - 1


class NYUDepthV2(DepthDataset):
    """Reader for NYU Depth V2, in either of its two common forms.

    * **labeled .mat** (official): ``nyu_depth_v2_labeled.mat`` (MATLAB v7.3 /
      HDF5, read with h5py) holds ``images`` ``(N, 3, W, H)`` uint8 and
      ``depths`` ``(N, W, H)`` float metres — axes transposed by MATLAB, so a
      frame is ``images[i].transpose(2, 1, 0)`` / ``depths[i].T``. Samples
      reference the file plus ``extra["index"]`` (0-based); ids are the
      1-based frame numbers ``0001``..``1449``. The official 795/654 split
      comes from ``splits.mat`` (``trainNdxs``/``testNdxs``, 1-based) when it
      sits next to the .mat; without it keras_sl draws the same proportion
      deterministically (sorted ids, PCG64(seed=2025)).
    * **extracted** (BTS/AdaBins style): ``{train,test}/<scene>/rgb_XXXXX.jpg``
      with ``sync_depth_XXXXX.png`` (uint16 millimetres, 0 = invalid), also
      under ``official_splits/``; the folders are the split, ids are
      ``<part>/<scene>/XXXXX``.

    The .mat layout is used when the file is present.
    """

    name = "nyu_depth_v2"
    split_sizes = (795, 654)
    official_split = True
    depth_scale = 1.0 / 1000.0  # PNG layout: millimetres
    invalid_values = (0,)
    mat_name = "nyu_depth_v2_labeled.mat"
    splits_name = "splits.mat"
    license = "NYU Depth V2: research use, per the dataset page."
    homepage = "https://cs.nyu.edu/~silberman/datasets/nyu_depth_v2.html"
    download_url = (
        "http://horatio.cs.nyu.edu/mit/silberman/nyu_depth_v2/nyu_depth_v2_labeled.mat",
        "http://horatio.cs.nyu.edu/mit/silberman/indoor_seg_sup/splits.mat",
    )
    layout = (
        "  <root>/nyu_depth_v2_labeled.mat (+ <root>/splits.mat for the official 795/654 split)\n"
        "  or <root>/{train,test}/<scene>/rgb_XXXXX.jpg and <root>/{train,test}/<scene>/sync_depth_XXXXX.png"
    )

    # -- discovery ------------------------------------------------------------------
    def _mat_samples(self, mat: Path) -> list[Sample]:
        try:
            with h5py.File(mat, "r") as f:
                images, depths = f["images"], f["depths"]
                n = images.shape[0]
                if images.ndim != 4 or images.shape[1] != 3 or depths.shape != (n,) + images.shape[2:]:
                    raise ValueError(f"images {images.shape} / depths {depths.shape} are not (N, 3, W, H) / (N, W, H)")
        except (OSError, KeyError, ValueError) as err:
            raise DatasetNotFoundError(
                self._missing_message(f"{mat} is not a readable NYU labeled MATLAB v7.3 (HDF5) file ({err})")
            ) from err
        return [Sample(f"{i + 1:04d}", mat, (mat,), {"index": i}) for i in range(n)]

    def _png_part(self, part: str) -> list[Sample]:
        out = []
        for folder in (self.root / part, self.root / "official_splits" / part):
            for rgb in sorted(folder.glob("*/rgb_*.jpg")):
                num = rgb.stem[len("rgb_") :]
                depth = rgb.with_name(f"sync_depth_{num}.png")
                if depth.is_file():
                    out.append(Sample(f"{part}/{rgb.parent.name}/{num}", rgb, (depth,), {"part": part}))
        return out

    def find_samples(self):
        mat = self.root / self.mat_name
        if mat.is_file():
            self.mode = "mat"
            return self._mat_samples(mat)
        self.mode = "png"
        return self._png_part("train") + self._png_part("test")

    def official_splits(self):
        if self.mode == "png":
            return {p: [s for s in self.samples if s.extra["part"] == p] for p in ("train", "test")}
        splits = self.root / self.splits_name
        if not splits.is_file():
            return None
        train, test = read_split_indices(splits)
        by_index = {s.extra["index"]: s for s in self.samples}
        missing = sorted(set(train.tolist() + test.tolist()) - set(by_index))
        if missing:
            raise ValueError(f"{splits} refers to frames {[m + 1 for m in missing[:5]]} not in {self.mat_name}.")
        return {"train": [by_index[i] for i in sorted(train)], "test": [by_index[i] for i in sorted(test)]}

    # -- decoding -----------------------------------------------------------------------
    def read_sample_image(self, sample):
        if "index" not in sample.extra:
            return self.read_image(sample.image)
        with h5py.File(sample.image, "r") as f:
            return np.ascontiguousarray(np.asarray(f["images"][sample.extra["index"]], dtype="uint8").transpose(2, 1, 0))

    def read_raw_depth(self, sample):
        if "index" not in sample.extra:
            return read_png_array(sample.targets[0])
        with h5py.File(sample.targets[0], "r") as f:
            return np.asarray(f["depths"][sample.extra["index"]]).T

    def decode_depth(self, raw, sample):
        scale = 1.0 if "index" in sample.extra else self.depth_scale  # .mat depths are metres already
        return np.asarray(raw, dtype="float64") * scale
