"""Multi-device data parallelism: keras.distribution on JAX, tf.distribute on TF.

Example::

    with keras_sl.distribute.data_parallel():   # all local devices
        model = keras_sl.SLUNet()
        model.compile()
    model.fit(train, epochs=40)

On CPU, JAX can be given several host devices with
``XLA_FLAGS=--xla_force_host_platform_device_count=2`` (set before import).
"""

from __future__ import annotations

import contextlib

import keras


def local_devices() -> list[str]:
    """Accelerators if any, else CPUs, of the current backend."""
    if keras.backend.backend() == "jax":
        import jax

        kinds = {d.platform for d in jax.devices()}
        kind = "gpu" if "gpu" in kinds else ("tpu" if "tpu" in kinds else "cpu")
        return keras.distribution.list_devices(kind)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    return keras.distribution.list_devices()


@contextlib.contextmanager
def data_parallel(devices: list[str] | None = None):
    """Build and compile models inside this context to train them data-parallel.

    JAX: ``keras.distribution.DataParallel`` (batches sharded over devices).
    TensorFlow: ``tf.distribute.MirroredStrategy``. torch: a single device
    (Keras' torch backend has no built-in data parallelism); the context is
    then a no-op. Yields the number of replicas.
    """
    backend = keras.backend.backend()
    devices = devices or local_devices()
    if backend == "jax":
        previous = keras.distribution.distribution()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        try:
            yield len(devices)
        finally:
            keras.distribution.set_distribution(previous)
    elif backend == "tensorflow":
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy(devices=devices)
        with strategy.scope():
            yield strategy.num_replicas_in_sync
    else:
        yield 1
