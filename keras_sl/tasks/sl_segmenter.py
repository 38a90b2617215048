"""The Spatial Lifting task: lift -> network at rank k+1 -> slice head -> PQA."""

from __future__ import annotations

from typing import ClassVar, Sequence

import keras
import numpy as np

from keras_sl.layers.lift import Lift
from keras_sl.layers.slice_head import SliceHead
from keras_sl.tasks.task import Task
from keras_sl.utils.layout import standardize_data_format


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
    if net_format == "channels_last":
        chan = rank + 1
        lifted = rank if lifted_last else 1
    else:
        chan = 1
        lifted = rank + 1 if lifted_last else 2
    plane = [a for a in range(1, rank + 2) if a not in (chan, lifted)]
    dims = (lifted, *plane, chan) if data_format == "channels_last" else (chan, lifted, *plane)
    return None if dims == tuple(range(1, rank + 2)) else dims


def lifted_layout(backbone) -> tuple[str, bool, bool]:
    """``(data_format, lifted_axis_last, compact_input)`` a backbone declares.

    A rank-generic network needs none of these: by default the lifted axis is
    its first spatial axis (MONAI's ``(B, m, H, W, C)``) and it receives all m
    slices. Networks with a fast lifted layout (``keras_sl.UNet``) set
    ``lifted_axis_last`` / ``compact_input`` attributes.
    """
    return (
        standardize_data_format(getattr(backbone, "data_format", None)),
        bool(getattr(backbone, "lifted_axis_last", False)),
        bool(getattr(backbone, "compact_input", False)),
    )


@keras.saving.register_keras_serializable(package="keras_sl")
class SLSegmenter(Task):
    """Spatial Lifting around any rank-generic network (paper Section III).

    The image ``(B, *spatial, C)`` is lifted to ``(B, m, *spatial, C)`` (eq. 1)
    and run through ``backbone`` — the k-D network's twin built at rank k+1.
    ``model(x)`` returns the per-slice logits ``(B, m, *spatial, K)`` that
    training supervises (eq. 4); :meth:`predict` returns ``act(sum of the
    selected slices' logits)`` (eq. 9), :meth:`predict_quality` adds the PQA
    score Q (eq. 11), and the selection (eqs. 6-7,
    :class:`keras_sl.callbacks.SliceSelection`) is saved with the weights.

    Args:
        backbone: a network built at rank k+1 taking ``(B, m, *spatial, C)``
            (or declaring another lifted layout, see :func:`lifted_layout`).
        lift_depth: m, copies along the lifted axis (default 16, the paper's).
            A backbone with ``lifts_input = True`` (an encoder-decoder
            :class:`keras_sl.models.encoder_decoder.PyramidNetwork` that lifts
            its features) takes the k-D image and sets m itself.
        num_selected: s, slices combined at prediction time (5).
        activation: ``"auto"`` = sigmoid for K=1 else softmax; ``None`` for
            regression (slices are then averaged, not summed).
        selected_slices: initial selection (default: the central slices).
        input_shape: k-D image shape without batch (default: from the backbone).
        data_format: layout of the images (default: the backbone's).
        preprocessor: :class:`keras_sl.preprocessing.ImagePreprocessor`.

    Example:
    >>> import numpy as np, keras_sl
    >>> net = keras_sl.UNet(3, 3, 1, channels=(4, 4), strides=(2,), num_res_units=1,
    ...                     input_shape=(4, None, None, 3))
    >>> model = keras_sl.SLSegmenter(net, lift_depth=4, num_selected=2)
    >>> model.predict(np.zeros((1, 30, 30, 3), "uint8"), verbose=0).shape
    (1, 30, 30, 1)
    """

    def __init__(
        self,
        backbone,
        lift_depth: int | None = None,
        num_selected: int = 5,
        activation: str | None = "auto",
        selected_slices: Sequence[int] | None = None,
        input_shape: Sequence | None = None,
        data_format: str | None = None,
        preprocessor=None,
        **kwargs,
    ):
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        net_format, lifted_last, compact = lifted_layout(backbone)
        lifts = bool(getattr(backbone, "lifts_input", False))
        if lifts:
            # The network lifts its own (feature) inputs: it takes the k-D image.
            depth = int(backbone.lift_depth)
            if lift_depth not in (None, depth):
                raise ValueError(
                    f"The backbone lifts its inputs itself and returns {depth} slices; got lift_depth={lift_depth}. "
                    "Leave lift_depth out (or pass the backbone's)."
                )
            lift_depth = depth
        lift_depth = 16 if lift_depth is None else int(lift_depth)
        if num_selected >= lift_depth:
            raise ValueError(
                f"num_selected ({num_selected}) must be smaller than lift_depth "
                f"({lift_depth}) so that PQA has unselected slices to compare with."
            )
        data_format = standardize_data_format(data_format or net_format)
        net_shape = tuple(backbone.input_shape[1:])
        rank = len(net_shape) - (1 if lifts else 2)  # k: the image's spatial rank
        if input_shape is None:
            input_shape = net_shape if lifts else self._image_shape_from(net_shape, net_format, lifted_last,
                                                                         data_format)
        input_shape = tuple(input_shape)
        if len(input_shape) != rank + 1:
            raise ValueError(
                f"The backbone takes rank-{rank + 1} lifted inputs, so images must be {rank}-D; got "
                f"input_shape={input_shape}. Build the backbone with spatial_dims = image rank + 1."
            )
        to_net = _permutation(data_format, net_format, rank)
        inputs = keras.Input(shape=input_shape, name="image")
        x = inputs
        if to_net is not None:
            x = keras.layers.Permute(to_net, name="to_backbone_format")(x)
        if not lifts:
            x = Lift(lift_depth, data_format=net_format, lifted_axis_last=lifted_last, compact=compact,
                     name="lift")(x)
        slice_logits = backbone(x)
        to_slices = _slice_permutation(net_format, lifted_last, data_format, rank + 1)
        if to_slices is not None:
            slice_logits = keras.layers.Permute(to_slices, name="to_slice_layout")(slice_logits)
        super().__init__(inputs=inputs, outputs=slice_logits, **kwargs)

        self.num_classes = int(slice_logits.shape[-1 if data_format == "channels_last" else 1])
        if activation == "auto":
            activation = "sigmoid" if self.num_classes == 1 else "softmax"
        self.lift_depth = int(lift_depth)
        self.num_selected = int(num_selected)
        self.resolved_backbone_layout = (
            "lifted_last" if lifted_last else ("channels_first" if net_format == "channels_first"
                                               and data_format != "channels_first" else "lifted_first")
        )
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
        self._init_task(backbone, preprocessor, activation, data_format, input_shape)

    @staticmethod
    def _image_shape_from(net_shape, net_format, lifted_last, data_format):
        if net_format == "channels_last":
            spatial, channels = list(net_shape[:-1]), net_shape[-1]
        else:
            spatial, channels = list(net_shape[1:]), net_shape[0]
        spatial.pop(-1 if lifted_last else 0)
        spatial = [None] * len(spatial) if any(s is None for s in spatial) else spatial
        return (*spatial, channels) if data_format == "channels_last" else (channels, *spatial)

    # -- properties ------------------------------------------------------------------
    @property
    def stride_multiple(self) -> tuple[int, ...]:
        """Each image spatial size must be a multiple of this."""
        if getattr(self.backbone, "lifts_input", False):
            return tuple(self.backbone.stride_multiple)
        _, lifted_last, _ = lifted_layout(self.backbone)
        rank = len(self.backbone.input_shape) - 2
        multiple = tuple(getattr(self.backbone, "stride_multiple", (1,) * rank))
        return multiple[:-1] if lifted_last else multiple[1:]

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
        """Parameters of the network (the slice head's selection state is
        saved with the weights but is not a parameter)."""
        return self.backbone.count_params()

    # -- training ----------------------------------------------------------------------
    def _default_loss(self):
        from keras_sl.losses import SliceSupervision

        return SliceSupervision(self._default_inner_loss(), data_format=self.data_format)

    def _default_metrics(self, from_slices: bool = True):
        return super()._default_metrics(from_slices=True)

    # -- inference -----------------------------------------------------------------------
    def _inference_kinds(self) -> tuple[str, ...]:
        # The quality graph first: built after the plain call, Keras loses the
        # second output's history.
        return ("quality", "prediction")

    def _prediction_graph_outputs(self, image, kind: str):
        if kind == "quality":
            prediction, q = self.slice_head(self(image), return_quality=True)
            return [prediction, q]
        return self._prediction(image)

    def _prediction(self, image):
        """``image -> act(sum of the selected slice logits)``: through
        :class:`keras_sl.models.sl_unet.selected_slice_sum.SelectedSliceSum`
        when the backbone ends with a linear residual unit on full-length
        slices (the unselected slices' last convolution never runs), else the
        model and its slice head."""
        from keras_sl.blocks.residual_unit import ResidualUnit
        from keras_sl.models.sl_unet.selected_slice_sum import SelectedSliceSum

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

    def predict_quality(self, x, batch_size=None, verbose="auto", steps=None, pad: bool = True,
                        preprocess: bool = True, window=None, tta: str | None = None,
                        window_batch_size: int | None = None, window_quality: bool = False):
        """``(probabilities, Q)`` from one forward pass (eqs. 9 and 11); raw
        images as in :meth:`predict` (validated the same way; an empty batch
        gives empty arrays). Q is NaN for an image whose slice logits are not
        finite (e.g. NaN weights): treat it as flagged, as
        :func:`keras_sl.selective.is_flagged` does.

        ``window``, ``tta``, ``window_batch_size``: as in :meth:`predict`; with
        windows, Q is computed once on the whole image's blended slices. With
        ``window_quality`` (windows only) a third output holds each window's
        own Q (of its view-averaged slices, before blending) on the window
        grid: ``(B, n_rows, n_cols)`` (a list for a list of images;
        :func:`keras_sl.inference.window_grid` gives the windows' positions).
        """
        plan = self._host_plan(x, window, tta, window_batch_size, window_quality)
        if plan is not None:
            return self._run_host(x, "quality", plan, preprocess=preprocess, pad=pad, batch_size=batch_size,
                                  window_quality=window_quality)
        return self._run_raw(self._inference_model("quality").predict, x, preprocess=preprocess, pad=pad,
                             n_outputs=2, batch_size=batch_size, verbose=verbose, steps=steps)

    def predict_slices(self, x, batch_size=None, verbose="auto", steps=None, pad: bool = True,
                       preprocess: bool = True, window=None, tta: str | None = None,
                       window_batch_size: int | None = None):
        """Per-slice logits ``(B, m, *spatial, K)`` at each input's size, for
        analysis; raw images validated as in :meth:`predict`. With ``window``
        / ``tta`` (as in :meth:`predict`): the blended, view-averaged slice
        logits the slice head sees."""
        plan = self._host_plan(x, window, tta, window_batch_size)
        if plan is not None:
            (out,) = self._run_host(x, "slices", plan, preprocess=preprocess, pad=pad, batch_size=batch_size)
            return out
        (out,) = self._run_raw(super(Task, self).predict, x, preprocess=preprocess, pad=pad, kind="logits",
                               lead_axes=1, batch_size=batch_size, verbose=verbose, steps=steps)
        return out

    # -- the host path (windows, TTA): blend / average per-slice logits -----------------------
    _raw_lead_axes = 1  # self(x) is (B, m, *spatial, K)
    _HOST_OUTPUTS: ClassVar[dict[str, tuple]] = {
        "prediction": (1, 1, "probabilities", 0),
        "quality": (2, 1, "probabilities", 0),
        "slices": (1, 1, "logits", 1),
    }

    def _host_steps(self, output: str):
        # The slice head's NumPy twin: the same on every backend, nothing compiled per image size.
        head = self.slice_head
        if output == "prediction":  # the selected slices' sum per window: linear, so it commutes with blending
            return head.reduce_np, 0, lambda dense: (head.activate_np(dense),)
        if output == "slices":
            return None, 1, lambda dense: (dense,)
        if output == "quality":
            return None, 1, lambda dense: head.call_np(dense, return_quality=True)
        raise ValueError(f"{type(self).__name__} has no host-path output {output!r}.")

    def _window_quality(self, raw):
        return self.slice_head.quality_np(raw)

    # -- serialization --------------------------------------------------------------------
    def get_config(self):
        return {
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "lift_depth": self.lift_depth,
            "num_selected": self.num_selected,
            "activation": self.activation,
            "selected_slices": self.selected_slices,
            "input_shape": list(self.image_shape),
            "data_format": self.data_format,
            "preprocessor": self._preprocessor_config(),
            "name": self.name,
            "trainable": self.trainable,
        }
