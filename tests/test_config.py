"""keras_sl.config: every KERAS_SL_* variable is read there, typed, and documented."""

import re
from pathlib import Path

import pytest

from keras_sl import config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for var in config.VARIABLES:
        monkeypatch.delenv(var.name, raising=False)


def test_defaults():
    assert config.cache_dir() == Path.home() / ".cache" / "keras_sl"
    assert config.malloc_tuning() and not config.malloc_tuning_explicit()
    assert config.xla_fusion() and not config.xla_cpu_library_fusions()
    assert config.torch_graph() == "export"


def test_values_are_read_when_asked(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_SL_CACHE", str(tmp_path))
    monkeypatch.setenv("KERAS_SL_MALLOC_TUNING", "0")
    monkeypatch.setenv("KERAS_SL_XLA_FUSION", "off")
    monkeypatch.setenv("KERAS_SL_XLA_CPU_LIBRARY_FUSIONS", "1")
    monkeypatch.setenv("KERAS_SL_TORCH_GRAPH", " Inductor ")
    assert config.cache_dir() == tmp_path
    assert not config.malloc_tuning() and config.malloc_tuning_explicit()
    assert not config.xla_fusion() and config.xla_cpu_library_fusions()
    assert config.torch_graph() == "inductor"
    monkeypatch.setenv("KERAS_SL_CACHE", "~/elsewhere")
    assert config.cache_dir() == Path.home() / "elsewhere"


def test_bad_values_name_the_variable(monkeypatch):
    monkeypatch.setenv("KERAS_SL_XLA_FUSION", "maybe")
    with pytest.raises(ValueError, match="KERAS_SL_XLA_FUSION='maybe' is not a switch"):
        config.xla_fusion()
    monkeypatch.setenv("KERAS_SL_TORCH_GRAPH", "jit")
    with pytest.raises(ValueError, match="KERAS_SL_TORCH_GRAPH='jit'.*use one of"):
        config.torch_graph()


def test_the_docs_show_the_table():
    text = (ROOT / "docs" / "configuration.md").read_text()
    assert config.markdown_table() in text


def test_every_variable_is_in_the_table_and_read_only_in_config():
    """Every KERAS_SL_* name the package or the test runner mentions is in the
    table, and no package module but keras_sl.config reads the environment
    for one."""
    known = {var.name for var in config.VARIABLES}
    read_elsewhere = []
    sources = [*(ROOT / "keras_sl").rglob("*.py"), ROOT / "tests" / "run_backends.py"]
    for path in sources:
        text = path.read_text()
        assert set(re.findall(r"KERAS_SL_[A-Z_]*[A-Z]", text)) <= known, path
        in_package = path.parent != ROOT / "tests" and path.name != "config.py"
        if in_package and re.search(r"(environ|getenv)[^\n]*KERAS_SL_", text):
            read_elsewhere.append(str(path.relative_to(ROOT)))
    assert read_elsewhere == []
