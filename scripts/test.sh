#!/usr/bin/env bash
# Installs everything and runs the test suite (this is what CI runs).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# the export extra (torch CPU, transformers, onnxruntime) lets the on-the-fly export tests
# run; without it those tests skip and the committed fixtures still cover the models
"$root/scripts/setup.sh" test,export || "$root/scripts/setup.sh" test
cd "$root"
exec "$root/.venv/bin/python" -m pytest -q --durations=25 "$@"
