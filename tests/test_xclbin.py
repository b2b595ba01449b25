"""The metadata-only xclbin: layout per xclbin.h, read back by our reader and by real XRT.

The XRT read-back compiles a small program against Debian's ``libxrt-dev`` and is skipped,
with that reason, where the headers are missing.
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
import struct
import subprocess

import pytest

from codegen_hls import xclbin as X
from codegen_hls.project import write_project
from codegen_hls.vitis_files import METADATA_XCLBIN, place
from tvm_spatial.devices import get_device

from test_project import make_design

XRT_INCLUDE = pathlib.Path("/usr/include/xrt")
needs_xrt = pytest.mark.skipif(
    not (XRT_INCLUDE / "xrt" / "xrt_kernel.h").exists() or shutil.which("g++") is None,
    reason="XRT headers not found under /usr/include/xrt (apt-get install libxrt-dev) or no g++",
)


def section_table(data: bytes) -> list[tuple[int, str, int, int]]:
    """(kind, name, offset, size) per section header, decoded independently of the writer."""
    (count,) = struct.unpack_from("<I", data, 304 + 144)  # axlf.m_header.m_numSections
    rows = []
    for i in range(count):
        kind, name, offset, size = struct.unpack_from("<I16s4xQQ", data, 456 + 40 * i)
        rows.append((kind, name.rstrip(b"\0").decode(), offset, size))
    return rows


def test_header_and_sections_follow_xclbin_h():
    data = X.metadata_xclbin(make_design())
    assert data[:8] == b"xclbin2\0"
    (length,) = struct.unpack_from("<Q", data, 304)  # m_header.m_length
    assert length == len(data)
    vbnv = data[304 + 48 : 304 + 48 + 64].rstrip(b"\0").decode()
    assert vbnv == get_device("u280").platform
    table = section_table(data)
    assert [row[0] for row in table] == [2, 6, 8, 7]  # EMBEDDED_METADATA, MEM_TOPOLOGY, IP_LAYOUT, CONNECTIVITY
    assert [row[1] for row in table] == ["EMBEDDED_METADA", "MEM_TOPOLOGY", "IP_LAYOUT", "CONNECTIVITY"]
    end = 496 + 40 * (len(table) - 1)
    for _, _, offset, size in table:
        assert offset % 8 == 0 and offset >= end and offset + size <= len(data)
        end = offset + size
    assert 0 not in [row[0] for row in table]  # no BITSTREAM: metadata only


def test_sections_decode_to_the_design_and_its_placement():
    design = make_design()
    data = X.metadata_xclbin(design)
    body = {kind: data[off : off + size] for kind, _, off, size in section_table(data)}

    count, = struct.unpack_from("<i", body[6])
    banks = get_device("u280").memory_banks
    assert count == len(banks) == 32
    mems = [struct.unpack_from("<BB6xQQ16s", body[6], 8 + 40 * i) for i in range(count)]
    assert [m[4].rstrip(b"\0").decode() for m in mems] == list(banks)
    assert {m[0] for m in mems} == {6}  # MEM_HBM
    assert [m[1] for m in mems] == [1] * 3 + [0] * 29  # each region's ports from HBM[0]: 3, then 2

    ips = [struct.unpack_from("<IIQ64s", body[8], 8 + 80 * i) for i in range(2)]
    assert [ip[3].rstrip(b"\0") for ip in ips] == [b"vadd:vadd_1", b"relu_i32:relu_i32_1"]
    assert ips[0][2] < ips[1][2] and {ip[0] for ip in ips} == {1}  # IP_KERNEL, sorted by base

    count, = struct.unpack_from("<i", body[7])
    rows = [struct.unpack_from("<iii", body[7], 4 + 12 * i) for i in range(count)]
    assert rows == [(0, 0, 0), (1, 0, 1), (2, 0, 2), (0, 1, 0), (1, 1, 1)]

    xml = body[2].decode()
    assert '<arg name="b" addressQualifier="1" id="1" port="M_AXI_GMEM1" size="0x8" offset="0x1c"' in xml


def test_reader_round_trip_and_banks_match_connectivity_cfg(tmp_path):
    design = make_design()
    project = write_project(design, tmp_path / "proj")
    info = X.read_interface((project / METADATA_XCLBIN).read_bytes())
    assert info.kernels == {"vadd": ("a", "b", "c"), "relu_i32": ("x", "y")}
    assert not info.has_bitstream
    sp = [line[3:] for line in (project / "connectivity.cfg").read_text().splitlines() if line.startswith("sp=")]
    from_cfg = {}
    for entry in sp:  # sp=<kernel>_1.<port>:<bank>
        cu_port, bank = entry.rsplit(":", 1)
        cu, port = cu_port.split(".")
        from_cfg[(cu.rsplit("_1", 1)[0], port)] = bank
    assert info.banks == from_cfg


def test_u250_uses_ddr_like_placement():
    design = make_design("u250")
    info = X.read_interface(X.metadata_xclbin(design))
    placement = place(design, get_device("u250"))
    assert info.banks == placement.banks
    assert all(bank.startswith("DDR[") for bank in info.banks.values())


def test_deterministic_and_uuid_depends_on_the_interface():
    design = make_design()
    assert X.metadata_xclbin(design) == X.metadata_xclbin(make_design())
    kernel = design.kernels[0]
    renamed = dataclasses.replace(
        design,
        kernels=(dataclasses.replace(kernel, ports=(dataclasses.replace(kernel.ports[0], name="a2"),) + kernel.ports[1:]),)
        + design.kernels[1:],
    )
    assert X.read_interface(X.metadata_xclbin(renamed)).uuid != X.read_interface(X.metadata_xclbin(design)).uuid


@pytest.mark.parametrize(
    "data, message",
    [
        (b"not an xclbin at all", "magic"),
        (None, "truncated"),
    ],
)
def test_reader_rejects_garbage(data, message):
    if data is None:
        data = X.metadata_xclbin(make_design())[:600]
    with pytest.raises(X.XclbinFormatError, match=message):
        X.read_interface(data)


DUMP_CPP = r"""
#include <xrt/xrt_device.h>
#include <iostream>
int main(int, char** argv) {
  xrt::xclbin x(argv[1]);
  std::cout << "platform " << x.get_xsa_name() << "\n";
  for (const auto& k : x.get_kernels()) {
    std::cout << "kernel " << k.get_name() << " " << k.get_cus().size() << "\n";
    for (const auto& a : k.get_args()) {
      std::cout << "arg " << k.get_name() << " " << a.get_index() << " " << a.get_name() << " "
                << a.get_offset() << " " << a.get_size() << " " << a.get_host_type();
      for (const auto& m : a.get_mems()) std::cout << " " << m.get_tag();
      std::cout << "\n";
    }
  }
}
"""


@needs_xrt
def test_real_xrt_reads_kernels_args_offsets_types_and_banks(tmp_path):
    """xrt::xclbin (libxrt_coreutil) parses the file: no device or shim needed."""
    src = tmp_path / "dump.cpp"
    src.write_text(DUMP_CPP)
    exe = tmp_path / "dump"
    subprocess.run(
        ["g++", "-std=c++17", f"-I{XRT_INCLUDE}", str(src), "-o", str(exe),
         "-lxrt_coreutil", "-luuid", "-pthread"],
        check=True,
    )
    design = make_design()
    path = tmp_path / "d.xclbin"
    path.write_bytes(X.metadata_xclbin(design))
    out = subprocess.run([str(exe), str(path)], capture_output=True, text=True, check=True).stdout
    placement = place(design, get_device("u280"))
    expected = [f"platform {get_device('u280').platform}"]
    c_types = {"float32": "float*", "int32": "int32_t*"}
    for kernel in design.kernels:
        expected.append(f"kernel {kernel.name} 1")
        for i, port in enumerate(kernel.ports):
            bank = placement.banks[(kernel.name, port.name)]
            expected.append(
                f"arg {kernel.name} {i} {port.name} {0x10 + 12 * i} 8 {c_types[port.dtype]} {bank}"
            )
    assert out.splitlines() == expected
