"""Raw images in, network inputs out, and the way back to each input's size.

:class:`ImagePreprocessor` is saved inside every task's config (and so
inside every preset): ``predict``, ``fit`` on arrays, ``SegmentationLoader``
and the CLI all go through it, so a model is never fed one normalisation in
training and another at prediction time.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import keras
import numpy as np
from PIL import Image

from keras_sl.utils.checks import (
    check_finite_images,
    check_network_inputs,
    check_pixel_dtype,
)
from keras_sl.utils.layout import standardize_data_format
from keras_sl.utils.padding import pad_to_multiple

INTERPOLATIONS = {"bilinear": Image.BILINEAR, "nearest": Image.NEAREST, "bicubic": Image.BICUBIC}
#: How a model predicts an image: one pass of the (resized, padded) image, or sliding windows.
INFERENCE_MODES = ("resize", "window")


def _resize_plane(plane: np.ndarray, size_hw, resample) -> np.ndarray:
    """Resize one ``(H, W)`` plane with PIL: uint8 as 8-bit, anything else as float32."""
    h, w = size_hw
    if plane.dtype == np.uint8:
        return np.asarray(Image.fromarray(plane, mode="L").resize((w, h), resample))
    image = Image.fromarray(np.ascontiguousarray(plane, dtype="float32"), mode="F")
    return np.asarray(image.resize((w, h), resample))


def resize_image(image: np.ndarray, size_hw, interpolation: str = "bilinear") -> np.ndarray:
    """Resize a channels-last ``(H, W, C)`` image to ``size_hw``; the dtype is kept
    for uint8 (PIL's 8-bit arithmetic), float32 otherwise.

    Example:
    >>> resize_image(np.zeros((30, 40, 3), "uint8"), (15, 20)).shape
    (15, 20, 3)
    """
    h, w = (int(v) for v in size_hw)
    if tuple(image.shape[:2]) == (h, w):
        return image
    resample = INTERPOLATIONS[interpolation]
    if image.dtype == np.uint8 and image.shape[-1] == 3:  # one PIL call for RGB
        return np.asarray(Image.fromarray(image, mode="RGB").resize((w, h), resample))
    planes = [_resize_plane(image[..., c], (h, w), resample) for c in range(image.shape[-1])]
    return np.stack(planes, axis=-1)


@dataclasses.dataclass
class PreparedBatch:
    """Network-ready groups of images and what is needed to undo the preparation.

    ``groups`` is a list of ``(indices, batch)``: images that share a shape
    after resizing and padding run as one batch. ``sizes`` holds each input's
    spatial size, ``resized`` the size it had inside the network before
    padding (crop to it, then resize back to ``sizes``).
    """

    groups: list
    sizes: list
    resized: list
    was_list: bool

    @property
    def count(self) -> int:
        return len(self.sizes)


@keras.saving.register_keras_serializable(package="keras_sl")
class ImagePreprocessor:
    """Resize, scale, normalise and pad raw images for a network; undo it on outputs.

    The forward path of one image: resize to ``image_size`` (if set; PIL,
    ``interpolation``), then ``(x * scale - mean) / std`` per channel, then
    pad (``pad_mode``) the bottom/right to the network's stride multiple. The
    inverse crops the padding and resizes outputs back to the input's size
    (bilinear for probabilities and logits, nearest for label maps). uint8,
    integer and float images are all raw pixel values: ``scale`` applies to
    every dtype (bool images count as 0/1).

    :meth:`prepare` validates on the host before anything reaches a network:
    a non-pixel dtype (object, string, complex) raises a TypeError; NaN or
    Inf pixels, values beyond ±1e12 (or float32's range) after
    normalisation, or images of the wrong rank raise a ValueError naming the
    images (their index in the batch or list) — see :meth:`check`.

    Args:
        image_size: ``(H, W)`` the network was trained at, or None to keep each
            image's size (padded to the stride multiple).
        interpolation: ``"bilinear"`` (default), ``"bicubic"`` or ``"nearest"``.
        scale: multiplies the raw pixel values (``1/255`` for uint8 photos).
        mean, std: per-channel statistics subtracted / divided after scaling.
        pad_mode: NumPy pad mode used to reach the stride multiple (``"reflect"``).
        data_format: layout of the images, ``"channels_last"`` or ``"channels_first"``.
        inference: how ``predict`` and friends run an image: ``"resize"``
            (default: resize to ``image_size``, pad, one pass) or ``"window"``
            (no resize: normalise, then sliding windows of ``window_size``,
            :mod:`keras_sl.inference.sliding_window`). Tasks' ``predict(...,
            window=...)`` overrides it per call; training is unchanged.
        window_size: the window, an int or one int per axis, a multiple of the
            network's stride multiple (default: ``image_size``, the size the
            network was trained at).
        window_overlap: fraction of a window shared with its neighbour, ``[0, 1)``.
        window_blend: ``"constant"`` (mean of the windows) or ``"gaussian"``.
        window_sigma: the Gaussian's sigma as a fraction of the window (MONAI's 0.125).

    Example:
    >>> import numpy as np
    >>> pre = ImagePreprocessor(image_size=(32, 32), scale=1 / 255, mean=[0.5] * 3, std=[0.5] * 3)
    >>> batch = pre.prepare([np.zeros((40, 50, 3), "uint8"), np.zeros((20, 20, 3), "uint8")])
    >>> [b.shape for _, b in batch.groups]
    [(2, 32, 32, 3)]
    >>> [o.shape for o in pre.restore([np.zeros((32, 32, 1))] * 2, batch)]
    [(40, 50, 1), (20, 20, 1)]
    >>> ImagePreprocessor(image_size=(256, 256), inference="window", window_overlap=0.5).window_spec().size
    (256, 256)
    """

    def __init__(
        self,
        image_size: Sequence[int] | None = None,
        interpolation: str = "bilinear",
        scale: float = 1.0,
        mean: Sequence[float] | float | None = None,
        std: Sequence[float] | float | None = None,
        pad_mode: str = "reflect",
        data_format: str | None = None,
        inference: str = "resize",
        window_size: int | Sequence[int] | None = None,
        window_overlap: float = 0.25,
        window_blend: str = "constant",
        window_sigma: float = 0.125,
    ):
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {interpolation!r}.")
        self.image_size = None if image_size is None else tuple(int(v) for v in image_size)
        if self.image_size is not None and (len(self.image_size) != 2 or min(self.image_size) < 1):
            raise ValueError(f"image_size must be (height, width) with positive sizes, got {image_size!r}.")
        self.interpolation = interpolation
        self.scale = float(scale)
        self.mean = None if mean is None else [float(v) for v in np.atleast_1d(mean)]
        self.std = None if std is None else [float(v) for v in np.atleast_1d(std)]
        if self.std is not None and any(v == 0 for v in self.std):
            raise ValueError(f"std must not contain zeros, got {self.std}.")
        self.pad_mode = pad_mode
        self.data_format = standardize_data_format(data_format)
        self._init_inference(inference, window_size, window_overlap, window_blend, window_sigma)
        # Set by the task from its network (not saved: it is a property of the network).
        self.pad_multiple: tuple[int, ...] | None = None

    def _init_inference(self, inference, window_size, window_overlap, window_blend, window_sigma) -> None:
        from keras_sl.inference.sliding_window import _window_tuple, check_window_options

        if inference not in INFERENCE_MODES:
            raise ValueError(f"inference must be one of {INFERENCE_MODES}, got {inference!r}.")
        check_window_options(window_overlap, window_blend, window_sigma)
        self.inference = inference
        self.window_size = None if window_size is None else _window_tuple(window_size)
        if self.window_size is not None and len(self.window_size) == 1 and not isinstance(window_size, (list, tuple)):
            self.window_size = int(window_size)  # one int: the same on every axis
        self.window_overlap = float(window_overlap)
        self.window_blend = window_blend
        self.window_sigma = float(window_sigma)
        if inference == "window" and self.window_size is None and self.image_size is None:
            raise ValueError("inference='window' needs a window: pass window_size=(H, W) (a multiple of the "
                             "network's stride multiple), or image_size=(H, W) to use the training size.")

    def window_spec(self, window=None, batch_size: int | None = None):
        """The :class:`keras_sl.inference.WindowSpec` to predict with, or None to resize.

        ``window``: None follows :attr:`inference`; False resizes; True uses
        ``window_size`` (else ``image_size``); an int or ``(H, W)`` is that
        window with this preprocessor's overlap and blending; a ``WindowSpec``
        is taken as is. ``batch_size`` sets the windows per network call.

        Example:
        >>> ImagePreprocessor().window_spec(), ImagePreprocessor().window_spec((64, 96)).size
        (None, (64, 96))
        """
        import dataclasses

        from keras_sl.inference.sliding_window import WindowSpec

        if window is None:
            window = self.inference == "window"
        if window is False:
            return None
        if isinstance(window, WindowSpec):
            spec = window
        else:
            if window is True:
                size = self.window_size if self.window_size is not None else self.image_size
                if size is None:
                    raise ValueError("window=True needs the preprocessor's window_size or image_size; pass the "
                                     "window itself, e.g. window=(256, 256).")
            elif isinstance(window, str) or not isinstance(window, (int, np.integer, list, tuple)):
                raise ValueError(f"window must be None, True, False, an int, a tuple of ints or a WindowSpec, "
                                 f"got {window!r}.")
            else:
                size = window
            spec = WindowSpec(size, overlap=self.window_overlap, blend=self.window_blend, sigma=self.window_sigma)
        if batch_size is not None:
            spec = dataclasses.replace(spec, batch_size=batch_size)
        return spec

    def for_windows(self) -> ImagePreprocessor:
        """A copy that normalises only (no resize, no padding): what each image
        goes through before sliding-window inference."""
        config = {**self.get_config(), "image_size": None, "inference": "resize"}
        return type(self).from_config(config)

    # -- construction -------------------------------------------------------------
    @classmethod
    def from_normalization(cls, normalization: dict | None, image_size=None, **kwargs) -> "ImagePreprocessor":
        """From a ``{"scale", "mean", "std"}`` dict as stored in preset metadata."""
        spec = normalization or {}
        return cls(image_size=image_size, scale=spec.get("scale", 1.0), mean=spec.get("mean"),
                   std=spec.get("std"), **kwargs)

    @property
    def normalization(self) -> dict:
        """``{"scale", "mean", "std"}`` (the preset-metadata form)."""
        return {"scale": self.scale, "mean": self.mean, "std": self.std}

    @property
    def is_identity(self) -> bool:
        """True when the preprocessor only pads (no resize, no scaling)."""
        return (self.image_size is None and self.scale == 1.0 and not any(self.mean or [])
                and all(v == 1.0 for v in (self.std or [1.0])))

    # -- single steps -------------------------------------------------------------
    def normalize(self, images) -> np.ndarray:
        """``(images * scale - mean) / std`` as float32, channels per ``data_format``."""
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported by check_network_inputs
            return self._normalize(images)

    def _normalize(self, images) -> np.ndarray:
        x = np.asarray(images, dtype="float32")
        if self.scale != 1.0:
            x = x * np.float32(self.scale)
        if self.mean is None and self.std is None:
            return x
        shape = [1] * x.ndim
        axis = -1 if self.data_format == "channels_last" else (1 if x.ndim > 3 else 0)
        mean = np.asarray(self.mean if self.mean is not None else 0.0, dtype="float32")
        std = np.asarray(self.std if self.std is not None else 1.0, dtype="float32")
        if mean.size > 1 or std.size > 1:
            shape[axis] = max(mean.size, std.size)
            channels = x.shape[axis]
            if channels != shape[axis]:
                raise ValueError(
                    f"The preprocessor normalises {shape[axis]} channels (mean/std), but the images have "
                    f"{channels}; pass images with {shape[axis]} channels or a preprocessor built for yours."
                )
        return (x - mean.reshape(shape if mean.size > 1 else [1] * x.ndim)) / std.reshape(
            shape if std.size > 1 else [1] * x.ndim
        )

    def _to_last(self, image: np.ndarray) -> np.ndarray:
        return image if self.data_format == "channels_last" else np.moveaxis(image, 0, -1)

    def _from_last(self, image: np.ndarray) -> np.ndarray:
        return image if self.data_format == "channels_last" else np.moveaxis(image, -1, 0)

    def spatial_shape(self, image: np.ndarray) -> tuple[int, ...]:
        """Spatial size of one image (no batch axis)."""
        return tuple(image.shape[:-1] if self.data_format == "channels_last" else image.shape[1:])

    def resize(self, image: np.ndarray, size=None, interpolation: str | None = None) -> np.ndarray:
        """One image resized to ``size`` (default ``image_size``); 2-D images only."""
        size = self.image_size if size is None else tuple(size)
        if size is None or self.spatial_shape(image) == tuple(size):
            return image
        if image.ndim != 3:
            raise ValueError(
                f"Resizing needs 2-D images (H, W, C); got shape {image.shape}. Build the preprocessor "
                "with image_size=None to feed other ranks at their own size."
            )
        return self._from_last(resize_image(self._to_last(image), size, interpolation or self.interpolation))

    def resize_mask(self, mask: np.ndarray, size=None) -> np.ndarray:
        """A mask or label map resized with nearest-neighbour interpolation."""
        return self.resize(np.asarray(mask, dtype="float32"), size, interpolation="nearest")

    def prepare_pair(self, image: np.ndarray, mask: np.ndarray | None = None):
        """Training pair at the network's size (resized, not yet normalised)."""
        image = self.resize(np.asarray(image))
        return image, (None if mask is None else self.resize_mask(mask, self.spatial_shape(image)))

    # -- batches --------------------------------------------------------------------
    @staticmethod
    def split_images(images) -> tuple[list[np.ndarray], bool]:
        """A batch array or a list of images -> list of per-image arrays."""
        if isinstance(images, np.ndarray) or hasattr(images, "__array__") and not isinstance(images, (list, tuple)):
            batch = np.asarray(images)
            return list(batch), False
        if isinstance(images, (list, tuple)):
            return [np.asarray(img) for img in images], True
        raise TypeError(
            f"Expected a batch array (B, H, W, C) or a list of (H, W, C) images, got {type(images).__name__}."
        )

    @property
    def spatial_rank(self) -> int | None:
        """Spatial rank the images must have, when known (from the network's
        stride multiple, or 2 when resizing), else None."""
        if self.pad_multiple:
            return len(self.pad_multiple)
        return 2 if self.image_size is not None else None

    def check(self, images) -> None:
        """Validate raw images on the host: TypeError for a non-pixel dtype,
        ValueError for a wrong rank or NaN/Inf pixels, naming the images.

        ``images``: a batch array or a list of images (as :meth:`prepare` takes).
        """
        if not isinstance(images, (np.ndarray, list, tuple)):
            images = self.split_images(images)[0]  # a TypeError for what is no image data
        batch = isinstance(images, np.ndarray)
        items = images if batch else [np.asarray(image) for image in images]
        if batch:
            check_pixel_dtype(images.dtype, "The images")
        else:
            for i, image in enumerate(items):
                check_pixel_dtype(image.dtype, f"Image {i} of the list")
        rank = self.spatial_rank
        layout = "(H, W, C)" if self.data_format == "channels_last" else "(C, H, W)"
        if batch and images.ndim != (rank + 2 if rank else max(images.ndim, 3)):
            raise ValueError(
                f"Expected a batch of {rank or 'k'}-D images {layout[:1]}B, {layout[1:]}, got shape {images.shape}. "
                "Add a batch axis with x[None] for a single image, a channel axis with x[..., None] for grey "
                "images without one."
            )
        if not batch:
            for i, image in enumerate(items):
                if image.ndim != (rank + 1 if rank else max(image.ndim, 2)):
                    raise ValueError(
                        f"Image {i} of the list has shape {image.shape}; each list item must be one image "
                        f"{layout if rank in (None, 2) else f'with {rank} spatial axes and channels'}."
                    )
        check_finite_images(items)

    def prepare(self, images, check: bool = True) -> PreparedBatch:
        """Resize, normalise and pad raw images into network-ready batches.

        With ``check`` (default) the images are validated first (:meth:`check`)
        and the network-ready batches are checked to be finite.
        """
        if check:
            if isinstance(images, (list, tuple)):
                images = [np.asarray(image) for image in images]
            elif not isinstance(images, np.ndarray) and hasattr(images, "__array__"):
                images = np.asarray(images)
            self.check(images)
        if isinstance(images, np.ndarray) and images.ndim >= 3 and len(images) and (
                self.image_size is None or self.spatial_shape(images[0]) == self.image_size):
            # One batch that needs no resizing: normalise and pad it whole.
            size = self.spatial_shape(images[0])
            x = self.normalize(images)
            n = len(images)
            if check:
                check_network_inputs(x, images, list(range(n)))
            if self.pad_multiple:
                x, _ = pad_to_multiple(x, self.pad_multiple, self.data_format, mode=self.pad_mode)
            return PreparedBatch([(list(range(n)), x)], [size] * n, [size] * n, False)
        items, was_list = self.split_images(images)
        groups: dict[tuple, list] = {}
        sizes, resized = [], []
        for index, image in enumerate(items):
            sizes.append(self.spatial_shape(image))
            image = self.resize(image)
            resized.append(self.spatial_shape(image))
            x = self.normalize(image[None])
            if check:
                check_network_inputs(x, items, [index])
            if self.pad_multiple:
                x, _ = pad_to_multiple(x, self.pad_multiple, self.data_format, mode=self.pad_mode)
            groups.setdefault(x.shape, []).append((index, x))
        ordered = []
        for members in groups.values():
            ordered.append(([i for i, _ in members], np.concatenate([x for _, x in members], axis=0)))
        return PreparedBatch(ordered, sizes, resized, was_list)

    def restore_one(self, output: np.ndarray, index: int, prepared: PreparedBatch,
                    kind: str = "probabilities", lead_axes: int = 0) -> np.ndarray:
        """One image's output back to its input size.

        ``lead_axes`` counts axes before the spatial ones that are not the
        channel axis (1 for per-slice outputs ``(m, H, W, K)``). ``kind``:
        ``"probabilities"``/``"logits"`` (bilinear) or ``"labels"`` (nearest).
        """
        spatial = prepared.resized[index]
        rank = len(spatial)
        first = lead_axes if self.data_format == "channels_last" else lead_axes + 1
        crop = [slice(None)] * output.ndim
        for i, n in enumerate(spatial):
            crop[first + i] = slice(0, n)
        output = output[tuple(crop)]
        target = prepared.sizes[index]
        if tuple(spatial) == tuple(target):
            return output
        if rank != 2:
            raise ValueError("Resizing outputs back needs 2-D images.")
        interpolation = "nearest" if kind == "labels" else "bilinear"
        dtype = output.dtype
        if lead_axes:
            lead = output.shape[:lead_axes] if self.data_format == "channels_last" else output.shape[1:1 + lead_axes]
            if self.data_format == "channels_first":
                output = np.moveaxis(output, 0, lead_axes)  # channels after the lead axes
            flat = output.reshape((-1, *output.shape[lead_axes:]))
            back = np.stack([self.resize(np.asarray(o, "float32"), target, interpolation) for o in flat])
            back = back.reshape((*lead, *back.shape[1:]))
            if self.data_format == "channels_first":
                back = np.moveaxis(back, lead_axes, 0)
            return back.astype(dtype, copy=False)
        return self.resize(np.asarray(output, "float32"), target, interpolation).astype(dtype, copy=False)

    def restore(self, outputs, prepared: PreparedBatch, kind: str = "probabilities", lead_axes: int = 0):
        """Outputs (one per image, in input order) at each input's size: an
        array when all inputs came as one batch array, else a list."""
        back = [self.restore_one(np.asarray(o), i, prepared, kind, lead_axes) for i, o in enumerate(outputs)]
        if prepared.was_list:
            return back
        return np.stack(back) if back else np.zeros((0,), "float32")

    # -- serialization ------------------------------------------------------------
    def get_config(self) -> dict:
        return {
            "image_size": None if self.image_size is None else list(self.image_size),
            "interpolation": self.interpolation,
            "scale": self.scale,
            "mean": self.mean,
            "std": self.std,
            "pad_mode": self.pad_mode,
            "data_format": self.data_format,
            "inference": self.inference,
            "window_size": list(self.window_size) if isinstance(self.window_size, tuple) else self.window_size,
            "window_overlap": self.window_overlap,
            "window_blend": self.window_blend,
            "window_sigma": self.window_sigma,
        }

    @classmethod
    def from_config(cls, config: dict) -> "ImagePreprocessor":
        """From :meth:`get_config`; configs saved before the window options load with their defaults."""
        return cls(**config)

    def __eq__(self, other) -> bool:
        return isinstance(other, ImagePreprocessor) and self.get_config() == other.get_config()

    def __repr__(self) -> str:
        defaults = {"inference": "resize", "window_size": None, "window_overlap": 0.25, "window_blend": "constant",
                    "window_sigma": 0.125}
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k not in defaults or v != defaults[k])
        return f"ImagePreprocessor({args})"
