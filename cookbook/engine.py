"""Device detection and vLLM engine construction: one `Engine` per notebook.

The same call builds the engine on an Ascend NPU (vllm-ascend), a CUDA GPU or the CPU;
only the device settings differ, and they are printed so a reader can see them.
torch and vllm are imported inside the functions that need them.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cookbook.models import ModelSpec, engine_args, resolve_model

DEVICES = ("npu", "cuda", "cpu")

#: Environment defaults for an Ascend NPU, set only where the user has not set them.
#: Source: the vllm-ascend InternVL tutorial (the seed of this cookbook) and vllm-ascend CI.
NPU_ENV_DEFAULTS = {
    # Keeps the caching allocator from splitting blocks above 256 MB, which reduces
    # fragmentation on 64 GB cards (vllm-ascend single-NPU tutorials).
    "PYTORCH_NPU_ALLOC_CONF": "max_split_size_mb:256",
    # vLLM's worker processes must be spawned (not forked) once torch-npu is initialised.
    "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
}

#: KV cache reserved on the CPU backend (bytes). The tiny checkpoint needs about 2 kB a
#: token (2 layers x 2 KV heads x 64 dims x 2 (K and V) x 4 bytes), so 512 MiB holds
#: about 260k tokens. Without an explicit size vLLM reserves `gpu_memory_utilization`
#: (default 0.92) of host memory, which fails on a shared machine (vllm/v1/worker/cpu_worker.py).
CPU_KV_CACHE_BYTES = 512 * 1024**2


def quiet_vllm_logs(level: str = "ERROR") -> None:
    """Keep vLLM's log lines out of notebook cells and test logs.

    Sets ``VLLM_LOGGING_LEVEL`` (read by vLLM at import, inherited by its engine-core
    process) unless the user set it, and quiets torch's warning that no CUDA runtime was
    found (printed when vLLM's CPU build imports torch's C++ extension loader). Call
    before the first ``import vllm``. What the engine's own processes print goes to the
    engine's log file instead (`create_engine`'s ``log_path``).
    """
    os.environ.setdefault("VLLM_LOGGING_LEVEL", level)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


@contextmanager
def output_to_file(path: str | Path) -> Iterator[None]:
    """Send this process's stdout/stderr file descriptors to ``path`` for a while.

    Processes started inside the block (vLLM's engine core and workers) inherit the file,
    so their log lines, progress bars and exit-time noise land there for their whole
    life instead of in a notebook cell or a terminal. Python-level ``print`` in a Jupyter
    kernel is unaffected (it does not go through file descriptor 1).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with open(path, "ab") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def default_log_path() -> Path:
    """Return a new log file path for an engine: ``$COOKBOOK_LOG_DIR`` or the temp folder."""
    folder = Path(os.environ.get("COOKBOOK_LOG_DIR", tempfile.gettempdir()))
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"vllm-engine-{os.getpid()}-{time.strftime('%Y%m%d-%H%M%S')}.log"


def detect_device(requested: str = "auto") -> str:
    """Return the device vLLM will run on: ``"npu"``, ``"cuda"`` or ``"cpu"``.

    Args:
        requested: ``"auto"`` to detect, or one of ``DEVICES`` to insist on it. The
            environment variable ``COOKBOOK_DEVICE`` overrides ``"auto"``.

    Detection order: an Ascend NPU through torch-npu (``torch.npu.is_available()``), then
    vLLM's own platform (``vllm.platforms.current_platform.device_type``), then torch's CUDA
    check, else the CPU.

    Raises:
        ValueError: ``requested`` is not ``"auto"`` or one of ``DEVICES``.
        RuntimeError: a device was requested explicitly but is not available here.
    """
    requested = (requested or "auto").lower()
    if requested == "auto":
        requested = os.environ.get("COOKBOOK_DEVICE", "auto").lower()
    if requested not in ("auto", *DEVICES):
        raise ValueError(f"device must be 'auto' or one of {DEVICES}, got {requested!r}")
    found = _find_device()
    if requested != "auto" and requested != found:
        raise RuntimeError(
            f"device {requested!r} was requested but this machine runs vLLM on {found!r}. "
            "Use device='auto', or run where that device and its vLLM build are installed "
            "(for an NPU: the vllm-ascend container, see env/npu/README.md)."
        )
    return found


def _find_device() -> str:
    if importlib.util.find_spec("torch_npu") is not None:
        import torch
        import torch_npu  # noqa: F401  (registers torch.npu)

        if torch.npu.is_available():  # type: ignore[attr-defined]
            return "npu"
    if importlib.util.find_spec("vllm") is not None:
        quiet_vllm_logs()
        from vllm.platforms import current_platform

        kind = str(current_platform.device_type)
        if kind in DEVICES:
            return kind
    if importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            return "cuda"
    return "cpu"


def device_settings(device: str, spec: ModelSpec) -> tuple[dict[str, Any], dict[str, str]]:
    """Return the engine keyword arguments and environment defaults for a device.

    Args:
        device: one of ``DEVICES``.
        spec: the model being loaded (its dtype may be changed on the CPU).

    Returns:
        ``(engine_kwargs, env_defaults)``. ``env_defaults`` are applied with
        ``os.environ.setdefault`` by `create_engine`, so a user's own setting wins.

    On the CPU: eager mode (CUDA-graph capture and torch.compile only cost start-up time
    there) and an explicit KV-cache size (`CPU_KV_CACHE_BYTES`). On the NPU: eager mode,
    since InternVL models have failed graph capture on vllm-ascend (vllm-project/vllm-ascend
    issue 1276), and the allocator setting of the vllm-ascend tutorials. On CUDA: vLLM's
    defaults.
    """
    if device == "cpu":
        return {"enforce_eager": True, "kv_cache_memory_bytes": CPU_KV_CACHE_BYTES}, {}
    if device == "npu":
        return {"enforce_eager": True}, dict(NPU_ENV_DEFAULTS)
    if device == "cuda":
        return {}, {}
    raise ValueError(f"unknown device {device!r}; expected one of {DEVICES}")


#: Items per modality vLLM allows in one prompt when ``limit_mm_per_prompt`` does not name
#: the modality (``MultiModalConfig.get_limit_per_prompt`` and ``BaseDummyOptions.count``
#: in vllm/config/multimodal.py, vLLM 0.23.0).
VLLM_DEFAULT_MM_LIMIT = 999


def limit_images_of(limit_mm_per_prompt: Mapping[str, Any] | None) -> int:
    """Return the image limit a ``limit_mm_per_prompt`` value gives vLLM.

    Args:
        limit_mm_per_prompt: ``None``, ``{"image": N}`` or vLLM's dict form
            ``{"image": {"count": N, "width": ..., "height": ...}}`` (other modalities
            are ignored).

    Returns:
        ``N``, or `VLLM_DEFAULT_MM_LIMIT` when there is no image entry (or no count in it).

    Raises:
        TypeError: the value or its image entry has another shape.
    """
    if limit_mm_per_prompt is None:
        return VLLM_DEFAULT_MM_LIMIT
    if not isinstance(limit_mm_per_prompt, Mapping):
        raise TypeError(
            f"limit_mm_per_prompt must be a dict such as {{'image': 4}}, got "
            f"{limit_mm_per_prompt!r}"
        )
    entry = limit_mm_per_prompt.get("image")
    if isinstance(entry, Mapping):
        entry = entry.get("count")
    if entry is None:
        return VLLM_DEFAULT_MM_LIMIT
    if isinstance(entry, bool) or not isinstance(entry, int):
        raise TypeError(
            f"limit_mm_per_prompt['image'] must be an int or {{'count': int}}, got {entry!r}"
        )
    return entry


#: Tokens vLLM's InternVL processor puts in the prompt for each image: ``<img>``, one
#: ``<IMG_CONTEXT>`` per image token, ``</img>`` (vllm/model_executor/models/internvl.py).
IMAGE_TOKENS = ("<img>", "<IMG_CONTEXT>", "</img>")


def image_token_ids(tokenizer: Any) -> list[int]:
    """Return the ids of `IMAGE_TOKENS` in a tokenizer's vocabulary (missing ones left out)."""
    vocab = tokenizer.get_vocab()
    return [vocab[t] for t in IMAGE_TOKENS if t in vocab]


@dataclass
class Engine:
    """A vLLM engine with what the recipes need to know about its model.

    Attributes:
        llm: the ``vllm.LLM`` instance.
        spec: the model's entry in the support matrix (or one derived from its config).
        device: ``"npu"``, ``"cuda"`` or ``"cpu"``.
        engine_args: the keyword arguments ``vllm.LLM`` was built with.
        tokenizer: the model's Hugging Face tokenizer, as vLLM loaded it.
        hf_config: the model's Hugging Face config (InternVL's ``InternVLChatConfig``).
        stop_token_ids: stop token ids taken from the tokenizer (`cookbook.prompts`).
        tiling: InternVL tiling settings in force, from the config and
            ``mm_processor_kwargs`` (`cookbook.tiling.tiling_from_config`).
        startup_seconds: wall time of ``vllm.LLM(...)``, in seconds.
        image_token_ids: ids of ``<img>``, ``<IMG_CONTEXT>`` and ``</img>``.
        env: environment defaults the engine set (those the user had not set).
        log_path: the file vLLM's engine processes print to ("" when not redirected).
    """

    llm: Any
    spec: ModelSpec
    device: str
    engine_args: dict[str, Any]
    tokenizer: Any
    hf_config: Any
    stop_token_ids: list[int]
    tiling: dict[str, Any]
    startup_seconds: float
    image_token_ids: list[int] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    log_path: str = ""

    @property
    def max_model_len(self) -> int:
        """Return the context length the engine was built with, in tokens."""
        return int(self.llm.llm_engine.model_config.max_model_len)

    @property
    def limit_images(self) -> int:
        """Return the most images one prompt may carry (``limit_mm_per_prompt["image"]``).

        Reads both of vLLM's forms, ``{"image": N}`` and ``{"image": {"count": N, ...}}``;
        without an image entry vLLM's default applies (`VLLM_DEFAULT_MM_LIMIT`).
        """
        return limit_images_of(self.engine_args.get("limit_mm_per_prompt"))

    def summary(self) -> dict[str, Any]:
        """Return a JSON-ready description of the engine for results records."""
        args = {k: v for k, v in self.engine_args.items() if k != "model"}
        return {
            "model": self.spec.key,
            "model_id": str(self.engine_args["model"]),
            "llm_family": self.spec.llm_family,
            "device": self.device,
            "engine_args": args,
            "stop_token_ids": self.stop_token_ids,
            "tiling": self.tiling,
            "max_model_len": self.max_model_len,
            "startup_seconds": round(self.startup_seconds, 2),
            "log_path": self.log_path,
        }

    def shutdown(self) -> None:
        """Stop the engine's worker processes and free its memory (idempotent)."""
        llm, self.llm = self.llm, None
        if llm is None:
            return
        engine = getattr(llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        del llm
        import gc

        gc.collect()


def build_engine_args(
    spec: ModelSpec,
    device: str,
    *,
    max_model_len: int | None = None,
    limit_images: int | None = None,
    max_dynamic_patch: int | None = None,
    dtype: str | None = None,
    **overrides: Any,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Return ``(vllm.LLM kwargs, environment defaults)`` for a model on a device.

    Every setting goes through `cookbook.models.engine_args`, so the caller's
    ``limit_mm_per_prompt``, ``mm_processor_kwargs`` and ``hf_overrides`` are *merged*
    with the recommended ones (``limit_mm_per_prompt={"video": 1}`` keeps the image
    limit) and tiling settings of video-capable models (InternVL3) are moved to
    ``hf_overrides``, where vLLM 0.23 accepts them. The device's settings
    (`device_settings`) fill in what the caller did not give; a caller's value, ``None``
    included (vLLM's default), beats them.

    Args:
        spec: the model's spec.
        device: one of ``DEVICES``.
        max_model_len: context length in tokens; ``None`` keeps the recommendation.
        limit_images: ``limit_mm_per_prompt["image"]``; ``None`` keeps the recommendation.
        max_dynamic_patch: tiles per image before the thumbnail; ``None`` keeps it.
        dtype: vLLM dtype name; ``None`` keeps the recommendation.
        **overrides: any other ``vllm.LLM`` keyword argument, as `engine_args` takes it.

    Raises:
        ValueError: a size is not a positive integer, or `engine_args` refuses a value.
        TypeError: a dict setting (``limit_mm_per_prompt``, ...) is not a dict.
    """
    for name, value in (
        ("max_model_len", max_model_len),
        ("limit_images", limit_images),
        ("max_dynamic_patch", max_dynamic_patch),
    ):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    dev_kwargs, env = device_settings(device, spec)
    chosen: dict[str, Any] = dict(overrides)
    if max_model_len is not None:
        chosen["max_model_len"] = max_model_len
    if limit_images is not None:
        chosen["limit_images"] = limit_images
    if max_dynamic_patch is not None:
        chosen["max_dynamic_patch"] = max_dynamic_patch
    if dtype:
        chosen["dtype"] = dtype
    kwargs = engine_args(spec, **chosen)
    for key, value in dev_kwargs.items():
        if key not in overrides:
            kwargs.setdefault(key, value)
    return kwargs, env


def apply_env_defaults(env: dict[str, str]) -> dict[str, str]:
    """Set each variable the user has not set; return the ones this call set."""
    applied = {}
    for key, value in env.items():
        if key not in os.environ:
            os.environ[key] = value
            applied[key] = value
    return applied


def create_engine(
    model: str = "tiny",
    device: str = "auto",
    *,
    max_model_len: int | None = None,
    limit_images: int | None = None,
    max_dynamic_patch: int | None = None,
    dtype: str | None = None,
    log_path: str | Path | None = None,
    **overrides: Any,
) -> Engine:
    """Build a vLLM engine for an InternVL model on this machine's device.

    Args:
        model: a support-matrix key (``"internvl3-8b"``, ``"tiny"``, ...), a hub id, or a
            local checkpoint directory (`cookbook.models.resolve_model`).
        device: ``"auto"`` or one of ``DEVICES`` (`detect_device`).
        max_model_len: context length in tokens; ``None`` keeps the recommendation (8192
            for the 8B models, from the vllm-ascend support matrix).
        limit_images: ``limit_mm_per_prompt["image"]``, the most images a prompt may carry.
        max_dynamic_patch: most tiles per image before the thumbnail (InternVL default 12);
            passed as ``mm_processor_kwargs``, or as ``hf_overrides`` for video-capable
            models (`cookbook.models.engine_args`).
        dtype: ``"bfloat16"``, ``"float16"``, ``"float32"`` or ``None`` for the recommendation.
        log_path: file that receives what vLLM's engine processes print (default: a new
            file from `default_log_path`); ``""`` leaves their output where it is.
        **overrides: any other ``vllm.LLM`` keyword argument, through
            `cookbook.models.engine_args`: ``limit_mm_per_prompt``, ``mm_processor_kwargs``
            and ``hf_overrides`` are merged with the recommended dicts, other keys replace
            the recommended and device settings (`build_engine_args`).

    Returns:
        An `Engine`; its ``startup_seconds`` is the wall time of ``vllm.LLM(...)``.

    Raises:
        ValueError: unknown model name or a bad size, before anything is loaded.
        RuntimeError: the requested device is not available.
    """
    spec = resolve_model(model)
    dev = detect_device(device)
    kwargs, env = build_engine_args(
        spec,
        dev,
        max_model_len=max_model_len,
        limit_images=limit_images,
        max_dynamic_patch=max_dynamic_patch,
        dtype=dtype,
        **overrides,
    )
    applied = apply_env_defaults(env)
    quiet_vllm_logs()
    from vllm import LLM

    from cookbook.prompts import stop_token_ids
    from cookbook.tiling import tiling_from_config

    log = default_log_path() if log_path is None else (Path(log_path) if log_path else None)
    t0 = time.perf_counter()
    with output_to_file(log) if log else nullcontext():
        llm = LLM(**kwargs)
    startup = time.perf_counter() - t0
    tokenizer = llm.get_tokenizer()
    hf_config = llm.llm_engine.model_config.hf_config
    # hf_overrides are already in hf_config; mm_processor_kwargs are merged like vLLM does.
    tiling = tiling_from_config(hf_config, kwargs.get("mm_processor_kwargs"))
    return Engine(
        llm=llm,
        spec=spec,
        device=dev,
        engine_args=kwargs,
        tokenizer=tokenizer,
        hf_config=hf_config,
        stop_token_ids=stop_token_ids(tokenizer),
        tiling=tiling,
        startup_seconds=startup,
        image_token_ids=image_token_ids(tokenizer),
        env=applied,
        log_path=str(log) if log else "",
    )
