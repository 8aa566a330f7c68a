#!/usr/bin/env bash
# Check the vllm-ascend container for the cookbook: `python -m cookbook check --device npu`
# (cookbook/envcheck.py) after loading CANN's environment. One PASS/WARN/FAIL line per
# check, each with its fix: the device and the Ascend chip read from `npu-smi info` (a
# 300I Duo / 310P or an A3 host needs another image), vLLM's NPU platform, the versions
# against pyproject.toml's [tool.cookbook.stack.npu], PYTORCH_NPU_ALLOC_CONF and the other
# variables, and with --model the model in the cache vLLM reads and its memory need.
#
# Usage:
#   bash env/npu/check-npu.sh [--model KEY] [--max-model-len N] [--json]
#   bash env/npu/check-npu.sh --model internvl3-8b     (inside env/npu/run-container.sh)
#
# Environment:
#   PYTHON   the Python to check (default python3)
#
# Exit status: 0 no check failed; 1 a check failed; 2 bad usage.
set -euo pipefail

for arg in "$@"; do
  case "$arg" in
    -h | --help)
      sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
      exit 0
      ;;
  esac
done

script_path="${BASH_SOURCE[0]}"
[[ "$script_path" == */* ]] || script_path="./$script_path"
repo_root="$(cd "${script_path%/*}/../.." && pwd)"
python="${PYTHON:-python3}"
command -v "$python" >/dev/null 2>&1 || {
  echo "check-npu.sh: $python not found; set PYTHON to the container's Python" >&2
  exit 2
}

# CANN's library paths and ASCEND_* variables. The image sources this from ~/.bashrc, but
# `bash script.sh` and CI steps without `bash -el` do not read that file.
toolkit_env=/usr/local/Ascend/ascend-toolkit/set_env.sh
if [[ -f "$toolkit_env" ]]; then
  set +u # set_env.sh reads variables that may be unset
  # shellcheck disable=SC1090
  . "$toolkit_env"
  set -u
fi

# The checkout on PYTHONPATH: the check runs whether or not the cookbook is installed.
export PYTHONPATH="$repo_root${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" -m cookbook check --device npu "$@"
