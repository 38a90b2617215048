"""Parameter and MAC counts, counted the way ``thop`` counts MONAI's UNet.

Rules (thop 0.1.1): a convolution costs ``output elements x in_channels x
kernel volume`` MACs, transposed convolutions included (per output
element); a norm layer without affine parameters costs 2 per element;
PReLU costs 1 per element; additions, concatenation, biases and the lift
cost nothing. These rules reproduce the paper's Table II exactly.
"""

from __future__ import annotations

import math
from typing import Sequence

import keras


def _layer_macs(layer, input_shape, output_shape) -> int:
    if hasattr(layer, "macs"):
        return int(layer.macs(input_shape, output_shape))
    if isinstance(layer, keras.Model):
        return _graph_macs(layer)
    return 0


def _graph_macs(model: keras.Model) -> int:
    total = 0
    for layer in model.layers:
        for node in layer._inbound_nodes:
            args = node.arguments.keras_tensors
            outs = node.outputs
            if not args or not outs:
                continue
            if isinstance(layer, keras.Model):
                total += _graph_macs(layer)
            else:
                total += _layer_macs(layer, tuple(args[0].shape), tuple(outs[0].shape))
    return total


def _first_shape(value) -> tuple | None:
    for x in keras.tree.flatten(value):
        if hasattr(x, "shape"):
            return tuple(x.shape)
    return None


def count_macs(model: keras.Model, input_shapes) -> int:
    """MACs of a functional ``model`` (nested functional models included)
    for inputs of ``input_shapes`` (one shape, batch included, or a list),
    whatever static sizes the model was built with: the graph is walked once
    with symbolic tensors of these shapes (nothing is computed, no weight is
    needed, the model is not changed).

    Example:
    >>> import keras_sl
    >>> from keras_sl.models.unet import UNet
    >>> net = UNet(2, 3, 1, channels=(8, 16), strides=(2,))
    >>> count_macs(net, (1, 64, 64, 3)) == count_macs(net, (1, 32, 32, 3)) * 4
    True
    """
    if not hasattr(model, "_run_through_graph") or isinstance(model, keras.Sequential):
        raise TypeError(
            f"count_macs() and profile() walk functional models (keras_sl networks and tasks); got a "
            f"{type(model).__name__}. Build it with keras.Model(inputs, outputs)."
        )
    shapes = [input_shapes] if isinstance(input_shapes[0], (int, type(None))) else list(input_shapes)
    specs = [keras.KerasTensor(tuple(shape), dtype=x.dtype) for shape, x in zip(shapes, model.inputs)]
    return _walk(model, specs)[1]


def _walk(model, inputs):
    total = 0

    def call(op, *args, **kwargs):
        nonlocal total
        if isinstance(op, keras.Model) and hasattr(op, "_run_through_graph"):
            outputs, macs = _walk(op, keras.tree.flatten((args, kwargs)))
            total += macs
            return outputs
        kwargs.pop("training", None)
        outputs = op.compute_output_spec(*args, **kwargs)
        if hasattr(op, "macs"):
            total += int(op.macs(_first_shape((args, kwargs)), _first_shape(outputs)))
        return outputs

    inputs = [x for x in inputs if isinstance(x, keras.KerasTensor)]
    outputs = model._run_through_graph(inputs, operation_fn=lambda op: op, call_fn=call)
    return outputs, total


def profile(model: keras.Model, input_shape: Sequence[int]) -> dict:
    """Count parameters and MACs of ``model`` for one image of ``input_shape``.

    ``input_shape`` excludes the batch axis, e.g. ``(512, 512, 3)``. The
    graph is walked symbolically at that shape (:func:`count_macs`), so any
    functional keras_sl model works whatever shape it was built with.

    Returns ``{"params": int, "macs": int, "gmacs": float}``.

    Example:
    >>> import keras_sl
    >>> stats = keras_sl.profile(keras_sl.SLUNet(), (512, 512, 3))
    >>> stats["params"], round(stats["gmacs"], 4)
    (29537, 6.0206)
    """
    macs = count_macs(model, (1, *input_shape))
    return {"params": int(model.count_params()), "macs": int(macs), "gmacs": macs / 1e9}


# Table II of the paper: registry name -> published (GMACs at 512x512, M params).
PAPER_TABLE_II = {
    "unet_5l1r": (13.7245, 3.3522), "unet_8l1r": (17.4800, 33.0124),
    "unet_5l2r": (18.5698, 6.4959), "unet_8l2r": (20.7387, 43.2355),
    "sl_unet_5l1r": (6.0206, 0.0295), "sl_unet_8l1r": (6.0216, 0.0371),
    "sl_unet_5l2r": (7.0719, 0.0382), "sl_unet_8l2r": (7.0713, 0.0464),
}


def table_ii(resolution: int = 512, in_channels: int = 3, num_classes: int = 1) -> list[dict]:
    """Rows of the paper's Table II measured on keras_sl models (each SL-UNet
    of :mod:`keras_sl.registry` after its 2-D UNet twin)."""
    from keras_sl import registry

    rows = []
    shape = (resolution, resolution, in_channels)
    for sl in registry.specs("sl_unet"):
        for spec in (registry.parse(sl.twin), sl):
            model = spec.build(in_channels=in_channels, num_classes=num_classes)
            stats = profile(model, shape)
            paper_gmacs, paper_mparams = PAPER_TABLE_II[spec.name]
            rows.append({
                "model": spec.family, "name": spec.name, **spec.arguments,
                "params": stats["params"], "gmacs": stats["gmacs"],
                "paper_gmacs": paper_gmacs, "paper_mparams": paper_mparams,
            })
    return rows


def format_table_ii(rows: list[dict], resolution: int) -> str:
    lines = [
        f"Table II at {resolution}x{resolution} (keras_sl vs paper)",
        f"{'model':<8} {'config':<8} {'params':>11} {'paper M':>8} {'GMACs':>9} {'paper G':>8}",
    ]
    for r in rows:
        lines.append(
            f"{r['model']:<8} {str(r['levels']) + 'L/' + str(r['num_res_units']) + 'Res':<8} "
            f"{r['params']:>11,} {r['paper_mparams']:>8.4f} {r['gmacs']:>9.4f} {r['paper_gmacs']:>8.4f}"
        )
    return "\n".join(lines)


# Table VI of the paper: decoder -> published (GMACs, M params) on PVTv2-b2 features of a 384x384 image.
PAPER_TABLE_VI = {
    "hsnet": (1.5653, 4.4072), "emcad": (1.1318, 1.9135), "sl_emcad": (1.0467, 0.2623),
    "cascade": (6.8730, 10.4219), "sl_cascade": (4.7814, 1.6409), "unet_8l2r": (None, None),
    "sl_unet_5l1r": (1.2653, 0.5414), "sl_unet_5l2r": (1.3296, 0.5762), "sl_unet_8l1r": (1.2835, 0.5648),
    "sl_unet_8l2r": (1.3499, 0.6020),
    "fastdepth": (0.2311, 0.1278), "sl_fastdepth": (0.2248, 0.0404),
    "midas": (15.4028, 8.5934), "sl_midas": (5.3586, 0.1055),
}
#: PVTv2-b2 stage channels (finest first) and strides: the paper's Table VI setting.
TABLE_VI_CHANNELS = (64, 128, 320, 512)
TABLE_VI_STRIDES = (4, 8, 16, 32)
#: What each Table VI row counts (thop on the original modules counts the same).
TABLE_VI_COUNTS = {
    "hsnet": "decoder + heads (out, dc, bn_dc, fc), as thop on HSNet's modules",
    "emcad": "decoder only (no heads), as thop on EMCAD",
    "cascade": "decoder only (no heads), as thop on CASCADE",
    "sl_emcad": "EMCAD at rank 3, channels (16,32,64,128), depths (8,4,2,1), decoder only",
    "sl_cascade": "CASCADE at rank 3, channels (16,32,64,128), depths (8,4,2,1), decoder only",
    "fastdepth": "FastDepth decoder only (decode_conv1..6) on MobileNet v1 taps [64,128,256,1024] of a 224x224 "
                 "image, as thop on dwofk/fast-depth (the paper's row is an unpublished MobileNetV2 variant)",
    "sl_fastdepth": "FastDepth decoder at rank 3: levels (8,8,8,16), stages of 8, 5x5x5 depthwise, every level "
                    "lifted to depth 16, in-plane x2 only, 224x224 image, decoder only",
    "midas": "MiDaS refinenet4..1 + output_conv on four 256-ch maps of a 224x224 image (56/28/14/7), layer*_rn "
             "excluded, as the paper's row (thop on the original: 15.3193 G / 8.5931 M)",
    "sl_midas": "MiDaS at rank 3: features 16, levels lifted to depth 16 (kept), head (8, 16), 224x224, no layer*_rn",
}
#: The depth decoders' rows are counted at the paper's depth setting, a 224x224 image, whatever the resolution.
DEPTH_TABLE_VI_RESOLUTION = 224


def trainable_params(model) -> int:
    """Parameters as PyTorch (and thop) count them: trainable weights only
    (BatchNorm's moving statistics are buffers there)."""
    return int(sum(math.prod(w.shape) for w in model.trainable_weights))


def table_vi_network(decoder: str, resolution: int = 384, num_classes: int = 1):
    """``(network, input_shapes)`` counted for a Table VI row.

    The original decoders and their SL twins (EMCAD, CASCADE) are counted
    alone, without heads (HSNet with its heads), as thop gives the paper's
    figures; the SL twins at rank 3 on levels lifted to depths (8, 4, 2, 1).
    keras_sl's UNet decoders count their whole neck (projections, fusion,
    lift, UNet, head): the paper does not specify its SL-UNet decoder.
    """
    from keras_sl.models.encoder_decoder.pyramid_network import PyramidNeck
    from keras_sl.models.encoder_decoder.zoo import (
        HSNET_CHANNELS, SL_DECODER_CHANNELS, SL_DECODER_DEPTHS, build_decoder_neck, decoder_class,
    )

    sizes = [resolution // s for s in TABLE_VI_STRIDES]
    shapes = [(1, n, n, c) for n, c in zip(sizes, TABLE_VI_CHANNELS)]
    base = decoder.removeprefix("sl_")
    if base in ("fastdepth", "midas"):
        return _depth_table_vi_network(decoder, num_classes)
    if base in ("emcad", "cascade"):
        if decoder.startswith("sl_"):
            lifted = [(1, d, n, n, c) for d, n, c in zip(SL_DECODER_DEPTHS, sizes, SL_DECODER_CHANNELS)]
            return decoder_class(base)(channels=SL_DECODER_CHANNELS, num_classes=None,
                                               spatial_dims=3), lifted
        return decoder_class(base)(channels=TABLE_VI_CHANNELS, num_classes=None), shapes
    if decoder == "hsnet":
        return decoder_class("hsnet")(channels=HSNET_CHANNELS, num_classes=num_classes), shapes
    neck = PyramidNeck(feature_channels=TABLE_VI_CHANNELS, **build_decoder_neck(decoder, TABLE_VI_CHANNELS,
                                                                                num_classes))
    return neck, shapes


def _depth_table_vi_network(decoder: str, num_classes: int = 1):
    """FastDepth / MiDaS rows: their own encoders' levels of a 224x224 image; SL twins at rank 3 on levels
    lifted to depth 16 (the decoders' x2 resamplings in-plane only)."""
    lifted = decoder.startswith("sl_")
    if decoder.endswith("fastdepth"):
        from keras_sl.models.fastdepth import (FASTDEPTH_CHANNELS, FASTDEPTH_STRIDES, SL_FASTDEPTH_CHANNELS,
                                               SL_FASTDEPTH_DECODER_CHANNELS, SL_FASTDEPTH_DEPTH, FastDepthDecoder)

        sides = [DEPTH_TABLE_VI_RESOLUTION // s for s in FASTDEPTH_STRIDES]
        if lifted:
            return (FastDepthDecoder(SL_FASTDEPTH_CHANNELS, SL_FASTDEPTH_DECODER_CHANNELS, spatial_dims=3,
                                     num_classes=num_classes),
                    [(1, SL_FASTDEPTH_DEPTH, n, n, c) for n, c in zip(sides, SL_FASTDEPTH_CHANNELS)])
        return FastDepthDecoder(num_classes=num_classes), [(1, n, n, c) for n, c in zip(sides, FASTDEPTH_CHANNELS)]
    from keras_sl.models.midas import MiDaSDecoder
    from keras_sl.models.midas.midas_decoder import (MIDAS_FEATURES, SL_MIDAS_DEPTH, SL_MIDAS_FEATURES,
                                                     SL_MIDAS_HEAD_CHANNELS)

    sides = [DEPTH_TABLE_VI_RESOLUTION // s for s in TABLE_VI_STRIDES]
    if lifted:
        f = SL_MIDAS_FEATURES
        return (MiDaSDecoder((f,) * 4, f, head_channels=SL_MIDAS_HEAD_CHANNELS, use_projections=False,
                             num_classes=num_classes, spatial_dims=3),
                [(1, SL_MIDAS_DEPTH, n, n, f) for n in sides])
    f = MIDAS_FEATURES
    return (MiDaSDecoder((f,) * 4, f, use_projections=False, num_classes=num_classes),
            [(1, n, n, f) for n in sides])


def table_vi(resolution: int = 384) -> list[dict]:
    """Rows of the paper's Table VI (decoders on PVTv2-b2 features) measured on
    keras_sl's decoders, next to the published figures."""
    rows = []
    for name, (paper_gmacs, paper_mparams) in PAPER_TABLE_VI.items():
        network, shapes = table_vi_network(name, resolution)
        macs = count_macs(network, shapes)
        rows.append({
            "model": name, "macs": int(macs), "params": trainable_params(network),
            "paper_macs": None if paper_gmacs is None else int(round(paper_gmacs * 1e9)),
            "paper_params": None if paper_mparams is None else int(round(paper_mparams * 1e6)),
            "counts": TABLE_VI_COUNTS.get(name, "keras_sl's whole neck: projections, fusion, lift, decoder, head"),
        })
    return rows


def format_table_vi(rows: list[dict], resolution: int = 384) -> str:
    def fmt(value, scale):
        return "-" if value is None else f"{value / scale:.4f}"

    lines = [
        f"Table VI: decoders on PVTv2-b2 features [64,128,320,512] of a {resolution}x{resolution} image "
        f"(depth decoders: their encoders' levels of a {DEPTH_TABLE_VI_RESOLUTION}x{DEPTH_TABLE_VI_RESOLUTION} image)",
        f"{'model':<14} {'GMACs':>8} {'paper G':>8} {'M params':>9} {'paper M':>8}  ratio (MACs / params vs paper)",
    ]
    for r in rows:
        ratio = "" if r["paper_macs"] is None else (
            f"{r['macs'] / r['paper_macs']:.4f} / {r['params'] / r['paper_params']:.4f}")
        lines.append(f"{r['model']:<14} {fmt(r['macs'], 1e9):>8} {fmt(r['paper_macs'], 1e9):>8} "
                     f"{fmt(r['params'], 1e6):>9} {fmt(r['paper_params'], 1e6):>8}  {ratio}")
    return "\n".join(lines)
