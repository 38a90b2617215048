"""Backend-agnostic input pipeline (``keras.utils.PyDataset``)."""

from __future__ import annotations

import math
from typing import Sequence

import keras
import numpy as np

from keras_sl.preprocessing.image_preprocessor import resize_image
from keras_sl.utils.checks import check_binary_mask, check_depth_target


def resize_pair(image: np.ndarray, mask: np.ndarray | None, size: tuple[int, int]):
    """Bilinear image, nearest-neighbour mask, to ``size = (H, W)`` (the
    preprocessor's resizing, :func:`keras_sl.preprocessing.image_preprocessor.resize_image`)."""
    image = resize_image(image, size)
    if mask is None:
        return image, None
    return image, resize_image(np.asarray(mask, dtype="float32"), size, "nearest")


def zoom_pair(image: np.ndarray, mask: np.ndarray, scale: float, size: tuple[int, int], rng):
    """Rescale by ``scale`` and bring back to ``size``: random crop when
    enlarged, reflect padding (mask: zeros) when shrunk."""
    h, w = size
    zh, zw = max(1, round(h * scale)), max(1, round(w * scale))
    image, mask = resize_pair(image, mask, (zh, zw))
    if scale > 1:
        top, left = int(rng.integers(0, zh - h + 1)), int(rng.integers(0, zw - w + 1))
        return image[top : top + h, left : left + w], mask[top : top + h, left : left + w]
    ph, pw = h - zh, w - zw
    top, left = int(rng.integers(0, ph + 1)), int(rng.integers(0, pw + 1))
    pads = ((top, ph - top), (left, pw - left))
    image = np.pad(image, pads + ((0, 0),), mode="reflect" if min(zh, zw) > max(ph, pw) else "edge")
    mask = np.pad(mask, pads + ((0, 0),))
    return image, mask


class SegmentationLoader(keras.utils.PyDataset):
    """Batches of ``(normalised images, masks)`` read from a keras_sl dataset.

    Images are resized and normalised by ``preprocessor`` — pass the model's
    (``model.preprocessor``; ``fit`` refuses a loader built with another), or
    ``image_size`` and ``normalization`` to build one.

    Decodes files on demand (``workers`` threads in parallel) — nothing
    requires the whole dataset in memory; ``cache=True`` keeps the decoded,
    resized pairs of small datasets. Training augmentation: random
    horizontal/vertical flips and, per batch, one of ``scales`` (the paper's
    multi-scale training, 0.75/1.0/1.25) applied as a zoom that keeps the
    batch shape (crop when enlarged, reflect-pad when shrunk): Keras' dataset
    adapters need one input shape per run. The sample order and every random
    draw are functions of ``(seed, epoch, batch index)`` (:meth:`batch`); for
    runs that must resume exactly, train on :class:`EpochStream` of the loader.

    Example::

        ds = keras_sl.datasets.KvasirSEG("data/kvasir-seg")
        train = SegmentationLoader(ds, ds.split("train"), batch_size=8,
                                   preprocessor=model.preprocessor, augment=True)
        model.fit(train, epochs=40)
    """

    def __init__(
        self,
        dataset,
        samples: Sequence,
        batch_size: int = 8,
        image_size: tuple[int, int] | None = (256, 256),
        normalization: dict | None = None,
        augment: bool = False,
        preprocessor=None,
        scales: Sequence[float] = (0.75, 1.0, 1.25),
        shuffle: bool | None = None,
        seed: int = 0,
        cache: bool = False,
        workers: int = 1,
        vertical_flips: bool = True,
        **kwargs,
    ):
        super().__init__(workers=workers, use_multiprocessing=False, **kwargs)
        if not samples:
            raise ValueError(f"No samples to load from {dataset!r}; check the dataset folder and split name.")
        self.dataset = dataset
        self.samples = list(samples)
        self.batch_size = int(batch_size)
        if preprocessor is None:
            from keras_sl.preprocessing import ImagePreprocessor

            preprocessor = ImagePreprocessor.from_normalization(normalization, image_size=image_size)
        #: The model's preprocessor (``model.preprocessor``): resizing and
        #: normalisation here are exactly those of ``model.predict``.
        self.preprocessor = preprocessor
        self.image_size = preprocessor.image_size
        self.normalization = preprocessor.normalization
        self.augment = augment
        self.vertical_flips = bool(vertical_flips)
        #: Depth targets (a dataset whose ``task`` is ``"depth"``): checked as depth maps, and a zoom by
        #: ``s`` divides them by ``s`` (the scene looks ``s`` times closer), as FastDepth's augmentation does.
        self.depth_targets = getattr(dataset, "task", None) == "depth"
        self.scales = tuple(scales) if augment else (1.0,)
        self.shuffle = augment if shuffle is None else shuffle
        self.seed = int(seed)
        self.epoch = 0
        self._cache = {} if cache else None
        self._order = self._make_order()

    def _make_order(self, epoch: int | None = None):
        idx = np.arange(len(self.samples))
        if self.shuffle:
            np.random.default_rng((self.seed, self.epoch if epoch is None else epoch)).shuffle(idx)
        return idx

    def __len__(self):
        return math.ceil(len(self.samples) / self.batch_size)

    def on_epoch_end(self):
        self.epoch += 1
        self._order = self._make_order()

    def _pair(self, i: int):
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        image, mask = self.dataset.load(self.samples[i])
        # The checks a task makes on arrays, made on every sample a loader feeds to fit.
        self.preprocessor.check([image])
        if self.depth_targets:
            check_depth_target([mask], f"Depth map of sample {self.samples[i]!r}")
        else:
            check_binary_mask([mask], f"Mask of sample {self.samples[i]!r}")
        image, mask = self.preprocessor.prepare_pair(image, mask)
        if self._cache is not None:
            self._cache[i] = (image, mask)
        return image, mask

    def __getitem__(self, index):
        return self.batch(self.epoch, index, self._order)

    def batch(self, epoch: int, index: int, order=None):
        """Batch ``index`` of epoch ``epoch``: a pure function of ``(seed,
        epoch, index)`` that leaves the loader's state alone (used by
        :class:`EpochStream`; ``loader[i]`` is ``loader.batch(loader.epoch, i)``)."""
        if not 0 <= index < len(self):
            raise IndexError(f"batch index {index} out of range for {len(self)} batches")
        rng = np.random.default_rng((self.seed, epoch, index))
        order = self._make_order(epoch) if order is None else order
        ids = order[index * self.batch_size : (index + 1) * self.batch_size]
        pairs = [self._pair(int(i)) for i in ids]
        scale = float(rng.choice(self.scales))
        if self.image_size and scale != 1.0:
            pairs = [zoom_pair(img, m, scale, self.image_size, rng) for img, m in pairs]
            if self.depth_targets:
                pairs = [(img, m / scale) for img, m in pairs]
        shapes = {p[0].shape for p in pairs}
        if len(shapes) > 1:
            raise ValueError(
                f"Images in a batch have different sizes {sorted(shapes)}; pass image_size=(H, W) "
                "to resize them, or batch_size=1."
            )
        x = np.stack([p[0] for p in pairs]).astype("float32")
        y = np.stack([p[1] for p in pairs]).astype("float32")
        if self.augment:
            flip_h = rng.random(len(x)) < 0.5
            flip_v = (rng.random(len(x)) < 0.5) & self.vertical_flips
            x[flip_h], y[flip_h] = x[flip_h, :, ::-1], y[flip_h, :, ::-1]
            x[flip_v], y[flip_v] = x[flip_v, ::-1], y[flip_v, ::-1]
        return self.preprocessor.normalize(x), y


class EpochStream(keras.utils.PyDataset):
    """The batches of every epoch of a :class:`SegmentationLoader` as one
    sequence, for ``fit(stream, epochs=epochs, steps_per_epoch=len(loader),
    shuffle=False)``: item ``i`` is ``loader.batch(start_epoch + i // n, i % n)``.

    Every item is a pure function of its index, so the batches do not depend
    on when Keras' data adapters fetch or prefetch them (Keras advances a
    loader's epoch in ``on_epoch_end``, which its adapters also call before
    training and around prefetched batches, differently on each backend).
    A run resumed at epoch ``k`` (``set_epoch(k)``, which
    :class:`keras_sl.callbacks.TrainingBackup` calls) draws exactly the
    batches an uninterrupted run draws from epoch ``k`` on. Batches are made
    in the calling thread (``workers=1``): Keras' worker queue can hand out
    batches made before an epoch change.

    Example::

        stream = EpochStream(train, epochs=40)
        model.fit(stream, epochs=40, steps_per_epoch=len(train), shuffle=False,
                  callbacks=[TrainingBackup("run/backup", state={"train_data": stream})])
    """

    def __init__(self, loader: SegmentationLoader, epochs: int):
        super().__init__(workers=1, use_multiprocessing=False)
        if epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {epochs}.")
        self.loader = loader
        self.epochs = int(epochs)
        self.start_epoch = 0
        #: the loader's preprocessor (``fit`` checks it is the model's)
        self.preprocessor = loader.preprocessor

    def __len__(self):
        return len(self.loader) * self.epochs

    def set_epoch(self, epoch: int) -> None:
        """Start the stream at epoch ``epoch`` (a resumed run)."""
        self.start_epoch = int(epoch)

    def __getitem__(self, index):
        epoch, batch = divmod(int(index), len(self.loader))
        return self.loader.batch(self.start_epoch + epoch, batch)

