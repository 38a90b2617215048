"""Losses: StructureLoss (vs NumPy), DiceLoss, masked regression, SliceSupervision."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_sl import losses as sl_losses
from keras_sl.losses import (
    DiceLoss,
    MaskedDepthLoss,
    MaskedL1,
    MaskedMSE,
    SliceSupervision,
    StructureLoss,
    boundary_weights,
)


def np_(x):
    return np.asarray(ops.convert_to_numpy(x))


# ---------------------------------------------------------------------------
# NumPy references
# ---------------------------------------------------------------------------
def ref_avg_pool_include_pad(mask2d, k=31):
    """avg_pool2d(mask, k, stride 1, padding k//2), zeros counted: window sum / k**2."""
    p = k // 2
    padded = np.pad(mask2d.astype("float64"), p)
    integral = np.zeros((padded.shape[0] + 1, padded.shape[1] + 1))
    integral[1:, 1:] = padded.cumsum(0).cumsum(1)
    h, w = mask2d.shape
    out = np.empty((h, w))
    for i in range(h):
        for j in range(w):
            s = integral[i + k, j + k] - integral[i, j + k] - integral[i + k, j] + integral[i, j]
            out[i, j] = s / (k * k)
    return out


def ref_bce_with_logits(x, y):
    return np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))


def ref_structure_loss(mask, logits, weighted_bce=True):
    """Per-image WBCE + WIoU of (B, H, W, 1) arrays; returns (B,)."""
    out = []
    for m, x in zip(mask[..., 0].astype("float64"), logits[..., 0].astype("float64")):
        w = 1.0 + 5.0 * np.abs(ref_avg_pool_include_pad(m) - m)
        bce = ref_bce_with_logits(x, m)
        wbce = (w * bce).sum() / w.sum() if weighted_bce else bce.mean()
        p = 1.0 / (1.0 + np.exp(-x))
        inter = (p * m * w).sum()
        union = ((p + m) * w).sum()
        wiou = 1.0 - (inter + 1.0) / (union - inter + 1.0)
        out.append(wbce + wiou)
    return np.array(out)


@pytest.fixture
def mask_logits(rng):
    mask = np.zeros((2, 40, 40, 1), "float32")
    mask[0, 5:25, 8:30] = 1
    mask[1, 20:40, 0:15] = 1  # touches the border: zero padding matters
    mask[1, 3:9, 30:37] = 1
    noise = rng.random((2, 40, 40, 1)) < 0.05
    mask = np.where(noise, 1 - mask, mask).astype("float32")
    logits = (rng.normal(size=(2, 40, 40, 1)) * 3.0 + 2.0 * (2 * mask - 1)).astype("float32")
    return mask, logits


# ---------------------------------------------------------------------------
# StructureLoss
# ---------------------------------------------------------------------------
def test_boundary_weights_match_numpy(mask_logits):
    mask, _ = mask_logits
    w = np_(boundary_weights(mask))
    for b in range(2):
        ref = 1.0 + 5.0 * np.abs(ref_avg_pool_include_pad(mask[b, ..., 0]) - mask[b, ..., 0])
        np.testing.assert_allclose(w[b, ..., 0], ref, rtol=1e-5, atol=1e-5)
    # A full mask gets extra weight at the border only because padding counts as 0.
    full = np.ones((1, 40, 40, 1), "float32")
    wf = np_(boundary_weights(full))[0, ..., 0]
    assert wf[20, 20] == pytest.approx(1.0)
    assert wf[0, 0] == pytest.approx(1.0 + 5.0 * (1 - 16 * 16 / 961), rel=1e-5)


def test_structure_loss_matches_numpy(mask_logits):
    mask, logits = mask_logits
    ref = ref_structure_loss(mask, logits)
    per_image = np_(StructureLoss(reduction=None)(mask, logits))
    assert per_image.shape == (2,)
    np.testing.assert_allclose(per_image, ref, rtol=1e-5, atol=1e-6)
    # Default reduction: batch mean.
    assert float(np_(StructureLoss()(mask, logits))) == pytest.approx(ref.mean(), rel=1e-5)


def test_structure_loss_is_weighted_not_plain_mean_bce(mask_logits):
    mask, logits = mask_logits
    weighted = ref_structure_loss(mask, logits, weighted_bce=True)
    plain = ref_structure_loss(mask, logits, weighted_bce=False)
    value = np_(StructureLoss(reduction=None)(mask, logits))
    assert np.all(np.abs(weighted - plain) > 1e-3)  # the two variants really differ here
    np.testing.assert_allclose(value, weighted, rtol=1e-5)
    assert np.all(np.abs(value - plain) > 1e-3)


def test_structure_loss_perfect_and_wrong_predictions():
    y = np.zeros((1, 32, 32, 1), "float32")
    y[:, 8:24, 8:24] = 1
    good = float(np_(StructureLoss()(y, 20 * (2 * y - 1))))
    bad = float(np_(StructureLoss()(y, -20 * (2 * y - 1))))
    assert good < 0.01
    assert bad > 10.0


def test_structure_loss_config_and_alias():
    loss = StructureLoss(kernel_size=15, strength=2.0)
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, StructureLoss)
    assert (clone.kernel_size, clone.strength) == (15, 2.0)
    assert isinstance(sl_losses.get("structure"), StructureLoss)
    assert isinstance(sl_losses.get("dice"), DiceLoss)


# ---------------------------------------------------------------------------
# DiceLoss
# ---------------------------------------------------------------------------
def test_dice_loss_values():
    y = np.array([1, 1, 0, 0], "float32").reshape(1, 2, 2, 1)
    p = np.array([1, 0, 1, 0], "float32").reshape(1, 2, 2, 1)
    # inter 1, |p| + |y| = 4: 1 - (2 + 1) / (4 + 1) = 0.4
    assert float(np_(DiceLoss(activation=None)(y, p))) == pytest.approx(0.4, abs=1e-6)
    assert float(np_(DiceLoss(activation=None, smooth=0.0)(y, p))) == pytest.approx(0.5, abs=1e-6)
    assert float(np_(DiceLoss(activation=None)(y, y))) == pytest.approx(0.0, abs=1e-6)
    # Logits: sigmoid(+-30) is 0/1 to float precision.
    assert float(np_(DiceLoss()(y, 30 * (2 * p - 1)))) == pytest.approx(0.4, abs=1e-5)
    # Soft probabilities: inter = 0.5 + 0.25, |p| = 0.5 + 0.25 + 0.75 + 0 = 1.5
    soft = np.array([0.5, 0.25, 0.75, 0.0], "float32").reshape(1, 2, 2, 1)
    expected = 1 - (2 * 0.75 + 1) / (1.5 + 2 + 1)
    assert float(np_(DiceLoss(activation=None)(y, soft))) == pytest.approx(expected, abs=1e-6)


def test_dice_loss_per_image_and_softmax(rng):
    y = np.zeros((2, 3, 3, 2), "float32")
    labels = rng.integers(0, 2, size=(2, 3, 3))
    y[..., 0], y[..., 1] = labels == 0, labels == 1
    logits = rng.normal(size=(2, 3, 3, 2)).astype("float32")
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    inter = (probs * y).sum(axis=(1, 2))
    total = probs.sum(axis=(1, 2)) + y.sum(axis=(1, 2))
    ref = 1 - ((2 * inter + 1) / (total + 1)).mean(-1)
    got = np_(DiceLoss(activation="softmax", reduction=None)(y, logits))
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    with pytest.raises(ValueError, match="activation"):
        DiceLoss(activation="relu")


# ---------------------------------------------------------------------------
# Masked regression
# ---------------------------------------------------------------------------
def _depth_batch():
    y = np.array(
        [
            [[2.0, 0.0], [np.nan, 4.0]],  # two valid pixels
            [[0.0, 0.0], [np.nan, np.nan]],  # nothing valid
            [[1.0, 3.0], [5.0, 7.0]],  # all valid
        ],
        "float32",
    )[..., None]
    p = np.array(
        [
            [[3.0, 100.0], [-50.0, 1.0]],
            [[9.0, 9.0], [9.0, 9.0]],
            [[1.0, 1.0], [1.0, 1.0]],
        ],
        "float32",
    )[..., None]
    return y, p


def test_masked_mse_l1_exclude_invalid():
    y, p = _depth_batch()
    mse = np_(MaskedMSE(reduction=None)(y, p))
    l1 = np_(MaskedL1(reduction=None)(y, p))
    # image 0: errors 1 and -3; image 1: no valid pixel -> 0; image 2: 0, 2, 4, 6
    np.testing.assert_allclose(mse, [(1 + 9) / 2, 0.0, (0 + 4 + 16 + 36) / 4], rtol=1e-6)
    np.testing.assert_allclose(l1, [(1 + 3) / 2, 0.0, (0 + 2 + 4 + 6) / 4], rtol=1e-6)
    assert np.all(np.isfinite(mse)) and np.all(np.isfinite(l1))
    depth = np_(MaskedDepthLoss(reduction=None)(y, p))
    np.testing.assert_allclose(depth, mse + l1, rtol=1e-6)
    # Batch mean with the default reduction.
    assert float(np_(MaskedMSE()(y, p))) == pytest.approx(np.mean([5.0, 0.0, 14.0]), rel=1e-6)


def test_masked_losses_all_invalid_is_zero():
    y = np.zeros((1, 3, 3, 1), "float32")
    p = np.full((1, 3, 3, 1), 7.0, "float32")
    for loss in (MaskedMSE(), MaskedL1(), MaskedDepthLoss()):
        assert float(np_(loss(y, p))) == 0.0


def test_masked_loss_custom_invalid_value_and_config():
    y = np.array([[[[0.0], [-1.0]]]], "float32")
    p = np.array([[[[2.0], [5.0]]]], "float32")
    loss = MaskedMSE(invalid_value=-1.0)
    assert float(np_(loss(y, p))) == pytest.approx(4.0)  # 0 is a valid depth here
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, MaskedMSE) and clone.invalid_value == -1.0
    depth = keras.losses.deserialize(keras.losses.serialize(MaskedDepthLoss(invalid_value=-1.0)))
    assert isinstance(depth, MaskedDepthLoss)
    assert float(np_(depth(y, p))) == pytest.approx(4.0 + 2.0)


# ---------------------------------------------------------------------------
# SliceSupervision
# ---------------------------------------------------------------------------
@pytest.fixture
def slice_batch(rng):
    y = (rng.random((2, 8, 8, 1)) > 0.5).astype("float32")
    p = rng.normal(size=(2, 5, 8, 8, 1)).astype("float32") * 2.0
    p[:, 2] = 20 * (2 * y - 1)  # one near-perfect slice
    return y, p


def test_slice_supervision_per_slice(slice_batch):
    y, p = slice_batch
    loss = SliceSupervision(StructureLoss())
    per = np_(loss.per_slice(y, p))
    assert per.shape == (2, 5)
    inner = StructureLoss(reduction=None)
    for z in range(5):
        np.testing.assert_allclose(per[:, z], np_(inner(y, p[:, z])), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(per, np.stack([ref_structure_loss(y, p[:, z]) for z in range(5)], 1),
                               rtol=1e-4, atol=1e-5)
    assert per[:, 2].max() < per[:, [0, 1, 3, 4]].min()
    # call() is the mean over slices (eq. 4), then Keras' batch mean.
    np.testing.assert_allclose(np_(SliceSupervision(StructureLoss(), reduction=None)(y, p)), per.mean(1),
                               rtol=1e-5)
    assert float(np_(loss(y, p))) == pytest.approx(per.mean(), rel=1e-5)


def test_slice_supervision_with_dice_and_callable(slice_batch):
    y, p = slice_batch
    per = np_(SliceSupervision("dice").per_slice(y, p))
    for z in range(5):
        np.testing.assert_allclose(per[:, z], np_(DiceLoss(reduction=None)(y, p[:, z])), rtol=1e-5, atol=1e-6)

    def my_loss(t, q):  # per-pixel values: reduced to one value per image
        return ops.square(ops.sigmoid(q) - t)

    per2 = np_(SliceSupervision(my_loss).per_slice(y, p))
    sig = 1 / (1 + np.exp(-p.astype("float64")))
    np.testing.assert_allclose(per2, ((sig - y[:, None]) ** 2).mean(axis=(2, 3, 4)), rtol=1e-5, atol=1e-6)


def test_slice_supervision_channels_first(slice_batch):
    y, p = slice_batch
    per_last = np_(SliceSupervision(StructureLoss()).per_slice(y, p))
    y_cf = np.moveaxis(y, -1, 1)  # (B, K, H, W)
    p_cf = np.moveaxis(p, -1, 1)  # (B, K, m, H, W)
    loss_cf = SliceSupervision(StructureLoss(), data_format="channels_first")
    per_first = np_(loss_cf.per_slice(y_cf, p_cf))
    assert per_first.shape == (2, 5)
    np.testing.assert_allclose(per_first, per_last, rtol=1e-5, atol=1e-6)
    assert float(np_(loss_cf(y_cf, p_cf))) == pytest.approx(per_last.mean(), rel=1e-5)


def test_slice_supervision_channels_first_multichannel(rng):
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, size=(2, 4, 4))]  # (B, H, W, K) one-hot
    p = rng.normal(size=(2, 3, 4, 4, 3)).astype("float32")
    last = np_(SliceSupervision(DiceLoss(activation="softmax")).per_slice(y, p))
    first = np_(SliceSupervision(DiceLoss(activation="softmax"), data_format="channels_first").per_slice(
        np.moveaxis(y, -1, 1), np.moveaxis(p, -1, 1)))
    np.testing.assert_allclose(first, last, rtol=1e-5, atol=1e-6)


def test_slice_supervision_rank_error(slice_batch):
    y, p = slice_batch
    with pytest.raises(ValueError, match="one more axis"):
        SliceSupervision(StructureLoss()).per_slice(y, p[:, 0])
    with pytest.raises(ValueError, match="SL model"):
        SliceSupervision(StructureLoss())(y, p[:, 0])


def test_slice_supervision_rank_error_channels_first(slice_batch):
    y, p = slice_batch
    loss = SliceSupervision(StructureLoss(), data_format="channels_first")
    with pytest.raises(ValueError, match="one more axis"):
        loss.per_slice(np.moveaxis(y, -1, 1), np.moveaxis(p[:, 0], -1, 1))


def test_slice_supervision_serialization(slice_batch):
    y, p = slice_batch
    loss = SliceSupervision(StructureLoss(kernel_size=7, strength=3.0), data_format="channels_last")
    config = loss.get_config()
    assert config["data_format"] == "channels_last"
    clone = SliceSupervision.from_config(config)
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    for other in (clone, restored):
        assert isinstance(other, SliceSupervision)
        assert isinstance(other.loss, StructureLoss)
        assert (other.loss.kernel_size, other.loss.strength) == (7, 3.0)
        np.testing.assert_allclose(np_(other.per_slice(y, p)), np_(loss.per_slice(y, p)), rtol=1e-6)
    # The wrapped loss is made per-image (unreduced) whatever it was built with.
    assert restored.loss.reduction is None
    assert np_(restored.loss(y, p[:, 0])).shape == (2,)


def _logit_gradient(fn, p):
    """d sum(fn(p)) / dp on the current backend."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(lambda q: ops.sum(fn(q)))(ops.convert_to_tensor(p)))
    if backend == "tensorflow":
        import tensorflow as tf

        q = tf.constant(p)
        with tf.GradientTape() as tape:
            tape.watch(q)
            value = tf.reduce_sum(fn(q))
        return tape.gradient(value, q).numpy()
    import torch

    q = torch.tensor(p, requires_grad=True)
    torch.sum(fn(q)).backward()
    return q.grad.numpy()


@pytest.mark.parametrize("inner", ["structure", "dice", "softmax_dice"])
def test_slice_values_match_the_loss_on_each_slice_values_and_gradients(inner, rng):
    """SliceSupervision hands StructureLoss/DiceLoss the slices and the one
    target (target terms computed once); the same values and gradients as
    the generic path, which repeats the target per slice. Logits include
    exact zeros, where a relu/abs form of BCE has the wrong gradient."""
    channels = 3 if inner == "softmax_dice" else 2
    y = (rng.random((2, 12, 12, channels)) > 0.6).astype("float32")
    p = (rng.normal(size=(2, 4, 12, 12, channels)) * 3).astype("float32")
    p[:, :, :3, :3] = 0.0
    make = {"structure": lambda: StructureLoss(kernel_size=5), "dice": lambda: DiceLoss(),
            "softmax_dice": lambda: DiceLoss(activation="softmax")}[inner]
    fast = SliceSupervision(make())
    assert hasattr(fast.loss, "slice_values")
    plain_loss = make()

    def generic(t, q):  # a plain callable: SliceSupervision folds slices into the batch
        return plain_loss.call(t, q)

    slow = SliceSupervision(generic)
    np.testing.assert_allclose(np_(fast.per_slice(y, p)), np_(slow.per_slice(y, p)), rtol=1e-5, atol=1e-6)
    g_fast = _logit_gradient(lambda q: fast.per_slice(y, q), p)
    g_slow = _logit_gradient(lambda q: slow.per_slice(y, q), p)
    np.testing.assert_allclose(g_fast, g_slow, rtol=1e-4, atol=1e-7)
    if inner == "structure":
        np.testing.assert_allclose(g_fast, ref_structure_gradient(y, p, k=5), rtol=1e-4, atol=1e-7)


def ref_structure_gradient(y, p, k):
    """NumPy d(sum of per-slice StructureLoss)/d logits for y (B, H, W, C), p (B, m, H, W, C)."""
    grad = np.zeros(p.shape)
    channels = y.shape[-1]
    for b, s, c in np.ndindex(p.shape[0], p.shape[1], channels):
        m, x = y[b, ..., c].astype("float64"), p[b, s, ..., c].astype("float64")
        w = 1.0 + 5.0 * np.abs(ref_avg_pool_include_pad(m, k) - m)
        sig = 1.0 / (1.0 + np.exp(-x))
        inter, union = (sig * m * w).sum(), ((sig + m) * w).sum()
        den = union - inter + 1.0
        d_iou = -((w * m) * den - (inter + 1.0) * (w - w * m)) / den**2  # d wiou / d sig
        grad[b, s, ..., c] = (w * (sig - m) / w.sum() + d_iou * sig * (1.0 - sig)) / channels
    return grad


@pytest.mark.parametrize("op,path", [("pixel_sums", "channels_first_einsum"), ("bce_with_logits", "torch_bce_kernel")])
@pytest.mark.parametrize("per_slice", [False, True])
def test_structure_loss_fast_paths_have_the_reference_values_and_gradients(op, path, per_slice, rng):
    from fast_parity import assert_matches_reference

    y = (rng.random((2, 12, 12, 2)) > 0.6).astype("float32")
    p = (rng.normal(size=(2, 3, 12, 12, 2) if per_slice else (2, 12, 12, 2)) * 3).astype("float32")
    loss = StructureLoss(kernel_size=5)
    fn = (lambda q: loss.slice_values(y, q)) if per_slice else (lambda q: loss.call(y, q))
    assert_matches_reference(op, path, fn, [p], atol=1e-6, rtol=1e-5)
