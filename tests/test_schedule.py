"""tvm_spatial.customize / Schedule / build: primitives, typed errors, log and replay,
composition with instance ids and interface types, the callable module."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm.script import ir as I
from tvm.script import tirx as T

import tvm_spatial
from tvm_spatial import InterfaceMismatchError, ScheduleError, customize
from tvm_spatial.prim_build import build_many

N = 8


@T.prim_func(s_tir=True)
def gemm(A: T.Buffer((N, N), "float32"), B: T.Buffer((N, N), "float32"), C: T.Buffer((N, N), "float32")):
    for i, j, k in T.grid(N, N, N):
        with T.sblock("C"):
            vi, vj, vk = T.axis.remap("SSR", [i, j, k])
            with T.init():
                C[vi, vj] = T.float32(0)
            C[vi, vj] = C[vi, vj] + A[vi, vk] * B[vk, vj]


@I.ir_module
class TwoMM:
    @T.prim_func(s_tir=True)
    def gemm(A: T.Buffer((N, N), "float32"), B: T.Buffer((N, N), "float32"), C: T.Buffer((N, N), "float32")):
        for i, j, k in T.grid(N, N, N):
            with T.sblock("C"):
                vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                with T.init():
                    C[vi, vj] = T.float32(0)
                C[vi, vj] = C[vi, vj] + A[vi, vk] * B[vk, vj]

    @T.prim_func(s_tir=True)
    def main(A: T.Buffer((N, N), "float32"), B: T.Buffer((N, N), "float32"),
             C: T.Buffer((N, N), "float32"), D: T.Buffer((N, N), "float32")):
        tmp = T.alloc_buffer((N, N), "float32")
        TwoMM.gemm(A, B, tmp)
        TwoMM.gemm(tmp, C, D)


@T.prim_func(s_tir=True)
def producer_consumer(A: T.Buffer((N,), "float32"), C: T.Buffer((N,), "float32")):
    B = T.alloc_buffer((N,), "float32")
    for i in range(N):
        with T.sblock("B"):
            vi = T.axis.remap("S", [i])
            B[vi] = A[vi] * T.float32(2)
    for i in range(N):
        with T.sblock("C"):
            vi = T.axis.remap("S", [i])
            C[vi] = B[vi] + T.float32(1)


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, size=shape).astype("float32")


# ---- handles and the log ----------------------------------------------------------------


def test_handles_and_printable_log():
    s = customize(gemm)
    loops = s.get_loops("C")
    assert [l.name for l in loops] == ["i", "j", "k"] and loops.j == loops["j"] == loops[1]
    outer, inner = s.split(loops.j, factor=4)
    s.reorder("k", inner)
    s.pipeline("C/k", ii=1)
    s.unroll(inner)
    s.partition("B", dim=2, factor=4, kind="cyclic")
    text = str(s.log)
    assert text.splitlines() == [
        "s.split(loop='gemm:C/j', factor=4, nparts=None)",
        "s.reorder('gemm:C/k', 'gemm:C/j_1')",
        "s.pipeline(loop='gemm:C/k', ii=1)",
        "s.unroll(loop='gemm:C/j_1', factor=0)",
        "s.partition(buffer='gemm:B', dim=2, factor=4, kind='cyclic')",
    ]
    # annotations are in the IR itself
    script = s.module.script()
    assert "hls.pipeline_ii" in script and "hls.unroll" in script and "hls.partition" in script


def test_every_primitive_declares_its_handles():
    from tvm_spatial.schedule import Schedule

    for name in ("split", "reorder", "fuse", "unroll", "pipeline", "unfold", "dataflow", "compute_at",
                 "partition", "reshape", "cast", "quantize", "buffer_at", "reuse_at", "to", "specialize"):
        assert getattr(Schedule, name).roles, name


def test_replay_reproduces_the_module():
    s = customize(gemm)
    s.split("j", factor=2)
    s.fuse("C/i", "C/j_0")
    s.pipeline("k")
    s.partition("A", dim=1, factor=2, kind="block")
    s.buffer_at("C", "C/i_j_0_fused")
    again = customize(gemm).replay(s.log)
    tvm.ir.assert_structural_equal(again.module, s.module)


# ---- typed errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "apply, words",
    [
        (lambda s: s.pipeline("q"), ["no loop named 'q'", "C/i", "C/k"]),
        (lambda s: s.pipeline("X/i"), ["no sblock named 'X'", "C"]),
        (lambda s: s.partition("Z"), ["no buffer named 'Z'", "A, B, C"]),
        (lambda s: s.partition("A", dim=1, factor=3, kind="cyclic"), ["factor 3 does not divide", "1, 2, 4, 8"]),
        (lambda s: s.partition("A", dim=3), ["dim 3", "1..2"]),
        (lambda s: s.partition("A", kind="diagonal"), ["complete, block, cyclic"]),
        (lambda s: s.unroll("k", factor=9), ["0..8"]),
        (lambda s: s.pipeline("k", ii=0), ["positive"]),
        (lambda s: s.split("k"), ["exactly one of factor= or nparts="]),
        (lambda s: s.cast("A", "int8"), ["parameter"]),
    ],
)
def test_bad_input_raises_a_typed_error(apply, words):
    s = customize(gemm)
    with pytest.raises(ScheduleError) as info:
        apply(s)
    for word in words:
        assert word in str(info.value), str(info.value)
    assert len(s.log) == 0  # a refused primitive is not logged


def test_tvm_refusal_is_wrapped():
    s = customize(producer_consumer)
    with pytest.raises(ScheduleError, match="compute_at.*TVM refused it"):
        s.compute_at("C", "B/i")  # C is the consumer: it cannot move under its producer's loop


def test_pipeline_around_a_dataflow_region():
    s = customize(gemm)
    s.dataflow("C/j")
    with pytest.raises(ScheduleError, match="dataflow region"):
        s.pipeline("C/i")
    s2 = customize(gemm)
    s2.pipeline("C/i")
    with pytest.raises(ScheduleError, match="inside the pipelined loop"):
        s2.dataflow("C/k")


def test_to_between_stages_that_are_not_producer_and_consumer():
    s = customize(producer_consumer)
    with pytest.raises(ScheduleError, match="not a producer/consumer pair"):
        s.to("B", "B")  # sblock B writes B but does not read it
    with pytest.raises(ScheduleError, match="C does not read parameter A"):
        s.to("A", "C")  # a parameter streams only into the stage that reads it


def test_our_errors_do_not_hijack_tvms():
    """TVM's own ScheduleError must still come out as TVM's class."""
    from tvm import s_tir

    sch = s_tir.Schedule(gemm)
    with pytest.raises(s_tir.ScheduleError):
        sch.get_sblock("nope")


# ---- to (streams) and dataflow ----------------------------------------------------------


def test_stream_between_stages_and_dataflow():
    s = customize(producer_consumer)
    s.to("B", "C", depth=4)
    s.dataflow()
    m = tvm_spatial.build(s)
    code = m.hls_code
    assert "#include <hls_stream.h>" in code
    assert "static hls::stream<float> B;" in code and "#pragma HLS STREAM variable=B depth=4" in code
    assert "B.write(" in code and "B.read()" in code and "#pragma HLS DATAFLOW" in code
    a = _rand(N)
    np.testing.assert_allclose(m(a), a * 2 + 1, rtol=1e-6)


# ---- composition ------------------------------------------------------------------------


def _gemm_schedules():
    g0 = customize(gemm)
    g0.reorder("k", "j")
    g0.pipeline("j")
    g0.partition("B", dim=2, factor=2, kind="cyclic")
    g1 = customize(gemm)
    g1.pipeline("k", ii=2)
    g1.partition("A", dim=2, factor=4, kind="cyclic")
    return g0, g1


def test_compose_gemm_twice_into_2mm_with_ids():
    g0, g1 = _gemm_schedules()
    s = customize(TwoMM)
    s.compose(g0, id=0)
    s.compose(g1, id=1)
    assert {"gemm_0", "gemm_1"} <= set(s.function_names())
    m = tvm_spatial.build(s, name="two_mm")
    code = m.hls_code
    first = code.split("static void two_mm__gemm_0")[1].split("static void")[0]
    second = code.split("static void two_mm__gemm_1")[1].split("static void")[0]
    assert "PIPELINE II=1" in first and "variable=B type=cyclic factor=2 dim=2" in first
    assert "PIPELINE II=2" in second and "variable=A type=cyclic factor=4 dim=2" in second
    # the callee's parameter partition reached the caller's buffer
    assert "variable=tmp type=cyclic factor=4 dim=2" in code
    a, b, c = _rand(N, N, seed=1), _rand(N, N, seed=2), _rand(N, N, seed=3)
    np.testing.assert_allclose(m(a, b, c), a @ b @ c, rtol=1e-4, atol=1e-5)
    # the composed log is flat and replays on a fresh customization of the caller
    again = customize(TwoMM).replay(s.log)
    tvm.ir.assert_structural_equal(again.module, s.module)


def test_compose_without_id_customizes_every_call():
    g0, _ = _gemm_schedules()
    s = customize(TwoMM)
    s.compose(g0)
    assert s.function_names() == ["gemm", "main"]
    assert "variable=B type=cyclic factor=2 dim=2" in tvm_spatial.build(s, name="two_mm_shared").hls_code


def test_mismatched_composition_raises():
    _, g1 = _gemm_schedules()
    s = customize(TwoMM)
    s.partition("tmp", dim=2, factor=2, kind="block")
    before = s.module
    with pytest.raises(InterfaceMismatchError) as info:
        s.compose(g1, id=1)
    message = str(info.value)
    for word in ("'tmp'", "'A'", "gemm_1", "block 2 on dim 2", "cyclic 4 on dim 2"):
        assert word in message, message
    assert s.module.same_as(before)  # nothing half-applied


def test_composing_a_schedule_of_another_function_raises():
    @T.prim_func(s_tir=True)
    def gemm(A: T.Buffer((4, 4), "float32"), B: T.Buffer((4, 4), "float32"), C: T.Buffer((4, 4), "float32")):
        for i, j in T.grid(4, 4):
            with T.sblock("C"):
                vi, vj = T.axis.remap("SS", [i, j])
                C[vi, vj] = A[vi, vj] + B[vi, vj]

    with pytest.raises(InterfaceMismatchError, match="float32\\[4, 4\\].*|float32\\[8, 8\\]"):
        customize(TwoMM).compose(customize(gemm), id=0)


def test_bad_instance_id():
    g0, _ = _gemm_schedules()
    with pytest.raises(ScheduleError, match="id must be 0..1"):
        customize(TwoMM).compose(g0, id=5)


# ---- the built module -------------------------------------------------------------------


def test_build_calls_and_exports(tmp_path):
    s = customize(gemm)
    s.pipeline("k")
    mods = build_many({"g_sched": s, "g_plain": customize(gemm)})
    a, b = _rand(N, N, seed=4), _rand(N, N, seed=5)
    for m in mods.values():
        np.testing.assert_allclose(m(a, b), a @ b, rtol=1e-5, atol=1e-6)  # inputs only
        c = np.zeros((N, N), "float32")
        m(a, b, c)  # every parameter: the output is written in place
        np.testing.assert_allclose(c, a @ b, rtol=1e-5, atol=1e-6)
    with pytest.raises(tvm_spatial.EmulationError, match="expects float32"):
        mods["g_plain"](a.astype("float64"), b)
    out = mods["g_sched"].export_project(tmp_path / "proj")
    source = (out / "kernels" / "g_sched.cpp").read_text()
    assert source == mods["g_sched"].hls_code and "PIPELINE II=1" in source


# ---- systolic array: unfold + to --------------------------------------------------------
SM, SN, SK = 4, 4, 6


@T.prim_func(s_tir=True)
def systolic_gemm(A: T.Buffer((SM, SK), "float32"), B: T.Buffer((SK, SN), "float32"), C: T.Buffer((SM, SN), "float32")):
    # PE (i, j) takes A's row i from its left neighbour and B's column j from above
    A_fifo = T.alloc_buffer((SM, SN, SK), "float32")
    B_fifo = T.alloc_buffer((SM, SN, SK), "float32")
    for i, k in T.grid(SM, SK):
        with T.sblock("load_A"):
            vi, vk = T.axis.remap("SS", [i, k])
            A_fifo[vi, 0, vk] = A[vi, vk]
    for j, k in T.grid(SN, SK):
        with T.sblock("load_B"):
            vj, vk = T.axis.remap("SS", [j, k])
            B_fifo[0, vj, vk] = B[vk, vj]
    for i, j, k in T.grid(SM, SN, SK):
        with T.sblock("PE"):
            vi, vj, vk = T.axis.remap("SSR", [i, j, k])
            a = T.bind(A_fifo[vi, vj, vk])
            b = T.bind(B_fifo[vi, vj, vk])
            if vk == 0:
                C[vi, vj] = T.float32(0)
            C[vi, vj] = C[vi, vj] + a * b
            if vj < SN - 1:
                A_fifo[vi, vj + 1, vk] = a
            if vi < SM - 1:
                B_fifo[vi + 1, vj, vk] = b


def test_systolic_gemm_via_unfold_and_to():
    s = customize(systolic_gemm)
    s.unfold("PE/i", "PE")
    s.unfold("PE/j", "PE")
    s.unfold("load_A/i", "feed_A")
    s.unfold("load_B/j", "feed_B")
    s.pipeline("PE/k")
    s.to("A_fifo", "PE", depth=SK)
    s.to("B_fifo", "PE", depth=SK)
    s.dataflow()
    m = tvm_spatial.build(s)
    code = m.hls_code
    for text in ("static hls::stream<float> A_fifo[4][4];", "static hls::stream<float> B_fifo[4][4];",
                 "#pragma HLS STREAM variable=A_fifo depth=6", "// PE array PE: 4 processing elements",
                 "A_fifo[vi_1][(vj_1 + 1)].write(a);", "A_fifo[vi_1][vj_1].read()", "#pragma HLS DATAFLOW"):
        assert text in code, f"{text!r} missing from\n{code}"
    a, b = _rand(SM, SK, seed=6), _rand(SK, SN, seed=7)
    np.testing.assert_allclose(m(a, b), a @ b, rtol=1e-5, atol=1e-6)
    tvm.ir.assert_structural_equal(customize(systolic_gemm).replay(s.log).module, s.module)


def test_to_refuses_out_of_order_access():
    s = customize(systolic_gemm)
    # without unfolding, PE(i, j) reads stream (i, j) while i and j iterate: not one stream
    with pytest.raises(ScheduleError, match="out of stream order"):
        s.to("A_fifo", "PE")


# ---- reuse_at: line and window buffers --------------------------------------------------
H, W = 10, 12


@T.prim_func(s_tir=True)
def blur(A: T.Buffer((H, W), "float32"), B: T.Buffer((H - 2, W - 2), "float32")):
    for y, x in T.grid(H - 2, W - 2):
        with T.sblock("B"):
            vy, vx = T.axis.remap("SS", [y, x])
            B[vy, vx] = (A[vy, vx] + A[vy, vx + 1] * T.float32(2) + A[vy, vx + 2]
                         + A[vy + 1, vx] * T.float32(2) + A[vy + 1, vx + 1] * T.float32(4)
                         + A[vy + 1, vx + 2] * T.float32(2)
                         + A[vy + 2, vx] + A[vy + 2, vx + 1] * T.float32(2) + A[vy + 2, vx + 2]) / T.float32(16)


def _blur_reference(a):
    k = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], "float32") / 16
    return np.array([[(a[y:y + 3, x:x + 3] * k).sum() for x in range(W - 2)] for y in range(H - 2)])


def _blur_schedule():
    s = customize(blur)
    line = s.reuse_at("A", "B/y")
    window = s.reuse_at(line, "B/x")
    s.partition(window)
    s.pipeline("B/x")
    return s


def test_reuse_at_builds_line_and_window_buffers():
    s = _blur_schedule()
    m = tvm_spatial.build(s)
    code = m.hls_code
    for text in ("// line buffer: reuses A along loop y", "static float A_line[3][12];",
                 "// window buffer: reuses A_line along loop x", "static float A_window[3][3];",
                 "A_line[2][v_ax1] = A[v_y][v_ax1];", "#pragma HLS PIPELINE II=1"):
        assert text in code, f"{text!r} missing from\n{code}"
    a = _rand(H, W, seed=8)
    np.testing.assert_allclose(m(a), _blur_reference(a), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tvm_spatial.build(blur, name="blur_plain")(a), _blur_reference(a), rtol=1e-5, atol=1e-6)
    tvm.ir.assert_structural_equal(customize(blur).replay(s.log).module, s.module)


def test_reuse_axis_without_reuse():
    @T.prim_func(s_tir=True)
    def rowsum(A: T.Buffer((H, W), "float32"), B: T.Buffer((H, W - 1), "float32")):
        for y, x in T.grid(H, W - 1):
            with T.sblock("B"):
                vy, vx = T.axis.remap("SS", [y, x])
                B[vy, vx] = A[vy, vx] + A[vy, vx + 1]

    s = customize(rowsum)
    with pytest.raises(ScheduleError, match="no reuse along y"):
        s.reuse_at("A", "B/y")
    s.reuse_at("A", "B/x")  # along x the two reads overlap: a 2-element buffer of row y
    a = _rand(H, W, seed=9)
    np.testing.assert_allclose(tvm_spatial.build(s)(a), a[:, :-1] + a[:, 1:], rtol=1e-6)


# ---- the hand-customized kernels compile warning-free -----------------------------------


def test_customized_kernels_compile_with_werror(tmp_path):
    import os
    import subprocess

    from codegen_hls import emulation

    g0, g1 = _gemm_schedules()
    two = customize(TwoMM)
    two.compose(g0, id=0)
    two.compose(g1, id=1)
    sys_s = customize(systolic_gemm)
    for loop in ("PE/i", "PE/j", "load_A/i", "load_B/j"):
        sys_s.unfold(loop)
    sys_s.to("A_fifo", "PE")
    sys_s.to("B_fifo", "PE")
    stream = customize(producer_consumer)
    stream.to("B", "C")
    design = next(iter(build_many({"w_two_mm": two, "w_systolic": sys_s, "w_blur": _blur_schedule(),
                                   "w_stream": stream}).values())).design
    emulation.write_sources(design, tmp_path)
    for kernel in design.kernels:
        proc = subprocess.run(
            [emulation.host_compiler(), "-std=c++17", "-O2", "-c", "-isystem", str(emulation.xilinx_include_dir()),
             *emulation.STRICT_FLAGS, kernel.filename, "-o", os.devnull],
            cwd=tmp_path, capture_output=True, text=True,
        )
        assert proc.returncode == 0 and proc.stderr == "", f"{kernel.name}:\n{proc.stderr}"
