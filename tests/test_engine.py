"""A decode step's linears on one MAC array (codegen_hls.engine), and how the model counts it.

The engine's numbers are checked elsewhere against independent references: the decode
emulation against transformers and onnxruntime (test_generate.py, test_kv_inplace.py) runs
the merged process. Here: that the merge happens where it should and only there, that the
HLS text shares the array, and that the model charges the linears in series on one array.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

import tvm_spatial
from tvm_spatial.devices import get_device
from tvm_spatial.estimate import costs, design_from_onnx
from tvm_spatial.estimate.model import Parallelism, process_estimate
from tvm_spatial.estimate.workload import Matmul, ProcessWork

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def decode_design():
    with tvm_spatial.allocation(layers="reuse"):
        return design_from_onnx(FIXTURES / "gpt2_tiny_decode.onnx")


def _function(source: str, name: str) -> str:
    start = source.index(f"static void {name}(")
    return source[start:source.index("\n}\n", start)]


def test_a_decode_layers_linears_after_its_attention_share_one_array(decode_design):
    layer = next(k for k in decode_design.kernels if k.calls > 1)
    engines = [p for p in layer.processes if p.op == "engine"]
    assert len(engines) == 1
    engine = engines[0]
    # the output projection, FFN1 and FFN2 of GPT2 (hidden 64, FFN 256), in order
    assert engine.matmul[1:] == (1, 64, 64) and [m[1:4] for m in engine.engine] == [(1, 256, 64), (1, 64, 256)]
    assert {"residual_add", "layer_norm", "gelu"} <= set(engine.engine_ops)
    # the QKV linear feeds the attention: it keeps its own array
    assert [p.op for p in layer.processes].count("linear") == 1
    body = _function(layer.source, engine.name)
    units = engine.array[0] * engine.array[1]
    for op in ("fmul", "fadd"):
        assert f"#pragma HLS ALLOCATION operation instances={op} limit={units}" in body
    called = re.findall(rf"\b({re.escape(layer.name)}__\w+)\(", body)
    assert len(called) >= 3 + 3 + 3  # three linears, their biases, the operators between
    for name in called:  # inlined, so the ALLOCATION caps their units together
        assert "#pragma HLS INLINE" in _function(layer.source, name)


def test_a_prefill_design_keeps_its_linears_apart():
    design = design_from_onnx(FIXTURES / "gpt2_tiny.onnx")
    ops = [p.op for k in design.kernels for p in k.processes]
    assert "engine" not in ops and ops.count("linear") >= 4
    assert all("ALLOCATION" not in k.source for k in design.kernels)


def _linear(name, k, n, **fields):
    mm = Matmul(1, 1, n, k, "float32", "float32", True)
    return ProcessWork("k", name, "linear", 0, 0, k * n, 1, n, "float32", matmul=mm, ports=("w",),
                       writeback="array", **fields)


@pytest.mark.parametrize("channels", [1, 32])
def test_an_engine_takes_its_linears_in_series_on_one_array(channels):
    """Two linears merged take, for one token, the time the two would take as processes of
    their own run one after the other (less one pipeline's depth: one process), each at
    its array's rate or its weight's, whichever is slower; and the DSPs of one array."""
    dev = get_device("u280")
    par = Parallelism(rows=1, cols=96, channels=channels)
    a, b = _linear("k_a", 768, 768), _linear("k_b", 768, 3072)
    engine = dataclasses.replace(a, name="k_engine", op="engine", more=(b.matmul,))
    est = {p.name: process_estimate(p, par, dev, 300.0, None) for p in (a, b, engine)}
    assert est["k_engine"].decode_cycles == pytest.approx(
        est["k_a"].decode_cycles + est["k_b"].decode_cycles - costs.PIPELINE_DEPTH)
    assert est["k_engine"].resources.dsp == est["k_a"].resources.dsp == est["k_b"].resources.dsp
    assert est["k_engine"].decode_bound == ("memory" if channels == 1 else "compute")
    # the weights' bytes are both linears', read once a token
    assert est["k_engine"].decode_bytes == est["k_a"].decode_bytes + est["k_b"].decode_bytes


def test_element_wise_multiplexers_do_not_grow_with_the_array():
    """An engine's element-wise loops use the units their lanes need, so widening the array
    adds the units' own cost and their linears' multiplexers, as it does for an engine
    without element-wise stages: the loops' multiplexers stay where their lanes are."""
    dev = get_device("u280")
    a, b = _linear("k_a", 768, 768), _linear("k_b", 768, 3072)
    plain = dataclasses.replace(a, name="k_engine", op="engine", more=(b.matmul,))
    staged = dataclasses.replace(plain, nests=((1, 768, 0), (1, 3072, 0), (1, 768, 0)),
                                 engine_ops=("residual_add", "layer_norm", "gelu"))

    def lut(p, cols):
        return process_estimate(p, Parallelism(rows=1, cols=cols, channels=8), dev, 300.0, None).resources.lut

    # (both arrays wide enough that the loops' lanes are at their cap: library.keep_pace_lanes)
    assert lut(staged, 384) > lut(plain, 384)  # the loops' multiplexers and operators
    assert lut(staged, 768) - lut(staged, 384) == pytest.approx(lut(plain, 768) - lut(plain, 384))


def test_a_copy_nest_drives_no_unit_and_a_nest_drives_its_lanes_times_its_operators():
    """A loop nest's sixth field (codegen_hls.lanes.arith_ops): the adds and multiplies per
    element it takes from the engine's shared units. A copy (0) adds no multiplexer input;
    a nest with two operators per element drives twice its lanes' units."""
    dev = get_device("u280")
    a, b = _linear("k_a", 768, 768), _linear("k_b", 768, 768)
    plain = dataclasses.replace(a, name="k_engine", op="engine", more=(b.matmul,), engine_ops=("add",))

    def lut(nests):
        p = dataclasses.replace(plain, nests=nests)
        return process_estimate(p, Parallelism(rows=4, cols=96, channels=8), dev, 300.0, None).resources.lut

    bare = lut(((1, 768, 0, 1, 0, 0),))  # a copy's nest: its loop, no operator
    assert lut(()) == bare
    one, two = lut(((1, 768, 0, 1, 0, 1),) * 3), lut(((1, 768, 0, 1, 0, 2),) * 3)
    # three nests on the units they drive: each unit one LUT-level (3 sources) more per
    # operand bit; twice the operators, twice the units driven
    assert one > bare and two - bare == pytest.approx(2 * (one - bare))
