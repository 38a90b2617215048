"""Validation at the door (issue 21): bad inputs give one clear error before the
model runs, with the same text on every backend; PQA never calls a non-finite
prediction good; the model stays usable after a refused call."""

import warnings

import keras
import numpy as np
import pytest
from PIL import Image

import keras_sl
from keras_sl import pqa
from keras_sl.datasets.base import Dataset
from keras_sl.selective import is_flagged

TINY = {"levels": 3, "lift_depth": 4, "num_selected": 2}
NAN_MESSAGE = (
    "NaN or Inf pixel values in image 1 (1 value) of 3. A non-finite pixel makes the whole prediction (and "
    "training) NaN; replace them, e.g. np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0), or leave those "
    "images out."
)


@pytest.fixture(scope="module")
def model():
    """One tiny model for the tests that leave its weights alone (refusals, predict)."""
    m = keras_sl.SLUNet(**TINY)
    m.compile()
    return m


def _data(n=3, size=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, size, size, 3)).astype("float32")
    y = (x[..., :1] > 0.5).astype("float32")
    return x, y


def _still_works(model, tmp_path):
    """Predicts, fits one step and saves after refused calls (JAX lost all three once).
    The fit takes (N, H, W) masks: the channel axis is added (it failed deep in the loss on TF)."""
    x, y = _data(2)
    assert model.predict(x, verbose=0).shape == (2, 16, 16, 1)
    history = model.fit(x, y[..., 0], epochs=1, batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    model.save(tmp_path / "after.keras")


# -- 1. empty batches ------------------------------------------------------------------
def test_empty_inputs_predict_empty_outputs_refuse_training_and_leave_the_model_usable(tmp_path):
    model = keras_sl.SLUNet(**TINY)
    model.compile()
    x, y = _data()
    # predict on an empty batch: correctly shaped empty outputs, the model never runs
    assert model.predict(x[:0], verbose=0).shape == (0, 16, 16, 1)
    probs, q = model.predict_quality(x[:0], verbose=0)
    assert probs.shape == (0, 16, 16, 1) and q.shape == (0,)
    assert model.predict_slices(x[:0], verbose=0).shape == (0, 4, 16, 16, 1)
    labels = model.segment(np.zeros((0, 20, 30, 3), "uint8"), verbose=0)
    assert labels.shape == (0, 20, 30) and labels.dtype == np.uint8
    assert model.predict([], verbose=0) == [] and model.segment([], verbose=0) == []
    assert model.predict_quality([], verbose=0) == ([], [])
    assert model.predict(keras.ops.convert_to_tensor(x[:0]), verbose=0).shape == (0, 16, 16, 1)
    with pytest.raises(ValueError, match="input channel"):  # an empty batch is still checked
        model.predict(np.zeros((0, 16, 16, 1), "float32"), verbose=0)
    # fit / evaluate without samples: a clear error
    calls = [
        lambda: model.fit(x[:0], y[:0], epochs=1, verbose=0),
        lambda: model.fit(x[:0], y[:0], epochs=1, verbose=0, preprocess=False),
        lambda: model.fit([], [], epochs=1, verbose=0),
        lambda: model.fit(keras.ops.convert_to_tensor(x[:0]), keras.ops.convert_to_tensor(y[:0]), verbose=0),
        lambda: model.evaluate(x[:0], y[:0], verbose=0),
        lambda: model.evaluate(x[:0], y[:0], verbose=0, preprocess=False),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"got no samples \(x is empty\)"):
            call()
    with pytest.raises(ValueError, match=r"fit got no samples \(validation_data is empty\)"):
        model.fit(x, y, validation_data=(x[:0], y[:0]), epochs=1, verbose=0)
    _still_works(model, tmp_path)


# -- 2. NaN / Inf pixels and NaN-aware PQA ------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixel_is_refused_naming_the_image(model, bad):
    x, y = _data()
    x[1, 3, 4, 2] = bad
    calls = [
        lambda: model.predict(x, verbose=0),
        lambda: model.predict_quality(list(x), verbose=0),
        lambda: model.predict_slices(x, verbose=0),
        lambda: model.segment(x, verbose=0),
        lambda: model.predict(x, verbose=0, preprocess=False),
        lambda: model.fit(x, y, epochs=1, verbose=0),
        lambda: model.fit(x, y, epochs=1, verbose=0, preprocess=False),
        lambda: model.evaluate(list(x), list(y), verbose=0),
    ]
    for call in calls:
        with pytest.raises(ValueError) as info:
            call()
        assert str(info.value) == NAN_MESSAGE  # the same text on every backend
    with pytest.raises(ValueError, match=r"image 1 \(1 value\) of 3"):
        model.fit(_data()[0], y, validation_data=(x, y), epochs=1, verbose=0)


def test_non_finite_pixel_of_a_resized_image_is_refused():
    pre = keras_sl.ImagePreprocessor(image_size=(8, 8), scale=1 / 255)
    model = keras_sl.SLUNet(**TINY, preprocessor=pre)
    image = np.zeros((40, 40, 3), "float64")
    image[0, 0, 0] = np.nan  # nearest-neighbour or bilinear downsampling could skip it
    with pytest.raises(ValueError, match=r"image 0 \(1 value\) of 1"):
        model.predict(image[None], verbose=0)
    with pytest.raises(ValueError, match=r"Pixel values reach inf after scaling.*image 0 \(192 values\) of 1"):
        model.predict(np.full((1, 8, 8, 3), 1e300), verbose=0)  # finite, but not in float32
    with pytest.raises(ValueError, match=r"reach 1e\+20 .*image 1 \(1 value\) of 2.*1/65535"):
        images = np.zeros((2, 8, 8, 3))
        images[1, 0, 0, 0] = 255e20
        model.predict(images, verbose=0)


def test_quality_of_non_finite_logits_is_nan():
    logits = np.ones((3, 4, 8, 8, 1), "float32")
    logits[1, 2, 3, 3, 0] = np.nan
    logits[2, 0, 0, 0, 0] = np.inf
    q = keras.ops.convert_to_numpy(pqa.quality(logits, [0, 1]))
    assert q[0] == pytest.approx(1.0) and np.isnan(q[1]) and np.isnan(q[2])
    first = np.moveaxis(logits, -1, 1)
    q_first = keras.ops.convert_to_numpy(pqa.quality(first, [0, 1], data_format="channels_first"))
    np.testing.assert_array_equal(np.isnan(q_first), [False, True, True])
    two = np.concatenate([logits, -logits], axis=-1)  # K = 2
    assert np.isnan(keras.ops.convert_to_numpy(pqa.quality(two, [0, 1]))[1:]).all()


def test_nan_weights_give_nan_quality_flagged_and_a_warning(model):
    x, _ = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # finite predictions do not warn
        assert np.isfinite(model.predict_quality(x, verbose=0)[1]).all()
    weights = model.get_weights()
    try:
        model.set_weights([np.full_like(w, np.nan) if w.dtype.kind == "f" else w for w in weights])
        with pytest.warns(RuntimeWarning, match=r"image\(s\) 0, 1, 2 are NaN or Inf"):
            _, q = model.predict_quality(x, verbose=0)
    finally:
        model.set_weights(weights)
    assert np.isnan(q).all()  # never Q = 1.0
    assert is_flagged(q, 0.8).all()  # the flag predict / the CLI use


def test_correlation_drops_non_finite_pairs_and_counts_them():
    q = [0.2, np.nan, 0.5, 0.9, 0.7, np.inf]
    dice = [0.1, 0.3, 0.6, 0.95, 0.6, 0.2]
    r = pqa.correlation(q, dice)
    clean = pqa.correlation([0.2, 0.5, 0.9, 0.7], [0.1, 0.6, 0.95, 0.6])
    assert r["n"] == 4 and r["n_dropped"] == 2 and clean["n_dropped"] == 0
    assert r["pearson_r"] == pytest.approx(clean["pearson_r"])
    all_nan = pqa.correlation([np.nan] * 4, [0.1, 0.2, 0.3, 0.4])  # a NaN-weight model
    assert all_nan["n"] == 0 and all_nan["n_dropped"] == 4 and np.isnan(all_nan["pearson_r"])


# -- 3. masks ---------------------------------------------------------------------------------
def test_nan_or_out_of_range_masks_are_refused_before_training(model):
    x, y = _data()
    before = [w.copy() for w in model.get_weights()]
    nan_mask = y.copy()
    nan_mask[2, 0, 0, 0] = np.nan
    for kwargs in ({}, {"preprocess": False}):
        with pytest.raises(ValueError, match=r"Training masks \(y\): NaN or Inf values in mask 2 \(1 value\) of 3"):
            model.fit(x, nan_mask, epochs=1, verbose=0, **kwargs)
    with pytest.raises(ValueError, match=r"mask 2 \(1 value\) of 3"):
        model.fit(list(x), list(nan_mask), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"mask 2"):
        model.evaluate(x, nan_mask, verbose=0)
    with pytest.raises(ValueError, match=r"values in \[0, 1\].*binarised"):
        model.fit(x, y * 255, epochs=1, verbose=0, preprocess=False)
    with pytest.raises(TypeError, match="not a pixel type"):
        model.fit(x, y.astype(complex), epochs=1, verbose=0)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)  # nothing ran


def test_mask_shapes_are_checked_and_hw_masks_accepted(model):
    x, y = _data()
    _, hw = model.prepare_training_arrays(list(x), list(y[..., 0]))  # (H, W) masks: channel axis added
    np.testing.assert_array_equal(hw, y)
    with pytest.raises(ValueError, match=r"Mask 0 has spatial size \(8, 16\) but its image has \(16, 16\)"):
        model.fit(x, y[:, :8], epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"spatial size \(8, 16\) but its image has \(16, 16\)"):
        model.fit(x, y[:, :8], epochs=1, verbose=0, preprocess=False)
    tall = np.zeros((1, 20, 12, 3), "float32")
    with pytest.raises(ValueError, match=r"transposed\? np.swapaxes"):
        model.fit(tall, np.zeros((1, 12, 20, 1), "float32"), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"has 2 channel\(s\).*takes 1 \(binary targets.*y\[\.\.\., :1\]"):
        model.fit(x, np.concatenate([y, y], axis=-1), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"has shape \(16, 16, 1, 1\)"):
        model.fit(x, y[..., None], epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"3 images and 2 masks"):
        model.fit(x, y[:2], epochs=1, verbose=0, preprocess=False)


def test_label_maps_for_a_multi_class_model_get_the_one_hot_hint():
    model = keras_sl.SLUNet(num_classes=3, **TINY)
    x, _ = _data(2)
    labels = np.random.default_rng(0).integers(0, 3, (2, 16, 16))
    with pytest.raises(ValueError, match=r"no channel axis.*to_categorical\(y, 3\)"):
        model.fit(x, labels, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"1 channel\(s\).*to_categorical\(y\[\.\.\., 0\], 3\)"):
        model.fit(x, labels[..., None], epochs=1, verbose=0)
    onehot = keras.utils.to_categorical(labels, 3).astype("float32")
    assert model.prepare_training_arrays(x, onehot)[1].shape == (2, 16, 16, 3)
    # with a sparse loss, label maps are the targets: (H, W) gets its channel axis, one-hot is refused
    model.compile(loss=keras_sl.losses.SliceSupervision(keras.losses.SparseCategoricalCrossentropy(from_logits=True)))
    np.testing.assert_array_equal(model.prepare_training_arrays(x, labels)[1], labels[..., None])
    with pytest.raises(ValueError, match="compiled loss is sparse"):
        model.prepare_training_arrays(x, onehot)
    for bad in (labels + 0.5, labels + 1):  # fractions, and label 3 of a 3-class model
        with pytest.raises(ValueError, match=r"label map 0 must hold integer class labels 0\.\.2"):
            model.prepare_training_arrays(x, bad)


# -- dtype, rank, layout ----------------------------------------------------------------------
def test_non_pixel_dtypes_raise_type_errors_naming_the_fix(model):
    x, _ = _data(2)
    ragged = np.empty(2, dtype=object)
    ragged[0], ragged[1] = x[0], x[1, :8]
    with pytest.raises(TypeError, match="object array holds Python objects.*list of"):
        model.predict(ragged, verbose=0)
    with pytest.raises(TypeError, match=r"Image 0 of the list: dtype <U5 is not a pixel type.*read the files"):
        model.predict(["a.png"], verbose=0)
    with pytest.raises(TypeError, match=r"complex128 is not a pixel type.*np.abs\(x\)"):
        model.predict(x.astype(complex), verbose=0)
    with pytest.raises(TypeError, match="not a pixel type"):
        model.fit(x.astype(object), np.zeros((2, 16, 16, 1)), verbose=0)


def test_rank_and_layout_errors_say_what_to_do(model):
    x, _ = _data(2)
    with pytest.raises(ValueError, match=r"got shape \(16, 16, 3\)\. Add a batch axis with x\[None\]"):
        model.predict(x[0], verbose=0)  # one image without its batch axis: refused, as documented
    with pytest.raises(ValueError, match=r"np.expand_dims\(x, -1\)"):
        model.predict(x[..., 0], verbose=0)  # a grey batch without channel axis
    with pytest.raises(ValueError, match=r"Image 1 of the list has shape \(16, 16\).*np.expand_dims\(image, -1\)"):
        model.predict([x[0], x[1, ..., 0]], verbose=0)
    with pytest.raises(ValueError, match=r"Image 1 of the list: .*3 input channel\(s\) but the input has 4"):
        model.predict([x[0], np.zeros((16, 16, 4))], verbose=0)
    with pytest.raises(ValueError, match=r"looks channels-first \(N, C, H, W\).*np.moveaxis\(x, 1, -1\)"):
        model.predict(np.moveaxis(x, -1, 1), verbose=0)
    with pytest.raises(ValueError, match=r"looks channels-first"):
        model.fit(np.moveaxis(x, -1, 1), np.zeros((2, 16, 16, 1)), verbose=0, preprocess=False)


# -- 4. 16-bit images ---------------------------------------------------------------------------
def test_16_bit_png_is_scaled_not_saturated(tmp_path):
    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "image.png")
    with Image.open(tmp_path / "image.png") as im:
        assert im.mode.startswith("I")  # PIL reads a 16-bit grey PNG as I;16 (or I)
    image = Dataset.read_image(tmp_path / "image.png")
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[..., 0], np.rint(ramp / 257.0).astype(np.uint8))
    assert image.min() == 0 and image.max() == 255 and 120 < image.mean() < 135  # not a white image
    labels = np.zeros((8, 8), np.uint16)
    labels[:2] = 1  # label maps with small values: foreground
    labels[6:, :4] = 40000
    Image.fromarray(labels).save(tmp_path / "mask.png")
    mask = Dataset.read_mask([tmp_path / "mask.png"])
    np.testing.assert_array_equal(mask[..., 0], (labels > 0).astype("float32"))
