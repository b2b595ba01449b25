"""The Vitis project writer: files, connectivity, Makefile (checked with the real make), host.

The host-compile tests need XRT's headers (Debian: ``apt-get install libxrt-dev``) and are
skipped, with that reason, where they are missing.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import subprocess

import pytest

from codegen_hls import vitis_files
from codegen_hls.design import Design, Kernel, Port, Process
from codegen_hls.project import write_project
from codegen_hls.vitis_files import METADATA_XCLBIN
from tvm_spatial.devices import get_device
from tvm_spatial.errors import CodegenError, OutputDirError

XRT_INCLUDE = pathlib.Path("/usr/include/xrt")
HAS_XRT = (XRT_INCLUDE / "xrt" / "xrt_kernel.h").exists() or (XRT_INCLUDE / "xrt_kernel.h").exists()
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")
needs_xrt = pytest.mark.skipif(
    not HAS_XRT or shutil.which("g++") is None,
    reason="XRT headers not found under /usr/include/xrt (apt-get install libxrt-dev) or no g++",
)

COMMON_HEADER = "#pragma once\n#include <cstdint>\n"

# CRLF and a non-ASCII comment on purpose: the writer must not translate or re-encode.
VADD_SOURCE = (
    '#include "tvm_spatial_hls.h"\n'
    "// vadd: c = a + b (µ-benchmark)\r\n"
    'extern "C" void vadd(const float a[16], const float b[16], float c[16]) {\n'
    "#pragma HLS INTERFACE m_axi port=a bundle=gmem0 depth=16\n"
    "#pragma HLS INTERFACE m_axi port=b bundle=gmem1 depth=16\n"
    "#pragma HLS INTERFACE m_axi port=c bundle=gmem2 depth=16\n"
    "#pragma HLS INTERFACE s_axilite port=return\n"
    "  for (int i = 0; i < 16; ++i) {\n"
    "#pragma HLS PIPELINE II=1\n"
    "    c[i] = a[i] + b[i];\n"
    "  }\n"
    "}\n"
)

RELU_SOURCE = (
    '#include "tvm_spatial_hls.h"\n'
    'extern "C" void relu_i32(const int32_t x[2][4], int32_t y[2][4]) {\n'
    "#pragma HLS INTERFACE m_axi port=x bundle=gmem0 depth=8\n"
    "#pragma HLS INTERFACE m_axi port=y bundle=gmem1 depth=8\n"
    "#pragma HLS INTERFACE s_axilite port=return\n"
    "  for (int i = 0; i < 2; ++i) {\n"
    "    for (int j = 0; j < 4; ++j) {\n"
    "#pragma HLS PIPELINE II=1\n"
    "      y[i][j] = x[i][j] > 0 ? x[i][j] : 0;\n"
    "    }\n"
    "  }\n"
    "}"  # no final newline: must survive as-is
)


def make_design(device: str = "u280") -> Design:
    vadd = Kernel(
        name="vadd",
        source=VADD_SOURCE,
        ports=(
            Port("a", "float32", (16,), "in", "gmem0"),
            Port("b", "float32", (16,), "in", "gmem1"),
            Port("c", "float32", (16,), "out", "gmem2"),
        ),
        ops=("relax.add",),
    )
    relu = Kernel(
        name="relu_i32",
        source=RELU_SOURCE,
        ports=(
            Port("x", "int32", (2, 4), "in", "gmem0"),
            Port("y", "int32", (2, 4), "out", "gmem1"),
        ),
        ops=("relax.nn.relu",),
    )
    return Design(device=device, kernels=(vadd, relu), common_header=COMMON_HEADER)


@pytest.fixture
def design() -> Design:
    return make_design()


@pytest.fixture
def project(tmp_path, design) -> pathlib.Path:
    return write_project(design, tmp_path / "proj")


def tree(root: pathlib.Path) -> dict[str, tuple[bytes, bool]]:
    return {
        str(p.relative_to(root)): (p.read_bytes(), os.access(p, os.X_OK))
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def cfg_lines(project: pathlib.Path, key: str) -> list[str]:
    lines = (project / "connectivity.cfg").read_text().splitlines()
    return [line[len(key) + 1 :] for line in lines if line.startswith(key + "=")]


def make_dry_run(project: pathlib.Path, target: str) -> list[str]:
    result = subprocess.run(
        ["make", "-n", f"TARGET={target}"], cwd=project, capture_output=True, text=True, check=True
    )
    return result.stdout.splitlines()


def test_files_exist(project):
    assert set(tree(project)) == {
        "kernels/vadd.cpp",
        "kernels/relu_i32.cpp",
        f"kernels/{Design.COMMON_HEADER_NAME}",
        "connectivity.cfg",
        "Makefile",
        "host/host.cpp",
        "run.sh",
        "README.md",
        METADATA_XCLBIN,
    }
    assert os.access(project / "run.sh", os.X_OK)
    assert not os.access(project / "Makefile", os.X_OK)


def test_returns_absolute_path(tmp_path, design, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = write_project(design, "rel")
    assert out == tmp_path / "rel" and out.is_absolute()


def test_kernel_sources_are_byte_identical(project, design):
    for kernel in design.kernels:
        assert (project / "kernels" / kernel.filename).read_bytes() == kernel.source.encode("utf-8")
    header = project / "kernels" / Design.COMMON_HEADER_NAME
    assert header.read_bytes() == COMMON_HEADER.encode("utf-8")


def test_connectivity_has_compute_units_banks_and_slrs(project, design):
    text = (project / "connectivity.cfg").read_text()
    assert "[connectivity]" in text.splitlines()
    assert cfg_lines(project, "nk") == ["vadd:1:vadd_1", "relu_i32:1:relu_i32_1"]

    sp = dict(line.rsplit(":", 1) for line in cfg_lines(project, "sp"))
    expected_ports = {f"{k.name}_1.{p.name}" for k in design.kernels for p in k.ports}
    assert set(sp) == expected_ports
    hbm = get_device("u280").memory_banks
    # per region (the host runs them one after another), ports of equal size in order
    assert [sp[f"vadd_1.{p}"] for p in "abc"] == list(hbm[:3])
    assert [sp[f"relu_i32_1.{p}"] for p in "xy"] == list(hbm[:2])

    assert cfg_lines(project, "slr") == ["vadd_1:SLR0", "relu_i32_1:SLR1"]


@needs_make
def test_make_hw_runs_one_compile_per_kernel_and_one_link(project):
    lines = make_dry_run(project, "hw")
    compiles = [line for line in lines if line.startswith("v++ -c ")]
    links = [line for line in lines if line.startswith("v++ -l ")]
    assert len(compiles) == 2 and len(links) == 1
    assert any("-k vadd " in c and c.endswith("kernels/vadd.cpp") for c in compiles)
    assert any("-k relu_i32 " in c and c.endswith("kernels/relu_i32.cpp") for c in compiles)
    platform = get_device("u280").platform
    for line in compiles + links:
        assert "-t hw " in line and f"--platform {platform}" in line
    link = links[0]
    assert "--config connectivity.cfg" in link
    assert "--kernel_frequency 300" in link
    assert "-o build/hw/design.xclbin" in link
    assert link.endswith("build/hw/vadd.xo build/hw/relu_i32.xo")
    hosts = [line for line in lines if "host/host.cpp" in line]
    assert len(hosts) == 1 and "-lxrt_coreutil -luuid -pthread" in hosts[0]
    assert not any("emconfigutil" in line for line in lines)


@needs_make
def test_make_sw_emu_adds_emconfig(project):
    lines = make_dry_run(project, "sw_emu")
    vpp = [line for line in lines if line.startswith("v++ ")]
    assert len(vpp) == 3 and all("-t sw_emu " in line for line in vpp)
    emconfig = [line for line in lines if line.startswith("emconfigutil ")]
    assert emconfig == [f"emconfigutil --platform {get_device('u280').platform} --od ."]


@needs_make
def test_make_rejects_unknown_target(project):
    result = subprocess.run(
        ["make", "-n", "TARGET=hw_sim"], cwd=project, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "TARGET must be one of sw_emu, hw_emu, hw" in result.stderr


def test_non_empty_dir_without_force_is_refused(tmp_path, design):
    out = tmp_path / "proj"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputDirError) as info:
        write_project(design, out)
    message = str(info.value)
    assert str(out) in message and "force" in message
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj"]  # no staging dir left


def test_empty_existing_dir_is_used(tmp_path, design):
    out = tmp_path / "proj"
    out.mkdir()
    write_project(design, out)
    assert (out / "Makefile").is_file()


def test_force_replaces_old_tree(tmp_path, design):
    out = tmp_path / "proj"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    write_project(design, out, force=True)
    assert not (out / "stale.txt").exists()
    assert (out / "kernels" / "vadd.cpp").read_bytes() == VADD_SOURCE.encode("utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj"]


def test_failed_write_leaves_old_tree_and_no_partial_files(tmp_path, design, monkeypatch):
    import codegen_hls.project as project_module

    real_write_tree = project_module._write_tree

    def write_then_fail(root, files):
        real_write_tree(root, dict(list(files.items())[:2]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(project_module, "_write_tree", write_then_fail)
    out = tmp_path / "proj"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(OutputDirError, match="No space left on device"):
        write_project(design, out, force=True)
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj"]


def test_existing_file_is_refused_even_with_force(tmp_path, design):
    out = tmp_path / "proj"
    out.write_text("not a directory")
    with pytest.raises(OutputDirError, match="not a directory"):
        write_project(design, out, force=True)
    assert out.read_text() == "not a directory"


def test_unwritable_path_raises_output_dir_error(tmp_path, design):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = blocker / "sub" / "proj"
    with pytest.raises(OutputDirError) as info:
        write_project(design, out)
    assert str(out) in str(info.value)
    assert "directory" in str(info.value).lower()  # the OS reason, e.g. "Not a directory"
    assert blocker.read_text() == "x"


def test_unsupported_dtype_fails_before_touching_disk(tmp_path, design):
    bad = Kernel("k", "", (Port("p", "bfloat16", (4,), "in", "gmem0"),), ())
    broken = Design(device="u280", kernels=design.kernels + (bad,), common_header="")
    with pytest.raises(CodegenError, match="bfloat16"):
        write_project(broken, tmp_path / "proj")
    assert list(tmp_path.iterdir()) == []


def test_duplicate_kernel_names_are_rejected(tmp_path, design):
    twice = Design(device="u280", kernels=design.kernels + design.kernels[:1], common_header="")
    with pytest.raises(CodegenError, match="vadd"):
        write_project(twice, tmp_path / "proj")


def test_output_is_deterministic(tmp_path, design):
    first = write_project(design, tmp_path / "one")
    second = write_project(make_design(), tmp_path / "two")
    assert tree(first) == tree(second)


def test_u250_uses_ddr_banks(tmp_path):
    out = write_project(make_design("u250"), tmp_path / "proj")
    banks = [line.rsplit(":", 1)[1] for line in cfg_lines(out, "sp")]
    u250 = get_device("u250")
    # each region's ports from the first DDR bank: 3 then 2
    assert banks == [u250.memory_banks[i] for i in (0, 1, 2, 0, 1)]
    assert all(b.startswith("DDR[") for b in banks)
    assert f"PLATFORM ?= {u250.platform}" in (out / "Makefile").read_text().splitlines()


def test_banks_are_balanced_per_region_by_traffic_and_stripes_kept_apart():
    """Each region starts from empty banks (the host runs regions one after another); a
    weight a blocked matmul streams once per token block counts that many times; the
    stripes of one weight take distinct banks while there are any, even a fuller one.
    On the U250's four DDR banks, by hand: ``z`` (4,000 bytes) on DDR0; the weight's
    stripes (4 x 512 bytes, read 4 times: 2,048 each) on DDR1-3, the last on DDR0, the only
    bank without one of its stripes; ``y`` (400) on DDR1, the least loaded; the second
    region's only port on DDR0 again."""
    stripes = tuple(Port(f"w_s{c}", "float32", (2, 8, 8), "in", f"g1_s{c}", arg=1, stripe=(c, 4, 8, 64))
                    for c in range(4))
    ports = (Port("z", "float32", (1000,), "in", "g0", arg=0), *stripes,
             Port("y", "float32", (100,), "out", "g2", arg=2))
    linear = Process("k_p0_linear", "linear", 0, 0, 1, ("z", *(p.name for p in stripes)), ("y",),
                     matmul=(1, 32, 64, 8), weight_stripes=tuple(p.name for p in stripes), separable=True, rows=8)
    other = Port("q", "float32", (10,), "in", "g0", arg=0)
    design = Design("u250", (Kernel("k", "", ports, (linear,)), Kernel("m", "", (other,), ())), COMMON_HEADER)
    ddr = get_device("u250").memory_banks
    assert len(ddr) == 4
    banks = vitis_files.place(design, get_device("u250")).banks
    assert banks == {
        ("k", "z"): ddr[0], ("k", "w_s0"): ddr[1], ("k", "w_s1"): ddr[2], ("k", "w_s2"): ddr[3],
        ("k", "w_s3"): ddr[0], ("k", "y"): ddr[1], ("m", "q"): ddr[0],
    }


def test_ports_of_a_written_argument_share_one_bank_readers_do_not():
    """The heaviest buffer first, each on the least loaded bank: the ports of a written
    argument (one buffer object: a cache several processes update, 2 x 128 bytes) share
    one bank; a tensor only read through several ports gets a bank per port."""
    ports = (
        Port("x", "float32", (8,), "in", "gmem0", arg=0),
        Port("x_1", "float32", (8,), "in", "gmem1", arg=0),  # read twice: two banks
        Port("cache", "float32", (4, 8), "inout", "gmem2", arg=1),
        Port("w", "float32", (8,), "in", "gmem3", arg=2),
        Port("cache_1", "float32", (4, 8), "inout", "gmem4", arg=1),  # the same cache
        Port("y", "float32", (8,), "out", "gmem5", arg=3),
    )
    design = Design("u280", (Kernel("k", "", ports, ()),), COMMON_HEADER)
    hbm = get_device("u280").memory_banks
    placement = vitis_files.place(design, get_device("u280"))
    assert placement.banks == {
        ("k", "cache"): hbm[0], ("k", "cache_1"): hbm[0], ("k", "x"): hbm[1], ("k", "x_1"): hbm[2],
        ("k", "w"): hbm[3], ("k", "y"): hbm[4],
    }
    cfg = vitis_files.connectivity_cfg(design, get_device("u280"), placement)
    assert f"sp=k_1.cache:{hbm[0]}" in cfg and f"sp=k_1.cache_1:{hbm[0]}" in cfg
    assert "share one bank: the host passes them one buffer object" in cfg
    readme = vitis_files.readme(design, get_device("u280"), placement)
    assert "`k.cache` for `k.cache`, `k.cache_1`" in readme
    # two ports of one buffer must agree on what it holds
    mismatched = (*ports[:4], dataclasses.replace(ports[4], shape=(4, 4)), ports[5])
    with pytest.raises(CodegenError, match="'cache' and 'cache_1' share written argument 1"):
        vitis_files.place(dataclasses.replace(design, kernels=(Kernel("k", "", mismatched, ()),)),
                          get_device("u280"))


def test_designs_without_a_written_argument_keep_their_connectivity_text(project):
    text = (project / "connectivity.cfg").read_text()
    assert "share one bank" not in text and "share one buffer" not in (project / "README.md").read_text()


def test_readme_lists_every_port_with_its_bank(project, design):
    text = (project / "README.md").read_text()
    for needle in ("Vitis 2022.2", "XRT 2.13", get_device("u280").platform, "make TARGET=sw_emu"):
        assert needle in text
    assert "| `a` | float32 | 16 | in | HBM[0] | 64 |" in text
    assert "| `y` | int32 | 2x4 | out | HBM[1] | 32 |" in text


def test_run_sh_sets_emulation_mode_and_rejects_bad_target(project):
    text = (project / "run.sh").read_text()
    assert 'export XCL_EMULATION_MODE="$TARGET"' in text
    assert subprocess.run(["sh", "-n", str(project / "run.sh")]).returncode == 0
    env = {**os.environ, "TARGET": "bogus"}
    result = subprocess.run([str(project / "run.sh")], env=env, capture_output=True, text=True)
    assert result.returncode == 1 and "TARGET must be one of" in result.stderr


@needs_gxx
def test_kernels_compile_against_the_common_header(project, design):
    """The kernels/ layout and -I kernels in the Makefile let each kernel find the header."""
    for kernel in design.kernels:
        subprocess.run(
            ["g++", "-std=c++17", "-fsyntax-only", "-Wall", "-Werror", "-Wno-unknown-pragmas",
             "-I", "kernels", f"kernels/{kernel.filename}"],
            cwd=project, check=True,
        )


@needs_xrt
def test_host_compiles_and_reports_bad_inputs(project, tmp_path):
    exe = tmp_path / "host.exe"
    subprocess.run(
        ["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", f"-I{XRT_INCLUDE}",
         "host/host.cpp", "-o", str(exe), "-lxrt_coreutil", "-luuid", "-pthread"],
        cwd=project, check=True,
    )
    usage = subprocess.run([str(exe)], capture_output=True, text=True)
    assert usage.returncode == 1 and "usage:" in usage.stderr

    data = tmp_path / "data"
    data.mkdir()
    missing = subprocess.run([str(exe), "x.xclbin", str(data)], capture_output=True, text=True)
    assert missing.returncode == 1
    assert missing.stderr.splitlines() == [
        f"error: cannot open input file {data}/vadd.a.bin (float32[16], 64 bytes)"
    ]

    (data / "vadd.a.bin").write_bytes(bytes(64))
    (data / "vadd.b.bin").write_bytes(bytes(60))
    short = subprocess.run([str(exe), "x.xclbin", str(data)], capture_output=True, text=True)
    assert short.returncode == 1
    assert f"{data}/vadd.b.bin has 60 bytes; float32[16] needs 64" in short.stderr


@needs_xrt
@needs_make
def test_run_sh_builds_host_with_make_and_runs_it(project):
    """run.sh -> make host (the Makefile's real g++ line) -> ./host.exe on data/."""
    env = {k: v for k, v in os.environ.items() if k not in ("XILINX_XRT", "XCL_EMULATION_MODE")}
    env["TARGET"] = "hw"
    result = subprocess.run([str(project / "run.sh")], env=env, capture_output=True, text=True)
    assert (project / "host.exe").is_file(), result.stderr
    assert result.returncode == 1
    assert "error: cannot open input file data/vadd.a.bin" in result.stderr


@needs_make
@pytest.mark.parametrize("target", ["sw_emu", "hw_emu", "hw"])
def test_make_dry_run_prints_exact_vpp_commands_for_a_real_build(tmp_path, target):
    """The bundled encoder block through relax.build: every v++ line, in order, verbatim."""
    from tvm import relax

    import tvm_spatial
    from tvm_spatial import examples

    design = tvm_spatial.design_of(relax.build(examples.encoder_block().mod, target="vitis_spatial"))
    project = write_project(design, tmp_path / "proj")
    platform = get_device("u280").platform
    lines = make_dry_run(project, target)
    kernels = design.vitis_kernels()  # the encoder block spans the SLRs: one kernel per SLR
    assert len(kernels) > len(design.kernels)
    xos = [f"build/{target}/{k.name}.xo" for k in kernels]
    expected = [
        f"v++ -c -t {target} --platform {platform} -k {k.name} -I kernels --temp_dir build/{target}/_x"
        f" -o {xo} kernels/{k.filename}"
        for k, xo in zip(kernels, xos)
    ] + [
        f"v++ -l -t {target} --platform {platform} --config connectivity.cfg --kernel_frequency 300"
        f" --temp_dir build/{target}/_x -o build/{target}/design.xclbin {' '.join(xos)}"
    ]
    assert [line for line in lines if line.startswith("v++ ")] == expected
    emconfig = [line for line in lines if line.startswith("emconfigutil ")]
    assert emconfig == ([f"emconfigutil --platform {platform} --od ."] if target != "hw" else [])
    # clean removes what make built, never the generated sources or the metadata xclbin
    clean = subprocess.run(["make", "-n", "clean"], cwd=project, capture_output=True, text=True, check=True)
    assert "metadata" not in clean.stdout and "kernels" not in clean.stdout
