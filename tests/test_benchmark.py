"""keras_sl.benchmark, ``keras-sl bench`` and benchmarks/run_all.py's report (tiny shapes)."""

import importlib.util
import json
import math
import statistics
from pathlib import Path

import keras
import pytest

from keras_sl.benchmark import build_benchmark_model, format_results, run_benchmark
from keras_sl.profiler import profile

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["sl_unet_5l1r", "unet_5l1r"]
ROW_KEYS = {"backend", "model", "mode", "resolution", "batch", "median_s", "times_s", "warmup_s", "gflops",
            "achieved_gflops", "peak_fraction", "peak_rss_mib", "page_faults", "page_faults_per_call"}


@pytest.fixture(scope="module")
def report():
    return run_benchmark(MODELS, resolution=32, batch=1, mode="both", repeats=2, warmup=1, matmul_size=256)


def _script(name: str):
    """A script of benchmarks/ loaded as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_all():
    return _script("run_all")


def test_report_structure(report):
    assert {"machine", "matmul_gflops", "results", "conventions"} <= set(report)
    machine = report["machine"]
    for key in ("cpu_count", "platform", "python", "keras", "backend", "backend_version", "date"):
        assert machine[key], key
    assert machine["backend"] == keras.backend.backend()
    assert report["matmul_gflops"] > 0
    assert "3 x" in report["conventions"]["gflops"]  # the training FLOP convention is stated
    # the process tuning keras_sl applies on first use, applied up front and recorded
    assert set(machine["process_tuning"]) == {"malloc", "jax_cpu_heap"}
    assert machine["malloc_tuned"] == machine["process_tuning"]["malloc"]
    assert [(r["model"], r["mode"]) for r in report["results"]] == [
        (m, mode) for m in MODELS for mode in ("infer", "train")
    ]
    json.loads(json.dumps(report, allow_nan=False))  # plain, finite JSON


def test_row_values(report):
    forward = {m: 2 * profile(build_benchmark_model(m, 32), (32, 32, 3))["macs"] / 1e9 for m in MODELS}
    for r in report["results"]:
        assert ROW_KEYS <= set(r)
        assert r["backend"] == keras.backend.backend()
        assert (r["resolution"], r["batch"]) == (32, 1)
        assert len(r["times_s"]) == 2 and all(t > 0 for t in r["times_s"])
        assert r["median_s"] == pytest.approx(statistics.median(r["times_s"]))
        assert r["warmup_s"] > 0
        expected = forward[r["model"]] * (3 if r["mode"] == "train" else 1)
        assert r["gflops"] == pytest.approx(expected)
        assert r["achieved_gflops"] == pytest.approx(r["gflops"] / r["median_s"])
        assert r["peak_fraction"] == pytest.approx(r["achieved_gflops"] / report["matmul_gflops"])
        assert 0 < r["peak_fraction"] < 10
        assert r["peak_rss_mib"] > 50
        assert len(r["page_faults_per_call"]) == 2 and min(r["page_faults_per_call"]) >= 0
        assert r["page_faults"] == int(statistics.median(r["page_faults_per_call"]))
        if r.get("rss_hwm_mib") is not None:
            assert 0 < r["rss_hwm_mib"] <= r["peak_rss_mib"] + 1


def test_timed_calls_count_the_page_faults_of_each_call():
    """A call that maps and touches 8 MB of fresh memory faults ~2,048 times
    (4 KiB pages); a call that allocates nothing hardly at all."""
    import mmap

    from keras_sl.benchmark import _time_calls

    size = 8 * 1024 * 1024

    def touch_fresh_pages():
        region = mmap.mmap(-1, size)
        region[::4096] = b"x" * (size // 4096)
        region.close()

    _, times, faults = _time_calls(touch_fresh_pages, repeats=3, warmup=1)
    assert len(times) == len(faults) == 3
    assert all(f >= 0.9 * size // 4096 for f in faults), faults
    _, _, idle = _time_calls(lambda: None, repeats=3, warmup=1)
    assert max(idle) < 100, idle


def test_sl_unet_infers_through_the_slice_head():
    """The timed SL-UNet inference graph is SLUNet.predict's (one k-D map, not slices)."""
    model = build_benchmark_model("sl_unet_5l1r", 32)
    assert model._inference_model(False).output.shape == (None, 32, 32, 1)
    assert model.image_shape == (32, 32, 3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="Unknown model 'resnet_5l1r'.*sl_unet_5l1r"):
        run_benchmark(["resnet_5l1r"], resolution=32, repeats=1)
    with pytest.raises(ValueError, match="multiple of 128"):
        run_benchmark(["sl_unet_8l1r"], resolution=32, repeats=1)
    with pytest.raises(ValueError, match="mode"):
        run_benchmark(["unet_5l1r"], resolution=32, mode="fit", repeats=1)


def test_cli_bench_writes_json(tmp_path, capsys):
    from keras_sl.cli import main

    out = tmp_path / "bench.json"
    assert main(["bench", "--models", "unet_5l1r", "--resolution", "32", "--batch", "1", "--mode", "infer",
                 "--repeats", "1", "--warmup", "1", "--matmul-size", "128", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["command"].startswith("keras-sl bench")
    assert [(r["model"], r["mode"]) for r in data["results"]] == [("unet_5l1r", "infer")]
    assert data["results"][0]["median_s"] > 0
    printed = capsys.readouterr().out
    assert "unet_5l1r" in printed and "GFLOP/s" in printed and "matmul peak" in printed


def _fake_report(backend, scale, peak):
    rows = []
    for model, base in (("sl_unet_5l1r", 0.1), ("unet_5l1r", 0.4), ("unet_8l1r", 1.0)):
        for mode, factor in (("infer", 1.0), ("train", 3.0)):
            median = base * factor * scale
            gflops = 10.0 * factor
            rows.append({"backend": backend, "model": model, "mode": mode, "resolution": 256, "batch": 4,
                         "median_s": median, "times_s": [median] * 3, "warmup_s": 5.0, "gflops": gflops,
                         "achieved_gflops": gflops / median, "peak_fraction": gflops / median / peak,
                         "page_faults": 7, "peak_rss_mib": 900.0, "rss_hwm_mib": 800.0, "device_memory": None})
    machine = {"cpu_count": 2, "cpu_affinity": 2, "cpu_model": "Fake CPU", "platform": "Linux-fake",
               "python": "3.11.7", "numpy": "2.0", "keras": "3.15.1", "backend": backend,
               "backend_version": {"tensorflow": "2.21.0", "torch": "2.13.0"}[backend],
               "date": "2026-11-24T04:00:00+00:00", "loadavg_start": [0.1, 0.1, 0.1],
               "loadavg_end": [2.0, 1.0, 0.5]}
    return {"machine": machine, "backend": backend, "matmul_gflops": peak, "matmul_size": 2048,
            "settings": {"models": [], "resolution": 256, "batch": 4, "mode": "both", "repeats": 3, "warmup": 2},
            "results": rows, "command": "keras-sl bench --resolution 256"}


def test_markdown_report(tmp_path):
    run_all = _run_all()
    (tmp_path / "tensorflow.json").write_text(json.dumps(_fake_report("tensorflow", 1.0, 100.0)))
    (tmp_path / "torch.json").write_text(json.dumps(_fake_report("torch", 2.0, 50.0)))
    reports = run_all.load_reports([tmp_path / "tensorflow.json", tmp_path / "torch.json", tmp_path / "jax.json"])
    assert len(reports) == 2  # missing backends are skipped
    text = run_all.format_markdown(reports, command="python benchmarks/run_all.py --backends tensorflow,torch")
    lines = text.splitlines()

    assert "python benchmarks/run_all.py --backends tensorflow,torch" in text
    assert "Fake CPU" in text and "Keras 3.15.1" in text and "2.13.0" in text and "2026-11-24" in text
    # main table: median, GFLOP/s, % of peak, ratio to the fastest backend
    row = next(line for line in lines if line.startswith("| torch | sl_unet_5l1r | infer |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3] == "4x256x256"
    assert float(cells[4]) == pytest.approx(0.2)  # median s
    assert float(cells[6]) == pytest.approx(50.0)  # GFLOP/s
    assert float(cells[7]) == pytest.approx(100.0)  # % of the 50 GFLOP/s matmul peak
    assert cells[8] == "2.00"  # x the fastest backend (tensorflow)
    assert cells[10] == "7"  # page faults per call
    tf_row = next(line for line in lines if line.startswith("| tensorflow | sl_unet_5l1r | infer |"))
    assert [c.strip() for c in tf_row.strip("|").split("|")][8] == "1.00"
    # SL-UNet / UNet ratio per backend and mode (unet_8l1r has no SL partner: no column)
    ratio_header = next(line for line in lines if line.startswith("| backend | mode | input |"))
    assert "5l1r" in ratio_header and "8l1r" not in ratio_header
    for backend in ("tensorflow", "torch"):
        for mode in ("infer", "train"):
            assert f"| {backend} | {mode} | 4x256x256 | 0.25 |" in text
    # backend comparison table
    assert "| unet_8l1r | train | 4x256x256 | 3.0000 (x1.00) | 6.0000 (x2.00) |" in text
    # table rows are well-formed markdown: same cell count as their header
    for block in text.split("\n\n"):
        table = [line for line in block.splitlines() if line.startswith("|")]
        if table:
            assert len({line.count("|") for line in table}) == 1, block

    out = tmp_path / "README.md"
    assert run_all.main(["--report-only", "--backends", "tensorflow,torch", "--results-dir", str(tmp_path),
                         "--out", str(out)]) == 0
    assert "| torch | unet_5l1r | train |" in out.read_text()
    assert "Produced by" not in out.read_text()  # no recorded command: none is invented
    # A rebuilt report names the command that produced the JSON files.
    run_all.record_command([tmp_path / "tensorflow.json", tmp_path / "torch.json"],
                           "python benchmarks/run_all.py --backends tensorflow,torch")
    assert run_all.main(["--report-only", "--backends", "tensorflow,torch", "--results-dir", str(tmp_path),
                         "--out", str(out)]) == 0
    assert "Produced by `python benchmarks/run_all.py --backends tensorflow,torch`" in out.read_text()
    assert not math.isnan(reports[0]["matmul_gflops"])


def test_sl_variants_time_each_execution_path():
    report = run_benchmark(["sl_unet_5l1r", "unet_5l1r"], resolution=32, batch=1, mode="infer", repeats=1,
                           warmup=1, matmul_size=128, sl_variants="auto:auto,lifted_first:native")
    rows = [(r["model"], r["variant"], r["backbone_layout"], r["conv_strategy"]) for r in report["results"]]
    assert rows[1] == ("sl_unet_5l1r", "lifted_first:native", "lifted_first", "native")
    assert rows[0][:2] == ("sl_unet_5l1r", "auto:auto") and rows[0][2] != "-"
    assert rows[2] == ("unet_5l1r", "-", "-", "native")  # 2-D models run once
    assert report["settings"]["sl_variants"] == ["auto:auto", "lifted_first:native"]
    assert all(r["dtype_policy"] == "float32" and r["jit_compile"] == "auto" for r in report["results"])
    with pytest.raises(ValueError, match="LAYOUT:STRATEGY"):
        run_benchmark(["sl_unet_5l1r"], resolution=32, repeats=1, sl_variants="fast")


def test_markdown_lists_execution_paths_apart_from_the_main_tables():
    run_all = _run_all()
    report = _fake_report("tensorflow", 1.0, 100.0)
    for r in report["results"]:
        r["variant"] = "auto:auto" if r["model"].startswith("sl_") else "-"
    slow = [dict(r, variant="lifted_first:native", backbone_layout="lifted_first", conv_strategy="native",
                 median_s=2 * r["median_s"]) for r in report["results"] if r["model"] == "sl_unet_5l1r"]
    report["results"] += slow
    text = run_all.format_markdown([report])
    main_table = text.split("## SL-UNet / UNet")[0]
    assert main_table.count("| tensorflow | sl_unet_5l1r | infer |") == 1  # default path only
    paths = text.split("## SL execution paths")[1].split("## How to read")[0]
    assert "| lifted_first:native | lifted_first | native | 0.2000 |" in paths
    assert paths.strip().splitlines()[-1].endswith("| 2.00 |")


def test_conv_grad_script_prints_a_row(capsys):
    """benchmarks/conv_grad.py runs on this backend (tiny sizes) and prints one table row."""
    module = _script("conv_grad")
    module.main(["--batch", "1", "--size", "8", "--channels", "4", "--repeats", "1"])
    row = capsys.readouterr().out.strip().splitlines()[-1]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == keras.backend.backend() and cells[1].startswith("1x8x8x4")
    assert all(float(c) > 0 for c in cells[2:])


def test_loss_step_script_prints_a_row(capsys):
    """benchmarks/loss_step.py times the SL loss and its gradient (tiny sizes), one row."""
    module = _script("loss_step")
    module.main(["--batch", "1", "--slices", "3", "--size", "16", "--repeats", "1"])
    row = capsys.readouterr().out.strip().splitlines()[-1]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells == [keras.backend.backend(), "1x3x16x16x1", cells[2]] and float(cells[2]) > 0


def test_markdown_reports_a_jit_run_as_its_own_backend_column(tmp_path):
    run_all = _run_all()
    assert run_all.parse_run("torch:true", "auto") == ("torch", "true")
    assert run_all.parse_run("jax", "auto") == ("jax", "auto")
    with pytest.raises(SystemExit, match="BACKEND:JIT"):
        run_all.parse_run("torch:fast", "auto")
    assert run_all.results_name("torch", "true", "auto") == "torch-jit_true.json"
    eager = _fake_report("torch", 2.0, 50.0)
    compiled = _fake_report("torch", 0.5, 50.0)
    compiled["settings"]["jit_compile"] = "true"
    (tmp_path / "torch.json").write_text(json.dumps(eager))
    (tmp_path / "torch-jit_true.json").write_text(json.dumps(compiled))
    (tmp_path / "tensorflow.json").write_text(json.dumps(_fake_report("tensorflow", 1.0, 100.0)))
    out = tmp_path / "README.md"
    assert run_all.main(["--report-only", "--backends", "tensorflow,torch,torch:true", "--results-dir",
                         str(tmp_path), "--out", str(out)]) == 0
    text = out.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| torch (jit_compile=true) | sl_unet_5l1r | infer |"))
    assert [c.strip() for c in row.strip("|").split("|")][8] == "1.00"  # the fastest column now
    assert "| sl_unet_5l1r | infer | 4x256x256 | 0.1000 (x2.00) | 0.2000 (x4.00) | 0.0500 (x1.00) |" in text


def test_report_only_without_backends_reports_every_json_present(tmp_path):
    """A rebuilt report keeps the torch:true column of the run that wrote the
    JSON files (the default backend list would drop it)."""
    run_all = _run_all()
    compiled = _fake_report("torch", 0.5, 50.0)
    compiled["settings"]["jit_compile"] = "true"
    (tmp_path / "torch-jit_true.json").write_text(json.dumps(compiled))
    (tmp_path / "tensorflow.json").write_text(json.dumps(_fake_report("tensorflow", 1.0, 100.0)))
    out = tmp_path / "README.md"
    assert run_all.main(["--report-only", "--results-dir", str(tmp_path), "--out", str(out)]) == 0
    text = out.read_text()
    assert "| torch (jit_compile=true) | sl_unet_5l1r | infer |" in text
    assert "| tensorflow | sl_unet_5l1r | infer |" in text


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="captured inference graphs are torch-only")
def test_torch_inference_rows_name_their_graph():
    report = run_benchmark(["unet_5l1r"], resolution=32, batch=1, mode="infer", repeats=1, warmup=1,
                           matmul_size=128)
    row = report["results"][0]
    assert row["inference_graph"] == "export" and row["graph_capture_s"] > 0  # captured in warm-up


def test_interleaved_calls_alternate_their_order_after_warming_every_function_up():
    from keras_sl.benchmark import _time_interleaved

    calls = []
    fns = [lambda: calls.append("sl"), lambda: calls.append("unet")]
    times = _time_interleaved(fns, rounds=4, warmup=2)
    assert calls[:4] == ["sl", "sl", "unet", "unet"]  # warm-up: each function before any timed call
    assert calls[4:] == ["sl", "unet", "unet", "sl", "sl", "unet", "unet", "sl"]  # A B, B A, A B, B A
    assert [len(t) for t in times] == [4, 4] and all(t >= 0 for ts in times for t in ts)


def test_pairs_need_an_sl_model_and_its_twin():
    from keras_sl.benchmark import sl_twin_pairs

    assert sl_twin_pairs(["sl_unet_5l1r", "unet_5l1r", "sl_unet_8l2r", "unet_8l1r"]) == [("sl_unet_5l1r", "unet_5l1r")]
    assert sl_twin_pairs(["unet_8l2r", "sl_unet_8l2r", "sl_unet_5l1r"]) == [("sl_unet_8l2r", "unet_8l2r")]
    assert sl_twin_pairs(["sl_unet_5l1r"]) == []
    with pytest.raises(ValueError, match="paired_rounds"):
        run_benchmark(["sl_unet_5l1r", "unet_5l1r"], resolution=32, repeats=1, paired_rounds=-1)


def test_paired_rounds_time_sl_unet_against_its_unet_interleaved(report):
    default_report = report  # the module's run, without paired_rounds
    report = run_benchmark(["sl_unet_5l1r", "unet_5l1r"], resolution=32, batch=1, mode="infer",
                           repeats=1, warmup=1, matmul_size=128, paired_rounds=3)
    assert report["settings"]["paired_rounds"] == 3
    (pair,) = report["pairs"]
    assert (pair["config"], pair["mode"], pair["rounds"], pair["resolution"]) == ("5l1r", "infer", 3, 32)
    assert (pair["sl_model"], pair["twin_model"]) == ("sl_unet_5l1r", "unet_5l1r")
    assert len(pair["sl_times_s"]) == len(pair["unet_times_s"]) == 3
    assert pair["ratios"] == pytest.approx([a / b for a, b in zip(pair["sl_times_s"], pair["unet_times_s"])])
    assert pair["ratio_median"] == pytest.approx(statistics.median(pair["ratios"]))
    q1, q3 = pair["ratio_quartiles"]
    assert min(pair["ratios"]) <= q1 <= pair["ratio_median"] <= q3 <= max(pair["ratios"])
    assert pair["sl_median_s"] == pytest.approx(statistics.median(pair["sl_times_s"]))
    assert "interleaved" in format_results(report)
    json.loads(json.dumps(report, allow_nan=False))
    assert default_report["pairs"] == [] and default_report["settings"]["paired_rounds"] == 0  # off by default


def test_markdown_reports_interleaved_pairs(tmp_path):
    run_all = _run_all()
    report = _fake_report("tensorflow", 1.0, 100.0)
    report["pairs"] = [{"config": "5l1r", "mode": mode, "resolution": 256, "batch": 4, "rounds": 4,
                        "sl_median_s": 0.08, "unet_median_s": 0.11, "ratio_median": 0.7312,
                        "ratio_quartiles": [0.69, 0.774]} for mode in ("train", "infer")]
    (tmp_path / "tensorflow.json").write_text(json.dumps(report))
    (tmp_path / "torch.json").write_text(json.dumps(_fake_report("torch", 2.0, 50.0)))  # no pairs
    out = tmp_path / "README.md"
    assert run_all.main(["--report-only", "--backends", "tensorflow,torch", "--results-dir", str(tmp_path),
                         "--out", str(out)]) == 0
    lines = out.read_text().split("## SL-UNet / UNet, calls interleaved")[1].split("\n## ")[0].splitlines()
    rows = [line for line in lines if line.startswith("| tensorflow |")]
    assert rows == ["| tensorflow | infer | 4x256x256 | 5l1r | 4 | 0.0800 | 0.1100 | **0.73** | 0.69-0.77 |",
                    "| tensorflow | train | 4x256x256 | 5l1r | 4 | 0.0800 | 0.1100 | **0.73** | 0.69-0.77 |"]
    assert not any(line.startswith("| torch |") for line in lines)
    assert "--paired" in " ".join(run_all.bench_command(run_all.build_parser().parse_args([]), tmp_path / "x.json"))
