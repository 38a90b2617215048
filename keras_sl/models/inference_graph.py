"""Captured inference graphs for keras_sl models on the torch backend.

Keras runs a torch model eagerly: every layer call goes through Keras' Python
machinery (call-signature binding, autocast and name scopes) and every
``keras.ops`` call checks its arguments for symbolic tensors. An SL-UNet
5L/1Res forward pass is ~70 layer calls and ~500 ops: about 10 ms of Python
per batch, whatever the image size (measured at 32x32: 13.9 ms on torch vs
3.3 ms on TensorFlow's graph). ``torch.compile`` cannot remove it, because
Keras' call-signature binding breaks its graph at every layer.

This module captures the forward pass once per input signature with
``torch.export`` (non-strict: the Python runs once on real tensors and the
aten ops are recorded) and replays the graph, which shares the model's
parameters, so weight updates, ``load_weights`` and a new slice selection are
seen without recapture. Optionally the graph is compiled by inductor, which
fuses instance norm, PReLU and residual sums into single passes.

Modes (``compile(jit_compile=...)`` on torch, or ``KERAS_SL_TORCH_GRAPH``):

* ``"export"`` (``jit_compile="auto"``, the default): replay the captured
  aten graph. Same kernels as eager, so identical outputs; capture costs
  ~1-2 s and happens on the second call with the same input signature, so a
  stream of differently sized images stays eager.
* ``"inductor"`` (``jit_compile=True``): compile the captured graph with
  ``torch.compile`` (needs a C++ compiler on CPU; ~20 s for an SL-UNet at
  256x256). Outputs agree with eager to float32 round-off.
* ``"eager"`` (``jit_compile=False``): Keras' own eager execution.

Only inference (``predict``, ``predict_on_batch``) uses the graph; training
steps stay eager on torch (Keras' ``torch.compile`` of a train step is slower
here for the same graph-break reason). Other backends are unaffected: their
``predict`` already runs a traced graph.

Example:
>>> import numpy as np
>>> import keras_sl
>>> model = keras_sl.UNet(2, 3, 1, channels=(8, 16), strides=(2,), input_shape=(32, 32, 3))
>>> model.compile(jit_compile="auto")  # "export" on torch
>>> model.predict_on_batch(np.zeros((2, 32, 32, 3), "float32")).shape
(2, 32, 32, 1)
"""

from __future__ import annotations

import collections
import contextlib
import time
import warnings

import keras

from keras_sl import config
from keras_sl.fast.torch_kernels import traced_for_fusion

GRAPH_MODES = ("eager", "export", "inductor")
ENV_VAR = "KERAS_SL_TORCH_GRAPH"
# Calls with one input signature before it is captured: a signature seen
# once (e.g. images of many sizes predicted one by one) never pays the capture.
CAPTURE_AFTER_CALLS = 2
MAX_GRAPHS = 4


def default_graph_mode() -> str:
    """``"export"`` unless ``KERAS_SL_TORCH_GRAPH`` names another mode."""
    mode = config.torch_graph()
    if mode not in GRAPH_MODES:
        raise ValueError(
            f"{ENV_VAR}={mode!r} is not a torch inference graph mode; use one of {GRAPH_MODES}."
        )
    return mode


def graph_mode_for(jit_compile) -> str | None:
    """Inference graph mode that ``compile(jit_compile=...)`` selects on torch.

    ``"auto"`` -> :func:`default_graph_mode`, ``True`` -> ``"inductor"``,
    ``False`` -> ``"eager"``; a mode name is taken as is. None on other
    backends.
    """
    if keras.backend.backend() != "torch":
        return None
    if isinstance(jit_compile, str):
        if jit_compile == "auto":
            return default_graph_mode()
        if jit_compile in GRAPH_MODES:
            return jit_compile
        raise ValueError(
            f"jit_compile={jit_compile!r}: use True, False, 'auto' or one of {GRAPH_MODES} on torch."
        )
    return "inductor" if jit_compile else "eager"


def _forward_module(model):
    """``model(x, training=False)`` as a ``torch.nn.Module`` for export."""
    import torch

    class Forward(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x, training=False)

    return Forward(model)


class TorchInferenceGraphs:
    """Per-signature cache of captured (and optionally compiled) forward graphs.

    ``graphs(x)`` returns the model's ``training=False`` output for the torch
    tensor ``x``, from a captured graph once ``x``'s signature (shape, dtype,
    device) has been seen :data:`CAPTURE_AFTER_CALLS` times, eagerly before
    that and wherever capture failed (with one warning naming the reason).
    """

    def __init__(self, model: keras.Model, mode: str):
        if mode not in ("export", "inductor"):
            raise ValueError(f"mode must be 'export' or 'inductor', got {mode!r}.")
        self.model = model
        self.mode = mode
        self.calls: collections.Counter = collections.Counter()
        self.graphs: collections.OrderedDict = collections.OrderedDict()
        self.capture_seconds: dict = {}
        self.failed: dict = {}
        self._variables = None
        self._weights_key = None

    def _current_weights_key(self):
        # Captured graphs hold the variables' torch tensors; Keras assigns in
        # place, so the tensors only change if the variables are rebuilt.
        if self._variables is None:
            self._variables = list(self.model.weights)
        return tuple(id(v.value) for v in self._variables)

    def _capture(self, x):
        import torch

        start = time.perf_counter()
        fusing = traced_for_fusion() if self.mode == "inductor" else contextlib.nullcontext()
        with torch.no_grad(), fusing:
            exported = torch.export.export(_forward_module(self.model), (x,), strict=False)
        graph = exported.module()
        if self.mode == "inductor":
            graph = torch.compile(graph)
            with torch.no_grad():
                graph(x)  # compile now, so capture_seconds includes it
        return graph, time.perf_counter() - start

    def __call__(self, x):
        key = (tuple(x.shape), str(x.dtype), str(x.device))
        weights_key = self._current_weights_key()
        if weights_key != self._weights_key:
            self.graphs.clear()
            self._weights_key = weights_key
        graph = self.graphs.get(key)
        if graph is not None:
            self.graphs.move_to_end(key)
            return graph(x)
        self.calls[key] += 1
        if key in self.failed or self.calls[key] < CAPTURE_AFTER_CALLS:
            return self.model(x, training=False)
        try:
            graph, seconds = self._capture(x)
        except Exception as error:  # noqa: BLE001 - any capture failure falls back to eager
            self.failed[key] = f"{type(error).__name__}: {error}"
            warnings.warn(
                f"{self.model.name}: could not capture a torch {self.mode} graph for inputs of shape "
                f"{key[0]} ({self.failed[key].splitlines()[0][:300]}); running eagerly. Set "
                f"{ENV_VAR}=eager or compile(jit_compile=False) to skip the capture.",
                stacklevel=3,
            )
            return self.model(x, training=False)
        self.capture_seconds[key] = seconds
        self.graphs[key] = graph
        while len(self.graphs) > MAX_GRAPHS:
            self.graphs.popitem(last=False)
        return graph(x)


class InferenceGraphMixin:
    """Runs ``predict_step`` through :class:`TorchInferenceGraphs` on torch.

    Mixed into keras_sl models (before ``keras.Model``). ``compile``'s
    ``jit_compile`` picks the mode on torch (:func:`graph_mode_for`); an
    uncompiled model uses :func:`default_graph_mode`. Models built from
    another model's layers (``SLUNet``'s prediction graphs) follow that
    model's mode through ``_graph_mode_source``.
    """

    _graph_mode = None
    _graph_mode_source = None

    def compile(self, *args, jit_compile="auto", **kwargs):
        from keras_sl import backend_defaults

        self._requested_jit_compile = jit_compile
        self._graph_mode = graph_mode_for(jit_compile)
        self._inference_graphs = None
        if self._graph_mode is not None:
            # torch: Keras' own torch.compile of the steps breaks its graph at
            # every layer call (slower than eager); the mode above covers predict.
            jit_compile = False
        super().compile(*args, jit_compile=backend_defaults.apply(jit_compile), **kwargs)

    def make_predict_function(self, force=False):
        # Inference without compile() gets the allocator defaults too.
        from keras_sl import backend_defaults

        backend_defaults.tune_allocator()
        return super().make_predict_function(force)

    def get_compile_config(self):
        """Keras' compile config with ``jit_compile`` as the user passed it."""
        config = super().get_compile_config()
        if config and hasattr(self, "_requested_jit_compile"):
            config["jit_compile"] = self._requested_jit_compile
        return config

    def compile_from_config(self, config):
        """Restore the compile state saved in a ``.keras`` file."""
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built and getattr(self, "optimizer", None) is not None:
            self.optimizer.build(self.trainable_variables)

    @property
    def inference_graph_mode(self) -> str | None:
        """Torch inference graph mode in effect (None on other backends)."""
        if keras.backend.backend() != "torch":
            return None
        if self._graph_mode is not None:
            return self._graph_mode
        source = self._graph_mode_source
        if source is not None:
            return source().inference_graph_mode
        return default_graph_mode()

    @property
    def inference_graphs(self) -> TorchInferenceGraphs | None:
        """The graph cache ``predict`` uses (None when running eagerly)."""
        mode = self.inference_graph_mode
        if mode in (None, "eager"):
            return None
        graphs = getattr(self, "_inference_graphs", None)
        if graphs is None or graphs.mode != mode:
            graphs = TorchInferenceGraphs(self, mode)
            # Not a Keras-tracked attribute: the cache refers back to the model.
            object.__setattr__(self, "_inference_graphs", graphs)
        return graphs

    def predict_step(self, *args):
        # JAX's predict_step takes (state, data); graphs exist on torch only.
        graphs = self.inference_graphs
        if graphs is None:
            return super().predict_step(*args)
        x, _, _ = keras.utils.unpack_x_y_sample_weight(args[-1])
        if isinstance(x, (list, tuple, dict)):
            return super().predict_step(*args)
        return graphs(keras.ops.convert_to_tensor(x))
