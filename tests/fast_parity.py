"""Test helper: a fast path of :mod:`keras_sl.fast` against the reference.

``assert_matches_reference(op, path, fn, inputs, variables)`` runs ``fn``
twice, once with every call of ``op`` on the reference and once with
``path`` forced, and checks that the path ran and that the outputs and the
gradients (of a fixed random projection of the outputs, with respect to the
inputs and ``variables``) agree. Works on every backend, without compiling
a training step::

    layer = Convolution(3, 5, strategy="banded")
    assert_matches_reference("convolution", "banded", layer, [x], lambda: layer.trainable_weights)
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_sl.fast import dispatch


def _as_list(outputs) -> list:
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def _cotangent(i: int, shape) -> np.ndarray:
    return np.random.default_rng(100 + i).normal(size=tuple(shape)).astype("float32")


def outputs_and_gradients(fn, inputs, variables=()):
    """``(outputs, gradients)`` as NumPy: gradients of
    ``sum_i <outputs_i, c_i>`` (fixed random ``c_i``) with respect to
    ``inputs`` and then ``variables`` (zeros where unused)."""
    backend = keras.backend.backend()
    inputs = [np.asarray(x, "float32") for x in inputs]
    variables = list(variables)
    if backend == "tensorflow":
        import tensorflow as tf

        xs = [tf.constant(x) for x in inputs]
        with tf.GradientTape() as tape:
            tape.watch(xs)
            outs = _as_list(fn(*xs))
            loss = sum(tf.reduce_sum(o * _cotangent(i, o.shape)) for i, o in enumerate(outs))
        grads = tape.gradient(loss, xs + [v.value for v in variables])
    elif backend == "torch":
        import torch

        xs = [torch.tensor(x, requires_grad=True) for x in inputs]
        outs = _as_list(fn(*xs))
        loss = sum(torch.sum(o * torch.tensor(_cotangent(i, o.shape), device=o.device)) for i, o in enumerate(outs))
        grads = torch.autograd.grad(loss, xs + [v.value for v in variables], allow_unused=True)
    elif backend == "jax":
        import jax
        import jax.numpy as jnp

        def loss_fn(xs, values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                outs = _as_list(fn(*xs))
            return sum(jnp.sum(o * _cotangent(i, o.shape)) for i, o in enumerate(outs)), outs

        values = [v.value for v in variables]
        (_, outs), (gx, gv) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
            [jnp.asarray(x) for x in inputs], values)
        grads = list(gx) + list(gv)
    else:
        raise NotImplementedError(backend)
    targets = inputs + [np.zeros(tuple(v.shape), "float32") for v in variables]
    grads = [np.zeros_like(t) if g is None else np.asarray(ops.convert_to_numpy(g)) for g, t in zip(grads, targets)]
    return [np.asarray(ops.convert_to_numpy(o)) for o in outs], grads


def assert_matches_reference(op: str, path: str, fn, inputs, variables=(), atol: float = 1e-5,
                             rtol: float = 1e-5, must_run: bool = True):
    """``fn(*inputs)`` with ``path`` forced on ``op`` equals the reference in
    outputs and gradients; ``must_run``: the path ran at least once.
    ``variables`` may be a callable (read after a first call builds the layers)."""
    with dispatch.forced(op, dispatch.REFERENCE):
        fn(*[ops.convert_to_tensor(np.asarray(x, "float32")) for x in inputs])  # builds layers, no gradient scope
    if callable(variables):
        variables = variables()
    with dispatch.forced(op, dispatch.REFERENCE), dispatch.recording() as used:
        expected, expected_grads = outputs_and_gradients(fn, inputs, variables)
    assert (op, path) not in used
    with dispatch.forced(op, path), dispatch.recording() as used:
        got, grads = outputs_and_gradients(fn, inputs, variables)
    if must_run:
        assert (op, path) in used, f"{op}/{path} did not run (ran: {sorted(set(used))})"
    assert len(got) == len(expected)
    for i, (a, b) in enumerate(zip(got, expected)):
        assert a.shape == b.shape, (i, a.shape, b.shape)
        np.testing.assert_allclose(a, b, atol=atol, rtol=rtol, err_msg=f"{op}/{path}: output {i}")
    for i, (a, b) in enumerate(zip(grads, expected_grads)):
        scale = max(1.0, float(np.abs(b).max(initial=0.0)))
        np.testing.assert_allclose(a, b, atol=atol * scale, rtol=rtol, err_msg=f"{op}/{path}: gradient {i}")
