"""Dataset readers (paper Table I and more), deterministic splits, downloads
and the backend-agnostic input pipeline.

Example::

    from keras_sl import datasets
    ds = datasets.get("kvasir", "data/kvasir-seg")
    train = datasets.SegmentationLoader(ds, ds.split("train"), image_size=(256, 256), augment=True)
"""

from keras_sl.datasets.base import Dataset, DatasetNotFoundError, Sample
from keras_sl.datasets.bccd import BCCD
from keras_sl.datasets.chase_db1 import CHASEDB1
from keras_sl.datasets.cityscapes import Cityscapes
from keras_sl.datasets.depth import DepthDataset
from keras_sl.datasets.diode import DIODE
from keras_sl.datasets.download import DownloadError, download
from keras_sl.datasets.drive import DRIVE
from keras_sl.datasets.dsb2018 import DSB2018
from keras_sl.datasets.fives import FIVES
from keras_sl.datasets.fnc import FluorescentNeuronalCells
from keras_sl.datasets.glas import GlaS
from keras_sl.datasets.isic2018 import ISIC2018
from keras_sl.datasets.kitti import KITTI
from keras_sl.datasets.kvasir import KvasirSEG
from keras_sl.datasets.make3d import Make3D
from keras_sl.datasets.modest import MODEST
from keras_sl.datasets.monusac import MoNuSAC
from keras_sl.datasets.monuseg import MoNuSeg
from keras_sl.datasets.nuinsseg import NuInsSeg
from keras_sl.datasets.nyu_depth_v2 import NYUDepthV2
from keras_sl.datasets.patches import PatchLoader
from keras_sl.datasets.pipeline import SegmentationLoader
from keras_sl.datasets.sartorius import Sartorius
from keras_sl.datasets.seven_scenes import SevenScenes
from keras_sl.datasets.splits import deterministic_split
from keras_sl.datasets.tnbc import TNBC

#: The 13 segmentation and 6 depth datasets of the paper's Table I, plus
#: DRIVE (retinal vessels) and 7-Scenes (real RGB-D), by reader name.
DATASETS = {
    cls.name: cls
    for cls in (
        CHASEDB1, FIVES, ISIC2018, KvasirSEG, GlaS, BCCD, DSB2018, FluorescentNeuronalCells, MoNuSAC,
        MoNuSeg, NuInsSeg, Sartorius, TNBC, Cityscapes, Make3D, DIODE, KITTI, NYUDepthV2, MODEST,
        DRIVE, SevenScenes,
    )
}

#: Data loader for depth maps: the same pipeline (nearest-neighbour target
#: resizing keeps depth values; zero padding marks pixels invalid).
DepthLoader = SegmentationLoader


def get(name: str, root) -> Dataset:
    """Open dataset ``name`` (a key of ``DATASETS``) stored under ``root``."""
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; available: {', '.join(sorted(DATASETS))}.")
    return DATASETS[name](root)


__all__ = ["DATASETS", "Dataset", "DatasetNotFoundError", "DepthDataset", "DepthLoader", "DownloadError",
           "PatchLoader", "Sample", "SegmentationLoader", "deterministic_split", "download", "get"] + sorted(
    cls.__name__ for cls in DATASETS.values())
