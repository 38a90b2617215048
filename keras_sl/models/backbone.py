"""The feature-pyramid interface shared by every encoder (keras-hub's ``pyramid_outputs``).

An encoder is a functional :class:`keras.Model` from an image to its stage
features, finest first. ``pyramid_outputs`` names them by level, ``"P2"`` ..
``"P5"`` for strides 4 .. 32 (level ``Pn`` has stride ``2 ** n``), so any
decoder of :mod:`keras_sl.models` can take any encoder's features.

Example:
>>> import keras
>>> inputs = keras.Input((None, None, 3))
>>> p2 = keras.layers.Conv2D(8, 3, strides=4, padding="same")(inputs)
>>> p3 = keras.layers.Conv2D(16, 3, strides=2, padding="same")(p2)
>>> encoder = PyramidBackbone(inputs, {"P2": p2, "P3": p3}, name="toy")
>>> encoder.pyramid_levels, encoder.pyramid_channels, encoder.pyramid_strides
(('P2', 'P3'), (8, 16), (4, 8))
"""

from __future__ import annotations

from typing import Mapping

import keras

from keras_sl.presets.preset_io import PresetMixin
from keras_sl.utils.layout import standardize_data_format


def level_stride(level: str) -> int:
    """``"P3"`` -> 8."""
    if not (isinstance(level, str) and level[:1] == "P" and level[1:].isdigit()):
        raise ValueError(f"Pyramid levels are named 'P2', 'P3', ... (stride 2**n), got {level!r}.")
    return 2 ** int(level[1:])


class PyramidBackbone(PresetMixin, keras.Model):
    """A functional encoder whose outputs are its feature pyramid, finest first.

    Subclasses build their graph and call ``super().__init__(inputs, pyramid,
    **kwargs)`` with ``pyramid`` a mapping ``{"P2": tensor, ...}``; they pass
    their own constructor arguments through ``get_config``. Encoders save to
    and load from preset folders like tasks (``save_to_preset``,
    ``from_preset``): ``keras-sl convert`` writes converted checkpoints so.

    Attributes:
        pyramid_outputs: ``{level: KerasTensor}``, finest first.
        pyramid_levels: level names, finest first.
        pyramid_channels: channels per level.
        pyramid_strides: stride per level (``2 ** n`` for ``Pn``).
        stride_multiple: image sizes that keep every level's size exact.
    """

    def __init__(self, inputs, pyramid: Mapping[str, object], data_format: str | None = None, **kwargs):
        levels = sorted(pyramid, key=level_stride)
        if not levels:
            raise ValueError("A pyramid backbone needs at least one level.")
        super().__init__(inputs=inputs, outputs=[pyramid[name] for name in levels], **kwargs)
        self.data_format = standardize_data_format(data_format)
        self.pyramid_levels = tuple(levels)

    @property
    def pyramid_outputs(self) -> dict:
        return dict(zip(self.pyramid_levels, self.outputs))

    @property
    def pyramid_channels(self) -> tuple[int, ...]:
        axis = -1 if self.data_format == "channels_last" else 1
        return tuple(int(t.shape[axis]) for t in self.outputs)

    @property
    def pyramid_strides(self) -> tuple[int, ...]:
        return tuple(level_stride(name) for name in self.pyramid_levels)

    @property
    def stride_multiple(self) -> tuple[int, ...]:
        rank = len(self.inputs[0].shape) - 2
        return (max(self.pyramid_strides),) * rank
