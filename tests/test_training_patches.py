"""Patch training at full resolution (train_segmentation(patches_per_image=...)) on a fake DRIVE layout:
window inference in the preset, field-of-view metrics in results, metadata and `keras-sl evaluate`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import keras_sl
from keras_sl import registry
from keras_sl.cli import main
from keras_sl.evaluation import evaluate_segmentation
from keras_sl.presets import load_preset
from keras_sl.training import train_segmentation
from keras_sl.utils.json_values import json_safe

TINY_SL, TINY_2D = "test_tiny_sl_patches", "test_tiny_unet_patches"
H, W = 40, 44
SIX = ("dice", "iou", "auc", "sensitivity", "specificity", "accuracy")


def _save(path: Path, array) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype="uint8")).save(path)


def write_drive(root: Path) -> Path:
    """3 training and 2 test images of H x W in DRIVE's layout: thin bright "vessels" on noise, a field of
    view that leaves out a 4-pixel border, and a second observer on the test set."""
    rng = np.random.default_rng(0)
    fov = np.zeros((H, W), "uint8")
    fov[4:-4, 4:-4] = 255
    for part, nums in (("training", (21, 22, 23)), ("test", (1, 2))):
        for n in nums:
            vessels = np.zeros((H, W), "uint8")
            vessels[rng.integers(0, H, 3), :] = 255
            vessels[:, rng.integers(0, W, 3)] = 255
            image = rng.integers(0, 120, (H, W, 3)).astype("uint8")
            image[vessels > 0] += 100
            _save(root / part / "images" / f"{n:02d}_{part}.tif", image)
            _save(root / part / "1st_manual" / f"{n:02d}_manual1.gif", vessels)
            _save(root / part / "mask" / f"{n:02d}_{part}_mask.gif", fov)
            if part == "test":
                _save(root / part / "2nd_manual" / f"{n:02d}_manual2.gif", np.roll(vessels, 1, axis=1))
    return root


def _tiny_net(spatial_dims: int):
    shape = (4, None, None, 3) if spatial_dims == 3 else (None, None, 3)
    return keras_sl.UNet(spatial_dims, 3, 1, channels=(4, 4), strides=(2,), num_res_units=1, input_shape=shape)


@pytest.fixture(scope="module")
def tiny_models():
    """A tiny registered SL segmenter and its 2-D twin (fast stand-ins for sl_unet_5l1r / unet_5l1r)."""
    registry.register(TINY_SL, lambda name, **kw: keras_sl.SLSegmenter(_tiny_net(3), lift_depth=4, num_selected=2,
                                                                       name=name), replace=True)
    registry.register(TINY_2D, lambda name, **kw: keras_sl.Segmenter(_tiny_net(2), name=name), replace=True)
    yield
    registry.unregister(TINY_SL)
    registry.unregister(TINY_2D)


@pytest.fixture(scope="module")
def drive_data(tmp_path_factory):
    return write_drive(tmp_path_factory.mktemp("drive"))


def _train(data, run, preset, model):
    return train_segmentation("drive", str(data), str(run), model=model, resolution=16, epochs=1, batch_size=4,
                              patches_per_image=4, preset_dir=str(preset), verbose=0)


@pytest.mark.parametrize("model", [TINY_SL, TINY_2D])
def test_patch_training_scores_inside_the_fov_with_windows(tmp_path, drive_data, tiny_models, model, monkeypatch):
    run, preset = tmp_path / "run", tmp_path / "preset"
    result = _train(drive_data, run, preset, model)
    test = result["test"]
    assert test["region"] == "fov" and test["n"] == 2
    for key in SIX:
        assert 0.0 <= test[key] <= 1.0, (key, test)
    assert set(test["pooled"]) == set(SIX)
    assert all(0.0 <= test["pooled"][k] <= 1.0 for k in SIX)
    rows = json.loads((run / "per_image.json").read_text())
    assert [r["id"] for r in rows] == ["test_01", "test_02"]
    for key in SIX:  # the top level holds the per-image means
        assert test[key] == pytest.approx(np.mean([r[key] for r in rows]), abs=1e-12)
    assert len((run / "log.csv").read_text().strip().splitlines()) == 2  # header + 1 epoch (3 steps)

    # The preset predicts by windows of the patch size.
    loaded = load_preset(preset)
    pre = loaded.preprocessor
    assert pre.image_size is None and pre.inference == "window"
    assert np.broadcast_to(pre.window_size, (2,)).tolist() == [16, 16]
    assert pre.window_overlap == 0.5 and pre.window_blend == "gaussian"
    meta = json.loads((preset / "metadata.json").read_text())
    assert "sliding windows" in meta["inference"] and "16x16" in meta["inference"]
    assert meta["split"] == "3 train / 2 test, the dataset's official split"
    assert "patches" in meta["training"]["augmentation"] and "fov" in meta["training"]["augmentation"]
    metrics = meta["metrics"]
    assert {"test_dice", "test_iou", "test_auc", "test_sensitivity", "test_specificity", "test_accuracy",
            "test_pooled", "test_region"} <= set(metrics)
    assert metrics["test_region"] == "fov"

    # A fresh evaluation of the loaded preset gives the metadata exactly.
    ds = keras_sl.datasets.get("drive", str(drive_data))
    again = evaluate_segmentation(load_preset(preset), ds, ds.split("test"))
    for key in ("dice", "iou", "auc", "sensitivity", "specificity", "accuracy", "pooled", "region"):
        np.testing.assert_equal(json_safe(again[key]), metrics[f"test_{key}"], err_msg=key)
        np.testing.assert_equal(json_safe(again[key]), test[key], err_msg=key)
    if model != TINY_SL:
        return  # the checks below are the same for both models (they take seconds)
    # ... and by windows: whole images at once score otherwise (so the check above can fail)
    whole = evaluate_segmentation(loaded, ds, ds.split("test"), window=False)
    assert whole["auc"] != again["auc"] or whole["pooled"]["auc"] != again["pooled"]["auc"]

    # A rerun returns the stored results without loading data or training.
    def refuse(*args, **kwargs):
        raise AssertionError("the finished run was trained again")

    monkeypatch.setattr("keras_sl.training.PatchLoader", refuse)
    monkeypatch.setattr("keras_sl.training.get_dataset", refuse)
    rerun = _train(drive_data, run, preset, model)
    assert json.dumps(rerun["test"]) == json.dumps(result["test"])
    # Other patch settings (or none) are another run: refused, not answered with these results.
    for other in (8, None):
        with pytest.raises(ValueError, match="patches_per_image"):
            train_segmentation("drive", str(drive_data), str(run), model=model, resolution=16, epochs=1,
                               batch_size=4, patches_per_image=other, preset_dir=str(preset), verbose=0)
    monkeypatch.undo()

    # keras-sl evaluate reproduces the metadata.
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--preset", str(preset), "--data", str(drive_data), "--split", "test",
                 "--json", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["region"] == "fov" and written["split"] == "test"
    for key in ("dice", "auc", "sensitivity", "specificity", "accuracy", "iou", "pooled"):
        np.testing.assert_equal(written[key], metrics[f"test_{key}"], err_msg=key)


@pytest.mark.data
def test_real_drive_layout():
    from keras_sl.data import IDENTITY
    from keras_sl.datasets import DRIVE, PatchLoader
    from keras_sl.preprocessing import ImagePreprocessor

    root = Path(__file__).resolve().parents[2] / "shared" / "data" / "drive"
    if not root.is_dir():
        pytest.skip(f"real data not found at {root} (../shared/data is only on development machines)")
    ds = DRIVE(root)
    train, test = ds.split("train"), ds.split("test")
    assert (len(train), len(test)) == (20, 20) and DRIVE.split_sizes == (20, 20)
    assert DRIVE.region_of_interest == "fov"
    assert all("fov" in s.extra and "second_observer" in s.extra for s in test)
    image, mask = ds.load(test[0])
    assert image.shape == (584, 565, 3) and mask.shape == (584, 565, 1)
    second = ds.read_mask([test[0].extra["second_observer"]])
    assert second.shape == mask.shape and 0 < second.sum() and not np.array_equal(second, mask)
    fov = ds.read_mask([test[0].extra["fov"]])[..., 0] > 0
    assert 0.5 < fov.mean() < 0.9  # a disc, not the whole image

    # Patches centred inside the FOV: the centre pixel of every patch not clamped at an image edge is a
    # field-of-view pixel. Each patch is found in its image by its pixels.
    size = 32
    pre = ImagePreprocessor.from_normalization(IDENTITY, inference="window", window_size=size)
    loader = PatchLoader(ds, train[:2], size, patches_per_image=4, batch_size=8, preprocessor=pre, inside="fov",
                         seed=1)
    x, _ = loader.batch(0, 0)
    assert x.shape == (8, size, size, 3)
    centres = 0
    for k, patch in enumerate(x):
        sample = train[k // 4]  # augment=False: the images in order
        full = ds.load(sample)[0].astype("float32")
        roi = ds.read_mask([sample.extra["fov"]])[..., 0] > 0
        hits = _find_crop(full, patch)
        assert hits, "a patch is no crop of its image"
        top, left = hits[0]
        if 0 < top < full.shape[0] - size and 0 < left < full.shape[1] - size:  # not clamped at an edge
            assert roi[top + size // 2, left + size // 2], (sample.id, top, left)
            centres += 1
    assert centres >= 4


def _find_crop(full: np.ndarray, patch: np.ndarray) -> list[tuple[int, int]]:
    """Every (top, left) where ``patch`` equals a crop of ``full`` (candidates: where its brightest pixel is)."""
    ph, pw = patch.shape[:2]
    ky, kx = np.unravel_index(np.argmax(patch.sum(-1)), (ph, pw))
    ys, xs = np.nonzero(np.all(full == patch[ky, kx], axis=-1))
    return [(int(y), int(x)) for y, x in zip(ys - ky, xs - kx)
            if 0 <= y <= full.shape[0] - ph and 0 <= x <= full.shape[1] - pw
            and np.array_equal(full[y : y + ph, x : x + pw], patch)]
