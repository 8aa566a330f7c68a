"""Notebook 05's measurements: where an image request's time goes, and the levers.

Serving goes through ``vllm bench serve`` (`serve_bench`), stage times through vLLM's own
counters (`stages`); the rest is what vLLM's tools leave out. Each comparison runs its
sides in turns (`interleave`) and reports the median and range of the per-round ratios
(`ratio`), "without the lever / with it": above 1.0 the lever helps.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from PIL import Image

from cookbook import checks, engine, images, models, prompts, results, server, tiling

QUESTION = "Describe this image in detail."
#: The upstream tutorial's batch: three questions about one photo.
SEED_QUESTIONS = (
    "What is the content of this image?",
    "Describe this image in detail.",
    "What colors are prominent in this image?",
)
#: Nominal vendor figures for one chip (peak, not measured): memory GB, bandwidth GB/s.
CARDS = {
    "Atlas 800I A2 (one 910B)": (64.0, 1600.0),  # Huawei: 64 GB HBM2e, about 1.6 TB/s
    "Atlas 300I Duo (one chip)": (48.0, 204.0),  # Huawei: 96 GB LPDDR4X, 408 GB/s a card
}
#: The vLLM 0.23 log message that ends each engine start-up stage (in-process engine core).
MILESTONES = {
    "configure": "Initializing a V1 LLM engine",
    "start worker": "Starting to load model",
    "load weights": "Loading weights took",
    "profile, KV cache, warm-up": "init engine (profile",
}
Sides = Mapping[str, Callable[[], float]]


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Return ``{"median", "low", "high", "values"}`` of ``values``; ValueError if empty."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("spread of no values")
    return {"median": statistics.median(vals), "low": min(vals), "high": max(vals), "values": vals}


def ratio(numerators: Sequence[float], denominators: Sequence[float]) -> dict[str, Any]:
    """Return the `spread` of the per-round ratios ``numerators[i] / denominators[i]``.

    Raises:
        ValueError: Lists of different lengths or empty, or a denominator not above 0.
    """
    if len(numerators) != len(denominators) or not numerators:
        raise ValueError(f"need rounds in pairs, got {len(numerators)} and {len(denominators)}")
    if min(denominators) <= 0:
        raise ValueError(f"denominators must be positive, got {list(denominators)}")
    return spread([a / b for a, b in zip(numerators, denominators, strict=True)])


def interleave(sides: Sides, rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Return ``{side: [seconds a round]}``: each side once a round, A B C, B C A, ...

    Each side returns the seconds it measured; the first ``warmup`` rounds are dropped.
    """
    names, out = list(sides), {name: list[float]() for name in sides}
    for r in range(warmup + rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            seconds = float(sides[name]())
            if r >= warmup:
                out[name].append(seconds)
    return out


def compare(sides: Sides, rounds: int, ratios: Mapping, warmup: int = 1) -> dict[str, Any]:
    """Return `interleave`'s seconds, a `spread` a side, and ``{name: (side, side)}`` ratios."""
    t = interleave(sides, rounds, warmup)
    return {
        "seconds": {side: spread(v) for side, v in t.items()},
        "ratios": {name: ratio(t[a], t[b]) for name, (a, b) in ratios.items()},
    }


def forget(llm: Any) -> None:
    """Empty vLLM's processor, encoder and prefix caches: the next photo is new to it."""
    llm.reset_mm_cache()
    llm.llm_engine.reset_encoder_cache()
    llm.reset_prefix_cache()


def fixed(llm: Any, tokens: int) -> Any:
    """Return greedy ``SamplingParams`` for answers of exactly ``tokens`` tokens (measurements)."""
    from vllm import SamplingParams

    stop = prompts.stop_token_ids(llm.get_tokenizer())
    return SamplingParams(max_tokens=tokens, min_tokens=tokens, temperature=0, stop_token_ids=stop)


def big_photo(name: str = "motorcycle", size: tuple[int, int] = (4000, 3000)) -> Image.Image:
    """Return a sample photo resized to ``size``: a phone camera's 12 megapixels."""
    return images.load_image(name).resize(size, Image.Resampling.BICUBIC)


def new_copy(img: Image.Image, i: int) -> Image.Image:
    """Return ``img`` with its corner pixel changed by ``i``: a photo no cache has seen."""
    out = img.copy()
    out.putpixel((0, 0), (i % 256, i // 256 % 256, 7))
    return out


def timed(llm: Any, conversations: list, sampling: Any) -> tuple[float, list]:
    """Return the seconds of one ``llm.chat`` call, and its outputs."""
    started = time.perf_counter()
    outputs = llm.chat(conversations, sampling, use_tqdm=False)
    return time.perf_counter() - started, outputs


def stages(llm: Any, photos: Mapping[str, Image.Image], tokens: int = 16, repeat: int = 1) -> list:
    """Return where one request's time goes (ms), a row a photo: its median run of ``repeat``.

    Caches are emptied before each run. Host preprocessing and vision encoder from vLLM's
    processor stats, prefill (first step less encoder) and decode from
    ``RequestOutput.metrics`` (both need the engine arguments ``disable_log_stats=False``
    and ``enable_mm_processor_stats=True``); "other host work" is the rest.
    """
    from vllm.benchmarks.mm_processor import collect_mm_processor_stats

    sampling, rows = fixed(llm, tokens), []
    for name, img in photos.items():
        messages, runs = [prompts.user_message(QUESTION, [img])], []
        for _ in range(repeat):
            forget(llm)
            collect_mm_processor_stats(llm.llm_engine)  # reading it empties vLLM's registry
            wall, (out,) = timed(llm, messages, sampling)
            stats, m, ms = collect_mm_processor_stats(llm.llm_engine), out.metrics, {}
            encoder = sum(stats.get("encoder_forward_secs", [])) * 1000
            if stats.get("preprocessor_total_secs"):
                ms["host preprocessing"] = sum(stats["preprocessor_total_secs"]) * 1000
                ms["vision encoder"] = encoder
            if m is not None and m.first_token_ts:
                ms["prefill"] = (m.first_token_ts - m.scheduled_ts) * 1000 - encoder
                ms["decode"] = (m.last_token_ts - m.first_token_ts) * 1000
            ms["other host work"] = max(wall * 1000 - sum(ms.values()), 0.0)
            runs.append((wall * 1000, ms, results.from_output(out, llm.get_tokenizer())))
        wall_ms, ms, got = sorted(runs, key=lambda run: run[0])[len(runs) // 2]
        tiles = (got.image_tokens or 0) // tiling.TOKENS_PER_TILE
        row = {"photo": name, "size": list(img.size), "tiles": tiles, "ms": ms}
        first = wall_ms - ms.get("decode", 0.0)  # all but decode: what the tiles change
        rows.append(
            {**row, "prompt_tokens": got.prompt_tokens, "wall_ms": wall_ms, "first_ms": first}
        )
    return rows


def overhead(llm: Any, args: dict, photo: Image.Image, rounds: int = 5, tokens: int = 16) -> dict:
    """Return the cookbook's message building and checks around ``llm.chat`` against the call.

    "direct" and "direct again" (the A/A control) send a message built beforehand;
    ``own_ms`` is the cookbook side's time outside ``llm.chat``.
    """
    sampling, prebuilt, inner = fixed(llm, tokens), [prompts.user_message(QUESTION, [photo])], []

    def cookbook() -> float:
        forget(llm)
        started = time.perf_counter()
        messages = [prompts.user_message(QUESTION, [photo])]
        checks.check_request(messages, args, tokens)
        inner.append(timed(llm, messages, sampling)[0])
        return time.perf_counter() - started

    def direct() -> float:
        forget(llm)
        return timed(llm, prebuilt, sampling)[0]

    sides = {"cookbook": cookbook, "direct": direct, "direct again": direct}
    names = {"overhead.cookbook": ("cookbook", "direct"),
             "overhead.control": ("direct again", "direct")}  # fmt: skip
    part = compare(sides, rounds, names)
    walls = part["seconds"]["cookbook"]["values"]
    own = [(w - i) * 1000 for w, i in zip(walls, inner[-rounds:], strict=True)]
    return {**part, "own_ms": spread(own)}


def batching(llm: Any, photos: Sequence[Image.Image], rounds: int = 3, tokens: int = 16) -> dict:
    """Return N requests in one ``llm.chat`` call against a call each, caches cold and warm.

    "cold" empties vLLM's caches first (users' photos); "warm" repeats photos it just saw
    (the cold sides of the same round saw them first, so no warm-up round is needed).
    """
    sampling, batch = fixed(llm, tokens), [[prompts.user_message(QUESTION, [p])] for p in photos]

    def side(together: bool, cold: bool) -> Callable[[], float]:
        def run() -> float:
            if cold:
                forget(llm)
            return sum(timed(llm, c, sampling)[0] for c in ([batch] if together else batch))

        return run

    n, sides, names = len(photos), {}, {}
    for state in ("cold", "warm"):
        sides[f"one at a time, {state}"] = side(False, state == "cold")
        sides[f"one call, {state}"] = side(True, state == "cold")
        names[f"batching.{state}.{n}"] = (f"one at a time, {state}", f"one call, {state}")
    return {**compare(sides, rounds, names, warmup=0), "requests": n}


def payload(
    photo: Image.Image, llm: Any = None, client: Any = None, rounds: int = 2, tokens: int = 16
) -> dict:
    """Return a large photo fitted to its tile grid (the default) against its exact pixels.

    Bytes, build seconds, tiles and prompt tokens a variant; seconds from photo to answer
    offline (``llm``) or from a server (``client``); each photo new to vLLM (`new_copy`).
    """
    tiling.plan(photo)  # imports vLLM's tiling code now, not inside the first round
    found: dict[str, dict] = {"fitted": {"build_s": []}, "exact pixels": {"build_s": []}}
    count, model = iter(range(1, 1 << 30)), client.models.list().data[0].id if client else ""

    def side(name: str, where: str) -> Callable[[], float]:
        def run() -> float:
            started = time.perf_counter()
            part = images.image_part(new_copy(photo, next(count)), fit=name == "fitted")
            found[name]["build_s"].append(time.perf_counter() - started)
            messages = [{"role": "user", "content": [part, {"type": "text", "text": QUESTION}]}]
            if where == "offline":
                prompt_tokens = len(timed(llm, messages, fixed(llm, tokens))[1][0].prompt_token_ids)
            else:
                extra = {"min_tokens": tokens}
                answer = server.chat(client, model, messages, max_tokens=tokens, extra_body=extra)
                prompt_tokens = answer.prompt_tokens
            seconds, url = time.perf_counter() - started, part["image_url"]["url"]
            if "tiles" not in found[name]:  # decoded once, outside the timing
                img = images.load_image(url)
                found[name].update(
                    bytes=len(url), size=list(img.size), tiles=tiling.plan(img).tiles
                )
            found[name][f"prompt tokens, {where}"] = prompt_tokens
            return seconds

        return run

    wheres = [w for w, given in (("offline", llm), ("server", client)) if given is not None]
    sides = {f"{n}, {w}": side(n, w) for w in wheres for n in found}
    part = compare(
        sides, rounds, {f"payload.{w}": (f"exact pixels, {w}", f"fitted, {w}") for w in wheres}, 0
    )
    fit, exact = found["fitted"], found["exact pixels"]
    part["ratios"]["payload.bytes"] = ratio([exact["bytes"]], [fit["bytes"]])
    part["ratios"]["payload.build"] = ratio(exact["build_s"], fit["build_s"])
    same = all(fit[k] == exact[k] for k in fit if k == "tiles" or k.startswith("prompt tokens"))
    return {**part, "original": list(photo.size), "variants": found, "same_tiles_and_tokens": same}


def caches(llm: Any, photo: Image.Image, rounds: int = 3, tokens: int = 16) -> dict:
    """Return what vLLM's reuse buys: one photo in the seed's batch, and a second chat turn.

    The seed's three questions about one photo (processor cache, shared encoder output)
    against three copies a pixel apart; the second turn with its first turn in the prefix
    cache against the same after ``llm.reset_prefix_cache()``.
    """
    from vllm.benchmarks.mm_processor import collect_mm_processor_stats

    sampling, count, processor_ms, cached = fixed(llm, tokens), iter(range(1, 1 << 30)), {}, {}

    def seed(reuse: bool) -> float:
        forget(llm)
        collect_mm_processor_stats(llm.llm_engine)
        photos = [photo if reuse else new_copy(photo, next(count)) for _ in SEED_QUESTIONS]
        batch = [
            [prompts.user_message(q, [p])] for q, p in zip(SEED_QUESTIONS, photos, strict=True)
        ]
        seconds = timed(llm, batch, sampling)[0]
        found = collect_mm_processor_stats(llm.llm_engine).get("apply_hf_processor_secs", [])
        processor_ms["one photo" if reuse else "three copies"] = [s * 1000 for s in found]
        return seconds

    def second_turn(warm: bool) -> float:
        forget(llm)
        first = [prompts.user_message(QUESTION, [photo])]
        answer = {"role": "assistant", "content": timed(llm, first, sampling)[1][0].outputs[0].text}
        if not warm:
            llm.reset_prefix_cache()
        turns = [*first, answer, {"role": "user", "content": SEED_QUESTIONS[2]}]
        seconds, (out,) = timed(llm, turns, sampling)
        cached["prefix cached" if warm else "reset"] = [
            out.num_cached_tokens,
            len(out.prompt_token_ids),
        ]
        return seconds

    sides = {
        "seed batch, one photo": lambda: seed(True),
        "seed batch, three copies": lambda: seed(False),
        "second turn, prefix cached": lambda: second_turn(True),
        "second turn, cache reset": lambda: second_turn(False),
    }
    names = {
        "caches.processor": ("seed batch, three copies", "seed batch, one photo"),
        "caches.prefix": ("second turn, cache reset", "second turn, prefix cached"),
    }
    part = compare(sides, rounds, names, warmup=0)
    return {**part, "processor_ms": processor_ms, "cached_tokens": cached}


def patches(by_cap: Mapping[int, Sequence[Mapping[str, Any]]]) -> dict:
    """Return ``max_dynamic_patch`` against latency and tokens, from `stages` rows a cap.

    Each cap is its own engine, one after the other: these ratios are not interleaved. They
    compare the time before the first token (``first_ms``), the part the tiles change.
    """
    top, ratios = max(by_cap), {}
    for cap, rows in by_cap.items():
        for p, q in zip(by_cap[top], rows, strict=True):
            if p["tiles"] != q["tiles"]:
                ratios[f"patches.{p['photo']}.{top}/{cap}"] = ratio(
                    [p["first_ms"]], [q["first_ms"]]
                )
    return {"by_cap": {str(k): list(v) for k, v in sorted(by_cap.items())}, "ratios": ratios}


@contextmanager
def startup_log(since: float | None = None) -> Iterator[dict[str, Any]]:
    """Yield the block's start-up record: ``seconds``, and ``[stage, start, seconds]`` stages.

    Stages end where vLLM logs `MILESTONES` (an in-process engine core only), counted from
    ``since`` (``time.perf_counter()`` before ``import vllm``, then the first stage).
    """
    record: dict[str, Any] = {"stages": []}
    marks: list[tuple[float, str]] = []

    def note(record: logging.LogRecord) -> bool:
        marks.append((time.perf_counter(), record.getMessage()))
        return False  # noted, not emitted

    handler = logging.Handler()
    handler.addFilter(note)
    logger, started = logging.getLogger("vllm"), time.perf_counter()
    level, zero = logger.level, started if since is None else since
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)  # vLLM's own handler keeps printing only what it did
    try:
        yield record
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        end, last = time.perf_counter(), started
        if since is not None:
            record["stages"].append(["import vllm", 0.0, started - since])
        for stage, text in MILESTONES.items():
            at = next((t for t, m in marks if m.startswith(text)), None)
            if at is not None:
                record["stages"].append([stage, last - zero, at - last])
                last = at
        tail = "front end" if last > started else "LLM(...)"
        record["stages"].append([tail, last - zero, end - last])
        record["seconds"] = end - started


def startup_configs(args: dict, device: str, each: bool = False) -> dict[str, tuple[dict, dict]]:
    """Return ``{name: (engine args, environment)}`` to compare start-ups on a device.

    CPU: this cookbook's settings against vLLM's defaults (``each``: every setting alone
    too); NPU and GPU: graph mode against eager mode.
    """
    env, keys = engine.DEVICE_ENV[device], ("distributed_executor_backend", "skip_mm_profiling")
    if device != "cpu":
        return {"graph": (args, env), "eager": ({**args, "enforce_eager": True}, env)}
    configs = {"cookbook settings": (args, env)}
    configs["vLLM defaults"] = ({k: v for k, v in args.items() if k not in keys}, {})
    for key in env if each else []:
        configs[f"without {key}"] = (args, {k: v for k, v in env.items() if k != key})
    for key in keys if each else []:
        configs[f"without {key}"] = ({k: v for k, v in args.items() if k != key}, env)
    return configs


_CHILD = """
import json, sys, time
t0 = time.perf_counter()
from vllm import LLM, SamplingParams
from cookbook import prompts
t1 = time.perf_counter()
llm = LLM(**json.loads(sys.argv[1]))
t2 = time.perf_counter()
stop = prompts.stop_token_ids(llm.get_tokenizer())
llm.chat([prompts.user_message(sys.argv[2], ["cat"])],
         SamplingParams(max_tokens=32, temperature=0, stop_token_ids=stop), use_tqdm=False)
t3, decode = time.perf_counter(), []
for _ in range(2):
    t = time.perf_counter()
    llm.generate("Count:", SamplingParams(max_tokens=128, min_tokens=128), use_tqdm=False)
    decode.append(time.perf_counter() - t)
stages = [["import vllm", 0, t1 - t0], ["LLM(...)", t1 - t0, t2 - t1],
          ["first request", t2 - t0, t3 - t2]]
print("BENCH " + json.dumps({"stages": stages, "decode_128_s": decode}), flush=True)
llm.llm_engine.engine_core.shutdown()
"""


def startup(configs: Mapping[str, tuple[dict, dict]], rounds: int = 1) -> dict:
    """Return each config's start-up in fresh processes, interleaved, and two 128-token decodes.

    Ratios: import and ``LLM(...)`` seconds of each config over the first config's.
    """
    runs: dict[str, list[dict]] = {name: [] for name in configs}
    base = {k: v for k, v in os.environ.items() if k not in engine.DEVICE_ENV["cpu"]}
    base["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)

    def side(name: str) -> Callable[[], float]:
        def run() -> float:
            args, env = configs[name]
            command = [sys.executable, "-c", _CHILD, json.dumps(args), QUESTION]
            proc = subprocess.run(command, env={**base, **env}, capture_output=True, text=True)
            lines = [x for x in proc.stdout.splitlines() if x.startswith("BENCH ")]
            if not lines:
                raise RuntimeError(f"start-up run {name!r} failed:\n{proc.stderr[-3000:]}")
            runs[name].append(json.loads(lines[-1].removeprefix("BENCH ")))
            return sum(s[2] for s in runs[name][-1]["stages"][:2])

        return run

    first = next(iter(configs))
    names = {f"startup.{n}": (n, first) for n in configs if n != first}
    return {**compare({n: side(n) for n in configs}, rounds, names, 0), "runs": runs}


def serve_cli(base_url: str, model: str, clients: int, requests: int = 8, tokens: int = 32) -> list:
    """Return ``vllm bench serve`` arguments: openai-chat, ``random-mm``, one 451x300 image.

    32 random prompt tokens and ``tokens`` output tokens a request, ``clients`` at a time.
    """
    return [
        *f"--backend openai-chat --base-url {base_url.removesuffix('/v1')} --model {model}".split(),
        *"--endpoint /v1/chat/completions --dataset-name random-mm".split(),
        *f"--num-prompts {requests} --max-concurrency {clients} --random-input-len 32".split(),
        *f"--random-output-len {tokens}".split(),
        *"--random-mm-base-items-per-request 1 --random-mm-num-mm-items-range-ratio 0".split(),
        *["--random-mm-limit-mm-per-prompt", '{"image": 1, "video": 0}'],
        *["--random-mm-bucket-config", "{(300, 451, 1): 1.0}", "--seed", str(clients)],
        *"--ignore-eos --temperature 0 --trust-remote-code --disable-tqdm".split(),
    ]


def serve_bench(srv: Any, clients: Sequence[int] = (1, 4), tokens: int = 32) -> dict:
    """Return ``vllm bench serve`` (`serve_cli`) on a running `server.Server`, a level a count.

    Also the server's own ``/metrics`` histograms after the runs (`prometheus`). A key the
    server requires is read from ``$OPENAI_API_KEY``, as ``vllm bench serve`` reads it.
    """
    from vllm.benchmarks import serve

    ap, levels = argparse.ArgumentParser(), {}
    serve.add_cli_args(ap)
    keys = ("request_throughput", "output_throughput", "median_ttft_ms", "median_tpot_ms")
    with ThreadPoolExecutor(1) as pool:  # serve.main calls asyncio.run: not in a kernel's loop
        for k in clients:
            cli = ap.parse_args(serve_cli(srv.base_url, srv.model, k, tokens=tokens))
            found = pool.submit(serve.main, cli).result()
            levels[k] = {key: found[key] for key in keys}
    one, more = levels[min(levels)]["request_throughput"], [k for k in levels if k > min(levels)]
    ratios = {f"serve.clients.{k}": ratio([levels[k]["request_throughput"]], [one]) for k in more}
    return {"levels": levels, "ratios": ratios, "prometheus": prometheus(srv.base_url)}


def prometheus(base_url: str) -> dict[str, float]:
    """Return the mean of each ``vllm:*_seconds`` histogram a server exports (``/metrics``)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(base_url.removesuffix("/v1") + "/metrics", timeout=10).text
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("vllm:") and s.name.endswith(("_seconds_sum", "_seconds_count")):
                sums[s.name] = sums.get(s.name, 0.0) + s.value
    names = [n.removesuffix("_sum") for n in sums if n.endswith("_sum")]
    return {n: sums[n + "_sum"] / sums[n + "_count"] for n in names if sums.get(n + "_count")}


def decode_bound(
    params_b: float, bandwidth_gb_s: float, kv_bytes: float = 0, context: int = 0, batch: int = 1
) -> float:
    """Return the most output tokens/s (the batch's) memory bandwidth allows, bfloat16 weights.

    ``batch * bandwidth / (2 * params + batch * kv_bytes * context)``: each step reads all
    weights once for the batch, and each sequence's KV cache.

    Raises:
        ValueError: A size, bandwidth or batch that makes no sense.
    """
    if params_b <= 0 or bandwidth_gb_s <= 0 or batch < 1 or min(kv_bytes, context) < 0:
        raise ValueError(f"bad sizes: {params_b=}, {bandwidth_gb_s=}, {batch=}, {context=}")
    return batch * bandwidth_gb_s * 1e9 / (params_b * 2e9 + batch * kv_bytes * context)


def decode_bounds(
    keys: Sequence[str] = ("internvl2-8b", "internvl3-8b", "internvl3.5-8b"), context: int = 2048
) -> list:
    """Return `decode_bound` rows for each model, card (`CARDS`) and batch (1, 16).

    ``fits``: the weights and the batch's KV cache (``context`` tokens each) fit the chip.
    """
    rows = []
    for key, (card, (memory_gb, bandwidth)), batch in itertools.product(
        keys, CARDS.items(), (1, 16)
    ):
        spec = models.SUPPORT_MATRIX[key]
        kv = spec.kv_bytes_per_token()
        bound = decode_bound(spec.params_b, bandwidth, kv, context, batch)
        fits = spec.params_b * 2 + kv * context * batch / 1e9 <= memory_gb
        rows.append(
            {"model": key, "card": card, "batch": batch, "tokens_per_s": bound, "fits": fits}
        )
    return rows


def _figure(height: float, cols: int = 1) -> tuple[Any, Any]:
    import matplotlib.pyplot as plt

    return plt.subplots(1, cols, figsize=(8, height))


def _done(fig: Any, ax: Any, **labels: Any) -> Any:
    import matplotlib.pyplot as plt

    ax.set(**labels)
    fig.tight_layout()
    plt.close(fig)  # shown once, as the cell's value
    return fig


def plot_stages(rows: Sequence[Mapping[str, Any]]) -> Any:
    """Return `plot_startup`'s chart of `stages` rows: a row a photo, a bar a stage (ms)."""
    lines = {}
    for r in rows:
        starts = itertools.accumulate(r["ms"].values(), initial=0.0)
        label = f"{r['photo']} {r['size'][0]}x{r['size'][1]}\n{r['tiles']} tiles"
        lines[label] = [[k, s, v] for (k, v), s in zip(r["ms"].items(), starts, strict=False)]
    return plot_startup(lines, "milliseconds")


def plot_bars(values: Mapping[str, Any], xlabel: str = "seconds (median, range of rounds)") -> Any:
    """Return a bar each: a number, or a `spread` as its median with a line from low to high."""
    fig, ax = _figure(0.7 + 0.4 * len(values))
    got = [
        v if isinstance(v, dict) else {"median": v, "low": v, "high": v} for v in values.values()
    ]
    errors = [[g["median"] - g["low"] for g in got], [g["high"] - g["median"] for g in got]]
    ax.barh(list(values), [g["median"] for g in got], xerr=errors, color="#4363d8", capsize=3)
    ax.invert_yaxis()
    return _done(fig, ax, xlabel=xlabel)


def plot_forest(ratios: Mapping[str, Mapping[str, Any]], dots: bool = False) -> Any:
    """Return each ratio's median and range around 1.0, log scale; ``dots``: each round too."""
    fig, ax = _figure(0.9 + 0.3 * len(ratios))
    for y, r in enumerate(ratios.values()):
        ax.hlines(y, r["low"], r["high"], color="gray")
        if dots:
            ax.plot(r["values"], [y] * len(r["values"]), "o", color="#4363d8", alpha=0.4)
        ax.plot(r["median"], y, "D", color="#e6194b" if r["median"] > 1.05 else "black")
    ax.axvline(1.0, linestyle="--", color="gray")
    ax.set_yticks(range(len(ratios)), list(ratios), fontsize=8)
    ax.invert_yaxis()
    return _done(fig, ax, xscale="log", xlabel="without / with: above 1.0 it helps (median, range)")


def plot_patches(part: Mapping[str, Any]) -> Any:
    """Return milliseconds and prompt tokens against ``max_dynamic_patch``, a line a photo."""
    fig, (ms, tokens) = _figure(2.8, cols=2)
    caps = sorted(part["by_cap"], key=int)
    for i, row in enumerate(part["by_cap"][caps[0]]):
        xs = [int(c) for c in caps]
        ms.plot(xs, [part["by_cap"][c][i]["first_ms"] for c in caps], "o-", label=row["photo"])
        tokens.plot(xs, [part["by_cap"][c][i]["prompt_tokens"] for c in caps], "o-")
    ms.set(xlabel="max_dynamic_patch", ylabel="ms before the first token")
    ms.legend(fontsize=7)
    return _done(fig, tokens, xlabel="max_dynamic_patch", ylabel="prompt tokens")


def plot_startup(
    timelines: Mapping[str, Sequence[Sequence[Any]]], xlabel: str = "seconds from start"
) -> Any:
    """Return a timeline a row: ``[stage, start, length]`` bars, a colour a stage."""
    import matplotlib.pyplot as plt

    fig, ax = _figure(1.5 + 0.45 * len(timelines))
    names = list(dict.fromkeys(s[0] for row in timelines.values() for s in row))
    colors = {n: plt.get_cmap("tab10")(i % 10) for i, n in enumerate(names)}
    for y, row in enumerate(timelines.values()):
        for stage, start, seconds in row:
            ax.barh(y, seconds, left=start, color=colors[stage])
    keys = [plt.Rectangle((0, 0), 1, 1, color=colors[n]) for n in names]
    ax.legend(keys, names, fontsize=7, ncol=3, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    ax.set_yticks(range(len(timelines)), list(timelines))
    ax.invert_yaxis()
    return _done(fig, ax, xlabel=xlabel)


def ratio_lines(ratios: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Return a printed line a ratio: its name, median and range."""
    return [
        f"{n:40s} {r['median']:7.3f}  ({r['low']:.3f}-{r['high']:.3f})" for n, r in ratios.items()
    ]


def stage_photos() -> dict[str, Image.Image]:
    """Return the stage breakdown's photos: one tile, seven tiles, and 12 megapixels."""
    return {n: images.load_image(n) for n in ("astronaut", "cat")} | {"phone photo": big_photo()}


def add_arguments(ap: Any) -> None:
    """Add the benchmark's options: notebook 05's parameters, and where its outputs go."""
    ap.add_argument("--profile", default="cpu", help="profile of notebooks/manifest.toml")
    ap.add_argument("--model", default=None, help="support-matrix key, hub id or folder")
    ap.add_argument("--rounds", type=int, default=7, help="rounds a comparison (more: narrower)")
    ap.add_argument("--serve", action="store_true", help="also benchmark a server")
    ap.add_argument("--api-servers", default="1", help="--api-server-count values, with --serve")
    ap.add_argument("--startup-rounds", type=int, default=1, help="fresh-process start-ups")
    ap.add_argument("--out", default="build/bench", help="the executed notebook and its results")


def run_from_args(args: Any) -> int:
    """Execute notebook 05 with these parameters; print each ratio with its range.

    Returns 0 when the notebook passed the runner's checks, else 1.
    """
    from cookbook import runner

    params = {"rounds": args.rounds, "serve": args.serve, "api_servers": args.api_servers,
              "startup_rounds": args.startup_rounds}  # fmt: skip
    (report,) = runner.run_notebooks(
        args.profile, only=["05"], out_dir=args.out, model=args.model, overrides=params
    )
    if report.record and Path(report.record).is_file():
        record = json.loads(Path(report.record).read_text())
        print("\n".join(ratio_lines(record["ratios"])))
        print(f"{record['model']} on {record['device']}; load {os.getloadavg()[0]:.1f} here")
    print(f"executed notebook: {report.executed}")
    return 0 if report.status == "passed" else 1
