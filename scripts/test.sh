#!/usr/bin/env bash
# Installs everything and runs the test suite (this is what CI runs).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# the export extra (torch CPU, transformers, onnxruntime) lets the on-the-fly export tests
# run; without it those tests skip and the committed fixtures still cover the models
"$root/scripts/setup.sh" test,export || "$root/scripts/setup.sh" test
cd "$root"
# two worker processes (pytest-xdist), a test file each at a time, so a file's module
# fixtures are built once: most tests wait on one g++ or one Python thread, and CI has two
# cores. TVM_SPATIAL_TEST_WORKERS=0 runs in this process alone.
workers="${TVM_SPATIAL_TEST_WORKERS:-2}"
exec "$root/.venv/bin/python" -m pytest -q --durations=25 -n "$workers" --dist loadfile "$@"
