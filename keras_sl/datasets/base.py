"""Dataset readers: samples on disk, deterministic splits, image/mask decoding."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from keras_sl.datasets.splits import deterministic_split


@dataclasses.dataclass(frozen=True)
class Sample:
    """One image with its target file(s).

    ``targets`` holds one mask, several per-instance masks (merged on load),
    or one depth map; ``extra`` holds optional files such as a field-of-view mask.
    """

    id: str
    image: Path
    targets: tuple[Path, ...]
    extra: dict = dataclasses.field(default_factory=dict, compare=False)


class DatasetNotFoundError(FileNotFoundError):
    """Raised with instructions on where to put (or how to get) the files."""


class Dataset:
    """Base reader. Subclasses implement :meth:`find_samples`.

    Class attributes describe the dataset (paper Table I): ``task``
    (``"segmentation"`` or ``"depth"``), ``split_sizes`` (train, test),
    ``official_split`` (True when the data ships its own split), ``license``,
    ``homepage``, ``download_url``/``download_sha256`` where a public archive
    exists, and ``layout`` (the on-disk layout the reader expects).
    """

    name: str = ""
    task: str = "segmentation"
    split_sizes: tuple[int, int] | None = None
    official_split: bool = False
    license: str = ""
    homepage: str = ""
    #: one URL or several (all are fetched) of public archives, else None
    download_url: str | tuple[str, ...] | None = None
    #: a digest, a list (one per URL) or a dict keyed by URL or file name
    download_sha256: str | list | dict | None = None
    #: unpack archives found inside the downloaded archives (7-Scenes)
    download_nested: bool = False
    layout: str = ""
    split_seed: int = 2025
    #: the ``Sample.extra`` key of a mask of the pixels that count (DRIVE's field of view), else None:
    #: metrics are computed and training patches centred inside it
    region_of_interest: str | None = None

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DatasetNotFoundError(self._missing_message(f"{self.root} does not exist"))
        self.samples = sorted(self.find_samples(), key=lambda s: s.id)
        if not self.samples:
            raise DatasetNotFoundError(self._missing_message(f"no samples found under {self.root}"))

    # -- to implement ---------------------------------------------------------
    def find_samples(self) -> list[Sample]:
        raise NotImplementedError

    def official_splits(self) -> dict[str, list[Sample]] | None:
        """The data's own train/test split, or None for a deterministic one.

        By default: readers that tag samples with ``extra["part"]`` (``"train"``
        / ``"test"``) get those parts when both are on disk. Override for
        other split files.
        """
        parts = {name: [s for s in self.samples if s.extra.get("part") == name] for name in ("train", "test")}
        return parts if all(parts.values()) else None

    # -- splits -------------------------------------------------------------------
    def split(self, name: str = "train") -> list[Sample]:
        """``"train"``, ``"test"`` or ``"all"``: official split if the data has
        one, else a seeded, sorted-id split of ``split_sizes`` (see
        :func:`keras_sl.datasets.splits.deterministic_split`)."""
        if name == "all":
            return list(self.samples)
        if name not in ("train", "test"):
            raise ValueError(f"split must be 'train', 'test' or 'all', got {name!r}.")
        official = self.official_splits()
        if official is not None:
            return official[name]
        ids = [s.id for s in self.samples]
        n_train, n_test = self.split_sizes or (len(ids) - len(ids) // 8, len(ids) // 8)
        if len(ids) != n_train + n_test:
            # Fewer or more files than the paper used: keep its test fraction.
            n_test = max(1, round(len(ids) * n_test / (n_train + n_test)))
        train_ids, test_ids = deterministic_split(ids, n_test, seed=self.split_seed)
        chosen = set(train_ids if name == "train" else test_ids)
        return [s for s in self.samples if s.id in chosen]

    # -- decoding --------------------------------------------------------------------
    @staticmethod
    def read_image(path: os.PathLike) -> np.ndarray:
        """RGB ``uint8`` array ``(H, W, 3)`` (alpha dropped, grey replicated).

        Single-channel 16-bit and 32-bit images (PIL modes ``I;16*``, ``I``)
        are scaled from the 16-bit range to 8 bits (``value * 255 / 65535``,
        rounded; larger values clip), float images (mode ``F``) from [0, 1];
        PIL's own ``convert("RGB")`` would saturate them to white.
        """
        with Image.open(path) as im:
            if _is_wide_grey(im):
                grey = _wide_to_uint8(np.asarray(im), im.mode)
                return np.repeat(grey[..., None], 3, axis=-1)
            return np.asarray(im.convert("RGB"))

    @staticmethod
    def read_mask(paths: Sequence[os.PathLike], threshold: int = 128) -> np.ndarray:
        """Binary ``float32`` mask ``(H, W, 1)``: every file binarised at
        ``threshold`` (JPEG/interpolated masks are noisy around 0 and 255),
        several files (one per instance) merged with a logical or. 16-bit and
        32-bit masks (label maps, PIL modes ``I;16*``, ``I``, ``F``) count every
        value above 0 as foreground."""
        merged = None
        for path in paths:
            with Image.open(path) as im:
                if _is_wide_grey(im):
                    a = np.asarray(im) > 0
                else:
                    a = np.asarray(im.convert("L")) >= threshold
            merged = a if merged is None else (merged | a)
        if merged is None:
            raise ValueError("read_mask needs at least one mask file.")
        return merged.astype("float32")[..., None]

    def read_region(self, sample: Sample, key: str) -> np.ndarray | None:
        """The boolean ``(H, W)`` mask in ``sample.extra[key]`` (e.g. DRIVE's field of view, ``"fov"``), or
        None when the sample has no such file."""
        path = sample.extra.get(key)
        return None if path is None else self.read_mask([path])[..., 0] > 0

    def read_target(self, sample: Sample) -> np.ndarray:
        return self.read_mask(sample.targets)

    def load(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        return self.read_image(sample.image), self.read_target(sample)

    # -- messages -----------------------------------------------------------------------
    def _missing_message(self, problem: str) -> str:
        how = (
            f"Download it with keras_sl.datasets.download({self.name!r}, root)"
            if self.download_url
            else f"Get it from {self.homepage or 'its publisher'} (a login may be needed)"
        )
        return f"{self.name}: {problem}. {how} and arrange the files as:\n{self.layout}"

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, samples={len(self)})"


def _is_wide_grey(im: Image.Image) -> bool:
    """A single-channel image with more than 8 bits per pixel (16-bit PNG/TIFF, 32-bit int or float)."""
    return im.mode.startswith("I") or im.mode == "F"


def _wide_to_uint8(a: np.ndarray, mode: str) -> np.ndarray:
    """16/32-bit integer pixels from the 16-bit range, float pixels from [0, 1], to uint8."""
    a = np.asarray(a, dtype="float64")
    a = np.nan_to_num(a, nan=0.0) * (255.0 if mode == "F" else 255.0 / 65535.0)
    return np.clip(np.rint(a), 0, 255).astype("uint8")


def files_with_suffix(folder: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    """``{stem: path}`` for files in ``folder`` with one of ``suffixes``."""
    suffixes = tuple(s.lower() for s in suffixes)
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in suffixes}
