"""keras_sl.UNet / SLUNet architecture: MONAI parameter counts and MONAI output parity."""

import numpy as np
import pytest
from keras import ops

import keras_sl
from keras_sl.interop import load_monai_state_dict
from keras_sl.models.sl_unet import lifted_strides

CH5 = (32, 64, 128, 256, 512)
CH8 = (32, 64, 128, 256, 512, 512, 512, 512)


def np_(x):
    return np.asarray(ops.convert_to_numpy(x))


# ---------------------------------------------------------------------------
# Parameter counts (MONAI's figures, hard-coded: no MONAI needed)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spatial_dims, channels, strides, num_res_units, expected",
    [
        (2, CH5, (2,) * 4, 1, 3352215),
        (2, CH5, (2,) * 4, 2, 6495868),
        (2, CH8, (2,) * 7, 1, 33012384),
        (2, CH8, (2,) * 7, 2, 43235464),
        (3, (8,) * 5, (2,) * 4, 1, 29537),
        (3, (8,) * 5, (2,) * 4, 2, 38222),
    ],
)
def test_unet_param_count_matches_monai(spatial_dims, channels, strides, num_res_units, expected):
    net = keras_sl.UNet(spatial_dims, 3, 1, channels, strides, num_res_units=num_res_units)
    assert net.count_params() == expected


@pytest.mark.parametrize("num_res_units, expected", [(1, 29537), (2, 38222)])
def test_slunet_param_count(num_res_units, expected):
    model = keras_sl.SLUNet(levels=5, num_res_units=num_res_units)
    assert model.count_params() == expected


def test_lifted_strides():
    assert lifted_strides(8, 16) == (2, 2, 2, 2, (1, 2, 2), (1, 2, 2), (1, 2, 2))
    assert lifted_strides(5, 16) == (2, 2, 2, 2)
    assert lifted_strides(3, 4) == (2, 2)
    assert lifted_strides(4, 2) == (2, (1, 2, 2), (1, 2, 2))
    assert lifted_strides(3, 4, rank=1) == (2, 2)
    assert lifted_strides(3, 1, rank=1) == ((1, 2), (1, 2))


def test_unet_output_shape_and_validation(rng):
    net = keras_sl.UNet(2, 3, 2, (4, 8, 16), (2, 2), num_res_units=1)
    y = np_(net(rng.normal(size=(2, 16, 12, 3)).astype("float32")))
    assert y.shape == (2, 16, 12, 2)
    assert net.stride_multiple == (4, 4)
    with pytest.raises(ValueError, match="multiple"):
        net(np.zeros((1, 18, 16, 3), "float32"))
    with pytest.raises(ValueError, match="input channel"):
        net(np.zeros((1, 16, 16, 1), "float32"))
    with pytest.raises(ValueError, match="len\\(strides\\)"):
        keras_sl.UNet(2, 3, 1, (4, 8, 16), (2,))


# ---------------------------------------------------------------------------
# MONAI parity
# ---------------------------------------------------------------------------
def _monai_unet(monai, torch, seed=0, **kwargs):
    torch.manual_seed(seed)
    net = monai.networks.nets.UNet(**kwargs)
    net.eval()
    return net


def _compare(monai, torch, spatial_dims, in_ch, out_ch, channels, strides, nru, spatial, data_format, seed):
    net = _monai_unet(
        monai, torch, seed=seed, spatial_dims=spatial_dims, in_channels=in_ch, out_channels=out_ch,
        channels=channels, strides=strides, num_res_units=nru,
    )
    model = keras_sl.UNet(
        spatial_dims, in_ch, out_ch, channels, strides, num_res_units=nru, data_format=data_format
    )
    assert model.count_params() == sum(p.numel() for p in net.parameters())
    load_monai_state_dict(model, net.state_dict())

    x = np.random.default_rng(seed).normal(size=(2, in_ch, *spatial)).astype("float32")  # torch layout
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    if data_format == "channels_last":
        y = np.moveaxis(np_(model(np.moveaxis(x, 1, -1))), -1, 1)
    else:
        y = np_(model(x))
    assert y.shape == expected.shape
    assert np.abs(expected).max() > 1e-3  # a non-trivial output
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("nru", [0, 1, 2])
def test_monai_parity_2d(monai_torch, nru, data_format):
    monai, torch = monai_torch
    _compare(monai, torch, 2, 3, 2, (4, 8, 16), (2, 2), nru, (16, 16), data_format, seed=nru)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_monai_parity_3d_anisotropic(monai_torch, data_format):
    monai, torch = monai_torch
    _compare(monai, torch, 3, 2, 1, (4, 8, 8), ((2, 2, 2), (1, 2, 2)), 1, (2, 8, 8), data_format, seed=3)


def test_monai_parity_slunet_backbone(monai_torch, rng):
    monai, torch = monai_torch
    model = keras_sl.SLUNet(levels=3, lift_depth=4, num_selected=2, num_res_units=1)
    net = _monai_unet(
        monai, torch, seed=5, spatial_dims=3, in_channels=3, out_channels=1, channels=(8, 8, 8),
        strides=lifted_strides(3, 4), num_res_units=1,
    )
    load_monai_state_dict(model, net.state_dict())
    x = rng.normal(size=(1, 16, 16, 3)).astype("float32")
    lifted = np.repeat(np.moveaxis(x, -1, 1)[:, :, None], 4, axis=2)  # (B, C, m, H, W)
    with torch.no_grad():
        expected = net(torch.from_numpy(lifted)).numpy()
    slices = model.predict_slices(x, verbose=0)
    np.testing.assert_allclose(np.moveaxis(slices, -1, 1), expected, rtol=0, atol=1e-4)


def test_monai_loader_shape_mismatch(monai_torch):
    monai, torch = monai_torch
    net = _monai_unet(monai, torch, spatial_dims=2, in_channels=3, out_channels=1, channels=(4, 8, 16),
                      strides=(2, 2), num_res_units=1)
    model = keras_sl.UNet(2, 3, 1, (4, 8, 32), (2, 2), num_res_units=1)
    with pytest.raises(ValueError, match="Shape mismatch"):
        load_monai_state_dict(model, net.state_dict())


def test_monai_loader_missing_key(monai_torch):
    monai, torch = monai_torch
    net = _monai_unet(monai, torch, spatial_dims=2, in_channels=3, out_channels=1, channels=(4, 8, 16),
                      strides=(2, 2), num_res_units=0)
    model = keras_sl.UNet(2, 3, 1, (4, 8, 16), (2, 2), num_res_units=1)
    with pytest.raises(ValueError, match="no entry"):
        load_monai_state_dict(model, net.state_dict())


def test_monai_loader_strict_unused_keys(monai_torch, rng):
    monai, torch = monai_torch
    net = _monai_unet(monai, torch, spatial_dims=2, in_channels=3, out_channels=1, channels=(4, 8, 16),
                      strides=(2, 2), num_res_units=1)
    state = dict(net.state_dict())
    state["extra.head.weight"] = torch.zeros(3)
    model = keras_sl.UNet(2, 3, 1, (4, 8, 16), (2, 2), num_res_units=1)
    with pytest.raises(ValueError, match="not used.*extra.head.weight"):
        load_monai_state_dict(model, state)
    # strict=False ignores the extra entry and still loads everything else.
    assert load_monai_state_dict(model, state, strict=False) is model
    x = rng.normal(size=(1, 3, 8, 8)).astype("float32")
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    y = np.moveaxis(np_(model(np.moveaxis(x, 1, -1))), -1, 1)
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-4)


def test_loader_rejects_other_models():
    import keras

    with pytest.raises(TypeError, match="keras_sl.UNet"):
        load_monai_state_dict(keras.Sequential([keras.layers.Dense(1)]), {})
