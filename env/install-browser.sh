#!/usr/bin/env bash
# Install the headless browser of the browser tests: Debian's Chromium, /usr/bin/chromium.
# Idempotent: returns at once when Chromium is already there.
# Usage: bash env/install-browser.sh        (needs apt-get, and root or sudo)
# The tests drive it with the Python `playwright` package (executable_path=/usr/bin/chromium);
# `playwright install` is not used: it downloads browser builds of its own.
set -euo pipefail
browser="${COOKBOOK_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$browser" ] && "$browser" --version >/dev/null 2>&1; then
  echo "[browser] $("$browser" --version 2>/dev/null) at $browser"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "[browser] ERROR: no Chromium at $browser and no apt-get to install it;" \
    "install Chromium and set COOKBOOK_CHROMIUM to its path" >&2
  exit 1
fi
as_root=()
if [ "$(id -u)" != "0" ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "[browser] ERROR: installing Chromium needs root (or sudo)" >&2
    exit 1
  fi
  as_root=(sudo)
fi
echo "[browser] installing Debian's chromium with apt-get"
"${as_root[@]}" apt-get update -qq
# fonts-dejavu-core: readable text in screenshots on a minimal image.
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core
if ! /usr/bin/chromium --version >/dev/null 2>&1; then
  echo "[browser] ERROR: apt-get finished but /usr/bin/chromium does not run" >&2
  exit 1
fi
echo "[browser] $(/usr/bin/chromium --version 2>/dev/null) at /usr/bin/chromium"
