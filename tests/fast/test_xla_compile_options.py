"""keras_sl models compile their JAX step functions with XLA CPU options
(YNNPACK library fusions off), per compilation, with the user's choice kept."""

import keras
import numpy as np
import pytest

import keras_sl
from keras_sl.models import xla_compile_options as xo

JAX_ONLY = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="the options are passed to jax.jit (JAX backend only)"
)


def _model():
    model = keras_sl.SLUNet(levels=3, num_res_units=1, input_shape=(32, 32, 3))
    model.compile()
    return model


def _batch():
    rng = np.random.default_rng(0)
    x = rng.random((2, 32, 32, 3)).astype("float32")
    y = (rng.random((2, 32, 32, 1)) > 0.5).astype("float32")
    return x, y


def test_no_options_off_jax_or_when_the_user_chose(monkeypatch):
    monkeypatch.delenv("KERAS_SL_XLA_CPU_LIBRARY_FUSIONS", raising=False)
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    options = xo.xla_cpu_compiler_options()
    if keras.backend.backend() != "jax":
        assert options == {}
        return
    import jax

    expected = {xo.YNN_OPTION: ""} if jax.default_backend() == "cpu" else {}
    assert options == expected
    monkeypatch.setenv("KERAS_SL_XLA_CPU_LIBRARY_FUSIONS", "1")
    assert xo.xla_cpu_compiler_options() == {}
    monkeypatch.delenv("KERAS_SL_XLA_CPU_LIBRARY_FUSIONS")
    monkeypatch.setenv("XLA_FLAGS", f"--{xo.YNN_OPTION}=dot")
    assert xo.xla_cpu_compiler_options() == {}


@JAX_ONLY
@pytest.mark.parametrize("step", ["train", "test", "predict"])
def test_every_keras_step_compiles_with_the_options(monkeypatch, step):
    # An invalid value makes XLA fail the compilation: proof that the option
    # reaches the step's compilation (and nothing else is compiled with it).
    import keras.src.backend.jax.trainer as jax_trainer

    model = _model()
    x, y = _batch()
    monkeypatch.setattr(xo, "xla_cpu_compiler_options", lambda: {xo.YNN_OPTION: "no_such_fusion"})
    call = {"train": lambda: model.train_on_batch(x, y), "test": lambda: model.test_on_batch(x, y),
            "predict": lambda: model.predict_on_batch(x)}[step]
    with pytest.raises(Exception, match=xo.YNN_OPTION):
        call()
    import jax

    assert jax_trainer.jit is jax.jit  # restored after building the step


@JAX_ONLY
def test_same_predictions_and_losses_with_and_without_the_options(monkeypatch):
    x, y = _batch()
    model = _model()
    fast = model.predict_on_batch(x)
    fast_loss = model.test_on_batch(x, y)
    monkeypatch.setenv("KERAS_SL_XLA_CPU_LIBRARY_FUSIONS", "1")
    model.predict_function = None
    model.test_function = None
    np.testing.assert_allclose(model.predict_on_batch(x), fast, atol=1e-5)
    np.testing.assert_allclose(model.test_on_batch(x, y), fast_loss, rtol=1e-5)


def test_context_is_a_no_op_without_options():
    with xo.keras_jit_options({}):
        pass
    if keras.backend.backend() == "jax":
        import jax
        import keras.src.backend.jax.trainer as jax_trainer

        with xo.keras_jit_options({xo.YNN_OPTION: ""}):
            assert jax_trainer.jit is not jax.jit
        assert jax_trainer.jit is jax.jit


@JAX_ONLY
def test_benchmark_records_the_options_its_steps_compile_with():
    from keras_sl.benchmark import machine_info

    info = machine_info()
    assert info["xla_compiler_options"] == xo.xla_cpu_compiler_options()
    assert "xla_flags" in info
