"""keras_sl's SL-UNet 5L/1Res vs the paper's own stack (MONAI in plain PyTorch).

Both run under ``KERAS_BACKEND=torch`` in one process, on the same random
batch, with the same weights (MONAI's, loaded into keras_sl through
:func:`keras_sl.interop.load_monai_state_dict`). Each is warmed up, then their
calls are interleaved (A B, B A, ...) so that a slow minute of a shared
machine slows both alike; the figure of merit is the median of the per-round
keras_sl / MONAI time ratios, with its quartiles.

* **inference**: keras_sl times the graph behind ``SLUNet.predict`` as
  :mod:`keras_sl.benchmark` does (``predict_on_batch`` of the model's
  prediction graph: lift, 3-D UNet, sum of the selected slices, sigmoid; on
  torch a captured ``torch.export`` graph, captured during warm-up). MONAI:
  ``UNet(spatial_dims=3, in_channels=3, out_channels=1, channels=(8,)*5,
  strides=(2,)*4, num_res_units=1)`` in eval mode under
  ``torch.inference_mode()``: lift (repeat along a new depth axis of 16),
  network, sum of the same selected slices' logits, sigmoid. Both calls
  start from the same NumPy ``(B, H, W, 3)`` batch and return NumPy.
* **train step**: keras_sl ``train_on_batch`` with ``SLUNet.compile()``
  defaults (AdamW lr 1e-3, weight decay 1e-2, gradient values clipped to 0.5,
  structure loss on every slice, Dice monitor). MONAI: forward on the lifted
  batch, the same structure loss (weighted BCE-with-logits + weighted soft
  IoU, PraNet's boundary weights) on every slice written in PyTorch,
  backward, ``clip_grad_value_(0.5)``, ``torch.optim.AdamW(lr=1e-3,
  weight_decay=1e-2, eps=1e-7)`` (Keras' epsilon), step; the loss goes back
  to the host, as ``train_on_batch`` returns it.

Not timed, once per run: keras_sl's per-slice (lifted) logits and
predictions are compared with MONAI's on the benchmark batch, and the losses
of the first two training steps of both (from the same weights) are recorded.

Usage::

    KERAS_BACKEND=torch python benchmarks/monai_comparison.py [--resolution 256] [--batch 4]
        [--rounds 15] [--mode infer|train|both] [--json FILE]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shlex
import statistics
import sys
import time

LIFT_DEPTH = 16
LEVELS = 5
NUM_RES_UNITS = 1
WIDTH = 8
MODES = {"infer": ("infer",), "train": ("train",), "both": ("infer", "train")}
ROW_TITLES = {"infer": "inference", "train": "train step"}
SCRIPT = "benchmarks/monai_comparison.py"

CONVENTIONS = {
    "time": "wall-clock seconds of one call returning host (NumPy) values, after warm-up; keras_sl and MONAI "
            "calls interleaved in one process (A B, B A, ...)",
    "ratio": "per round keras_sl seconds / MONAI seconds; ratio_median their median, ratio_quartiles the "
             "25th/75th percentiles (statistics.quantiles, inclusive method; below 1: keras_sl is faster)",
    "infer": "keras_sl: predict_on_batch of SLUNet's prediction graph (as keras_sl.benchmark times it); MONAI: "
             "eval mode, torch.inference_mode(), lift (repeat x16 along a new depth axis) + UNet + sum of the "
             "selected slices' logits + sigmoid",
    "train": "keras_sl: train_on_batch with SLUNet.compile() defaults (AdamW 1e-3 / wd 1e-2, clipvalue 0.5, "
             "SliceSupervision(StructureLoss), Dice metric); MONAI: lift + forward + structure loss (weighted "
             "BCE-with-logits + weighted soft IoU, boundary weights 1 + 5 |avgpool31(mask) - mask|) on every "
             "slice, backward, clip_grad_value_(0.5), torch.optim.AdamW(lr 1e-3, weight_decay 1e-2, eps 1e-7), "
             "step, loss.item()",
    "page_faults": "minor page faults of the process during each timed call (getrusage ru_minflt)",
    "check": "not timed: max |keras_sl - MONAI| of the per-slice logits (B, 16, H, W, 1) and of the "
             "predictions, same weights (load_monai_state_dict) and batch; first two training-step losses",
}


class Refused(RuntimeError):
    """The comparison cannot run here (wrong backend, MONAI missing)."""


def refusal_reason() -> str | None:
    """Why this comparison cannot run in this process, or None if it can."""
    keras = sys.modules.get("keras")
    backend = keras.backend.backend() if keras is not None else os.environ.get("KERAS_BACKEND")
    if backend != "torch":
        return (f"the MONAI comparison runs keras_sl and MONAI in one PyTorch process: it needs "
                f"KERAS_BACKEND=torch (Keras backend here: {backend or 'unset'}). Run "
                f"`KERAS_BACKEND=torch python {SCRIPT}`.")
    try:
        import monai  # noqa: F401
    except Exception as err:  # ImportError, or a broken install
        return (f"MONAI is not importable ({type(err).__name__}: {err}); install it with "
                "`pip install --no-deps monai==1.6.1` (a test dependency of keras_sl).")
    return None


# -- the two stacks -----------------------------------------------------------------
def build_pair(resolution: int, seed: int):
    """``(keras_sl SLUNet, MONAI UNet)`` computing the same function: MONAI's
    initial weights (``torch.manual_seed(seed)``) loaded into keras_sl, which
    replaces all of keras_sl's own (``strict`` loading: same parameter count)."""
    import monai
    import torch

    import keras_sl
    from keras_sl.interop import load_monai_state_dict

    model = keras_sl.SLUNet(levels=LEVELS, num_res_units=NUM_RES_UNITS, width=WIDTH, lift_depth=LIFT_DEPTH,
                            input_shape=(resolution, resolution, 3))
    torch.manual_seed(seed)
    net = monai.networks.nets.UNet(spatial_dims=3, in_channels=3, out_channels=1, channels=(WIDTH,) * LEVELS,
                                   strides=(2,) * (LEVELS - 1), num_res_units=NUM_RES_UNITS)
    load_monai_state_dict(model, net.state_dict())
    return model, net


def _lift(torch, x):
    """NumPy ``(B, H, W, C)`` -> torch ``(B, C, 16, H, W)``, the image repeated along depth."""
    return torch.from_numpy(x).permute(0, 3, 1, 2).unsqueeze(2).repeat(1, 1, LIFT_DEPTH, 1, 1)


def keras_infer_fn(model, x):
    """``(fn, runner)``: keras_sl's timed inference call and the graph it runs."""
    # The graph behind SLUNet.predict without its NumPy pre/post-processing,
    # exactly what keras_sl.benchmark times for an SL-UNet "infer" row.
    runner = model._inference_model("prediction")
    runner.compile(jit_compile="auto")
    return (lambda: runner.predict_on_batch(x)), runner


def monai_infer_fn(net, x, selected):
    """MONAI's timed inference call: lift, network, selected-slice sum, sigmoid."""
    import torch

    net.eval()
    index = torch.tensor(selected, dtype=torch.long)

    def infer():
        with torch.inference_mode():
            logits = net(_lift(torch, x))  # (B, 1, 16, H, W)
            prob = torch.sigmoid(logits.index_select(2, index).sum(2))  # (B, 1, H, W)
            return prob.permute(0, 2, 3, 1).numpy()

    return infer


def torch_structure_loss(logits, mask, kernel: int = 31, strength: float = 5.0):
    """Per-image, per-slice structure loss ``(B, m)`` in plain PyTorch.

    ``logits`` ``(B, 1, m, H, W)``, ``mask`` ``(B, 1, H, W)``; boundary weights
    ``w = 1 + strength * |avgpool_k(mask) - mask|`` (zero padding counted),
    ``wbce = sum(w * bce) / sum(w)``, ``wiou = 1 - (I + 1) / (U - I + 1)`` with
    ``I = sum(w p mask)``, ``U = sum(w (p + mask))``, ``p = sigmoid(logits)``.
    """
    import torch
    import torch.nn.functional as F

    w = 1.0 + strength * (F.avg_pool2d(mask, kernel, stride=1, padding=kernel // 2) - mask).abs()
    w, target = w.unsqueeze(2), mask.unsqueeze(2)  # broadcast over the slices
    bce = F.binary_cross_entropy_with_logits(logits, target.expand_as(logits), reduction="none")
    wbce = (w * bce).sum(dim=(3, 4)) / w.sum(dim=(3, 4))
    p = torch.sigmoid(logits)
    inter = (p * target * w).sum(dim=(3, 4))
    union = ((p + target) * w).sum(dim=(3, 4))
    wiou = 1.0 - (inter + 1.0) / (union - inter + 1.0)
    return (wbce + wiou).mean(dim=1)


def monai_train_fn(net, x, y):
    """MONAI's timed train step: forward, loss, backward, clipping, AdamW step."""
    import torch

    net.train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2, eps=1e-7)
    mask = torch.from_numpy(y).permute(0, 3, 1, 2)  # (B, 1, H, W)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = torch_structure_loss(net(_lift(torch, x)), mask).mean()
        loss.backward()
        torch.nn.utils.clip_grad_value_(net.parameters(), 0.5)
        optimizer.step()
        return loss.item()

    return step


# -- measurement ------------------------------------------------------------------------
def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def time_interleaved(fns, rounds: int, warmup: int):
    """``(warm-up results, seconds, minor page faults)`` per function of ``fns``:
    ``warmup`` untimed calls each, then ``rounds`` rounds calling each once,
    the order alternating between rounds (A B, B A, ...)."""
    warm = [[fn() for _ in range(warmup)] for fn in fns]
    times = [[] for _ in fns]
    faults = [[] for _ in fns]
    for i in range(rounds):
        for k in (range(len(fns)) if i % 2 == 0 else reversed(range(len(fns)))):
            before = _minor_faults()
            start = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - start)
            faults[k].append(_minor_faults() - before)
    return warm, times, faults


def _row(mode: str, rounds: int, times, faults) -> dict:
    (sl, mo), (sl_faults, mo_faults) = times, faults
    ratios = [a / b for a, b in zip(sl, mo)]
    # "inclusive": quartiles within the measured ratios, also for a few rounds.
    q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else (ratios[0],) * 3
    return {
        "mode": mode, "rounds": rounds,
        "keras_sl_median_s": statistics.median(sl), "monai_median_s": statistics.median(mo),
        "ratio_median": statistics.median(ratios), "ratio_quartiles": [q1, q3],
        "keras_sl_times_s": sl, "monai_times_s": mo, "ratios": ratios,
        "keras_sl_page_faults": sl_faults, "monai_page_faults": mo_faults,
    }


def check_equal(model, net, x) -> dict:
    """Max abs differences of keras_sl's and MONAI's per-slice logits and of
    their predictions (what the timed inference calls compute) on ``x``,
    through keras_sl's public ``predict_slices`` / ``predict``; not timed."""
    import numpy as np
    import torch

    net.eval()
    with torch.inference_mode():
        monai_slices = np.moveaxis(net(_lift(torch, x)).numpy(), 1, -1)  # (B, 16, H, W, 1)
    sl_slices = model.predict_slices(x, batch_size=len(x), verbose=0)
    sl_pred = model.predict(x, batch_size=len(x), verbose=0)
    monai_pred = monai_infer_fn(net, x, model.selected_slices)()
    return {
        "lifted_logits_shape": list(sl_slices.shape),
        "lifted_logits_max_abs_diff": float(np.abs(sl_slices - monai_slices).max()),
        "lifted_logits_max_abs": float(np.abs(monai_slices).max()),
        "prediction_max_abs_diff": float(np.abs(sl_pred - monai_pred).max()),
        "selected_slices": [int(i) for i in model.selected_slices],
    }


def run(resolution: int = 256, batch: int = 4, rounds: int = 15, mode: str = "both", warmup: int = 3,
        seed: int = 0, matmul_size: int = 2048, command: str | None = None) -> dict:
    """The comparison as a JSON-ready dict (see the module docstring)."""
    reason = refusal_reason()
    if reason:
        raise Refused(reason)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}.")
    if resolution % 2 ** (LEVELS - 1):
        raise ValueError(f"resolution must be a multiple of {2 ** (LEVELS - 1)}, got {resolution}.")
    if batch < 1 or rounds < 1 or warmup < 1:
        raise ValueError(f"batch, rounds and warmup must be >= 1, got {batch}, {rounds}, {warmup}.")

    import keras
    import monai
    import numpy as np
    import torch

    import keras_sl
    from keras_sl.benchmark import machine_info, matmul_peak_gflops, max_rss_mib
    from keras_sl.fast import runtime
    from keras_sl.models.inference_graph import CAPTURE_AFTER_CALLS

    # keras_sl's first model tunes the allocator; up front, so MONAI's calls run under it too.
    tuning = runtime.tune_process()
    machine = machine_info()
    machine.update(monai=monai.__version__, keras_sl=keras_sl.__version__, process_tuning=tuning,
                   matmul_gflops=matmul_peak_gflops(matmul_size), matmul_size=matmul_size)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, resolution, resolution, 3), dtype=np.float32)
    y = (rng.random((batch, resolution, resolution, 1)) > 0.5).astype(np.float32)

    report = {
        "command": command or f"KERAS_BACKEND=torch python {SCRIPT}",
        "machine": machine,
        "settings": {"resolution": resolution, "batch": batch, "rounds": rounds, "mode": mode, "warmup": warmup,
                     "seed": seed, "levels": LEVELS, "num_res_units": NUM_RES_UNITS, "width": WIDTH,
                     "lift_depth": LIFT_DEPTH},
        "conventions": CONVENTIONS,
        "rows": [],
    }
    model, net = build_pair(resolution, seed)
    report["check"] = check_equal(model, net, x)
    report["settings"]["keras_sl_backbone_layout"] = model.resolved_backbone_layout
    for step in MODES[mode]:
        if step == "train":  # a fresh pair: training starts from the same weights on both sides
            del model, net
            keras.backend.clear_session()
            gc.collect()
            model, net = build_pair(resolution, seed)
            model.compile()
            fns = [lambda: model.train_on_batch(x, y, return_dict=True), monai_train_fn(net, x, y)]
            (sl_warm, mo_warm), times, faults = time_interleaved(fns, rounds, max(2, warmup))
            sl_losses = [float(r["loss"]) for r in sl_warm[:2]]
            report["check"]["first_train_losses"] = {"keras_sl": sl_losses, "monai": mo_warm[:2],
                                                     "max_abs_diff": max(abs(a - b) for a, b in
                                                                         zip(sl_losses, mo_warm))}
        else:
            sl_fn, runner = keras_infer_fn(model, x)
            fns = [sl_fn, monai_infer_fn(net, x, model.selected_slices)]
            _, times, faults = time_interleaved(fns, rounds, max(warmup, CAPTURE_AFTER_CALLS + 1))
            report["settings"]["keras_sl_inference_graph"] = runner.inference_graph_mode
        report["rows"].append(_row(step, rounds, times, faults))
        gc.collect()
    machine.update(loadavg_end=[round(v, 2) for v in os.getloadavg()], torch_threads_end=torch.get_num_threads(),
                   peak_rss_mib=max_rss_mib())
    return report


def format_table(report: dict) -> str:
    """The rows as a readable table, with the machine and the equality check."""
    m, c = report["machine"], report["check"]
    lines = [
        f"keras_sl {m['keras_sl']} vs MONAI {m['monai']} | torch {m['backend_version']}, {m['torch_threads']} "
        f"threads | keras {m['keras']} | {m['cpu_count']} CPU(s) {m.get('cpu_model') or ''} | load avg "
        f"{m.get('loadavg_start')} -> {m.get('loadavg_end')}",
        f"SL-UNet {LEVELS}L/{NUM_RES_UNITS}Res, batch {report['settings']['batch']} x "
        f"{report['settings']['resolution']}^2 x 3, lift depth {LIFT_DEPTH}; same weights: max |diff| lifted "
        f"logits {c['lifted_logits_max_abs_diff']:.2e}, predictions {c['prediction_max_abs_diff']:.2e}",
        "",
        f"{'':<12} {'keras_sl s':>11} {'MONAI s':>9} {'ratio':>7} {'quartiles':>11} {'rounds':>7}",
    ]
    for r in report["rows"]:
        q1, q3 = r["ratio_quartiles"]
        lines.append(f"{ROW_TITLES[r['mode']]:<12} {r['keras_sl_median_s']:>11.4f} {r['monai_median_s']:>9.4f} "
                     f"{r['ratio_median']:>7.3f} {q1:>5.3f}-{q3:.3f} {r['rounds']:>7}")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=256, help="square image size (multiple of 16)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timed calls of each stack")
    parser.add_argument("--mode", choices=sorted(MODES), default="both")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls of each stack first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--matmul-size", type=int, default=2048, help="side of the matmul peak reference")
    parser.add_argument("--json", default=None, help="write the report (all per-round times) here")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    """Run from the command line arguments ``argv``; print the table, write the JSON."""
    args = parse_args(argv)
    command = "KERAS_BACKEND=torch python " + shlex.join([SCRIPT, *(sys.argv[1:] if argv is None else argv)])
    report = run(args.resolution, args.batch, args.rounds, args.mode, args.warmup, args.seed, args.matmul_size,
                 command=command)
    print(format_table(report))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, allow_nan=False)
            f.write("\n")
        print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    try:
        main()
    except Refused as err:
        sys.exit(f"monai_comparison: {err}")
