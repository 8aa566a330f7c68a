#!/usr/bin/env bash
# Install the headless browser of the browser tests: Debian's Chromium at /usr/bin/chromium,
# plus fonts, so that screenshots show text (InternVL's chat template has Chinese text).
# Idempotent: returns at once when Chromium and the fonts are already there.
# Usage: bash env/install-browser.sh        (needs apt-get, and root or sudo)
# The tests drive Chromium with the Python `playwright` package (executable_path); they do
# not use `playwright install`, which downloads browser builds of its own.
set -euo pipefail
browser="${COOKBOOK_CHROMIUM:-/usr/bin/chromium}"
have_fonts() {
  command -v fc-list >/dev/null 2>&1 && [ -n "$(fc-list :lang=zh family 2>/dev/null)" ]
}
if [ -x "$browser" ] && "$browser" --version >/dev/null 2>&1 && have_fonts; then
  echo "[browser] $("$browser" --version 2>/dev/null) at $browser"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "[browser] ERROR: no Chromium (or no CJK font) and no apt-get to install them;" \
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
echo "[browser] installing Debian's chromium and fonts with apt-get"
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
  --no-install-recommends chromium fonts-dejavu-core fonts-wqy-zenhei fontconfig
if ! /usr/bin/chromium --version >/dev/null 2>&1; then
  echo "[browser] ERROR: apt-get finished but /usr/bin/chromium does not run" >&2
  exit 1
fi
echo "[browser] $(/usr/bin/chromium --version 2>/dev/null) at /usr/bin/chromium"
