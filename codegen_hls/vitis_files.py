"""The build files of a Vitis project: connectivity.cfg, Makefile, run.sh, README.md.

Why generated from the :class:`Design` rather than copied: bank, SLR and kernel lists
differ per design and per card, and one generator per file keeps every line's origin
obvious. Memory banks are balanced per region by the bytes each port moves (the ports
of one written argument share one: :func:`place`), so the same design always gets the
same placement (and byte-identical files). The files list *Vitis kernels*
(:meth:`Design.vitis_kernels`): a region on one SLR is one kernel, placed round-robin over
the SLRs; a region the partitioner spread over several SLRs is one kernel per SLR segment,
each pinned to its SLR (``slr=``), compiled from the region's one source file (``v++ -c -k
<segment>``), its crossing streams linked by ``stream_connect``.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm_spatial.devices import Device

from .code_writer import CodeWriter
from .design import Design, Port, VitisKernel
from .host_code import HOST_EXECUTABLE, buffers, port_bytes

TARGETS = ("sw_emu", "hw_emu", "hw")
XCLBIN_NAME = "design.xclbin"
# Interface only, no bitstream (codegen_hls.xclbin); outside build/ so `make clean` keeps it.
METADATA_XCLBIN = "metadata/design.metadata_only.xclbin"
DATA_DIR = "data"


@dataclass(frozen=True)
class Placement:
    """Where each compute unit and each port lands on the card."""

    banks: dict[tuple[str, str], str]  # (Vitis kernel, port) -> "HBM[3]"
    slrs: dict[str, int]  # Vitis kernel -> SLR index


def place(design: Design, device: Device) -> Placement:
    """Each region's buffers over the card's memory banks, heaviest first, each on the bank
    that moves the fewest bytes so far; a region's SLR segments on their SLRs, unsplit
    regions round-robin over the SLRs.

    Why per region and by traffic: the host calls the regions one after another, so only
    the ports of one region ever compete for a bank. Inside it every process runs at once,
    and a bank serves what all its ports move per call (:func:`port_traffic`): balancing that
    is what lets the analytical model bound a region by the card's whole bandwidth
    (``tvm_spatial.estimate.model``). The ports of one argument -- the stripes of a weight
    (``Port.stripe``), a tensor read by several processes -- go to distinct banks while
    there are banks they do not already use: their point is to be read at once.

    Except for the ports of a *written* argument (a KV cache that each layer's process
    updates in place through its own ``inout`` port): they all share one bank; and so do
    the ports of one m_axi bundle of a Vitis kernel (weight stripes past the card's
    channels share bundles: ``codegen_hls.kernel``), an interface reaching one bank. The host
    passes one buffer object to all of them -- the tensor they update together must be
    one piece of memory, or one port's rows would never reach the others, nor the
    caller -- and XRT accepts one buffer for several arguments only when they are
    connected to the same bank. Ties go to the lower bank, then to the earlier buffer, so
    the same design always gets the same placement (and byte-identical files).
    """
    banks = device.memory_banks
    bank_of: dict[tuple[str, str], str] = {}
    slr_of: dict[str, int] = {}
    for k_index, kernel in enumerate(design.kernels):
        groups = _bank_groups(buffers(kernel))
        traffic = [sum(port_traffic(kernel, port) for _, port in group) for group in groups]
        load = [0] * len(banks)
        used: dict[int, set[int]] = {}  # argument -> the banks its ports are on
        for i in sorted(range(len(groups)), key=lambda i: (-traffic[i], i)):
            args = sorted({a for _, port in groups[i] for a in port.args if a >= 0})
            taken = set().union(*(used.get(a, set()) for a in args))
            free = [b for b in range(len(banks)) if b not in taken] or range(len(banks))
            bank = min(free, key=lambda b: (load[b], b))
            load[bank] += traffic[i]
            for a in args:
                used.setdefault(a, set()).add(bank)
            for vk_name, member in groups[i]:
                bank_of[(vk_name, member.name)] = banks[bank]
        for vk in kernel.vitis_kernels():
            slr_of[vk.name] = k_index % device.slrs if vk.slr is None else vk.slr
    return Placement(banks=bank_of, slrs=slr_of)


def _bank_groups(region) -> list[list[tuple[str, Port]]]:
    """The ports that must share a bank, in buffer order: those of one buffer (a written
    argument's), and those of one m_axi bundle of one Vitis kernel (weight stripes that
    share an AXI master, ``codegen_hls.kernel``: an interface reaches one bank)."""
    group_of: dict = {}  # key -> group index
    groups: list[list[tuple[str, Port]]] = []
    for buffer in region:
        keys = [("buffer", id(buffer))] + [("bundle", vk, port.bundle) for vk, port in buffer.ports]
        found = sorted({group_of[k] for k in keys if k in group_of})
        if found:  # merge every group these ports join into the first of them
            target = found[0]
            for other in found[1:]:
                groups[target].extend(groups[other])
                for k, g in list(group_of.items()):
                    if g == other:
                        group_of[k] = target
                groups[other] = []
        else:
            target = len(groups)
            groups.append([])
        groups[target].extend(buffer.ports)
        for k in keys:
            group_of[k] = target
    return [g for g in groups if g]


def port_traffic(kernel, port: Port) -> int:
    """Bytes a port moves per call of its region: its buffer once, or once per token block
    when it is the weight of a matmul that runs in blocks and streams it for each
    (``codegen_hls.token_blocks``)."""
    for proc in kernel.processes:
        if port.name == proc.weight_port or port.name in proc.weight_stripes:
            if proc.separable and proc.rows and proc.matmul:
                return port_bytes(port) * -(-proc.matmul[1] // proc.rows)
            break
    return port_bytes(port)


def compute_unit(kernel) -> str:
    """The one compute unit of a Vitis kernel (anything with a ``name``)."""
    return f"{kernel.name}_1"


def stream_links(design: Design) -> list[tuple[str, str, str, int]]:
    """(producer kernel, consumer kernel, stream, FIFO depth) of every AXI-stream link."""
    return [
        (vk.name, a.peer, a.name, a.depth)
        for vk in design.vitis_kernels()
        for a in vk.axis
        if a.direction == "out"
    ]


def stream_connect_line(producer: str, consumer: str, stream: str, depth: int) -> str:
    """``stream_connect=<cu>.<out port>:<cu>.<in port>:<FIFO depth>`` (v++ --connectivity.sc)."""
    return f"stream_connect={producer}_1.{stream}:{consumer}_1.{stream}:{depth}"


def _clock(device: Device) -> str:
    return f"{device.clock_mhz:g}"


def _xo(kernel: VitisKernel) -> str:
    return f"build/$(TARGET)/{kernel.name}.xo"


def connectivity_cfg(design: Design, device: Device, placement: Placement) -> str:
    """``v++ --config`` file: one compute unit per kernel, its ports' banks, its SLR, and
    the AXI-stream links between the SLR segments of a region."""
    kernels = design.vitis_kernels()
    links = stream_links(design)
    w = CodeWriter()
    w.line(f"# Generated by tvm-spatial for {device.name} ({device.platform}).")
    w.line("# One compute unit per kernel. Memory banks: each region's ports (the regions run one")
    w.line("# after another) balanced by the bytes they move per call, a weight's stripes apart.")
    if any(len(b.ports) > 1 for k in design.kernels for b in buffers(k)):
        w.line("# The ports of one written argument (a KV cache several processes update in place)")
        w.line("# share one bank: the host passes them one buffer object.")
    if links:
        w.line("# A region spanning several SLRs is one kernel per SLR; stream_connect links the")
        w.line("# streams crossing SLR boundaries (FIFO depth as the dataflow plan needs).")
    w.line("[connectivity]")
    for kernel in kernels:
        w.line(f"nk={kernel.name}:1:{compute_unit(kernel)}")
    for kernel in kernels:
        for port in kernel.ports:
            bank = placement.banks[(kernel.name, port.name)]
            w.line(f"sp={compute_unit(kernel)}.{port.name}:{bank}")
    for kernel in kernels:
        w.line(f"slr={compute_unit(kernel)}:SLR{placement.slrs[kernel.name]}")
    for link in links:
        w.line(stream_connect_line(*link))
    return w.text()


def makefile(design: Design, device: Device) -> str:
    """``make TARGET=sw_emu|hw_emu|hw``: ``v++ -c`` per kernel, one ``v++ -l``, the host."""
    w = CodeWriter(indent="\t")  # make recipes must start with a tab
    header = Design.COMMON_HEADER_NAME
    w.line(f"# Generated by tvm-spatial for {device.name} ({device.part}).")
    w.line("# Usage: make TARGET=sw_emu|hw_emu|hw, then ./run.sh (or: make run TARGET=...).")
    w.line()
    w.line("TARGET ?= hw")
    w.line(f"PLATFORM ?= {device.platform}")
    w.line("XILINX_XRT ?= /opt/xilinx/xrt")
    w.line("HOST_CXX ?= g++")
    w.line()
    w.line(f"ifeq ($(filter $(TARGET),{' '.join(TARGETS)}),)")
    w.line(f"$(error TARGET must be one of {', '.join(TARGETS)}; got '$(TARGET)')")
    w.line("endif")
    w.line("ifneq ($(filter $(TARGET),sw_emu hw_emu),)")
    w.line("EMCONFIG := emconfig.json")
    w.line("endif")
    w.line()
    w.line(f"XCLBIN := build/$(TARGET)/{XCLBIN_NAME}")
    kernels = design.vitis_kernels()
    w.line(f"XOS := {' '.join(_xo(k) for k in kernels)}")
    w.line()
    w.line(".PHONY: all xclbin host emconfig run clean")
    w.line(f"all: $(XCLBIN) {HOST_EXECUTABLE} $(EMCONFIG)")
    w.line("xclbin: $(XCLBIN)")
    w.line(f"host: {HOST_EXECUTABLE}")
    w.line("emconfig: $(EMCONFIG)")
    for kernel in kernels:
        w.line()
        w.line(f"{_xo(kernel)}: kernels/{kernel.filename} kernels/{header}")
        with w.indented():
            w.line("@mkdir -p build/$(TARGET)")
            w.line(
                f"v++ -c -t $(TARGET) --platform $(PLATFORM) -k {kernel.name} -I kernels"
                f" --temp_dir build/$(TARGET)/_x -o {_xo(kernel)} kernels/{kernel.filename}"
            )
    w.line()
    w.line("$(XCLBIN): $(XOS) connectivity.cfg")
    with w.indented():
        w.line(
            "v++ -l -t $(TARGET) --platform $(PLATFORM) --config connectivity.cfg"
            f" --kernel_frequency {_clock(device)} --temp_dir build/$(TARGET)/_x"
            " -o $(XCLBIN) $(XOS)"
        )
    w.line()
    w.line(f"{HOST_EXECUTABLE}: host/host.cpp")
    with w.indented():
        w.line(
            "$(HOST_CXX) -std=c++17 -O2 -Wall -I/usr/include/xrt -I$(XILINX_XRT)/include"
            f" -o {HOST_EXECUTABLE} host/host.cpp"
            " -L$(XILINX_XRT)/lib -lxrt_coreutil -luuid -pthread"
        )
    w.line()
    w.line("emconfig.json:")
    with w.indented():
        w.line("emconfigutil --platform $(PLATFORM) --od .")
    w.line()
    w.line(f"run: $(XCLBIN) {HOST_EXECUTABLE} $(EMCONFIG)")
    with w.indented():
        w.line("TARGET=$(TARGET) ./run.sh")
    w.line()
    w.line("clean:")
    with w.indented():
        w.line(
            f"rm -rf build {HOST_EXECUTABLE} emconfig.json _x .Xil .ipcache"
            " v++*.log xcd.log xrc.log *.run_summary"
        )
    return w.text()


# Where Debian and RPM distributions put XRT's libraries when it is not under /opt/xilinx/xrt.
_XRT_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib")


def run_sh() -> str:
    """Build the host and run it on the xclbin ``make`` built for ``$TARGET``.

    ``TARGET=noop`` needs neither Vitis nor a card: the host runs on the metadata-only
    xclbin under XRT's ``noop`` shim, which checks that host and kernels agree and
    computes nothing. XRT loads ``$XILINX_XRT/lib/libxrt_noop.so.2``; a distribution
    package installs it elsewhere, so the script links it into ``build/noop/lib``.
    """
    w = CodeWriter()
    w.line("#!/bin/sh")
    w.line("# Generated by tvm-spatial. Usage: TARGET=sw_emu|hw_emu|hw|noop ./run.sh [device_index]")
    w.line("# Build the xclbin first with: make TARGET=$TARGET (noop: no build, interface check only)")
    w.line("set -eu")
    w.line('cd "$(dirname "$0")"')
    w.line('TARGET="${TARGET:-hw}"')
    w.line(f'XCLBIN="build/$TARGET/{XCLBIN_NAME}"')
    w.line('case "$TARGET" in')
    with w.indented():
        w.line("sw_emu|hw_emu)")
        with w.indented():
            w.line('make --no-print-directory TARGET="$TARGET" host emconfig')
            w.line('export XCL_EMULATION_MODE="$TARGET"')
            w.line(";;")
        w.line("hw)")
        with w.indented():
            w.line('make --no-print-directory TARGET="$TARGET" host')
            w.line("unset XCL_EMULATION_MODE")
            w.line(";;")
        w.line("noop)")
        with w.indented():
            w.line("make --no-print-directory TARGET=hw host")
            w.line(f"XCLBIN={METADATA_XCLBIN}")
            w.line('if [ ! -e "${XILINX_XRT:-/opt/xilinx/xrt}/lib/libxrt_noop.so.2" ]; then')
            with w.indented():
                w.line(f"for dir in {' '.join(_XRT_LIB_DIRS)}; do")
                with w.indented():
                    w.line('if [ -e "$dir/libxrt_noop.so.2" ]; then')
                    with w.indented():
                        w.line("mkdir -p build/noop/lib")
                        w.line('ln -sf "$dir/libxrt_noop.so.2" build/noop/lib/libxrt_noop.so.2')
                        w.line('XILINX_XRT="$PWD/build/noop"')
                        w.line("export XILINX_XRT")
                        w.line("break")
                    w.line("fi")
                w.line("done")
            w.line("fi")
            w.line("export XCL_EMULATION_MODE=noop")
            w.line(";;")
        w.line("*)")
        with w.indented():
            allowed = ", ".join((*TARGETS, "noop"))
            w.line(f'echo "run.sh: TARGET must be one of {allowed}; got \'$TARGET\'" >&2')
            w.line("exit 1")
            w.line(";;")
    w.line("esac")
    w.line(f'exec ./{HOST_EXECUTABLE} "$XCLBIN" {DATA_DIR} "$@"')
    return w.text()


def _shape(port: Port) -> str:
    return "x".join(str(d) for d in port.shape) or "scalar"


def readme(design: Design, device: Device, placement: Placement) -> str:
    """What an engineer with Vitis needs: the files, the steps, the tools, the interface."""
    w = CodeWriter()
    w.line(f"# Vitis project for {device.name}")
    w.line()
    w.line(
        f"Generated by tvm-spatial: {len(design.vitis_kernels())} kernel(s) for the {device.name} "
        f"(`{device.part}`), platform `{device.platform}`, kernel clock {_clock(device)} MHz."
    )
    w.line("Regenerate rather than edit: the files are rewritten from the compiled model.")
    w.line()
    w.line("## Files")
    w.line()
    w.line("- `kernels/<name>.cpp`: one Vitis HLS kernel per file (`extern \"C\"` top function).")
    if any(k.segments for k in design.kernels):
        w.line("  A region spanning several SLRs keeps one file with one `extern \"C\"` top per SLR")
        w.line("  (`<region>_slr<n>`, each its own kernel and compute unit), linked by AXI streams")
        w.line("  (`stream_connect` in `connectivity.cfg`); its `<region>` function, outside synthesis")
        w.line("  (`#ifndef __SYNTHESIS__`), runs the segments in order for C simulation.")
    w.line(f"- `kernels/{Design.COMMON_HEADER_NAME}`: the header every kernel includes.")
    w.line("- `connectivity.cfg`: compute units, memory bank of every port, SLR of every kernel.")
    w.line("- `Makefile`: `v++ -c` per kernel, one `v++ -l` into `build/<target>/design.xclbin`,")
    w.line("  and the host.")
    w.line("- `host/host.cpp`: XRT native-API host program that runs the kernels in order.")
    w.line("- `run.sh`: builds the host and runs it on `build/$TARGET/design.xclbin`.")
    w.line(f"- `{METADATA_XCLBIN}`: the kernel interface only (names, arguments, register")
    w.line("  offsets, memory banks), no bitstream: it cannot program a card. `TARGET=noop ./run.sh`")
    w.line("  runs the host on it under XRT's `noop` shim to check that host and kernels agree.")
    w.line()
    w.line("## Requirements")
    w.line()
    w.line("- Vitis 2022.2 or newer (`v++`, `emconfigutil` on `PATH`).")
    w.line("- XRT 2.13 or newer (`source /opt/xilinx/xrt/setup.sh`, which sets `XILINX_XRT`).")
    w.line(f"- The platform `{device.platform}` installed (override with `make PLATFORM=...`).")
    w.line()
    w.line("## Steps")
    w.line()
    w.line("```sh")
    w.line("make TARGET=sw_emu   # or hw_emu, or hw (hours: synthesis, place and route)")
    w.line("TARGET=sw_emu ./run.sh")
    w.line("```")
    w.line()
    w.line("Without Vitis, `TARGET=noop ./run.sh` checks the host against the kernel interface")
    w.line("(XRT only; the kernels do not compute, outputs are not meaningful).")
    w.line()
    w.line(
        f"The host reads every input port from `{DATA_DIR}/<kernel>.<port>.bin` and writes every "
        f"output port to `{DATA_DIR}/<kernel>.<port>.out.bin`: raw little-endian, row-major, "
        "exactly the byte size below (`bool` is one byte per element)."
    )
    shared = [b for k in design.kernels for b in buffers(k) if len(b.ports) > 1]
    if shared:
        w.line()
        w.line(
            "Ports of one written argument share one buffer (and bank) and the files of their "
            "first port, read once before the run and written once after it: "
            + "; ".join(
                f"`{b.kernel}.{b.port.name}` for " + ", ".join(f"`{vk}.{p.name}`" for vk, p in b.ports)
                for b in shared
            )
            + "."
        )
    striped = [p for k in design.kernels for p in k.ports if p.stripe]
    if striped:
        w.line()
        w.line(
            "A weight striped over several ports (`<weight>_s<c>`, one HBM bank each) takes, in "
            "each port's file, its stripe of the `[K, N]` weight, tile after tile: of every "
            "tile of `C x g` columns, the `g` columns from `c x g` of each of the `K` rows, "
            "zeros past column `N` "
            "(`codegen_hls.design.Port.from_argument` writes it; `C`, `g`, `N` per port: "
            + "; ".join(f"`{p.name}`: C={p.stripe[1]}, g={p.stripe[2]}, N={p.stripe[3]}" for p in striped[:4])
            + ("; ..." if len(striped) > 4 else "") + ")."
        )
    stacked = [p for k in design.kernels for p in k.ports if p.layers]
    if stacked:
        w.line()
        w.line(
            "A stacked port (`<argument>_layers`, a token-parallel engine's layer loop) takes, in "
            "its file, the arguments of every layer one after another along its first axis, each "
            "as its own port would (its stripe, for a striped weight): "
            "`codegen_hls.design.Port.from_arguments` writes it."
        )
    w.line()
    w.line("## Kernels")
    for kernel in design.kernels:
        for vk in kernel.vitis_kernels():
            w.line()
            if kernel.segments:
                w.line(f"### `{vk.name}` (SLR{placement.slrs[vk.name]}, a segment of `{kernel.name}`)")
            else:
                w.line(f"### `{vk.name}` (SLR{placement.slrs[vk.name]})")
            w.line()
            if kernel.ops and vk.name == kernel.vitis_kernels()[0].name:
                w.line(f"Operators: {', '.join(f'`{op}`' for op in kernel.ops)}")
                w.line()
            w.line("| port | dtype | shape | direction | bank | bytes |")
            w.line("|---|---|---|---|---|---|")
            for port in vk.ports:
                bank = placement.banks[(vk.name, port.name)]
                w.line(
                    f"| `{port.name}` | {port.dtype} | {_shape(port)} | {port.direction} | {bank} "
                    f"| {port_bytes(port)} |"
                )
            for a in vk.axis:
                side = f"to `{a.peer}`" if a.direction == "out" else f"from `{a.peer}`"
                w.line(
                    f"| `{a.name}` | {a.dtype} | {a.elements} | AXI-stream {a.direction} {side} "
                    f"| depth {a.depth} | - |"
                )
    if design.host_ops:
        w.line()
        w.line(f"Left on the host CPU: {', '.join(f'`{op}`' for op in design.host_ops)}.")
    return w.text()
