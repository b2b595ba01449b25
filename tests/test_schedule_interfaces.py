"""Streams across composed calls (stream-ness is part of a function's interface type) and
``buffer_at`` with a local buffer the size of the region below its axis.

References are numpy; the HLS text is checked for the structures the schedule implies."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
import tvm
from tvm.script import ir as I
from tvm.script import tirx as T

import tvm_spatial
from codegen_hls import emulation
from tvm_spatial import InterfaceMismatchError, ScheduleError, customize
from tvm_spatial.prim_build import build_many

from test_schedule import N, gemm, producer_consumer

# ---- streams as parameters -------------------------------------------------------------


@I.ir_module
class StageToCall:
    """A stage of the caller produces tmp; a called function consumes it."""

    @T.prim_func(s_tir=True)
    def consume(X: T.Buffer((N,), "float32"), Y: T.Buffer((N,), "float32")):
        for i in range(N):
            with T.sblock("Y"):
                vi = T.axis.remap("S", [i])
                Y[vi] = X[vi] + T.float32(1)

    @T.prim_func(s_tir=True)
    def main(A: T.Buffer((N,), "float32"), C: T.Buffer((N,), "float32")):
        tmp = T.alloc_buffer((N,), "float32")
        for i in range(N):
            with T.sblock("P"):
                vi = T.axis.remap("S", [i])
                tmp[vi] = A[vi] * T.float32(2)
        StageToCall.consume(tmp, C)


@I.ir_module
class CallToStage:
    """A called function produces tmp; a stage of the caller consumes it."""

    @T.prim_func(s_tir=True)
    def produce(X: T.Buffer((N,), "float32"), Y: T.Buffer((N,), "float32")):
        for i in range(N):
            with T.sblock("Y"):
                vi = T.axis.remap("S", [i])
                Y[vi] = X[vi] * T.float32(3)

    @T.prim_func(s_tir=True)
    def main(A: T.Buffer((N,), "float32"), C: T.Buffer((N,), "float32")):
        tmp = T.alloc_buffer((N,), "float32")
        CallToStage.produce(A, tmp)
        for i in range(N):
            with T.sblock("Q"):
                vi = T.axis.remap("S", [i])
                C[vi] = tmp[vi] - T.float32(1)


@I.ir_module
class CallToCall:
    @T.prim_func(s_tir=True)
    def produce(X: T.Buffer((N,), "float32"), Y: T.Buffer((N,), "float32")):
        for i in range(N):
            with T.sblock("Y"):
                vi = T.axis.remap("S", [i])
                Y[vi] = X[vi] * T.float32(3)

    @T.prim_func(s_tir=True)
    def consume(X: T.Buffer((N,), "float32"), Y: T.Buffer((N,), "float32")):
        for i in range(N):
            with T.sblock("Y"):
                vi = T.axis.remap("S", [i])
                Y[vi] = X[vi] + T.float32(1)

    @T.prim_func(s_tir=True)
    def main(A: T.Buffer((N,), "float32"), C: T.Buffer((N,), "float32")):
        tmp = T.alloc_buffer((N,), "float32")
        CallToCall.produce(A, tmp)
        CallToCall.consume(tmp, C)


def _streaming_consumer(func):
    c = customize(func)
    c.to("X", "Y")  # the parameter X is read once, in order, by sblock Y: a stream
    c.pipeline("Y/i")
    return c


def _streaming_producer(func):
    p = customize(func)
    p.to("Y")  # an output stream: written once, in order
    return p


def _stream_schedules():
    stage_to_call = customize(StageToCall)
    stage_to_call.compose(_streaming_consumer(StageToCall["consume"]))
    stage_to_call.to("tmp", "consume", depth=4)
    stage_to_call.dataflow()

    call_to_stage = customize(CallToStage)
    call_to_stage.compose(_streaming_producer(CallToStage["produce"]))
    call_to_stage.to("tmp", "Q")
    call_to_stage.dataflow()

    call_to_call = customize(CallToCall)
    call_to_call.compose(_streaming_producer(CallToCall["produce"]))
    call_to_call.compose(_streaming_consumer(CallToCall["consume"]))
    call_to_call.to("tmp", "consume", depth=3)
    call_to_call.dataflow()

    alone = _streaming_consumer(CallToCall["consume"])  # a stream parameter of the top function
    alone_out = _streaming_producer(CallToCall["produce"])
    return {"st_stage_to_call": stage_to_call, "st_call_to_stage": call_to_stage,
            "st_call_to_call": call_to_call, "st_alone": alone, "st_alone_out": alone_out}


BASES = {"st_stage_to_call": StageToCall, "st_call_to_stage": CallToStage, "st_call_to_call": CallToCall,
         "st_alone": CallToCall["consume"], "st_alone_out": CallToCall["produce"]}


@pytest.fixture(scope="module")
def stream_schedules():
    return _stream_schedules()


@pytest.fixture(scope="module")
def stream_modules(stream_schedules):
    return build_many(stream_schedules)


def _function(code: str, name: str) -> str:
    return code.split(f"static void {name}(")[1].split("\n}\n")[0]


def test_caller_stage_streams_into_a_composed_callee(stream_modules):
    m = stream_modules["st_stage_to_call"]
    a = np.random.default_rng(0).uniform(-1, 1, N).astype("float32")
    np.testing.assert_array_equal(m(a), a * np.float32(2) + np.float32(1))
    code = m.hls_code
    assert "(hls::stream<float>& X, float Y[8])" in code
    assert "X.read()" in _function(code, "st_stage_to_call__consume")
    main = _function(code, "st_stage_to_call__main")
    for text in ("#pragma HLS DATAFLOW", "static hls::stream<float> tmp;", "#pragma HLS STREAM variable=tmp depth=4",
                 "tmp.write(", "st_stage_to_call__consume(tmp, C);"):
        assert text in main, f"{text!r} missing from\n{main}"


def test_callee_output_streams_into_a_caller_stage(stream_modules):
    m = stream_modules["st_call_to_stage"]
    a = np.random.default_rng(1).uniform(-1, 1, N).astype("float32")
    np.testing.assert_array_equal(m(a), a * np.float32(3) - np.float32(1))
    code = m.hls_code
    assert "(const float X[8], hls::stream<float>& Y)" in code and "Y.write(" in code
    assert "tmp.read()" in _function(code, "st_call_to_stage__main")


def test_composed_callees_stream_into_each_other(stream_modules):
    m = stream_modules["st_call_to_call"]
    a = np.random.default_rng(2).uniform(-1, 1, N).astype("float32")
    np.testing.assert_array_equal(m(a), a * np.float32(3) + np.float32(1))
    code = m.hls_code
    assert "static void st_call_to_call__produce(const float X[8], hls::stream<float>& Y)" in code
    assert "static void st_call_to_call__consume(hls::stream<float>& X, float Y[8])" in code
    assert "#pragma HLS STREAM variable=tmp depth=3" in code


def test_a_stream_parameter_of_the_top_function_is_fed_from_its_port(stream_modules):
    m = stream_modules["st_alone"]
    a = np.random.default_rng(3).uniform(-1, 1, N).astype("float32")
    np.testing.assert_array_equal(m(a), a + np.float32(1))
    top = m.hls_code.split('extern "C"')[1]
    for text in ("#pragma HLS DATAFLOW", "static hls::stream<float> X_stream;", "X_stream.write(X[i0]);",
                 "st_alone__consume(X_stream, Y);"):
        assert text in top, f"{text!r} missing from\n{top}"
    out = stream_modules["st_alone_out"]  # and an output stream is drained into its port
    np.testing.assert_array_equal(out(a), a * np.float32(3))
    top = out.hls_code.split('extern "C"')[1]
    for text in ("st_alone_out__produce(X, Y_stream);", "Y[i0] = Y_stream.read();"):
        assert text in top, f"{text!r} missing from\n{top}"


@pytest.mark.parametrize("name", sorted(BASES))
def test_stream_logs_replay_to_the_same_module(name, stream_schedules):
    s = stream_schedules[name]
    tvm.ir.assert_structural_equal(customize(BASES[name]).replay(s.log).module, s.module)


def test_interface_type_says_stream_or_array(stream_schedules):
    s = stream_schedules["st_call_to_call"]
    assert s.interface_type("consume:X").is_stream and not s.interface_type("consume:Y").is_stream
    assert "stream(depth=3)" in str(s.interface_type("tmp"))


def test_caller_streams_but_callee_takes_an_array():
    s = customize(CallToCall)
    s.compose(_streaming_producer(CallToCall["produce"]))
    with pytest.raises(InterfaceMismatchError) as info:
        s.to("tmp", "consume")
    for word in ("'tmp'", "parameter 'X' of consume", "takes an array", "float32[8] array"):
        assert word in str(info.value), str(info.value)


def test_callee_streams_but_caller_passes_an_array():
    s = customize(CallToCall)
    s.compose(_streaming_producer(CallToCall["produce"]))  # compose waits for the caller's to()
    s.compose(_streaming_consumer(CallToCall["consume"]))
    with pytest.raises(InterfaceMismatchError) as info:
        tvm_spatial.build(s, name="never_built")
    for word in ("main passes buffer 'tmp' (float32[8] array)", "parameter 'Y' of produce",
                 "float32[8] stream(depth=2)", "s.to('main:tmp'"):
        assert word in str(info.value), str(info.value)
    with pytest.raises(InterfaceMismatchError):
        s.check_interfaces()


@pytest.mark.parametrize(
    "apply, words",
    [
        (lambda s: s.to("tmp", "P"), ["not a producer/consumer pair", "written by P", "read by consume"]),
        (lambda s: s.to("tmp"), ["name the consumer", "tmp"]),
        (lambda s: s.to("consume:X", "consume:Y", depth=0), ["depth must be a positive int"]),
        (lambda s: s.to("tmp", "nothing"), ["no sblock named 'nothing'"]),
    ],
)
def test_bad_stream_input(apply, words):
    s = customize(StageToCall)
    with pytest.raises(ScheduleError) as info:
        apply(s)
    for word in words:
        assert word in str(info.value), str(info.value)


def test_bad_stream_parameters():
    @T.prim_func(s_tir=True)
    def twice(X: T.Buffer((N,), "float32"), Y: T.Buffer((N,), "float32"), Z: T.Buffer((N,), "float32")):
        for i in range(N):
            with T.sblock("Y"):
                vi = T.axis.remap("S", [i])
                Y[vi] = X[vi]
        for i in range(N):
            with T.sblock("Z"):
                vi = T.axis.remap("S", [i])
                Z[vi] = X[N - 1 - vi] + Y[vi]

    s = customize(twice)
    with pytest.raises(ScheduleError, match="accessed by Y, Z; a stream parameter feeds"):
        s.to("X")
    with pytest.raises(ScheduleError, match="both read and written"):
        s.to("Y")
    with pytest.raises(ScheduleError, match="Y does not read parameter Z"):
        s.to("Z", "Y")
    s.partition("Z")
    with pytest.raises(ScheduleError, match="partitioned"):
        s.to("Z")


# ---- buffer_at ----------------------------------------------------------------------------


@T.prim_func(s_tir=True)
def gemm_relu(A: T.Buffer((N, N), "float32"), B: T.Buffer((N, N), "float32"), D: T.Buffer((N, N), "float32")):
    tmp = T.alloc_buffer((N, N), "float32")  # function-local
    for i, j, k in T.grid(N, N, N):
        with T.sblock("tmp"):
            vi, vj, vk = T.axis.remap("SSR", [i, j, k])
            with T.init():
                tmp[vi, vj] = T.float32(0)
            tmp[vi, vj] = tmp[vi, vj] + A[vi, vk] * B[vk, vj]
    for i, j in T.grid(N, N):
        with T.sblock("D"):
            vi, vj = T.axis.remap("SS", [i, j])
            D[vi, vj] = T.max(tmp[vi, vj], T.float32(0))


def _buffer_at_schedules():
    row = customize(gemm)
    assert row.buffer_at("C", "C/i").name == "C_local"
    row.pipeline("C/k")
    tile = customize(gemm)
    outer, _ = tile.split("C/j", factor=4)
    tile.buffer_at("C", outer)
    local = customize(gemm_relu)
    local.buffer_at("tmp", "tmp/i")
    elem = customize(producer_consumer)
    elem.buffer_at("B", "B/i")
    return {"ba_row": row, "ba_tile": tile, "ba_local": local, "ba_elem": elem}


BA_BASES = {"ba_row": gemm, "ba_tile": gemm, "ba_local": gemm_relu, "ba_elem": producer_consumer}


@pytest.fixture(scope="module")
def buffer_at_schedules():
    return _buffer_at_schedules()


@pytest.fixture(scope="module")
def buffer_at_modules(buffer_at_schedules):
    return build_many(buffer_at_schedules)


@pytest.mark.parametrize("name, declaration", [
    ("ba_row", "float C_local[8];"), ("ba_tile", "float C_local[4];"), ("ba_local", "float tmp_local[8];"),
    ("ba_elem", "float B_local[1];"),
])
def test_buffer_at_keeps_the_region_below_the_axis(name, declaration, buffer_at_modules):
    m = buffer_at_modules[name]
    code = m.hls_code
    assert declaration in code, code
    rng = np.random.default_rng(4)
    if name == "ba_elem":
        a = rng.uniform(-1, 1, N).astype("float32")
        np.testing.assert_allclose(m(a), a * 2 + 1, rtol=1e-6)
        return
    a, b = rng.uniform(-1, 1, (N, N)).astype("float32"), rng.uniform(-1, 1, (N, N)).astype("float32")
    want = a.astype("float64") @ b
    np.testing.assert_allclose(m(a, b), np.maximum(want, 0) if name == "ba_local" else want, rtol=1e-5, atol=1e-6)


def test_buffer_at_writes_back_once_per_iteration(buffer_at_modules):
    code = buffer_at_modules["ba_row"].hls_code
    body = code.split("for (int32_t i = 0; i < 8; ++i) {")[1]
    # inside loop i: the accumulation nest, then one write-back loop of the row
    assert body.count("C[v0][v1] = C_local[v1];") == 1, body


@pytest.mark.parametrize("name", sorted(BA_BASES))
def test_buffer_at_logs_replay(name, buffer_at_schedules):
    s = buffer_at_schedules[name]
    tvm.ir.assert_structural_equal(customize(BA_BASES[name]).replay(s.log).module, s.module)


def test_buffer_at_bad_axes():
    s = customize(gemm)
    with pytest.raises(ScheduleError) as info:
        s.buffer_at("C", "C/k")
    for word in ("reduction loop k is not inside k", "choose a loop outside every reduction loop: i, j"):
        assert word in str(info.value), str(info.value)
    s.reorder("k", "i")
    with pytest.raises(ScheduleError, match="none \\(reorder first\\)"):
        s.buffer_at("C", "C/i")
    t = customize(gemm_relu)
    with pytest.raises(ScheduleError, match="sblock D does not write tmp; it is written by tmp"):
        t.buffer_at("tmp", "D/i")
    with pytest.raises(ScheduleError, match="no loop named 'q'"):
        t.buffer_at("tmp", "tmp/q")
    with pytest.raises(ScheduleError, match="no buffer named 'nope'"):
        t.buffer_at("nope", "tmp/i")
    assert len(t.log) == 0


def test_buffer_at_refuses_overlapping_regions():
    @T.prim_func(s_tir=True)
    def diagonals(A: T.Buffer((N, N), "float32"), C: T.Buffer((2 * N,), "float32")):
        B = T.alloc_buffer((2 * N,), "float32")
        for i, j in T.grid(N, N):
            with T.sblock("B"):
                vi, vj = T.axis.remap("SS", [i, j])
                B[vi + vj] = A[vi, vj]
        for i in range(2 * N):
            with T.sblock("C"):
                vi = T.axis.remap("S", [i])
                C[vi] = B[vi]

    s = customize(diagonals)
    before = s.module
    with pytest.raises(ScheduleError) as info:
        s.buffer_at("B", "B/i")  # row i writes B[i:i+8]: the rows' regions overlap
    for word in ("buffer_at(diagonals:B, diagonals:B/i)", "overlap or are not aligned", "own tile"):
        assert word in str(info.value), str(info.value)
    assert s.module.same_as(before) and len(s.log) == 0


def test_a_primitive_failing_half_way_leaves_the_module_as_it_was(monkeypatch):
    import tvm_spatial.schedule as schedule_module

    def fail(*args):
        raise ScheduleError("late refusal")

    monkeypatch.setattr(schedule_module, "_shrink_local", fail)  # after hoist + cache_write
    s = customize(gemm_relu)
    before = s.module
    with pytest.raises(ScheduleError, match="late refusal"):
        s.buffer_at("tmp", "tmp/i")
    assert s.module.same_as(before) and len(s.log) == 0


# ---- all of it compiles warning-free -----------------------------------------------------


def test_kernels_compile_with_werror(stream_modules, buffer_at_modules, tmp_path):
    for modules in (stream_modules, buffer_at_modules):
        design = next(iter(modules.values())).design
        emulation.write_sources(design, tmp_path)
        tu = tmp_path / "all_kernels.cpp"
        tu.write_text("".join(f'#include "{k.filename}"\n' for k in design.kernels))
        proc = subprocess.run(
            [emulation.host_compiler(), "-std=c++17", "-O2", "-c", "-isystem", str(emulation.xilinx_include_dir()),
             *emulation.STRICT_FLAGS, str(tu), "-o", os.devnull],
            cwd=tmp_path, capture_output=True, text=True,
        )
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
