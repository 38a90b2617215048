"""EMCAD decoder (Rahman et al., CVPR 2024), rank-generic, with EMCADNet's heads.

A port of ``SLDGroup/EMCAD``'s ``EMCAD`` decoder (``lib/decoders.py``) and
the 1x1 prediction heads of ``EMCADNet`` (``lib/networks.py``). Stages run
deepest first, as the original's ``forward(x, skips)``:

* stage n (deepest): ``d = cab(x) * x; d = sab(d) * d; d = mscb(d)``;
* each finer stage k: ``u = eucb_k(d)`` (upsampled to the skip's size),
  ``d = u + lgag_k(g=u, x=skip_k)``, then the same MSCAM
  (``cab_k``, the shared ``sab``, ``mscb_k``).

One :class:`~keras_sl.models.emcad.emcad_blocks.SAB` layer serves every
stage, as in the original (one weight, counted once for parameters and at
every call for MACs). Built with ``spatial_dims=3`` the same class is the
SL twin's decoder: every block is rank-generic, pooling and attention reduce
over all spatial axes, and each stage is upsampled to its skip's size, so
the lifted axis may grow with the in-plane axes (depths ``[8, 4, 2, 1]``
finest first) or not.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import keras

from keras_sl.layers.convolution import Convolution
from keras_sl.layers.initializers import HostInitializer
from keras_sl.models.emcad.emcad_blocks import CAB, EUCB, LGAG, MSCB, SAB
from keras_sl.utils.layout import standardize_data_format


def _input_shapes(channels, input_shapes, spatial_dims: int, data_format: str) -> list[tuple]:
    """Per-stage input shapes (no batch), checked against ``channels``."""
    if input_shapes is None:
        spatial = (None,) * spatial_dims
        return [(*spatial, c) if data_format == "channels_last" else (c, *spatial) for c in channels]
    shapes = [tuple(None if d is None else int(d) for d in s) for s in input_shapes]
    if len(shapes) != len(channels):
        raise ValueError(f"input_shapes needs one shape per stage ({len(channels)}), got {len(shapes)}.")
    for i, (shape, c) in enumerate(zip(shapes, channels)):
        axis = -1 if data_format == "channels_last" else 0
        if len(shape) != spatial_dims + 1 or shape[axis] != c:
            raise ValueError(
                f"input_shapes[{i}] = {shape} must be a rank-{spatial_dims + 1} shape (no batch) with "
                f"{c} channels ({data_format})."
            )
    return shapes


@keras.saving.register_keras_serializable(package="keras_sl")
class EMCAD(keras.Model):
    """EMCAD decoder with EMCADNet's 1x1 prediction heads, for any rank.

    Inputs: ``len(channels)`` encoder maps, FINEST FIRST (``x1`` stride 4 ...
    ``x4`` stride 32 for a PVTv2 encoder), input ``i`` with ``channels[i]``
    channels; each stage doubles the spatial size of the next deeper one.
    Outputs: the head logits ``[p1, p2, p3, p4]`` finest first, each at its
    stage's resolution (``p1`` is the main prediction; EMCADNet upsamples
    them bilinearly by 4 / 8 / 16 / 32 to the image). With
    ``num_classes=None`` there are no heads and the outputs are the stage
    features ``[d1, d2, d3, d4]`` finest first.

    Layer names follow the original's modules: ``mscb{k}``, ``eucb{k}``,
    ``lgag{k}``, ``cab{k}``, the shared ``sab``, heads ``out_head{k}``
    (stage ``k = 1`` finest); the stage features ``d_k`` are
    ``get_layer(f"mscb{k}").output`` (see :meth:`stage_features_model`).
    Parameter and MAC counts equal thop's for the PyTorch decoder (MACs with
    :func:`keras_sl.profiler._graph_macs` on a model built with static
    ``input_shapes``; parameters: the trainable weights, as batch-norm
    statistics are buffers in PyTorch).

    Args:
        channels: channels per stage, finest first (the paper's
            ``(64, 128, 320, 512)``; the original lists them deepest first).
        kernel_sizes: MSCB depthwise kernel sizes.
        expansion_factor: MSCB expansion (EMCADNet's 2; the bare EMCAD class
            defaults to 6).
        dw_parallel: MSCB depthwise convs in parallel.
        add: MSCB sums its depthwise outputs (else concatenates).
        lgag_ks: LGAG kernel size.
        activation: MSCB activation (EMCADNet's ``"relu"``); EUCB, LGAG and
            CAB keep their own default ``relu``, as the original.
        num_classes: head channels (``None``: no heads).
        spatial_dims: 2, or 3 for the SL twin (the first spatial axis lifted).
        data_format: ``"channels_last"`` or ``"channels_first"``.
        input_shapes: optional per-input shapes without batch (static sizes
            for MAC counting); default: unknown spatial sizes.
        kernel_initializer: ``None`` for the original's initialisation
            (decoder convolutions N(0, 0.02), heads PyTorch's default
            uniform; both drawn with NumPy), or one initializer for every
            kernel. Biases start at 0.

    Example:
    >>> shapes = [(16, 16, 8), (8, 8, 16), (4, 4, 24), (2, 2, 32)]
    >>> dec = EMCAD(channels=(8, 16, 24, 32), input_shapes=shapes)
    >>> [tuple(p.shape) for p in dec.outputs]
    [(None, 16, 16, 1), (None, 8, 8, 1), (None, 4, 4, 1), (None, 2, 2, 1)]
    >>> twin = EMCAD(channels=(8, 16, 24, 32), num_classes=None, spatial_dims=3)  # SL-EMCAD: stage features
    >>> [tuple(d.shape) for d in twin.outputs][0]
    (None, None, None, None, 8)
    """

    def __init__(
        self,
        channels: Sequence[int] = (64, 128, 320, 512),
        kernel_sizes: Sequence[int] = (1, 3, 5),
        expansion_factor: float = 2,
        dw_parallel: bool = True,
        add: bool = True,
        lgag_ks: int = 3,
        activation: str = "relu",
        num_classes: int | None = 1,
        spatial_dims: int = 2,
        data_format: str | None = None,
        input_shapes: Sequence[Sequence[int | None]] | None = None,
        kernel_initializer=None,
        name: str = "emcad",
        **kwargs,
    ):
        data_format = standardize_data_format(data_format)
        channels = tuple(int(c) for c in channels)
        if len(channels) < 2:
            raise ValueError(f"EMCAD needs at least 2 stages, got channels={channels}.")
        if int(spatial_dims) not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
        spatial_dims = int(spatial_dims)
        if num_classes is not None and int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1 (or None for no heads), got {num_classes}.")
        kernel_sizes = tuple(int(k) for k in kernel_sizes)
        shapes = _input_shapes(channels, input_shapes, spatial_dims, data_format)
        common = dict(spatial_dims=spatial_dims, data_format=data_format)
        # EMCADNet's heads keep PyTorch's default init (drawn on the host).
        head_init = {"kernel_initializer": HostInitializer(kind="torch_default")}
        if kernel_initializer is not None:
            kernel_initializer = keras.initializers.get(kernel_initializer)
            # Each layer gets its own instance (its own seed stream).
            config = keras.initializers.serialize(kernel_initializer)
            common["kernel_initializer"] = head_init["kernel_initializer"] = config
        n = len(channels)

        inputs = [keras.Input(shape=shape, name=f"x{i + 1}") for i, shape in enumerate(shapes)]
        sab = SAB(name="sab", **common)

        def mscam(d, k):
            d = keras.layers.Multiply(name=f"cab{k}_gate")([CAB(name=f"cab{k}", **common)(d), d])
            d = keras.layers.Multiply(name=f"sab{k}_gate")([sab(d), d])
            return MSCB(kernel_sizes=kernel_sizes, expansion_factor=expansion_factor, dw_parallel=dw_parallel,
                        add=add, activation=activation, name=f"mscb{k}", **common)(d)

        features = {n: mscam(inputs[n - 1], n)}
        for k in range(n - 1, 0, -1):
            skip = inputs[k - 1]
            up = EUCB(channels[k - 1], name=f"eucb{k}", **common)([features[k + 1], skip])
            gated = LGAG(kernel_size=lgag_ks, name=f"lgag{k}", **common)([up, skip])
            features[k] = mscam(keras.layers.Add(name=f"aggregate{k}")([up, gated]), k)

        if num_classes is None:
            outputs = [features[k] for k in range(1, n + 1)]
        else:
            outputs = [
                Convolution(spatial_dims, int(num_classes), 1, use_bias=True, data_format=data_format,
                            name=f"out_head{k}", **head_init)(features[k])
                for k in range(1, n + 1)
            ]
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)

        self.channels = channels
        self.kernel_sizes = kernel_sizes
        self.expansion_factor = expansion_factor
        self.dw_parallel = bool(dw_parallel)
        self.add = bool(add)
        self.lgag_ks = int(lgag_ks)
        self.activation = activation
        self.num_classes = None if num_classes is None else int(num_classes)
        self.spatial_dims = spatial_dims
        self.data_format = data_format
        self.input_shapes = None if input_shapes is None else [list(s) for s in shapes]
        self.kernel_initializer = kernel_initializer

    @property
    def stage_feature_names(self) -> tuple[str, ...]:
        """Names of the layers whose outputs are ``d1, d2, ...`` (finest first)."""
        return tuple(f"mscb{k}" for k in range(1, len(self.channels) + 1))

    def stage_features_model(self) -> keras.Model:
        """A model from this decoder's inputs to its stage features ``[d1, ...]``
        finest first (the original's ``[d4, d3, d2, d1]`` reversed), sharing weights."""
        return keras.Model(self.inputs, [self.get_layer(name).output for name in self.stage_feature_names],
                           name=f"{self.name}_features")

    def load_torch_state(self, state: Mapping, prefix: str = "decoder.",
                         heads_prefix: str | None = "out_head") -> set[str]:
        """See :func:`load_emcad_state`."""
        return load_emcad_state(self, state, prefix=prefix, heads_prefix=heads_prefix)

    def get_config(self):
        return {
            "channels": list(self.channels),
            "kernel_sizes": list(self.kernel_sizes),
            "expansion_factor": self.expansion_factor,
            "dw_parallel": self.dw_parallel,
            "add": self.add,
            "lgag_ks": self.lgag_ks,
            "activation": self.activation,
            "num_classes": self.num_classes,
            "spatial_dims": self.spatial_dims,
            "data_format": self.data_format,
            "input_shapes": self.input_shapes,
            "kernel_initializer": None if self.kernel_initializer is None
            else keras.initializers.serialize(self.kernel_initializer),
            "name": self.name,
            "trainable": self.trainable,
        }


def load_emcad_state(decoder: EMCAD, state: Mapping, prefix: str = "decoder.",
                     heads_prefix: str | None = "out_head") -> set[str]:
    """Load an original EMCADNet ``state_dict`` into ``decoder``.

    ``state`` maps the original keys to arrays or torch tensors: the ``EMCAD``
    module's keys under ``prefix`` (``"decoder.mscb4.0.pconv1.0.weight"``,
    ...; ``prefix=""`` for a bare ``EMCAD`` state dict) and, when the decoder
    has heads, ``EMCADNet``'s ``{heads_prefix}{k}.weight`` / ``.bias``
    (``out_head1`` on the finest map, as EMCADNet pairs ``out_head{k}`` with
    ``d{k}``). Keys outside both prefixes (the encoder's, ``conv.*``) are
    ignored. Every key under the prefixes must be used exactly once; missing,
    unused or mismatched keys raise with their names. A decoder built at rank
    3 only takes weights of its own shapes.

    Returns the set of keys used.
    """
    if not isinstance(decoder, EMCAD):
        raise TypeError(f"load_emcad_state needs a keras_sl EMCAD decoder, got {type(decoder).__name__}.")
    used: set[str] = set()

    def take(keys: set[str]):
        twice = used & keys
        if twice:
            raise ValueError(f"Keys used twice while loading EMCAD: {sorted(twice)}.")
        used.update(keys)

    n = len(decoder.channels)
    for k in range(n, 0, -1):
        if k < n:
            take(decoder.get_layer(f"eucb{k}").load_torch_state(state, f"{prefix}eucb{k}."))
            take(decoder.get_layer(f"lgag{k}").load_torch_state(state, f"{prefix}lgag{k}."))
        take(decoder.get_layer(f"mscb{k}").load_torch_state(state, f"{prefix}mscb{k}.0."))
        take(decoder.get_layer(f"cab{k}").load_torch_state(state, f"{prefix}cab{k}."))
    take(decoder.get_layer("sab").load_torch_state(state, f"{prefix}sab."))

    head_keys = {key for key in state if heads_prefix and key.startswith(heads_prefix)}
    if decoder.num_classes is not None and heads_prefix:
        for k in range(1, n + 1):
            keys: set[str] = set()
            keys |= decoder.get_layer(f"out_head{k}").load_torch_state(state, f"{heads_prefix}{k}.")
            take(keys)
    elif head_keys - used:
        raise ValueError(
            f"The decoder has no heads (num_classes=None) but the state dict has head keys "
            f"{sorted(head_keys)[:8]}; pass heads_prefix=None to ignore them."
        )

    expected = {key for key in state if key.startswith(prefix)}
    if decoder.num_classes is not None and heads_prefix:
        expected |= head_keys
    unused = sorted(expected - used)
    if unused:
        raise ValueError(
            f"{len(unused)} key(s) of the state dict were not used by the EMCAD decoder (wrong "
            f"constructor arguments, or another model's state dict?): {unused[:12]}"
            + (" ..." if len(unused) > 12 else "")
        )
    return used
