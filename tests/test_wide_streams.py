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
    with tvm_spatial.allocation(rows=8):
        design = design_from_onnx(path)
    (kernel,) = design.kernels
    widths = [s.width for s in kernel.streams]
    assert max(widths) == STREAM_PACKET and all(s.elements % s.width == 0 for s in kernel.streams)
    for s in kernel.streams:  # both processes' signatures carry the packet type
        assert kernel.source.count(f"hls::stream<{stream_element(s.dtype, s.width)}>& {s.name}") >= 2, s.name
