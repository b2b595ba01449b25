#!/usr/bin/env bash
# Installs everything and runs the main job on a bundled example: compile a transformer
# encoder block to a Vitis project, run it in emulation, compare with TVM's llvm build.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh" test
exec "$root/.venv/bin/tvm-spatial" demo encoder_block -o "${1:-$root/out/encoder_block}" --force
