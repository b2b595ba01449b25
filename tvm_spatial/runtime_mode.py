"""Choose where a built design's kernels run: emulation (default) or a card through XRT.

Why environment variables underneath: the kernel entry points live in C++ inside the
executable ``relax.build`` returned (or a library exported from it) and are called by
TVM's VM, which passes no options of ours. Like TVM's own runtime knobs
(``TVM_NUM_THREADS``), the mode is read from the environment at each call, so one
loaded executable can be switched, and a deployment can set it without code changes::

    with tvm_spatial.runtime_mode("xrt", xclbin="out/build_dir.hw/design.xclbin", device_index=0):
        vm["main"](*args)            # same VM, kernels now run on the card

or ``TVM_SPATIAL_RUNTIME=xrt TVM_SPATIAL_XCLBIN=... python app.py``. Everything that
can be missing (XRT, the xclbin, a matching interface, the device) is checked before a
kernel runs and reported as a :class:`~tvm_spatial.ToolchainError`.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from codegen_hls.emulation import RUNTIME_ENV, RUNTIME_MODES
from codegen_hls.xrt_runtime import DEVICE_INDEX_ENV, XCLBIN_ENV

from .errors import UsageError


@contextlib.contextmanager
def runtime_mode(mode: str, *, xclbin: str | os.PathLike | None = None, device_index: int = 0):
    """Run kernels in ``mode`` ("emulation" or "xrt") inside the ``with`` block."""
    if mode not in RUNTIME_MODES:
        raise UsageError(f"runtime mode {mode!r} is not one of {', '.join(RUNTIME_MODES)}")
    if mode == "xrt" and xclbin is None:
        raise UsageError("runtime_mode('xrt') needs xclbin=<path to the design's .xclbin>")
    if mode == "emulation" and xclbin is not None:
        raise UsageError("an xclbin is only used in runtime_mode('xrt')")
    if isinstance(device_index, bool) or not isinstance(device_index, int) or device_index < 0:
        raise UsageError(f"device_index must be a non-negative int, got {device_index!r}")
    wanted = {RUNTIME_ENV: mode, XCLBIN_ENV: str(Path(xclbin).resolve()) if xclbin else None,
              DEVICE_INDEX_ENV: str(device_index)}
    saved = {key: os.environ.get(key) for key in wanted}
    try:
        for key, value in wanted.items():
            _set(key, value)
        yield
    finally:
        for key, value in saved.items():
            _set(key, value)


def _set(key: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value
