#!/usr/bin/env bash
# Installs everything and runs the test suite (this is what CI runs).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh" test
cd "$root"
exec "$root/.venv/bin/python" -m pytest -q "$@"
