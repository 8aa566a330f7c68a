#!/usr/bin/env bash
# Check that this machine or container can run the cookbook on an Ascend NPU: the driver
# answers (npu-smi), torch_npu sees a device, and vLLM runs on the NPU platform through
# the vllm-ascend plugin. Prints one PASS/FAIL line per check, with the fix for each
# failure, then the versions of the stack (vllm, vllm_ascend, torch, torch_npu,
# transformers, CANN).
#
# Usage:
#   bash env/npu/check-npu.sh           (inside the container from env/npu/run-container.sh)
#   bash env/npu/check-npu.sh --json    (one JSON object on stdout instead)
#
# Environment:
#   PYTHON   the Python to check (default python3)
#
# Exit status: 0 all checks passed; 1 a check failed; 2 no NPU here (npu-smi not found);
# 64 bad usage.
set -euo pipefail

json=0
for arg in "$@"; do
  case "$arg" in
    --json) json=1 ;;
    -h | --help)
      sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
      exit 0
      ;;
    *)
      echo "check-npu.sh: unknown argument '$arg' (use --json or --help)" >&2
      exit 64
      ;;
  esac
done

python="${PYTHON:-python3}"

# CANN's environment (library paths, ASCEND_* variables). The vllm-ascend image also
# sources it from ~/.bashrc, but `bash script.sh` and CI steps do not read that file.
toolkit_env=/usr/local/Ascend/ascend-toolkit/set_env.sh
toolkit_env_loaded=0
if [[ -f "$toolkit_env" ]]; then
  set +u # set_env.sh reads variables that may be unset
  # shellcheck disable=SC1090
  . "$toolkit_env"
  set -u
  toolkit_env_loaded=1
fi

no_npu_message="npu-smi not found: this is not an Ascend NPU machine / container, or the \
container was started without the driver mounts. On an NPU host, start the container with \
env/npu/run-container.sh (it mounts /usr/local/bin/npu-smi and the driver); on a machine \
without an NPU use the CPU stack instead (bash env/setup-cpu-stack.sh)."

if ! command -v npu-smi >/dev/null 2>&1; then
  if ((json)); then
    printf '{"ok": false, "no_npu": true, "checks": [{"name": "npu-smi info", "status": "FAIL", "detail": "npu-smi not found on PATH", "fix": "%s"}], "versions": {}}\n' \
      "$no_npu_message"
  else
    echo "FAIL  npu-smi info: npu-smi not found on PATH"
    echo
    echo "$no_npu_message"
  fi
  exit 2
fi

npu_smi_rc=0
if command -v timeout >/dev/null 2>&1; then
  npu_smi_out="$(timeout 60 npu-smi info 2>&1)" || npu_smi_rc=$?
else
  npu_smi_out="$(npu-smi info 2>&1)" || npu_smi_rc=$?
fi
if ((!json)); then
  echo "== npu-smi info"
  printf '%s\n\n' "$npu_smi_out"
fi

if ! command -v "$python" >/dev/null 2>&1; then
  echo "check-npu.sh: $python not found; set PYTHON to the container's Python" >&2
  exit 1
fi

export CHECK_NPU_JSON="$json"
export CHECK_NPU_SMI_RC="$npu_smi_rc"
export CHECK_NPU_SMI_TAIL="${npu_smi_out: -400}"
export CHECK_NPU_TOOLKIT_ENV="$toolkit_env_loaded"
export CHECK_NPU_PYPROJECT="${CHECK_NPU_PYPROJECT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/pyproject.toml}"

exec "$python" - <<'PY'
"""The Python half of check-npu.sh: imports, device, platform, versions."""

import glob
import importlib.metadata as md
import json
import os
import sys

as_json = os.environ.get("CHECK_NPU_JSON") == "1"
if as_json:
    # Keep stdout for the JSON object alone: library logs (vLLM logs to stdout, CANN
    # prints from C) go to stderr until then.
    sys.stdout.flush()
    json_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

checks = []
versions = {}


def record(name, ok, detail, fix=""):
    checks.append(
        {"name": name, "status": "PASS" if ok else "FAIL", "detail": detail, "fix": "" if ok else fix}
    )


def warn(name, detail, fix=""):
    checks.append({"name": name, "status": "WARN", "detail": detail, "fix": fix})


def dist_version(*names):
    for name in names:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            continue
    return None


def error_text(exc):
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


smi_rc = int(os.environ.get("CHECK_NPU_SMI_RC", "1"))
smi_tail = os.environ.get("CHECK_NPU_SMI_TAIL", "").strip().splitlines()
record(
    "npu-smi info",
    smi_rc == 0,
    "the driver answered" if smi_rc == 0 else f"exit {smi_rc}: {smi_tail[-1] if smi_tail else ''}",
    "the NPU driver does not answer: check `npu-smi info` on the host, that the container got "
    "/dev/davinci_manager, /dev/devmm_svm, /dev/hisi_hdc and the driver mounts "
    "(env/npu/run-container.sh), and that no other process holds the card",
)

# CANN toolkit version, from the files its installer writes.
cann = None
roots = [os.environ.get("ASCEND_TOOLKIT_HOME", ""), "/usr/local/Ascend/ascend-toolkit/latest"]
candidates = []
for root in filter(None, roots):
    candidates += glob.glob(os.path.join(root, "*", "ascend_toolkit_install.info"))
    candidates += [os.path.join(root, "version.cfg")]
for path in candidates:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.strip().partition("=")
                if key.strip() in ("version", "Version", "toolkit_installed_version"):
                    cann = value.strip().strip('"[]').split(":")[-1] or None
                    break
    except OSError:
        continue
    if cann:
        break
versions["cann"] = cann
if os.environ.get("CHECK_NPU_TOOLKIT_ENV") != "1":
    warn(
        "CANN environment",
        "/usr/local/Ascend/ascend-toolkit/set_env.sh not found",
        "run inside the vllm-ascend image, or source your CANN set_env.sh before this script",
    )

# torch + torch_npu: the NPU device.
torch = None
try:
    import torch
    import torch_npu  # noqa: F401  (registers torch.npu)

    versions["torch"] = torch.__version__
    versions["torch_npu"] = dist_version("torch-npu", "torch_npu") or getattr(
        torch_npu, "__version__", None
    )
    record("torch_npu imports", True, f"torch {torch.__version__}, torch_npu {versions['torch_npu']}")
except Exception as exc:
    versions["torch"] = dist_version("torch")
    versions["torch_npu"] = dist_version("torch-npu")
    record(
        "torch_npu imports",
        False,
        error_text(exc),
        "use the vllm-ascend image (it ships torch and torch_npu built for its CANN); on a "
        "host install, match torch-npu to torch and CANN and source set_env.sh",
    )
    torch = None

if torch is not None:
    try:
        available = bool(torch.npu.is_available())
        count = int(torch.npu.device_count()) if available else 0
        error = ""
    except Exception as exc:
        available, count, error = False, 0, error_text(exc)
    record(
        "torch.npu.is_available()",
        available,
        error or str(available),
        "torch_npu sees no NPU: the container needs --device /dev/davinciN plus the control "
        "devices (env/npu/run-container.sh); ASCEND_RT_VISIBLE_DEVICES must name a visible card",
    )
    record(
        "NPU device count > 0",
        count > 0,
        f"{count} device(s)",
        "no NPU visible to this process: check --device in the docker command and "
        "ASCEND_RT_VISIBLE_DEVICES",
    )

# vLLM, with the vllm-ascend platform plugin.
try:
    import vllm

    versions["vllm"] = getattr(vllm, "__version__", None) or dist_version("vllm")
    record("vllm imports", True, f"vllm {versions['vllm']}")
    try:
        from vllm.platforms import current_platform

        device_type = current_platform.device_type
        record(
            "vLLM platform is NPU (vllm_ascend plugin loaded)",
            device_type == "npu",
            f"current_platform.device_type = {device_type!r}",
            "vLLM did not pick the Ascend platform: check that vllm-ascend is installed in this "
            "Python (pip show vllm-ascend), that VLLM_PLUGINS is unset or names it, and that "
            "torch_npu imports",
        )
    except Exception as exc:
        record(
            "vLLM platform is NPU (vllm_ascend plugin loaded)",
            False,
            error_text(exc),
            "vLLM failed to resolve its platform; run `python -c \"import vllm_ascend\"` to see why",
        )
except Exception as exc:
    versions["vllm"] = dist_version("vllm")
    record(
        "vllm imports",
        False,
        error_text(exc),
        "use the vllm-ascend image, which ships vLLM and vllm-ascend installed together",
    )

try:
    import vllm_ascend

    versions["vllm_ascend"] = dist_version("vllm-ascend", "vllm_ascend") or getattr(
        vllm_ascend, "__version__", None
    )
    record("vllm_ascend imports", True, f"vllm_ascend {versions['vllm_ascend']}")
except Exception as exc:
    versions["vllm_ascend"] = dist_version("vllm-ascend")
    record(
        "vllm_ascend imports",
        False,
        error_text(exc),
        "use the vllm-ascend image; a source install needs CANN and SOC_VERSION",
    )

versions["transformers"] = dist_version("transformers")
versions["python"] = sys.version.split()[0]

# Compare with the versions this cookbook was written against (a warning, not a failure:
# a newer image may work, and the notebooks will tell).
pyproject = os.environ.get("CHECK_NPU_PYPROJECT", "")
try:
    import tomllib

    with open(pyproject, "rb") as fh:
        pins = tomllib.load(fh)["tool"]["cookbook"]["stack"]["npu"]
except Exception:
    pins = {}
if pins:
    names = {
        "vllm": "vllm",
        "vllm-ascend": "vllm_ascend",
        "torch": "torch",
        "torch-npu": "torch_npu",
        "transformers": "transformers",
        "cann": "cann",
    }
    differ = []
    for pin_name, key in names.items():
        want, have = pins.get(pin_name), versions.get(key)
        if want and have and str(have).split("+")[0].lower() != str(want).lower():
            differ.append(f"{key} {have} (pinned {want})")
    if differ:
        warn(
            "versions match pyproject [tool.cookbook.stack.npu]",
            "; ".join(differ),
            f"the cookbook was tested with {pins.get('image', 'the pinned image')}",
        )

ok = all(c["status"] != "FAIL" for c in checks)
if as_json:
    sys.stdout.flush()
    print(json.dumps({"ok": ok, "no_npu": False, "checks": checks, "versions": versions}), file=json_out)
    json_out.flush()
else:
    for c in checks:
        print(f"{c['status']:<5} {c['name']}: {c['detail']}")
        if c["fix"]:
            print(f"      fix: {c['fix']}")
    print()
    print("versions: " + ", ".join(f"{k} {v if v else '-'}" for k, v in versions.items()))
    print("all checks passed" if ok else "some checks FAILED (see the fix lines above)")
sys.exit(0 if ok else 1)
PY
