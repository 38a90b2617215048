"""MODEST / MoDES: synthetic road scenes with stray cattle, 224x224, with depth.

Identified as "MoDES: Monocular Depth Estimation and Segmentation Dataset of
Stray Animals" (S. Bonthu, 2020; Kaggle ``bsridevi/modes-dataset-of-stray-animals``,
built for autonomous navigation on Indian roads): 400K composites of 200
cattle cut-outs pasted on 100 road/field backgrounds, each with a mask and a
depth map predicted by DenseDepth (NYU model) — relative, not measured, depth.
"""

from __future__ import annotations

from pathlib import Path

from keras_sl.datasets.base import Sample, files_with_suffix
from keras_sl.datasets.depth import DepthDataset


class MODEST(DepthDataset):
    """Reader for the MoDES layout (the layout keras_sl assumes for MODEST).

    ``out2/images/fgbg<N>.jpg`` (224x224 RGB) pairs with
    ``out2/depth/fgbg<N>.jpg`` (same file name; 8-bit greyscale JPEG) and,
    optionally, the foreground mask ``out2/masks/mask<N>.jpg`` (kept in
    ``sample.extra["mask"]``). ``root`` may hold ``out2/`` or be it.

    Depth is DenseDepth's NYU-trained prediction stored as 8-bit grey, so it
    is *relative*: keras_sl decodes ``p / 255 * 10`` "metres" (DenseDepth's
    NYU range, 0-10 m) via ``depth_scale``; change ``depth_scale`` for
    another convention. JPEG has no sentinel: only ``p = 0`` (0 m) ends up
    invalid. No split ships with the data; keras_sl uses 80/20
    (320000/80000 of the full 400K), deterministic (sorted ids, PCG64(seed=2025)).
    """

    name = "modest"
    split_sizes = (320000, 80000)
    depth_scale = 10.0 / 255.0
    license = "MoDES: CC0 1.0 per its Kaggle/dataset-ninja listing."
    homepage = "https://www.kaggle.com/datasets/bsridevi/modes-dataset-of-stray-animals (Kaggle login needed)"
    layout = (
        "  <root>/out2/images/fgbg<N>.jpg   (224x224 RGB)\n"
        "  <root>/out2/depth/fgbg<N>.jpg    (8-bit greyscale depth, same file name)\n"
        "  <root>/out2/masks/mask<N>.jpg    (optional foreground mask)"
    )

    def _folder(self) -> Path:
        for folder in (self.root / "out2", self.root):
            if (folder / "images").is_dir() and (folder / "depth").is_dir():
                return folder
        return self.root / "out2"

    def find_samples(self):
        folder = self._folder()
        images = files_with_suffix(folder / "images", [".jpg", ".jpeg", ".png"])
        depths = files_with_suffix(folder / "depth", [".jpg", ".jpeg", ".png"])
        masks = files_with_suffix(folder / "masks", [".jpg", ".jpeg", ".png"])
        out = []
        for stem, image in images.items():
            if stem in depths and not stem.startswith("."):  # skip macOS ._name forks
                number = stem[len("fgbg") :] if stem.startswith("fgbg") else stem
                mask = masks.get(f"mask{number}")
                out.append(Sample(stem, image, (depths[stem],), {"mask": mask} if mask else {}))
        return out
