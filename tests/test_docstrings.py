"""Every docstring example in keras_sl runs and prints what it claims."""

import doctest
import importlib
import pkgutil

import pytest

import keras_sl

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(keras_sl.__path__, "keras_sl.") if not m.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
