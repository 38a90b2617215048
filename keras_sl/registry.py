"""One registry of model names -> builders.

The command line (``keras-sl train --model``, ``keras-sl bench --models``),
training, recipes, benchmarks, the profiler and the built-in preset folders
(``<dataset>_<model name>``, e.g. ``kvasir_sl_unet_8l2r``) all name models
through it; nothing else takes a model name apart.

Built in: ``sl_unet_{5,8}l{1,2}r`` (SL-UNet with that many levels and
residual units, width 8, lift depth 16) and ``unet_{5,8}l{1,2}r`` (2-D UNet
with the MONAI channels of the paper's Table II), each the other's twin.
A new family registers its builders with :func:`register`, in its own module
listed in :data:`FAMILY_MODULES` (imported the first time a name is not
found), or with a ``"module:function"`` builder, which registers a name
without importing its module (and so without importing a backend).

Example:
>>> from keras_sl import registry
>>> registry.names("sl_unet")
['sl_unet_5l1r', 'sl_unet_5l2r', 'sl_unet_8l1r', 'sl_unet_8l2r']
>>> spec = registry.parse("sl_unet_8l2r")
>>> spec.family, spec.arguments, spec.twin, spec.input_multiple
('sl_unet', {'levels': 8, 'num_res_units': 2}, 'unet_8l2r', 128)
>>> registry.resolve("unet", levels=5, num_res_units=1)
'unet_5l1r'
>>> model = registry.build("sl_unet_5l1r", lift_depth=8, num_selected=2)
>>> model.name, model.count_params() > 0
('sl_unet_5l1r', True)
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Mapping

#: Modules that register model families when imported (looked up lazily).
FAMILY_MODULES: tuple[str, ...] = ("keras_sl.models.encoder_decoder.zoo",)

#: UNet channels per level of the paper's Table II (MONAI's UNet), by number of levels.
UNET_CHANNELS = {5: (32, 64, 128, 256, 512), 8: (32, 64, 128, 256, 512, 512, 512, 512)}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What a registered model name stands for.

    Attributes:
        name: the registered name, e.g. ``"sl_unet_5l1r"``.
        builder: a callable, or ``"module:function"`` imported on first build.
        title: a short human name, e.g. ``"SL-UNet 5L/1Res"``.
        description: one line for listings and preset metadata.
        family: the family, e.g. ``"sl_unet"``; with ``arguments`` it names
            the model too (:func:`resolve`).
        variant: the name within its family, e.g. ``"5l1r"``.
        arguments: the keyword arguments the builder receives.
        twin: the name of the model's counterpart: an SL model's plain 2-D
            network of the same configuration, and back.
        lifted: whether this is a Spatial Lifting model.
        input_multiple: every input's height and width must be a multiple of this.
    """

    name: str
    builder: Callable[..., Any] | str
    title: str = ""
    description: str = ""
    family: str | None = None
    variant: str | None = None
    arguments: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    twin: str | None = None
    lifted: bool = False
    input_multiple: int = 1

    def build(self, **overrides):
        """The model, named after the spec unless ``name`` is overridden."""
        builder = self.builder
        if isinstance(builder, str):
            module, _, attr = builder.partition(":")
            builder = getattr(importlib.import_module(module), attr)
        return builder(**{**self.arguments, "name": self.name, **overrides})


_SPECS: dict[str, ModelSpec] = {}
_families_imported = False


def register(
    name: str,
    builder: Callable[..., Any] | str | None = None,
    *,
    title: str = "",
    description: str = "",
    family: str | None = None,
    variant: str | None = None,
    arguments: Mapping[str, Any] | None = None,
    twin: str | None = None,
    lifted: bool = False,
    input_multiple: int = 1,
    replace: bool = False,
):
    """Register ``builder`` under ``name``; without ``builder``, a decorator.

    ``builder(**arguments, name=name, **overrides)`` must return the model.

    Example:
    >>> @register("tiny_unet", title="tiny UNet", description="2 levels, 4/8 channels")
    ... def tiny_unet(name, in_channels=3, num_classes=1, **kwargs):
    ...     from keras_sl.models.unet import UNet
    ...     return UNet(2, in_channels, num_classes, (4, 8), (2,), name=name, **kwargs)
    >>> build("tiny_unet").name
    'tiny_unet'
    >>> unregister("tiny_unet")
    """

    def decorator(fn):
        if name in _SPECS and not replace:
            raise ValueError(f"A model named {name!r} is already registered; pass replace=True to replace it.")
        _SPECS[name] = ModelSpec(
            name=name, builder=fn, title=title or name, description=description, family=family,
            variant=variant, arguments=dict(arguments or {}), twin=twin, lifted=lifted,
            input_multiple=int(input_multiple),
        )
        return fn

    return decorator if builder is None else decorator(builder)


def unregister(name: str) -> None:
    """Remove ``name`` from the registry (tests, experiments)."""
    _SPECS.pop(name, None)


def _import_families() -> None:
    global _families_imported
    if not _families_imported:
        _families_imported = True
        for module in FAMILY_MODULES:
            importlib.import_module(module)


def parse(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of a registered name; an unknown name raises a
    ``ValueError`` that lists the known ones."""
    if name not in _SPECS:
        _import_families()
    try:
        return _SPECS[name]
    except KeyError:
        raise ValueError(f"Unknown model {name!r}. Known models: {', '.join(names())}.") from None


def specs(family: str | None = None) -> list[ModelSpec]:
    """Registered specs (of one family), in registration order."""
    _import_families()
    return [s for s in _SPECS.values() if family is None or s.family == family]


def names(family: str | None = None) -> list[str]:
    """Registered model names (of one family), in registration order."""
    return [s.name for s in specs(family)]


def families() -> list[str]:
    """Registered family names, in registration order."""
    return list(dict.fromkeys(s.family for s in specs() if s.family))


def resolve(model: str, **arguments) -> str:
    """A registered name from a name, or from a family and its arguments.

    ``resolve("sl_unet_5l1r")`` and ``resolve("sl_unet", levels=5,
    num_res_units=1)`` both give ``"sl_unet_5l1r"``. Arguments that are None
    are ignored; arguments given with a full name must agree with it.
    """
    arguments = {k: v for k, v in arguments.items() if v is not None}
    if model in _SPECS or model not in families():
        spec = parse(model)
        wrong = {k: v for k, v in arguments.items() if spec.arguments.get(k) != v}
        if wrong:
            raise ValueError(f"Model {model!r} has {dict(spec.arguments)}; it cannot take {wrong}.")
        return spec.name
    for spec in specs(model):
        if dict(spec.arguments) == arguments:
            return spec.name
    options = "; ".join(f"{s.name}: {dict(s.arguments)}" for s in specs(model))
    raise ValueError(f"No {model!r} model with {arguments}. Registered: {options}.")


def build(name: str, /, **overrides):
    """Build the model registered as ``name``; ``overrides`` go to its builder
    (e.g. ``input_shape``, ``num_classes``, ``in_channels``, or ``name``)."""
    return parse(name).build(**overrides)


#: Dataset reader names spelled out in preset names (a preset name starts with a letter).
PRESET_DATASET_NAMES = {"7scenes": "sevenscenes"}


def preset_name(dataset: str, model: str) -> str:
    """Folder name of a preset trained on ``dataset``: ``<dataset>_<model name>``
    (``7scenes`` is spelled ``sevenscenes``).

    >>> preset_name("kvasir", "sl_unet_8l2r")
    'kvasir_sl_unet_8l2r'
    >>> preset_name("7scenes", "effnetlite0_sl_fastdepth")
    'sevenscenes_effnetlite0_sl_fastdepth'
    """
    return f"{PRESET_DATASET_NAMES.get(dataset, dataset)}_{parse(model).name}"


# -- built-in families ------------------------------------------------------------
def _build_sl_unet(levels: int, num_res_units: int, width: int = 8, lift_depth: int = 16, **kwargs):
    from keras_sl.models.sl_unet import SLUNet

    return SLUNet(levels=levels, num_res_units=num_res_units, width=width, lift_depth=lift_depth, **kwargs)


def _build_unet(levels: int, num_res_units: int, in_channels: int = 3, num_classes: int = 1, name=None,
                activation="auto", preprocessor=None, **network_kwargs):
    """A 2-D :class:`keras_sl.tasks.Segmenter` around MONAI's UNet (``network_kwargs``
    go to the network, e.g. ``input_shape``)."""
    from keras_sl.models.unet import UNet
    from keras_sl.tasks import Segmenter

    network = UNet(2, in_channels, num_classes, UNET_CHANNELS[levels], (2,) * (levels - 1),
                   num_res_units=num_res_units, name="backbone", **network_kwargs)
    return Segmenter(network, activation=activation, preprocessor=preprocessor, name=name)


for _levels in (5, 8):
    for _res in (1, 2):
        _variant = f"{_levels}l{_res}r"
        _arguments = {"levels": _levels, "num_res_units": _res}
        register(
            f"sl_unet_{_variant}", _build_sl_unet, title=f"SL-UNet {_levels}L/{_res}Res",
            description=f"SL-UNet {_levels}L/{_res}Res (width 8, lift depth 16, 5 selected slices)",
            family="sl_unet", variant=_variant, arguments=_arguments, twin=f"unet_{_variant}", lifted=True,
            input_multiple=2 ** (_levels - 1),
        )
        register(
            f"unet_{_variant}", _build_unet, title=f"UNet {_levels}L/{_res}Res",
            description=f"UNet {_levels}L/{_res}Res (MONAI channels of Table II)",
            family="unet", variant=_variant, arguments=_arguments, twin=f"sl_unet_{_variant}",
            input_multiple=2 ** (_levels - 1),
        )
del _levels, _res, _variant, _arguments
