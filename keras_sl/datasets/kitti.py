"""KITTI depth (Uhrig et al., 2017): the depth-selection validation images."""

from __future__ import annotations

from pathlib import Path

from keras_sl.datasets.base import Sample, files_with_suffix
from keras_sl.datasets.depth import DepthDataset


class KITTI(DepthDataset):
    """Reader for KITTI's ``data_depth_selection`` ``val_selection_cropped`` set.

    1000 images (1216x352) with semi-dense ground truth: uint16 PNGs, depth
    = value / 256 metres, 0 = no measurement. Files pair by name:
    ``<drive>_sync_image_<frame>_image_0X.png`` in ``image/`` with
    ``<drive>_sync_groundtruth_depth_<frame>_image_0X.png`` in
    ``groundtruth_depth/``. The paper splits these 1000 images 800 train /
    200 test; keras_sl's split is deterministic (sorted image ids,
    PCG64(seed=2025)). ``root`` may be the folder holding ``depth_selection``,
    ``depth_selection`` itself or ``val_selection_cropped``.
    """

    name = "kitti"
    split_sizes = (800, 200)
    depth_scale = 1.0 / 256.0
    invalid_values = (0,)
    license = "KITTI: CC BY-NC-SA 3.0."
    homepage = "https://www.cvlibs.net/datasets/kitti/eval_depth.php?benchmark=depth_prediction"
    download_url = "https://s3.eu-central-1.amazonaws.com/avg-kitti/data_depth_selection.zip"
    layout = (
        "  <root>/depth_selection/val_selection_cropped/image/<drive>_sync_image_<frame>_image_0X.png\n"
        "  <root>/depth_selection/val_selection_cropped/groundtruth_depth/"
        "<drive>_sync_groundtruth_depth_<frame>_image_0X.png"
    )

    def _folder(self) -> Path:
        for folder in (
            self.root / "depth_selection" / "val_selection_cropped",
            self.root / "val_selection_cropped",
            self.root,
        ):
            if (folder / "image").is_dir() and (folder / "groundtruth_depth").is_dir():
                return folder
        return self.root / "depth_selection" / "val_selection_cropped"

    @staticmethod
    def groundtruth_name(image_stem: str) -> str:
        """``..._sync_image_0000000005_image_02`` -> ``..._sync_groundtruth_depth_0000000005_image_02``."""
        return image_stem.replace("_sync_image_", "_sync_groundtruth_depth_", 1)

    def find_samples(self):
        folder = self._folder()
        images = files_with_suffix(folder / "image", [".png"])
        depths = files_with_suffix(folder / "groundtruth_depth", [".png"])
        out = []
        for stem, image in images.items():
            if stem.startswith("."):  # macOS resource forks (._name)
                continue
            gt = depths.get(self.groundtruth_name(stem))
            if gt is not None:
                out.append(Sample(stem, image, (gt,)))
        return out
