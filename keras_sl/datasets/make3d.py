"""Make3D (Saxena et al., 2009): outdoor images with laser-range depth."""

from __future__ import annotations

import numpy as np
import scipy.io

from keras_sl.datasets.base import Sample, files_with_suffix
from keras_sl.datasets.depth import DepthDataset


class Make3D(DepthDataset):
    """Reader for the official Make3D archives ("Dataset-1").

    Images ``img-<stem>.jpg`` (2272x1704) pair with MATLAB v5 files
    ``depth_sph_corr-<stem>.mat`` whose ``Position3DGrid`` (55x305x4) holds
    the laser depth in metres in channel 4 (``Position3DGrid[:, :, 3]``).
    The grid is far coarser than the image: :meth:`load` upsamples it to the
    image size with nearest-neighbour sampling. Returns beyond the scanner's
    range (``> max_depth`` = 81.9 m: sky / no return), NaN and non-positive
    values are invalid (0).

    Split: the official ``Train400``/``Test134`` folders when both are
    present; otherwise (one folder, or files gathered elsewhere) the paper's
    375 train / 50 test proportion drawn deterministically (sorted ids,
    PCG64(seed=2025)). Sample ids are ``train/<stem>`` and ``test/<stem>``.
    """

    name = "make3d"
    split_sizes = (375, 50)
    official_split = True
    max_depth = 81.9
    license = "Make3D: free for research use, per the Make3D data page."
    homepage = "http://make3d.cs.cornell.edu/data.html"
    download_url = (
        "http://cs.stanford.edu/group/reconstruction3d/Train400Img.tar.gz",
        "http://cs.stanford.edu/group/reconstruction3d/Train400Depth.tgz",
        "http://www.cs.cornell.edu/~asaxena/learningdepth/Test134.tar.gz",
        "http://www.cs.cornell.edu/~asaxena/learningdepth/Test134Depth.tar.gz",
    )
    layout = (
        "  <root>/Train400Img/img-<stem>.jpg and <root>/Train400Depth/depth_sph_corr-<stem>.mat\n"
        "  <root>/Test134/img-<stem>.jpg and <root>/Gridlaserdata/depth_sph_corr-<stem>.mat\n"
        "  (MATLAB v5 .mat with Position3DGrid 55x305x4; channel 4 = depth in metres)"
    )
    folders = {
        "train": (("Train400Img",), ("Train400Depth",)),
        "test": (("Test134", "Test134Img"), ("Gridlaserdata", "Test134Depth")),
    }

    def _part(self, part: str) -> list[Sample]:
        image_dirs, depth_dirs = self.folders[part]
        images, depths = {}, {}
        for d in image_dirs:
            images.update(files_with_suffix(self.root / d, [".jpg", ".jpeg"]))
        for d in depth_dirs:
            depths.update(files_with_suffix(self.root / d, [".mat"]))
        out = []
        for stem, image in images.items():
            if not stem.startswith("img-"):
                continue
            key = "depth_sph_corr-" + stem[len("img-") :]
            if key in depths:
                out.append(Sample(f"{part}/{stem[len('img-'):]}", image, (depths[key],), {"part": part}))
        return out

    def find_samples(self):
        return self._part("train") + self._part("test")

    def read_raw_depth(self, sample):
        mat = scipy.io.loadmat(sample.targets[0], variable_names=["Position3DGrid"])
        if "Position3DGrid" not in mat:
            raise ValueError(f"{sample.targets[0]}: no Position3DGrid variable (expected a Make3D depth file).")
        grid = np.asarray(mat["Position3DGrid"])
        if grid.ndim != 3 or grid.shape[-1] < 4:
            raise ValueError(f"{sample.targets[0]}: Position3DGrid has shape {grid.shape}, expected (55, 305, 4).")
        return grid[:, :, 3]
