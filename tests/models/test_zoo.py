"""The encoder-decoder zoo: names, twins, and every decoder on a small pyramid."""

import keras
import numpy as np
import pytest

from keras_sl import registry
from keras_sl.models.encoder_decoder import PyramidNeck
from keras_sl.models.encoder_decoder.zoo import DECODERS, ENCODERS, build_decoder_neck


def test_every_encoder_decoder_pair_is_registered_with_its_twin():
    for encoder in ENCODERS:
        for decoder in DECODERS:
            spec = registry.parse(f"{encoder}_{decoder}")
            assert spec.lifted == decoder.startswith("sl_")
            assert spec.arguments == {"encoder": encoder, "decoder": decoder}
            if spec.twin is not None:
                assert registry.parse(spec.twin).twin == spec.name
    assert registry.parse("effnetlite0_sl_unet_8l2r").input_multiple == 64
    assert registry.parse("effnetlite0_hsnet").twin is None
    assert registry.preset_name("kvasir", "effnetlite0_sl_emcad") == "kvasir_effnetlite0_sl_emcad"


FEATURES = (16, 32, 48, 64)
# decoder -> slices of the main output (None: a 2-D decoder)
DEFAULT = {"sl_unet_5l1r": 16, "hsnet": None}
SLOW = {"unet_8l2r": None, "sl_unet_8l2r": 16, "emcad": None, "sl_emcad": 8, "cascade": None, "sl_cascade": 8}


def _check_neck(decoder, slices):
    neck = PyramidNeck(feature_channels=FEATURES, **build_decoder_neck(decoder, FEATURES))
    rng = np.random.default_rng(0)
    features = [rng.normal(size=(1, 64 // 2**i, 64 // 2**i, c)).astype("float32") for i, c in enumerate(FEATURES)]
    out = keras.ops.convert_to_numpy(neck.predict(features, verbose=0))
    # at the finest level's size; HSNet sums its upsampled heads at the image's (4x) size
    size = 256 if decoder == "hsnet" else 64
    expected = (1, size, size, 1) if slices is None else (1, slices, size, size, 1)
    assert out.shape == expected, (decoder, out.shape)
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize("decoder", sorted(DEFAULT))
def test_decoder_necks_give_their_logits(decoder):
    _check_neck(decoder, DEFAULT[decoder])


@pytest.mark.slow
@pytest.mark.parametrize("decoder", sorted(SLOW))
def test_more_decoder_necks_give_their_logits(decoder):
    _check_neck(decoder, SLOW[decoder])


def test_unknown_decoder_and_pretrained_pvtv2_explain_themselves():
    from keras_sl.models.encoder_decoder.zoo import build_encoder

    with pytest.raises(ValueError, match="Unknown decoder"):
        build_decoder_neck("sl_hsnet", FEATURES)
    with pytest.raises(ValueError, match="keras-sl convert pvtv2"):
        build_encoder("pvtv2b2", pretrained=True)
