"""Encoder + decoder networks: a k-D pyramid encoder feeding a decoder at rank k or k+1.

:class:`PyramidNetwork` is the network inside every encoder-decoder task:

``image -> encoder -> pyramid [P2..P5] -> neck -> decoder -> main head -> upsample to the image``

The *neck* (:class:`PyramidNeck`) adapts the pyramid to the decoder:
optional per-level 1x1 projections (conv + BatchNorm + ReLU, k-D, cheap),
optional fusion of all levels into one map at the finest stride (for
decoders that take one map, like :class:`keras_sl.UNet`), and — for Spatial
Lifting — the lift of each level to its own depth (paper Section III-A: SL
applies to feature inputs as well as images). The decoder is then built at
rank k+1, the same class as the 2-D decoder: with depths ``[8, 4, 2, 1]``
(finest first) its lifted axis grows like the in-plane ones (SL-EMCAD,
SL-CASCADE), with one depth for every level it stays (SL-UNet decoder).

The network's output is the per-slice logits ``(B, m, *spatial, K)`` of an SL
network (``lifts_input = True``, so :class:`keras_sl.SLSegmenter` does not
lift the image again) or the logits ``(B, *spatial, K)`` of a plain one, at
the image's size (bilinear, ``align_corners=False``, as EMCADNet's and
CASCADE's heads upsample).

Example:
>>> import keras, numpy as np
>>> from keras_sl.models.backbone import PyramidBackbone
>>> from keras_sl.models.unet import UNet
>>> x = keras.Input((None, None, 3))
>>> p2 = keras.layers.Conv2D(8, 3, strides=4, padding="same")(x)
>>> p3 = keras.layers.Conv2D(16, 3, strides=2, padding="same")(p2)
>>> encoder = PyramidBackbone(x, {"P2": p2, "P3": p3})
>>> decoder = UNet(3, 8, 1, channels=(4, 4), strides=(2,), num_res_units=1)
>>> net = PyramidNetwork(encoder, decoder, lift_depths=4, projection_channels=4, fuse=True)
>>> tuple(net(np.zeros((1, 32, 32, 3), "float32")).shape)
(1, 4, 32, 32, 1)
"""

from __future__ import annotations

import math
from typing import Sequence

import keras
from keras import ops

from keras_sl.layers.convolution import Convolution
from keras_sl.layers.lift import Lift
from keras_sl.layers.normalization import BatchNorm
from keras_sl.layers.upsampling import UpsampleLike, interpolate
from keras_sl.utils.layout import channel_axis, spatial_axes, standardize_data_format


def _per_level(value, levels: int, what: str) -> tuple | None:
    if value is None:
        return None
    if isinstance(value, int):
        return (int(value),) * levels
    value = tuple(int(v) for v in value)
    if len(value) != levels:
        raise ValueError(f"{what} needs one value per pyramid level ({levels}), got {value}.")
    return value


@keras.saving.register_keras_serializable(package="keras_sl")
class ResizeToImage(keras.layers.Layer):
    """``[x, image] -> x`` resampled to the image's spatial size on its last
    ``k`` spatial axes (k = the image's rank); leading (lifted) axes are kept.
    ``F.interpolate`` in the originals' heads: 0 MACs under thop's rules.

    Example:
    >>> import numpy as np
    >>> tuple(ResizeToImage()([np.zeros((1, 4, 8, 8, 1), "float32"), np.zeros((1, 32, 32, 3), "float32")]).shape)
    (1, 4, 32, 32, 1)
    """

    def __init__(self, mode: str = "bilinear", align_corners: bool = False, data_format: str | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.mode = mode
        self.align_corners = bool(align_corners)
        self.data_format = standardize_data_format(data_format)

    def _sizes(self, x_shape, image_shape, dynamic=None):
        x_axes = spatial_axes(len(x_shape) - 2, self.data_format)
        image_axes = spatial_axes(len(image_shape) - 2, self.data_format)
        lead = len(x_axes) - len(image_axes)
        sizes = [x_shape[a] for a in x_axes[:lead]]
        for a in image_axes:
            size = image_shape[a]
            sizes.append(size if size is not None or dynamic is None else dynamic[a])
        return sizes

    def call(self, inputs):
        x, image = inputs
        shape = tuple(image.shape)
        sizes = self._sizes(tuple(x.shape), shape, dynamic=ops.shape(image))
        lead = len(x.shape) - len(shape)
        if any(s is None for s in sizes[:lead]):
            dynamic = ops.shape(x)
            axes = spatial_axes(len(x.shape) - 2, self.data_format)
            sizes[:lead] = [dynamic[a] for a in axes[:lead]]
        return interpolate(x, size=sizes, mode=self.mode, align_corners=self.align_corners, data_format=self.data_format)

    def compute_output_shape(self, input_shapes):
        x_shape, image_shape = input_shapes
        shape = list(x_shape)
        for a, size in zip(spatial_axes(len(shape) - 2, self.data_format), self._sizes(x_shape, image_shape)):
            shape[a] = size
        return tuple(shape)

    def get_config(self):
        config = super().get_config()
        config.update(mode=self.mode, align_corners=self.align_corners, data_format=self.data_format)
        return config


def _decoder_config(decoder) -> dict:
    """The config of the decoder as built (before its extra heads were dropped)."""
    return getattr(decoder, "_keras_sl_full_config", None) or keras.saving.serialize_keras_object(decoder)


def _stride_multiple(encoder, decoder, rank: int) -> tuple[int, ...]:
    """Image sizes every level of the encoder and of the decoder divide."""
    multiple = list(getattr(encoder, "stride_multiple", (1,) * rank))
    finest = min(getattr(encoder, "pyramid_strides", (1,)))
    decoder_multiple = getattr(decoder, "stride_multiple", None)
    if decoder_multiple is not None:
        in_plane = tuple(decoder_multiple)[-rank:]
        multiple = [math.lcm(int(m), finest * int(d)) for m, d in zip(multiple, in_plane)]
    return tuple(int(m) for m in multiple)


def _projection(x, filters: int, rank: int, data_format: str, name: str):
    x = Convolution(rank, filters, kernel_size=1, use_bias=False, data_format=data_format, name=f"{name}_conv")(x)
    x = BatchNorm(epsilon=1e-5, data_format=data_format, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


@keras.saving.register_keras_serializable(package="keras_sl")
class PyramidNeck(keras.Model):
    """Pyramid features (finest first) -> the decoder's main logits.

    Args:
        decoder: a functional decoder taking one map (``fuse=True``) or a
            list of maps, finest first, at rank ``k`` (2-D) or ``k + 1`` (SL).
            Of several outputs (per-stage heads), the first is used and the
            others are dropped from the graph (and from the weights).
        feature_channels: channels of each pyramid level, finest first.
        projection_channels: 1x1 conv + BN + ReLU per level to these channels
            (one int for all levels; None: levels go in unchanged).
        fuse: resample every level to the finest one's size (bilinear) and
            concatenate them into one map.
        lift_depths: None (plain decoder) or the lifted depth of each level,
            finest first (one int for all levels).
        spatial_dims: rank k of the features.
        data_format: layout of the features.
    """

    def __init__(self, decoder, feature_channels: Sequence[int], projection_channels=None, fuse: bool = False,
                 lift_depths=None, spatial_dims: int = 2, data_format: str | None = None, **kwargs):
        if isinstance(decoder, dict):
            decoder = keras.saving.deserialize_keras_object(decoder)
        data_format = standardize_data_format(data_format)
        feature_channels = tuple(int(c) for c in feature_channels)
        levels = len(feature_channels)
        projection = _per_level(projection_channels, levels, "projection_channels")
        depths = _per_level(lift_depths, 1 if fuse else levels, "lift_depths")
        inputs = []
        for i, c in enumerate(feature_channels):
            shape = (None,) * spatial_dims + (c,) if data_format == "channels_last" else (c,) + (None,) * spatial_dims
            inputs.append(keras.Input(shape=shape, name=f"feature_{i + 1}"))
        features = list(inputs)
        if projection is not None:
            features = [_projection(f, c, spatial_dims, data_format, f"project_{i + 1}")
                        for i, (f, c) in enumerate(zip(features, projection))]
        if fuse:
            finest = features[0]
            resized = [finest] + [UpsampleLike(mode="bilinear", data_format=data_format, count_macs=False,
                                               name=f"fuse_resize_{i + 2}")([f, finest])
                                  for i, f in enumerate(features[1:])]
            features = [keras.layers.Concatenate(axis=channel_axis(data_format),
                                                 name="fuse")(resized)] if len(resized) > 1 else resized
        if depths is not None:
            features = [Lift(d, data_format=data_format, name=f"lift_{i + 1}")(f)
                        for i, (f, d) in enumerate(zip(features, depths))]
        if len(decoder.outputs) > 1:
            # The task trains the main head (outputs[0]); the others (deep
            # supervision in the originals) are left out of the graph and the weights.
            decoder_config = keras.saving.serialize_keras_object(decoder)
            decoder = keras.Model(decoder.inputs, decoder.outputs[0], name=decoder.name)
            decoder._keras_sl_full_config = decoder_config
        out = decoder(features[0] if fuse else features)
        if isinstance(out, (list, tuple)):  # a decoder built with a one-element output list
            out = out[0]
        super().__init__(inputs=inputs, outputs=out, **kwargs)
        self.decoder = decoder
        self.feature_channels = feature_channels
        self.projection_channels = projection_channels if projection_channels is None or isinstance(
            projection_channels, int) else list(projection)
        self.fuse = bool(fuse)
        self.lift_depths = lift_depths if lift_depths is None or isinstance(lift_depths, int) else list(depths)
        self.spatial_dims = int(spatial_dims)
        self.data_format = data_format

    def get_config(self):
        return {
            "decoder": _decoder_config(self.decoder),
            "feature_channels": list(self.feature_channels),
            "projection_channels": self.projection_channels,
            "fuse": self.fuse,
            "lift_depths": self.lift_depths,
            "spatial_dims": self.spatial_dims,
            "data_format": self.data_format,
            "name": self.name,
            "trainable": self.trainable,
        }


@keras.saving.register_keras_serializable(package="keras_sl")
class PyramidNetwork(keras.Model):
    """Image -> encoder pyramid -> :class:`PyramidNeck` (-> decoder) -> logits at the image's size.

    Args:
        encoder: a :class:`keras_sl.models.backbone.PyramidBackbone`.
        decoder: a decoder network (see :class:`PyramidNeck`); built at rank
            k + 1 when ``lift_depths`` is given.
        lift_depths: None for a plain network, else the depth of each lifted
            level, finest first (an int: the same for all). The output then
            has ``lift_depth = lift_depths[0]`` slices (finest level).
        projection_channels, fuse: see :class:`PyramidNeck`.
        input_shape: image shape without batch (default: the encoder's).

    Attributes:
        neck: the trainable part after the encoder (features -> main logits at
            the decoder's resolution), e.g. to train a decoder on cached
            features of a frozen encoder.
        lifts_input: True for SL networks (:class:`keras_sl.SLSegmenter` then
            takes the image as it is).
    """

    def __init__(self, encoder, decoder, lift_depths=None, projection_channels=None, fuse: bool = False,
                 input_shape: Sequence | None = None, **kwargs):
        if isinstance(encoder, dict):
            encoder = keras.saving.deserialize_keras_object(encoder)
        if isinstance(decoder, dict):
            decoder = keras.saving.deserialize_keras_object(decoder)
        data_format = standardize_data_format(getattr(encoder, "data_format", None))
        rank = len(encoder.inputs[0].shape) - 2
        input_shape = tuple(input_shape) if input_shape is not None else tuple(encoder.inputs[0].shape[1:])
        image = keras.Input(shape=input_shape, name="image")
        features = encoder(image)
        features = list(features) if isinstance(features, (list, tuple)) else [features]
        axis = channel_axis(data_format)
        neck = PyramidNeck(decoder, [int(f.shape[axis]) for f in features], projection_channels=projection_channels,
                           fuse=fuse, lift_depths=lift_depths, spatial_dims=rank, data_format=data_format,
                           name="neck")
        logits = ResizeToImage(data_format=data_format, dtype="float32", name="to_image_size")([neck(features), image])
        super().__init__(inputs=image, outputs=logits, **kwargs)
        self.encoder = encoder
        self.neck = neck
        self.lift_depths_arg = lift_depths
        self.projection_channels = projection_channels
        self.fuse = bool(fuse)
        self.input_shape_arg = input_shape
        self.data_format = data_format
        self.lifts_input = lift_depths is not None
        self.lift_depth = int(logits.shape[spatial_axes(rank + 3, data_format)[0]]) if self.lifts_input else None
        self.stride_multiple = _stride_multiple(encoder, decoder, rank)

    @property
    def decoder(self):
        return self.neck.decoder

    def get_config(self):
        return {
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "decoder": _decoder_config(self.decoder),
            "lift_depths": self.neck.lift_depths,
            "projection_channels": self.projection_channels,
            "fuse": self.fuse,
            "input_shape": list(self.input_shape_arg),
            "name": self.name,
            "trainable": self.trainable,
        }
