"""A metadata-only ``.xclbin`` for a :class:`Design`: the kernel interface, no bitstream.

Why: without Vitis there is no real xclbin, yet the generated XRT host must agree with
the kernels on names, argument order, register offsets and memory banks. XRT reads all
of that from four sections of the container, so we write exactly those, following the
structs of ``/usr/include/xrt/xclbin.h`` (XRT 2.13):

``EMBEDDED_METADATA``
    XML: per Vitis kernel (a region's top, or each SLR segment of a split region) its AXI
    ports (``M_AXI_<BUNDLE>`` masters, one AXI4-Stream port per stream argument, the
    ``S_AXI_CONTROL`` slave), its arguments (name, index, port, register offset, size, host
    type; a stream argument has ``addressQualifier`` 4, which XRT's parser maps to
    ``kernel_argument::argtype::stream``: the host never sets it) and its compute unit with
    the control base address. ``xrt::xclbin::kernel::get_args()`` and ``xrt::kernel`` read
    the arguments from here.
``MEM_TOPOLOGY``
    One ``mem_data`` per memory bank of the card (``HBM[i]`` or ``DDR[i]``); banks some
    port uses are marked used.
``IP_LAYOUT``
    One ``ip_data`` per compute unit (``<kernel>:<kernel>_1``), sorted by base address.
``CONNECTIVITY``
    One ``connection`` per (compute unit, argument) -> memory bank: the same bank as the
    ``sp=`` line of ``connectivity.cfg`` (both come from :func:`vitis_files.place`), which
    is what ``xrt::kernel::group_id`` returns to the host.

The file loads under XRT's ``noop`` shim (a real check that host and kernels agree) but
cannot program a card: it carries no BITSTREAM section. The output is deterministic
(timestamp 0, UUID derived from the content), like every other generated file.

Register offsets follow Vitis HLS's ``s_axilite`` control block: control/status words at
0x00-0x0c, then one 64-bit pointer per ``m_axi`` argument every 12 bytes from 0x10.
"""

from __future__ import annotations

import hashlib
import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from tvm_spatial.devices import Device, get_device

from .c_types import byte_size, c_type
from .design import Design
from .vitis_files import Placement, compute_unit, place

# enum axlf_section_kind
EMBEDDED_METADATA = 2
MEM_TOPOLOGY = 6
CONNECTIVITY = 7
IP_LAYOUT = 8
SECTION_NAMES = {
    EMBEDDED_METADATA: "EMBEDDED_METADATA",
    MEM_TOPOLOGY: "MEM_TOPOLOGY",
    CONNECTIVITY: "CONNECTIVITY",
    IP_LAYOUT: "IP_LAYOUT",
}

# enum MEM_TYPE, enum IP_TYPE, enum IP_CONTROL
MEM_DDR4 = 1
MEM_HBM = 6
IP_KERNEL = 1
AP_CTRL_HS = 0
IP_CONTROL_SHIFT = 8
IP_INT_ENABLE = 0x1

MAGIC = b"xclbin2\0"
VERSION = (2, 13, 0)  # (major, minor, patch) of the format's writer: XRT 2.13

# struct axlf up to (not including) m_header; struct axlf_header; struct axlf_section_header
_AXLF_PREFIX = struct.Struct("<8si28s256sQ")
_AXLF_HEADER = struct.Struct("<QQQHBBHH16s64s16s16sI4x")
_SECTION_HEADER = struct.Struct("<I16s4xQQ")
_MEM_DATA = struct.Struct("<BB6xQQ16s")
_IP_DATA = struct.Struct("<IIQ64s")
_CONNECTION = struct.Struct("<iii")
_COUNT = struct.Struct("<i4x")  # int32 m_count, padded to the 8-byte alignment of the array
_CONNECTIVITY_COUNT = struct.Struct("<i")  # connection is 4-byte aligned: no padding
assert _AXLF_PREFIX.size + _AXLF_HEADER.size + _SECTION_HEADER.size == 496  # sizeof(axlf)
assert (_AXLF_HEADER.size, _SECTION_HEADER.size, _MEM_DATA.size, _IP_DATA.size) == (152, 40, 40, 80)

CU_BASE = 0x1800000  # control base address of the first compute unit
CU_STRIDE = 0x10000  # 64 KiB of register space per compute unit
CONTROL_RANGE = 0x1000
FIRST_ARG_OFFSET = 0x10
ARG_STRIDE = 0xC
POINTER_SIZE = 8
ADDRESS_QUALIFIER_GLOBAL = 1  # an m_axi pointer into device memory
ADDRESS_QUALIFIER_STREAM = 4  # an AXI4-Stream argument (kernel-to-kernel link)


def axi_port(bundle: str) -> str:
    """The AXI master port Vitis HLS creates for an ``m_axi`` bundle."""
    return f"M_AXI_{bundle.upper()}"


def arg_offset(index: int) -> int:
    """Register offset of pointer argument ``index`` in the s_axilite control block."""
    return FIRST_ARG_OFFSET + ARG_STRIDE * index


def cu_base(kernel_index: int) -> int:
    return CU_BASE + CU_STRIDE * kernel_index


def _bank_size_kb(device: Device) -> int:
    memory = device.hbm if device.hbm is not None else device.ddr
    assert memory is not None
    return int(memory.capacity_gb * 1024 * 1024) // memory.channels


def _embedded_metadata(design: Design, device: Device) -> bytes:
    project = ET.Element("project", name="tvm_spatial_design")
    platform = ET.SubElement(project, "platform", vendor="xilinx", name=device.platform)
    dev = ET.SubElement(platform, "device", name="fpga0", fpgaDevice=device.part)
    core = ET.SubElement(
        dev, "core", name="OCL_REGION_0", target="metadata_only",
        numComputeUnits=str(len(design.vitis_kernels())),
    )
    clocks = ET.SubElement(core, "kernelClocks")
    ET.SubElement(clocks, "clock", port="KERNEL_CLK", frequency=f"{device.clock_mhz:g}MHz")
    for k_index, kernel in enumerate(design.vitis_kernels()):
        node = ET.SubElement(
            core, "kernel", name=kernel.name, language="c", type="pl",
            vlnv=f"tvm-spatial:hls:{kernel.name}:1.0", workGroupSize="1",
            interrupt="true", hwControlProtocol="ap_ctrl_hs",
        )
        for bundle in dict.fromkeys(p.bundle for p in kernel.ports):
            width = max(8 * byte_size(p.dtype) for p in kernel.ports if p.bundle == bundle)
            ET.SubElement(
                node, "port", name=axi_port(bundle), mode="master", range="0xFFFFFFFFFFFFFFFF",
                dataWidth=str(width), portType="addressable", base="0x0",
            )
        for a in kernel.axis:
            ET.SubElement(
                node, "port", name=a.name, mode="write_only" if a.direction == "out" else "read_only",
                range="", dataWidth=str(8 * byte_size(a.dtype) * a.width), portType="stream",
            )
        ET.SubElement(
            node, "port", name="S_AXI_CONTROL", mode="slave", range=hex(CONTROL_RANGE),
            dataWidth="32", portType="addressable", base="0x0",
        )
        for index, port in enumerate(kernel.ports):
            ET.SubElement(
                node, "arg", name=port.name, addressQualifier=str(ADDRESS_QUALIFIER_GLOBAL),
                id=str(index), port=axi_port(port.bundle), size=hex(POINTER_SIZE),
                offset=hex(arg_offset(index)), hostOffset="0x0", hostSize=hex(POINTER_SIZE),
                type=f"{c_type(port.dtype)}*",
            )
        for index, a in enumerate(kernel.axis, start=len(kernel.ports)):
            # no register: the stream is wired to its peer by stream_connect
            ET.SubElement(
                node, "arg", name=a.name, addressQualifier=str(ADDRESS_QUALIFIER_STREAM),
                id=str(index), port=a.name, size="0x0", offset="0x0", hostOffset="0x0",
                # the element type; a packet's word width is the port's dataWidth. (With the
                # packet's template type here, XRT's noop shim returned wrong outputs in
                # tests/test_kv_inplace.py; why is not known.)
                hostSize=hex(POINTER_SIZE), type=f"hls::stream<{c_type(a.dtype)}>&",
            )
        instance = ET.SubElement(node, "instance", name=compute_unit(kernel))
        ET.SubElement(instance, "addrRemap", base=hex(cu_base(k_index)), port="S_AXI_CONTROL")
    ET.indent(project)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(project) + b"\n"


def _mem_topology(device: Device, used: set[str]) -> bytes:
    kind = MEM_HBM if device.hbm is not None else MEM_DDR4
    size_kb = _bank_size_kb(device)
    banks = device.memory_banks
    out = [_COUNT.pack(len(banks))]
    for index, tag in enumerate(banks):
        out.append(
            _MEM_DATA.pack(kind, int(tag in used), size_kb, index * size_kb * 1024, tag.encode())
        )
    return b"".join(out)


def _ip_layout(design: Design) -> bytes:
    properties = (AP_CTRL_HS << IP_CONTROL_SHIFT) | IP_INT_ENABLE
    kernels = design.vitis_kernels()
    out = [_COUNT.pack(len(kernels))]
    for k_index, kernel in enumerate(kernels):
        name = f"{kernel.name}:{compute_unit(kernel)}".encode()
        out.append(_IP_DATA.pack(IP_KERNEL, properties, cu_base(k_index), name))
    return b"".join(out)


def _connectivity(design: Design, device: Device, placement: Placement) -> bytes:
    bank_index = {tag: i for i, tag in enumerate(device.memory_banks)}
    rows = []
    for k_index, kernel in enumerate(design.vitis_kernels()):
        for a_index, port in enumerate(kernel.ports):  # m_axi arguments come first
            bank = placement.banks[(kernel.name, port.name)]
            rows.append(_CONNECTION.pack(a_index, k_index, bank_index[bank]))
    return _CONNECTIVITY_COUNT.pack(len(rows)) + b"".join(rows)


def _pad8(data: bytes) -> bytes:
    return data + bytes(-len(data) % 8)


def _assemble(sections: list[tuple[int, bytes]], platform: str) -> bytes:
    """axlf header, section headers, then each section 8-byte aligned."""
    table_end = _AXLF_PREFIX.size + _AXLF_HEADER.size + _SECTION_HEADER.size * len(sections)
    offset = table_end + (-table_end % 8)
    headers, bodies = [], []
    for kind, body in sections:
        name = SECTION_NAMES[kind].encode()[:15]  # m_sectionName is 16 bytes, NUL-terminated
        headers.append(_SECTION_HEADER.pack(kind, name, offset, len(body)))
        bodies.append(_pad8(body))
        offset += len(bodies[-1])
    payload = b"".join(headers) + bytes(-table_end % 8) + b"".join(bodies)
    uuid = hashlib.sha256(platform.encode() + b"\0" + payload).digest()[:16]
    major, minor, patch = VERSION
    header = _AXLF_HEADER.pack(
        offset, 0, 0, patch, major, minor, 0, 0, bytes(16), platform.encode()[:63], uuid,
        bytes(16), len(sections),
    )
    # m_signature_length -1: unsigned; reserved bytes and the key block are 0xFF as in xclbinutil
    prefix = _AXLF_PREFIX.pack(MAGIC, -1, b"\xff" * 28, b"\xff" * 256, 0)
    data = prefix + header + payload
    assert len(data) == offset
    return data


def metadata_xclbin(design: Design, placement: Placement | None = None) -> bytes:
    """The metadata-only xclbin of ``design`` (bank per port from ``placement``, by default
    :func:`vitis_files.place`, i.e. the banks of ``connectivity.cfg``)."""
    device = get_device(design.device)
    placement = placement or place(design, device)
    sections = [
        (EMBEDDED_METADATA, _embedded_metadata(design, device)),
        (MEM_TOPOLOGY, _mem_topology(device, set(placement.banks.values()))),
        (IP_LAYOUT, _ip_layout(design)),
        (CONNECTIVITY, _connectivity(design, device, placement)),
    ]
    return _assemble(sections, device.platform)


# -- reading back: what the runtime checks before it hands an xclbin to XRT ---------------


@dataclass(frozen=True)
class XclbinInterface:
    """The kernel interface an xclbin declares: what a host must agree with."""

    uuid: bytes
    platform: str
    kernels: dict[str, tuple[str, ...]]  # kernel -> argument names in index order
    streams: dict[str, tuple[str, ...]]  # kernel -> names of its AXI-stream arguments
    banks: dict[tuple[str, str], str]  # (kernel, argument) -> memory tag, from CONNECTIVITY
    has_bitstream: bool


class XclbinFormatError(ValueError):
    """The bytes are not an xclbin this module can read."""


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def read_sections(data: bytes) -> tuple[bytes, str, dict[int, bytes]]:
    """(uuid, platform, {section kind: body}) of an xclbin (the first section of each kind)."""
    fixed = _AXLF_PREFIX.size + _AXLF_HEADER.size
    if len(data) < fixed or data[:8] != MAGIC:
        raise XclbinFormatError("not an xclbin (no 'xclbin2' magic)")
    header = _AXLF_HEADER.unpack_from(data, _AXLF_PREFIX.size)
    length, platform, uuid, count = header[0], header[9], header[10], header[12]
    if length > len(data):
        raise XclbinFormatError(f"truncated xclbin: header says {length} bytes, file has {len(data)}")
    sections: dict[int, bytes] = {}
    for i in range(count):
        at = fixed + i * _SECTION_HEADER.size
        if at + _SECTION_HEADER.size > len(data):
            raise XclbinFormatError("truncated xclbin: section table runs past the end")
        kind, _, offset, size = _SECTION_HEADER.unpack_from(data, at)
        if offset + size > len(data):
            raise XclbinFormatError(f"truncated xclbin: section {kind} runs past the end")
        sections.setdefault(kind, data[offset : offset + size])
    return uuid, _cstr(platform), sections


def read_interface(data: bytes) -> XclbinInterface:
    """Kernels, argument names and argument banks of an xclbin (ours or one from ``v++``)."""
    uuid, platform, sections = read_sections(data)
    if EMBEDDED_METADATA not in sections:
        raise XclbinFormatError("xclbin has no EMBEDDED_METADATA section")
    try:
        root = ET.fromstring(sections[EMBEDDED_METADATA].rstrip(b"\0"))
    except ET.ParseError as exc:
        raise XclbinFormatError(f"EMBEDDED_METADATA is not XML: {exc}") from None
    kernels: dict[str, tuple[str, ...]] = {}
    streams: dict[str, tuple[str, ...]] = {}
    for node in root.iterfind("./platform/device/core/kernel"):
        args = sorted(node.iterfind("arg"), key=lambda a: int(a.get("id") or 0, 0))
        kernels[node.get("name", "")] = tuple(a.get("name", "") for a in args)
        streams[node.get("name", "")] = tuple(
            a.get("name", "") for a in args if a.get("addressQualifier") == str(ADDRESS_QUALIFIER_STREAM)
        )
    banks: dict[tuple[str, str], str] = {}
    if {MEM_TOPOLOGY, IP_LAYOUT, CONNECTIVITY} <= sections.keys():
        mems = _records(sections[MEM_TOPOLOGY], _COUNT, _MEM_DATA)
        ips = _records(sections[IP_LAYOUT], _COUNT, _IP_DATA)
        for arg, ip, mem in _records(sections[CONNECTIVITY], _CONNECTIVITY_COUNT, _CONNECTION):
            if not (0 <= ip < len(ips) and 0 <= mem < len(mems)):
                continue
            kernel = _cstr(ips[ip][3]).split(":", 1)[0]
            names = kernels.get(kernel, ())
            if 0 <= arg < len(names):
                banks[(kernel, names[arg])] = _cstr(mems[mem][4])
    return XclbinInterface(uuid, platform, kernels, streams, banks, has_bitstream=0 in sections)


def _records(body: bytes, count_struct: struct.Struct, record: struct.Struct) -> list[tuple]:
    (count,) = count_struct.unpack_from(body, 0)[:1]
    start = count_struct.size
    if count < 0 or start + count * record.size > len(body):
        raise XclbinFormatError("xclbin section is shorter than its record count")
    return [record.unpack_from(body, start + i * record.size) for i in range(count)]
