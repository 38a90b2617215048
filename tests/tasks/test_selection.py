"""Slice selection (paper eqs. 6-7): select_slices, slice_losses and the SliceSelection callback."""

import numpy as np
import pytest
from keras import ops

import keras_sl
from keras_sl.callbacks import SliceSelection, select_slices, slice_losses
from keras_sl.losses import SliceSupervision, StructureLoss


def np_(x):
    return np.asarray(ops.convert_to_numpy(x))


# ---------------------------------------------------------------------------
# select_slices
# ---------------------------------------------------------------------------
def test_select_slices_basic():
    assert select_slices([0.5, 0.1, 0.3, 0.2], 2) == [1, 3]
    assert select_slices(np.array([0.9, 0.8, 0.1, 0.7, 0.2, 0.3]), 3) == [2, 4, 5]
    assert select_slices([0.4, 0.3], 1) == [1]
    # Ties are broken by index, and the result is sorted.
    assert select_slices([0.1, 0.1, 0.1, 0.0], 2) == [0, 3]
    with pytest.raises(ValueError, match="finite"):
        select_slices([0.1, np.nan, 0.3], 1)
    with pytest.raises(ValueError, match="finite"):
        select_slices([0.1, np.inf, 0.3], 1)


# ---------------------------------------------------------------------------
# Known-answer selection on a tiny SLUNet with crafted slice logits
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model():
    return keras_sl.SLUNet(levels=3, lift_depth=4, num_selected=2, input_shape=(32, 32, 3))


@pytest.fixture
def model(tiny_model):
    # Reset the selection state shared through the module-scoped model.
    tiny_model.slice_head.selected.assign(np.array([1, 2], "int32"))
    tiny_model.slice_head.slice_losses.assign(np.full((4,), np.nan, "float32"))
    return tiny_model


@pytest.fixture
def data(rng):
    x = rng.random((5, 32, 32, 3)).astype("float32")
    y = (x[..., :1] > 0.5).astype("float32")  # the mask is readable from the image
    return x, y


def crafted_slices(x, verbose=0, pad=False, **kwargs):
    """Slice logits (B, 4, H, W, 1): slices 1 and 3 match the mask, 0 and 2 do not."""
    m = (np.asarray(x)[..., :1] > 0.5).astype("float32")
    good = 10.0 * (2 * m - 1)
    slices = [
        -good,  # slice 0: inverted mask
        good,  # slice 1: right
        np.zeros_like(good),  # slice 2: undecided (p = 0.5 everywhere)
        8.0 * (2 * m - 1),  # slice 3: right, slightly less confident than slice 1
    ]
    return np.stack(slices, axis=1).astype("float32")


def test_slice_selection_known_answer(model, data, monkeypatch):
    calls = []

    def fake(x, **kwargs):
        calls.append(len(x))
        return crafted_slices(x, **kwargs)

    monkeypatch.setattr(model, "predict_slices", fake)
    x, y = data
    assert model.selected_slices == [1, 2]  # central default
    assert not model.slice_head.has_selection
    cb = SliceSelection((x, y), batch_size=2, verbose=0)
    chosen = cb.select(model)
    assert chosen == [1, 3]
    assert model.selected_slices == [1, 3]
    assert calls == [2, 2, 1]  # all 5 samples, in batches of 2
    losses = model.slice_losses
    assert losses.shape == (4,)
    assert model.slice_head.has_selection
    assert set(np.argsort(losses)[:2]) == {1, 3}
    assert losses[1] < losses[3] < losses[2] < losses[0]
    # The stored losses are the per-slice structure losses averaged over samples.
    ref = np_(SliceSupervision(StructureLoss()).per_slice(y, crafted_slices(x))).mean(0)
    np.testing.assert_allclose(losses, ref, rtol=1e-5)
    assert cb.history[-1]["selected"] == [1, 3]
    np.testing.assert_allclose(cb.history[-1]["slice_losses"], losses, rtol=1e-6)


def test_slice_selection_on_train_end_and_prints(model, data, monkeypatch, capsys):
    monkeypatch.setattr(model, "predict_slices", crafted_slices)
    cb = SliceSelection(data, verbose=1)
    cb.set_model(model)
    cb.on_epoch_end(0)  # every_epoch=False: no selection yet
    assert cb.history == []
    cb.on_train_end()
    assert model.selected_slices == [1, 3]
    assert "selected slices [1, 3]" in capsys.readouterr().out


def test_slice_selection_real_model_matches_per_slice_loss(model, data):
    """Without mocking: the losses come from the model's own slice logits."""
    x, y = data
    x, y = x[:2], y[:2]
    losses = slice_losses(model, (x, y), batch_size=2)
    logits = model.predict_slices(x, verbose=0, pad=False)
    assert logits.shape == (2, 4, 32, 32, 1)
    ref = np_(SliceSupervision(StructureLoss()).per_slice(y, logits)).mean(0)
    np.testing.assert_allclose(losses, ref, rtol=1e-4)
    chosen = SliceSelection((x, y), verbose=0).select(model)
    np.testing.assert_allclose(model.slice_losses, ref, rtol=1e-4)
    assert chosen == select_slices(model.slice_losses, 2)
    assert model.selected_slices == chosen
    assert set(chosen) == set(np.argsort(model.slice_losses, kind="stable")[:2].tolist())


def test_slice_losses_accepts_iterables(model, data, monkeypatch):
    monkeypatch.setattr(model, "predict_slices", crafted_slices)
    x, y = data
    from_arrays = slice_losses(model, (x, y), batch_size=5)
    from_generator = slice_losses(model, ((x[i : i + 2], y[i : i + 2]) for i in range(0, 5, 2)))
    np.testing.assert_allclose(from_generator, from_arrays, rtol=1e-6)


def test_empty_data_raises(model):
    empty_x = np.zeros((0, 32, 32, 3), "float32")
    empty_y = np.zeros((0, 32, 32, 1), "float32")
    with pytest.raises(ValueError, match="training data.*empty"):
        SliceSelection((empty_x, empty_y))
    with pytest.raises(ValueError, match="training data"):
        SliceSelection(None)
    with pytest.raises(ValueError, match="no training samples"):
        slice_losses(model, iter([]))
    with pytest.raises(ValueError, match="no training samples"):
        SliceSelection(iter([]), verbose=0).select(model)


def test_masks_0_255_raise(model, data, monkeypatch):
    x, y = data
    monkeypatch.setattr(model, "predict_slices", crafted_slices)
    with pytest.raises(ValueError, match="binarise") as err:
        SliceSelection((x, y * 255.0), verbose=0).select(model)
    assert "255" in str(err.value)
    assert model.selected_slices == [1, 2]  # nothing changed


def test_num_selected_mismatch(model, data, monkeypatch):
    monkeypatch.setattr(model, "predict_slices", crafted_slices)
    with pytest.raises(ValueError, match="num_selected=3"):
        SliceSelection(data, num_selected=3, verbose=0).select(model)


def test_mismatched_lengths(model, data):
    x, y = data
    with pytest.raises(ValueError, match="different lengths"):
        slice_losses(model, (x, y[:3]))
