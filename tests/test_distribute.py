"""Data-parallel training on 2 CPU devices (JAX: DataParallel, TF: MirroredStrategy)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import os, numpy as np, keras
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras_sl
    from keras_sl.data import make_cells
    x, y = make_cells(8, size=32, seed=0)
    with keras_sl.distribute.data_parallel() as replicas:
        model = keras_sl.SLUNet(levels=3, lift_depth=4, num_selected=2, input_shape=(32, 32, 3))
        model.compile()
        hist = model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    assert replicas == 2, replicas
    assert np.isfinite(hist.history["loss"]).all()
    print("REPLICAS", replicas, "LOSS", hist.history["loss"][-1])
    """
)


@pytest.mark.skipif(keras.backend.backend() == "torch", reason="Keras' torch backend has no data-parallel API")
def test_fit_on_two_cpu_devices():
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3",
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "REPLICAS 2" in proc.stdout
