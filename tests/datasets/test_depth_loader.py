"""SegmentationLoader on a depth dataset (a tiny fake 7-Scenes sequence): metres, flips, zoom, target checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import keras_sl
from keras_sl.datasets import SegmentationLoader
from keras_sl.preprocessing.image_preprocessor import resize_image
from keras_sl.utils.checks import check_depth_target

H, W, FRAMES = 48, 64, 10


def raw_depth(frame: int) -> np.ndarray:
    """uint16 millimetres, different in every row, column and frame; 0 and 65535 = no measurement."""
    rows, cols = np.mgrid[:H, :W]
    mm = (800 + 37 * rows + 5 * cols + 11 * frame).astype(np.uint16)
    mm[:4, :10] = 0
    mm[H - 3 :, W - 5 :] = 0
    mm[20, 30] = 65535
    return mm


def write_7scenes(folder: Path, frames: int = FRAMES, h: int = H, w: int = W) -> Path:
    """A flat 7-Scenes sequence: frame-NNNNNN.color.jpg + frame-NNNNNN.depth.png (uint16 mm)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(frames):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"frame-{i:06d}.color.jpg")
        depth = raw_depth(i) if (h, w) == (H, W) else rng.integers(500, 4000, (h, w)).astype(np.uint16)
        if (h, w) != (H, W):
            depth[:3] = 0
        Image.fromarray(depth).save(folder / f"frame-{i:06d}.depth.png")
    return folder


def metres(frame: int) -> np.ndarray:
    mm = raw_depth(frame)
    return np.where(np.isin(mm, (0, 65535)), 0.0, mm / 1000.0).astype("float32")[..., None]


@pytest.fixture
def dataset(tmp_path):
    return keras_sl.datasets.get("7scenes", write_7scenes(tmp_path / "7scenes"))


def _all_batches(loader, epochs):
    for epoch in range(epochs):
        for index in range(len(loader)):
            x, y = loader.batch(epoch, index)
            yield from zip(x, y)


def test_targets_are_float_metres_with_zero_invalid(dataset):
    assert dataset.task == "depth"
    train, test = dataset.split("train"), dataset.split("test")
    assert [s.id for s in test] == ["frame-000008", "frame-000009"]  # the last 20 %: a contiguous block
    loader = SegmentationLoader(dataset, train, batch_size=4, image_size=(H, W))
    assert loader.depth_targets
    x, y = loader[0]
    assert x.shape == (4, H, W, 3) and y.shape == (4, H, W, 1) and y.dtype == np.float32
    for k in range(4):
        np.testing.assert_allclose(y[k], metres(k), rtol=1e-6, atol=0)
        assert (y[k] == 0).sum() == (metres(k) == 0).sum() == 40 + 15 + 1
    assert float(y.max()) < 4.0 and float(y[y > 0].min()) > 0.79  # metres, not millimetres

    small = SegmentationLoader(dataset, train, batch_size=4, image_size=(24, 32))  # resized: nearest only
    _, ys = small[0]
    assert ys.shape == (4, 24, 32, 1)
    for k in range(4):
        assert set(np.unique(ys[k])) <= set(np.unique(metres(k)))  # no value mixed with an invalid 0
        assert (ys[k] == 0).any()


def _orientations(a):
    return {"none": a, "horizontal": a[:, ::-1], "vertical": a[::-1], "both": a[::-1, ::-1]}


def test_no_vertical_flips_for_depth(dataset):
    originals = [metres(i) for i in range(8)]
    counts = {}
    for vertical in (False, True):
        loader = SegmentationLoader(dataset, dataset.split("train"), batch_size=4, image_size=(H, W),
                                    augment=True, scales=(1.0,), vertical_flips=vertical, seed=3)
        seen = {"none": 0, "horizontal": 0, "vertical": 0, "both": 0}
        for _, y in _all_batches(loader, epochs=6):
            found = [kind for o in originals for kind, a in _orientations(o).items() if np.array_equal(y, a)]
            assert len(found) == 1, "every target is one frame, maybe flipped"
            seen[found[0]] += 1
        counts[vertical] = seen
    assert counts[False]["vertical"] == counts[False]["both"] == 0, counts
    assert counts[False]["horizontal"] > 0 and counts[False]["none"] > 0, counts
    assert counts[True]["vertical"] + counts[True]["both"] > 0, counts  # the check above can fail


def _match_zoom(x, y, scale, images, depths):
    """``(frame, flipped, top, left)`` of the manual zoom of a frame that gives ``(x, y)``, or None.

    Manual zoom: resize the image bilinearly and the depth nearest to ``round(size * scale)``, divide the depth
    by ``scale``; crop (scale > 1) or zero-pad (scale < 1) back to ``(H, W)``."""
    zh, zw = round(H * scale), round(W * scale)
    for f, (image, depth) in enumerate(zip(images, depths)):
        big_d = resize_image(depth[..., None], (zh, zw), "nearest")[..., 0] / np.float32(scale)
        big_x = resize_image(image, (zh, zw)).astype("float32")
        for flipped in (False, True):
            d, im = (big_d[:, ::-1], big_x[:, ::-1]) if flipped else (big_d, big_x)
            for top in range(abs(zh - H) + 1):
                for left in range(abs(zw - W) + 1):
                    if scale > 1:
                        want_d = d[top : top + H, left : left + W]
                        want_x = im[top : top + H, left : left + W]
                        got_d, got_x = y, x
                    else:
                        got_d = y[top : top + zh, left : left + zw]
                        got_x = x[top : top + zh, left : left + zw]
                        want_d, want_x = d, im
                        outside = np.ones((H, W), bool)
                        outside[top : top + zh, left : left + zw] = False
                        if (y[outside] != 0).any():
                            continue
                    if np.allclose(got_d, want_d, rtol=1e-6, atol=0) and np.allclose(got_x, want_x, atol=1e-3):
                        return f, flipped, top, left
    return None


@pytest.mark.parametrize("scale", [1.25, 0.75])
def test_zoom_divides_depth_by_the_scale_and_keeps_invalid_zero(dataset, scale):
    train = dataset.split("train")
    images, depths = zip(*(dataset.load(s) for s in train))
    loader = SegmentationLoader(dataset, train, batch_size=4, image_size=(H, W), augment=True, scales=(scale,),
                                vertical_flips=False, seed=1)
    x, y = loader.batch(0, 0)
    for k in range(len(x)):
        match = _match_zoom(x[k], y[k, ..., 0], scale, images, [d[..., 0] for d in depths])
        assert match is not None, f"target {k} is not the manual zoom of a frame divided by {scale}"
        frame = match[0]
        valid = y[k][y[k] > 0]
        assert np.isin(np.round(valid * scale * 1000), np.round(depths[frame][depths[frame] > 0] * 1000)).all()
        assert (y[k] == 0).sum() > 0  # the invalid pixels stay exactly 0 (and padding, when shrunk, is 0)
    # Without the division, the check above fails: the loader's targets are not the plain zoom.
    assert _match_zoom(x[0], y[0, ..., 0] * scale, scale, images, [d[..., 0] for d in depths]) is None


@pytest.mark.parametrize("bad, message", [(-0.5, "negative depths"), (np.inf, "Inf values")])
def test_bad_depth_in_a_sample_names_the_sample(dataset, monkeypatch, bad, message):
    load = dataset.load

    def broken(sample):
        image, depth = load(sample)
        if sample.id == "frame-000002":
            depth = depth.copy()
            depth[10, 12] = bad
        return image, depth

    monkeypatch.setattr(dataset, "load", broken)
    loader = SegmentationLoader(dataset, dataset.split("train"), batch_size=4, image_size=(H, W))
    loader[1]  # frames 4..7: fine
    with pytest.raises(ValueError, match=f"frame-000002.*{message}"):
        loader[0]


def test_check_depth_target():
    good = np.stack([metres(0), metres(1)])
    check_depth_target(good)
    with_nan = good.copy()
    with_nan[1, 0, 0] = np.nan  # NaN marks a missing measurement, like 0
    check_depth_target(with_nan)
    bad = good.copy()
    bad[1, 3, 3] = -1.0
    with pytest.raises(ValueError, match=r"Depth maps of batch: negative depths in depth map 1"):
        check_depth_target(bad, "Depth maps of batch")
    bad[1, 3, 3] = np.inf
    with pytest.raises(ValueError, match=r"Inf values in depth map 1"):
        check_depth_target([good[0], bad[1]])
