"""Fixtures from the original PyTorch implementations (``../shared/reference``).

Each family folder holds ``weights.npz`` (the original ``state_dict``),
``io.npz`` (inputs ``in_*`` and outputs ``out_*`` of one eval-mode pass, NCHW)
and ``config.json``. Tests that use them carry ``@pytest.mark.reference`` and
skip with the reason when the folder is absent (it exists on development
machines only).

Example::

    from reference_fixtures import load_fixture, to_channels_last

    fixture = load_fixture("emcad")
    x1 = to_channels_last(fixture.inputs["in_x1"])
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
ATOL = 1e-4  # the parity bar for every port


@dataclass
class Fixture:
    weights: dict
    inputs: dict
    outputs: dict
    config: dict
    folder: Path


def load_fixture(family: str) -> Fixture:
    folder = REFERENCE / family
    if not (folder / "weights.npz").is_file():
        pytest.skip(f"reference fixture {family!r} not found at {folder} "
                    "(../shared/reference exists on development machines only)")
    weights = dict(np.load(folder / "weights.npz"))
    io = dict(np.load(folder / "io.npz"))
    config = json.loads((folder / "config.json").read_text())
    inputs = {k: v for k, v in io.items() if k.startswith("in_")}
    outputs = {k: v for k, v in io.items() if k.startswith("out_")}
    return Fixture(weights, inputs, outputs, config, folder)


def to_channels_last(x: np.ndarray) -> np.ndarray:
    """NCHW (any rank) -> NHWC."""
    return np.ascontiguousarray(np.moveaxis(np.asarray(x), 1, -1))


def to_channels_first(x) -> np.ndarray:
    """NHWC (any rank) -> NCHW."""
    return np.ascontiguousarray(np.moveaxis(np.asarray(x), -1, 1))


def assert_close(actual, expected, name: str, atol: float = ATOL, rtol: float = 0.0) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != reference {expected.shape}"
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=rtol, err_msg=f"{name} differs from the reference")
