"""SliceSelection checks its model, loss and data when training begins, not after the last epoch."""

import keras
import numpy as np
import pytest

import keras_sl
from keras_sl.callbacks import SliceSelection
from keras_sl.losses import StructureLoss


class CountBatches(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches = 0

    def on_train_batch_begin(self, batch, logs=None):
        self.batches += 1


@pytest.fixture(scope="module")
def sl_model():
    model = keras_sl.SLUNet(levels=2, width=4, lift_depth=4, num_selected=2, input_shape=(16, 16, 3))
    model.compile()
    return model


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    x = rng.random((4, 16, 16, 3)).astype("float32")
    return x, (x[..., :1] > 0.5).astype("float32")


def fit_with(model, data, selection):
    counter = CountBatches()
    model.fit(*data, epochs=2, batch_size=2, verbose=0, callbacks=[counter, selection])
    return counter


def test_a_model_without_slices_fails_before_training(data):
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(1, 1)])
    model.compile("adam", keras.losses.BinaryCrossentropy(from_logits=True))
    counter = CountBatches()
    with pytest.raises(TypeError, match="Spatial Lifting model.*remove the callback"):
        model.fit(*data, epochs=2, verbose=0, callbacks=[counter, SliceSelection(data, verbose=0)])
    assert counter.batches == 0


@pytest.mark.parametrize("bad, error, message", [
    ("masks_0_255", ValueError, "binarise"),
    ("mask_size", ValueError, "per-slice losses"),
    ("num_selected", ValueError, "num_selected=3"),
    ("loss", TypeError, "SliceSupervision"),
])
def test_bad_selection_setup_fails_before_the_first_batch(sl_model, data, bad, error, message):
    x, y = data
    kwargs = {"verbose": 0}
    if bad == "masks_0_255":
        sel_data = (x, y * 255.0)
    elif bad == "mask_size":
        sel_data = [(x, y[:, :8, :8])]  # network-ready batches whose masks are not the images' size
    else:
        sel_data = data
    if bad == "num_selected":
        kwargs["num_selected"] = 3
    if bad == "loss":
        kwargs["loss"] = StructureLoss()  # no per-slice values
    counter = CountBatches()
    with pytest.raises(error, match=message):
        sl_model.fit(x, y, epochs=2, batch_size=2, verbose=0,
                     callbacks=[counter, SliceSelection(sel_data, **kwargs)])
    assert counter.batches == 0  # not after the last epoch


def test_good_setup_selects_after_training(sl_model, data):
    selection = SliceSelection(data, verbose=0)
    counter = fit_with(sl_model, data, selection)
    assert counter.batches == 4
    assert len(selection.history) == 1 and sl_model.slice_head.has_selection


def test_a_generator_is_not_read_before_training(sl_model, data):
    x, y = data
    prepared = sl_model.prepare_training_arrays(x, y)
    batches = iter([prepared])  # one-shot: the check must not use it up
    selection = SliceSelection(batches, verbose=0)
    fit_with(sl_model, data, selection)
    assert len(selection.history) == 1


def test_no_selection_after_a_non_finite_loss(sl_model, data, capsys):
    selection = SliceSelection(data, verbose=1)
    selection.set_model(sl_model)
    selection.on_train_end({"loss": float("nan")})
    assert selection.history == []
    assert "non-finite loss; no slices selected" in capsys.readouterr().out
