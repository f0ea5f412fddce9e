#!/usr/bin/env bash
# Set everything up, then run the whole test suite: flake8, mypy --strict, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PI_RENDER_SETUP_TESTS=1 bash scripts/setup.sh
echo "== flake8"
.venv/bin/flake8 pi_render tests bench
echo "== mypy --strict"
.venv/bin/mypy
echo "== pytest"
.venv/bin/python -m pytest "$@"
