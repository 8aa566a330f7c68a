"""The benchmark library: statistics, start-up log parsing, payload sizing, report structure.

Timings are never asserted against thresholds (the machines are shared and noisy); the
tests check the arithmetic, the structure of a report, and that the numbers of a real
run are present and positive.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cookbook import bench
from cookbook.bench import (
    BenchConfig,
    LogWatcher,
    check_report,
    decode_bound,
    decode_bound_table,
    downscaled_size,
    finish_report,
    grid_preserving_max_side,
    interleave,
    median,
    new_report,
    parse_only,
    parse_startup_log,
    quantile,
    ratio,
    ratio_summary,
    ratio_table,
    stages_from_timeline,
    summarize,
)
from cookbook.tiling import image_token_count, tile_grid

REPO = Path(__file__).resolve().parent.parent

# Lines copied from a real run (vLLM 0.23.0, CPU build, tiny checkpoint): the engine log of
# `python -m cookbook bench --quick` with the engine processes at INFO level, then the
# server log of the same run. Long lines are cut where marked with "...".
ENGINE_LOG = """\
WARNING 11-30 13:35:51 [vllm.py:1055] Enforce eager set, disabling torch.compile and CUDAGraphs.
INFO 11-30 13:35:58 [importing.py:81] Triton not installed or not compatible; certain GPU-related functions will not be available.
(EngineCore pid=32383) INFO 11-30 13:35:59 [core.py:113] Initializing a V1 LLM engine (v0.23.0) with config: model='/root/.cache/internvl-cookbook/tiny/v1-aeb0f69bbdf3', ...
(EngineCore pid=32383) INFO 11-30 13:35:59 [ompmultiprocessing.py:185] 	local_rank=0, core ids=[0]
(Worker pid=32414) INFO 11-30 13:36:25 [cpu_model_runner.py:104] Starting to load model /root/.cache/internvl-cookbook/tiny/v1-aeb0f69bbdf3...
(Worker pid=32414) INFO 11-30 13:36:25 [default_loader.py:397] Loading weights took 0.01 seconds
(Worker pid=32414) INFO 11-30 13:36:25 [cpu_model_runner.py:121] Warming up model for the compilation...
(Worker pid=32414) INFO 11-30 13:36:40 [cpu_model_runner.py:125] Warming up done.
(EngineCore pid=32383) INFO 11-30 13:36:40 [kv_cache_utils.py:1744] GPU KV cache size: 524,288 tokens
(EngineCore pid=32383) INFO 11-30 13:36:40 [kv_cache_utils.py:1745] Maximum concurrency for 4,096 tokens per request: 128.00x
(EngineCore pid=32383) INFO 11-30 13:36:42 [core.py:313] init engine (profile, create kv cache, warmup model) took 16.87 s
"""  # noqa: E501

SERVER_LOG = """\
(EngineCore pid=1044) INFO 11-30 13:38:33 [core.py:113] Initializing a V1 LLM engine (v0.23.0) with config: ...
(Worker pid=1139) INFO 11-30 13:39:08 [cpu_model_runner.py:104] Starting to load model /root/.cache/internvl-cookbook/tiny/v1-aeb0f69bbdf3...
(Worker pid=1139) INFO 11-30 13:39:08 [default_loader.py:397] Loading weights took 0.01 seconds
(Worker pid=1139) INFO 11-30 13:39:39 [cpu_model_runner.py:125] Warming up done.
(EngineCore pid=1044) INFO 11-30 13:39:39 [kv_cache_utils.py:1744] GPU KV cache size: 524,288 tokens
(EngineCore pid=1044) INFO 11-30 13:39:39 [kv_cache_utils.py:1745] Maximum concurrency for 4,096 tokens per request: 128.00x
(EngineCore pid=1044) INFO 11-30 13:39:40 [core.py:313] init engine (profile, create kv cache, warmup model) took 31.67 s
(APIServer pid=839) INFO 11-30 13:39:43 [api_server.py:583] Starting vLLM server on http://127.0.0.1:41801
(APIServer pid=839) INFO:     Started server process [839]
(APIServer pid=839) INFO:     Waiting for application startup.
(APIServer pid=839) INFO:     Application startup complete.
"""  # noqa: E501


# --- statistics ---------------------------------------------------------------------


def test_median_quantile_and_summary():
    assert median([3, 1, 2]) == 2
    assert median([4, 1, 3, 2]) == 2.5
    assert quantile([10, 20, 30, 40, 50], 0.0) == 10
    assert quantile([10, 20, 30, 40, 50], 1.0) == 50
    assert quantile([10, 20, 30, 40, 50], 0.1) == pytest.approx(14.0)
    s = summarize([1.0, 2.0, 3.0, 10.0])
    assert s["n"] == 4 and s["median"] == 2.5 and s["min"] == 1.0 and s["max"] == 10.0
    assert s["mean"] == 4.0 and s["p10"] < s["median"] < s["p90"]


@pytest.mark.parametrize("bad", [[], ()])
def test_statistics_of_nothing_are_refused(bad):
    with pytest.raises(ValueError):
        median(bad)
    with pytest.raises(ValueError):
        quantile(bad, 0.5)


def test_quantile_range_is_checked():
    with pytest.raises(ValueError, match="0..1"):
        quantile([1, 2], 1.5)


def test_ratio_and_paired_ratio_summary():
    assert ratio(3, 2) == 1.5
    with pytest.raises(ValueError, match="positive"):
        ratio(1, 0)
    s = ratio_summary([2.0, 3.0, 10.0], [1.0, 3.0, 4.0])
    # per-pair ratios 2.0, 1.0, 2.5 -> median 2.0; medians 3.0 / 3.0 -> 1.0
    assert s == {"value": 2.0, "low": 1.0, "high": 2.5, "ratio_of_medians": 1.0, "n": 3}
    with pytest.raises(ValueError, match="pairs"):
        ratio_summary([1.0, 2.0], [1.0])


def test_interleave_rotates_the_order_and_drops_the_warmup():
    calls = []

    def make(name):
        def run():
            calls.append(name)
            return len(calls)

        return run

    out = interleave(3, {"a": make("a"), "b": make("b")}, warmup=1)
    # round 0 (warm-up) a b, round 1 b a, round 2 a b, round 3 b a
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert out == {"a": [4, 5, 8], "b": [3, 6, 7]}
    three = []
    interleave(1, {k: (lambda k=k: three.append(k)) for k in "xyz"}, warmup=2)
    assert three == ["x", "y", "z", "y", "z", "x", "z", "x", "y"]


@pytest.mark.parametrize("reps, warmup", [(0, 1), (1, -1)])
def test_interleave_checks_its_counts(reps, warmup):
    with pytest.raises(ValueError):
        interleave(reps, {"a": lambda: 1}, warmup=warmup)
    with pytest.raises(ValueError):
        interleave(1, {})


# --- payload sizing -------------------------------------------------------------------

SIZES = [
    (4000, 3000),
    (3000, 4000),
    (4032, 3024),
    (1920, 1080),
    (4000, 2250),
    (6000, 1000),
    (5000, 5000),
    (2000, 1999),
    (3001, 2999),
    (12000, 300),
    (800, 600),
    (451, 300),
]


@pytest.mark.parametrize("max_dynamic_patch", [12, 6, 1])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_grid_preserving_resize_keeps_grid_and_tokens(size, max_dynamic_patch):
    width, height = size
    side = grid_preserving_max_side(width, height, max_dynamic_patch=max_dynamic_patch)
    small = downscaled_size(width, height, side)
    grid = tile_grid(width, height, max_dynamic_patch=max_dynamic_patch)
    assert tile_grid(*small, max_dynamic_patch=max_dynamic_patch) == grid
    assert image_token_count(*small, max_dynamic_patch=max_dynamic_patch) == image_token_count(
        width, height, max_dynamic_patch=max_dynamic_patch
    )
    # Both sides still cover the size InternVL resizes the image to.
    assert small[0] >= min(width, grid[0] * 448) and small[1] >= min(height, grid[1] * 448)
    if side < max(width, height):
        # It is the smallest such side: one pixel less loses the grid or its pixels.
        w1, h1 = downscaled_size(width, height, side - 1)
        lost = w1 < grid[0] * 448 or h1 < grid[1] * 448
        assert lost or tile_grid(w1, h1, max_dynamic_patch=max_dynamic_patch) != grid


def test_the_4000x3000_photo_shrinks_to_its_4x3_grid():
    assert grid_preserving_max_side(4000, 3000) == 1792
    assert downscaled_size(4000, 3000, 1792) == (1792, 1344)
    assert tile_grid(1792, 1344) == tile_grid(4000, 3000) == (4, 3)
    assert image_token_count(1792, 1344) == image_token_count(4000, 3000) == 13 * 256 + 2


def test_an_image_smaller_than_its_grid_is_not_shrunk():
    assert grid_preserving_max_side(800, 600) == 800
    assert downscaled_size(800, 600, 800) == (800, 600)


@pytest.mark.parametrize("size, side", [((4000, 3000), 1792), ((1000, 3000), 1344)])
def test_downscaled_size_is_what_to_data_url_produces(size, side):
    from PIL import Image

    from cookbook.images import from_data_url, image_for_server, to_data_url

    img = Image.new("RGB", size, (90, 140, 30))
    assert from_data_url(to_data_url(img, max_side=side)).size == downscaled_size(*size, side)
    assert from_data_url(image_for_server(img, max_side=side)).size == downscaled_size(*size, side)


def test_downscaled_size_refuses_nonsense():
    with pytest.raises(ValueError):
        downscaled_size(0, 10, 5)
    with pytest.raises(ValueError):
        downscaled_size(10, 10, 0)


# --- start-up logs ----------------------------------------------------------------------


def test_parse_startup_log_reads_what_vllm_reported():
    eng = parse_startup_log(ENGINE_LOG)
    assert eng == {
        "weights_load_seconds": 0.01,
        "init_engine_seconds": 16.87,
        "kv_cache_tokens": 524288.0,
        "max_concurrency": 128.0,
    }
    srv = parse_startup_log(SERVER_LOG)
    assert srv["init_engine_seconds"] == 31.67 and srv["weights_load_seconds"] == 0.01


def test_parse_startup_log_gpu_and_compiled_forms():
    # The GPU/NPU model runner and a compiled start print these forms (format strings of
    # vllm/v1/worker/gpu_model_runner.py and vllm/v1/engine/core.py, vLLM 0.23.0).
    text = (
        "INFO [gpu_model_runner.py:5188] Model loading took 15.21 GiB memory and 12.345678 seconds\n"  # noqa: E501
        "INFO [core.py:297] init engine (profile, create kv cache, warmup model) took 80.50 s "
        "(compilation: 41.20 s)\n"
    )
    found = parse_startup_log(text)
    assert found["model_load_gib"] == 15.21 and found["model_load_seconds"] == 12.345678
    assert found["init_engine_seconds"] == 80.5 and found["compilation_seconds"] == 41.2


def test_parse_startup_log_takes_the_latest_start_and_tolerates_quiet_logs():
    assert parse_startup_log("WARNING nothing at info level\n") == {}
    twice = ENGINE_LOG + ENGINE_LOG.replace("took 16.87 s", "took 20.00 s")
    assert parse_startup_log(twice)["init_engine_seconds"] == 20.0


def test_markers_match_the_real_log_lines():
    import re

    seen = {
        name
        for name, pattern in bench.STARTUP_MARKERS.items()
        if re.search(pattern, ENGINE_LOG + SERVER_LOG)
    }
    assert seen == set(bench.STARTUP_MARKERS) - {"model loaded"}  # a GPU/NPU-runner line


def test_stages_add_up_and_keep_the_log_order_for_ties():
    timeline = {"engine process up": 14.7, "warm-up done": 55.8, "KV cache sized": 55.8}
    stages = stages_from_timeline(timeline, 60.8)
    assert [s["stage"] for s in stages] == [
        "start -> engine process up",
        "engine process up -> warm-up done",
        "warm-up done -> KV cache sized",
        "KV cache sized -> ready",
    ]
    assert sum(s["seconds"] for s in stages) == pytest.approx(60.8, abs=1e-6)
    assert stages_from_timeline({}, 5.0) == [
        {"stage": "start -> ready", "seconds": 5.0, "end": 5.0}
    ]
    # A marker after the end (a late line) is left out.
    assert len(stages_from_timeline({"late": 9.0}, 5.0)) == 1


def test_log_watcher_times_lines_as_they_appear(tmp_path):
    log = tmp_path / "engine.log"
    log.write_text("old line: Loading weights took 9.99 seconds\n")  # before start: ignored
    watcher = LogWatcher(log, interval=0.01).start()

    def write():
        lines = SERVER_LOG.splitlines(keepends=True)
        with log.open("a") as fh:
            for i, line in enumerate(lines):
                fh.write(line)
                fh.flush()
                if i in (2, 6):
                    time.sleep(0.1)

    writer = threading.Thread(target=write)
    writer.start()
    writer.join()
    timeline = watcher.stop()
    assert set(timeline) == set(bench.STARTUP_MARKERS) - {"model loaded"}
    assert timeline["weights loaded"] <= timeline["engine initialised"]
    assert timeline["engine initialised"] <= timeline["application started"]
    assert "9.99" not in watcher.text
    assert parse_startup_log(watcher.text)["init_engine_seconds"] == 31.67


# --- decode bound -----------------------------------------------------------------------


def test_decode_bound_is_bandwidth_over_bytes_per_step():
    # 8B parameters in bf16 = 16 GB a step; 1600 GB/s -> 100 steps/s.
    assert decode_bound(8.0, 1600.0) == pytest.approx(100.0)
    # KV cache: 1e5 bytes/token x 10,000 tokens = 1 GB more per sequence.
    assert decode_bound(8.0, 1600.0, kv_bytes_per_token=1e5, context_tokens=10_000) == (
        pytest.approx(1600 / 17)
    )
    # A batch shares the weights: 4 sequences -> 4 tokens per (16 + 4) GB step.
    assert decode_bound(
        8.0, 1600.0, kv_bytes_per_token=1e5, context_tokens=10_000, batch=4
    ) == pytest.approx(4 * 1600 / 20)
    assert decode_bound(1.0, 100.0, dtype="float32") == pytest.approx(25.0)
    with pytest.raises(ValueError):
        decode_bound(8.0, 0.0)
    with pytest.raises(ValueError):
        decode_bound(8.0, 100.0, dtype="int3")


def test_decode_bound_table_covers_models_cards_and_contexts():
    rows = decode_bound_table(context_tokens=(2048,), batches=(1,))
    assert len(rows) == 3 * len(bench.NPU_CARDS)
    by = {(r["model"], r["card"]): r for r in rows}
    a2 = by[("internvl3-8b", bench.NPU_CARDS[0].name)]
    duo = by[("internvl3-8b", bench.NPU_CARDS[1].name)]
    assert a2["weights_gb"] == pytest.approx(15.88)
    assert a2["fits"] and duo["fits"]
    # The bound scales with bandwidth: 1600 / 204.
    ratio_ = a2["tokens_per_s_bound"] / duo["tokens_per_s_bound"]
    assert ratio_ == pytest.approx(1600 / 204, rel=0.01)  # bounds are rounded to 0.1 tok/s
    assert 90 < a2["tokens_per_s_bound"] < 101
    for card in bench.NPU_CARDS:
        assert card.source.startswith("Huawei") and card.bandwidth_gb_s > 0


# --- configuration and command line ----------------------------------------------------


def test_config_presets_and_validation():
    quick = BenchConfig.preset(True)
    full = BenchConfig.preset(False)
    assert quick.quick and quick.reps < full.reps and max(quick.batch_sizes) < max(full.batch_sizes)
    assert full.answer_min_tokens == full.max_tokens
    assert BenchConfig(min_tokens=0).answer_min_tokens == 0
    assert full.cache_overrides() == {"enable_prefix_caching": False, "mm_processor_cache_gb": 0}
    assert BenchConfig(warm_caches=True).cache_overrides() == {}
    json.dumps(full.to_dict())
    for bad in (
        {"only": ("overhead", "speed")},
        {"only": ()},
        {"reps": 0},
        {"batch_sizes": (1, 0)},
        {"concurrency": ()},
        {"min_tokens": 100, "max_tokens": 10},
        {"images": ()},
    ):
        with pytest.raises(ValueError):
            BenchConfig(**bad).validate()


def test_parse_only():
    assert parse_only(None) == bench.BENCHMARKS
    assert parse_only("batching, overhead,batching") == ("overhead", "batching")
    with pytest.raises(ValueError, match="choose from"):
        parse_only("overhead,warp")
    with pytest.raises(ValueError):
        parse_only(" , ")


def test_command_line_arguments_make_a_config():
    ap = argparse.ArgumentParser()
    bench.add_arguments(ap)
    args = ap.parse_args(["--quick", "--only", "overhead,batching", "--batch-sizes", "1,2"])
    cfg = bench.config_from_args(args)
    assert cfg.quick and cfg.only == ("overhead", "batching") and cfg.batch_sizes == (1, 2)
    bad = ap.parse_args(["--only", "nonsense"])
    assert bench.run_from_args(bad) == 2  # refused before any engine starts


def test_cli_has_the_bench_command(capsys):
    from cookbook.cli import main

    with pytest.raises(SystemExit) as info:
        main(["bench", "--help"])
    assert info.value.code == 0
    assert "--quick" in capsys.readouterr().out


# --- the report ------------------------------------------------------------------------


def _summary(*values):
    return summarize(list(values))


def fake_report(only=("overhead", "batching", "payload", "concurrency", "startup")):
    cfg = BenchConfig.preset(True, only=tuple(only))
    report = new_report(cfg, command="python -m cookbook bench --quick")
    pair = {"value": 1.01, "low": 0.99, "high": 1.05, "ratio_of_medians": 1.0, "n": 3}
    report["overhead"] = {
        mode: {
            "requests": n,
            "cookbook_seconds": _summary(0.4, 0.41),
            "direct_seconds": _summary(0.39, 0.4),
            "cookbook_generate_seconds": _summary(0.399, 0.409),
            "cookbook_own_seconds": _summary(0.001, 0.001),
            "ratio": pair,
            "same_call_ratio": {**pair, "value": 1.003},
            "generate_ratio": pair,
            "noise_ratio": {**pair, "value": 0.99},
            "own_share": 0.0025,
            "same_work": True,
        }
        for mode, n in (("single", 1), ("batch", 4))
    }
    report["batching"] = {
        "sizes": [
            {
                "n": n,
                "batched_seconds": _summary(0.3 * n, 0.31 * n),
                "sequential_seconds": _summary(0.35 * n, 0.36 * n),
                "speedup": {**pair, "value": 1.2},
                "batched_requests_per_s": 3.3,
                "sequential_requests_per_s": 2.9,
                "batched_output_tokens_per_s": 100.0,
                "sequential_output_tokens_per_s": 90.0,
            }
            for n in cfg.batch_sizes
        ],
        "single_request_seconds": [0.3, 0.31, 0.35],
    }
    report["concurrency"] = {
        "levels": [
            {
                "k": k,
                "requests": 2 * k,
                "requests_per_s": 3.0,
                "output_tokens_per_s": 96.0,
                "latency_seconds": _summary(0.3, 0.4),
                "ttft_seconds": _summary(0.2, 0.3),
                "tpot_seconds": _summary(0.002, 0.003),
                "prompt_tokens": [1949],
                "latencies": [0.3, 0.4],
                "ttfts": [0.2, 0.3],
                "throughput_ratio": {**pair, "value": 1.0 if k == 1 else 0.9},
            }
            for k in cfg.concurrency
        ]
    }
    report["payload"] = {
        "max_side": 1792,
        "grid": [4, 3],
        "variants": {
            name: {"bytes": b, "grid": [4, 3], "prompt_tokens": 3485}
            for name, b in (("full_png", 11_000_000), ("max_side_png", 3_600_000))
        },
        "bytes_ratio": 11 / 3.6,
        "build_ratio": {**pair, "value": 5.0},
        "same_grid": True,
        "same_prompt_tokens": True,
        "verified_with": "server",
    }
    report["decode"] = {"tokens_per_s": 500.0, "seconds_per_token": 0.002}
    report["startup"] = {
        "engine": {"seconds": 60.0, "reported": {"init_engine_seconds": 16.9}, "stages": []},
        "server": {"seconds": 100.0, "reported": {}, "stages": []},
    }
    return finish_report(report)


def test_a_complete_report_passes_and_is_json():
    report = fake_report()
    assert check_report(report) == []
    again = json.loads(json.dumps(report))
    assert check_report(again) == []
    assert set(report["ratios"]) >= {
        "overhead.single",
        "overhead.batch",
        "overhead.single.same_call",
        "overhead.batch.noise",
        "batching.speedup.8",
        "concurrency.throughput.4",
        "payload.bytes",
        "payload.build",
    }
    assert "concurrency.throughput.1" not in report["ratios"]
    machine = report["machine"]
    assert machine["cpu_count"] >= 1 and machine["cpu_model"] and machine["memory_gib"] > 0
    assert report["versions"].get("internvl-ascend-cookbook") or isinstance(
        report["versions"], dict
    )
    table = ratio_table(report)
    assert "overhead.single" in table and "payload.check" in table and "startup.engine" in table


def test_check_report_names_what_is_missing_or_wrong():
    report = fake_report()
    del report["ratios"]["batching.speedup.4"]
    report["ratios"]["overhead.batch"]["value"] = float("nan")
    report["overhead"]["single"]["same_work"] = False
    report["payload"]["same_prompt_tokens"] = False
    del report["concurrency"]
    problems = check_report(report)
    text = "\n".join(problems)
    assert "batching.speedup.4 is missing" in text
    assert "overhead.batch.value" in text
    assert "overhead.single: the two paths" in text
    assert "same prompt tokens" in text
    assert "no concurrency section" in text
    assert check_report({}) and "missing key" in check_report({})[0]


def test_only_selected_benchmarks_are_required():
    report = fake_report(only=("overhead",))
    for name in ("batching", "payload", "concurrency"):
        report.pop(name)
    report["startup"] = {}
    finish_report(report)
    assert check_report(report) == []


def test_plots_render(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    report = fake_report()
    fig = bench.plot_throughput(report)
    assert len(fig.axes) >= 2
    fig.savefig(tmp_path / "throughput.png")
    fig = bench.plot_latency_distribution(report)
    fig.savefig(tmp_path / "latency.png")
    assert (tmp_path / "latency.png").stat().st_size > 1000
    with pytest.raises(ValueError):
        bench.plot_throughput({})


def test_machine_info_reads_this_machine():
    info = bench.machine_info()
    assert info["cpu_count"] == os.cpu_count()
    assert 1 <= info["cpus_usable"] <= info["cpu_count"]
    assert isinstance(info["cpu_model"], str) and info["cpu_model"]
    if Path("/proc/meminfo").exists():
        assert info["memory_gib"] > 0


def test_bench_imports_without_vllm():
    code = (
        "import sys, cookbook.bench; "
        "bad = [m for m in ('vllm', 'torch', 'matplotlib') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# --- a real run -----------------------------------------------------------------------


@pytest.mark.vllm
def test_quick_overhead_and_batching_on_the_tiny_engine(tmp_path):
    from cookbook.checks import result_structure

    out = tmp_path / "bench.json"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_LOGGING_LEVEL": "WARNING",
        "COOKBOOK_LOG_DIR": str(tmp_path),
    }
    cmd = [sys.executable, "-m", "cookbook", "bench", "--quick"]
    cmd += ["--only", "overhead,batching", "--out", str(out)]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "overhead.single" in done.stdout  # the table was printed
    report = json.loads(out.read_text())
    assert check_report(report) == []
    assert report["parameters"]["only"] == ["overhead", "batching"]
    assert "concurrency" not in report and report["server"] is None
    names = {"overhead.single", "overhead.batch", "overhead.single.same_call"}
    names |= {"overhead.single.noise", "overhead.batch.noise"}
    names |= {f"batching.speedup.{n}" for n in report["parameters"]["batch_sizes"]}
    assert names <= set(report["ratios"])
    for entry in report["ratios"].values():
        assert math.isfinite(entry["value"]) and entry["value"] > 0
        assert entry["low"] <= entry["value"] <= entry["high"]
    for mode in ("single", "batch"):
        section = report["overhead"][mode]
        assert section["same_work"] is True
        assert section["cookbook_own_seconds"]["median"] > 0
        assert section["cookbook_generate_seconds"]["median"] > 0
    assert report["overhead"]["breakdown"]["prepare_request"] > 0
    sizes = report["batching"]["sizes"]
    assert [s["n"] for s in sizes] == report["parameters"]["batch_sizes"]
    assert all(s["batched_requests_per_s"] > 0 for s in sizes)
    results = report["overhead"]["sample_results"]
    assert len(results) == report["parameters"]["overhead_batch"]
    assert result_structure(results) == []
    assert {r["output_tokens"] for r in results} == {report["parameters"]["max_tokens"]}
    assert report["engine"]["engine_args"]["enable_prefix_caching"] is False
