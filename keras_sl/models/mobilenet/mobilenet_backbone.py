"""MobileNet v1 (Howard et al., 2017) as a feature-pyramid encoder, FastDepth's encoder.

Layer for layer the ``MobileNet`` of dwofk/fast-depth (``imagenet/mobilenet.py``,
``relu6=True``) up to its 14th layer, as ``MobileNetSkipAdd`` runs it
(``conv0`` .. ``conv13``; the average pooling and the classifier are not
built):

* ``conv0``: 3x3 convolution, stride 2, padding 1, no bias -> batch norm ->
  ReLU6;
* ``conv1`` .. ``conv13``: 3x3 depthwise convolution (stride 1 or 2, padding
  1, no bias) -> batch norm -> ReLU6 -> 1x1 convolution (no bias) -> batch
  norm -> ReLU6.

Strides 2 at ``conv0``, ``conv2``, ``conv4``, ``conv6`` and ``conv12``;
channels 32, 64, 128, 128, 256, 256, 512 (x6), 1024, 1024 (times the width
multiplier). Every convolution pads like PyTorch (symmetric zeros,
:class:`~keras_sl.layers.Convolution`); batch norms use PyTorch's epsilon
1e-5 and momentum (:class:`~keras_sl.layers.BatchNorm`).

Pyramid: level ``Pn`` is the output of the last layer at stride ``2 ** n``:

======  ======  ==========  =========================================
level   stride  output of   channels (width 1.0) / FastDepth's use
======  ======  ==========  =========================================
``P1``  2       ``conv1``   64, skip added after decoder stage 4
``P2``  4       ``conv3``   128, skip added after decoder stage 3
``P3``  8       ``conv5``   256, skip added after decoder stage 2
``P4``  16      ``conv11``  512, not read by FastDepth
``P5``  32      ``conv13``  1024, the decoder's input
======  ======  ==========  =========================================

``levels`` picks the levels the encoder outputs (FastDepth's
``("P1", "P2", "P3", "P5")``). Image sides that are multiples of 32 keep
every level at exactly ``size / stride``.

Example:
>>> import numpy as np
>>> encoder = MobileNetV1Backbone(width_multiplier=0.25, input_shape=(64, 64, 3))
>>> encoder.pyramid_levels, encoder.pyramid_channels, encoder.pyramid_strides
(('P1', 'P2', 'P3', 'P4', 'P5'), (16, 32, 64, 128, 256), (2, 4, 8, 16, 32))
>>> [f.shape for f in encoder.predict(np.zeros((1, 64, 64, 3), "float32"), verbose=0)][-1]
(1, 2, 2, 256)
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import keras
import numpy as np

from keras_sl.layers.convolution import Convolution
from keras_sl.layers.initializers import HostInitializer
from keras_sl.layers.normalization import BatchNorm
from keras_sl.models.backbone import PyramidBackbone, level_stride
from keras_sl.utils.layout import standardize_data_format

#: ``(output channels, stride)`` of ``conv0`` .. ``conv13`` at width 1.0.
MOBILENET_V1_LAYERS = (
    (32, 2), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)
#: All pyramid levels of the encoder, finest first.
MOBILENET_V1_LEVELS = ("P1", "P2", "P3", "P4", "P5")
#: The levels FastDepth's decoder reads (strides 2, 4, 8 and 32).
FASTDEPTH_LEVELS = ("P1", "P2", "P3", "P5")
#: Batch-norm epsilon of the original (PyTorch's default).
BATCH_NORM_EPSILON = 1e-5


def layer_channels(width_multiplier: float = 1.0) -> tuple[int, ...]:
    """Output channels of ``conv0`` .. ``conv13`` (``int(c * width_multiplier)``).

    >>> layer_channels(0.5)[:4]
    (16, 32, 64, 64)
    """
    return tuple(max(1, int(c * float(width_multiplier))) for c, _ in MOBILENET_V1_LAYERS)


def level_layers() -> dict[str, int]:
    """``{level: index of the last layer at that stride}``.

    >>> level_layers()
    {'P1': 1, 'P2': 3, 'P3': 5, 'P4': 11, 'P5': 13}
    """
    levels, stride = {}, 1
    for index, (_, s) in enumerate(MOBILENET_V1_LAYERS):
        stride *= s
        levels[f"P{stride.bit_length() - 1}"] = index
    return levels


def original_initializer(kernel_size: int, filters: int, rank: int = 2) -> HostInitializer:
    """dwofk/fast-depth's ``weights_init`` for a convolution:
    ``N(0, sqrt(2 / (k ** rank * filters)))`` (He, fan-out; a depthwise
    convolution's ``filters`` are its channels), drawn with NumPy."""
    return HostInitializer(kind="normal", stddev=math.sqrt(2.0 / (kernel_size ** rank * filters)))


@keras.saving.register_keras_serializable(package="keras_sl")
class MobileNetV1Backbone(PyramidBackbone):
    """MobileNet v1 encoder (ReLU6): image -> the pyramid ``levels`` (strides 2 .. 32).

    Args:
        width_multiplier: channel multiplier ``alpha`` (1.0 is the original's).
        levels: pyramid levels to output, among ``"P1"`` .. ``"P5"``
            (default all; FastDepth reads ``("P1", "P2", "P3", "P5")``).
        input_shape: ``(H, W, C)`` (``(C, H, W)`` channels first); sizes may
            be None. ``C`` other than 3 changes ``conv0``'s input, as the
            original's ``in_channels``.
        data_format: ``"channels_last"`` (default) or ``"channels_first"``.
        kernel_initializer: ``None`` for the original's ``weights_init``
            (``N(0, sqrt(2 / (k * k * out)))``, drawn with NumPy; batch norms
            start at gamma 1, beta 0), or one initializer for every kernel
            (``"zeros"`` when weights are loaded next).

    Layer names: ``conv0`` / ``conv0_bn`` / ``conv0_relu``, and for
    ``i = 1 .. 13``: ``conv{i}_dw`` / ``conv{i}_dw_bn`` / ``conv{i}_dw_relu``
    / ``conv{i}_pw`` / ``conv{i}_pw_bn`` / ``conv{i}_pw_relu``;
    :meth:`layer_output` gives ``conv{i}``'s output.
    :func:`load_mobilenet_v1_state` loads an original state dict.

    Example:
    >>> encoder = MobileNetV1Backbone(levels=("P1", "P2", "P3", "P5"), kernel_initializer="zeros")
    >>> encoder.pyramid_channels, encoder.count_params()
    ((64, 128, 256, 1024), 3228864)
    """

    def __init__(
        self,
        width_multiplier: float = 1.0,
        levels: Sequence[str] = MOBILENET_V1_LEVELS,
        input_shape: Sequence[int | None] = (None, None, 3),
        data_format: str | None = None,
        kernel_initializer=None,
        name: str = "mobilenet_v1",
        **kwargs,
    ):
        data_format = standardize_data_format(data_format)
        if len(tuple(input_shape)) != 3:
            raise ValueError(f"input_shape is (H, W, C) or (C, H, W), got {input_shape}.")
        if not float(width_multiplier) > 0:
            raise ValueError(f"width_multiplier must be positive, got {width_multiplier}.")
        taps = level_layers()
        levels = tuple(levels)
        unknown = [level for level in levels if level not in taps]
        if not levels or unknown or len(set(levels)) != len(levels):
            raise ValueError(f"levels must be distinct names among {MOBILENET_V1_LEVELS}, got {levels}.")
        levels = tuple(sorted(levels, key=level_stride))
        channels = layer_channels(width_multiplier)
        shared_init = None
        if kernel_initializer is not None:  # a config: each layer its own instance (own seed)
            shared_init = keras.initializers.serialize(keras.initializers.get(kernel_initializer))

        def conv(filters, kernel, stride, groups, name):
            init = shared_init if shared_init is not None else original_initializer(kernel, filters)
            return Convolution(2, filters, kernel_size=kernel, strides=stride, use_bias=False, groups=groups,
                               data_format=data_format, kernel_initializer=init, name=name)

        def bn_relu6(x, name):
            x = BatchNorm(epsilon=BATCH_NORM_EPSILON, data_format=data_format, name=f"{name}_bn")(x)
            return keras.layers.ReLU(max_value=6.0, name=f"{name}_relu")(x)

        inputs = keras.Input(tuple(input_shape), name="image")
        x = bn_relu6(conv(channels[0], 3, MOBILENET_V1_LAYERS[0][1], 1, "conv0")(inputs), "conv0")
        outputs = [x]
        for i in range(1, len(MOBILENET_V1_LAYERS)):
            stride = MOBILENET_V1_LAYERS[i][1]
            x = bn_relu6(conv(channels[i - 1], 3, stride, channels[i - 1], f"conv{i}_dw")(x), f"conv{i}_dw")
            x = bn_relu6(conv(channels[i], 1, 1, 1, f"conv{i}_pw")(x), f"conv{i}_pw")
            outputs.append(x)
        pyramid = {level: outputs[taps[level]] for level in levels}

        super().__init__(inputs, pyramid, data_format=data_format, name=name, **kwargs)
        self.width_multiplier = float(width_multiplier)
        self.levels = levels
        self.input_shape_arg = tuple(input_shape)
        self.kernel_initializer = None if shared_init is None else keras.initializers.get(shared_init)
        self.layer_channels = channels

    def layer_output(self, index: int):
        """The output tensor of ``conv{index}`` (after its last ReLU6)."""
        return self.get_layer(f"conv{index}_relu" if index == 0 else f"conv{index}_pw_relu").output

    def load_torch_state(self, state: Mapping, prefix: str = "", layer_key: str = "conv{}.") -> set[str]:
        """See :func:`load_mobilenet_v1_state`."""
        return load_mobilenet_v1_state(self, state, prefix=prefix, layer_key=layer_key)

    def get_config(self):
        return {
            "width_multiplier": self.width_multiplier,
            "levels": list(self.levels),
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


# ---------------------------------------------------------------------------
# Original state dicts
# ---------------------------------------------------------------------------
def _bn_shapes(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}{name}": (channels,) for name in ("weight", "bias", "running_mean", "running_var")}


def mobilenet_v1_state_shapes(backbone: MobileNetV1Backbone, prefix: str = "",
                              layer_key: str = "conv{}.") -> dict[str, tuple[int, ...]]:
    """Every original ``state_dict`` key the encoder reads, with its PyTorch
    shape, in the original's order (``num_batches_tracked`` left out).

    ``layer_key`` names layer ``i``: ``"conv{}."`` in ``MobileNetSkipAdd``
    (``conv0.0.weight``), ``"model.{}."`` in the ImageNet ``MobileNet``
    (``model.0.0.weight``).

    >>> encoder = MobileNetV1Backbone(width_multiplier=0.25, kernel_initializer="zeros")
    >>> shapes = mobilenet_v1_state_shapes(encoder)
    >>> len(shapes), shapes["conv0.0.weight"], shapes["conv13.3.weight"]
    (135, (8, 3, 3, 3), (256, 256, 1, 1))
    """
    channels = backbone.layer_channels
    in_channels = int(backbone.inputs[0].shape[-1 if backbone.data_format == "channels_last" else 1])
    shapes = {}
    key = prefix + layer_key.format(0)
    shapes[f"{key}0.weight"] = (channels[0], in_channels, 3, 3)
    shapes.update(_bn_shapes(f"{key}1.", channels[0]))
    for i in range(1, len(channels)):
        key = prefix + layer_key.format(i)
        shapes[f"{key}0.weight"] = (channels[i - 1], 1, 3, 3)
        shapes.update(_bn_shapes(f"{key}1.", channels[i - 1]))
        shapes[f"{key}3.weight"] = (channels[i], channels[i - 1], 1, 1)
        shapes.update(_bn_shapes(f"{key}4.", channels[i]))
    return shapes


def check_state_keys(expected: Mapping[str, tuple], state: Mapping, scope: str, what: str) -> None:
    """Raise ``ValueError`` naming the keys of ``expected`` missing from
    ``state``, the keys of ``state`` under ``scope`` (a prefix, or a tuple of
    prefixes) not in ``expected`` (``num_batches_tracked`` buffers are
    allowed), and mismatched shapes, before anything is assigned."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k.startswith(scope) and k not in expected
                  and not (k.endswith(".num_batches_tracked")
                           and k[: -len("num_batches_tracked")] + "running_mean" in expected)]
    wrong = [f"{k}: {tuple(np.shape(state[k]))} (expected {s})" for k, s in expected.items()
             if k in state and tuple(int(d) for d in np.shape(state[k])) != tuple(s)]
    if missing or unexpected or wrong:
        def listed(items):
            return f"{items[:16]}{' ...' if len(items) > 16 else ''}"
        raise ValueError(
            f"The state dict does not fit {what}: {len(missing)} missing key(s) {listed(missing)}; "
            f"{len(unexpected)} unused key(s) {listed(unexpected)}; {len(wrong)} wrong shape(s) {listed(wrong)}."
        )


def load_mobilenet_v1_state(backbone: MobileNetV1Backbone, state: Mapping, prefix: str = "",
                            layer_key: str = "conv{}.") -> set[str]:
    """Copy an original MobileNet v1 ``state_dict`` (key -> array or tensor) into ``backbone``.

    Keys are the original module paths: ``{prefix}conv{i}.{j}.*`` as in
    ``MobileNetSkipAdd`` (``j``: 0 conv, 1 batch norm for ``conv0``; 0
    depthwise conv, 1 its batch norm, 3 pointwise conv, 4 its batch norm for
    ``conv1`` .. ``conv13``), or ``layer_key="model.{}."`` for the ImageNet
    ``MobileNet`` (whose ``fc.*`` and other keys outside the layers are
    ignored). Every key of the 14 layers must be present with its shape and
    every key under them is used; otherwise ``ValueError`` names them, before
    anything is assigned. Returns the keys used.
    """
    if not isinstance(backbone, MobileNetV1Backbone):
        raise TypeError(f"load_mobilenet_v1_state needs a MobileNetV1Backbone, got {type(backbone).__name__}.")
    expected = mobilenet_v1_state_shapes(backbone, prefix, layer_key)
    scopes = tuple(prefix + layer_key.format(i) for i in range(len(MOBILENET_V1_LAYERS)))
    check_state_keys(expected, state, scopes, f"{backbone.name} (width_multiplier={backbone.width_multiplier})")
    used: set[str] = set()
    for i in range(len(MOBILENET_V1_LAYERS)):
        key = prefix + layer_key.format(i)
        if i == 0:
            parts = (("conv0", "0."), ("conv0_bn", "1."))
        else:
            parts = ((f"conv{i}_dw", "0."), (f"conv{i}_dw_bn", "1."), (f"conv{i}_pw", "3."),
                     (f"conv{i}_pw_bn", "4."))
        for layer, sub in parts:
            used |= backbone.get_layer(layer).load_torch_state(state, key + sub)
    return used
