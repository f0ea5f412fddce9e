#!/usr/bin/env bash
# Set everything up, start the daemon on its built-in defaults, render a sample scene through it,
# show where the frames are, and stop the daemon.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

pi-render serve &
daemon=$!
trap 'kill -TERM $daemon 2>/dev/null; wait $daemon 2>/dev/null || true' EXIT
for _ in $(seq 150); do
  pi-render health --json >/dev/null 2>&1 && break
  kill -0 $daemon 2>/dev/null || { echo "the daemon did not start"; exit 1; }
  sleep 0.1
done
pi-render health

sample="$(mktemp -d)/sample.blend"
echo "== making a sample scene with Blender: $sample"
pi-render sample "$sample" --frames 5
pi-render inspect "$sample"
echo "== rendering it through the daemon"
pi-render render "$sample" --wait
pi-render list --limit 5
