"""Per-slice explanations of SL models (paper Fig. 2): saliency, Grad-CAM, guided backpropagation.

An SL network returns m slice predictions ``P_z`` (eq. 4) before its slice
head combines the selected ones (eq. 9). :func:`explain` asks, for every
slice z, which input pixels (saliency, guided backpropagation) and which
regions of a late feature map (Grad-CAM) its output depends on — one map per
slice at the image's size, as in the paper's Fig. 2. The 2-D twins
(:class:`keras_sl.Segmenter`, :class:`keras_sl.DepthEstimator`) are explained
the same way as a model with a single slice.

**What is explained.** Slice z's *score* is the mean of its output over a
region of the image, for one output channel ``c``:

* segmentation (``region="auto"`` = ``"foreground"``): slice z's **logit**
  of class ``c`` averaged over the pixels the model's prediction (the
  selected slices, eq. 10) labels as ``c`` — so every slice is asked about
  the same region, the one the model segments; when the prediction has no
  such pixel, over the whole image. ``c``: ``target_class``; default the
  foreground of a one-channel model, else the non-background class (class 0
  is taken as background) with the most predicted pixels (1 if none).
* depth / regression (``"auto"`` = ``"all"``): slice z's value averaged over
  the whole image.
* ``region="all"``, or a boolean ``(H, W)`` mask at the image's size: that region.

Logits, not probabilities, are explained (the usual choice: a saturated
sigmoid would hide the gradients). Padding added for the network's stride
multiple is never part of the region.

**Methods** (each map ``(m, H, W)``, float32, at the input image's size):

* ``"saliency"``: ``max_colour |∂ score_z / ∂ x|`` (Simonyan et al. 2014),
  ``x`` the network input — the image after the model's preprocessor
  (resized, normalised); cropped and resized back like a prediction.
* ``"gradcam"``: Grad-CAM (Selvaraju et al. 2017) on a feature map ``A`` of
  ``layer``: ``ReLU(Σ_c α_c A_c)``, ``α_c`` the spatial mean of
  ``∂ score_z / ∂ A_c``, resized bilinearly to the image. ``A`` is taken at
  the lifted position of slice z: the layer's lifted slice ``j = ⌊z·n/m⌋``
  when the layer keeps the lifted axis with n slices (``j = z`` when
  ``n = m``); a layer without a lifted axis (a 2-D encoder feature, the
  2-D twin) gives every slice the same ``A``, weighted by that slice's own
  gradients. Layers that store equal lifted slices once
  (:mod:`keras_sl.layers.lifted_structure`) get the stored slice's
  gradient divided by the number of slices it stands for (their mean: the
  per-slice gradients of provably equal slices cannot be told apart).
  Default layer (:func:`default_layer`): the last layer of the network,
  before the one that produces its output, whose output has the lifted axis
  at its full length m and the output's spatial size (else the last with a
  lifted axis, else the last at the output's size) — for ``keras_sl.UNet``
  backbones the top up-convolution ``up0`` (K channels, full resolution);
  ``layer="up1_res"`` gives a coarser map of ``width`` channels (half the
  resolution; in the SL-UNets also half the lifted positions, so slices
  ``2j`` and ``2j + 1`` read position ``j``). Nested layers are named by a
  path (``"down0/unit0"``); one that a fused block never calls (the top
  unit of a UNet runs as one convolution) is refused with a ``ValueError``.
* ``"guided_backprop"`` (Springenberg et al. 2015): the saliency with every
  rectifier's backward pass replaced by ``max(g, 0) · f'(x)`` — only
  positive gradients, through the units the forward pass opened (for ReLU
  exactly the usual rule ``max(g, 0) · [x > 0]``; for a PReLU of slope
  ``a`` the negative side passes ``a · max(g, 0)``). Done with
  ``keras.ops.custom_gradient`` on all three backends, for keras_sl's PReLU
  (also where the instance norm fuses it: the reference norm runs instead)
  and Keras' ``ReLU``, ``LeakyReLU``, ``PReLU`` and ``"relu"`` /
  ``"relu6"`` / ``"leaky_relu"`` activations (so the UNets, SL-UNets and
  the EfficientNet-Lite encoders qualify). A rectifier computed inline in a
  layer's own code (``ops.relu`` in the PVTv2, EMCAD, HSNet, CASCADE, ...
  blocks) cannot be overridden from outside without editing those layers,
  so guided backpropagation is refused for any network with layers whose
  code keras_sl has not checked: :func:`explain` raises
  ``NotImplementedError`` naming them (:func:`guided_backprop_unsupported`
  tells beforehand).
  Other nonlinearities (sigmoid, GELU, norms) keep their gradients, as in
  the original method. Shown like the saliency, ``max_colour |·|``. The
  maps can be all zero — a ``RuntimeWarning`` says so — when every gradient
  reaching the rectifier nearest the output is negative: an SL-UNet whose
  top PReLU feeds the output through a convolution of negative net weight
  (seen on ``dsb2018_sl_unet_5l1r``; ``dsb2018_sl_unet_5l2r`` is not so).

Gradients come from each backend's autodiff (``jax.vjp``,
``tf.GradientTape``, ``torch.autograd``): one recorded forward pass, then
one backward pass per slice, for saliency and Grad-CAM together (guided
backpropagation records its own pass; a plain pass before them finds the
region, the class and Grad-CAM's layer). The gradient with respect to a
hidden layer is the gradient with respect to a zero added to that layer's
output (its ``call`` is wrapped for the pass, then restored), so nothing is
rebuilt and the weights are shared. The recorded pass keeps the network's
activations for the m backward passes: memory grows like training's for
one image. The network runs on the
whole image in one pass, also for presets that predict by sliding windows
(the explanation of a window-blended output would mix the windows' own
normalisations).

Example:
>>> import numpy as np, keras_sl
>>> from keras_sl.explain import explain
>>> net = keras_sl.UNet(3, 3, 1, channels=(4, 4), strides=(2,), num_res_units=1,
...                     input_shape=(4, None, None, 3))
>>> model = keras_sl.SLSegmenter(net, lift_depth=4, num_selected=2)
>>> result = explain(model, np.random.default_rng(0).random((12, 10, 3)))
>>> result["saliency"].shape, result["gradcam"].shape, result["layer"], result["selected_slices"]
((4, 12, 10), (4, 12, 10), 'up0', [1, 2])
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Sequence

import keras
import numpy as np
from keras import ops

#: The methods :func:`explain` knows, in the order figures show them.
METHODS = ("saliency", "gradcam", "guided_backprop")

# Module prefixes whose layers compute no rectifier out of reach of guided backpropagation: keras_sl's
# rank-generic layers and blocks (PReLU through the "prelu" op), the tasks, the UNet families, the pyramid
# networks, backbones and EfficientNet-Lite (their own layers only convolve and resize; ReLU6 is a Keras
# Activation), and Keras' own layers (rectifier layers and activations are overridden).
_GUIDABLE_MODULES = ("keras_sl.layers.", "keras_sl.blocks.", "keras_sl.tasks.", "keras_sl.models.unet.",
                     "keras_sl.models.sl_unet.", "keras_sl.models.encoder_decoder.", "keras_sl.models.backbone.",
                     "keras_sl.models.efficientnet_lite.", "keras.")
_GUIDED_PATH = "guided_backprop"
#: The warning of guided maps that are all zero.
ALL_ZERO_GUIDED = ("guided backpropagation gave all-zero maps: no positive gradient passes the rectifiers between "
                   "the output and the input (typically the rectifier nearest the output receives a gradient <= 0 "
                   "everywhere); the saliency and Grad-CAM are unaffected")


# -- the public API ------------------------------------------------------------------------------------------------
def explain(model, image, methods: Sequence[str] | str = ("saliency", "gradcam"), layer: str | None = None,
            target_class: int | None = None, region="auto") -> dict:
    """Per-slice explanation maps of one image (see the module docstring).

    Args:
        model: a keras_sl task: :class:`keras_sl.SLSegmenter` /
            :class:`keras_sl.SLUNet` / :class:`keras_sl.SLDepthEstimator`, or a
            2-D twin (:class:`keras_sl.Segmenter`, :class:`keras_sl.DepthEstimator`;
            one "slice").
        image: one raw image ``(H, W, C)`` (``(C, H, W)`` for channels-first
            models), uint8 or float, as :meth:`predict` takes it.
        methods: names from :data:`METHODS` (a string for one).
        layer: Grad-CAM's layer: a layer name of the network (e.g. ``"up0"``,
            ``"up1_res"``), or a path ``"up1_res/unit0"`` into nested layers;
            default :func:`default_layer`.
        target_class: the output channel explained (see the module docstring).
        region: ``"auto"``, ``"foreground"``, ``"all"`` or a boolean ``(H, W)``
            mask at the image's size: the pixels each slice's score averages.

    Returns:
        A dict: one ``(m, H, W)`` float32 map per requested method (keys as in
        :data:`METHODS`); ``"task"``: ``"segmentation"`` or ``"regression"``;
        ``"prediction"``: the model's prediction at the image's size
        (``predict`` / ``predict_quality``, as the preset predicts: probabilities
        ``(H, W, K)``, depth for depth models); ``"quality"``: Q (SL models,
        else None);
        ``"selected_slices"``; ``"lift_depth"`` (m, 1 for 2-D twins);
        ``"target_class"``; ``"scores"``: each slice's score ``(m,)``;
        ``"region"``: the ``(H, W)`` boolean mask averaged over, and
        ``"region_kind"`` (``"foreground"``, ``"all"``, ``"mask"``, or
        ``"all (no foreground predicted)"``); with Grad-CAM ``"layer"`` (the
        layer's path) and ``"gradcam_slices"`` (the layer's lifted slice used
        for each output slice; None without a lifted axis).
    """
    methods = _check_methods(methods)
    image = _check_image(model, image)
    if "guided_backprop" in methods:
        reason = guided_backprop_unsupported(model)
        if reason:
            raise NotImplementedError(reason)
    setup = _Setup(model, image)
    target = None
    if "gradcam" in methods:
        target = _resolve_layer(model, layer) if layer is not None else _default_layer(model, setup)
    logits, shape = setup.forward(target)
    c = _target_class(model, setup, logits, target_class)
    weights, kind = setup.region_weights(logits, c, region)
    result = {"task": "regression" if model.activation is None else "segmentation", "lift_depth": setup.m,
              "selected_slices": setup.selected, "target_class": c,
              "region": setup.to_image_size(weights[None] > 0, kind="labels")[0].astype(bool),
              "region_kind": kind}
    scores = [float((logits[z, ..., c] * weights).sum()) for z in range(setup.m)]
    result["scores"] = np.asarray(scores, "float32")

    if "saliency" in methods or "gradcam" in methods:
        maps = setup.backward(target, shape, c, weights, want_x="saliency" in methods)
        if "saliency" in methods:
            result["saliency"] = setup.to_image_size(maps["saliency"])
        if "gradcam" in methods:
            cams, slices = _gradcam(setup, target, maps["activation"], maps["activation_grads"])
            result["gradcam"] = np.maximum(setup.to_image_size(cams), 0.0)
            result["layer"], result["gradcam_slices"] = target.path, slices
    if "guided_backprop" in methods:
        with _guided_rectifiers(model):
            maps = setup.backward(None, None, c, weights, want_x=True)
        result["guided_backprop"] = setup.to_image_size(maps["saliency"])
        if not result["guided_backprop"].any():
            warnings.warn(ALL_ZERO_GUIDED, RuntimeWarning, stacklevel=2)
    for name in METHODS:
        if name in result:
            result[name] = np.ascontiguousarray(result[name], dtype="float32")
    prediction, quality = _prediction(model, image)
    result["prediction"], result["quality"] = prediction, quality
    return result


def default_layer(model, image_shape: Sequence[int] | None = None) -> str:
    """The path of the layer Grad-CAM uses by default (see the module
    docstring), found by running the network once on a zero image of
    ``image_shape`` (default: the preprocessor's ``image_size`` or 64 × 64)."""
    if image_shape is None:
        size = tuple(model.preprocessor.image_size or (64,) * (len(model.image_shape) - 1))
        image_shape = (*size, model.in_channels) if model.data_format == "channels_last" else (
            model.in_channels, *size)
    return _default_layer(model, _Setup(model, np.zeros(tuple(image_shape), "float32"))).path


def layer_paths(model) -> list[str]:
    """Grad-CAM candidates: the network's (backbone's) own layers, in graph order
    (their nested layers are reached by a path, ``"up0_res/unit0"``)."""
    return [layer.name for layer in _network_layers(model)]


def find_layer(model, name: str) -> str:
    """The path of the Grad-CAM layer ``name`` (as :func:`explain`'s ``layer``);
    a ``ValueError`` naming the candidates when there is none."""
    return _resolve_layer(model, name).path


def guided_backprop_unsupported(model) -> str | None:
    """Why guided backpropagation cannot run on ``model`` (None when it can):
    the layers whose code computes activations that cannot be overridden
    from outside."""
    bad = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        module = type(layer).__module__ + "."
        if module.startswith(_GUIDABLE_MODULES) or _runs_graph_only(layer):
            continue
        bad.append(f"{layer.name} ({type(layer).__module__}.{type(layer).__name__})")
    if not bad:
        return None
    shown = ", ".join(bad[:6]) + (f" and {len(bad) - 6} more" if len(bad) > 6 else "")
    return ("guided backpropagation replaces the backward pass of every rectifier, which keras_sl can do for "
            "its PReLU and Keras' rectifier layers and activations only; these layers run code of their own that "
            f"may compute rectifiers out of its reach: {shown}. Use saliency and Grad-CAM for this model.")


# -- checks --------------------------------------------------------------------------------------------------------
def _check_methods(methods) -> tuple[str, ...]:
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    methods = tuple(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"Unknown explanation method(s) {unknown}; choose from {list(METHODS)}." if unknown
                         else f"No explanation method given; choose from {list(METHODS)}.")
    return tuple(m for m in METHODS if m in methods)


def _check_image(model, image) -> np.ndarray:
    from keras_sl.tasks.task import Task

    if not isinstance(model, Task):
        raise TypeError(f"explain needs a keras_sl task (SLSegmenter, SLUNet, Segmenter, a depth estimator); "
                        f"got {type(model).__name__}.")
    image = np.asarray(image)
    rank = len(model.image_shape) - 1
    if image.ndim != rank + 1:
        raise ValueError(f"explain takes one image of rank {rank + 1} ({'H, W, C' if rank == 2 else 'spatial, C'}); "
                         f"got shape {image.shape}" + (" (a batch? pass one image)" if image.ndim == rank + 2 else "")
                         + ".")
    channels = image.shape[-1] if model.data_format == "channels_last" else image.shape[0]
    if channels != model.in_channels:
        raise ValueError(f"{model.name} takes {model.in_channels}-channel images; got shape {image.shape}.")
    return image


# -- the network input and its outputs -----------------------------------------------------------------------------
def _is_sl(model) -> bool:
    from keras_sl.tasks.sl_segmenter import SLSegmenter

    return isinstance(model, SLSegmenter)


class _Setup:
    """One image prepared for the network, and the bookkeeping between the
    network's layout, the canonical slice layout ``(m, *spatial, K)`` and the
    image's size."""

    def __init__(self, model, image: np.ndarray):
        self.model = model
        pre = model.preprocessor
        if getattr(pre, "inference", "resize") == "window":  # the whole image in one pass (module docstring)
            pre = pre.for_windows()
            pre.pad_multiple = model.stride_multiple
        self.pre = pre
        self.prepared = pre.prepare([image])
        (_, batch), = self.prepared.groups
        self.x = np.asarray(batch, "float32")
        self.rank = len(model.image_shape) - 1
        self.channels_last = model.data_format == "channels_last"
        self.sl = _is_sl(model)
        self.m = int(model.lift_depth) if self.sl else 1
        self.selected = list(model.selected_slices) if self.sl else [0]
        spatial = self.x.shape[1:-1] if self.channels_last else self.x.shape[2:]
        self.net_spatial = tuple(int(n) for n in spatial)
        self.valid = tuple(int(n) for n in self.prepared.resized[0])

    # layouts
    def canonical(self, out) -> np.ndarray:
        """The network output of the one image as ``(m, *spatial, K)``."""
        out = np.asarray(out, "float32")[0]
        if not self.channels_last:
            out = np.moveaxis(out, 0, -1)
        return out if self.sl else out[None]

    def from_canonical(self, a: np.ndarray) -> np.ndarray:
        a = a if self.sl else a[0]
        if not self.channels_last:
            a = np.moveaxis(a, -1, 0)
        return a[None]

    def to_image_size(self, maps: np.ndarray, kind: str = "logits") -> np.ndarray:
        """``(m, *net_spatial)`` maps -> ``(m, *image_spatial)`` (crop the padding, resize back)."""
        maps = np.asarray(maps, "float32")
        arr = maps[..., None] if self.channels_last else maps[None]
        back = self.pre.restore_one(arr, 0, self.prepared, kind=kind, lead_axes=1)
        return back[..., 0] if self.channels_last else back[0]

    # forward and backward
    def forward(self, target):
        """The network's output (canonical, NumPy) and the shape of ``target``'s output."""
        with _tapped(target) as tap:
            out = self.model(ops.convert_to_tensor(self.x), training=False)
        shape = None if target is None else tuple(int(n) for n in tap.outputs[0].shape)
        return self.canonical(ops.convert_to_numpy(out)), shape

    def region_weights(self, logits: np.ndarray, c: int, region) -> tuple[np.ndarray, str]:
        """Per-pixel weights of the score (sum 1) on the network's grid, and the region's kind."""
        valid = np.zeros(self.net_spatial, bool)
        valid[tuple(slice(0, n) for n in self.valid)] = True
        kind = region
        if isinstance(region, str):
            if region not in ("auto", "foreground", "all"):
                raise ValueError(f"region must be 'auto', 'foreground', 'all' or a boolean mask; got {region!r}.")
            if region == "auto":
                kind = "all" if self.model.activation is None else "foreground"
            if kind == "foreground":
                if self.model.activation is None:
                    raise ValueError("region='foreground' needs a segmentation model; a regression (depth) model "
                                     "has no predicted foreground: use region='all' or a mask.")
                mask = valid & (_predicted_labels(self.model, logits, self.selected) == c)
                if not mask.any():
                    mask, kind = valid, "all (no foreground predicted)"
            else:
                mask = valid
        else:
            mask = self._mask_to_network(region) & valid
            kind = "mask"
            if not mask.any():
                raise ValueError("The region mask selects no pixel.")
        return mask.astype("float32") / float(mask.sum()), kind

    def _mask_to_network(self, region) -> np.ndarray:
        region = np.asarray(region)
        size = tuple(self.prepared.sizes[0])
        if region.shape != size:
            raise ValueError(f"The region mask must have the image's spatial shape {size}; got {region.shape}.")
        mask = np.asarray(region, bool)
        if tuple(self.valid) != size:
            if self.rank != 2:
                raise ValueError("A region mask of a resized image needs 2-D images.")
            mask = _resize_plane(mask.astype("float32"), self.valid, nearest=True) > 0.5
        out = np.zeros(self.net_spatial, bool)
        out[tuple(slice(0, n) for n in self.valid)] = mask
        return out

    def backward(self, target, shape, c: int, weights: np.ndarray, want_x: bool) -> dict:
        """One forward pass and a backward pass per slice: ``saliency``
        ``(m, *net_spatial)``; with ``target``, its ``activation`` (NumPy) and
        the gradient of each slice's score with respect to it (list of m)."""
        x = ops.convert_to_tensor(self.x)
        delta = None if target is None else ops.zeros(shape, dtype="float32")
        primals = (x,) if delta is None else (x, delta)

        def fn(*args):
            with _tapped(target, args[1] if len(args) > 1 else None) as tap:
                out = self.model(args[0], training=False)
            return out, (tap.outputs[0] if tap.outputs else ops.zeros((), dtype="float32"))

        out, aux, pull = _vjp(fn, primals)
        out_np = self.canonical(ops.convert_to_numpy(out))
        saliency, grads = [], []
        for z in range(self.m):
            cot = np.zeros_like(out_np)
            cot[z, ..., c] = weights
            g = pull(self.from_canonical(cot))
            if want_x:
                gx = _to_numpy(g[0], self.x.shape)[0]
                gx = np.abs(gx).max(axis=-1 if self.channels_last else 0)
                saliency.append(gx)
            if target is not None:
                grads.append(_to_numpy(g[1], shape))
        maps = {"saliency": np.stack(saliency) if saliency else None}
        if target is not None:
            maps["activation"] = np.asarray(ops.convert_to_numpy(aux), "float32")
            maps["activation_grads"] = grads
        return maps


def _to_numpy(g, shape) -> np.ndarray:
    """A gradient as NumPy (zeros when the backend reports none: the input was not used)."""
    if g is None:
        return np.zeros(shape, "float32")
    return np.asarray(ops.convert_to_numpy(g), "float32")


def _predicted_labels(model, logits: np.ndarray, selected) -> np.ndarray:
    """The model's label map (eq. 10) on the network's grid from canonical logits ``(m, *spatial, K)``."""
    combined = logits[list(selected)].sum(axis=0)
    if combined.shape[-1] == 1:
        return np.where(combined[..., 0] > 0, 0, -1)  # class 0 = the foreground of a one-channel model
    return combined.argmax(axis=-1)


def _target_class(model, setup: _Setup, logits: np.ndarray, target_class) -> int:
    k = logits.shape[-1]
    if target_class is not None:
        if (isinstance(target_class, bool) or not isinstance(target_class, (int, np.integer))
                or not 0 <= target_class < k):
            raise ValueError(f"target_class must be an integer in [0, {k - 1}] for this {k}-channel model; "
                             f"got {target_class!r}.")
        return int(target_class)
    if k == 1 or model.activation is None:
        return 0
    labels = _predicted_labels(model, logits, setup.selected)[tuple(slice(0, n) for n in setup.valid)]
    counts = np.bincount(labels.ravel(), minlength=k)[1:]
    return int(counts.argmax()) + 1 if counts.any() else 1


def _prediction(model, image):
    """``model.predict`` (and Q) of the image at its size."""
    if hasattr(model, "predict_quality"):
        pred, q = model.predict_quality([image], verbose=0)
        return np.asarray(pred[0], "float32"), float(np.asarray(q[0]))
    return np.asarray(model.predict([image], verbose=0)[0], "float32"), None


# -- gradients through each backend's autodiff ---------------------------------------------------------------------
def _vjp(fn: Callable, primals: tuple):
    """``fn(*primals) -> (output, aux)`` once, and a pullback: ``pull(cotangent)``
    gives the gradient of ``sum(cotangent * output)`` with respect to each primal
    (None where a backend reports an unused input)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        out, pull, aux = jax.vjp(fn, *primals, has_aux=True)
        return out, aux, lambda cot: pull(jnp.asarray(cot, out.dtype))
    if backend == "tensorflow":
        import tensorflow as tf

        tape = tf.GradientTape(persistent=True)
        with tape:
            for p in primals:
                tape.watch(p)
            out, aux = fn(*primals)
        return out, aux, lambda cot: tape.gradient(out, list(primals), output_gradients=tf.constant(cot, out.dtype))
    if backend == "torch":
        import torch

        leaves = tuple(p.detach().requires_grad_(True) for p in primals)
        with torch.enable_grad():
            out, aux = fn(*leaves)
        aux = aux.detach() if isinstance(aux, torch.Tensor) else aux

        def pull(cot):
            cot = torch.as_tensor(cot, dtype=out.dtype, device=out.device)
            return torch.autograd.grad(out, leaves, grad_outputs=cot, retain_graph=True, allow_unused=True)

        return out.detach(), aux, pull
    raise NotImplementedError(f"keras_sl.explain needs gradients; the {backend!r} backend has none it can use "
                              "(run with KERAS_BACKEND=jax, tensorflow or torch).")


# -- Grad-CAM's layer ----------------------------------------------------------------------------------------------
class _Target:
    """A layer whose output is tapped, and its path."""

    def __init__(self, layer, path: str):
        self.layer, self.path = layer, path


class _Tap:
    def __init__(self):
        self.outputs: list = []


@contextlib.contextmanager
def _tapped(target: _Target | None, delta=None):
    """Inside the block, ``target``'s layer records its output (and adds
    ``delta`` to it: the gradient with respect to ``delta`` at 0 is the
    gradient with respect to the output)."""
    tap = _Tap()
    if target is None:
        yield tap
        return
    layer = target.layer
    original = layer.call

    def call(*args, **kwargs):
        out = original(*args, **kwargs)
        if isinstance(out, (list, tuple, dict)):
            raise TypeError(f"Grad-CAM needs a layer with one output tensor; {target.path!r} returns "
                            f"{type(out).__name__}.")
        tap.outputs.append(out)
        if len(tap.outputs) > 1:
            raise ValueError(f"The layer {target.path!r} runs {len(tap.outputs)} times in one forward pass; "
                             "Grad-CAM needs a layer that runs once.")
        return out if delta is None else out + ops.cast(delta, out.dtype)

    with _instance_attribute(layer, "call", call):
        yield tap
    if not tap.outputs:
        raise ValueError(f"The layer {target.path!r} did not run in the model's forward pass; choose another "
                         "(keras_sl.explain.layer_paths(model) lists the network's layers).")


@contextlib.contextmanager
def _instance_attribute(obj, name: str, value):
    """Set ``obj.name`` on the instance for the block (bypassing Keras' and
    torch's attribute tracking), then restore what was there."""
    had = name in obj.__dict__
    previous = obj.__dict__.get(name)
    object.__setattr__(obj, name, value)
    try:
        yield
    finally:
        if had:
            object.__setattr__(obj, name, previous)
        else:
            object.__delattr__(obj, name)


def _network_layers(model) -> list:
    """The network's own (top-level) layers in graph order, inputs left out."""
    return [layer for layer in getattr(model.backbone, "layers", []) if not isinstance(layer, keras.layers.InputLayer)]


def _children(layer) -> list:
    if hasattr(layer, "layers"):
        return list(layer.layers)
    return list(layer._flatten_layers(include_self=False, recursive=False))


def _resolve_layer(model, name) -> _Target:
    """A layer given by name (a layer of the network, else of the model, else
    unique anywhere inside it) or by a path ``a/b/c`` of names."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"layer must be a layer name; got {name!r}.")
    name = name.strip().strip("/")
    net = model.backbone
    allowed = {id(layer) for layer in net._flatten_layers(include_self=True, recursive=True)}
    allowed |= {id(layer) for layer in model.layers if layer.name in ("lift", "to_backbone_format")}
    if "/" in name:
        parts = name.split("/")
        node, found = model, None
        if parts[0] == net.name:  # "u_net/up0"
            node, parts = net, parts[1:]
        elif not any(child.name == parts[0] for child in _children(model)):
            node = net
        for part in parts:
            found = next((child for child in _children(node) if child.name == part), None)
            if found is None:
                raise ValueError(f"No layer {part!r} in {node.name!r} (from layer={name!r}); its layers: "
                                 f"{', '.join(child.name for child in _children(node))}.")
            node = found
        layer, path = found, name
    else:
        layer = next((ly for ly in net.layers if ly.name == name), None) if hasattr(net, "layers") else None
        if layer is None:
            layer = next((ly for ly in model.layers if ly.name == name), None)
        if layer is None:
            matches = [ly for ly in net._flatten_layers(include_self=False, recursive=True) if ly.name == name]
            if len(matches) > 1:
                raise ValueError(f"{len(matches)} layers are named {name!r}; give a path such as "
                                 f"'{_parent_path(net, matches[0])}'.")
            layer = matches[0] if matches else None
        if layer is None:
            raise ValueError(f"No layer {name!r} in {model.name}; Grad-CAM layers of its network: "
                             f"{', '.join(layer_paths(model))} (nested layers as a path, e.g. 'up0_res/unit0').")
        path = name
    if id(layer) not in allowed:
        raise ValueError(f"Grad-CAM explains the network's feature maps; {name!r} is outside it. Choose one of "
                         f"{', '.join(layer_paths(model))}.")
    is_input = isinstance(layer, keras.layers.InputLayer)
    if is_input:
        raise ValueError(f"{name!r} is the network's input; use the saliency for gradients of the input.")
    return _Target(layer, path)


def _parent_path(root, layer) -> str:
    def walk(node, prefix):
        for child in _children(node):
            path = f"{prefix}/{child.name}" if prefix else child.name
            if child is layer:
                return path
            found = walk(child, path) if _children(child) else None
            if found:
                return found
        return None

    return walk(root, "") or layer.name


def _default_layer(model, setup: _Setup) -> _Target:
    """The last network layer before the output layer whose output keeps the
    lifted axis at full length and the output's spatial size (module docstring)."""
    net = model.backbone
    candidates = _network_layers(model)
    output_layer = _producer(net)
    shapes: dict[int, tuple] = {}
    with contextlib.ExitStack() as stack:
        taps = [(ly, stack.enter_context(_recording(ly))) for ly in candidates if ly is not output_layer]
        model(ops.convert_to_tensor(setup.x), training=False)
    for ly, tap in taps:
        if len(tap.outputs) == 1 and hasattr(tap.outputs[0], "shape"):
            shapes[id(ly)] = tuple(int(n) for n in tap.outputs[0].shape)
    layout = _Layout(model)
    full, lifted, spatial = [], [], []
    for ly in candidates:
        shape = shapes.get(id(ly))
        if shape is None:
            continue
        info = layout.describe(shape, getattr(ly, "output_pattern", None))
        if info is None:
            continue
        n_logical, plane = info
        if n_logical is not None:
            lifted.append(ly)
            if n_logical == setup.m and plane == setup.net_spatial:
                full.append(ly)
        elif plane == setup.net_spatial:
            spatial.append(ly)
    chosen = (full or lifted or spatial or [None])[-1]
    if chosen is None:
        raise ValueError(f"No layer of {model.name}'s network qualifies for Grad-CAM by default; pass layer= "
                         f"(one of {', '.join(layer_paths(model))}).")
    return _Target(chosen, chosen.name)


def _producer(net):
    """The layer that produces the network's (first) output."""
    try:
        history = net.outputs[0]._keras_history
        return history.operation
    except (AttributeError, IndexError):
        return None


@contextlib.contextmanager
def _recording(layer):
    tap = _Tap()
    original = layer.call

    def call(*args, **kwargs):
        out = original(*args, **kwargs)
        tap.outputs.append(out)
        return out

    with _instance_attribute(layer, "call", call):
        yield tap


class _Layout:
    """Where the lifted and channel axes sit in the network's tensors."""

    def __init__(self, model):
        self.k = len(model.image_shape) - 1
        if _is_sl(model):
            from keras_sl.tasks.sl_segmenter import lifted_layout

            self.data_format, self.lifted_last, _ = lifted_layout(model.backbone)
        else:
            self.data_format, self.lifted_last = model.data_format, False

    def to_canonical(self, a: np.ndarray) -> tuple[np.ndarray, bool]:
        """One image's feature map ``(1, ...)`` -> ``(n, *plane, C)`` with the
        lifted axis first (``(*plane, C)`` and False without one)."""
        a = a[0]
        if self.data_format == "channels_first":
            a = np.moveaxis(a, 0, -1)
        if a.ndim == self.k + 2:
            if self.lifted_last:
                a = np.moveaxis(a, -2, 0)
            return a, True
        if a.ndim == self.k + 1:
            return a, False
        raise ValueError(f"Grad-CAM needs a feature map with {self.k} spatial axes (and the lifted axis) and "
                         f"channels; this layer's output has shape {(1, *a.shape)}.")

    def describe(self, shape: tuple, pattern) -> tuple | None:
        """``(logical lifted length or None, plane shape)`` of a feature map, None if it is not one."""
        try:
            a, lifted = self.to_canonical(np.empty(shape, np.bool_))
        except ValueError:
            return None
        if not lifted:
            return None, tuple(a.shape[:-1])
        n = len(pattern) if pattern is not None else a.shape[0]
        return n, tuple(a.shape[1:-1])


def _gradcam(setup: _Setup, target: _Target, activation: np.ndarray, grads: list) -> tuple[np.ndarray, list | None]:
    """Per-slice Grad-CAM ``(m, *net_spatial)`` (before the final ReLU's
    resize) and the lifted slice used for each output slice."""
    layout = _Layout(setup.model)
    a, lifted = layout.to_canonical(activation)
    pattern = getattr(target.layer, "output_pattern", None)
    cams, used = [], []
    for z in range(setup.m):
        g, _ = layout.to_canonical(grads[z])
        if lifted:
            logical = len(pattern) if pattern is not None else a.shape[0]
            j = (z * logical) // setup.m
            stored = pattern[j] if pattern is not None else j
            count = list(pattern).count(stored) if pattern is not None else 1
            a_z, g_z = a[stored], g[stored] / count
            used.append(int(j))
        else:
            a_z, g_z = a, g
        plane_axes = tuple(range(a_z.ndim - 1))
        alpha = g_z.mean(axis=plane_axes)
        cam = np.maximum((a_z * alpha).sum(axis=-1), 0.0)
        cams.append(_resize_to(cam, setup.net_spatial))
    return np.stack(cams).astype("float32"), (used if lifted else None)


def _resize_plane(plane: np.ndarray, size, nearest: bool = False) -> np.ndarray:
    from PIL import Image

    h, w = int(size[0]), int(size[1])
    img = Image.fromarray(np.asarray(plane, "float32"), mode="F")
    return np.asarray(img.resize((w, h), Image.NEAREST if nearest else Image.BILINEAR), "float32")


def _resize_to(cam: np.ndarray, size) -> np.ndarray:
    if tuple(cam.shape) == tuple(size):
        return cam
    if cam.ndim != 2:
        raise ValueError(f"Grad-CAM maps of {cam.ndim}-D images can only be shown at the layer's own size; "
                         f"the layer gives {cam.shape}, the image {tuple(size)}.")
    return _resize_plane(cam, size)


# -- guided backpropagation ----------------------------------------------------------------------------------------
def _runs_graph_only(layer) -> bool:
    """A functional model whose ``call`` only runs its graph (its layers are checked themselves)."""
    from keras.src.models.functional import Functional

    return isinstance(layer, Functional) and type(layer).call is Functional.call


def _guided(forward: Callable, derivative: Callable):
    """``forward(x)`` whose gradient is ``max(upstream, 0) * derivative(x)``."""

    @ops.custom_gradient
    def rectifier(x):
        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            return ops.multiply(ops.relu(upstream), ops.cast(derivative(x), upstream.dtype))

        return forward(x), grad

    return rectifier


def _guided_prelu(x, alpha):
    """keras_sl's PReLU (op ``"prelu"``) with the guided backward pass."""
    return _guided(lambda v: v + (alpha - 1) * ops.minimum(v, 0),
                   lambda v: 1 + (alpha - 1) * ops.cast(v <= 0, v.dtype))(x)


def _guided_activation(fn) -> Callable | None:
    """A guided twin of a Keras activation function (None: not a rectifier)."""
    acts = keras.activations
    if fn is acts.relu:
        return lambda x: _guided(acts.relu, lambda v: ops.cast(v > 0, v.dtype))(x)
    if fn is acts.relu6:
        return lambda x: _guided(acts.relu6, lambda v: ops.cast((v > 0) & (v < 6), v.dtype))(x)
    if fn is acts.leaky_relu:
        return lambda x: _guided(acts.leaky_relu, lambda v: 1 - 0.8 * ops.cast(v <= 0, v.dtype))(x)
    return None


def _guided_layer_call(layer) -> Callable | None:
    """A guided ``call`` for Keras' rectifier layers (None for other layers)."""
    layers = keras.layers
    if isinstance(layer, layers.ReLU):
        slope = float(layer.negative_slope)
        top = None if layer.max_value is None else float(layer.max_value)
        threshold = float(layer.threshold)
        original = layer.call

        def derivative(v):
            inside = ops.cast(v > threshold, v.dtype)
            if top is not None:
                inside = inside * ops.cast(v < top, v.dtype)
            return inside + slope * ops.cast(v <= threshold, v.dtype)

        return lambda x: _guided(original, derivative)(x)
    if isinstance(layer, layers.LeakyReLU):
        slope = float(layer.negative_slope)
        original = layer.call
        return lambda x: _guided(original, lambda v: 1 + (slope - 1) * ops.cast(v <= 0, v.dtype))(x)
    if isinstance(layer, layers.PReLU):
        original = layer.call
        alpha = ops.convert_to_tensor(layer.alpha)
        return lambda x: _guided(original, lambda v: 1 + (alpha - 1) * ops.cast(v <= 0, v.dtype))(x)
    if isinstance(layer, layers.Activation):
        guided = _guided_activation(layer.activation)
        return None if guided is None else (lambda x: guided(x))
    return None


@contextlib.contextmanager
def _guided_rectifiers(model):
    """Inside the block the model's rectifiers have guided backward passes:
    keras_sl's ``"prelu"`` op runs a guided path (and the instance norm its
    reference, which calls that op instead of fusing it); Keras rectifier
    layers and ``activation`` attributes get guided twins."""
    from keras_sl.fast import dispatch

    dispatch.register("prelu", _GUIDED_PATH, pays=lambda *args: False,
                      summary="guided backpropagation (keras_sl.explain only)")(_guided_prelu)
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(dispatch.forced("prelu", _GUIDED_PATH))
            stack.enter_context(dispatch.forced("instance_norm", dispatch.REFERENCE))
            for layer in model._flatten_layers(include_self=False, recursive=True):
                call = _guided_layer_call(layer)
                if call is not None:
                    stack.enter_context(_instance_attribute(layer, "call", call))
                elif not isinstance(layer, keras.layers.Activation) and callable(getattr(layer, "activation", None)):
                    guided = _guided_activation(layer.activation)
                    if guided is not None:
                        stack.enter_context(_instance_attribute(layer, "activation", guided))
            yield
    finally:
        dispatch.unregister("prelu", _GUIDED_PATH)
