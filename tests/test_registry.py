"""keras_sl.registry: one place that maps model names to builders."""

import json
import re
from pathlib import Path

import pytest

from keras_sl import registry
from keras_sl.models.sl_unet import SLUNet
from keras_sl.tasks import Segmenter

ROOT = Path(__file__).resolve().parents[1]


def test_built_in_names_and_specs():
    assert registry.names("sl_unet") == ["sl_unet_5l1r", "sl_unet_5l2r", "sl_unet_8l1r", "sl_unet_8l2r"]
    assert registry.names("unet") == ["unet_5l1r", "unet_5l2r", "unet_8l1r", "unet_8l2r"]
    assert registry.families()[:2] == ["sl_unet", "unet"]
    spec = registry.parse("unet_8l1r")
    assert (spec.family, spec.variant, dict(spec.arguments)) == ("unet", "8l1r", {"levels": 8, "num_res_units": 1})
    assert (spec.twin, spec.lifted, spec.input_multiple, spec.title) == ("sl_unet_8l1r", False, 128, "UNet 8L/1Res")
    assert registry.parse("sl_unet_5l2r").lifted and registry.parse("sl_unet_5l2r").input_multiple == 16
    for spec in registry.specs():
        if spec.twin:
            assert registry.parse(spec.twin).twin == spec.name


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ValueError, match=r"Unknown model 'sl_unet_6l1r'\. Known models: sl_unet_5l1r, unet_5l1r"):
        registry.parse("sl_unet_6l1r")
    with pytest.raises(ValueError, match="Unknown model"):
        registry.build("hsnet")


def test_resolve_names_and_the_family_form():
    assert registry.resolve("sl_unet_8l2r") == "sl_unet_8l2r"
    assert registry.resolve("sl_unet", levels=8, num_res_units=2) == "sl_unet_8l2r"
    assert registry.resolve("unet_5l1r", levels=5, num_res_units=None) == "unet_5l1r"
    with pytest.raises(ValueError, match="cannot take"):
        registry.resolve("unet_5l1r", levels=8)
    with pytest.raises(ValueError, match=r"No 'sl_unet' model with \{'levels': 6"):
        registry.resolve("sl_unet", levels=6, num_res_units=1)


def test_build_names_the_model_and_passes_overrides():
    sl = registry.build("sl_unet_5l1r", lift_depth=4, num_selected=2, input_shape=(32, 32, 3))
    assert isinstance(sl, SLUNet) and sl.name == "sl_unet_5l1r"
    config = sl.get_config()
    assert (config["levels"], config["num_res_units"], config["width"], config["lift_depth"]) == (5, 1, 8, 4)
    unet = registry.build("unet_5l1r", name="baseline", in_channels=1)
    assert isinstance(unet, Segmenter) and unet.name == "baseline"
    assert tuple(unet.backbone.input_shape) == (None, None, None, 1)
    assert 0 < unet.count_params() < 3352215  # Table II's count is for 3 input channels


def test_register_a_family_by_decorator_or_by_import_path():
    @registry.register("toy_unet", title="toy", family="toy", arguments={"channels": (4, 8)})
    def toy(channels, name, **kwargs):
        from keras_sl.models.unet import UNet

        return Segmenter(UNet(2, 3, 1, channels, (2,), name="backbone", **kwargs), name=name)

    try:
        assert registry.build("toy_unet").backbone.count_params() > 0
        assert "toy_unet" in registry.names() and registry.families()[-1] == "toy"
        with pytest.raises(ValueError, match="already registered"):
            registry.register("toy_unet", toy)
        registry.register("toy_unet", "keras_sl.registry:_build_sl_unet", arguments={"levels": 2, "num_res_units": 0},
                          replace=True)
        assert isinstance(registry.build("toy_unet", lift_depth=4, num_selected=2), SLUNet)
    finally:
        registry.unregister("toy_unet")
    assert "toy_unet" not in registry.names()


def test_builtin_preset_folders_are_dataset_and_model_name():
    folders = [p for p in (ROOT / "pretrained").iterdir() if (p / "metadata.json").is_file()]
    named = [p for p in folders if p.name != "demo_cells"]  # the offline demo's own preset
    assert named
    for folder in named:
        dataset = json.loads((folder / "metadata.json").read_text())["dataset"]
        assert folder.name in {registry.preset_name(dataset, name) for name in registry.names()}, folder.name


def test_model_names_are_taken_apart_nowhere_else():
    """Composing ("{levels}l{res}r") or splitting model names is the registry's job."""
    pattern = re.compile(r"\}l\{[^}]*\}r|rpartition\(\"_\"\)|\.split\(\"l\"\)")
    offenders = []
    for folder in ("keras_sl", "recipes", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name != "registry.py" and pattern.search(path.read_text()):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
