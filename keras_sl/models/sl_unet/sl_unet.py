"""SL-UNet: Lift -> 3-D MONAI UNet (8 channels) -> slice head."""

from __future__ import annotations

import types
import weakref
from typing import Sequence

import keras
import numpy as np

from keras_sl import backend_defaults
from keras_sl.blocks.residual_unit import ResidualUnit
from keras_sl.layers.lift import Lift
from keras_sl.layers.slice_head import SliceHead
from keras_sl.models.base import SLModel
from keras_sl.models.inference_graph import InferenceGraphMixin
from keras_sl.models.sl_unet.selected_slice_sum import SelectedSliceSum
from keras_sl.models.xla_compile_options import XlaCompileOptionsMixin
from keras_sl.models.unet.unet import UNet
from keras_sl.utils.checks import check_binary_mask, total_strides
from keras_sl.utils.layout import standardize_data_format
from keras_sl.utils.padding import pad_to_multiple


def lifted_strides(levels: int, lift_depth: int, rank: int = 2) -> tuple:
    """Per-level strides of the (k+1)-D UNet: 2 everywhere, except along the
    lifted axis once it cannot be halved any more (depth 16 halves 4 times,
    so an 8-level SL-UNet uses strides (1, 2, 2) on its 3 deepest levels).
    """
    strides, depth = [], lift_depth
    for _ in range(levels - 1):
        dz = 2 if depth % 2 == 0 and depth > 1 else 1
        depth //= dz
        strides.append(2 if dz == 2 else (1,) + (2,) * rank)
    return tuple(strides)


def _permutation(src: str, dst: str, rank: int):
    """``keras.layers.Permute`` dims taking an image from ``src`` to ``dst``
    data format (None when they agree)."""
    if src == dst:
        return None
    if dst == "channels_first":
        return (rank + 1, *range(1, rank + 1))
    return (*range(2, rank + 2), 1)


def _permuted(shape: tuple, dims) -> tuple:
    return shape if dims is None else tuple(shape[d - 1] for d in dims)


def _slice_permutation(net_format: str, lifted_last: bool, data_format: str, rank: int):
    """Permute dims from the backbone's output layout to the canonical slice
    layout ``(B, m, *spatial, K)`` (channels_last) or ``(B, K, m, *spatial)``."""
    # Positions (1-based, batch excluded) of channel, lifted and in-plane axes.
    if net_format == "channels_last":
        chan = rank + 1
        lifted = rank if lifted_last else 1
    else:
        chan = 1
        lifted = rank + 1 if lifted_last else 2
    plane = [a for a in range(1, rank + 2) if a not in (chan, lifted)]
    if data_format == "channels_last":
        dims = (lifted, *plane, chan)
    else:
        dims = (chan, lifted, *plane)
    return None if dims == tuple(range(1, rank + 2)) else dims


@keras.saving.register_keras_serializable(package="keras_sl")
class SLUNet(SLModel):
    """Spatial-Lifting UNet for k-D dense prediction (paper Section III).

    The image ``(B, H, W, C)`` is lifted to ``(B, m, H, W, C)`` (eq. 1) and
    run through ``keras_sl.UNet(spatial_dims=3)`` with ``width`` channels on
    every level. Calling the model returns the per-slice logits
    ``(B, m, H, W, K)`` that training supervises (eq. 4);
    :meth:`predict` returns ``act(sum of the selected slices' logits)`` (eq. 9)
    and :meth:`predict_quality` adds the PQA score Q (eq. 11).

    Args:
        num_classes: output channels K (1 for binary segmentation).
        levels: UNet levels, 5 or 8 in the paper (any >= 2 works).
        num_res_units: residual sub-units per level (1 or 2 in the paper).
        width: channels on every level (8 in the paper).
        lift_depth: m, copies along the lifted axis (16 in the paper).
        num_selected: s, slices combined at prediction time (5).
        in_channels: image channels.
        activation: output activation, ``"auto"`` = sigmoid for K=1 else softmax;
            ``None`` for regression (slices are then averaged, not summed).
        selected_slices: initial selected slice indices (default: central ones).
        input_shape: image shape without batch; spatial sizes may be None.
        data_format: ``"channels_last"`` (default) or ``"channels_first"``.
        backbone_layout: memory layout of the lifted network's activations;
            outputs and weights do not depend on it. ``"lifted_first"``:
            MONAI's ``(B, m, H, W, C)`` (or channels-first if the images are);
            ``"lifted_last"``: ``(B, H, W, m, C)``; ``"channels_first"``:
            ``(B, C, m, H, W)``. The last two fold the lifted axis into the
            channels for free (``conv_strategy="banded"``). ``"auto"``:
            :func:`keras_sl.backend_defaults.resolve_backbone_layout`.
        conv_strategy: how the lifted convolutions run, see
            :class:`keras_sl.layers.Convolution` (``"auto"``, ``"native"``,
            ``"banded"``). Except with ``"native"`` (plain Conv3D everywhere,
            the reference path), the first layer convolves a single slice of
            the lifted image, which all m slices equal.

    Example:
    >>> import numpy as np
    >>> model = SLUNet(levels=3, lift_depth=4, num_selected=2)
    >>> model.predict(np.random.rand(2, 32, 32, 3), verbose=0).shape
    (2, 32, 32, 1)
    """

    def __init__(
        self,
        num_classes: int = 1,
        levels: int = 5,
        num_res_units: int = 1,
        width: int = 8,
        lift_depth: int = 16,
        num_selected: int = 5,
        in_channels: int = 3,
        kernel_size=3,
        up_kernel_size=3,
        dropout: float = 0.0,
        activation: str | None = "auto",
        selected_slices: Sequence[int] | None = None,
        input_shape: Sequence | None = None,
        data_format: str | None = None,
        backbone_layout: str = "auto",
        conv_strategy: str = "auto",
        **kwargs,
    ):
        data_format = standardize_data_format(data_format)
        layout = backend_defaults.resolve_backbone_layout(backbone_layout)
        if num_selected >= lift_depth:
            raise ValueError(
                f"num_selected ({num_selected}) must be smaller than lift_depth "
                f"({lift_depth}) so that PQA has unselected slices to compare with."
            )
        if activation == "auto":
            activation = "sigmoid" if num_classes == 1 else "softmax"
        if input_shape is None:
            input_shape = (None, None, in_channels) if data_format == "channels_last" else (in_channels, None, None)
        input_shape = tuple(input_shape)
        rank = len(input_shape) - 1
        strides = lifted_strides(levels, lift_depth, rank)
        net_format = data_format if layout == "lifted_first" else (
            "channels_first" if layout == "channels_first" else "channels_last"
        )
        lifted_last = layout == "lifted_last"
        # The image in the backbone's data format (a cheap permute of the
        # small k-D input), then lifted straight into the backbone's layout.
        to_net = _permutation(data_format, net_format, rank)
        net_image_shape = _permuted(input_shape, to_net)
        lifted_shape = Lift(lift_depth, data_format=net_format, lifted_axis_last=lifted_last).compute_output_shape(
            (None, *net_image_shape)
        )[1:]
        # A compact backbone takes the lifted image as its one distinct slice.
        compact = UNet.runs_compact(True, conv_strategy, dropout)
        backbone = UNet(
            spatial_dims=rank + 1,
            in_channels=in_channels,
            out_channels=num_classes,
            channels=(width,) * levels,
            strides=strides,
            num_res_units=num_res_units,
            kernel_size=kernel_size,
            up_kernel_size=up_kernel_size,
            dropout=dropout,
            input_shape=lifted_shape,
            data_format=net_format,
            conv_strategy=conv_strategy,
            lifted_axis_last=lifted_last,
            lifted_input=True,
            compact_input=compact,
            name="backbone",
        )
        inputs = keras.Input(shape=input_shape, name="image")
        x = inputs
        if to_net is not None:
            x = keras.layers.Permute(to_net, name="to_backbone_format")(x)
        lifted = Lift(lift_depth, data_format=net_format, lifted_axis_last=lifted_last, compact=compact,
                      name="lift")(x)
        slice_logits = backbone(lifted)
        # Back to the canonical slice layout (B, m, *spatial, K) / (B, K, m, *spatial).
        to_slices = _slice_permutation(net_format, lifted_last, data_format, rank + 1)
        if to_slices is not None:
            slice_logits = keras.layers.Permute(to_slices, name="to_slice_layout")(slice_logits)
        super().__init__(inputs=inputs, outputs=slice_logits, **kwargs)

        self.backbone = backbone
        self.slice_head = SliceHead(
            depth=lift_depth,
            num_selected=num_selected,
            activation=activation,
            reduction="sum" if activation is not None else "mean",
            selected_slices=selected_slices,
            data_format=data_format,
            # Under mixed precision the sum of logits, the activation and Q
            # run in float32 (Keras' advice for output layers).
            dtype="float32",
            name="slice_head",
        )
        self.num_classes = num_classes
        self.levels = levels
        self.num_res_units = num_res_units
        self.width = width
        self.lift_depth = lift_depth
        self.num_selected = num_selected
        self.in_channels = in_channels
        self.kernel_size = kernel_size
        self.up_kernel_size = up_kernel_size
        self.dropout = dropout
        self.activation = activation
        self.backbone_layout = backbone_layout
        self.conv_strategy = conv_strategy
        self.resolved_backbone_layout = layout
        self.image_shape = input_shape
        self.data_format = data_format
        # Inference graphs wrap this model; keep them out of Keras' attribute
        # tracking (a tracked reference would make a cycle of layers).
        self._inference_cache = types.SimpleNamespace(models={})

    # -- properties ------------------------------------------------------------
    @property
    def stride_multiple(self) -> tuple[int, ...]:
        """Each image spatial size must be a multiple of this."""
        return total_strides(self.backbone.strides, self.backbone.spatial_dims)[1:]

    @property
    def selected_slices(self) -> list[int]:
        """Indices (0-based) of the slices combined at prediction time (eq. 7)."""
        return self.slice_head.get_selected()

    @selected_slices.setter
    def selected_slices(self, slices) -> None:
        self.slice_head.set_selected(slices)

    @property
    def slice_losses(self) -> np.ndarray:
        """Per-slice mean training loss from the last selection (NaN before)."""
        return self.slice_head.get_slice_losses()

    def count_params(self) -> int:
        """Parameters of the network, as MONAI counts them.

        The slice head's bookkeeping (selected indices and per-slice losses)
        is saved with the weights but is not a parameter.
        """
        return self.backbone.count_params()

    # -- training ---------------------------------------------------------------
    def compile(self, optimizer="auto", loss="auto", metrics="auto", jit_compile="auto", **kwargs):
        """Compile with the paper's defaults (Table V) where ``"auto"``.

        Defaults: AdamW(lr 1e-3, weight decay 1e-2, gradient values clipped
        to 0.5), the structure loss (WBCE + WIoU) on every slice for K=1 or
        categorical cross-entropy on every slice for K>1, and a slice-mean
        Dice monitor. Backend defaults (``keras_sl.backend_defaults``): on
        TensorFlow ``jit_compile="auto"`` resolves to False (XLA's CPU Conv3D
        is 30-100x slower than the native kernel); glibc's allocator is tuned
        so activations are not page-faulted in every step (torch; JAX when
        keras_sl is imported); on torch training steps run eagerly and
        ``jit_compile`` picks how ``predict`` runs:
        ``"auto"`` replays a captured ``torch.export`` graph, ``True``
        compiles it with inductor, ``False`` stays eager
        (:mod:`keras_sl.models.inference_graph`).
        """
        from keras_sl import losses as sl_losses
        from keras_sl.metrics import Dice

        if optimizer == "auto":
            optimizer = keras.optimizers.AdamW(learning_rate=1e-3, weight_decay=1e-2, clipvalue=0.5)
        if loss == "auto":
            if self.activation is None:
                inner = sl_losses.MaskedDepthLoss()
            elif self.num_classes == 1:
                inner = sl_losses.StructureLoss()
            else:
                inner = keras.losses.CategoricalCrossentropy(from_logits=True)
            loss = sl_losses.SliceSupervision(inner, data_format=self.data_format)
        if metrics == "auto":
            metrics = (
                []
                if self.activation is None
                else [Dice(num_classes=self.num_classes, from_logits=True, from_slices=True, data_format=self.data_format)]
            )
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=jit_compile, **kwargs)

    def fit(self, x=None, y=None, *args, **kwargs):
        """``keras.Model.fit`` with early, readable checks on array inputs."""
        if isinstance(x, np.ndarray):
            self._check(x.shape)
        if isinstance(y, np.ndarray) and self.activation == "sigmoid":
            check_binary_mask(y, "Training masks (y)")
        return super().fit(x, y, *args, **kwargs)

    # -- inference ---------------------------------------------------------------
    def _inference_model(self, with_quality: bool) -> keras.Model:
        """Functional graphs image -> prediction (and Q), sharing this model's
        layers and the slice head's selection variables."""
        cache = self._inference_cache.models
        if not cache:
            # Two graphs, so that eager backends (torch) do not compute Q for
            # a prediction-only call. The quality graph is built first: built
            # after the plain call, Keras loses the second output's history.
            image = keras.Input(shape=self.image_shape, name="image")
            prediction, q = self.slice_head(self(image), return_quality=True)
            cache[True] = _PredictionGraph(image, [prediction, q], name=f"{self.name}_quality")
            image = keras.Input(shape=self.image_shape, name="image")
            cache[False] = _PredictionGraph(image, self._prediction(image), name=f"{self.name}_inference")
            for graph in cache.values():
                graph._graph_mode_source = weakref.ref(self)
        return cache[with_quality]

    def _prediction(self, image):
        """``image -> act(sum of the selected slice logits)`` in a functional
        graph: through :class:`SelectedSliceSum` when the backbone ends with a
        linear residual unit on full-length slices (the unselected slices'
        last convolution is never run), else the model and its slice head."""
        last = self.backbone.layers[-1]
        if not (isinstance(last, ResidualUnit) and last.supports_lifted_sum
                and self.backbone.outputs[0] is last.output):
            return self.slice_head(self(image))
        trunk = keras.Model(self.backbone.inputs, last.input, name=f"{self.backbone.name}_trunk")
        x = image
        for name in ("to_backbone_format", "lift"):
            if any(layer.name == name for layer in self.layers):
                x = self.get_layer(name)(x)
        to_output = _permutation(last.data_format, self.data_format, len(self.image_shape) - 1)
        return SelectedSliceSum(last, self.slice_head, output_permutation=to_output,
                                name="selected_slice_sum")(trunk(x))

    def _run(self, fn, x, pad, **kwargs):
        if isinstance(x, np.ndarray):
            self._check(x.shape, divisible=not pad)
            if pad:
                padded, crop = pad_to_multiple(x, self.stride_multiple, self.data_format)
                return fn(padded, **kwargs), crop
        return fn(x, **kwargs), None

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None, pad: bool = True):
        """Probabilities ``act(sum of selected slice logits)`` (eq. 9), k-D.

        NumPy inputs of any spatial size are padded (reflect) to a multiple of
        the network stride and the output is cropped back to the input size.
        """
        out, crop = self._run(
            self._inference_model(False).predict, x, pad,
            batch_size=batch_size, verbose=verbose, steps=steps, callbacks=callbacks,
        )
        return out if crop is None else out[crop]

    def predict_quality(self, x, batch_size=None, verbose="auto", steps=None, pad: bool = True):
        """``(probabilities, Q)`` from one forward pass (eqs. 9 and 11)."""
        (probs, q), crop = self._run(
            self._inference_model(True).predict, x, pad,
            batch_size=batch_size, verbose=verbose, steps=steps,
        )
        return (probs if crop is None else probs[crop]), np.asarray(q)

    def predict_slices(self, x, batch_size=None, verbose="auto", steps=None, pad: bool = True):
        """Per-slice logits ``(B, m, *spatial, K)`` for analysis."""
        out, crop = self._run(super().predict, x, pad, batch_size=batch_size, verbose=verbose, steps=steps)
        if crop is None:
            return out
        lifted = 1 if self.data_format == "channels_last" else 2
        crop = list(crop)
        crop.insert(lifted, slice(None))
        return out[tuple(crop)]

    def segment(self, x, threshold: float = 0.5, **kwargs) -> np.ndarray:
        """Label maps (eq. 10): threshold for K=1, argmax over classes for K>1."""
        from keras_sl.postprocess import to_labels

        return to_labels(self.predict(x, **kwargs), threshold=threshold, data_format=self.data_format)

    # -- serialization -----------------------------------------------------------
    def get_config(self):
        return {
            "num_classes": self.num_classes,
            "levels": self.levels,
            "num_res_units": self.num_res_units,
            "width": self.width,
            "lift_depth": self.lift_depth,
            "num_selected": self.num_selected,
            "in_channels": self.in_channels,
            "kernel_size": self.kernel_size,
            "up_kernel_size": self.up_kernel_size,
            "dropout": self.dropout,
            "activation": self.activation,
            "selected_slices": self.selected_slices,
            "input_shape": list(self.image_shape),
            "data_format": self.data_format,
            "backbone_layout": self.backbone_layout,
            "conv_strategy": self.conv_strategy,
            "name": self.name,
            "trainable": self.trainable,
        }


class _PredictionGraph(XlaCompileOptionsMixin, InferenceGraphMixin, keras.Model):
    """A functional image -> prediction (and Q) graph of an SL model's layers.

    Follows the SL model's torch inference graph mode unless compiled itself.
    """
