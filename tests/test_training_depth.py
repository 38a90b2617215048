"""Depth training (keras_sl.training on a fake 7-Scenes sequence), step decay and evaluate_depth."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
from PIL import Image

import keras_sl
from keras_sl import registry
from keras_sl.utils.json_values import json_safe
from keras_sl.evaluation_depth import evaluate_depth
from keras_sl.presets import load_preset
from keras_sl.tasks.depth_estimator import DepthEstimator, SLDepthEstimator
from keras_sl.training import step_decay, train_segmentation

TINY_DEPTH, TINY_SEG = "test_tiny_sl_depth", "test_tiny_sl_seg"


def write_7scenes(folder: Path, frames: int = 15) -> Path:
    """A flat 7-Scenes sequence of 48x64 frames: colour jpgs, uint16 depth pngs in mm (0 = invalid)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[:48, :64]
    for i in range(frames):
        image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(image).save(folder / f"frame-{i:06d}.color.jpg")
        depth = (900 + 25 * rows + 10 * cols + 40 * i + rng.integers(0, 50, (48, 64))).astype(np.uint16)
        depth[:5, :12] = 0
        depth[rng.random((48, 64)) < 0.05] = 0
        Image.fromarray(depth).save(folder / f"frame-{i:06d}.depth.png")
    return folder


def write_kvasir(folder: Path, n: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / "images" / f"{i}.jpg")
        mask = np.zeros((32, 32), np.uint8)
        mask[8:20, 10:24] = 255
        Image.fromarray(mask).save(folder / "masks" / f"{i}.jpg")
    return folder


def _tiny_net(spatial_dims=3):
    shape = (4, None, None, 3) if spatial_dims == 3 else (None, None, 3)
    return keras_sl.UNet(spatial_dims, 3, 1, channels=(4, 4), strides=(2,), num_res_units=1, input_shape=shape)


@pytest.fixture(scope="module")
def tiny_models():
    """Two tiny registered models: an SL depth model and an SL segmenter (fast stand-ins for the zoo's)."""
    registry.register(TINY_DEPTH, lambda name, **kw: SLDepthEstimator(_tiny_net(), lift_depth=4, num_selected=2,
                                                                       name=name), replace=True)
    registry.register(TINY_SEG, lambda name, **kw: keras_sl.SLSegmenter(_tiny_net(), lift_depth=4, num_selected=2,
                                                                        name=name), replace=True)
    yield
    registry.unregister(TINY_DEPTH)
    registry.unregister(TINY_SEG)


# -- step decay ----------------------------------------------------------------------------------
def test_step_decay_boundaries_and_values():
    schedule = step_decay(1e-3, epochs=100, steps_per_epoch=3)
    assert list(schedule.boundaries) == [179, 254]
    np.testing.assert_allclose(schedule.values, [1e-3, 1e-4, 1e-5], rtol=1e-12)
    lr = {step: float(keras.ops.convert_to_numpy(schedule(step))) for step in (0, 179, 200, 254, 256, 299)}
    np.testing.assert_allclose([lr[0], lr[179], lr[200], lr[254], lr[256], lr[299]],
                               [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5], rtol=1e-6)
    # Few epochs: the boundaries never fall inside epoch 0 and collapse when they coincide.
    assert list(step_decay(1e-2, epochs=1, steps_per_epoch=4).boundaries) == [3]
    assert list(step_decay(1e-2, epochs=2, steps_per_epoch=4).boundaries) == [3, 7]


def test_step_decay_applies_from_the_first_step_after_60_percent():
    schedule = step_decay(1.0, epochs=100, steps_per_epoch=3)
    optimizer = keras.optimizers.SGD(learning_rate=schedule)
    v = keras.Variable([0.0])
    optimizer.build([v])
    optimizer.iterations.assign(180)  # 60 epochs of 3 steps done: the next step belongs to epoch 61
    assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(0.1)


# -- train_segmentation on depth ---------------------------------------------------------------------
def _check_depth_run(result, run_dir, preset_dir, data_dir, sl=True):
    """results.json, the preset and evaluate_depth agree; returns the loaded preset model."""
    assert result["task"] == "depth" and result["backend"] == keras.backend.backend()
    on_disk = json.loads((Path(run_dir) / "results.json").read_text())
    assert on_disk["task"] == "depth"
    test = on_disk["test"]
    for key in ("rmse", "mae", "abs_rel", "log10", "delta1", "delta2", "delta3"):
        assert math.isfinite(test[key]), (key, test)
    assert 0 <= test["delta1"] <= test["delta2"] <= test["delta3"] <= 1
    assert test["n"] == 3 and test["n_images"] == 3  # frames 12..14: the last 20 % of 15
    if sl:
        assert {"q_mean", "uncertainty_mean", "pqa_pearson", "pqa_spearman"} <= set(test)
        assert len(on_disk["selected_slices"]) == len(set(on_disk["selected_slices"]))

    meta = json.loads((Path(preset_dir) / "metadata.json").read_text())
    assert meta["task"] == "depth estimation"
    metrics = meta["metrics"]
    assert {"test_rmse", "test_abs_rel", "test_delta1", "test_delta2", "test_delta3"} <= set(metrics)

    model = load_preset(preset_dir)
    assert isinstance(model, SLDepthEstimator if sl else DepthEstimator)
    if sl:
        assert model.selected_slices == on_disk["selected_slices"]
        assert model.slice_head.quality_kind == "depth"
    ds = keras_sl.datasets.get("7scenes", data_dir)
    again = evaluate_depth(model, ds, ds.split("test"))
    for key, value in metrics.items():
        name = key.removeprefix("test_")
        # exactly; metadata is strict JSON, so a NaN (e.g. the correlation of a constant Q) is stored as null
        np.testing.assert_equal(json_safe(again[name]), value, err_msg=key)
    for key in ("rmse", "abs_rel", "delta1"):
        np.testing.assert_equal(again[key], test[key], err_msg=key)
    return model


def test_train_depth_model_fast(tmp_path, tiny_models):
    data = write_7scenes(tmp_path / "7scenes")
    run, preset = tmp_path / "run", tmp_path / "preset"
    result = train_segmentation("7scenes", str(data), str(run), model=TINY_DEPTH, resolution=(32, 32), epochs=1,
                                batch_size=4, preset_dir=str(preset), verbose=0)
    model = _check_depth_run(result, run, preset, data)
    assert model.preprocessor.image_size == (32, 32)
    assert len((run / "log.csv").read_text().strip().splitlines()) == 2  # header + 1 epoch
    # A rerun of the finished run returns its results without training.
    rerun = train_segmentation("7scenes", str(data), str(run), model=TINY_DEPTH, resolution=(32, 32), epochs=1,
                               batch_size=4, preset_dir=str(preset), verbose=0)
    assert json.dumps(rerun["test"]) == json.dumps(result["test"])


def test_model_and_dataset_tasks_must_agree(tmp_path, tiny_models):
    depth_data = write_7scenes(tmp_path / "7scenes", frames=5)
    with pytest.raises(ValueError, match="7scenes is a depth dataset but .* is a segmentation model"):
        train_segmentation("7scenes", str(depth_data), str(tmp_path / "a"), model=TINY_SEG, resolution=32,
                           epochs=1, batch_size=2, verbose=0)
    seg_data = write_kvasir(tmp_path / "kvasir")
    with pytest.raises(ValueError, match="kvasir is a segmentation dataset but .* is a depth model"):
        train_segmentation("kvasir", str(seg_data), str(tmp_path / "b"), model=TINY_DEPTH, resolution=32,
                           epochs=1, batch_size=2, verbose=0)
    assert not (tmp_path / "a" / "results.json").exists() and not (tmp_path / "b" / "results.json").exists()


@pytest.mark.slow
def test_train_effnetlite0_sl_fastdepth(tmp_path):
    data = write_7scenes(tmp_path / "7scenes")
    run, preset = tmp_path / "run", tmp_path / "preset"
    result = train_segmentation("7scenes", str(data), str(run), model="effnetlite0_sl_fastdepth",
                                pretrained_encoder=False, freeze_encoder=True, resolution=(32, 32), epochs=1,
                                batch_size=4, preset_dir=str(preset), verbose=0)
    assert result["model_name"] == "effnetlite0_sl_fastdepth" and result["freeze_encoder"] is True
    assert 0 < result["decoder_parameters"] < result["parameters"]
    model = _check_depth_run(result, run, preset, data)
    # The frozen encoder kept its initial weights (the run seeds with seed=0 before building).
    keras.utils.set_random_seed(0)
    fresh = registry.build("effnetlite0_sl_fastdepth", pretrained_encoder=False)
    for a, b in zip(fresh.backbone.encoder.get_weights(), model.backbone.encoder.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="is a depth model"):
        train_segmentation("kvasir", str(write_kvasir(tmp_path / "kvasir")), str(tmp_path / "b"),
                           model="effnetlite0_sl_fastdepth", pretrained_encoder=False, resolution=32, epochs=1,
                           verbose=0)


# -- evaluate_depth on stubs with known outputs --------------------------------------------------------
TARGETS = [
    np.array([[1.0, 2.0], [4.0, 0.0]]),  # the 0 is invalid
    np.full((2, 2), 2.0),
    np.full((2, 3), 1.0),
    np.zeros((2, 2)),  # no valid pixel: left out of the means
]
PREDICTIONS = [np.array([[1.0, 2.4], [3.0, 7.0]]), np.full((2, 2), 2.0), np.full((2, 3), 2.0), np.ones((2, 2))]
# Per image (hand-computed): rmse sqrt((0 + 0.16 + 1) / 3), 0, 1; abs_rel 0.15, 0, 1; delta1 2/3, 1, 0.
RMSE = [math.sqrt(1.16 / 3), 0.0, 1.0]
ABS_REL = [0.15, 0.0, 1.0]
DELTA1 = [2 / 3, 1.0, 0.0]


class _Stub:
    """Known depth maps per image (by the image's first pixel value), as a depth model returns them."""

    def __init__(self, q=None, uncertainty=None):
        self.q, self.unc = q, uncertainty

    def _depth(self, images):
        return [PREDICTIONS[int(im[0, 0, 0])][..., None].astype("float32") for im in images]

    def predict(self, images, batch_size=None, verbose=0):
        assert isinstance(images, list)
        return self._depth(images)


class _SLStub(_Stub):
    def predict_uncertainty(self, images, batch_size=None, verbose=0):
        depth = self._depth(images)
        idx = [int(im[0, 0, 0]) for im in images]
        return depth, [np.full_like(d, self.unc[i]) for d, i in zip(depth, idx)], np.array([self.q[i] for i in idx])


class _Dataset:
    def load(self, sample):
        i = int(sample.id)
        image = np.full(TARGETS[i].shape + (3,), i, np.uint8)
        return image, TARGETS[i][..., None].astype("float32")


SAMPLES = [SimpleNamespace(id=str(i)) for i in range(4)]


def test_evaluate_depth_hand_checked():
    result = evaluate_depth(_Stub(), _Dataset(), SAMPLES)
    assert result["n"] == 3 and result["n_images"] == 4
    np.testing.assert_allclose(result["rmse"], np.mean(RMSE), rtol=1e-6)
    np.testing.assert_allclose(result["abs_rel"], np.mean(ABS_REL), rtol=1e-6)
    np.testing.assert_allclose(result["delta1"], np.mean(DELTA1), rtol=1e-6)
    rows = result["per_image"]
    assert [r["id"] for r in rows] == ["0", "1", "2", "3"]
    assert [r["valid_pixels"] for r in rows] == [3, 4, 6, 0]
    np.testing.assert_allclose([r["rmse"] for r in rows[:3]], RMSE, rtol=1e-6)
    assert math.isnan(rows[3]["rmse"]) and all(r["q"] is None for r in rows)
    assert "pqa_pearson" not in result and "q_mean" not in result  # a 2-D model has no Q
    chunked = evaluate_depth(_Stub(), _Dataset(), SAMPLES, chunk=1)
    assert {k: v for k, v in chunked.items() if k != "per_image"} == {
        k: v for k, v in result.items() if k != "per_image"}


@pytest.mark.parametrize("q, sign", [([0.8, 0.95, 0.5, 0.9], -1), ([0.6, 0.1, 0.9, 0.2], 1)])
def test_evaluate_depth_pqa_correlation_sign(q, sign):
    unc = [0.1, 0.2, 0.3, 9.0]
    result = evaluate_depth(_SLStub(q, unc), _Dataset(), SAMPLES, keep_outputs=True)
    scored_q = q[:3]  # the image without a valid pixel is left out
    np.testing.assert_allclose(result["pqa_pearson"], np.corrcoef(scored_q, RMSE)[0, 1], rtol=1e-6)
    assert np.sign(result["pqa_pearson"]) == sign and np.sign(result["pqa_spearman"]) == sign
    np.testing.assert_allclose(result["pqa_pearson_delta1"], np.corrcoef(scored_q, DELTA1)[0, 1], rtol=1e-6)
    np.testing.assert_allclose(result["q_mean"], np.mean(scored_q), rtol=1e-6)
    np.testing.assert_allclose(result["uncertainty_mean"], 0.2, rtol=1e-6)  # over valid pixels of scored images
    assert [r["q"] for r in result["per_image"]] == pytest.approx(q)
    assert len(result["outputs"]) == 4
    image, target, depth, uncertainty = result["outputs"][0]
    assert image.shape == (2, 2, 3) and (image == 0).all()
    np.testing.assert_array_equal(target[..., 0], TARGETS[0])
    np.testing.assert_array_equal(depth[..., 0], PREDICTIONS[0].astype("float32"))
    np.testing.assert_array_equal(uncertainty, np.full((2, 2, 1), 0.1, "float32"))
