"""Helpers shared by the dataset readers: file discovery, label-image and
auto-binarised masks, polygon (Aperio XML) rasterisation, run-length decoding."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from keras_sl.datasets.base import files_with_suffix


def visible_files(folder: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    """:func:`files_with_suffix` without hidden files (macOS ``._name`` forks)."""
    return {stem: p for stem, p in files_with_suffix(folder, suffixes).items() if not p.name.startswith(".")}


def first_dir(candidates: Iterable[Path]) -> Path | None:
    """The first existing folder among ``candidates``."""
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return None


def subdirs(folder: Path) -> list[Path]:
    """Sorted visible sub-folders of ``folder`` (none when it does not exist)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX")))


def _as_mask(merged: np.ndarray | None) -> np.ndarray:
    if merged is None:
        raise ValueError("A mask needs at least one file.")
    return merged.astype("float32")[..., None]


def label_array(path: os.PathLike) -> np.ndarray:
    """Raw pixel values of a (label) image, ``(H, W)`` or ``(H, W, C)``:
    palette indices for ``P`` images, full bit depth for 16/32-bit images."""
    with Image.open(path) as im:
        if im.mode == "1":
            im = im.convert("L")
        return np.asarray(im)


def read_label_mask(paths: Sequence[os.PathLike]) -> np.ndarray:
    """Binary ``float32`` mask ``(H, W, 1)`` from instance label images: any
    nonzero label (in any channel) is foreground; several files are or-ed."""
    merged = None
    for path in paths:
        a = label_array(path)
        a = a != 0 if a.ndim == 2 else np.any(a != 0, axis=-1)
        merged = a if merged is None else (merged | a)
    return _as_mask(merged)


def read_binary_mask(paths: Sequence[os.PathLike], threshold: int = 128) -> np.ndarray:
    """Binary ``float32`` mask ``(H, W, 1)`` for masks stored as 0/1 or 0/255.

    A file whose grey values never exceed 1 is a 0/1 label image (nonzero is
    foreground); anything else is binarised at ``threshold`` like
    :meth:`Dataset.read_mask` (robust to JPEG/interpolation noise)."""
    merged = None
    for path in paths:
        with Image.open(path) as im:
            grey = np.asarray(im.convert("L"))
        a = grey != 0 if int(grey.max(initial=0)) <= 1 else grey >= threshold
        merged = a if merged is None else (merged | a)
    return _as_mask(merged)


def image_size(path: os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image, read from its header only."""
    with Image.open(path) as im:
        return im.size


def rasterize_polygons(polygons: Iterable[Sequence[tuple[float, float]]], size: tuple[int, int]) -> np.ndarray:
    """Fill ``(x, y)`` polygons (pixel coordinates, boundary included, PIL
    ``ImageDraw.polygon``) into a binary ``float32`` mask ``(H, W, 1)`` of
    ``size = (width, height)``; polygons with fewer than 3 vertices are skipped.

    Example:
    >>> m = rasterize_polygons([[(1, 1), (3, 1), (3, 2), (1, 2)]], (5, 4))
    >>> int(m.sum()), m.shape
    (6, (4, 5, 1))
    """
    canvas = Image.new("L", tuple(int(s) for s in size), 0)
    draw = ImageDraw.Draw(canvas)
    for polygon in polygons:
        if len(polygon) >= 3:
            draw.polygon([(float(x), float(y)) for x, y in polygon], fill=1)
    return _as_mask(np.asarray(canvas) != 0)


def aperio_polygons(xml_path: os.PathLike, skip_classes: Sequence[str] = ()) -> list[list[tuple[float, float]]]:
    """Polygons of an Aperio ImageScope XML file (MoNuSeg, MoNuSAC):
    ``Annotations/Annotation/Regions/Region/Vertices/Vertex[@X, @Y]``.

    Annotations whose first ``Attributes/Attribute/@Name`` is in
    ``skip_classes`` (case-insensitive) are left out.
    """
    skip = {name.lower() for name in skip_classes}
    root = ET.parse(xml_path).getroot()
    annotations = [root] if root.tag == "Annotation" else root.iter("Annotation")
    polygons = []
    for annotation in annotations:
        attribute = annotation.find("Attributes/Attribute")
        name = (attribute.get("Name") or "") if attribute is not None else ""
        if name.strip().lower() in skip:
            continue
        for region in annotation.iter("Region"):
            vertices = [(float(v.get("X")), float(v.get("Y"))) for v in region.iter("Vertex")]
            if vertices:
                polygons.append(vertices)
    return polygons


def rle_decode(rle: str, height: int, width: int) -> np.ndarray:
    """Decode Kaggle run-length pairs ``"start length ..."`` (1-indexed starts
    over the row-major flattened ``(height, width)`` image) to a bool array.

    Example:
    >>> rle_decode("2 3 9 2", 3, 4).astype(int).tolist()
    [[0, 1, 1, 1], [0, 0, 0, 0], [1, 1, 0, 0]]
    """
    values = np.asarray(str(rle).split(), dtype=np.int64)
    if values.size % 2:
        raise ValueError(f"Run-length string has an odd number of values: {rle!r}.")
    flat = np.zeros(height * width, dtype=bool)
    for start, length in zip(values[0::2] - 1, values[1::2]):
        if start < 0 or length < 0 or start + length > flat.size:
            raise ValueError(f"Run ({start + 1}, {length}) lies outside a {height}x{width} image.")
        flat[start : start + length] = True
    return flat.reshape(height, width)
