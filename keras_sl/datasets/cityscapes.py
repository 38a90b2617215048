"""Cityscapes (Cordts et al., 2016): depth from the stereo disparity maps."""

from __future__ import annotations

import json

import numpy as np

from keras_sl.datasets.base import Sample
from keras_sl.datasets.depth import DepthDataset


def disparity_to_depth(raw: np.ndarray, baseline: float, fx: float) -> np.ndarray:
    """Cityscapes disparity PNG values to depth in metres (0 where invalid).

    ``p = 0`` is invalid; otherwise ``d = (p - 1) / 256`` pixels and
    ``depth = baseline * fx / d`` (``d = 0`` — ``p = 1`` — is invalid too).

    Example:
    >>> disparity_to_depth(np.array([[0, 1, 257, 2561]]), baseline=0.2, fx=1000.0).tolist()
    [[0.0, 0.0, 200.0, 20.0]]
    """
    p = np.asarray(raw, dtype="float64")
    d = (p - 1.0) / 256.0
    valid = (p > 0) & (d > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.where(valid, baseline * fx / np.where(valid, d, 1.0), 0.0)
    return depth


class Cityscapes(DepthDataset):
    """Reader for the official Cityscapes layout (depth from disparity).

    Needs three packages from the Cityscapes site: ``leftImg8bit_trainvaltest``,
    ``disparity_trainvaltest`` and ``camera_trainvaltest``. Disparity PNGs are
    uint16 with ``d = (p - 1) / 256`` for ``p > 0`` (``p = 0`` invalid); depth
    is ``baseline * fx / d`` with ``extrinsic.baseline`` and ``intrinsic.fx``
    from the frame's ``_camera.json``. Official split: the 2975 ``train``
    frames for training, the 500 ``val`` frames as the test set (the test
    set's labels are withheld). Sample ids are ``<city>_<seq>_<frame>``.
    """

    name = "cityscapes"
    split_sizes = (2975, 500)
    official_split = True
    license = "Cityscapes: non-commercial research and teaching only, under the Cityscapes dataset terms."
    homepage = "https://www.cityscapes-dataset.com/downloads/ (registration needed)"
    layout = (
        "  <root>/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png\n"
        "  <root>/disparity/{train,val}/<city>/<city>_<seq>_<frame>_disparity.png\n"
        "  <root>/camera/{train,val}/<city>/<city>_<seq>_<frame>_camera.json"
    )
    parts = {"train": "train", "test": "val"}

    def _part(self, part: str) -> list[Sample]:
        out = []
        folder = self.root / "leftImg8bit" / part
        for image in sorted(folder.glob("*/*_leftImg8bit.png")):
            if image.name.startswith("."):  # macOS resource forks (._name)
                continue
            base = image.name[: -len("_leftImg8bit.png")]
            city = image.parent.name
            disparity = self.root / "disparity" / part / city / f"{base}_disparity.png"
            camera = self.root / "camera" / part / city / f"{base}_camera.json"
            if disparity.is_file() and camera.is_file():
                out.append(Sample(base, image, (disparity,), {"camera": camera, "part": part}))
        return out

    def find_samples(self):
        return [s for part in self.parts.values() for s in self._part(part)]

    def official_splits(self):
        return {split: [s for s in self.samples if s.extra["part"] == part] for split, part in self.parts.items()}

    @staticmethod
    def read_camera(path) -> tuple[float, float]:
        """``(baseline in metres, fx in pixels)`` from a ``_camera.json``."""
        with open(path, encoding="utf-8") as f:
            cam = json.load(f)
        try:
            return float(cam["extrinsic"]["baseline"]), float(cam["intrinsic"]["fx"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: expected extrinsic.baseline and intrinsic.fx in the camera file ({err}).") from err

    def decode_depth(self, raw, sample):
        baseline, fx = self.read_camera(sample.extra["camera"])
        return disparity_to_depth(raw, baseline, fx)
