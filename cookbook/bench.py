"""Benchmarks: what the cookbook costs over raw vLLM, and what batching and concurrency buy.

Every comparison is measured in one run, on one engine or one server, with the two sides
interleaved (A B, B A, A B, ...) so that slow drift of a shared machine hits both alike;
results are medians and the median of the per-pair ratios. Six measurements:

* ``startup``: engine and server start time, split into the stages vLLM reports in its
  log (`parse_startup_log`) and timed as the lines appear (`LogWatcher`).
* ``overhead``: the same requests through the cookbook's recipes (``ask_image``,
  ``ask_batch``) and through direct ``vllm.LLM.generate`` calls on the same engine, with
  the same prompts, the same ``SamplingParams`` values and the same PIL images. The
  cookbook's own time (validation, prompt building, tiling plan) is separated from the
  time of ``generate``.
* ``batching``: N single-image requests in one ``ask_batch`` call against N ``ask_image``
  calls one after the other.
* ``decode``: seconds per generated token of a single request (the step that device
  memory bandwidth bounds on an accelerator; see `decode_bound`).
* ``concurrency``: K client threads streaming from a `cookbook.server.VLLMServer`
  against one: requests/s, output tokens/s, time to first token and time per output token.
* ``payload``: a 4000x3000 photo sent at full size (PNG data URL) against the same photo
  shrunk to the smallest size that keeps InternVL's tile grid (`grid_preserving_max_side`):
  bytes, time to build the request, and the prompt tokens the model really got.

`run_benchmarks` runs the selection and returns a JSON-ready report (`check_report` says
what is missing from one); ``python -m cookbook bench`` is its command line and
notebooks/05_benchmark.ipynb shows the numbers with plots. Nothing here imports torch,
vLLM or matplotlib at module level.
"""

from __future__ import annotations

import math
import os
import platform
import re
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "BENCHMARKS",
    "NPU_CARDS",
    "STARTUP_MARKERS",
    "Accelerator",
    "BenchConfig",
    "LogWatcher",
    "bench_batching",
    "bench_concurrency",
    "bench_decode",
    "bench_overhead",
    "bench_payload",
    "add_arguments",
    "check_report",
    "config_from_args",
    "decode_bound",
    "decode_bound_table",
    "decode_bytes_per_token",
    "downscaled_size",
    "finish_report",
    "grid_preserving_max_side",
    "interleave",
    "machine_info",
    "median",
    "new_report",
    "parse_only",
    "parse_startup_log",
    "payload_photo",
    "plot_latency_distribution",
    "plot_throughput",
    "prepare_breakdown",
    "quantile",
    "ratio",
    "ratio_summary",
    "ratio_table",
    "run_benchmarks",
    "run_from_args",
    "stages_from_timeline",
    "start_engine",
    "start_server",
    "summarize",
]

#: Names accepted by ``--only``, in the order they run.
BENCHMARKS = ("startup", "overhead", "batching", "decode", "payload", "concurrency")

#: Version of the report layout; raise it when a key changes meaning.
REPORT_VERSION = 1

T = TypeVar("T")


# --------------------------------------------------------------------------- statistics


def median(values: Sequence[float]) -> float:
    """Return the median of ``values``.

    Raises:
        ValueError: ``values`` is empty.

    """
    if not values:
        raise ValueError("median of no values; run at least one repetition")
    return float(statistics.median(values))


def quantile(values: Sequence[float], q: float) -> float:
    """Return the ``q`` quantile (0..1) of ``values``, interpolating linearly between ranks.

    Raises:
        ValueError: ``values`` is empty or ``q`` is outside 0..1.

    """
    if not values:
        raise ValueError("quantile of no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be within 0..1, got {q}")
    ordered = sorted(float(v) for v in values)
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Return ``{"n", "median", "mean", "min", "max", "p10", "p90"}`` of ``values``.

    Raises:
        ValueError: ``values`` is empty.

    """
    vals = [float(v) for v in values]
    return {
        "n": len(vals),
        "median": median(vals),
        "mean": float(statistics.fmean(vals)),
        "min": min(vals),
        "max": max(vals),
        "p10": quantile(vals, 0.1),
        "p90": quantile(vals, 0.9),
    }


def ratio(numerator: float, denominator: float) -> float:
    """Return ``numerator / denominator``.

    Raises:
        ValueError: ``denominator`` is not positive (a time or a rate of zero means the
            measurement failed, and a ratio of it would be meaningless).

    """
    if not denominator > 0:
        raise ValueError(f"cannot divide by {denominator!r}: the measurement must be positive")
    return float(numerator) / float(denominator)


def ratio_summary(numerators: Sequence[float], denominators: Sequence[float]) -> dict[str, float]:
    """Return the median of the per-pair ratios, their range and the ratio of the medians.

    Pair ``i`` was measured back to back, so its ratio is immune to drift that is slower
    than one pair; the median of those ratios is the number to quote.

    Returns:
        ``{"value", "low", "high", "ratio_of_medians", "n"}``: ``value`` is the median
        per-pair ratio, ``low``/``high`` the smallest and largest per-pair ratio.

    Raises:
        ValueError: the sequences are empty, of different lengths, or hold a value <= 0 in
            ``denominators``.

    """
    if len(numerators) != len(denominators):
        raise ValueError(
            f"{len(numerators)} numerators but {len(denominators)} denominators; "
            "ratios need pairs measured together"
        )
    pairs = [ratio(a, b) for a, b in zip(numerators, denominators, strict=True)]
    return {
        "value": median(pairs),
        "low": min(pairs),
        "high": max(pairs),
        "ratio_of_medians": ratio(median(numerators), median(denominators)),
        "n": len(pairs),
    }


def interleave(
    reps: int, variants: Mapping[str, Callable[[], T]], *, warmup: int = 1
) -> dict[str, list[T]]:
    """Return each variant's results over ``reps`` rounds, run in rotating order.

    Round ``r`` starts with variant ``r mod len(variants)``: for two variants A and B this
    is A B, B A, A B, ..., so neither side always runs first (after the other has warmed
    a cache) and drift of a shared machine is spread over both.

    Args:
        reps: rounds to keep (each runs every variant once).
        variants: name -> a callable doing one measurement and returning its result.
        warmup: rounds run first and thrown away (lazy initialisation, first-call costs).

    Raises:
        ValueError: ``reps`` < 1, ``warmup`` < 0 or no variants.

    """
    if reps < 1:
        raise ValueError(f"reps must be at least 1, got {reps}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    names = list(variants)
    if not names:
        raise ValueError("interleave needs at least one variant")
    out: dict[str, list[T]] = {n: [] for n in names}
    for r in range(warmup + reps):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            value = variants[name]()
            if r >= warmup:
                out[name].append(value)
    return out


# --------------------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    """Return the machine a run measured: CPUs, CPU model, memory, load, OS and Python.

    ``cpu_count`` is ``os.cpu_count()``; ``cpus_usable`` the CPUs this process may run on
    (``os.sched_getaffinity``); ``cpu_model`` the first ``model name`` of /proc/cpuinfo;
    ``memory_gib`` ``MemTotal`` of /proc/meminfo; ``load_average`` the 1, 5 and 15 minute
    load (other work on a shared machine shows here).
    """
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count() or 0,
        "cpus_usable": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count() or 0,
        "cpu_model": platform.processor() or platform.machine(),
        "memory_gib": None,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "os": platform.platform(),
        "arch": platform.machine(),
        "python": platform.python_version(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gib"] = round(int(line.split()[1]) * 1024 / 2**30, 2)
                break
    except (OSError, ValueError, IndexError):
        pass
    return info


# --------------------------------------------------------------------------- configuration


@dataclass
class BenchConfig:
    """What to measure and with how much work.

    Attributes:
        model: support-matrix key, hub id or local path (`cookbook.models.resolve_model`).
        device: ``"auto"``, ``"npu"``, ``"cuda"`` or ``"cpu"``.
        only: names from `BENCHMARKS` to run.
        quick: the short preset (`BenchConfig.preset`).
        reps: kept rounds of each A/B comparison (after one warm-up round).
        overhead_reps: rounds of the overhead and decode comparisons (cheap, and the
            differences they measure are small, so they get more).
        max_tokens: tokens each answer may generate.
        min_tokens: least tokens of each answer; ``None`` makes it ``max_tokens``, so
            every request generates the same number of tokens in every repetition.
        temperature: 0.0 is greedy, so both sides of a comparison generate the same tokens.
        question: the question asked about each image.
        images: sample photos (`cookbook.images.SAMPLE_IMAGES`) used in turn; the default
            four are all cut into 3x2 tiles + a thumbnail, so every request costs the same.
        overhead_batch: requests in the batched overhead comparison.
        batch_sizes: values of N for the batching comparison.
        concurrency: values of K (client threads) for the serving comparison.
        requests_per_client: requests each client thread sends in one round.
        decode_tokens: extra tokens generated to time the decode step.
        payload_image: sample photo upscaled to ``payload_size`` for the payload test.
        payload_size: (width, height) of that photo, in pixels.
        max_model_len: context length; ``None`` keeps the model's recommendation.
        max_dynamic_patch: most tiles per image; ``None`` keeps the checkpoint's value.
        warm_caches: keep vLLM's prefix cache and multimodal processor cache on. Off by
            default: the benchmark repeats the same few photos, and with the caches on
            every repetition after the first skips image processing and prefill, which
            distinct user photos never do.

    """

    model: str = "tiny"
    device: str = "auto"
    only: tuple[str, ...] = BENCHMARKS
    quick: bool = False
    reps: int = 5
    overhead_reps: int = 12
    max_tokens: int = 64
    min_tokens: int | None = None
    temperature: float = 0.0
    question: str = "Describe this image."
    images: tuple[str, ...] = ("cat", "coffee", "rocket", "motorcycle")
    overhead_batch: int = 8
    batch_sizes: tuple[int, ...] = (1, 4, 8, 16)
    concurrency: tuple[int, ...] = (1, 2, 4)
    requests_per_client: int = 4
    decode_tokens: int = 128
    payload_image: str = "motorcycle"
    payload_size: tuple[int, int] = (4000, 3000)
    max_model_len: int | None = None
    max_dynamic_patch: int | None = None
    warm_caches: bool = False

    @classmethod
    def preset(cls, quick: bool = False, **changes: Any) -> BenchConfig:
        """Return the full (default) or the quick configuration, with ``changes`` applied.

        The quick one (``python -m cookbook bench --quick``) takes a few minutes on a
        2-core machine with the tiny model: 3 rounds (9 for the overhead), batches of
        1, 4 and 8, 2 requests per client, 32-token answers, 64 decode tokens.
        """
        base = cls()
        if quick:
            base = replace(
                base,
                quick=True,
                reps=3,
                overhead_reps=9,
                overhead_batch=4,
                batch_sizes=(1, 4, 8),
                requests_per_client=2,
                decode_tokens=64,
                max_tokens=32,
            )
        return replace(base, **changes)

    @property
    def answer_min_tokens(self) -> int:
        """Return the ``min_tokens`` sent with each request."""
        return self.max_tokens if self.min_tokens is None else self.min_tokens

    def sampling(self) -> dict[str, Any]:
        """Return the sampling keyword arguments every request of a run uses."""
        return {
            "max_tokens": self.max_tokens,
            "min_tokens": self.answer_min_tokens,
            "temperature": self.temperature,
        }

    def cache_overrides(self) -> dict[str, Any]:
        """Return the engine/server settings that turn vLLM's caches off (or nothing).

        ``enable_prefix_caching=False`` (``--no-enable-prefix-caching``) and
        ``mm_processor_cache_gb=0`` (``--mm-processor-cache-gb 0``), both vLLM engine
        arguments (vllm/engine/arg_utils.py, ``EngineArgs``).
        """
        if self.warm_caches:
            return {}
        return {"enable_prefix_caching": False, "mm_processor_cache_gb": 0}

    def validate(self) -> BenchConfig:
        """Check the settings before any engine starts; return ``self``.

        Raises:
            ValueError: an unknown benchmark name, an empty or non-positive size, or
                ``min_tokens`` above ``max_tokens``.

        """
        unknown = [n for n in self.only if n not in BENCHMARKS]
        if unknown or not self.only:
            raise ValueError(
                f"unknown benchmark(s) {unknown or '(none given)'}; choose from "
                f"{', '.join(BENCHMARKS)} (comma-separated with --only)"
            )
        for name in ("reps", "overhead_reps", "max_tokens", "overhead_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("requests_per_client", "decode_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("batch_sizes", "concurrency"):
            values = getattr(self, name)
            if not values or any(not isinstance(v, int) or v < 1 for v in values):
                raise ValueError(f"{name} must be positive ints, got {values!r}")
        if self.min_tokens is not None and not 0 <= self.min_tokens <= self.max_tokens:
            raise ValueError(
                f"min_tokens must be within 0..max_tokens ({self.max_tokens}) or None, "
                f"got {self.min_tokens}"
            )
        if not self.images:
            raise ValueError("images must name at least one sample photo")
        width, height = self.payload_size
        if width < 1 or height < 1:
            raise ValueError(f"payload_size must be positive, got {self.payload_size}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-ready dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _engine_settings(cfg: BenchConfig) -> dict[str, Any]:
    """Return the engine/server size settings the caller set (``None`` ones left out)."""
    out: dict[str, Any] = {}
    if cfg.max_model_len is not None:
        out["max_model_len"] = cfg.max_model_len
    if cfg.max_dynamic_patch is not None:
        out["max_dynamic_patch"] = cfg.max_dynamic_patch
    return out


# --------------------------------------------------------------------------- start-up

#: Log lines that mark a start-up stage: name -> regular expression. They are INFO lines
#: of vLLM 0.23.0 (its engine processes print them when ``VLLM_LOGGING_LEVEL=INFO``):
#: ``EngineCore.__init__`` (vllm/v1/engine/core.py) prints "Initializing a V1 LLM engine"
#: and "init engine (profile, create kv cache, warmup model) took"; the CPU model runner
#: (vllm/v1/worker/cpu_model_runner.py) "Starting to load model" and "Warming up done";
#: the weight loader (vllm/model_executor/model_loader/default_loader.py) "Loading
#: weights took"; the GPU/NPU model runner (vllm/v1/worker/gpu_model_runner.py) "Model
#: loading took"; vllm/v1/core/kv_cache_utils.py "GPU KV cache size"; the API server
#: (vllm/entrypoints/openai/api_server.py) "Starting vLLM server on"; uvicorn
#: "Application startup complete".
STARTUP_MARKERS: dict[str, str] = {
    "engine process up": r"Initializing a V1 LLM engine",
    "model load started": r"Starting to load model",
    "weights loaded": r"Loading weights took",
    "model loaded": r"Model loading took",
    "warm-up done": r"Warming up done",
    "KV cache sized": r"KV cache size: [\d,]+ tokens",
    "engine initialised": r"init engine \(profile, create kv cache, warmup model\) took",
    "API server listening": r"Starting vLLM server on",
    "application started": r"Application startup complete",
}

_REPORTED = {
    "weights_load_seconds": r"Loading weights took ([\d.]+) seconds",
    "model_load": r"Model loading took ([\d.]+) GiB memory and ([\d.]+) seconds",
    "init_engine": (
        r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+) s"
        r"(?: \(compilation: ([\d.]+) s)?"
    ),
    "kv_cache_tokens": r"KV cache size: ([\d,]+) tokens",
    "max_concurrency": r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x",
}


def parse_startup_log(text: str) -> dict[str, float]:
    """Return the start-up durations and sizes vLLM printed in a log.

    The last occurrence of each line counts (a log file appended to by several starts
    describes the latest one last).

    Args:
        text: log text (vLLM's INFO lines; see `STARTUP_MARKERS` for their sources).

    Returns:
        A dict with the keys found among: ``weights_load_seconds`` ("Loading weights
        took"), ``model_load_gib`` and ``model_load_seconds`` ("Model loading took", GPU
        and NPU runners only), ``init_engine_seconds`` (profile run, KV cache creation
        and warm-up) and ``compilation_seconds`` (when compiled), ``kv_cache_tokens``,
        ``max_concurrency`` (how many full-length requests the KV cache holds). Empty when
        the log has no INFO lines (``VLLM_LOGGING_LEVEL`` above INFO).

    """
    found: dict[str, float] = {}

    def last(pattern: str) -> re.Match[str] | None:
        matches = list(re.finditer(pattern, text))
        return matches[-1] if matches else None

    if m := last(_REPORTED["weights_load_seconds"]):
        found["weights_load_seconds"] = float(m[1])
    if m := last(_REPORTED["model_load"]):
        found["model_load_gib"] = float(m[1])
        found["model_load_seconds"] = float(m[2])
    if m := last(_REPORTED["init_engine"]):
        found["init_engine_seconds"] = float(m[1])
        if m[2]:
            found["compilation_seconds"] = float(m[2])
    if m := last(_REPORTED["kv_cache_tokens"]):
        found["kv_cache_tokens"] = float(m[1].replace(",", ""))
    if m := last(_REPORTED["max_concurrency"]):
        found["max_concurrency"] = float(m[2])
    return found


def stages_from_timeline(
    timeline: Mapping[str, float], total_seconds: float, *, ready: str = "ready"
) -> list[dict[str, Any]]:
    """Return start-up stages as consecutive intervals between the markers seen.

    Args:
        timeline: marker name -> seconds after the start when its line appeared
            (`LogWatcher.timeline`).
        total_seconds: seconds from the start until the engine or server was ready.
        ready: name of the last point (the moment the caller saw it ready).

    Returns:
        ``[{"stage": "start -> engine process up", "seconds": 21.3, "end": 21.3}, ...]``
        in time order (markers seen at the same moment in the timeline's order),
        ending with ``"... -> ready"``; the seconds add up to ``total_seconds``. Markers
        later than ``total_seconds`` are left out.

    """
    # A stable sort keeps the log's order for lines read in the same poll.
    points = sorted(
        ((name, t) for name, t in timeline.items() if 0 <= t <= total_seconds),
        key=lambda item: item[1],
    )
    stages = []
    prev_name, prev_t = "start", 0.0
    for name, t in [*points, (ready, float(total_seconds))]:
        stages.append(
            {"stage": f"{prev_name} -> {name}", "seconds": round(t - prev_t, 3), "end": t}
        )
        prev_name, prev_t = name, t
    return stages


class LogWatcher:
    """Timestamps start-up lines as they appear in a log file, from a background thread.

    vLLM prints timestamps to the second only, and uvicorn none, so the watcher reads the
    file every ``interval`` seconds and notes when each `STARTUP_MARKERS` line first shows
    up, relative to `start`. Lines already in the file when it starts are ignored.

    Args:
        path: the log file (it may not exist yet).
        markers: name -> regular expression.
        interval: seconds between reads.

    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        markers: Mapping[str, str] | None = None,
        interval: float = 0.05,
    ) -> None:
        self.path = Path(path)
        self.markers = {k: re.compile(v) for k, v in (markers or STARTUP_MARKERS).items()}
        self.interval = float(interval)
        self.timeline: dict[str, float] = {}
        self.text = ""
        self._offset = 0
        self._partial = ""
        self._t0 = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> LogWatcher:
        """Start watching now; return ``self``."""
        try:
            self._offset = self.path.stat().st_size
        except OSError:
            self._offset = 0
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="log-watcher", daemon=True)
        self._thread.start()
        return self

    @property
    def started_at(self) -> float:
        """Return the ``time.perf_counter()`` value the timeline counts from."""
        return self._t0

    def _run(self) -> None:
        while not self._stop.is_set():
            self._read()
            self._stop.wait(self.interval)

    def _read(self) -> None:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except OSError:
            return
        if not data:
            return
        now = time.perf_counter() - self._t0
        self._offset += len(data)
        chunk = self._partial + data.decode("utf-8", errors="replace")
        lines = chunk.split("\n")
        self._partial = lines.pop()
        for line in lines:
            self.text += line + "\n"
            for name, pattern in self.markers.items():
                if name not in self.timeline and pattern.search(line):
                    self.timeline[name] = round(now, 3)

    def stop(self) -> dict[str, float]:
        """Stop watching, read what is left, and return the timeline."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._read()
        return dict(self.timeline)


@contextmanager
def _env(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for a block, then restore the previous values."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _startup_record(wall: float, watcher: LogWatcher, log_path: str) -> dict[str, Any]:
    return {
        "seconds": round(wall, 3),
        "reported": parse_startup_log(watcher.text),
        "timeline": dict(watcher.timeline),
        "stages": stages_from_timeline(watcher.timeline, wall),
        "log_path": log_path,
    }


def start_engine(cfg: BenchConfig, *, log_path: str | os.PathLike[str] | None = None) -> Any:
    """Start the benchmark's engine and time its start-up by stage.

    The engine's processes log at INFO level into their log file (``VLLM_LOGGING_LEVEL``
    is set to ``INFO`` while they are spawned, and restored afterwards; this process
    keeps its own level), so the stages vLLM reports can be read and timed.

    Args:
        cfg: the run's settings (model, device, sizes, caches).
        log_path: the engine's log file; a new one from
            `cookbook.engine.default_log_path` when ``None``.

    Returns:
        ``(engine, startup)``: the `cookbook.engine.Engine` (shut it down when done) and
        ``{"seconds", "reported", "timeline", "stages", "log_path"}``: wall time of
        `cookbook.engine.create_engine`, what `parse_startup_log` found, when each marker
        line appeared and the stages between them (`stages_from_timeline`).

    Raises:
        ValueError, RuntimeError: from `cookbook.engine.create_engine`.

    """
    from cookbook.engine import create_engine, default_log_path, quiet_vllm_logs

    # vLLM sets this process's log level when it is first imported: import it before the
    # INFO window below, so only the spawned engine processes log at INFO (into the file).
    quiet_vllm_logs()
    import vllm  # noqa: F401

    log = Path(log_path) if log_path is not None else default_log_path()
    watcher = LogWatcher(log).start()
    try:
        with _env({"VLLM_LOGGING_LEVEL": "INFO"}):
            engine = create_engine(
                cfg.model,
                cfg.device,
                log_path=log,
                **_engine_settings(cfg),
                **cfg.cache_overrides(),
            )
    finally:
        watcher.stop()
    wall = time.perf_counter() - watcher.started_at
    record = _startup_record(wall, watcher, str(log))
    record["llm_seconds"] = round(engine.startup_seconds, 3)
    return engine, record


def start_server(cfg: BenchConfig, *, log_path: str | os.PathLike[str] | None = None) -> Any:
    """Start a `cookbook.server.VLLMServer` for the benchmark and time its start-up.

    The server runs with ``VLLM_LOGGING_LEVEL=INFO`` (its log goes to a file) and the
    same sizes and cache settings as the engine.

    Returns:
        ``(server, startup)``: the running server (call ``server.stop()``, also on
        errors) and the same start-up record as `start_engine`, where ``seconds`` runs
        until the server answered a first request.

    Raises:
        RuntimeError: the server did not start (its log tail is in the message).

    """
    import tempfile

    from cookbook.server import VLLMServer

    if log_path is None:
        fd, tmp = tempfile.mkstemp(prefix="vllm-bench-server-", suffix=".log")
        os.close(fd)
        log_path = tmp
    server = VLLMServer(
        cfg.model,
        device=cfg.device,
        log_path=log_path,
        env={"VLLM_LOGGING_LEVEL": "INFO"},
        timeout=300.0,
        **_engine_settings(cfg),
        **cfg.cache_overrides(),
    )
    watcher = LogWatcher(log_path).start()
    try:
        server.start()
    finally:
        watcher.stop()
    wall = time.perf_counter() - watcher.started_at
    record = _startup_record(wall, watcher, str(log_path))
    record["command"] = server.command_line
    return server, record


# --------------------------------------------------------------------------- overhead


def _photos(cfg: BenchConfig) -> list[Any]:
    from cookbook.images import sample_image

    return [sample_image(name) for name in cfg.images]


def _timed(fn: Callable[[], T]) -> tuple[float, T]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def _direct_requests(prompt: str, photos: Sequence[Any], n: int) -> list[dict[str, Any]]:
    return [
        {"prompt": prompt, "multi_modal_data": {"image": photos[i % len(photos)]}} for i in range(n)
    ]


def bench_overhead(engine: Any, cfg: BenchConfig) -> dict[str, Any]:
    """Return what the recipes cost over direct ``LLM.generate`` calls on the same engine.

    Two comparisons, each interleaved over ``cfg.overhead_reps`` rounds: one request
    (``recipes.ask_image`` against ``llm.generate([request])``) and ``cfg.overhead_batch``
    requests (``recipes.ask_batch`` against ``llm.generate(requests)``). The direct side
    gets the prompt the recipe builds (made once, before timing), the same PIL images
    and a ``SamplingParams`` with the same values (`recipes.sampling_params`). The
    recipe's own time is its wall time minus the ``generate`` time it recorded in
    ``GenerationResult.seconds``. A third side repeats the direct call (an A/A
    comparison): its ratio to the direct call is the noise floor of the machine, against
    which the recipe's ratio can be read.

    Returns:
        ``{"single": {...}, "batch": {...}, "breakdown": {...}, "sample_results": [...]}``.
        Each comparison holds ``requests``, ``cookbook_seconds``, ``direct_seconds``,
        ``cookbook_generate_seconds`` and ``cookbook_own_seconds`` (`summarize` dicts),
        ``ratio`` (`ratio_summary` of cookbook over direct wall time: the end-to-end
        comparison, as noisy as the machine), ``same_call_ratio`` (the recipe's wall
        time over the ``generate`` time inside the same call: its own cost, free of
        run-to-run noise), ``generate_ratio`` (the recipe's ``generate`` time over the
        direct call: whether the recipe's inputs make ``generate`` itself slower),
        ``noise_ratio`` (the repeated direct call over the direct call: what noise alone
        gives), ``own_share`` (median share of the recipe's own time in its wall time) and
        ``same_work`` (both sides got the same prompt and output token counts).
        ``breakdown`` is `prepare_breakdown`; ``sample_results`` the results of the last
        batched recipe call, as dicts.

    """
    from cookbook import prompts, recipes

    photos = _photos(cfg)
    sampling = cfg.sampling()
    params = recipes.sampling_params(engine, **sampling)
    prompt = prompts.build_prompt(engine.tokenizer, cfg.question, num_images=1)
    out: dict[str, Any] = {}
    last_results: list[Any] = []

    for mode, n in (("single", 1), ("batch", cfg.overhead_batch)):

        def cookbook(n: int = n, mode: str = mode) -> dict[str, Any]:
            if mode == "single":
                wall, res = _timed(
                    lambda: [recipes.ask_image(engine, photos[0], cfg.question, **sampling)]
                )
            else:
                reqs = [(photos[i % len(photos)], cfg.question) for i in range(n)]
                wall, res = _timed(lambda: recipes.ask_batch(engine, reqs, **sampling))
            last_results[:] = res
            return {
                "seconds": wall,
                "generate": res[0].seconds,
                "tokens": [(r.prompt_tokens, r.output_tokens) for r in res],
            }

        def direct(n: int = n) -> dict[str, Any]:
            def call() -> list[Any]:
                reqs = _direct_requests(prompt, photos, n)
                return list(engine.llm.generate(reqs, params, use_tqdm=False))

            wall, outs = _timed(call)
            return {
                "seconds": wall,
                "tokens": [(len(o.prompt_token_ids), len(o.outputs[0].token_ids)) for o in outs],
            }

        runs = interleave(
            cfg.overhead_reps, {"cookbook": cookbook, "direct": direct, "direct_again": direct}
        )
        cb, dr, again = runs["cookbook"], runs["direct"], runs["direct_again"]
        own = [c["seconds"] - c["generate"] for c in cb]
        out[mode] = {
            "requests": n,
            "cookbook_seconds": summarize([c["seconds"] for c in cb]),
            "direct_seconds": summarize([d["seconds"] for d in dr]),
            "cookbook_generate_seconds": summarize([c["generate"] for c in cb]),
            "cookbook_own_seconds": summarize(own),
            "ratio": ratio_summary([c["seconds"] for c in cb], [d["seconds"] for d in dr]),
            "same_call_ratio": ratio_summary(
                [c["seconds"] for c in cb], [c["generate"] for c in cb]
            ),
            "generate_ratio": ratio_summary(
                [c["generate"] for c in cb], [d["seconds"] for d in dr]
            ),
            "noise_ratio": ratio_summary([a["seconds"] for a in again], [d["seconds"] for d in dr]),
            "own_share": median([o / c["seconds"] for o, c in zip(own, cb, strict=True)]),
            "same_work": all(c["tokens"] == d["tokens"] for c, d in zip(cb, dr, strict=True)),
        }
        if mode == "batch":
            out["sample_results"] = [r.to_dict() for r in last_results]
    out["breakdown"] = prepare_breakdown(engine, photos[0], cfg.question, reps=cfg.overhead_reps)
    return out


def prepare_breakdown(
    engine: Any, image: Any, question: str, *, reps: int = 9, max_tokens: int = 16
) -> dict[str, float]:
    """Return the median milliseconds of each step a recipe runs before ``generate``.

    The steps of `cookbook.recipes.prepare_request` and `cookbook.recipes.sampling_params`,
    called one by one on one image: ``sampling_params``, ``load_image`` (a PIL image is
    made upright RGB), ``build_prompt`` (the chat template), ``check_prompt``,
    ``plan_images`` (the tiling plan), ``text_token_count`` (tokenising the prompt for the
    budget), ``check_budget``, and ``prepare_request`` as a whole.

    Raises:
        ValueError: ``reps`` < 1.

    """
    from cookbook import images, prompts, recipes, tiling

    if reps < 1:
        raise ValueError(f"reps must be at least 1, got {reps}")
    samples: dict[str, list[float]] = {}

    @contextmanager
    def step(name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        samples.setdefault(name, []).append((time.perf_counter() - t0) * 1000)

    rest = {k: v for k, v in engine.tiling.items() if k != "max_dynamic_patch"}
    for _ in range(reps + 1):
        with step("sampling_params"):
            recipes.sampling_params(engine, max_tokens=max_tokens)
        with step("load_image"):
            pil = images.load_image(image)
        with step("build_prompt"):
            prompt = prompts.build_prompt(engine.tokenizer, question)
        with step("check_prompt"):
            prompts.check_prompt(prompt, 1)
        with step("plan_images"):
            plans = tiling.plan_images([pil], **engine.tiling)
        with step("text_token_count"):
            text = prompts.text_token_count(engine.tokenizer, prompt)
        with step("check_budget"):
            tiling.check_budget(
                image_tokens=[p.tokens for p in plans],
                text_tokens=text,
                max_tokens=max_tokens,
                max_model_len=engine.max_model_len,
                max_dynamic_patch=int(engine.tiling.get("max_dynamic_patch", 12)),
                image_sizes=[(p.width, p.height) for p in plans],
                **rest,
            )
        with step("prepare_request"):
            recipes.prepare_request(engine, question, [image], max_tokens=max_tokens)
    # The first round is a warm-up (imports, template compilation).
    return {name: round(median(vals[1:]), 4) for name, vals in samples.items()}


# --------------------------------------------------------------------------- batching


def bench_batching(engine: Any, cfg: BenchConfig) -> dict[str, Any]:
    """Return N requests in one ``ask_batch`` call against N ``ask_image`` calls in a row.

    For each N of ``cfg.batch_sizes``, ``cfg.reps`` interleaved rounds; request ``i``
    asks about photo ``i mod len(cfg.images)``.

    Returns:
        ``{"sizes": [{"n", "batched_seconds", "sequential_seconds", "speedup",
        "batched_requests_per_s", "sequential_requests_per_s",
        "batched_output_tokens_per_s", "sequential_output_tokens_per_s"}, ...],
        "single_request_seconds": [...]}``: seconds are `summarize` dicts, ``speedup``
        the `ratio_summary` of sequential over batched time, rates medians;
        ``single_request_seconds`` every ``ask_image`` latency measured (for a
        distribution plot).

    """
    from cookbook import recipes

    photos = _photos(cfg)
    sampling = cfg.sampling()
    singles: list[float] = []
    sizes = []
    for n in cfg.batch_sizes:
        reqs = [(photos[i % len(photos)], cfg.question) for i in range(n)]

        def batched(reqs: list[Any] = reqs) -> tuple[float, int]:
            wall, res = _timed(lambda: recipes.ask_batch(engine, reqs, **sampling))
            return wall, sum(r.output_tokens for r in res)

        def sequential(reqs: list[Any] = reqs) -> tuple[float, int]:
            total, tokens = 0.0, 0
            for img, question in reqs:
                wall, res = _timed(partial(recipes.ask_image, engine, img, question, **sampling))
                singles.append(wall)
                total += wall
                tokens += res.output_tokens
            return total, tokens

        runs = interleave(cfg.reps, {"batched": batched, "sequential": sequential})
        b_sec = [s for s, _ in runs["batched"]]
        s_sec = [s for s, _ in runs["sequential"]]
        sizes.append(
            {
                "n": n,
                "batched_seconds": summarize(b_sec),
                "sequential_seconds": summarize(s_sec),
                "speedup": ratio_summary(s_sec, b_sec),
                "batched_requests_per_s": median([n / s for s in b_sec]),
                "sequential_requests_per_s": median([n / s for s in s_sec]),
                "batched_output_tokens_per_s": median([t / s for s, t in runs["batched"]]),
                "sequential_output_tokens_per_s": median([t / s for s, t in runs["sequential"]]),
            }
        )
    return {"sizes": sizes, "single_request_seconds": [round(s, 5) for s in singles]}


# --------------------------------------------------------------------------- decode


def bench_decode(engine: Any, cfg: BenchConfig) -> dict[str, Any]:
    """Return the time per generated token of one request, and what it means in bytes.

    A request that generates 1 token is interleaved with the same request generating
    ``1 + cfg.decode_tokens`` (both forced with ``min_tokens``) over ``cfg.overhead_reps``
    rounds; the difference divided by ``cfg.decode_tokens`` is the decode step. Each step
    reads all LLM weights once, so ``bytes_per_token`` (weights in the engine's dtype,
    `decode_bytes_per_token`) over the step time is the memory traffic it implies.

    Returns:
        ``{"first_token_seconds", "seconds_per_token", "tokens_per_s",
        "bytes_per_token", "implied_gb_per_s", "dtype", "params_b"}``;
        ``first_token_seconds`` is a `summarize` dict (image processing + prefill + one
        token), ``seconds_per_token`` the median per-pair step time (``None``, like the
        values derived from it, when the machine's noise made it zero or negative: raise
        ``decode_tokens``).

    """
    from cookbook import recipes

    photo = _photos(cfg)[0]
    d = cfg.decode_tokens

    def run(n: int) -> float:
        wall, _ = _timed(
            lambda: recipes.ask_image(
                engine,
                photo,
                cfg.question,
                max_tokens=n,
                min_tokens=n,
                temperature=cfg.temperature,
            )
        )
        return wall

    runs = interleave(cfg.overhead_reps, {"short": partial(run, 1), "long": partial(run, 1 + d)})
    steps = [(lng - sht) / d for lng, sht in zip(runs["long"], runs["short"], strict=True)]
    median_step = median(steps)
    # A step time that noise made zero or negative is no measurement.
    per_token = median_step if median_step > 0 else None
    dtype = str(engine.engine_args.get("dtype", engine.spec.dtype))
    params_b = engine.spec.params_b
    per_tok_bytes = decode_bytes_per_token(params_b, dtype) if params_b else None
    return {
        "first_token_seconds": summarize(runs["short"]),
        "decode_tokens": d,
        "seconds_per_token": per_token,
        "seconds_per_token_range": [min(steps), max(steps)],
        "tokens_per_s": (1.0 / per_token) if per_token else None,
        "bytes_per_token": per_tok_bytes,
        "implied_gb_per_s": (per_tok_bytes / per_token / 1e9)
        if per_tok_bytes and per_token
        else None,
        "dtype": dtype,
        "params_b": params_b,
    }


# --------------------------------------------------------------------------- bounds


@dataclass(frozen=True)
class Accelerator:
    """A device's nominal memory, for the decode bound.

    Attributes:
        name: product name, and which part of it the numbers describe.
        memory_gb: device memory of that part, GB.
        bandwidth_gb_s: nominal memory bandwidth of that part, GB/s (10^9 bytes/s).
        memory_type: e.g. ``"HBM"``.
        source: where the numbers come from.

    """

    name: str
    memory_gb: float
    bandwidth_gb_s: float
    memory_type: str
    source: str


#: Nominal specification numbers of the Ascend cards the cookbook documents. They are the
#: manufacturer's peak figures, not measurements; sustained bandwidth is lower.
NPU_CARDS: tuple[Accelerator, ...] = (
    Accelerator(
        name="Atlas 800I A2: one Ascend 910B NPU",
        memory_gb=64.0,
        bandwidth_gb_s=1600.0,
        memory_type="HBM2e",
        source=(
            "Huawei Atlas 800I A2 inference server specification "
            "(https://e.huawei.com/en/products/computing/ascend/atlas-800i-a2): 8 NPUs with "
            "64 GB HBM each; about 1.6 TB/s per NPU as quoted for the 910B"
        ),
    ),
    Accelerator(
        name="Atlas 300I Duo: one of its two chips",
        memory_gb=48.0,
        bandwidth_gb_s=204.0,
        memory_type="LPDDR4X",
        source=(
            "Huawei Atlas 300I Duo inference card specification "
            "(https://e.huawei.com/en/products/computing/ascend/atlas-300i-duo): 96 GB "
            "LPDDR4X (48 GB per chip), 408 GB/s total, i.e. 204 GB/s per chip"
        ),
    ),
)

_DTYPE_BYTES = {
    "bfloat16": 2,
    "float16": 2,
    "half": 2,
    "float32": 4,
    "float": 4,
    "auto": 2,
}


def decode_bytes_per_token(params_b: float, dtype: str = "bfloat16") -> float:
    """Return the weight bytes one decode step reads: ``params_b * 1e9 * bytes per value``.

    All parameters count, as a simple upper estimate: the vision encoder (about 0.3 B for
    InternViT-300M) and the rows of the input embedding that are not used are not read
    when decoding, so the true figure is a few percent lower.

    Raises:
        ValueError: ``params_b`` <= 0 or an unknown dtype.

    """
    if not params_b or params_b <= 0:
        raise ValueError(f"params_b must be positive, got {params_b!r}")
    if dtype not in _DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}; known: {sorted(_DTYPE_BYTES)}")
    return float(params_b) * 1e9 * _DTYPE_BYTES[dtype]


def decode_bound(
    params_b: float,
    bandwidth_gb_s: float,
    *,
    kv_bytes_per_token: float = 0.0,
    context_tokens: int = 0,
    batch: int = 1,
    dtype: str = "bfloat16",
) -> float:
    """Return the most output tokens/s memory bandwidth allows for a batch of sequences.

    One decode step reads every weight once (shared by the batch) and each sequence's KV
    cache: ``step_bytes = weights + batch * kv_bytes_per_token * context_tokens``. The
    step cannot be faster than ``step_bytes / bandwidth``, and yields ``batch`` tokens::

        bound = batch * bandwidth / step_bytes

    Args:
        params_b: parameters in billions (`cookbook.models.ModelSpec.params_b`).
        bandwidth_gb_s: memory bandwidth, GB/s.
        kv_bytes_per_token: KV-cache bytes of one token
            (`cookbook.models.kv_bytes_per_token`).
        context_tokens: tokens already in each sequence (prompt, image tokens included,
            plus the answer so far).
        batch: sequences decoded together.
        dtype: weight dtype (``"bfloat16"``: 2 bytes per parameter).

    Returns:
        Output tokens per second for the whole batch, an upper bound.

    Raises:
        ValueError: a non-positive bandwidth or batch, or a negative size.

    """
    if bandwidth_gb_s <= 0 or batch < 1 or context_tokens < 0 or kv_bytes_per_token < 0:
        raise ValueError(
            "bandwidth and batch must be positive, context and KV bytes non-negative; got "
            f"bandwidth={bandwidth_gb_s}, batch={batch}, context={context_tokens}, "
            f"kv={kv_bytes_per_token}"
        )
    step = decode_bytes_per_token(params_b, dtype) + batch * kv_bytes_per_token * context_tokens
    return batch * bandwidth_gb_s * 1e9 / step


def decode_bound_table(
    models: Sequence[str] = ("internvl2-8b", "internvl2.5-8b", "internvl3-8b"),
    cards: Sequence[Accelerator] = NPU_CARDS,
    *,
    context_tokens: Sequence[int] = (2048, 8192),
    batches: Sequence[int] = (1, 16),
) -> list[dict[str, Any]]:
    """Return the decode bound of each support-matrix model on each card, as table rows.

    Weights in bfloat16 (2 bytes a parameter, ``ModelSpec.params_b``) plus the KV cache of
    ``context_tokens`` tokens per sequence (`cookbook.models.kv_bytes_per_token`); 2048
    tokens is one image of 7 tiles and a short answer, 8192 the recommended
    ``max_model_len``.

    Returns:
        One dict per (model, card, context, batch): ``model``, ``card``,
        ``bandwidth_gb_s``, ``weights_gb``, ``fits`` (weights + KV cache within the card's
        memory), ``context_tokens``, ``batch``, ``kv_gb`` (KV cache read per step),
        ``tokens_per_s_bound`` and ``ms_per_token_bound`` (per sequence).

    """
    from cookbook.models import SUPPORT_MATRIX, kv_bytes_per_token

    rows = []
    for key in models:
        spec = SUPPORT_MATRIX[key]
        if spec.params_b is None:
            raise ValueError(f"{key} has no params_b in the support matrix")
        kv = kv_bytes_per_token(spec)
        weights = decode_bytes_per_token(spec.params_b)
        for card in cards:
            for ctx in context_tokens:
                for batch in batches:
                    bound = decode_bound(
                        spec.params_b,
                        card.bandwidth_gb_s,
                        kv_bytes_per_token=kv,
                        context_tokens=ctx,
                        batch=batch,
                    )
                    kv_total = kv * ctx * batch
                    rows.append(
                        {
                            "model": key,
                            "card": card.name,
                            "bandwidth_gb_s": card.bandwidth_gb_s,
                            "weights_gb": round(weights / 1e9, 2),
                            "fits": (weights + kv_total) / 1e9 <= card.memory_gb,
                            "context_tokens": ctx,
                            "batch": batch,
                            "kv_gb": round(kv_total / 1e9, 3),
                            "tokens_per_s_bound": round(bound, 1),
                            "ms_per_token_bound": round(1000 * batch / bound, 2),
                        }
                    )
    return rows


# --------------------------------------------------------------------------- payload


def downscaled_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Return the size `cookbook.images.to_data_url` gives an image for ``max_side``.

    The longer side becomes ``max_side`` and the other is scaled and rounded, at least 1
    pixel; an image that already fits keeps its size (``images._downscale``).

    Raises:
        ValueError: a size or ``max_side`` below 1.

    """
    if min(width, height, max_side) < 1:
        raise ValueError(f"sizes must be positive, got {width}x{height}, max_side={max_side}")
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


_GRID_KEYS = ("min_dynamic_patch", "max_dynamic_patch", "image_size", "dynamic_image_size")


def grid_preserving_max_side(width: int, height: int, **tiling: Any) -> int:
    """Return the smallest ``max_side`` that keeps an image's InternVL tile grid.

    InternVL resizes every image to its grid, ``cols * image_size`` by ``rows *
    image_size`` pixels, before cutting tiles (vLLM's ``dynamic_preprocess_internvl``),
    so pixels beyond that are thrown away on the server. Shrinking the image (aspect
    ratio kept) until both sides still cover the grid's size sends fewer bytes for the
    same tiles, the same thumbnail size and the same token count. The returned side is
    checked with `cookbook.tiling.tile_grid` on the size `downscaled_size` gives.

    Args:
        width: image width in pixels.
        height: image height in pixels.
        **tiling: tiling settings (`cookbook.tiling.TILING_KEYS`, e.g. ``engine.tiling``);
            the defaults are InternVL2/2.5/3-8B's.

    Returns:
        A value for ``to_data_url(..., max_side=...)`` or ``image_for_server``; the
        image's own longer side when it cannot shrink (it is already at or below its
        grid's size).

    Raises:
        TypeError, ValueError: from `cookbook.tiling.tile_grid` for bad sizes or settings.

    """
    from cookbook.tiling import tile_grid

    grid_kwargs = {k: tiling[k] for k in _GRID_KEYS if k in tiling}
    image_size = int(tiling.get("image_size", 448))
    grid = tile_grid(width, height, **grid_kwargs)
    need_w, need_h = grid[0] * image_size, grid[1] * image_size
    longest = max(width, height)
    scale = max(need_w / width, need_h / height)
    if scale >= 1:
        return longest
    # `downscaled_size` rounds the shorter side, which can give back half a pixel: search
    # upwards from the side at which both sides are half a pixel short.
    lower = max((need_w - 0.5) / width, (need_h - 0.5) / height) * longest
    side = max(1, math.floor(lower) - 1)
    while side < longest:
        w, h = downscaled_size(width, height, side)
        if w >= need_w and h >= need_h and tile_grid(w, h, **grid_kwargs) == grid:
            return side
        side += 1
    return longest


def _tiling_for(cfg: BenchConfig, engine: Any = None) -> dict[str, Any]:
    """Return the tiling settings in force: the engine's, else the model's config.json."""
    if engine is not None:
        return dict(engine.tiling)
    import json

    from cookbook.models import resolve_model
    from cookbook.tiling import tiling_from_config

    spec = resolve_model(cfg.model)
    config_file = Path(spec.path()) / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    override = {"max_dynamic_patch": cfg.max_dynamic_patch} if cfg.max_dynamic_patch else None
    return tiling_from_config(config, override)


def payload_photo(name: str = "motorcycle", size: tuple[int, int] = (4000, 3000)) -> Any:
    """Return a sample photo resized (LANCZOS) to ``size``: a stand-in for a camera photo.

    An upscaled photo has less fine detail than a real 12-megapixel one, so its PNG is
    smaller than a camera's would be; the bytes measured are a lower bound.
    """
    from PIL import Image

    from cookbook.images import sample_image

    return sample_image(name).resize(size, Image.Resampling.LANCZOS)


def bench_payload(cfg: BenchConfig, *, engine: Any = None, server: Any = None) -> dict[str, Any]:
    """Return bytes and build time of a large photo sent full size and grid-preserving.

    Three ways to send ``cfg.payload_image`` upscaled to ``cfg.payload_size``:
    ``full_png`` (``to_data_url(photo)``, the whole image as PNG), ``max_side_png``
    (``image_for_server(photo, max_side=S)`` with S from `grid_preserving_max_side`) and
    ``max_side_jpeg`` (the same size as JPEG). Each is built ``cfg.reps`` times,
    interleaved. Then each is sent once (``max_tokens=1``) to the server when one is
    given, else through the engine (``recipes.ask_image``), and the prompt tokens the
    model got are compared.

    Returns:
        ``{"photo", "max_side", "grid", "variants": {name: {"bytes", "size",
        "build_seconds", "grid", "planned_image_tokens", "prompt_tokens",
        "request_seconds"}}, "bytes_ratio", "build_ratio", "same_grid",
        "same_prompt_tokens", "verified_with"}``; ratios are full PNG over max-side PNG.

    Raises:
        ValueError: neither ``engine`` nor ``server`` is given.

    """
    from cookbook import images, recipes
    from cookbook.tiling import image_token_count, tile_grid

    if engine is None and server is None:
        raise ValueError("bench_payload needs an engine or a server to send the images to")
    tiling = _tiling_for(cfg, engine)
    grid_kwargs = {k: tiling[k] for k in _GRID_KEYS if k in tiling}
    token_kwargs = {k: v for k, v in tiling.items()}
    photo = payload_photo(cfg.payload_image, (cfg.payload_size[0], cfg.payload_size[1]))
    side = grid_preserving_max_side(photo.width, photo.height, **tiling)
    builders: dict[str, Callable[[], str]] = {
        "full_png": lambda: images.to_data_url(photo),
        "max_side_png": lambda: images.image_for_server(photo, max_side=side),
        "max_side_jpeg": lambda: images.to_data_url(photo, "JPEG", max_side=side),
    }
    urls: dict[str, str] = {}

    def build(name: str) -> float:
        wall, url = _timed(builders[name])
        urls[name] = url
        return wall

    runs = interleave(cfg.reps, {n: partial(build, n) for n in builders}, warmup=0)
    variants: dict[str, dict[str, Any]] = {}
    for name, url in urls.items():
        size = images.from_data_url(url).size
        variants[name] = {
            "bytes": len(url),
            "size": list(size),
            "build_seconds": summarize(runs[name]),
            "grid": list(tile_grid(size[0], size[1], **grid_kwargs)),
            "planned_image_tokens": image_token_count(size[0], size[1], **token_kwargs),
        }
    for name, url in urls.items():
        if server is not None:
            send = partial(server.chat, cfg.question, [url])
            wall, res = _timed(partial(send, max_tokens=1, temperature=cfg.temperature))
        else:
            ask = partial(recipes.ask_image, engine, url, cfg.question)
            wall, res = _timed(partial(ask, max_tokens=1, temperature=cfg.temperature))
        variants[name]["prompt_tokens"] = res.prompt_tokens
        variants[name]["request_seconds"] = round(wall, 4)
    full, small = variants["full_png"], variants["max_side_png"]
    return {
        "photo": {
            "sample": cfg.payload_image,
            "size": [photo.width, photo.height],
            "note": "a sample photo upscaled with LANCZOS; a camera photo's PNG is larger",
        },
        "max_side": side,
        "grid": full["grid"],
        "variants": variants,
        "bytes_ratio": ratio(full["bytes"], small["bytes"]),
        "build_ratio": ratio_summary(runs["full_png"], runs["max_side_png"]),
        "same_grid": len({tuple(v["grid"]) for v in variants.values()}) == 1,
        "same_prompt_tokens": len({v["prompt_tokens"] for v in variants.values()}) == 1,
        "verified_with": "server" if server is not None else "engine",
    }


# --------------------------------------------------------------------------- concurrency


def bench_concurrency(server: Any, cfg: BenchConfig) -> dict[str, Any]:
    """Return throughput and streaming latencies of K concurrent clients against one.

    For each K of ``cfg.concurrency``, K threads each send ``cfg.requests_per_client``
    streamed chat requests in a row (``server.stream_chat``, one image each, forced to
    the same answer length); ``cfg.reps`` rounds, the order of K rotating between
    rounds. The image data URLs are built once, before timing.

    Returns:
        ``{"levels": [{"k", "requests", "requests_per_s", "output_tokens_per_s",
        "latency_seconds", "ttft_seconds", "tpot_seconds", "throughput_ratio",
        "latencies", "ttfts"}, ...]}``: rates are medians over rounds, latencies
        `summarize` dicts over every request, ``throughput_ratio`` the `ratio_summary` of
        this K's requests/s over K=1's in the same round (when K=1 is measured);
        ``latencies`` and ``ttfts`` every value, for plots.

    Raises:
        cookbook.server.ServerError: a request failed.

    """
    from cookbook import images

    urls = [images.image_for_server(img) for img in _photos(cfg)]
    sampling = cfg.sampling()

    def one(i: int) -> Any:
        return server.stream_chat(
            cfg.question,
            [urls[i % len(urls)]],
            max_tokens=sampling["max_tokens"],
            temperature=sampling["temperature"],
            min_tokens=sampling["min_tokens"],
        )

    def round_for(k: int) -> dict[str, Any]:
        n = k * cfg.requests_per_client
        results: list[Any] = [None] * n
        errors: list[BaseException] = []
        lock = threading.Lock()
        next_index = [0]

        def worker() -> None:
            while True:
                with lock:
                    i = next_index[0]
                    next_index[0] += 1
                if i >= n:
                    return
                try:
                    results[i] = one(i)
                except BaseException as exc:  # re-raised in the calling thread
                    errors.append(exc)
                    return

        threads = [threading.Thread(target=worker, name=f"client-{j}") for j in range(k)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        if errors:
            raise errors[0]
        return {"seconds": wall, "results": results}

    runs = interleave(cfg.reps, {str(k): partial(round_for, k) for k in cfg.concurrency})
    base = runs.get("1")
    levels = []
    for k in cfg.concurrency:
        rounds = runs[str(k)]
        rps = [len(r["results"]) / r["seconds"] for r in rounds]
        tps = [sum(x.output_tokens or 0 for x in r["results"]) / r["seconds"] for r in rounds]
        every = [x for r in rounds for x in r["results"]]
        lat = [x.seconds for x in every]
        ttft = [x.ttft_seconds for x in every if x.ttft_seconds is not None]
        tpot = [x.tpot_seconds for x in every if x.tpot_seconds is not None]
        level: dict[str, Any] = {
            "k": k,
            "requests": len(rounds[0]["results"]),
            "requests_per_s": median(rps),
            "output_tokens_per_s": median(tps),
            "latency_seconds": summarize(lat),
            "ttft_seconds": summarize(ttft) if ttft else None,
            "tpot_seconds": summarize(tpot) if tpot else None,
            "prompt_tokens": sorted({x.prompt_tokens for x in every if x.prompt_tokens}),
            "latencies": [round(v, 5) for v in lat],
            "ttfts": [round(v, 5) for v in ttft],
        }
        if base is not None:
            base_rps = [len(r["results"]) / r["seconds"] for r in base]
            level["throughput_ratio"] = ratio_summary(rps, base_rps)
        levels.append(level)
    return {"levels": levels}


# --------------------------------------------------------------------------- report


def new_report(cfg: BenchConfig, *, command: str | None = None) -> dict[str, Any]:
    """Return an empty report: machine, versions and parameters, before any measurement."""
    from cookbook.records import stack_versions

    return {
        "bench_version": REPORT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": command,
        "machine": machine_info(),
        "versions": stack_versions(),
        "parameters": cfg.to_dict(),
        "engine": None,
        "server": None,
        "startup": {},
        "ratios": {},
    }


def _ratio_entry(summary: Mapping[str, float], meaning: str) -> dict[str, Any]:
    return {
        "value": round(float(summary["value"]), 4),
        "low": round(float(summary["low"]), 4),
        "high": round(float(summary["high"]), 4),
        "meaning": meaning,
    }


def finish_report(report: dict[str, Any]) -> dict[str, Any]:
    """Fill ``report["ratios"]`` from the measured sections and note the load; return it.

    Ratio names: ``overhead.single``, ``overhead.batch`` (cookbook over direct wall time;
    the target is at most 1.03), ``overhead.single.same_call`` and
    ``overhead.batch.same_call`` (recipe wall time over the generate time inside it),
    ``overhead.single.noise`` and ``overhead.batch.noise`` (the A/A control),
    ``batching.speedup.N`` (sequential over batched time),
    ``concurrency.throughput.K`` (requests/s with K clients over one), ``payload.bytes``
    and ``payload.build`` (full PNG over grid-preserving PNG). Each is ``{"value", "low",
    "high", "meaning"}``: median per-pair ratio and the per-pair range.
    """
    ratios: dict[str, Any] = {}
    over = report.get("overhead")
    if over:
        for mode in ("single", "batch"):
            if mode in over:
                n = over[mode]["requests"]
                ratios[f"overhead.{mode}"] = _ratio_entry(
                    over[mode]["ratio"],
                    f"recipe / direct LLM.generate wall time, {n} request(s), interleaved "
                    "A/B (target <= 1.03; noisy on a shared machine)",
                )
                ratios[f"overhead.{mode}.same_call"] = _ratio_entry(
                    over[mode]["same_call_ratio"],
                    f"recipe wall time / its own generate time, same call, {n} request(s)",
                )
                if "noise_ratio" in over[mode]:
                    ratios[f"overhead.{mode}.noise"] = _ratio_entry(
                        over[mode]["noise_ratio"],
                        f"direct / direct again, {n} request(s): the A/A noise floor",
                    )
    for size in (report.get("batching") or {}).get("sizes", []):
        ratios[f"batching.speedup.{size['n']}"] = _ratio_entry(
            size["speedup"], f"{size['n']} ask_image calls in a row / one ask_batch of {size['n']}"
        )
    for level in (report.get("concurrency") or {}).get("levels", []):
        if "throughput_ratio" in level and level["k"] != 1:
            ratios[f"concurrency.throughput.{level['k']}"] = _ratio_entry(
                level["throughput_ratio"], f"requests/s with {level['k']} clients / 1 client"
            )
    pay = report.get("payload")
    if pay:
        bytes_ratio = float(pay["bytes_ratio"])
        ratios["payload.bytes"] = {
            "value": round(bytes_ratio, 4),
            "low": round(bytes_ratio, 4),
            "high": round(bytes_ratio, 4),
            "meaning": f"bytes of the full-size PNG / PNG at max_side={pay['max_side']}",
        }
        ratios["payload.build"] = _ratio_entry(
            pay["build_ratio"], "seconds to build the full-size PNG URL / the max_side one"
        )
    report["ratios"] = ratios
    report.setdefault("machine", {})["load_average_end"] = (
        list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    )
    return report


def check_report(report: Mapping[str, Any]) -> list[str]:
    """Return what is wrong with a report's structure (an empty list when it is complete).

    Checks: the top-level keys; the machine (CPU count, CPU model, memory); the versions;
    a section for every benchmark named in ``parameters.only``; every ratio a finite
    positive number; both overhead paths did the same work; the payload variants got the
    same grid and the same prompt tokens. Never a timing threshold.
    """
    problems: list[str] = []
    for key in ("bench_version", "created", "machine", "versions", "parameters", "ratios"):
        if key not in report:
            problems.append(f"missing key {key!r}")
    if problems:
        return problems
    machine = report["machine"]
    if not isinstance(machine.get("cpu_count"), int) or machine["cpu_count"] < 1:
        problems.append(f"machine.cpu_count is {machine.get('cpu_count')!r}")
    if not machine.get("cpu_model"):
        problems.append("machine.cpu_model is empty")
    mem = machine.get("memory_gib")
    if mem is not None and not mem > 0:
        problems.append(f"machine.memory_gib is {mem!r}")
    if not isinstance(report["versions"], Mapping):
        problems.append("versions is not a mapping")
    only = list(report["parameters"].get("only") or [])
    unknown = [n for n in only if n not in BENCHMARKS]
    if unknown:
        problems.append(f"parameters.only names unknown benchmarks {unknown}")
    for name in only:
        if name == "startup":
            if not report.get("startup"):
                problems.append("no startup section")
            for part, rec in (report.get("startup") or {}).items():
                if not rec.get("seconds", 0) > 0:
                    problems.append(f"startup.{part}.seconds is {rec.get('seconds')!r}")
        elif name in BENCHMARKS and not report.get(name):
            problems.append(f"no {name} section although it was selected")
    ratios = report["ratios"]
    expected = []
    if "overhead" in only:
        expected += [
            f"overhead.{m}{s}" for m in ("single", "batch") for s in ("", ".same_call", ".noise")
        ]
    if "batching" in only:
        sizes = report["parameters"].get("batch_sizes") or []
        expected += [f"batching.speedup.{n}" for n in sizes]
    if "payload" in only:
        expected += ["payload.bytes", "payload.build"]
    if "concurrency" in only:
        ks = report["parameters"].get("concurrency") or []
        if 1 in ks:
            expected += [f"concurrency.throughput.{k}" for k in ks if k != 1]
    for name in expected:
        if name not in ratios:
            problems.append(f"ratio {name} is missing")
    for name, entry in ratios.items():
        for field_name in ("value", "low", "high"):
            value = entry.get(field_name) if isinstance(entry, Mapping) else None
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                problems.append(f"ratio {name}.{field_name} is {value!r}, not a positive number")
    over = report.get("overhead") or {}
    for mode in ("single", "batch"):
        if mode in over and not over[mode].get("same_work"):
            problems.append(f"overhead.{mode}: the two paths did not produce the same tokens")
    pay = report.get("payload") or {}
    if pay:
        if not pay.get("same_grid"):
            problems.append("payload: the variants did not keep the same tile grid")
        if not pay.get("same_prompt_tokens"):
            problems.append("payload: the variants did not give the same prompt tokens")
    return problems


def _fmt_ratio(entry: Mapping[str, Any]) -> str:
    return f"{entry['value']:.3f} ({entry['low']:.3f}-{entry['high']:.3f})"


def ratio_table(report: Mapping[str, Any]) -> str:
    """Return the report's ratios and checks as a plain-text table for a terminal.

    Columns: the ratio's name, its median per-pair value with the per-pair range in
    brackets, and what it compares. Start-up times and the decode speed follow.
    """
    rows = [("ratio", "median (range)", "meaning")]
    for name, entry in report.get("ratios", {}).items():
        rows.append((name, _fmt_ratio(entry), str(entry.get("meaning", ""))))
    over = report.get("overhead") or {}
    for mode in ("single", "batch"):
        if mode in over:
            share = over[mode]["own_share"]
            own_ms = over[mode]["cookbook_own_seconds"]["median"] * 1000
            rows.append(
                (
                    f"overhead.{mode}.own",
                    f"{share * 100:.2f}%",
                    f"cookbook's own time {own_ms:.1f} ms (validation, prompt, tiling plan)",
                )
            )
    dec = report.get("decode") or {}
    if dec.get("tokens_per_s"):
        rows.append(
            (
                "decode",
                f"{dec['tokens_per_s']:.1f} tok/s",
                f"one request, {dec['seconds_per_token'] * 1000:.1f} ms per token",
            )
        )
    for part, rec in (report.get("startup") or {}).items():
        rep = rec.get("reported") or {}
        detail = ", ".join(f"{k} {v:g}" for k, v in rep.items() if k.endswith("seconds"))
        rows.append((f"startup.{part}", f"{rec['seconds']:.1f} s", detail or "-"))
    pay = report.get("payload") or {}
    if pay:
        v = pay["variants"]
        rows.append(
            (
                "payload.check",
                "same" if pay["same_prompt_tokens"] and pay["same_grid"] else "DIFFERENT",
                f"grid {pay['grid']}, prompt tokens "
                f"{sorted({x['prompt_tokens'] for x in v.values()})} via {pay['verified_with']}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]}" for r in rows]
    lines.insert(1, "-" * min(100, max(len(line) for line in lines)))
    return "\n".join(lines)


# --------------------------------------------------------------------------- plots


def plot_latency_distribution(report: Mapping[str, Any], ax: Any = None) -> Any:
    """Return a matplotlib figure of request latencies: single requests and per client count.

    Box plots of every ``ask_image`` latency of the batching run and, when the serving
    run happened, every streamed request's latency at each K.

    Raises:
        ValueError: the report has neither section.

    """
    import matplotlib.pyplot as plt

    data, labels = [], []
    singles = (report.get("batching") or {}).get("single_request_seconds") or []
    if singles:
        data.append(singles)
        labels.append("engine\nask_image")
    for level in (report.get("concurrency") or {}).get("levels", []):
        data.append(level["latencies"])
        labels.append(f"server\nK={level['k']}")
    if not data:
        raise ValueError("the report has no latencies (run batching or concurrency)")
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(data) + 2), 3.5))
    else:
        fig = ax.figure
    ax.boxplot(data, showmeans=True)
    ax.set_ylim(bottom=0)
    ax.set_xticks(range(1, len(labels) + 1), labels)
    ax.set_ylabel("seconds per request")
    ax.set_title("Request latency")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_throughput(report: Mapping[str, Any]) -> Any:
    """Return a matplotlib figure: requests/s against batch size and against client count.

    Raises:
        ValueError: the report has neither a batching nor a concurrency section.

    """
    import matplotlib.pyplot as plt

    sizes = (report.get("batching") or {}).get("sizes") or []
    levels = (report.get("concurrency") or {}).get("levels") or []
    panels = [p for p in (sizes, levels) if p]
    if not panels:
        raise ValueError("the report has no throughput (run batching or concurrency)")
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 3.5), squeeze=False)
    col = 0
    if sizes:
        ax = axes[0][col]
        ns = [s["n"] for s in sizes]
        ax.plot(ns, [s["batched_requests_per_s"] for s in sizes], "o-", label="one ask_batch")
        ax.plot(ns, [s["sequential_requests_per_s"] for s in sizes], "s--", label="ask_image x N")
        ax.set_xlabel("requests N")
        ax.set_ylabel("requests/s")
        ax.set_title("Engine: batching")
        ax.set_xticks(ns)
        ax.set_ylim(bottom=0)
        ax.legend()
        ax.grid(alpha=0.3)
        col += 1
    if levels:
        ax = axes[0][col]
        ks = [lv["k"] for lv in levels]
        ax.plot(ks, [lv["requests_per_s"] for lv in levels], "o-", label="requests/s")
        ax.set_xlabel("concurrent clients K")
        ax.set_ylabel("requests/s")
        ax.set_xticks(ks)
        ax.set_ylim(bottom=0)
        ax.set_title("Server: concurrency")
        ax2 = ax.twinx()
        ax2.plot(ks, [lv["output_tokens_per_s"] for lv in levels], "s--", color="tab:orange")
        ax2.set_ylabel("output tokens/s", color="tab:orange")
        ax2.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- run


def run_benchmarks(
    cfg: BenchConfig,
    *,
    log: Callable[[str], None] = print,
    command: str | None = None,
) -> dict[str, Any]:
    """Run the selected benchmarks and return the report (`new_report`, `finish_report`).

    At most one engine or one server runs at a time: first the engine (start-up,
    overhead, batching, decode, and payload when no server runs), shut down, then the
    server (start-up, concurrency, payload), stopped. Both are stopped on errors too.

    Args:
        cfg: what to run (`BenchConfig`).
        log: called with a line of progress per step.
        command: the command line that started the run, recorded in the report.

    Raises:
        ValueError: bad settings (`BenchConfig.validate`), before anything starts.

    """
    cfg.validate()
    from cookbook.engine import quiet_vllm_logs

    quiet_vllm_logs("WARNING")
    import vllm  # noqa: F401  (import now, so this process keeps the quiet level)

    report = new_report(cfg, command=command)
    t_start = time.perf_counter()
    only = set(cfg.only)
    server_phase = bool(only & {"concurrency", "startup"})
    engine_phase = bool(only & {"overhead", "batching", "decode", "startup"}) or (
        "payload" in only and not server_phase
    )
    if engine_phase:
        log(f"[bench] starting the engine ({cfg.model}, device {cfg.device}) ...")
        engine, startup = start_engine(cfg)
        try:
            log(f"[bench] engine ready in {startup['seconds']:.1f} s; log: {startup['log_path']}")
            if "startup" in only:
                report["startup"]["engine"] = startup
            report["engine"] = engine.summary()
            steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
                ("overhead", lambda: bench_overhead(engine, cfg)),
                ("batching", lambda: bench_batching(engine, cfg)),
                ("decode", lambda: bench_decode(engine, cfg)),
            ]
            if not server_phase:
                steps.append(("payload", lambda: bench_payload(cfg, engine=engine)))
            for name, fn in steps:
                if name in only:
                    wall, report[name] = _timed(fn)
                    log(f"[bench] {name} done in {wall:.1f} s")
        finally:
            engine.shutdown()
    if server_phase:
        log("[bench] starting the server ...")
        server, startup = start_server(cfg)
        try:
            log(f"[bench] server ready in {startup['seconds']:.1f} s; log: {startup['log_path']}")
            if "startup" in only:
                report["startup"]["server"] = startup
            report["server"] = {"command": startup["command"], "base_url": server.base_url}
            for name, fn in (
                ("concurrency", lambda: bench_concurrency(server, cfg)),
                ("payload", lambda: bench_payload(cfg, server=server)),
            ):
                if name in only:
                    wall, report[name] = _timed(fn)
                    log(f"[bench] {name} done in {wall:.1f} s")
        finally:
            server.stop()
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    return finish_report(report)


def parse_only(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """Return benchmark names from ``"overhead,batching"`` (all of `BENCHMARKS` for None).

    Raises:
        ValueError: an unknown name (the message lists the known ones).

    """
    if text is None:
        return BENCHMARKS
    parts = text.split(",") if isinstance(text, str) else [p for t in text for p in t.split(",")]
    names = tuple(dict.fromkeys(p.strip() for p in parts if p.strip()))
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown or not names:
        raise ValueError(
            f"unknown benchmark(s) {unknown or '(none given)'}; choose from {', '.join(BENCHMARKS)}"
        )
    return tuple(n for n in BENCHMARKS if n in names)


# --------------------------------------------------------------------------- command line


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError as exc:
        raise ValueError(
            f"expected comma-separated integers such as '1,4,8', got {text!r}"
        ) from exc
    return values


def add_arguments(ap: Any) -> None:
    """Add ``python -m cookbook bench`` options to an ``argparse`` parser."""
    ap.add_argument("--quick", action="store_true", help="the short preset (a few minutes)")
    ap.add_argument("--out", default="build/bench/bench.json", help="where the JSON report goes")
    ap.add_argument(
        "--only",
        default=None,
        help=f"comma-separated benchmarks to run (default all: {','.join(BENCHMARKS)})",
    )
    ap.add_argument("--model", default="tiny", help="model key, hub id or path")
    ap.add_argument("--device", default="auto", help="auto, npu, cuda or cpu")
    ap.add_argument("--reps", type=int, default=None, help="kept rounds of each comparison")
    ap.add_argument("--max-tokens", type=int, default=None, help="tokens per answer")
    ap.add_argument("--batch-sizes", default=None, help="values of N, e.g. 1,4,8,16")
    ap.add_argument("--concurrency", default=None, help="values of K, e.g. 1,2,4")
    ap.add_argument("--max-model-len", type=int, default=None, help="context length")
    ap.add_argument("--max-dynamic-patch", type=int, default=None, help="most tiles per image")
    ap.add_argument(
        "--warm-caches",
        action="store_true",
        help="keep vLLM's prefix and multimodal caches on (off by default)",
    )


def config_from_args(args: Any) -> BenchConfig:
    """Return the `BenchConfig` that parsed command-line arguments describe (validated).

    Raises:
        ValueError: a bad value (an unknown benchmark, a list that is not integers, ...).

    """
    changes: dict[str, Any] = {
        "model": args.model,
        "device": args.device,
        "only": parse_only(args.only),
        "warm_caches": bool(args.warm_caches),
    }
    if args.reps is not None:
        changes["reps"] = args.reps
        changes["overhead_reps"] = 3 * args.reps
    if args.max_tokens is not None:
        changes["max_tokens"] = args.max_tokens
    if args.batch_sizes:
        changes["batch_sizes"] = _int_list(args.batch_sizes)
    if args.concurrency:
        changes["concurrency"] = _int_list(args.concurrency)
    if args.max_model_len is not None:
        changes["max_model_len"] = args.max_model_len
    if args.max_dynamic_patch is not None:
        changes["max_dynamic_patch"] = args.max_dynamic_patch
    return BenchConfig.preset(args.quick, **changes).validate()


def run_from_args(args: Any) -> int:
    """Run ``python -m cookbook bench``: measure, write the JSON, print the ratio table.

    Returns:
        0, or 1 when `check_report` finds the report incomplete (printed), or 2 for bad
        arguments.

    """
    import json
    import shlex
    import sys

    try:
        cfg = config_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    command = "python -m cookbook " + shlex.join(sys.argv[1:]) if "bench" in sys.argv else None
    report = run_benchmarks(cfg, command=command, log=lambda s: print(s, flush=True))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print()
    print(ratio_table(report))
    print(f"\nreport: {out} ({report['seconds']:.0f} s)")
    problems = check_report(report)
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    return 1 if problems else 0
