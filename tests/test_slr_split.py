"""A region spanning several SLRs becomes one Vitis kernel per SLR, linked by AXI streams.

The GPT2 fixture (2 layers), spread over the U280's 3 SLRs (forced: the allocation would
pack it into fewer, ``test_allocation``), with the work balanced between them. Its
kernel file must hold one ``extern "C"`` DATAFLOW top per SLR segment, with an
``axis`` interface for every stream crossing a boundary, and the project must build them
as separate kernels (``v++ -c -k`` each), place each on its SLR and link the crossings
with ``stream_connect``. The expectations are derived here from the design's Process and
Stream records (which SLR each process is on, which process feeds which), not from the
segment records the code generator wrote; numbers come from onnxruntime's outputs in the
fixture, the host from Debian's XRT under its ``noop`` shim.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_spatial
from relax_passes import offloaded_regions
from codegen_hls import emulation
from codegen_hls import kernel as kernel_module
from codegen_hls import xrt_runtime
from codegen_hls.c_types import stream_element
from codegen_hls.lint import lint_design, lint_links
from codegen_hls.project import project_files, write_project
from codegen_hls.vitis_files import METADATA_XCLBIN
from codegen_hls.xclbin import metadata_xclbin, read_interface
from tvm_spatial import examples
from tvm_spatial.errors import ToolchainError

sys.path.insert(0, str(Path(__file__).parent))
from test_models import load_fixture  # noqa: E402
from test_xrt_host import NOOP_LIB, XRT_INCLUDE, noop_env, write_inputs  # noqa: E402,F401

needs_xrt = pytest.mark.skipif(
    not (XRT_INCLUDE / "xrt" / "xrt_kernel.h").exists() or NOOP_LIB is None,
    reason="needs XRT's headers in /usr/include/xrt and libxrt_noop.so.2 (apt-get install libxrt-dev libxrt1)",
)


@dataclasses.dataclass
class Built:
    ex: object
    design: object
    inputs: dict
    outputs: dict


@pytest.fixture(scope="module")
def gpt2() -> Built:
    path, inputs, outputs, _ = load_fixture("gpt2_tiny")
    with tvm_spatial.allocation(slrs=3, layers="unroll"):  # one region, as the docstring says
        ex = relax.build(tvm_spatial.frontend.from_onnx(path), target="vitis_spatial")
    return Built(ex, tvm_spatial.design_of(ex), inputs, outputs)


@pytest.fixture(scope="module")
def project(gpt2, tmp_path_factory) -> Path:
    return write_project(gpt2.design, tmp_path_factory.mktemp("gpt2") / "proj")


def crossings(kernel) -> list[tuple[str, int, int]]:
    """(stream, producer SLR, consumer SLR) of every stream whose ends are on different SLRs,
    from the Process and Stream records alone."""
    slr = {p.name: p.slr for p in kernel.processes}
    return [(s.name, slr[s.producer], slr[s.consumer]) for s in kernel.streams if slr[s.producer] != slr[s.consumer]]


def segment_name(kernel, slr: int) -> str:
    return f"{kernel.name}_slr{slr}"


# -- numbers --------------------------------------------------------------------------------


def test_split_design_still_matches_onnxruntime(gpt2):
    assert len(gpt2.design.kernels[0].segments) == 3
    vm = relax.VirtualMachine(gpt2.ex, tvm.cpu())
    got = vm["main"](*[tvm.runtime.tensor(v) for v in gpt2.inputs.values()])
    got = [got] if isinstance(got, tvm.runtime.Tensor) else list(got)
    assert len(got) == len(gpt2.outputs)
    for g, (name, want) in zip(got, gpt2.outputs.items()):
        np.testing.assert_allclose(g.numpy(), want, rtol=1e-4, atol=1e-4, err_msg=name)


# -- the design record ----------------------------------------------------------------------


def test_one_segment_per_slr_with_its_processes_ports_and_links(gpt2):
    kernel = gpt2.design.kernels[0]
    slrs = sorted({p.slr for p in kernel.processes})
    assert slrs == [0, 1, 2]
    assert [(s.name, s.slr) for s in kernel.segments] == [(segment_name(kernel, n), n) for n in slrs]
    for seg in kernel.segments:
        assert list(seg.processes) == [p.name for p in kernel.processes if p.slr == seg.slr]
        used = {a for p in kernel.processes if p.slr == seg.slr for a in (*p.inputs, *p.outputs)}
        assert list(seg.ports) == [p.name for p in kernel.ports if p.name in used]
    # every port belongs to exactly one segment
    owners = [n for seg in kernel.segments for n in seg.ports]
    assert sorted(owners) == sorted(p.name for p in kernel.ports)
    # every crossing is an output of the producer's segment and an input of the consumer's
    by_slr = {s.slr: s for s in kernel.segments}
    streams = {s.name: s for s in kernel.streams}
    expected = crossings(kernel)
    assert expected, "the split must cut some streams"
    for name, src, dst in expected:
        out = next(a for a in by_slr[src].axis if a.name == name)
        inp = next(a for a in by_slr[dst].axis if a.name == name)
        assert (out.direction, out.peer) == ("out", by_slr[dst].name)
        assert (inp.direction, inp.peer) == ("in", by_slr[src].name)
        for a in (out, inp):
            assert (a.dtype, a.elements, a.depth) == (streams[name].dtype, streams[name].elements, streams[name].depth)
    assert sum(len(s.axis) for s in kernel.segments) == 2 * len(expected)
    # the manifest round-trips (the exported library writes its project from it)
    assert type(gpt2.design).from_json(gpt2.design.to_json()) == gpt2.design


def test_cuts_are_few_and_between_balanced_parts(gpt2):
    kernel = gpt2.design.kernels[0]
    per_cut: dict[tuple[int, int], int] = {}
    for _, src, dst in crossings(kernel):
        per_cut[(src, dst)] = per_cut.get((src, dst), 0) + 1
    # a transformer layer always has its residual beside the main path: two streams a cut
    assert sorted(per_cut) == [(0, 1), (1, 2)] and max(per_cut.values()) <= 2, per_cut
    work = [sum(p.work for p in kernel.processes if p.slr == s) for s in range(3)]
    assert max(work) <= 2 * min(work), work


def test_cut_moves_to_where_fewer_streams_cross():
    """Nine processes over 2 SLRs: the balanced cut (before process 4) is crossed by 3
    streams, the one before process 5 -- as close to the balance point -- by one."""
    works = [10, 10, 10, 10, 2, 10, 10, 10, 10]
    links = [(i, i + 1) for i in range(8)] + [(1, 4), (2, 4)]
    assert kernel_module._slrs(works, 2) == [0, 0, 0, 0, 1, 1, 1, 1, 1]
    assert kernel_module._slrs(works, 2, links) == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    # no better place within the slack: the balanced cut stays
    assert kernel_module._slrs(works, 2, [(i, i + 1) for i in range(8)]) == [0, 0, 0, 0, 1, 1, 1, 1, 1]


def _gpt2_functions():
    from relax_passes import host_operators, partition_for_vitis_spatial

    path, *_ = load_fixture("gpt2_tiny")
    part = partition_for_vitis_spatial(tvm_spatial.frontend.from_onnx(path))
    funcs = offloaded_regions(part)
    return funcs, host_operators(part)


def test_placement_moves_named_processes_and_the_cuts_round_trip():
    """``placement`` (what tuned records and ``allocation(placement=...)`` give the codegen)
    moves exactly the named processes; the model's view of a cut move places the same."""
    from tvm_spatial.errors import CodegenError, UsageError
    from tvm_spatial.estimate import design_work

    funcs, host_ops = _gpt2_functions()
    base = kernel_module.plan_design(funcs, "u280", host_ops, slrs=3)
    procs = base.kernels[0].processes
    first_of_slr1 = next(i for i, p in enumerate(procs) if p.slr == 1)
    moved = kernel_module.plan_design(funcs, "u280", host_ops, slrs=3, placement={procs[first_of_slr1].name: 0})
    assert [p.slr for p in moved.kernels[0].processes] == [
        0 if i == first_of_slr1 else p.slr for i, p in enumerate(procs)]
    # the same move as the tuner makes it: the first cut one process later
    work = design_work(base)
    (kernel, cuts), = work.cuts().items()
    later = (cuts[0] + 1, *cuts[1:])
    placement = work.placement_for_cuts({kernel: later})
    assert design_work(moved).cuts() == {kernel: later}
    assert {n: s for n, s in placement.items() if s != dict((p.name, p.slr) for p in procs)[n]} == {
        procs[first_of_slr1].name: 0}
    moved_work = work.with_placement(placement)
    slr_of = {p.name: p.slr for p in moved_work.processes}
    assert all(s.slr == slr_of[s.producer] for s in moved_work.streams)
    with pytest.raises(ValueError, match="not increasing"):
        work.placement_for_cuts({kernel: (cuts[1], cuts[0])})
    with pytest.raises(CodegenError, match="names no process"):
        kernel_module.plan_design(funcs, "u280", host_ops, placement={"k9_p0_nothing": 1})
    with pytest.raises(CodegenError, match="has SLRs 0..2"):
        kernel_module.plan_design(funcs, "u280", host_ops, placement={procs[0].name: 3})
    with pytest.raises(UsageError, match="SLR index"):
        with tvm_spatial.allocation(placement={procs[0].name: -1}):
            pass


# -- the HLS source -------------------------------------------------------------------------


def _top_signature(source: str, name: str) -> str:
    match = re.search(rf'^extern "C" void {name}\((.*)\) {{$', source, re.M)
    assert match, f"no extern \"C\" top {name}"
    return match.group(1)


def test_source_has_one_dataflow_top_per_segment_with_axis_ports(gpt2):
    kernel = gpt2.design.kernels[0]
    source = kernel.source
    tops = re.findall(r'^extern "C" void (\w+)\(', source, re.M)
    assert tops == [segment_name(kernel, s) for s in range(3)]
    slr = {p.name: p.slr for p in kernel.processes}
    for seg in kernel.segments:
        signature = _top_signature(source, seg.name)
        body = source.split(f'extern "C" void {seg.name}(', 1)[1].split("\n}\n", 1)[0]
        assert "#pragma HLS DATAFLOW" in body
        for name, src, dst in crossings(kernel):
            if seg.slr not in (src, dst):
                assert name not in signature
                continue
            element = stream_element(*next((st.dtype, st.width) for st in kernel.streams if st.name == name))
            assert f"hls::stream<{element}>& {name}" in signature
            assert f"#pragma HLS INTERFACE axis port={name}" in body
            assert f'hls::stream<{element}> {name}("' not in body  # an argument, not a local FIFO
        for proc in kernel.processes:
            called = re.search(rf"^\s*{proc.name}\(", body, re.M) is not None
            assert called == (slr[proc.name] == seg.slr), proc.name
    # the Relax entry point stays, for C simulation only, calling the segments in SLR order
    wrapper = source.split("#ifndef __SYNTHESIS__\n", 1)[1].split("#endif", 1)[0]
    calls = re.findall(rf"^\s*({kernel.name}_slr\d)\(", wrapper, re.M)
    assert calls == [segment_name(kernel, s) for s in range(3)]
    assert f"void {kernel.name}(" in wrapper


def test_kernel_file_compiles_with_werror(gpt2, tmp_path):
    emulation.write_sources(gpt2.design, tmp_path)
    kernel = gpt2.design.kernels[0]
    cmd = [
        emulation.host_compiler(), "-std=c++17", "-O2", "-c", "-isystem", str(emulation.xilinx_include_dir()),
        *emulation.STRICT_FLAGS, kernel.filename, "-o", os.devnull,
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_codegen_is_deterministic(gpt2):
    path, *_ = load_fixture("gpt2_tiny")
    with tvm_spatial.allocation(slrs=3, layers="unroll"):
        again = tvm_spatial.design_of(relax.build(tvm_spatial.frontend.from_onnx(path), target="vitis_spatial"))
    assert again.to_json() == gpt2.design.to_json()
    assert project_files(again) == project_files(gpt2.design)


# -- the Vitis project ----------------------------------------------------------------------


def test_connectivity_places_segments_and_links_every_crossing(gpt2, project):
    kernel = gpt2.design.kernels[0]
    lines = (project / "connectivity.cfg").read_text().splitlines()
    names = [segment_name(kernel, s) for s in range(3)]
    assert [ln for ln in lines if ln.startswith("nk=")] == [f"nk={n}:1:{n}_1" for n in names]
    assert [ln for ln in lines if ln.startswith("slr=")] == [f"slr={n}_1:SLR{s}" for s, n in enumerate(names)]
    depth = {s.name: s.depth for s in kernel.streams}
    assert [ln for ln in lines if ln.startswith("stream_connect=")] == [
        f"stream_connect={segment_name(kernel, src)}_1.{name}:{segment_name(kernel, dst)}_1.{name}:{depth[name]}"
        for name, src, dst in crossings(kernel)
    ]
    # each m_axi port on its segment's compute unit
    home = {p.name: p.slr for p in kernel.processes}
    sp = [ln for ln in lines if ln.startswith("sp=")]
    assert len(sp) == len(kernel.ports)
    for port in kernel.ports:
        owner = next(home[p.name] for p in kernel.processes if port.name in (*p.inputs, *p.outputs))
        assert sum(ln.startswith(f"sp={segment_name(kernel, owner)}_1.{port.name}:") for ln in sp) == 1


def test_make_compiles_each_segment_kernel_from_the_one_source(gpt2, project):
    kernel = gpt2.design.kernels[0]
    out = subprocess.run(["make", "-n", "TARGET=hw"], cwd=project, capture_output=True, text=True, check=True)
    compiles = [ln for ln in out.stdout.splitlines() if ln.startswith("v++ -c ")]
    assert len(compiles) == 3
    for s, line in enumerate(compiles):
        name = segment_name(kernel, s)
        assert f" -k {name} " in line and line.endswith(f"-o build/hw/{name}.xo kernels/{kernel.filename}")
    link = [ln for ln in out.stdout.splitlines() if ln.startswith("v++ -l ")]
    assert len(link) == 1 and all(f"build/hw/{segment_name(kernel, s)}.xo" in link[0] for s in range(3))


def test_metadata_xclbin_declares_stream_arguments(gpt2):
    info = read_interface(metadata_xclbin(gpt2.design))
    for seg in gpt2.design.kernels[0].segments:
        assert info.kernels[seg.name] == (*seg.ports, *(a.name for a in seg.axis))
        assert info.streams[seg.name] == tuple(a.name for a in seg.axis)
        # only m_axi arguments have a memory bank
        assert {arg for (k, arg) in info.banks if k == seg.name} == set(seg.ports)


# -- lint: a bad crossing is caught ---------------------------------------------------------


def _first_link(kernel):
    name, src, dst = crossings(kernel)[0]
    return name, segment_name(kernel, src), segment_name(kernel, dst)


def test_lint_passes_and_catches_a_width_mismatch(gpt2):
    assert lint_design(gpt2.design) == []
    kernel = gpt2.design.kernels[0]
    name, _, consumer = _first_link(kernel)
    head, tail = kernel.source.split(f'extern "C" void {consumer}(', 1)
    element = stream_element(*next((st.dtype, st.width) for st in kernel.streams if st.name == name))
    bad_source = head + f'extern "C" void {consumer}(' + tail.replace(
        f"hls::stream<{element}>& {name}", f"hls::stream<double>& {name}", 1
    )
    bad = dataclasses.replace(gpt2.design, kernels=(dataclasses.replace(kernel, source=bad_source),))
    found = [f for f in lint_design(bad) if f.rule == "axis-port"]
    assert len(found) == 1 and f"'{name}' of '{consumer}' carries 'double'" in found[0].message, found


def test_lint_catches_a_missing_axis_pragma(gpt2):
    kernel = gpt2.design.kernels[0]
    name, producer, _ = _first_link(kernel)
    bad_source = kernel.source.replace(f"#pragma HLS INTERFACE axis port={name}\n", "", 1)
    bad = dataclasses.replace(gpt2.design, kernels=(dataclasses.replace(kernel, source=bad_source),))
    found = [f for f in lint_design(bad) if f.rule == "axis-port"]
    assert found and all(name in f.message for f in found)
    assert any(f"'{producer}' has no '#pragma HLS INTERFACE axis port={name}'" in f.message for f in found)


def test_lint_catches_a_missing_or_shallow_stream_connect(gpt2, project):
    kernel = gpt2.design.kernels[0]
    cfg = (project / "connectivity.cfg").read_text()
    assert lint_links(gpt2.design, cfg) == []
    name, producer, consumer = _first_link(kernel)
    line = next(ln for ln in cfg.splitlines() if ln.startswith(f"stream_connect={producer}_1.{name}:"))
    missing = lint_links(gpt2.design, cfg.replace(line + "\n", ""))
    assert [f.rule for f in missing] == ["axis-link"]
    assert f"no stream_connect links '{producer}.{name}' to '{consumer}.{name}'" in missing[0].message
    deep = next(s for s in kernel.streams if s.depth > 2 and any(c[0] == s.name for c in crossings(kernel)))
    deep_line = next(ln for ln in cfg.splitlines() if f".{deep.name}:" in ln)
    shallow = lint_links(gpt2.design, cfg.replace(deep_line, deep_line.rsplit(":", 1)[0] + ":2"))
    assert [f.rule for f in shallow] == ["axis-link"] and f"needs depth {deep.depth}" in shallow[0].message
    wrong = lint_links(gpt2.design, cfg + f"stream_connect={producer}_1.nope:{consumer}_1.nope:2\n")
    assert [f.rule for f in wrong] == ["axis-link"] and "links no stream crossing" in wrong[0].message


def test_lint_catches_ends_that_disagree(gpt2):
    kernel = gpt2.design.kernels[0]
    seg = kernel.segments[1]
    axis = tuple(dataclasses.replace(a, elements=a.elements + 1) if a.direction == "in" else a for a in seg.axis)
    segments = (kernel.segments[0], dataclasses.replace(seg, axis=axis), *kernel.segments[2:])
    bad = dataclasses.replace(gpt2.design, kernels=(dataclasses.replace(kernel, segments=segments),))
    found = [f for f in lint_links(bad) if f.rule == "axis-link"]
    assert found and all("both ends of a link must agree" in f.message for f in found)


# -- the host, through Debian's XRT under the noop shim --------------------------------------


@needs_xrt
def test_host_runs_all_segments_under_noop(gpt2, project, noop_env, tmp_path):
    exe = project / "host.exe"
    subprocess.run(
        ["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", f"-I{XRT_INCLUDE}", "host/host.cpp", "-o", str(exe),
         "-lxrt_coreutil", "-luuid", "-pthread"],
        cwd=project, check=True,
    )
    write_inputs(gpt2.design, project / "data", {})
    result = subprocess.run([str(exe), METADATA_XCLBIN, "data"], cwd=project, env=noop_env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    kernel = gpt2.design.kernels[0]
    last = segment_name(kernel, 2)
    assert result.stdout.splitlines() == [f"{last}: wrote data/{last}.out.out.bin"]
    # an xclbin whose segment lacks a stream argument does not match this host
    seg = kernel.segments[1]
    cut = dataclasses.replace(seg, axis=seg.axis[:-1])
    other = dataclasses.replace(kernel, segments=(kernel.segments[0], cut, kernel.segments[2]))
    bad = tmp_path / "bad.xclbin"
    bad.write_bytes(metadata_xclbin(dataclasses.replace(gpt2.design, kernels=(other,))))
    result = subprocess.run([str(exe), str(bad), "data"], cwd=project, env=noop_env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert f"kernel '{seg.name}' has no argument '{seg.axis[-1].name}' at index {len(seg.ports) + len(seg.axis) - 1}" \
        in result.stderr


@needs_xrt
def test_runtime_runs_the_region_through_xrt_and_checks_stream_args(gpt2, project, noop_env, monkeypatch, tmp_path):
    for key in ("XILINX_XRT", "XCL_EMULATION_MODE"):
        monkeypatch.setenv(key, noop_env[key])
    monkeypatch.setenv("TVM_SPATIAL_CACHE_DIR", str(tmp_path / "cache" / "emulation"))
    xclbin = project / METADATA_XCLBIN
    runner = xrt_runtime.XRTRunner(gpt2.design, xclbin)
    kernel = gpt2.design.kernels[0]
    inputs = {p.name: np.zeros(p.shape, p.dtype) for p in kernel.ports if p.direction == "in"}
    outputs = runner.run(kernel.name, inputs)
    assert {n: a.shape for n, a in outputs.items()} == {p.name: p.shape for p in kernel.ports if p.direction == "out"}
    # the same argument names, but the crossings declared as memory pointers: refused
    data = xclbin.read_bytes()
    assert b'addressQualifier="4"' in data
    plain = tmp_path / "plain.xclbin"
    plain.write_bytes(data.replace(b'addressQualifier="4"', b'addressQualifier="1"'))
    name = kernel.segments[0].axis[0].name
    with pytest.raises(ToolchainError, match=f"argument '{name}' of kernel '{kernel.segments[0].name}' is an AXI stream"):
        xrt_runtime.check_xclbin(gpt2.design, plain, hardware=False)


# -- a region on one SLR is unchanged --------------------------------------------------------


def test_region_on_one_slr_stays_one_kernel(tmp_path):
    """With every process on one SLR (forced here), the region is the single top it always
    was: no segment, no AXI-stream port, no stream_connect, and the same process calls."""
    with tvm_spatial.allocation(slrs=1):
        design = tvm_spatial.design_of(relax.build(examples.mlp().mod, target="vitis_spatial"))
    kernel = design.kernels[0]
    assert kernel.segments == ()
    assert [v.name for v in design.vitis_kernels()] == [kernel.name]
    assert re.findall(r'^extern "C" void (\w+)\(', kernel.source, re.M) == [kernel.name]
    assert "axis" not in kernel.source and "__SYNTHESIS__" not in kernel.source
    cfg = project_files(design)["connectivity.cfg"][0].decode()
    assert "stream_connect" not in cfg and f"slr={kernel.name}_1:SLR0" in cfg


def test_a_region_without_macs_stays_on_one_slr():
    """BERT's mask region (astype, gather, logical and, where) spread over the SLRs would
    only add AXI-stream links: with the design on 3 SLRs it stays on one, one kernel, while
    the layer's region is still split. The build still matches onnxruntime."""
    path, inputs, outputs, _ = load_fixture("bert_tiny")
    with tvm_spatial.allocation(slrs=3):
        ex = relax.build(tvm_spatial.frontend.from_onnx(path), target="vitis_spatial")
    design = tvm_spatial.design_of(ex)
    plain = [k for k in design.kernels if not any(p.matmul or p.op == "attention" for p in k.processes)]
    with_macs = [k for k in design.kernels if k not in plain]
    assert any(len(k.processes) > 1 for k in plain)  # the mask region: more than one process
    for kernel in plain:
        assert {p.slr for p in kernel.processes} == {0} and kernel.segments == ()
        assert not crossings(kernel)
    assert any(len({p.slr for p in k.processes}) > 1 for k in with_macs)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    got = vm["main"](*[tvm.runtime.tensor(v) for v in inputs.values()])
    got = got.numpy() if isinstance(got, tvm.runtime.Tensor) else got[0].numpy()
    np.testing.assert_allclose(got, next(iter(outputs.values())), rtol=1e-4, atol=1e-4)
