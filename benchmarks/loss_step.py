"""Time of the SL training loss and its gradient, as a train step computes it.

``SliceSupervision(StructureLoss())`` on ``m`` slice logits of a batch at the
benchmark size (4 x 16 slices at 256x256 by default) against one binary mask
per image: value and gradient with respect to the logits, under the current
``KERAS_BACKEND`` (JAX: compiled as keras_sl models compile their steps;
TensorFlow: ``tf.function``; torch: eager with keras_sl's allocator
tuning, as ``SLUNet.compile`` applies it). Prints a markdown row.

Usage: ``KERAS_BACKEND=jax python benchmarks/loss_step.py [--repeats 9]``
"""

from __future__ import annotations

import argparse

import keras
import numpy as np
from keras import ops

from keras_sl.benchmark import _time_calls
from keras_sl.losses import SliceSupervision, StructureLoss


def _value_and_gradient(loss, y_true, logits):
    """A callable computing the mean loss and its gradient (host values)."""
    from keras_sl.backend_defaults import tune_allocator

    tune_allocator()  # as SLUNet.compile (torch; JAX already at import)
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        from keras_sl.models.xla_compile_options import xla_cpu_compiler_options

        step = jax.jit(jax.value_and_grad(lambda q, t: ops.mean(loss.per_slice(t, q))),
                       compiler_options=xla_cpu_compiler_options())
        return lambda: jax.block_until_ready(step(logits, y_true))
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function
        def step(q, t):
            with tf.GradientTape() as tape:
                tape.watch(q)
                value = tf.reduce_mean(loss.per_slice(t, q))
            return value, tape.gradient(value, q)

        return lambda: [v.numpy() for v in step(logits, y_true)]
    if backend == "torch":
        def step():
            q = logits.detach().requires_grad_(True)
            value = loss.per_slice(y_true, q).mean()
            value.backward()
            return value.item(), q.grad.numpy()

        return step
    raise ValueError(f"Unsupported backend {backend!r}; use tensorflow, jax or torch.")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--slices", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    y_true = ops.convert_to_tensor((rng.random((args.batch, args.size, args.size, 1)) > 0.5).astype("float32"))
    shape = (args.batch, args.slices, args.size, args.size, 1)
    logits = ops.convert_to_tensor(rng.normal(size=shape).astype("float32"))
    step = _value_and_gradient(SliceSupervision(StructureLoss()), y_true, logits)
    _, times, _ = _time_calls(step, args.repeats, warmup=3)
    print("| backend | slice logits | loss + gradient ms (median) |")
    print("|---|---|---:|")
    print(f"| {keras.backend.backend()} | {'x'.join(map(str, shape))} | {np.median(times) * 1e3:.3f} |")


if __name__ == "__main__":
    main()
