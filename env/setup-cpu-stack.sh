#!/usr/bin/env bash
# Build (or reuse) the CPU stack and print its venv path on stdout.
# Usage: bash env/setup-cpu-stack.sh            (profile from $COOKBOOK_STACK_PROFILE, default "paired")
#        bash env/setup-cpu-stack.sh --profile latest
# The pins live in pyproject.toml ([tool.cookbook.stack.*]); see env/setup_cpu_stack.py.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${COOKBOOK_BOOTSTRAP_PYTHON:-python3}"
if ! command -v "$py" >/dev/null 2>&1; then
  echo "[cpu-stack] ERROR: $py not found; install Python 3.11+ (or set COOKBOOK_BOOTSTRAP_PYTHON)" >&2
  exit 1
fi
exec "$py" "$here/setup_cpu_stack.py" "$@"
