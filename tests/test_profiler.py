"""Parameter and MAC counts reproduce the paper's Table II (thop rules)."""

import keras
import pytest

import keras_sl
from keras_sl import registry
from keras_sl.profiler import format_table_ii, table_ii

# (model, levels, num_res_units) -> (GMACs at 512x512 rounded to 4 decimals, params)
EXPECTED = {
    ("unet", 5, 1): (13.7245, 3352215),
    ("unet", 5, 2): (18.5698, 6495868),
    ("unet", 8, 1): (17.4800, 33012384),
    ("unet", 8, 2): (20.7387, 43235464),
    ("sl_unet", 5, 1): (6.0206, 29537),
    ("sl_unet", 5, 2): (7.0719, 38222),
}


@pytest.fixture(scope="module")
def rows():
    return table_ii(512)


def _row(rows, model, levels, res):
    [row] = [r for r in rows if (r["model"], r["levels"], r["num_res_units"]) == (model, levels, res)]
    return row


def test_table_ii_has_all_rows(rows):
    assert len(rows) == 8
    assert {(r["model"], r["levels"], r["num_res_units"]) for r in rows} == {
        (m, lv, res) for m in ("unet", "sl_unet") for lv in (5, 8) for res in (1, 2)
    }
    assert {r["name"] for r in rows} == set(registry.names("sl_unet")) | set(registry.names("unet"))  # every registered model, by its name


def test_profile_of_a_plain_task_counts_its_network():
    """The registry's 2-D UNet is a Segmenter around MONAI's UNet: same counts."""
    task = registry.build("unet_5l1r")
    assert keras_sl.profile(task, (256, 256, 3)) == keras_sl.profile(task.backbone, (256, 256, 3))
    assert keras_sl.profile(task, (256, 256, 3))["params"] == 3352215


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_table_ii_gmacs_and_params(rows, key):
    gmacs, params = EXPECTED[key]
    row = _row(rows, *key)
    assert round(row["gmacs"], 4) == gmacs
    assert row["params"] == params
    assert row["paper_gmacs"] == gmacs  # the published figure is reproduced exactly
    assert round(row["params"] / 1e6, 4) == row["paper_mparams"]


def test_format_table_ii(rows):
    text = format_table_ii(rows, 512)
    assert "512x512" in text
    assert "13.7245" in text and "3,352,215" in text and "6.0206" in text


@pytest.mark.parametrize("num_res_units, gmacs, params", [(1, 6.0206, 29537), (2, 7.0719, 38222)])
def test_profile_slunet(num_res_units, gmacs, params):
    stats = keras_sl.profile(keras_sl.SLUNet(num_res_units=num_res_units), (512, 512, 3))
    assert stats["params"] == params
    assert round(stats["gmacs"], 4) == gmacs
    assert stats["macs"] == pytest.approx(stats["gmacs"] * 1e9)
    assert isinstance(stats["macs"], int)


def test_profile_unet_and_resolution_scaling():
    unet = keras_sl.UNet(2, 3, 1, (32, 64, 128, 256, 512), (2, 2, 2, 2), num_res_units=1)
    full = keras_sl.profile(unet, (512, 512, 3))
    assert full["params"] == 3352215
    assert round(full["gmacs"], 4) == 13.7245
    # Every term is per output element, so MACs scale exactly with the pixel count.
    quarter = keras_sl.profile(unet, (256, 256, 3))
    assert full["macs"] == 4 * quarter["macs"]
    assert quarter["params"] == full["params"]


def test_profile_rejects_foreign_models():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(TypeError, match="functional models"):
        keras_sl.profile(model, (4,))
