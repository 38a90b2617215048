"""Tasks: raw images in, results at each input's size; the toy family of docs/."""

import re
from pathlib import Path

import numpy as np
import pytest

import keras_sl
from harness import run_task_tests

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"


def _raw(n, h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype="uint8")


def _small_sl(**kwargs):
    pre = keras_sl.ImagePreprocessor(image_size=(32, 32), scale=1 / 255, mean=[0.4] * 3, std=[0.2] * 3)
    return keras_sl.SLUNet(levels=3, lift_depth=4, num_selected=2, preprocessor=pre, **kwargs)


def test_docs_toy_family_runs():
    """The example in docs/adding_a_family.md runs as written."""
    text = (ROOT / "docs" / "adding_a_family.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    exec(compile(code, "docs/adding_a_family.md", "exec"), {})


def test_predict_takes_raw_images_of_any_size():
    model = _small_sl()
    images = _raw(3, 45, 37)
    probs = model.predict(images, verbose=0)
    assert probs.shape == (3, 45, 37, 1)
    # the preprocessor is applied: the same as feeding the normalised, resized image by hand
    pre = model.preprocessor
    x = pre.prepare(images).groups[0][1]
    manual = model.predict(x, verbose=0, preprocess=False)  # (3, 32, 32, 1) at the network size
    np.testing.assert_allclose(pre.restore(list(manual), pre.prepare(images)), probs, atol=1e-6)
    mixed = [images[0], images[1, :20, :33], images[2, :7, :40]]
    out, q = model.predict_quality(mixed, verbose=0)
    assert [o.shape for o in out] == [(45, 37, 1), (20, 33, 1), (7, 37, 1)] and len(q) == 3
    labels = model.segment(mixed, verbose=0)
    assert [lab.shape for lab in labels] == [(45, 37), (20, 33), (7, 37)]  # label maps
    slices = model.predict_slices(images[:1], verbose=0)
    assert slices.shape == (1, 4, 45, 37, 1)


def test_default_preprocessor_pads_only():
    model = keras_sl.SLUNet(levels=3, lift_depth=4, num_selected=2)
    x = np.random.default_rng(0).random((2, 30, 20, 3)).astype("float32")
    assert model.preprocessor.is_identity
    assert model.predict(x, verbose=0).shape == (2, 30, 20, 1)


def test_empty_batch_gives_empty_outputs_before_the_model_runs():
    model = _small_sl()
    assert model.predict(np.zeros((0, 32, 32, 3), "uint8"), verbose=0).shape == (0, 32, 32, 1)
    assert model.predict([], verbose=0) == []
    assert model.predict(_raw(1, 32, 32), verbose=0).shape == (1, 32, 32, 1)  # still usable


def test_fit_uses_the_preprocessor_and_refuses_a_foreign_loader(tmp_path):
    from keras_sl.datasets import SegmentationLoader

    model = _small_sl()
    model.compile()
    images = _raw(4, 40, 40)
    masks = (images[..., :1] > 127).astype("float32")
    history = model.fit(images, masks, epochs=1, batch_size=2, verbose=0)  # raw, resized to 32 inside
    assert np.isfinite(history.history["loss"][0])

    class Tiny:
        license = ""

        def load(self, sample):
            return images[sample], masks[sample]

    other = SegmentationLoader(Tiny(), [0, 1], batch_size=2, image_size=(32, 32), normalization=None)
    with pytest.raises(ValueError, match="preprocessor=model.preprocessor"):
        model.fit(other, epochs=1, verbose=0)
    same = SegmentationLoader(Tiny(), [0, 1], batch_size=2, preprocessor=model.preprocessor)
    model.fit(same, epochs=1, verbose=0)
    # slice selection on raw data goes through the same preprocessor: arrays, lists of any sizes, loaders
    from keras_sl.callbacks import slice_losses

    by_array = slice_losses(model, (images, masks))
    by_list = slice_losses(model, (list(images), list(masks)))
    by_loader = slice_losses(model, same)
    np.testing.assert_allclose(by_list, by_array, rtol=1e-5)
    assert by_loader.shape == (4,) and np.isfinite(by_loader).all()
    sizes = [images[0], images[1, :36, :30]]
    assert np.isfinite(slice_losses(model, (sizes, [masks[0], masks[1, :36, :30]]), batch_size=1)).all()


def test_plain_segmenter_is_the_2d_twin():
    net = keras_sl.UNet(2, 3, 1, channels=(4, 8), strides=(2,), num_res_units=1, name="backbone")
    model = keras_sl.Segmenter(net, preprocessor=keras_sl.ImagePreprocessor(scale=1 / 255))
    images = _raw(2, 30, 30)
    probs = model.predict(images, verbose=0)
    logits = model.predict_logits(images, verbose=0)
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits)), atol=1e-5)
    assert model.count_params() == net.count_params()


def test_sl_task_saving_round_trips(tmp_path):
    run_task_tests(_small_sl, _raw(2, 32, 32), tmp_path)


def test_generic_sl_segmenter_round_trips(tmp_path):
    def make():
        net = keras_sl.UNet(3, 3, 1, channels=(4, 4), strides=(2,), num_res_units=1,
                            input_shape=(4, None, None, 3), name="backbone")
        return keras_sl.SLSegmenter(net, lift_depth=4, num_selected=2,
                                    preprocessor=keras_sl.ImagePreprocessor(scale=1 / 255))
    run_task_tests(make, _raw(2, 16, 16), tmp_path)


def test_plain_task_round_trips(tmp_path):
    def make():
        net = keras_sl.UNet(2, 3, 1, channels=(4, 8), strides=(2,), num_res_units=1, name="backbone")
        return keras_sl.Segmenter(net, preprocessor=keras_sl.ImagePreprocessor(image_size=(16, 16), scale=1 / 255))
    run_task_tests(make, _raw(2, 20, 24), tmp_path)


@pytest.mark.slow
def test_sl_task_loads_on_every_backend(tmp_path):
    run_task_tests(_small_sl, _raw(2, 32, 32), tmp_path, cross_backend=True)


@pytest.mark.data
def test_kvasir_preset_on_raw_images_equals_the_cli_path():
    """``from_preset("kvasir").predict(img[None])`` on raw uint8 Kvasir-SEG test
    images at their native size scores what ``keras-sl evaluate`` scores."""
    if not (DATA / "kvasir-seg").is_dir():
        pytest.skip(f"needs Kvasir-SEG in {DATA / 'kvasir-seg'} (the shared data folder is absent)")
    from keras_sl.datasets import get
    from keras_sl.evaluation import evaluate_segmentation
    from keras_sl.metrics import dice_per_image

    ds = get("kvasir", DATA / "kvasir-seg")
    samples = ds.split("test")[:6]
    model = keras_sl.SLUNet.from_preset("kvasir")
    dice = []
    for sample in samples:
        image, mask = ds.load(sample)
        prob = model.predict(image[None], verbose=0)
        assert prob.shape[1:3] == image.shape[:2]
        dice.append(float(dice_per_image(mask[None], prob)[0]))
    result = evaluate_segmentation(model, ds, samples)
    np.testing.assert_allclose(dice, [r["dice"] for r in result["per_image"]], atol=2e-3)
    assert np.mean(dice) > 0.6
