"""The benchmark's statistics, payload rule, decode bound, report and plots; one real engine run."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import pytest
from PIL import Image

from cookbook import bench


def test_spread_and_ratio_use_the_median_of_per_round_ratios():
    assert bench.spread([3, 1, 2])["median"] == 2
    r = bench.ratio([2.0, 3.0, 30.0], [1.0, 1.0, 1.0])
    assert (r["median"], r["low"], r["high"]) == (3.0, 2.0, 30.0)  # one slow round moves no median
    with pytest.raises(ValueError, match="pairs"):
        bench.ratio([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="positive"):
        bench.ratio([1.0], [0.0])
    with pytest.raises(ValueError):
        bench.spread([])


def test_interleave_rotates_who_goes_first_and_drops_the_warmup():
    calls = []
    sides = {name: (lambda n=name: calls.append(n) or float(len(calls))) for name in "ABC"}
    times = bench.interleave(sides, rounds=3, warmup=1)
    assert calls == list("ABCBCACABABC")
    assert times == {"A": [6.0, 8.0, 10.0], "B": [4.0, 9.0, 11.0], "C": [5.0, 7.0, 12.0]}


def test_compare_names_its_ratios_numerator_over_denominator():
    slow, fast = iter([2.0, 4.0]), iter([1.0, 1.0])
    sides = {"slow": lambda: next(slow), "fast": lambda: next(fast)}
    part = bench.compare(sides, 2, {"x": ("slow", "fast")}, warmup=0)
    assert part["ratios"]["x"]["values"] == [2.0, 4.0]
    assert part["seconds"]["fast"]["median"] == 1.0


@pytest.mark.parametrize(
    "size",
    [
        (4000, 3000),
        (3000, 4000),
        (6000, 4000),
        (1920, 1080),
        (1080, 1920),
        (2560, 1440),
        (4032, 3024),
        (5000, 1000),
        (1000, 5000),
        (3500, 3500),
        (2048, 1536),
        (7000, 3000),
    ],
)
def test_the_grid_preserving_payload_keeps_tiles_and_tokens(size):
    pytest.importorskip("vllm")
    from cookbook import tiling

    photo = Image.new("RGB", size, (120, 80, 40))
    fitted = tiling.fit_to_grid(photo)
    assert fitted.width * fitted.height < photo.width * photo.height
    assert tiling.plan(fitted) == tiling.plan(photo)


def test_the_decode_bound_matches_a_hand_computation():
    # InternVL3-8B: 7.94 B parameters, 2 bytes each = 15.88 GB a step; at 1600 GB/s that is
    # 1600 / 15.88 = 100.76 tokens/s for one sequence.
    assert bench.decode_bound(7.94, 1600) == pytest.approx(100.76, abs=0.01)
    # Qwen2.5-7B KV cache: 2 (K, V) x 28 layers x 4 KV heads x 128 x 2 bytes = 57,344 bytes a
    # token; 16 sequences of 2048 tokens read 1.879 GB more a step: 25,600 / 17.759 = 1441.5.
    assert bench.decode_bound(7.94, 1600, 57344, 2048, 16) == pytest.approx(1441.5, abs=0.5)
    with pytest.raises(ValueError):
        bench.decode_bound(7.94, 0)


def test_the_decode_bounds_cover_each_model_card_and_batch():
    rows = bench.decode_bounds()
    assert len(rows) == 3 * len(bench.CARDS) * 2
    a2 = next(
        r for r in rows if r["model"] == "internvl3-8b" and r["batch"] == 1 and "800I" in r["card"]
    )
    duo = next(
        r for r in rows if r["model"] == "internvl3-8b" and r["batch"] == 1 and "300I" in r["card"]
    )
    assert a2["tokens_per_s"] / duo["tokens_per_s"] == pytest.approx(1600 / 204, rel=0.01)
    assert all(r["fits"] for r in rows)  # at most 17 GB of weights and 5 GB of KV cache


def test_startup_configs_switch_the_cpu_settings_back_one_at_a_time():
    args = {"model": "m", "distributed_executor_backend": "uni", "skip_mm_profiling": True}
    configs = bench.startup_configs(args, "cpu", each=True)
    defaults, environment = configs["vLLM defaults"]
    assert defaults == {"model": "m"} and environment == {}
    assert "TORCHDYNAMO_DISABLE" not in configs["without TORCHDYNAMO_DISABLE"][1]
    assert "skip_mm_profiling" not in configs["without skip_mm_profiling"][0]
    assert len(configs) == 6
    npu = bench.startup_configs({"model": "m"}, "npu")
    assert npu["eager"][0]["enforce_eager"] is True and "enforce_eager" not in npu["graph"][0]


def test_startup_log_cuts_stages_where_vllm_logs_its_milestones():
    log = logging.getLogger("vllm.test")
    with bench.startup_log(since=time.perf_counter()) as record:
        log.info("Initializing a V1 LLM engine (v0.23.0) with config: ...")
        log.info("Loading weights took 0.01 seconds")
    names = [s[0] for s in record["stages"]]
    assert names == ["import vllm", "configure", "load weights", "front end"]
    starts = [s[1] for s in record["stages"]]
    assert starts == sorted(starts)
    assert sum(s[2] for s in record["stages"][1:]) == pytest.approx(record["seconds"])


def test_prometheus_means_are_sum_over_count(monkeypatch):
    import httpx

    text = (
        "# TYPE vllm:request_prefill_time_seconds histogram\n"
        'vllm:request_prefill_time_seconds_sum{model_name="m"} 3.0\n'
        'vllm:request_prefill_time_seconds_count{model_name="m"} 4.0\n'
    )
    monkeypatch.setattr(httpx, "get", lambda *a, **k: httpx.Response(200, text=text))
    assert bench.prometheus("http://x/v1") == {"vllm:request_prefill_time_seconds": 0.75}


def test_the_serve_benchmark_arguments_parse_with_vllms_own_parser():
    serve = pytest.importorskip("vllm.benchmarks.serve")
    import argparse

    ap = argparse.ArgumentParser()
    serve.add_cli_args(ap)
    ns = ap.parse_args(bench.serve_cli("http://127.0.0.1:8000/v1", "m", 4))
    assert (ns.backend, ns.dataset_name, ns.max_concurrency) == ("openai-chat", "random-mm", 4)
    assert ns.random_mm_bucket_config == {(300, 451, 1): 1.0}


def test_each_plot_returns_a_figure_with_something_drawn():
    pytest.importorskip("matplotlib")
    r = bench.ratio([1.2, 1.1], [1.0, 1.0])
    rows = [
        {
            "photo": "cat",
            "size": [451, 300],
            "tiles": 7,
            "prompt_tokens": 1950,
            "first_ms": 90.0,
            "ms": {"host preprocessing": 50.0, "decode": 40.0},
        }
    ]
    small = [{**rows[0], "tiles": 1, "prompt_tokens": 300, "first_ms": 30.0}]
    figures = [
        bench.plot_stages(rows),
        bench.plot_bars({"a": r, "b": 2.0}),
        bench.plot_forest({"x": r}, dots=True),
        bench.plot_patches(bench.patches({12: rows, 1: small})),
        bench.plot_startup({"engine": [["import vllm", 0, 5.0], ["LLM(...)", 5.0, 3.0]]}),
    ]
    for fig in figures:
        assert any(ax.patches or ax.lines or ax.collections for ax in fig.axes)


def test_patches_compares_the_largest_cap_where_the_tiles_differ():
    rows = {
        12: [
            {"photo": "a", "tiles": 13, "first_ms": 200.0},
            {"photo": "b", "tiles": 1, "first_ms": 50.0},
        ],
        6: [
            {"photo": "a", "tiles": 7, "first_ms": 100.0},
            {"photo": "b", "tiles": 1, "first_ms": 49.0},
        ],
    }
    assert list(bench.patches(rows)["ratios"]) == ["patches.a.12/6"]
    assert bench.patches(rows)["ratios"]["patches.a.12/6"]["median"] == 2.0


@pytest.mark.vllm
def test_the_quick_offline_benchmarks_give_positive_ratios_on_a_real_engine(llm, engine_args):
    from cookbook import images

    cat, astronaut = images.load_image("cat"), images.load_image("astronaut")
    found = {"stages": {"rows": bench.stages(llm, bench.stage_photos(), tokens=2)}}
    found["caches"] = bench.caches(llm, cat, rounds=1, tokens=2)
    found["overhead"] = bench.overhead(llm, engine_args, cat, rounds=1, tokens=2)
    found["batching"] = bench.batching(llm, [cat, astronaut], rounds=1, tokens=2)
    found["payload"] = bench.payload(bench.big_photo(size=(2000, 1500)), llm, rounds=1, tokens=2)
    ratios = {k: v for part in found.values() for k, v in part.get("ratios", {}).items()}
    expected = {
        "overhead.cookbook",
        "overhead.control",
        "batching.cold.2",
        "batching.warm.2",
        "caches.processor",
        "caches.prefix",
        "payload.offline",
        "payload.bytes",
        "payload.build",
    }
    assert expected <= set(ratios)
    assert all(0 < r["low"] <= r["median"] <= r["high"] for r in ratios.values())
    assert found["payload"]["same_tiles_and_tokens"]
    assert found["payload"]["ratios"]["payload.bytes"]["median"] > 1
    # The shared engine counts no stats, so a stage row has only the call's own time; its
    # tiles come from the image tokens vLLM put in the prompt.
    assert [r["tiles"] for r in found["stages"]["rows"]] == [1, 7, 13]
    cached = found["caches"]["cached_tokens"]
    assert cached["prefix cached"][0] > 0 and cached["reset"][0] == 0


def test_the_bench_command_takes_notebook_05s_parameters():
    import argparse

    ap = argparse.ArgumentParser()
    bench.add_arguments(ap)
    args = ap.parse_args(["--rounds", "2", "--serve", "--api-servers", "1,4"])
    assert (args.rounds, args.serve, args.api_servers, args.profile) == (2, True, "1,4", "cpu")
    source = Path(__file__).resolve().parents[1] / "notebooks" / "05_benchmark.ipynb"
    cells = json.loads(source.read_text())["cells"]
    parameters = next(c for c in cells if "parameters" in c["metadata"].get("tags", []))
    names = re.findall(r"^(\w+):", "".join(parameters["source"]), re.M)
    assert {"rounds", "serve", "api_servers", "startup_rounds"} <= set(names)
