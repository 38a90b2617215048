"""Bad input gets an error that says how to fix it."""

import numpy as np
import pytest

import keras_sl
from keras_sl.callbacks import SliceSelection

TINY = dict(levels=3, lift_depth=4, num_selected=2)


def test_wrong_channel_count():
    model = keras_sl.SLUNet(**TINY)
    with pytest.raises(ValueError, match=r"3 input channel\(s\) but the input has 1.*np.repeat"):
        model.predict(np.zeros((1, 32, 32, 1), "float32"), verbose=0)


def test_size_not_divisible_without_padding():
    model = keras_sl.SLUNet(**TINY)
    with pytest.raises(ValueError, match=r"multiple of its total stride \(4, 4\).*\(32, 32\)"):
        model.predict(np.zeros((1, 30, 31, 3), "float32"), verbose=0, pad=False)
    with pytest.raises(ValueError, match="multiple of its total stride"):
        model(np.zeros((1, 30, 32, 3), "float32"))


def test_unbatched_input():
    model = keras_sl.SLUNet(**TINY)
    with pytest.raises(ValueError, match=r"x\[None\]"):
        model.predict(np.zeros((32, 32, 3), "float32"), verbose=0)


def test_masks_in_0_255():
    model = keras_sl.SLUNet(**TINY)
    model.compile()
    x = np.zeros((2, 32, 32, 3), "float32")
    y = np.zeros((2, 32, 32, 1), "float32")
    y[:, :8] = 255
    with pytest.raises(ValueError, match="binarised"):
        model.fit(x, y, epochs=1, verbose=0)


def test_empty_selection_data():
    with pytest.raises(ValueError, match="empty"):
        SliceSelection((np.zeros((0, 32, 32, 3)), np.zeros((0, 32, 32, 1))))
    model = keras_sl.SLUNet(**TINY)
    sel = SliceSelection(iter([]), verbose=0)
    with pytest.raises(ValueError, match="no training samples"):
        sel.select(model)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="smaller than lift_depth"):
        keras_sl.SLUNet(lift_depth=4, num_selected=4)
    with pytest.raises(ValueError, match="len\\(strides\\)"):
        keras_sl.UNet(2, 3, 1, channels=(8, 16, 32), strides=(2,))
    model = keras_sl.SLUNet(**TINY)
    with pytest.raises(ValueError, match="distinct"):
        model.selected_slices = [1, 1]
