#!/usr/bin/env bash
# Everything pi-render needs on a fresh Debian machine: system packages, then a virtualenv in .venv.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# postgresql: the farm's database (farm mode; the tests start their own server from it)
APT_PACKAGES=(python3 python3-venv python3-dev curl sqlite3 blender ffmpeg systemd bubblewrap acl
              postgresql)
# chromium: only for the dashboard's browser tests (Playwright drives Debian's; it cannot
# download one); fuse3: the power-cut harness (tests/lazyfs.py); scripts/test.sh asks for them
if [ "${PI_RENDER_SETUP_TESTS:-0}" = 1 ]; then APT_PACKAGES+=(chromium fuse3); fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test,bench,farm,web]"
echo "setup: ready ($(.venv/bin/pi-render version))"
