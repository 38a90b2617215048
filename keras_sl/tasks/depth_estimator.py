"""Monocular depth estimation tasks: the 2-D :class:`DepthEstimator` and its SL twin :class:`SLDepthEstimator`.

Same base as segmentation (:class:`keras_sl.tasks.task.Task`: preprocessor,
raw-image I/O, input checks), with a regression head: no activation, the
masked L1 + MSE loss of the paper's Table V (pixels whose target depth is 0
or NaN are left out), depth metrics, and — for the SL twin — the mean of the
selected slices as the prediction, a depth PQA score Q per image
(:func:`keras_sl.depth_quality.quality`) and a per-pixel uncertainty map
(the spread of the selected slices), all from one forward pass.

Example:
>>> import numpy as np, keras_sl
>>> net = keras_sl.UNet(3, 3, 1, channels=(4, 4), strides=(2,), num_res_units=1,
...                     input_shape=(4, None, None, 3))
>>> model = SLDepthEstimator(net, lift_depth=4, num_selected=2)
>>> depth, uncertainty, q = model.predict_uncertainty(np.zeros((1, 30, 30, 3), "uint8"), verbose=0)
>>> depth.shape, uncertainty.shape, q.shape
((1, 30, 30, 1), (1, 30, 30, 1), (1,))
"""

from __future__ import annotations

from typing import ClassVar

import keras

from keras_sl.tasks.segmenter import Segmenter
from keras_sl.tasks.sl_segmenter import SLSegmenter


def _check_activation(cls_name: str, activation) -> None:
    if activation not in (None, "auto", "linear"):
        raise ValueError(f"{cls_name} predicts depth with a linear head; got activation={activation!r}. "
                         "Use keras_sl.Segmenter / SLSegmenter for a classification head.")


def depth_metrics(from_slices: bool = False, data_format: str | None = None) -> list:
    """The ``fit`` monitors of a depth task: RMSE, AbsRel and δ1 on valid pixels."""
    from keras_sl.metrics.depth import AbsRel, Delta1, DepthRMSE

    return [cls(from_slices=from_slices, data_format=data_format) for cls in (DepthRMSE, AbsRel, Delta1)]


class _DepthTask:
    """What both depth tasks share: depth targets, no ``segment``, no activation in the config."""

    def _target_kind(self) -> str:
        return "depth"  # fit/evaluate refuse negative or Inf depths; 0 and NaN are "no measurement"

    def segment(self, x, threshold: float = 0.5, **kwargs):
        raise TypeError(f"{type(self).__name__} predicts depth, not labels: use predict() (metres at each "
                        "input's size).")

    def get_config(self):
        config = super().get_config()
        config.pop("activation", None)
        return config


@keras.saving.register_keras_serializable(package="keras_sl")
class DepthEstimator(_DepthTask, Segmenter):
    """A k-D network as a depth model that takes raw images (the 2-D twin of :class:`SLDepthEstimator`).

    ``model(x)`` returns the network's depth map; :meth:`predict` returns it
    at each input's size (bilinear), in the target's unit (metres for
    keras_sl's depth datasets). ``compile()`` defaults: AdamW (Table V),
    :class:`keras_sl.losses.MaskedDepthLoss` (masked L1 + MSE), RMSE /
    AbsRel / δ1 monitors.

    Args:
        backbone: a network ``(B, *spatial, C) -> (B, *spatial, 1)``, e.g. an
            encoder-decoder from the zoo (``effnetlite0_fastdepth``).
        preprocessor: :class:`keras_sl.preprocessing.ImagePreprocessor`.

    Example:
    >>> import numpy as np, keras_sl
    >>> net = keras_sl.UNet(2, 3, 1, channels=(8, 16), strides=(2,), num_res_units=1)
    >>> model = DepthEstimator(net)
    >>> model.predict(np.zeros((1, 30, 30, 3), "uint8"), verbose=0).shape
    (1, 30, 30, 1)
    """

    def __init__(self, backbone, preprocessor=None, activation=None, **kwargs):
        _check_activation(type(self).__name__, activation)
        super().__init__(backbone, activation=None, preprocessor=preprocessor, **kwargs)

    def _default_metrics(self, from_slices: bool = False):
        return depth_metrics(from_slices=False, data_format=self.data_format)



@keras.saving.register_keras_serializable(package="keras_sl")
class SLDepthEstimator(_DepthTask, SLSegmenter):
    """An SL depth model: lift, run the network at rank k+1, average the selected slices.

    Every output slice is supervised with the masked L1 + MSE loss
    (:class:`keras_sl.losses.SliceSupervision` around
    :class:`keras_sl.losses.MaskedDepthLoss`); after training,
    :class:`keras_sl.callbacks.SliceSelection` keeps the ``num_selected``
    slices of lowest final-epoch training loss (eq. 6-7). :meth:`predict`
    returns their mean; :meth:`predict_quality` adds the depth PQA score Q
    (:func:`keras_sl.depth_quality.quality`: 1 - the mean relative
    disagreement of selected and unselected slices; high = confident, so it
    correlates NEGATIVELY with the per-image error); :meth:`predict_uncertainty`
    also returns the per-pixel standard deviation of the selected slices,
    in metres — one forward pass for all three.

    Args: as :class:`keras_sl.SLSegmenter`, without ``activation``.

    Example: see the module docstring.
    """

    def __init__(self, backbone, lift_depth: int | None = None, num_selected: int = 5, activation=None,
                 selected_slices=None, input_shape=None, data_format=None, preprocessor=None, **kwargs):
        _check_activation(type(self).__name__, activation)
        super().__init__(backbone, lift_depth=lift_depth, num_selected=num_selected, activation=None,
                         selected_slices=selected_slices, input_shape=input_shape, data_format=data_format,
                         preprocessor=preprocessor, **kwargs)
        if self.num_selected < 2:
            raise ValueError(f"num_selected={self.num_selected}: the uncertainty map is the spread of the "
                             "selected slices, so SLDepthEstimator needs num_selected >= 2.")

    def _default_metrics(self, from_slices: bool = True):
        return depth_metrics(from_slices=True, data_format=self.data_format)


    def _inference_kinds(self) -> tuple[str, ...]:
        return ("uncertainty", "prediction")

    def _prediction_graph_outputs(self, image, kind: str):
        if kind == "uncertainty":
            depth, q, uncertainty = self.slice_head(self(image), return_quality=True, return_uncertainty=True)
            return [depth, uncertainty, q]
        return self.slice_head(self(image))

    def predict_quality(self, x, batch_size=None, verbose="auto", steps=None, pad: bool = True,
                        preprocess: bool = True, window=None, tta: str | None = None,
                        window_batch_size: int | None = None, window_quality: bool = False):
        """``(depth, Q)`` at each input's size, one forward pass (see :meth:`predict_uncertainty`;
        with ``window_quality``, ``(depth, Q, per-window Q)``)."""
        depth, _, *rest = self.predict_uncertainty(
            x, batch_size=batch_size, verbose=verbose, steps=steps, pad=pad, preprocess=preprocess, window=window,
            tta=tta, window_batch_size=window_batch_size, window_quality=window_quality)
        return (depth, *rest)

    def predict_uncertainty(self, x, batch_size=None, verbose="auto", steps=None, pad: bool = True,
                            preprocess: bool = True, window=None, tta: str | None = None,
                            window_batch_size: int | None = None, window_quality: bool = False):
        """``(depth, uncertainty, Q)``: the mean of the selected slices and
        the per-pixel population std of those slices (both at each input's
        size, bilinear, in the target's unit) and the per-image depth PQA
        score Q (NaN when a slice is not finite). Raw images are validated
        as in :meth:`predict`; an empty batch gives empty arrays.

        ``window``, ``tta``, ``window_batch_size``: as in
        :meth:`keras_sl.tasks.task.Task.predict` — the per-slice depths are
        blended over windows (and averaged over flips) first, then the mean,
        the spread and Q are computed on the whole image's slices.
        ``window_quality`` adds a 4th output, each window's own depth Q on
        the window grid (see :meth:`keras_sl.SLSegmenter.predict_quality`)."""
        plan = self._host_plan(x, window, tta, window_batch_size, window_quality)
        if plan is not None:
            return self._run_host(x, "uncertainty", plan, preprocess=preprocess, pad=pad, batch_size=batch_size,
                                  window_quality=window_quality)
        return self._run_raw(self._inference_model("uncertainty").predict, x, preprocess=preprocess, pad=pad,
                             n_outputs=3, n_spatial=2, batch_size=batch_size, verbose=verbose, steps=steps)

    _HOST_OUTPUTS: ClassVar[dict[str, tuple]] = {**SLSegmenter._HOST_OUTPUTS, "uncertainty": (3, 2, "probabilities", 0)}

    def _host_steps(self, output: str):
        if output != "uncertainty":
            return super()._host_steps(output)
        def head(dense):
            depth, q, uncertainty = self.slice_head.call_np(dense, return_quality=True, return_uncertainty=True)
            return depth, uncertainty, q

        return None, 1, head
