"""What every keras_sl task shares: a backbone, a preprocessor, raw-image I/O.

A task is a functional ``keras.Model`` = preprocessor (NumPy side, saved in
the config) + a backbone network + a head. ``model(x)`` returns what training
supervises (logits); ``predict`` and friends take raw images — uint8 or float,
any size, one batch array or a list of differently sized images — and return
results at each input's size.

Raw inputs are validated on the host before any backend op
(:mod:`keras_sl.tasks.input_checks`, :meth:`ImagePreprocessor.check`): dtype,
rank, channels, NaN/Inf pixels, empty data, and for training the masks'
shape and values. The errors read the same on every backend.
"""

from __future__ import annotations

import warnings
import weakref
from typing import ClassVar

import keras
import numpy as np

from keras_sl.models.base import SLModel
from keras_sl.preprocessing import ImagePreprocessor
from keras_sl.tasks import input_checks
from keras_sl.utils.checks import check_finite_images, check_network_inputs


def _is_raw(x) -> bool:
    """NumPy-like image data the preprocessor can take (not a dataset)."""
    return isinstance(x, np.ndarray) or (isinstance(x, (list, tuple)) and len(x) > 0 and all(
        isinstance(i, np.ndarray) for i in x))


def _is_raw_for_predict(x) -> bool:
    """Prediction inputs taken as raw images: arrays, and any list or tuple
    (one image per item; checked item by item)."""
    return isinstance(x, (np.ndarray, list, tuple))


class Task(SLModel):
    """Base of keras_sl tasks (``Segmenter``, ``SLSegmenter``, ``SLUNet``).

    Subclasses build their functional graph, call ``super().__init__`` with
    it, then :meth:`_init_task`. They implement ``_prediction_graph_outputs``.
    """

    # -- set-up ---------------------------------------------------------------------
    def _init_task(self, backbone, preprocessor, activation, data_format, image_shape):
        self.backbone = backbone
        self.activation = activation
        self.data_format = data_format
        self.image_shape = tuple(image_shape)
        self.in_channels = int(image_shape[-1] if data_format == "channels_last" else image_shape[0])
        if preprocessor is None:
            preprocessor = ImagePreprocessor(data_format=data_format)
        elif isinstance(preprocessor, dict):
            preprocessor = keras.saving.deserialize_keras_object(preprocessor)
        if preprocessor.data_format != data_format:
            raise ValueError(
                f"The preprocessor's data_format ({preprocessor.data_format!r}) differs from the model's "
                f"({data_format!r}); build ImagePreprocessor(data_format={data_format!r}, ...)."
            )
        preprocessor.pad_multiple = self.stride_multiple
        # A plain object: keep it out of Keras' attribute tracking.
        object.__setattr__(self, "_preprocessor", preprocessor)
        # Prediction graphs refer back to this model: not Keras-tracked.
        object.__setattr__(self, "_inference_cache_models", {})
        self._window_spec(None)  # a window the network cannot take fails now, not at the first predict

    @property
    def preprocessor(self) -> ImagePreprocessor:
        """How raw images become network inputs (saved with the model)."""
        return self._preprocessor

    @preprocessor.setter
    def preprocessor(self, value: ImagePreprocessor) -> None:
        if not isinstance(value, ImagePreprocessor):
            raise TypeError(f"preprocessor must be a keras_sl.preprocessing.ImagePreprocessor, got {type(value).__name__}.")
        value.pad_multiple = self.stride_multiple
        previous = self._preprocessor
        object.__setattr__(self, "_preprocessor", value)
        try:
            self._window_spec(None)
        except ValueError:
            object.__setattr__(self, "_preprocessor", previous)
            raise

    # -- compile defaults -------------------------------------------------------------
    def _default_inner_loss(self):
        from keras_sl import losses as sl_losses

        if self.activation is None:
            return sl_losses.MaskedDepthLoss()
        if self.num_classes == 1:
            return sl_losses.StructureLoss()
        return keras.losses.CategoricalCrossentropy(from_logits=True)

    def _default_loss(self):
        return self._default_inner_loss()

    def _default_metrics(self, from_slices: bool = False):
        from keras_sl.metrics import Dice

        if self.activation is None:
            return []
        return [Dice(num_classes=self.num_classes, from_logits=True, from_slices=from_slices,
                     data_format=self.data_format)]

    def compile(self, optimizer="auto", loss="auto", metrics="auto", jit_compile="auto", **kwargs):
        """Compile with the paper's defaults (Table V) where ``"auto"``.

        AdamW (lr 1e-3, weight decay 1e-2, gradient values clipped to 0.5), the
        structure loss (WBCE + WIoU) for K=1 or categorical cross-entropy for
        K>1 (masked L1 + MSE for regression), and a Dice monitor. ``jit_compile``
        follows each backend's measured best (:mod:`keras_sl.backend_defaults`).
        """
        if optimizer == "auto":
            optimizer = keras.optimizers.AdamW(learning_rate=1e-3, weight_decay=1e-2, clipvalue=0.5)
        if loss == "auto":
            loss = self._default_loss()
        if metrics == "auto":
            metrics = self._default_metrics()
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=jit_compile, **kwargs)

    # -- training -----------------------------------------------------------------------
    def prepare_training_arrays(self, x, y=None):
        """Raw training images (and masks) -> network inputs, through the
        model's preprocessor: resized to its ``image_size`` (masks with
        nearest-neighbour), normalised. Images must share one size afterwards.

        Checked first, on the host: at least one image; pixel dtype, rank and
        channels; no NaN/Inf pixels (the error names the images); one mask per
        image with its image's height and width and ``num_classes`` channels
        (one channel of labels 0..K-1 when the compiled loss is sparse;
        ``(H, W)`` masks of a one-channel target get their channel axis);
        binary / one-hot masks finite and in [0, 1].
        """
        images, _ = self.preprocessor.split_images(x)
        input_checks.refuse_empty(images, method="fit/evaluate")
        self._check_raw_images(images)
        self.preprocessor.check(images)
        masks = None if y is None else ImagePreprocessor.split_images(y)[0]
        if masks is not None and len(masks) != len(images):
            raise ValueError(f"x and y have different lengths: {len(images)} images and {len(masks)} masks.")
        if masks is not None:
            masks = input_checks.check_targets(
                masks, [self.preprocessor.spatial_shape(img) for img in images], num_classes=self.num_classes,
                kind=self._target_kind(), data_format=self.data_format)
        pairs = [self.preprocessor.prepare_pair(img, None if masks is None else masks[i])
                 for i, img in enumerate(images)]
        shapes = {p[0].shape for p in pairs}
        if len(shapes) > 1:
            raise ValueError(
                f"Training images have different sizes {sorted(shapes)}; build the model's preprocessor with "
                "image_size=(H, W) to resize them, or pass one size."
            )
        out_x = self.preprocessor.normalize(np.stack([p[0] for p in pairs]))
        check_network_inputs(out_x, images, list(range(len(images))))
        if masks is None:
            return out_x, None
        out_y = np.stack([np.asarray(p[1], dtype="float32") for p in pairs])
        return out_x, out_y

    def _target_kind(self) -> str:
        """``"binary"``, ``"one_hot"``, ``"sparse"`` (a compiled sparse loss) or ``"regression"``."""
        return input_checks.target_kind(self.activation, self.num_classes, getattr(self, "loss", None))

    def _check_raw_images(self, x) -> None:
        """Dtype, rank and channels of raw images against this model."""
        input_checks.check_images_for_model(x, in_channels=self.in_channels, rank=len(self.image_shape) - 1,
                                            data_format=self.data_format, model_name=self.name)

    def _check_network_ready(self, x, y):
        """Checks of arrays fed as they are (``preprocess=False``): pixel
        dtype, rank, channels, NaN/Inf, stride multiple, and the masks; returns
        ``y`` (with a channel axis added to ``(B, H, W)`` masks of a one-class
        model)."""
        if not isinstance(x, np.ndarray):
            return y
        self._check_raw_images(x)
        check_finite_images(x)
        self._check(x.shape)
        if isinstance(y, np.ndarray) or _is_raw(y):
            y = input_checks.check_target_batch(np.asarray(y), x.shape, num_classes=self.num_classes,
                                                kind=self._target_kind(), data_format=self.data_format)
        return y

    def _prepare_for_keras(self, x, y, preprocess: bool, method: str, argument: str = "x"):
        """Validated (and, for raw arrays, preprocessed) ``x, y`` for Keras' fit/evaluate."""
        input_checks.refuse_empty(x, method=method, argument=argument)
        if preprocess and _is_raw(x):
            x, y = self.prepare_training_arrays(x, y)
            self._check(x.shape)
            return x, y
        return x, self._check_network_ready(x, y)

    def _check_loader(self, data) -> None:
        loader_pre = getattr(data, "preprocessor", None)
        if loader_pre is not None and loader_pre != self.preprocessor:
            raise ValueError(
                f"The data loader preprocesses with {loader_pre!r} but the model predicts with "
                f"{self.preprocessor!r}; build the loader with preprocessor=model.preprocessor."
            )

    def fit(self, x=None, y=None, *args, preprocess: bool = True, **kwargs):
        """``keras.Model.fit``; NumPy images go through the model's preprocessor
        first (``preprocess=False`` feeds them as they are), a
        :class:`keras_sl.datasets.SegmentationLoader` must use the model's
        preprocessor.

        Raw arrays (and ``validation_data`` arrays) are validated before
        training starts (:meth:`prepare_training_arrays`): no samples, a
        non-pixel dtype, NaN/Inf pixels, masks of the wrong shape, or NaN /
        out-of-[0, 1] classification masks raise a clear error instead of
        silently turning the weights to NaN.
        """
        self._check_loader(x)
        x, y = self._prepare_for_keras(x, y, preprocess, "fit")
        validation = kwargs.get("validation_data")
        if isinstance(validation, (tuple, list)) and len(validation) >= 2 and (
                _is_raw(validation[0]) or input_checks.is_empty(validation[0])):
            vx, vy = self._prepare_for_keras(validation[0], validation[1], preprocess, "fit",
                                             argument="validation_data")
            kwargs["validation_data"] = (vx, vy, *validation[2:])
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, preprocess: bool = True, **kwargs):
        """``keras.Model.evaluate`` with NumPy images preprocessed and
        validated as in :meth:`fit`."""
        self._check_loader(x)
        x, y = self._prepare_for_keras(x, y, preprocess, "evaluate")
        return super().evaluate(x, y, *args, **kwargs)

    # -- inference ------------------------------------------------------------------------
    def _inference_model(self, kind: str) -> keras.Model:
        """Functional ``image -> outputs`` graphs sharing this model's layers
        (``kind`` in ``"prediction"``, ``"quality"``; True/False stand for
        with/without quality), built once."""
        if isinstance(kind, bool):
            kind = "quality" if kind else "prediction"
        cache = self._inference_cache_models
        if not cache:
            from keras_sl.tasks.prediction_graph import PredictionGraph

            for name in self._inference_kinds():
                image = keras.Input(shape=self.image_shape, name="image")
                graph = PredictionGraph(image, self._prediction_graph_outputs(image, name),
                                        name=f"{self.name}_{name}")
                graph._graph_mode_source = weakref.ref(self)
                cache[name] = graph
        return cache[kind]

    def _inference_kinds(self) -> tuple[str, ...]:
        return ("prediction",)

    def _prediction_graph_outputs(self, image, kind: str):
        raise NotImplementedError

    def _run_raw(self, fn, x, *, preprocess: bool, pad: bool, kind: str = "probabilities",
                 lead_axes: int = 0, n_outputs: int = 1, n_spatial: int = 1, windows: bool = False,
                 graph=None, **kwargs):
        """Run ``fn`` (a Keras predict) on raw images and restore the outputs.

        Returns a tuple of ``n_outputs`` results; the first ``n_spatial`` are
        spatial (restored to each input's size), the others per image (e.g. Q). Inputs are
        validated first; an empty batch gives empty outputs without running
        the model (shaped as the outputs of ``graph()``, default ``fn.__self__``).
        ``windows``: the images are only normalised (no resize, no padding):
        ``fn`` predicts them by sliding windows.
        """
        rank = len(self.image_shape) - 1

        def empty():
            outs = input_checks.empty_outputs(fn.__self__ if graph is None else graph(), x, n_outputs=n_outputs,
                                              lead_axes=lead_axes, rank=rank, data_format=self.data_format,
                                              n_spatial=n_spatial)
            return (*outs, *[np.zeros((0,), "float32")] * (n_outputs - len(outs)))

        if not _is_raw_for_predict(x):  # a dataset or tensor: fed as it is
            if input_checks.is_empty(x):
                if isinstance(x, keras.utils.PyDataset):
                    raise ValueError("predict got a PyDataset without batches; pass at least one image.")
                self._check(tuple(x.shape), divisible=False)
                return empty()
            out = fn(x, **kwargs)
            return tuple(out) if n_outputs > 1 else (out,)
        pre = self.preprocessor
        if not preprocess:
            pre = ImagePreprocessor(data_format=self.data_format)
            pre.pad_multiple = self.stride_multiple
        if windows:
            pre, pad = pre.for_windows(), True
        if isinstance(x, tuple):
            x = list(x)
        self._check_raw_images(x)  # dtype, rank and channels, before the batch is split into images
        if input_checks.is_empty(x):
            return empty()
        if not pad:
            multiple, pre.pad_multiple = pre.pad_multiple, None
        try:
            prepared = pre.prepare(x)  # NaN/Inf pixels are refused here, naming the images
        finally:
            if not pad:
                pre.pad_multiple = multiple
        if not pad:
            for _, batch in prepared.groups:
                self._check(batch.shape)
        results = [[None] * prepared.count for _ in range(n_outputs)]
        for indices, batch in prepared.groups:
            out = fn(batch, **kwargs)
            out = tuple(out) if n_outputs > 1 else (out,)
            for k in range(n_outputs):
                values = np.asarray(out[k])
                for j, index in enumerate(indices):
                    results[k][index] = values[j]
        _warn_if_not_finite(results[0])
        spatial = [pre.restore(r, prepared, kind=kind, lead_axes=lead_axes) for r in results[:n_spatial]]
        rest = [np.asarray(r) if not prepared.was_list else list(r) for r in results[n_spatial:]]
        return (*spatial, *rest)

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None,
                pad: bool = True, preprocess: bool = True, window=None, tta: str | None = None,
                window_batch_size: int | None = None):
        """Probabilities (regression: values) at each input's size.

        ``x``: raw images — a batch array ``(B, H, W, C)`` or a list of
        ``(H, W, C)`` arrays of any sizes, uint8, integer, bool or float —
        preprocessed with :attr:`preprocessor` (``preprocess=False`` skips
        resizing and normalisation; padding to the stride multiple still
        happens unless ``pad=False``). A list gives a list back. A single
        image ``(H, W, C)`` is refused: pass ``x[None]``.

        Checked before the model runs: a non-pixel dtype (object, string,
        complex) raises a TypeError; a wrong rank or channel count (with a
        hint when the batch looks channels-first) or a NaN/Inf pixel (the
        error names the images) a ValueError. An empty batch ``x[:0]`` gives
        empty outputs ``(0, H, W, K)`` (``[]`` for an empty list) without
        running the model. Non-finite outputs from finite inputs (e.g. NaN
        weights) raise a ``RuntimeWarning``.

        **Windows** (``window``; default None: as the preprocessor's
        ``inference`` says). ``False``: resize to ``image_size``, pad, one
        pass. ``True``: sliding windows of the preprocessor's ``window_size``
        (else ``image_size``); an int, ``(H, W)`` or a
        :class:`keras_sl.inference.WindowSpec`: that window. In window mode
        each image is normalised but not resized, and predicted by
        :func:`keras_sl.inference.sliding_window_inference` with the
        preprocessor's ``window_overlap``, ``window_blend`` and
        ``window_sigma``, ``window_batch_size`` windows (default 4) per
        network call. The window must be a multiple of
        :attr:`stride_multiple`. What is blended is the network's raw output:
        logits (regression: values) of a k-D network; for SL models every
        slice's logits, so the slice head — the selected slices' sum or mean,
        the activation, Q, the depth uncertainty — runs once on the whole
        image's blended slices (for :meth:`predict` alone the selected
        slices are summed per window before blending: the same result, the
        sum being linear, with 1/m of the memory).

        **Test-time augmentation** (``tta="flips"``; default None): each
        network input — the padded image, or each window — is also run
        flipped horizontally, vertically and both (k-D: along every set of
        axes, padding included), the outputs are flipped back and their
        logits averaged (:func:`keras_sl.inference.with_flips`); for SL
        models the average is taken per slice, before the selected-slice sum
        and the activation, so Q compares the view-averaged slices.

        With ``window`` or ``tta`` the model runs on the host path
        (``predict_on_batch`` per batch of ``batch_size`` images, default 32,
        or of windows; ``verbose``, ``steps`` and ``callbacks`` are unused)
        and ``x`` must be raw images; ``pad`` does not apply to windows.
        """
        plan = self._host_plan(x, window, tta, window_batch_size)
        if plan is not None:
            (out,) = self._run_host(x, "prediction", plan, preprocess=preprocess, pad=pad, batch_size=batch_size)
            return out
        (out,) = self._run_raw(self._inference_model("prediction").predict, x, preprocess=preprocess, pad=pad,
                               batch_size=batch_size, verbose=verbose, steps=steps, callbacks=callbacks)
        return out

    def segment(self, x, threshold: float = 0.5, **kwargs):
        """Label maps (eq. 10): threshold for K=1, argmax over classes for K>1,
        at each input's size (a list in, a list out); inputs are validated as
        in :meth:`predict`."""
        from keras_sl.postprocess import to_labels

        probs = self.predict(x, **kwargs)
        if isinstance(probs, list):
            return [to_labels(p[None], threshold=threshold, data_format=self.data_format)[0] for p in probs]
        return to_labels(probs, threshold=threshold, data_format=self.data_format)

    # -- windows and test-time augmentation (the host path) ----------------------------------
    #: Axes of ``self(x)`` between the batch (channels_first: channel) axis and the spatial axes.
    _raw_lead_axes = 0
    #: Host-path outputs: name -> (number of outputs, spatial outputs, restore kind, restore lead axes).
    _HOST_OUTPUTS: ClassVar[dict[str, tuple]] = {
        "prediction": (1, 1, "probabilities", 0),
        "logits": (1, 1, "logits", 0),
    }

    def _window_spec(self, window, window_batch_size: int | None = None):
        """The :class:`keras_sl.inference.WindowSpec` of this call (None: one
        pass of the resized image), checked against the network."""
        spec = self.preprocessor.window_spec(window, window_batch_size)
        if spec is None:
            return None
        rank = len(self.image_shape) - 1
        spec = spec.for_rank(rank)
        multiple = tuple(int(m) for m in self.stride_multiple)
        if any(w % m for w, m in zip(spec.size, multiple)):
            fixed = tuple(max(m, round(w / m) * m) for w, m in zip(spec.size, multiple))
            raise ValueError(
                f"The window {spec.size} is not a multiple of {self.name}'s stride multiple {multiple}; use e.g. "
                f"window={fixed} (or set the preprocessor's window_size to it)."
            )
        spatial = self.image_shape[:-1] if self.data_format == "channels_last" else self.image_shape[1:]
        if all(n is not None for n in spatial) and tuple(spatial) != spec.size:
            raise ValueError(f"{self.name} takes {tuple(spatial)} images only; predict with window={tuple(spatial)}.")
        return spec

    def _host_plan(self, x, window, tta, window_batch_size, window_quality: bool = False):
        """``(window spec or None, flip views)`` when this call needs the host
        path (windows or TTA), else None (the prediction graphs)."""
        from keras_sl.inference.tta import flip_views

        views = flip_views(tta, len(self.image_shape) - 1)
        if not _is_raw_for_predict(x):
            if window not in (None, False) or len(views) > 1 or window_quality:
                raise ValueError("window, tta and window_quality need raw NumPy images (a batch array or a list of "
                                 "images); a dataset or tensor is fed to the network as it is.")
            return None
        spec = self._window_spec(window, window_batch_size)
        if window_quality and spec is None:
            raise ValueError("window_quality=True gives one Q per window: predict with windows (window=True, "
                             "window=(H, W), or a preprocessor built with inference='window').")
        if spec is None and len(views) == 1:
            return None
        return spec, views

    def _host_steps(self, output: str):
        """``(reduce, reduced lead axes, head)`` of a host-path output:
        ``reduce`` maps the network's (view-averaged) output of a batch or of
        windows before blending, ``head`` the blended result to the outputs."""
        if output == "logits":
            return None, 0, lambda dense: (dense,)
        return None, 0, lambda dense: (self._activate_host(dense),)

    def _activate_host(self, logits: np.ndarray) -> np.ndarray:
        from keras_sl.layers.slice_head import host_activation

        return host_activation(logits, self.activation, -1 if self.data_format == "channels_last" else 1)

    def _window_quality(self, raw: np.ndarray) -> np.ndarray:
        raise ValueError(f"{type(self).__name__} has no PQA score: window_quality needs an SL model.")

    def _network_on_batch(self, batch: np.ndarray) -> np.ndarray:
        """``self(batch)`` (logits, or an SL model's per-slice logits) as float32 NumPy."""
        return np.asarray(self.predict_on_batch(batch), dtype="float32")

    def _run_host(self, x, output: str, plan, *, preprocess: bool, pad: bool, batch_size=None,
                  window_quality: bool = False):
        """Raw images -> ``output`` through windows and/or TTA (see :meth:`predict`)."""
        spec, views = plan
        n_outputs, n_spatial, kind, lead_axes = self._HOST_OUTPUTS[output]

        def graph():
            return self if output in ("logits", "slices") else self._inference_model(output)

        def run_group(batch):
            outs = self._host_predict(batch, output, spec, views, batch_size, window_quality)
            return outs if n_outputs + window_quality > 1 else outs[0]

        return self._run_raw(run_group, x, preprocess=preprocess, pad=pad, kind=kind, lead_axes=lead_axes,
                             n_outputs=n_outputs + int(window_quality), n_spatial=n_spatial,
                             windows=spec is not None, graph=graph)

    def _host_predict(self, batch: np.ndarray, output: str, spec, views, batch_size, window_quality: bool):
        """One group of prepared images (sharing a shape) -> the outputs' tuple."""
        from keras_sl.inference.sliding_window import sliding_window_inference
        from keras_sl.inference.tta import with_flips

        net = with_flips(self._network_on_batch, views, self.data_format, self._raw_lead_axes)
        reduce, reduced_lead, head = self._host_steps(output)
        reduce = reduce or (lambda raw: raw)
        parts = []
        if spec is None:
            step = int(batch_size or 32)
            for begin in range(0, len(batch), step):
                parts.append(head(reduce(net(batch[begin:begin + step]))))
        else:
            def on_windows(windows):
                raw = net(windows)
                if window_quality:
                    return reduce(raw), self._window_quality(raw)
                return reduce(raw)

            for i in range(len(batch)):
                result = sliding_window_inference(
                    batch[i:i + 1], on_windows, spec.size, overlap=spec.overlap, blend=spec.blend,
                    sigma=spec.sigma, batch_size=spec.batch_size, data_format=self.data_format,
                    lead_axes=reduced_lead, pad_mode=self.preprocessor.pad_mode)
                dense, *extra = result if window_quality else (result,)
                parts.append((*head(dense), *extra))
        return tuple(np.concatenate([part[k] for part in parts]) for k in range(len(parts[0])))

    # -- serialization ----------------------------------------------------------------------
    def _preprocessor_config(self):
        return keras.saving.serialize_keras_object(self.preprocessor)



def _warn_if_not_finite(outputs) -> None:
    """Warn when predictions of (finite) inputs are NaN/Inf: the weights are."""
    bad = [i for i, out in enumerate(outputs) if not np.isfinite(out).all()]
    if bad:
        shown = ", ".join(str(i) for i in bad[:10]) + (" ..." if len(bad) > 10 else "")
        warnings.warn(
            f"The predictions of image(s) {shown} are NaN or Inf although the inputs are finite: the model's "
            "weights are probably not finite (did training diverge?). Check "
            "all(np.isfinite(w).all() for w in model.get_weights()).",
            RuntimeWarning,
            stacklevel=3,
        )
