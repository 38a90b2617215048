"""FastDepth (Wofk et al., ICRA 2019): dwofk/fast-depth's ``MobileNetSkipAdd``, whole.

:class:`FastDepth` is the image -> depth network of the original:
:class:`~keras_sl.models.mobilenet.MobileNetV1Backbone` (``conv0`` ..
``conv13``, ReLU6) feeding :class:`~keras_sl.models.fastdepth.FastDepthDecoder`
(NNConv5, depthwise-separable, nearest x2 upsampling, additive skips from
``conv1``, ``conv3`` and ``conv5``). :func:`load_fastdepth_state` loads the
original ``state_dict`` (``conv0.*`` .. ``conv13.*``, ``decode_conv1.*`` ..
``decode_conv6.*``). The original's ``output_size`` is stored but never used
in its forward pass, so it is not an argument here; the depth map has the
image's size (sides multiples of 32).

For the encoder-decoder zoo (another encoder, the SL twin) build the two
parts separately: the decoder reads any pyramid whose skip widths match its
``decoder_channels``.

Example:
>>> import numpy as np
>>> net = FastDepth(width_multiplier=0.25, input_shape=(64, 64, 3))
>>> tuple(net.predict(np.zeros((1, 64, 64, 3), "float32"), verbose=0).shape)
(1, 64, 64, 1)
>>> net.decoder.decoder_channels
(128, 64, 32, 16, 8)
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

import keras

from keras_sl.models.fastdepth.fastdepth_decoder import (
    FASTDEPTH_STRIDES,
    FastDepthDecoder,
    fastdepth_decoder_state_shapes,
    load_fastdepth_decoder_state,
    skip_stages,
)
from keras_sl.models.mobilenet.mobilenet_backbone import (
    FASTDEPTH_LEVELS,
    MobileNetV1Backbone,
    check_state_keys,
    load_mobilenet_v1_state,
    mobilenet_v1_state_shapes,
)
from keras_sl.utils.layout import standardize_data_format

_OWN_KEY = re.compile(r"(conv|decode_conv)\d+\.")


def fastdepth_decoder_channels(encoder_channels: Sequence[int], input_strides: Sequence[int] = FASTDEPTH_STRIDES,
                               stages: int = 5) -> tuple[int, ...]:
    """Decoder widths that fit a pyramid's skips, by the original's rule:
    a stage that a skip joins outputs the skip's channels; a stage before
    the first skip halves the bottleneck once per stage, one after the last
    skip halves the previous stage.

    ``encoder_channels`` and ``input_strides``: the decoder's inputs, finest
    first (skips, then the bottleneck).

    >>> fastdepth_decoder_channels((64, 128, 256, 1024))  # MobileNet v1 conv1, conv3, conv5, conv13
    (512, 256, 128, 64, 32)
    >>> fastdepth_decoder_channels((24, 40, 112, 320), (4, 8, 16, 32))  # EfficientNet-Lite0 P2..P5
    (112, 40, 24, 12, 6)
    """
    channels = tuple(int(c) for c in encoder_channels)
    joins = dict(zip(skip_stages(input_strides, stages), channels[:-1]))
    widths: list[int] = []
    for k in range(1, int(stages) + 1):
        if k in joins:
            widths.append(joins[k])
        elif not widths or k < min(joins, default=k + 1):
            widths.append(max(1, channels[-1] // 2 ** k))
        else:
            widths.append(max(1, widths[-1] // 2))
    return tuple(widths)


@keras.saving.register_keras_serializable(package="keras_sl")
class FastDepth(keras.Model):
    """``MobileNetSkipAdd``: image -> MobileNet v1 -> NNConv5 decoder -> depth.

    Args:
        width_multiplier: the encoder's channel multiplier (1.0: the
            original); the decoder's widths follow
            (:func:`fastdepth_decoder_channels`).
        kernel_size: the decoder's depthwise kernel (5).
        output_relu: the ReLU after the last batch norm (the original's).
        num_classes: output channels (1: depth).
        input_shape: ``(H, W, C)`` (``(C, H, W)`` channels first).
        data_format: ``"channels_last"`` or ``"channels_first"``.
        kernel_initializer: ``None``: the original's ``weights_init``; or one
            initializer for every kernel (``"zeros"`` before loading weights).

    Attributes:
        encoder: the :class:`~keras_sl.models.mobilenet.MobileNetV1Backbone`
            (levels P1, P2, P3, P5).
        decoder: the :class:`~keras_sl.models.fastdepth.FastDepthDecoder`.

    Example:
    >>> net = FastDepth(kernel_initializer="zeros")
    >>> net.encoder.pyramid_channels, net.decoder.skip_stages
    ((64, 128, 256, 1024), (4, 3, 2))
    >>> from keras_sl.profiler import trainable_params
    >>> trainable_params(net), trainable_params(net.decoder)  # thop: 3.96093 M, 0.753954 M
    (3960930, 753954)
    """

    def __init__(
        self,
        width_multiplier: float = 1.0,
        kernel_size: int = 5,
        output_relu: bool = True,
        num_classes: int = 1,
        input_shape: Sequence[int | None] = (None, None, 3),
        data_format: str | None = None,
        kernel_initializer=None,
        name: str = "fastdepth",
        **kwargs,
    ):
        data_format = standardize_data_format(data_format)
        encoder = MobileNetV1Backbone(width_multiplier=width_multiplier, levels=FASTDEPTH_LEVELS,
                                      input_shape=input_shape, data_format=data_format,
                                      kernel_initializer=kernel_initializer, name="encoder")
        decoder = FastDepthDecoder(channels=encoder.pyramid_channels,
                                   decoder_channels=fastdepth_decoder_channels(encoder.pyramid_channels,
                                                                               encoder.pyramid_strides),
                                   kernel_size=kernel_size, input_strides=encoder.pyramid_strides,
                                   output_relu=output_relu, num_classes=num_classes, data_format=data_format,
                                   kernel_initializer=kernel_initializer, name="decoder")
        image = keras.Input(tuple(input_shape), name="image")
        depth = decoder(encoder(image))
        super().__init__(inputs=image, outputs=depth, name=name, **kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.width_multiplier = float(width_multiplier)
        self.kernel_size = int(kernel_size)
        self.output_relu = bool(output_relu)
        self.num_classes = int(num_classes)
        self.input_shape_arg = tuple(input_shape)
        self.data_format = data_format
        self.kernel_initializer = None if kernel_initializer is None else keras.initializers.get(
            keras.initializers.serialize(keras.initializers.get(kernel_initializer)))

    def load_torch_state(self, state: Mapping, prefix: str = "") -> set[str]:
        """See :func:`load_fastdepth_state`."""
        return load_fastdepth_state(self, state, prefix=prefix)

    def get_config(self):
        return {
            "width_multiplier": self.width_multiplier,
            "kernel_size": self.kernel_size,
            "output_relu": self.output_relu,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape_arg),
            "data_format": self.data_format,
            "kernel_initializer": None if self.kernel_initializer is None
            else keras.initializers.serialize(self.kernel_initializer),
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def load_fastdepth_state(model, state: Mapping, prefix: str = "", decoder: FastDepthDecoder | None = None) -> set[str]:
    """Load an original ``MobileNetSkipAdd`` ``state_dict`` (key -> array or tensor).

    ``model`` is a :class:`FastDepth`, or a
    :class:`~keras_sl.models.mobilenet.MobileNetV1Backbone` given with its
    ``decoder`` (``load_fastdepth_state(encoder, state, decoder=decoder)``).
    Keys: ``{prefix}conv0.*`` .. ``{prefix}conv13.*`` (the encoder, see
    :func:`~keras_sl.models.mobilenet.load_mobilenet_v1_state`) and
    ``{prefix}decode_conv1.*`` .. ``{prefix}decode_conv6.*`` (see
    :func:`~keras_sl.models.fastdepth.load_fastdepth_decoder_state`). Every
    key under ``prefix`` must be used (``num_batches_tracked`` buffers are
    skipped); a missing, unused or mis-shaped key raises ``ValueError``
    naming it. Returns the keys used.
    """
    if isinstance(model, FastDepth):
        if decoder is not None:
            raise ValueError("Pass a FastDepth model alone, or an encoder with its decoder.")
        encoder, decoder = model.encoder, model.decoder
    elif isinstance(model, MobileNetV1Backbone) and isinstance(decoder, FastDepthDecoder):
        encoder = model
    else:
        raise TypeError(f"load_fastdepth_state needs a FastDepth model, or a MobileNetV1Backbone with a "
                        f"FastDepthDecoder; got {type(model).__name__} and {type(decoder).__name__}.")
    foreign = sorted(k for k in state if k.startswith(prefix) and not _OWN_KEY.match(k[len(prefix):]))
    if foreign:  # checked before anything is assigned, as the parts check theirs
        raise ValueError(f"{len(foreign)} key(s) of the state dict are not FastDepth's (another model's state "
                         f"dict, or pass prefix=...): {foreign[:12]}{' ...' if len(foreign) > 12 else ''}")
    expected = mobilenet_v1_state_shapes(encoder, prefix) | fastdepth_decoder_state_shapes(decoder, prefix)
    check_state_keys(expected, state, prefix, "FastDepth")
    used = load_mobilenet_v1_state(encoder, state, prefix=prefix)
    used |= load_fastdepth_decoder_state(decoder, state, prefix=prefix)
    return used
