"""Parameter and MAC counts, counted the way ``thop`` counts MONAI's UNet.

Rules (thop 0.1.1): a convolution costs ``output elements x in_channels x
kernel volume`` MACs, transposed convolutions included (per output
element); a norm layer without affine parameters costs 2 per element;
PReLU costs 1 per element; additions, concatenation, biases and the lift
cost nothing. These rules reproduce the paper's Table II exactly.
"""

from __future__ import annotations

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


def profile(model: keras.Model, input_shape: Sequence[int]) -> dict:
    """Count parameters and MACs of ``model`` for one image of ``input_shape``.

    ``input_shape`` excludes the batch axis, e.g. ``(512, 512, 3)``. The model
    is rebuilt from its config with that fixed shape (weights are not
    needed), so any keras_sl model works whatever its training state.

    Returns ``{"params": int, "macs": int, "gmacs": float}``.

    Example:
    >>> import keras_sl
    >>> stats = keras_sl.profile(keras_sl.SLUNet(), (512, 512, 3))
    >>> stats["params"], round(stats["gmacs"], 4)
    (29537, 6.0206)
    """
    config = dict(model.get_config())
    if "input_shape" not in config:
        raise TypeError(
            f"profile() needs a keras_sl model with an `input_shape` config entry, "
            f"got {type(model).__name__}."
        )
    config["input_shape"] = list(input_shape)
    fixed = type(model).from_config(config)
    macs = _graph_macs(fixed)
    return {"params": int(fixed.count_params()), "macs": int(macs), "gmacs": macs / 1e9}


# Table II of the paper: (levels, num_res_units) -> published figures.
PAPER_TABLE_II = {
    "unet": {(5, 1): (13.7245, 3.3522), (8, 1): (17.4800, 33.0124), (5, 2): (18.5698, 6.4959), (8, 2): (20.7387, 43.2355)},
    "sl_unet": {(5, 1): (6.0206, 0.0295), (8, 1): (6.0216, 0.0371), (5, 2): (7.0719, 0.0382), (8, 2): (7.0713, 0.0464)},
}

UNET_CHANNELS = {5: (32, 64, 128, 256, 512), 8: (32, 64, 128, 256, 512, 512, 512, 512)}


def table_ii(resolution: int = 512, in_channels: int = 3, num_classes: int = 1) -> list[dict]:
    """Rows of the paper's Table II measured on keras_sl models."""
    from keras_sl.models.sl_unet import SLUNet
    from keras_sl.models.unet import UNet

    rows = []
    shape = (resolution, resolution, in_channels)
    for levels, res in [(5, 1), (8, 1), (5, 2), (8, 2)]:
        ch = UNET_CHANNELS[levels]
        unet = UNet(2, in_channels, num_classes, ch, (2,) * (levels - 1), num_res_units=res)
        sl = SLUNet(num_classes=num_classes, levels=levels, num_res_units=res, in_channels=in_channels)
        for name, model in (("unet", unet), ("sl_unet", sl)):
            stats = profile(model, shape)
            paper_gmacs, paper_mparams = PAPER_TABLE_II[name][(levels, res)]
            rows.append({
                "model": name, "levels": levels, "num_res_units": res,
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
