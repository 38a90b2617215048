"""Strict JSON values: NaN and Inf become null (``json.dumps`` would write bare ``NaN``)."""

from __future__ import annotations

import math


def json_safe(value):
    """``value`` with every non-finite float (NaN, Inf) as ``None``: strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # NumPy scalars
        return json_safe(value.item())
    return value
