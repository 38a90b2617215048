"""PatchLoader: random full-resolution crops (inside a field of view), deterministic per (seed, epoch, batch)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from keras_sl.data import IDENTITY
from keras_sl.data.normalization import IMAGENET
from keras_sl.datasets import DRIVE, PatchLoader
from keras_sl.datasets.pipeline import EpochStream
from keras_sl.preprocessing import ImagePreprocessor

H, W, P = 40, 44, 16


def _save(path: Path, array) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype="uint8")).save(path)


def write_drive(root: Path, n_train: int = 3, fov=None, red_is_mask: bool = False, seed: int = 0) -> Path:
    """A DRIVE layout of ``n_train`` training and 2 test images, H x W: random pixels, random vessel maps,
    field-of-view masks ``fov`` (default: all); ``red_is_mask``: channel 0 of each image is its mask * 255."""
    rng = np.random.default_rng(seed)
    fov = np.ones((H, W), bool) if fov is None else fov
    for part, nums in (("training", range(21, 21 + n_train)), ("test", (1, 2))):
        for n in nums:
            image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
            mask = (rng.random((H, W)) < 0.3).astype("uint8") * 255
            if red_is_mask:
                image[..., 0] = mask
            _save(root / part / "images" / f"{n:02d}_{part}.tif", image)
            _save(root / part / "1st_manual" / f"{n:02d}_manual1.gif", mask)
            _save(root / part / "mask" / f"{n:02d}_{part}_mask.gif", fov.astype("uint8") * 255)
    return root


def find_crop(full: np.ndarray, patch: np.ndarray) -> list[tuple[int, int]]:
    """Every (top, left) where ``patch`` equals a crop of ``full``."""
    ph, pw = patch.shape[:2]
    ky, kx = np.unravel_index(np.argmax(patch.reshape(ph, pw, -1).sum(-1)), (ph, pw))  # a distinctive pixel
    ys, xs = np.nonzero(np.all(full == patch[ky, kx], axis=-1))
    found = []
    for y, x in zip(ys - ky, xs - kx):
        if 0 <= y <= full.shape[0] - ph and 0 <= x <= full.shape[1] - pw:
            if np.array_equal(full[y : y + ph, x : x + pw], patch):
                found.append((int(y), int(x)))
    return found


def reachable_windows(fov: np.ndarray, ph: int, pw: int) -> tuple[np.ndarray, np.ndarray]:
    """(tops, lefts) of the windows centred on each FOV pixel, clamped into the image."""
    ys, xs = np.nonzero(fov)
    h, w = fov.shape
    return np.clip(ys - ph // 2, 0, h - ph), np.clip(xs - pw // 2, 0, w - pw)


def window_pre(norm=IMAGENET, size=P) -> ImagePreprocessor:
    return ImagePreprocessor.from_normalization(norm, inference="window", window_size=size)


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    return DRIVE(write_drive(tmp_path_factory.mktemp("drive")))


@pytest.fixture(scope="module")
def corner_drive(tmp_path_factory):
    """Fields of view covering only the top-left 10x10 corner: uniform positions would leave it."""
    fov = np.zeros((H, W), bool)
    fov[:10, :10] = True
    return DRIVE(write_drive(tmp_path_factory.mktemp("corner"), fov=fov, seed=1)), fov


def test_shapes_length_and_true_crops(drive):
    pre = window_pre()
    samples = drive.split("train")
    loader = PatchLoader(drive, samples, patch_size=P, patches_per_image=5, batch_size=4, preprocessor=pre)
    assert len(loader) == math.ceil(3 * 5 / 4) == 4
    full = {s.id: drive.load(s) for s in samples}
    normalised = {k: (pre.normalize(img[None])[0], m) for k, (img, m) in full.items()}
    per_image = np.zeros(len(samples), int)
    for i in range(len(loader)):
        x, y = loader.batch(0, i)
        n = 3 if i == 3 else 4
        assert x.shape == (n, P, P, 3) and y.shape == (n, P, P, 1)
        assert x.dtype == np.float32 and y.dtype == np.float32
        for xi, yi in zip(x, y):
            hits = [(k, pos) for k, (img, _) in normalised.items() for pos in find_crop(img, xi)]
            assert len(hits) == 1, hits  # a true crop of one normalised image
            k, (top, left) = hits[0]
            np.testing.assert_array_equal(yi, normalised[k][1][top : top + P, left : left + P])
            per_image[[s.id for s in samples].index(k)] += 1
    assert per_image.tolist() == [5, 5, 5]  # patches_per_image of every image per epoch
    # unnormalised values: IMAGENET undone gives the uint8 pixels
    x, _ = loader.batch(0, 0)
    back = np.round((x * np.array(IMAGENET["std"]) + np.array(IMAGENET["mean"])) * 255)
    assert any(find_crop(img.astype("float64"), back[0]) for img, _ in full.values())


def test_patches_are_centred_inside_the_field_of_view(corner_drive):
    ds, fov = corner_drive
    pre = window_pre(IDENTITY)
    loader = PatchLoader(ds, ds.split("train"), patch_size=P, patches_per_image=8, batch_size=8,
                         preprocessor=pre, inside="fov", seed=3)
    tops, lefts = reachable_windows(fov, P, P)
    images = [ds.load(s)[0].astype("float32") for s in ds.split("train")]
    positions = set()
    for i in range(len(loader)):
        for patch in loader.batch(0, i)[0]:
            hits = [pos for img in images for pos in find_crop(img, patch)]
            assert len(hits) == 1
            top, left = hits[0]
            assert np.any((tops == top) & (lefts == left)), (top, left)  # centred on an FOV pixel, clamped
            assert fov[top : top + P, left : left + P].any()
            positions.add((top, left))
    assert positions <= {(0, 0), (0, 1), (1, 0), (1, 1)}
    # anywhere (inside=None): positions spread over the image, so the check above can fail
    anywhere = PatchLoader(ds, ds.split("train"), patch_size=P, patches_per_image=8, batch_size=8,
                           preprocessor=pre, seed=3)
    spread = {find_crop(img, patch)[0] for i in range(len(anywhere)) for patch in anywhere.batch(0, i)[0]
              for img in images if find_crop(img, patch)}
    assert max(t for t, _ in spread) > 1 or max(v for _, v in spread) > 1


def test_batches_are_a_function_of_seed_epoch_and_index(drive):
    def make(augment, seed=0):
        return PatchLoader(drive, drive.split("train"), patch_size=P, patches_per_image=4, batch_size=4,
                           preprocessor=window_pre(), augment=augment, inside="fov", seed=seed)

    a, b = make(True), make(True)
    for epoch, index in ((0, 0), (2, 1), (5, 2)):
        np.testing.assert_array_equal(a.batch(epoch, index)[0], b.batch(epoch, index)[0])
        np.testing.assert_array_equal(a.batch(epoch, index)[1], b.batch(epoch, index)[1])
    assert not np.array_equal(a.batch(0, 0)[0], a.batch(1, 0)[0])  # augment: new patches each epoch
    assert not np.array_equal(a.batch(0, 0)[0], make(True, seed=1).batch(0, 0)[0])  # and per seed
    # loader[i] is batch(loader.epoch, i), and on_epoch_end moves to the next epoch
    np.testing.assert_array_equal(a[1][0], a.batch(0, 1)[0])
    a.on_epoch_end()
    np.testing.assert_array_equal(a[1][0], a.batch(1, 1)[0])
    fixed = make(False)
    for index in range(len(fixed)):  # no augmentation: the same patches in every epoch (slice selection)
        np.testing.assert_array_equal(fixed.batch(0, index)[0], fixed.batch(3, index)[0])
        np.testing.assert_array_equal(fixed.batch(0, index)[1], fixed.batch(3, index)[1])


def test_epoch_stream_resumes_exactly(drive):
    loader = PatchLoader(drive, drive.split("train"), patch_size=P, patches_per_image=4, batch_size=4,
                         preprocessor=window_pre(), augment=True, seed=7)
    stream = EpochStream(loader, epochs=4)
    n = len(loader)
    assert len(stream) == 4 * n
    uninterrupted = [stream[i][0] for i in range(2 * n, 3 * n)]
    resumed = EpochStream(PatchLoader(drive, drive.split("train"), patch_size=P, patches_per_image=4, batch_size=4,
                                      preprocessor=window_pre(), augment=True, seed=7), epochs=4)
    resumed.set_epoch(2)
    np.testing.assert_array_equal(resumed[0][0], loader.batch(2, 0)[0])
    np.testing.assert_array_equal(resumed[0][1], loader.batch(2, 0)[1])
    for i, x in enumerate(uninterrupted):
        np.testing.assert_array_equal(resumed[i][0], x)
    np.testing.assert_array_equal(resumed[n][0], loader.batch(3, 0)[0])
    assert not np.array_equal(resumed[0][0], stream[0][0])


def test_augmentation_turns_and_flips_image_and_mask_together(tmp_path):
    ds = DRIVE(write_drive(tmp_path, red_is_mask=True, seed=2))
    loader = PatchLoader(ds, ds.split("train"), patch_size=P, patches_per_image=8, batch_size=12,
                         preprocessor=window_pre(IDENTITY), augment=True, seed=0)
    images = [ds.load(s)[0].astype("float32") for s in ds.split("train")]
    transforms = set()
    for i in range(len(loader)):
        x, y = loader.batch(4, i)
        assert set(np.unique(y)) <= {0.0, 1.0}  # masks stay binary
        np.testing.assert_array_equal(x[..., 0], y[..., 0] * 255)  # image and mask moved together
        for patch in x:
            found = [(k, flip) for k in range(4) for flip in (False, True) for img in images
                     if find_crop(img, np.rot90(patch[:, ::-1] if flip else patch, -k))]
            assert found, "an augmented patch is no turned/flipped crop of a training image"
            transforms.add(found[0])
    assert len(transforms) > 2  # turns and flips happen
    # augment=False: plain crops
    plain = PatchLoader(ds, ds.split("train"), patch_size=P, patches_per_image=2, batch_size=6,
                        preprocessor=window_pre(IDENTITY))
    x, y = plain.batch(0, 0)
    assert all(any(find_crop(img, patch) for img in images) for patch in x)
    np.testing.assert_array_equal(x[..., 0], y[..., 0] * 255)


def test_errors_say_how_to_fix(drive):
    train = drive.split("train")
    resized = ImagePreprocessor.from_normalization(IMAGENET, image_size=(32, 32))
    with pytest.raises(ValueError, match="build it with image_size=None"):
        PatchLoader(drive, train, patch_size=P, preprocessor=resized)
    with pytest.raises(ValueError, match="patches_per_image must be at least 1"):
        PatchLoader(drive, train, patch_size=P, patches_per_image=0, preprocessor=window_pre())
    with pytest.raises(ValueError, match="patch_size must be a positive int"):
        PatchLoader(drive, train, patch_size=(16, 0), preprocessor=window_pre())
    big = PatchLoader(drive, train, patch_size=64, patches_per_image=1, batch_size=1, preprocessor=window_pre(size=64))
    with pytest.raises(ValueError, match=f"is {H}x{W}, smaller than the patch 64x64"):
        big.batch(0, 0)
    missing = PatchLoader(drive, train, patch_size=P, patches_per_image=1, batch_size=1, preprocessor=window_pre(),
                          inside="vessels")
    with pytest.raises(ValueError, match="no 'vessels' mask .* pass inside=None"):
        missing.batch(0, 0)
    with pytest.raises(IndexError, match="out of range"):
        missing.batch(0, len(missing))

