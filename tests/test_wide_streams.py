"""Wide streams: a packet of up to STREAM_PACKET elements per transfer (codegen_hls/kernel.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from tvm import relax

import tvm_spatial
from codegen_hls.c_types import stream_element
from codegen_hls.kernel import STREAM_PACKET
from tvm_spatial.estimate import design_from_onnx

sys.path.insert(0, str(Path(__file__).parent))
from helpers import build_and_compare  # noqa: E402
from test_models import load_fixture  # noqa: E402


def test_a_reshaped_stream_packs_what_both_ends_can_split():
    """The producer writes [4, 1] rows of one element and the consumer reads the same stream
    as [4]: a packet must divide both last dimensions, so one element per transfer (found by
    the fuzzer: a packet of 4 was read but never written)."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([4, 1], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            root = bb.emit(relax.op.rsqrt(x))
            flat = bb.emit(relax.op.reshape(root, [4]))
            out = bb.emit_output(relax.op.nn.gelu(flat))
        bb.emit_func_output(out)
    ex, _ = build_and_compare(bb.get(), [np.linspace(0.5, 2.0, 4, dtype="float32").reshape(4, 1)])
    (stream,) = tvm_spatial.design_of(ex).kernels[0].streams
    assert stream.width == 1


def test_fixture_streams_carry_full_packets_that_divide_their_rows():
    path, *_ = load_fixture("gpt2_tiny")
    with tvm_spatial.allocation(rows=8, layers="unroll"):  # one region
        design = design_from_onnx(path)
    (kernel,) = design.kernels
    widths = [s.width for s in kernel.streams]
    assert max(widths) == STREAM_PACKET and all(s.elements % s.width == 0 for s in kernel.streams)
    for s in kernel.streams:  # both processes' signatures carry the packet type
        assert kernel.source.count(f"hls::stream<{stream_element(s.dtype, s.width)}>& {s.name}") >= 2, s.name


def test_port_copies_move_packets_and_a_row_tail():
    """A linear layer in token blocks (after another, which streams it its rows) whose
    output row (90 elements, like an odd vocabulary)
    16 does not divide: its block is copied to the output port 16 elements per cycle, then
    a tail of 10 one at a time. The emulation equals TVM's llvm build, and the cycles the
    design records for its copy loops are those the HLS text implies (read from the text)."""
    from test_lanes import _function_body, _pipelined_cycles

    rng = np.random.default_rng(3)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([16, 64], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            w1 = relax.const(rng.standard_normal((64, 64)).astype("float32") * 0.2)
            h = bb.emit(relax.op.nn.relu(relax.op.matmul(x, w1)))
            w = relax.const(rng.standard_normal((64, 90)).astype("float32"))
            b = relax.const(rng.standard_normal(90).astype("float32"))
            out = bb.emit_output(relax.op.add(relax.op.matmul(h, w), b))
        bb.emit_func_output(out)
    with tvm_spatial.allocation(rows=8):
        ex, _ = build_and_compare(bb.get(), [rng.standard_normal((16, 64)).astype("float32")])
    (kernel,) = tvm_spatial.design_of(ex).kernels
    proc = [p for p in kernel.processes if p.op == "linear"][-1]  # the one writing the port
    assert proc.rows == 8
    body = _function_body(kernel.source, proc.name)
    assert f"for (int j = 0; j < {90 // STREAM_PACKET}; ++j) {{" in body
    assert f"for (int t = 0; t < {90 % STREAM_PACKET}; ++t) {{" in body
    # the copy loops alone (the stage call is a matmul; its array is counted elsewhere):
    # 16 rows of 64 read from the stream in packets, 16 rows of 90 written as 5 + 10
    reads, writes = 16 * 64 // STREAM_PACKET, 16 * (90 // STREAM_PACKET + 90 % STREAM_PACKET)
    assert proc.stream_io == _pipelined_cycles(body) == reads + writes
