"""Forward, input-gradient and kernel-gradient time of one folded convolution.

The SL-UNet's dominant convolution on CPU is the banded (folded) 3x3 one of
its second decoder level: 8 channels x 8 lifted slices = 64 -> 64 channels at
128x128, batch 4. This script times its three parts under the current
``KERAS_BACKEND`` and prints a markdown row, to show where a backend's train
step goes (on JAX/XLA CPU the kernel gradient dominates).

Usage: ``KERAS_BACKEND=jax python benchmarks/conv_grad.py [--repeats 10]``
"""

from __future__ import annotations

import argparse

import keras
import numpy as np
from keras import ops

from keras_sl.benchmark import _time_calls


def _median_ms(fn, repeats: int) -> float:
    _, times, _ = _time_calls(fn, repeats, warmup=2)
    return float(np.median(times) * 1e3)


def _parts(x, k, dy):
    """Callables running forward, input gradient and kernel gradient."""
    backend = keras.backend.backend()
    conv = lambda x, k: ops.conv(x, k, padding="same")  # noqa: E731
    if backend == "jax":
        import functools

        import jax

        from keras_sl.models.xla_compile_options import xla_cpu_compiler_options

        jit = functools.partial(jax.jit, compiler_options=xla_cpu_compiler_options())  # as keras_sl models
        fwd = jit(conv)
        dx = jit(lambda x, k, dy: jax.vjp(conv, x, k)[1](dy)[0])
        dk = jit(lambda x, k, dy: jax.vjp(conv, x, k)[1](dy)[1])
        return (
            lambda: fwd(x, k).block_until_ready(),
            lambda: dx(x, k, dy).block_until_ready(),
            lambda: dk(x, k, dy).block_until_ready(),
        )
    if backend == "tensorflow":
        import tensorflow as tf

        fwd = tf.function(conv)

        def grad(which):
            @tf.function
            def run(x, k, dy):
                with tf.GradientTape() as tape:
                    tape.watch([x, k])
                    y = conv(x, k)
                return tape.gradient(y, [x, k], output_gradients=dy)[which]

            return run

        dx, dk = grad(0), grad(1)
        return (lambda: fwd(x, k).numpy(), lambda: dx(x, k, dy).numpy(), lambda: dk(x, k, dy).numpy())
    if backend == "torch":
        import torch

        def grad(which):
            def run():
                xs = x.detach().requires_grad_(which == 0)
                ks = k.detach().requires_grad_(which == 1)
                y = conv(xs, ks)
                return torch.autograd.grad(y, [xs if which == 0 else ks], dy)[0]

            return run

        def fwd():
            with torch.no_grad():
                return conv(x, k)

        return fwd, grad(0), grad(1)
    raise ValueError(f"Unsupported backend {backend!r}; use tensorflow, jax or torch.")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    shape = (args.batch, args.size, args.size, args.channels)
    x = ops.convert_to_tensor(rng.random(shape, dtype="float32"))
    dy = ops.convert_to_tensor(rng.random(shape, dtype="float32"))
    k = ops.convert_to_tensor(rng.random((3, 3, args.channels, args.channels), dtype="float32") * 0.01)
    times = [_median_ms(fn, args.repeats) for fn in _parts(x, k, dy)]
    print("| backend | input | forward ms | input gradient ms | kernel gradient ms |")
    print("|---|---|---:|---:|---:|")
    print(
        f"| {keras.backend.backend()} | {'x'.join(map(str, shape))}, 3x3 -> {args.channels} "
        f"| {times[0]:.3f} | {times[1]:.3f} | {times[2]:.3f} |"
    )


if __name__ == "__main__":
    main()
