"""Forms that converters need (never chosen automatically).

The TFLite converter fuses the reference PReLU, ``x + (alpha - 1) * min(x, 0)``,
into ``tfl.prelu``, which only takes tensors up to rank 4; SL networks'
rank-5 activations convert in the ``max(x, 0) + alpha * min(x, 0)`` form.
"""

from __future__ import annotations

from keras import ops

from keras_sl.fast import dispatch
from keras_sl.fast.dispatch import register


@register("prelu", "max_min_form", pays=lambda *args: False,
          summary="max(x, 0) + alpha * min(x, 0) (same values), for the TFLite converter; export only.")
def max_min_prelu(x, alpha):
    return ops.maximum(x, 0.0) + alpha * ops.minimum(x, 0.0)


def max_min_form():
    """Trace PReLUs in the max + min form (a context manager)."""
    return dispatch.forced("prelu", "max_min_form")
