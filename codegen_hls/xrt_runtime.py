"""Running a design's kernels through XRT (instead of emulation), from Python.

Why through the generated host: XRT has no Python bindings (Debian's XRT 2.13, and the
official ones need a matching pybind build), and the generated ``host.cpp`` already does
the whole XRT flow — load the xclbin, check every kernel and argument name against it,
allocate each buffer in the bank ``group_id`` reports, sync, run, wait. So
:class:`XRTRunner` compiles that host (cached by content) for one kernel and runs it on a
private data directory. The same C++ serves the Vitis project and this runner.

Before anything touches XRT, :meth:`XRTRunner.check` says exactly what is missing, as a
:class:`~tvm_spatial.errors.ToolchainError`: the XRT library or headers, the xclbin file,
an xclbin that does not declare this design's kernels and arguments (read with
:func:`codegen_hls.xclbin.read_interface`), a metadata-only xclbin handed to real
hardware, or the device (no ``xocl`` device at that index; ``XCL_EMULATION_MODE=noop``
without the noop shim).

``relax.VirtualMachine`` reaches this runner through the kernel entry points of the
emulation library: with ``TVM_SPATIAL_RUNTIME=xrt`` (see :func:`tvm_spatial.runtime_mode`)
each entry, after checking its arguments, calls :func:`run_kernel_on_xrt` (registered as
the global FFI function ``emulation.XRT_DISPATCH``) instead of the compiled kernel. The
xclbin comes from ``TVM_SPATIAL_XCLBIN`` and the device from ``TVM_SPATIAL_DEVICE_INDEX``.

A region spread over several SLRs is several Vitis kernels linked by AXI streams; one
call of its entry point runs them all (the generated host starts every one, then waits
for every one), and :func:`check_xclbin` also checks that the xclbin declares the
crossing arguments as streams.

Ports that share a read-only Relax argument (``Port.arg``: one tensor read by several
processes) each keep their own XRT buffer: each is its own ``m_axi`` argument, in its own
HBM bank, so the host copies the tensor once per port. The ports of a *written* argument
(a KV cache, one ``inout`` port per layer's update) are passed one buffer, in one bank
(``host_code.buffers``): the tensor goes to the card once and comes back once, with every
port's rows in it.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import tvm_ffi

from tvm_spatial.errors import ToolchainError

from .design import Design, Kernel
from .emulation import RUNTIME_ENV, XRT_DISPATCH, cache_dir, host_compiler
from .host_code import buffers, host_cpp
from .xclbin import XclbinFormatError, read_interface

XRT_LIBRARY = "libxrt_coreutil.so.2"
SYSFS_XOCL = "/sys/bus/pci/drivers/xocl"
SYSTEM_XRT_INCLUDE = Path("/usr/include/xrt")
XCLBIN_ENV = "TVM_SPATIAL_XCLBIN"
DEVICE_INDEX_ENV = "TVM_SPATIAL_DEVICE_INDEX"
# seconds one kernel call may take before its host process is stopped (unset: no limit --
# a hardware emulation run can take hours): a design that hangs then says so
TIMEOUT_ENV = "TVM_SPATIAL_XRT_TIMEOUT"


def _xilinx_xrt() -> Path | None:
    root = os.environ.get("XILINX_XRT")
    return Path(root) if root else None


def find_xrt_library(name: str = XRT_LIBRARY) -> str:
    """Path (or soname) of XRT's core library that ``dlopen`` accepts, else ToolchainError."""
    candidates = []
    root = _xilinx_xrt()
    if root is not None:
        candidates.append(str(root / "lib" / name))
    candidates.append(name)
    for candidate in candidates:
        try:
            ctypes.CDLL(candidate)
            return candidate
        except OSError:
            continue
    raise ToolchainError(
        f"XRT library {name} not found (tried {', '.join(candidates)}): install XRT "
        "(Debian: apt-get install libxrt1 libxrt-dev; AMD: source /opt/xilinx/xrt/setup.sh)"
    )


def xrt_include_dirs() -> list[str]:
    dirs = []
    root = _xilinx_xrt()
    if root is not None and (root / "include" / "xrt" / "xrt_kernel.h").exists():
        dirs.append(str(root / "include"))
    if (SYSTEM_XRT_INCLUDE / "xrt" / "xrt_kernel.h").exists():
        dirs.append(str(SYSTEM_XRT_INCLUDE))
    if not dirs:
        raise ToolchainError(
            "XRT headers (xrt/xrt_kernel.h) not found under $XILINX_XRT/include or "
            f"{SYSTEM_XRT_INCLUDE}: install libxrt-dev (Debian) or XRT from AMD"
        )
    return dirs


def check_device(device_index: int, *, sysfs: str = SYSFS_XOCL) -> str:
    """Describe the device XRT will open, or raise ToolchainError saying why there is none."""
    mode = os.environ.get("XCL_EMULATION_MODE")
    if mode == "noop":
        root = _xilinx_xrt()
        shim = root / "lib" / "libxrt_noop.so.2" if root else None
        if shim is None or not shim.exists():
            raise ToolchainError(
                f"XCL_EMULATION_MODE=noop needs $XILINX_XRT/lib/libxrt_noop.so.2, which is missing "
                f"(XILINX_XRT={root or 'unset'}); point XILINX_XRT at a directory whose lib/ holds it"
            )
        return "XRT noop shim (no computation)"
    if mode:
        return f"XRT {mode} emulation"
    found = sorted(p.name for p in Path(sysfs).glob("*:*")) if Path(sysfs).is_dir() else []
    if device_index >= len(found):
        raise ToolchainError(
            f"no Alveo device with index {device_index}: the xocl driver lists {len(found)} "
            f"({', '.join(found) or 'none'} in {sysfs}); install the card and XRT's driver, or "
            "set XCL_EMULATION_MODE=noop to check the host flow without one"
        )
    return f"Alveo device {found[device_index]}"


def check_xclbin(design: Design, xclbin: Path, *, hardware: bool) -> None:
    """The file exists, is an xclbin, and declares every kernel and argument of ``design``."""
    if not xclbin.is_file():
        raise ToolchainError(f"xclbin {xclbin} does not exist: build it with make TARGET=hw in the Vitis project")
    try:
        info = read_interface(xclbin.read_bytes())
    except XclbinFormatError as exc:
        raise ToolchainError(f"xclbin {xclbin} cannot be read: {exc}") from None
    for kernel in design.vitis_kernels():
        args = info.kernels.get(kernel.name)
        if args is None:
            raise ToolchainError(
                f"xclbin {xclbin} does not match the design: no kernel '{kernel.name}' "
                f"(it has {', '.join(info.kernels) or 'none'})"
            )
        wanted = tuple(p.name for p in kernel.ports) + tuple(a.name for a in kernel.axis)
        if args != wanted:
            missing = next((f"'{w}' at index {i}" for i, w in enumerate(wanted) if i >= len(args) or args[i] != w),
                           f"only {len(wanted)} arguments")
            raise ToolchainError(
                f"xclbin {xclbin} does not match the design: kernel '{kernel.name}' has no argument "
                f"{missing} (it has {', '.join(args)})"
            )
        streams = info.streams.get(kernel.name, ())
        for a in kernel.axis:
            if a.name not in streams:
                raise ToolchainError(
                    f"xclbin {xclbin} does not match the design: argument '{a.name}' of kernel "
                    f"'{kernel.name}' is an AXI stream linked to '{a.peer}', but the xclbin does not "
                    "declare it as a stream"
                )
    if hardware and not info.has_bitstream:
        raise ToolchainError(
            f"xclbin {xclbin} holds no bitstream (a metadata-only xclbin from tvm-spatial?): "
            "it cannot program a card; build the real one with make TARGET=hw"
        )


@dataclass
class XRTRunner:
    """Runs kernels of ``design`` on ``xclbin`` through XRT, one host process per call."""

    design: Design
    xclbin: Path
    device_index: int = 0
    timeout_s: float | None = None  # a kernel call's limit (``TIMEOUT_ENV``); None: none

    def __post_init__(self) -> None:
        self.xclbin = Path(self.xclbin)

    def check(self) -> str:
        """Everything a run needs, in order; returns the device description."""
        find_xrt_library()
        xrt_include_dirs()
        device = check_device(self.device_index)
        hardware = not os.environ.get("XCL_EMULATION_MODE")
        check_xclbin(self.design, self.xclbin, hardware=hardware)
        return device

    def _kernel(self, name: str) -> Kernel:
        for kernel in self.design.kernels:
            if kernel.name == name:
                return kernel
        raise ToolchainError(f"the design has no kernel '{name}' (it has {', '.join(k.name for k in self.design.kernels)})")

    def host_executable(self, kernel: Kernel) -> Path:
        """The generated host for just ``kernel``, compiled once per content and compiler."""
        source = host_cpp(replace(self.design, kernels=(kernel,), host_ops=()))
        flags = ["-std=c++17", "-O1", *(f"-I{d}" for d in xrt_include_dirs())]
        libs = ["-lxrt_coreutil", "-luuid", "-pthread"]
        root = _xilinx_xrt()
        if root is not None and (root / "lib").is_dir():
            libs.insert(0, f"-L{root / 'lib'}")
        key = hashlib.sha256("\0".join([source, *flags, *libs]).encode()).hexdigest()[:32]
        exe = cache_dir().parent / "xrt-host" / f"{kernel.name}-{key}"
        if exe.is_file():
            return exe
        exe.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="tvm_spatial_xrt_") as tmp:
            cpp = Path(tmp) / "host.cpp"
            cpp.write_text(source)
            built = Path(tmp) / "host.exe"
            cmd = [host_compiler(), *flags, str(cpp), "-o", str(built), *libs]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise ToolchainError(f"compiling the XRT host failed ({' '.join(cmd)}):\n{proc.stderr[-4000:]}")
            staging = exe.with_suffix(f".{os.getpid()}.tmp")
            shutil.copyfile(built, staging)
            staging.chmod(0o755)
            os.replace(staging, exe)
        return exe

    def run(self, kernel_name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one region (all its Vitis kernels: one per SLR it spans, started together).
        ``inputs``: by port name, for the first port of every buffer something reads
        (:func:`host_code.buffers`: ports of a written argument share one); returns the
        written buffers by the name of their first port."""
        kernel = self._kernel(kernel_name)
        self.check()
        exe = self.host_executable(kernel)
        region = buffers(kernel)
        with tempfile.TemporaryDirectory(prefix="tvm_spatial_xrt_data_") as tmp:
            data = Path(tmp)
            for buffer in region:
                port = buffer.port
                if not buffer.reads:
                    continue
                if port.name not in inputs:
                    raise ToolchainError(f"kernel '{kernel.name}' needs input '{port.name}'")
                array = np.ascontiguousarray(inputs[port.name], dtype=port.dtype)
                if array.shape != port.shape and array.size != port.num_elements:
                    raise ToolchainError(
                        f"kernel '{kernel.name}' input '{port.name}' expects shape {port.shape}, got {array.shape}"
                    )
                (data / f"{buffer.kernel}.{port.name}.bin").write_bytes(array.tobytes())
            cmd = [str(exe), str(self.xclbin.resolve()), str(data), str(self.device_index)]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                raise ToolchainError(
                    f"XRT run of kernel '{kernel.name}' did not finish within {self.timeout_s:g} s "
                    f"({TIMEOUT_ENV}); its host process was stopped"
                ) from None
            if proc.returncode != 0:
                raise ToolchainError(f"XRT run of kernel '{kernel.name}' failed: {proc.stderr.strip()}")
            return {
                b.port.name: np.fromfile(data / f"{b.kernel}.{b.port.name}.out.bin", dtype=b.port.dtype)
                .reshape(b.port.shape)
                for b in region
                if b.writes
            }


@functools.lru_cache(maxsize=8)
def _design_of_manifest(manifest: str) -> Design:
    return Design.from_json(manifest)


def runner_from_environment(design: Design) -> XRTRunner:
    """The runner ``TVM_SPATIAL_XCLBIN`` / ``TVM_SPATIAL_DEVICE_INDEX`` describe."""
    xclbin = os.environ.get(XCLBIN_ENV)
    if not xclbin:
        raise ToolchainError(
            f"{RUNTIME_ENV}=xrt needs the design's .xclbin: set {XCLBIN_ENV}=path/to/design.xclbin "
            "(or use tvm_spatial.runtime_mode('xrt', xclbin=...)); build it with make TARGET=hw "
            "in the Vitis project"
        )
    index_text = os.environ.get(DEVICE_INDEX_ENV, "0")
    try:
        index = int(index_text)
    except ValueError:
        raise ToolchainError(f"{DEVICE_INDEX_ENV}={index_text!r} is not a device index (0, 1, ...)") from None
    if index < 0:
        raise ToolchainError(f"{DEVICE_INDEX_ENV}={index} is not a device index (0, 1, ...)")
    timeout_text = os.environ.get(TIMEOUT_ENV, "")
    try:
        timeout = float(timeout_text) if timeout_text else None
    except ValueError:
        timeout = -1.0
    if timeout is not None and not timeout > 0:
        raise ToolchainError(f"{TIMEOUT_ENV}={timeout_text!r} is not a number of seconds above 0")
    return XRTRunner(design, Path(xclbin), index, timeout)


def run_kernel_on_xrt(kernel_name: str, manifest: str, *tensors) -> None:
    """One kernel call of a Relax VM in xrt mode: inputs from the tensors the VM passed,
    outputs written back into its output tensors (a written argument: one buffer for all
    its ports, so one copy back)."""
    design = _design_of_manifest(manifest)
    runner = runner_from_environment(design)
    kernel = runner._kernel(kernel_name)
    region = buffers(kernel)
    index = {p.name: i for i, p in enumerate(kernel.ports)}

    def tensor(port):
        return tensors[port.arg if port.arg >= 0 else index[port.name]]

    def data(port):  # a stacked port (Port.layers): every layer's argument
        return [tensors[a].numpy() for a in port.layers] if port.layers else [tensor(port).numpy()]

    inputs = {b.port.name: np.ascontiguousarray(b.port.from_arguments(data(b.port))) for b in region if b.reads}
    outputs = runner.run(kernel.name, inputs)
    for b in region:
        if b.writes:
            tensor(b.port).copyfrom(np.ascontiguousarray(outputs[b.port.name]))


tvm_ffi.register_global_func(XRT_DISPATCH, run_kernel_on_xrt, override=True)
