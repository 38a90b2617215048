"""Property-based tests of the door (issue 21): any image size, dtype, channel
count and value range either gives outputs of the expected shape and dtype
that are finite, or a clear ValueError/TypeError raised by keras_sl's own
checks (never a backend or NumPy traceback)."""

import math

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings
from hypothesis import strategies as st

import keras_sl
from keras_sl.preprocessing import ImagePreprocessor
from keras_sl.utils.checks import MAX_NETWORK_INPUT

SETTINGS = {"deadline": None, "derandomize": True, "database": None}
DTYPES = ["uint8", "uint16", "int8", "int32", "int64", "float16", "float32", "float64", "bool"]
SCALE, MEAN, STD = 1 / 255, 0.5, 0.25

# One tiny model per module; its preprocessor resizes every image to 8x8, so
# the network runs at one shape whatever the inputs' sizes.
MODEL = keras_sl.SLUNet(levels=3, lift_depth=4, num_selected=2, preprocessor=ImagePreprocessor(
    image_size=(8, 8), scale=SCALE, mean=[MEAN] * 3, std=[STD] * 3))


def _raised_by_keras_sl(error: BaseException) -> bool:
    tb = error.__traceback__
    last = ""
    while tb is not None:
        last, tb = tb.tb_frame.f_code.co_filename, tb.tb_next
    return "/keras_sl/" in last.replace("\\", "/")


@st.composite
def sizes(draw):
    """Any size from 1x1, odd ones, and very non-square ones."""
    if draw(st.booleans()):
        return draw(st.integers(1, 40)), draw(st.integers(1, 40))
    thin, long = draw(st.integers(1, 3)), draw(st.integers(60, 160))
    return (thin, long) if draw(st.booleans()) else (long, thin)


@st.composite
def images(draw, channels=(3, 3, 1, 2, 4, 5), with_non_finite=True):
    """``(image, has_non_finite)``: a raw (H, W, C) image of any dtype and value range."""
    h, w = draw(sizes())
    c = draw(st.sampled_from(channels))
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    shape = (h, w, c)
    if dtype.kind == "b":
        return rng.random(shape) > 0.5, False
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        lo, hi = draw(st.sampled_from([(info.min, info.max), (0, 1), (0, 255), (-1000, 1000)]))
        lo, hi = max(lo, info.min), min(hi, info.max)
        return rng.integers(lo, hi, size=shape, dtype=dtype, endpoint=True), False
    top = float(np.finfo(dtype).max) / 4
    magnitude = min(draw(st.sampled_from([1e-3, 1.0, 255.0, 65535.0, 1e6, 1e15, 1e30, 1e300])), top)
    low = -magnitude if draw(st.booleans()) else 0.0
    image = rng.uniform(low, magnitude, size=shape).astype(dtype)
    bad = with_non_finite and draw(st.booleans()) and draw(st.booleans())  # about one in four
    if bad:
        image[draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1)), draw(st.integers(0, c - 1))] = draw(
            st.sampled_from([np.nan, np.inf, -np.inf]))
    return image, bad


def _peak_after_normalisation(image) -> float:
    """Largest |(x * scale - mean) / std| (resizing with bilinear weights stays within the range)."""
    x = np.asarray(image, dtype="float64")
    return float(max(abs(x.max() * SCALE - MEAN), abs(x.min() * SCALE - MEAN)) / STD)


@settings(max_examples=25, **SETTINGS)
@given(images())
def test_predict_gives_finite_outputs_at_the_input_size_or_a_clear_error(case):
    image, has_non_finite = case
    h, w, c = image.shape
    too_large = not has_non_finite and (_peak_after_normalisation(image) > MAX_NETWORK_INPUT * 0.999
                                        or _peak_after_normalisation(image) * STD > 3e38)
    try:
        probs = MODEL.predict(image[None], verbose=0)
    except (ValueError, TypeError) as error:
        assert _raised_by_keras_sl(error), repr(error)
        message = str(error)
        if c != 3:
            assert "3 input channel(s) but the input has" in message
        elif has_non_finite:
            assert message.startswith("NaN or Inf pixel values in image 0 (1 value) of 1.")
        else:
            assert too_large and message.startswith("Pixel values reach"), message
        return
    assert c == 3 and not has_non_finite and not too_large
    assert probs.shape == (1, h, w, 1) and probs.dtype == np.float32
    assert np.isfinite(probs).all() and probs.min() >= 0 and probs.max() <= 1


@settings(max_examples=8, **SETTINGS)
@given(st.lists(images(channels=(3,), with_non_finite=False), min_size=2, max_size=2))
def test_lists_of_any_sizes_come_back_at_each_size_with_finite_quality(cases):
    batch = [image for image, _ in cases]
    if any(_peak_after_normalisation(image) > MAX_NETWORK_INPUT * 0.999 for image in batch):
        with pytest.raises(ValueError, match="Pixel values reach"):
            MODEL.predict_quality(batch, verbose=0)
        return
    probs, q = MODEL.predict_quality(batch, verbose=0)
    assert [p.shape for p in probs] == [(*image.shape[:2], 1) for image in batch]
    assert all(p.dtype == np.float32 and np.isfinite(p).all() for p in probs)
    assert len(q) == len(batch) and all(0.0 <= float(v) <= 1.0 for v in q)


@settings(max_examples=40, **SETTINGS)
@given(images(with_non_finite=False))
def test_padding_preprocessor_takes_any_size_and_restores_it(case):
    image, _ = case
    h, w, c = image.shape
    pre = ImagePreprocessor(scale=SCALE)
    pre.pad_multiple = (4, 4)
    try:
        prepared = pre.prepare(image[None])
    except ValueError as error:
        assert _raised_by_keras_sl(error) and str(error).startswith("Pixel values reach"), repr(error)
        assert float(np.abs(np.asarray(image, "float64")).max()) * SCALE > MAX_NETWORK_INPUT * 0.999
        return
    ((indices, x),) = prepared.groups
    assert indices == [0] and x.dtype == np.float32 and np.isfinite(x).all()
    assert x.shape == (1, math.ceil(h / 4) * 4, math.ceil(w / 4) * 4, c)
    back = pre.restore([np.zeros((*x.shape[1:3], 1), "float32")], prepared)
    assert back.shape == (1, h, w, 1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_predicts_at_tiny_odd_and_thin_sizes(dtype):
    """A sweep next to the random search: each dtype at 1x1, odd and 3x150."""
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    top = 1 if dtype == "bool" else (min(info.max, 255) if info else 255.0)
    batch = [(np.arange(h * w * 3).reshape(h, w, 3) % (top + 1)).astype(dtype) for h, w in ((1, 1), (17, 9), (3, 150))]
    probs = MODEL.predict(batch, verbose=0)
    assert [p.shape for p in probs] == [(1, 1, 1), (17, 9, 1), (3, 150, 1)]
    assert all(p.dtype == np.float32 and np.isfinite(p).all() for p in probs)


@pytest.mark.parametrize("bad", [
    np.zeros((1, 8, 8, 3), "complex64"),
    np.zeros((1, 8, 8, 3), object),
    np.array([["a", "b"]]),
    [np.zeros((8, 8, 3)), np.zeros((8, 8, 3), "complex128")],
    ["image.png"],
])
def test_non_pixel_dtypes_are_type_errors_before_the_model(bad):
    with pytest.raises(TypeError, match="is not a pixel type") as info:
        MODEL.predict(bad, verbose=0)
    assert _raised_by_keras_sl(info.value)
    with pytest.raises(TypeError, match="is not a pixel type"):
        MODEL.preprocessor.prepare(bad)
