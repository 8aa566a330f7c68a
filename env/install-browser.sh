#!/usr/bin/env bash
# Install the headless browser the browser tests drive: Debian's Chromium at /usr/bin/chromium.
# Idempotent: returns at once when Chromium is already there.
# Usage: bash env/install-browser.sh        (needs root or sudo, and apt)
# The tests drive it with the Python `playwright` package (executable_path=/usr/bin/chromium);
# `playwright install` is not used, because it downloads its own browser builds.
set -euo pipefail
browser="${COOKBOOK_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$browser" ] && "$browser" --version >/dev/null 2>&1; then
  echo "[browser] $("$browser" --version) at $browser"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "[browser] ERROR: no $browser and no apt-get; install Chromium and set COOKBOOK_CHROMIUM" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "[browser] ERROR: installing chromium needs root (or sudo)" >&2
    exit 1
  fi
fi
echo "[browser] installing Debian's chromium (apt-get)"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium
if [ ! -x /usr/bin/chromium ]; then
  echo "[browser] ERROR: apt-get finished but /usr/bin/chromium is missing" >&2
  exit 1
fi
echo "[browser] $(/usr/bin/chromium --version) at /usr/bin/chromium"
