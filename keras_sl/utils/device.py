"""Where the current Keras backend runs."""

from __future__ import annotations

import keras


def tf_cpu_only() -> bool:
    """TensorFlow sees no GPU."""
    import tensorflow as tf

    return not tf.config.list_physical_devices("GPU")


def jax_cpu_only() -> bool:
    """JAX's default backend is the CPU."""
    import jax

    return jax.default_backend() == "cpu"


def on_cpu() -> bool:
    """Whether the current backend runs on the CPU (no GPU/TPU visible)."""
    backend = keras.backend.backend()
    if backend == "jax":
        return jax_cpu_only()
    if backend == "tensorflow":
        return tf_cpu_only()
    if backend == "torch":
        import torch

        return not torch.cuda.is_available()
    return True
