"""Random patches of full-resolution images, for models that predict by sliding windows."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from keras_sl.datasets.pipeline import SegmentationLoader


class PatchLoader(SegmentationLoader):
    """Batches of random ``patch_size`` crops of images kept at their own size.

    Large images (DRIVE's 565×584 fundus photographs, whole-slide tiles) are
    not resized to the network: the model is trained on patches at full
    resolution and predicts whole images by sliding windows of the same size
    (build its preprocessor with ``image_size=None, inference="window",
    window_size=patch_size``). An epoch draws ``patches_per_image`` patches of
    every image, images in a shuffled order; with ``augment`` each patch is
    also flipped and rotated by a multiple of 90° (square patches only).
    Positions are uniform over the image, or — with ``inside`` set to a
    sample's ``extra`` key, e.g. DRIVE's ``"fov"`` — centred on a pixel of that
    mask (field of view). Every draw is a function of ``(seed, epoch, batch
    index)``, so :class:`keras_sl.datasets.pipeline.EpochStream` resumes it
    exactly; ``augment=False`` gives the same patches in every epoch (the slice
    selection's data).

    Example::

        pre = ImagePreprocessor.from_normalization(IMAGENET, inference="window", window_size=96)
        model.preprocessor = pre
        ds = keras_sl.datasets.DRIVE("data/drive")
        train = PatchLoader(ds, ds.split("train"), patch_size=96, patches_per_image=64,
                            batch_size=16, preprocessor=pre, augment=True, inside="fov")
        model.fit(train, epochs=30)
    """

    def __init__(
        self,
        dataset,
        samples: Sequence,
        patch_size: int | Sequence[int] = 96,
        patches_per_image: int = 64,
        batch_size: int = 16,
        preprocessor=None,
        normalization: dict | None = None,
        augment: bool = False,
        inside: str | None = None,
        seed: int = 0,
        cache: bool = True,
        **kwargs,
    ):
        size = (int(patch_size),) * 2 if np.ndim(patch_size) == 0 else tuple(int(v) for v in patch_size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"patch_size must be a positive int or (height, width), got {patch_size!r}.")
        if int(patches_per_image) < 1:
            raise ValueError(f"patches_per_image must be at least 1, got {patches_per_image!r}.")
        if preprocessor is not None and preprocessor.image_size is not None:
            raise ValueError(
                f"PatchLoader crops images at their own size, but the preprocessor resizes them to "
                f"{preprocessor.image_size}; build it with image_size=None (and inference='window', "
                f"window_size={size}) so that predict runs windows of the training patch size.")
        self.patch_size = size
        self.patches_per_image = int(patches_per_image)
        self.inside = inside
        self._centres = {}
        super().__init__(dataset, samples, batch_size, image_size=None, normalization=normalization,
                         augment=augment, preprocessor=preprocessor, scales=(1.0,), shuffle=augment,
                         seed=seed, cache=cache, **kwargs)

    def __len__(self):
        return math.ceil(len(self.samples) * self.patches_per_image / self.batch_size)

    def _make_order(self, epoch: int | None = None):
        idx = np.repeat(np.arange(len(self.samples)), self.patches_per_image)
        if self.shuffle:
            np.random.default_rng((self.seed, self.epoch if epoch is None else epoch)).shuffle(idx)
        return idx

    def _allowed_centres(self, i: int, shape) -> np.ndarray | None:
        """Flat indices of the pixels a patch of sample ``i`` may be centred on (None: any)."""
        if self.inside is None:
            return None
        if i not in self._centres:
            mask = self.dataset.read_region(self.samples[i], self.inside)
            if mask is None:
                raise ValueError(f"Sample {self.samples[i].id!r} has no {self.inside!r} mask to sample patches "
                                 f"inside; pass inside=None to sample them anywhere.")
            if mask.shape != tuple(shape):
                raise ValueError(f"The {self.inside!r} mask of {self.samples[i].id!r} is {mask.shape}, "
                                 f"its image {tuple(shape)}.")
            self._centres[i] = np.flatnonzero(mask)
            if not self._centres[i].size:
                raise ValueError(f"The {self.inside!r} mask of {self.samples[i].id!r} is empty: no pixel to centre a "
                                 f"patch on; fix the mask, or pass inside=None to sample patches anywhere.")
        return self._centres[i]

    def _crop(self, i: int, rng):
        image, mask = self._pair(i)
        h, w = image.shape[:2]
        ph, pw = self.patch_size
        if h < ph or w < pw:
            raise ValueError(f"Sample {self.samples[i].id!r} is {h}x{w}, smaller than the patch {ph}x{pw}; pass a "
                             f"patch_size of at most {h}x{w} (train_segmentation: resolution).")
        centres = self._allowed_centres(i, (h, w))
        if centres is not None:
            cy, cx = divmod(int(centres[rng.integers(centres.size)]), w)
            top, left = min(max(cy - ph // 2, 0), h - ph), min(max(cx - pw // 2, 0), w - pw)
        else:
            top, left = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        return image[top : top + ph, left : left + pw], mask[top : top + ph, left : left + pw]

    def batch(self, epoch: int, index: int, order=None):
        """Batch ``index`` of epoch ``epoch`` (a pure function of ``(seed, epoch, index)``)."""
        if not 0 <= index < len(self):
            raise IndexError(f"batch index {index} out of range for {len(self)} batches")
        rng = np.random.default_rng((self.seed, epoch if self.augment else 0, index))
        order = self._make_order(epoch) if order is None else order
        ids = order[index * self.batch_size : (index + 1) * self.batch_size]
        pairs = [self._crop(int(i), rng) for i in ids]
        x = np.stack([p[0] for p in pairs]).astype("float32")
        y = np.stack([p[1] for p in pairs]).astype("float32")
        if self.augment:
            turns = rng.integers(0, 4, len(x)) if self.patch_size[0] == self.patch_size[1] else np.zeros(len(x), int)
            flips = rng.random(len(x)) < 0.5
            for k in range(len(x)):
                xi, yi = np.rot90(x[k], turns[k]), np.rot90(y[k], turns[k])
                if flips[k]:
                    xi, yi = xi[:, ::-1], yi[:, ::-1]
                x[k], y[k] = xi, yi
        return self.preprocessor.normalize(x), y
