#!/usr/bin/env bash
# Set everything up, start the daemon on its built-in defaults, run a task through it, stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

pi-render serve &
daemon=$!
trap 'kill -TERM $daemon 2>/dev/null; wait $daemon 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  pi-render health --json >/dev/null 2>&1 && break
  kill -0 $daemon 2>/dev/null || { echo "the daemon did not start"; exit 1; }
  sleep 0.1
done
pi-render health
echo "== submitting a noop task and waiting for it"
pi-render submit noop --args '{"payload": {"hello": "pi-render"}, "sleep_s": 1}' --wait
pi-render list --limit 5
pi-render queues
