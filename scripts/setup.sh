#!/usr/bin/env bash
# Installs everything tvm-spatial needs on a Debian machine, idempotently:
# system packages (C++ compiler, make, XRT headers/libraries) when missing, and a
# virtual environment in .venv with the package and its pinned dependencies.
# Usage: scripts/setup.sh [extra]   (extra: test, export, or "test,export")
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extra="${1:-test}"

need=()
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
[ -f /usr/include/xrt/xrt_kernel.h ] || need+=(libxrt-dev)
[ -f /usr/include/uuid/uuid.h ] || need+=(uuid-dev)
if [ ${#need[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    echo "setup: installing system packages: ${need[*]}"
    $sudo_cmd apt-get update -qq
    # libxrt-dev is optional (XRT host builds); the rest is required
    $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null \
      || $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ make >/dev/null
  else
    echo "setup: please install: ${need[*]} (no apt-get on this machine)" >&2
  fi
fi
command -v g++ >/dev/null 2>&1 || { echo "setup: a C++ compiler (g++) is required" >&2; exit 1; }

python="${PYTHON:-python3}"
if [ ! -x "$root/.venv/bin/python" ]; then
  "$python" -m venv "$root/.venv"
fi
"$root/.venv/bin/python" -m pip install -q --upgrade pip
"$root/.venv/bin/python" -m pip install -q -e "$root[$extra]"
