"""The analytical model on quantized builds: a W4A8 design's packed weight port ([K, N/2]
int8, two 4-bit weights per byte) counts as N outputs of int4 x int8 MACs and half the
HBM bytes of W8A8; the arrays the codegen realizes are the ones the allocation chose.

References: the W8A8 build of the same fixture (one int8 weight per byte, same MACs) and
the fp32 ONNX graph's weight shapes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import tvm_spatial
from tvm_spatial.devices import get_device
from tvm_spatial.estimate import (
    allocate_for_codegen, costs, design_from_module, design_work, estimate_work, realized_config,
)
from tvm_spatial.quantization import random_token_calibration

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def designs():
    mod = tvm_spatial.frontend.from_onnx(FIXTURES / "gpt2_tiny.onnx")
    calibration = random_token_calibration(mod, samples=2)
    # both unrolled, so the two formats' linears pair up (left to the model, the W8A8
    # build reuses its layers and the W4A8 one does not)
    with tvm_spatial.allocation(layers="unroll"):
        return {scheme: design_from_module(tvm_spatial.quantize(mod, scheme, calibration))
                for scheme in ("w8a8", "w4a8")}


def _linears(design):
    return {p.name.split("_p", 1)[1]: p for p in design_work(design).processes
            if p.matmul is not None and p.matmul.b_offchip}


def test_w4a8_counts_macs_and_half_the_weight_bytes(designs):
    w8, w4 = _linears(designs["w8a8"]), _linears(designs["w4a8"])
    assert w8.keys() == w4.keys() and len(w4) == 9
    for name, p in w4.items():
        ref = w8[name].matmul
        mm = p.matmul
        assert (mm.batch, mm.m, mm.n, mm.k) == (ref.batch, ref.m, ref.n, ref.k)  # outputs, not bytes
        assert mm.macs == ref.macs and mm.packed == 2 and ref.packed == 1
        assert (mm.a_dtype, mm.b_dtype) == ("int8", "int4") and costs.mac_class("int8", "int4") == "int4xint8"
        # the weight, through one port or striped over several, is K x N/2 bytes
        ports = {pt.name: pt for k in designs["w4a8"].kernels for pt in k.ports}
        proc = next(q for k in designs["w4a8"].kernels for q in k.processes if q.name == p.name)
        for name in proc.weight_stripes or (proc.weight_port,):
            assert tuple(ports[name].arg_shape) == (mm.k, mm.n // 2) and ports[name].dtype == "int8"
    e8 = tvm_spatial.estimate(designs["w8a8"])
    e4 = tvm_spatial.estimate(designs["w4a8"])
    weights8 = sum(p.matmul.k * p.matmul.n for p in w8.values())  # one byte per int8 weight
    # prefill streams every weight once per token block: W4A8 saves half of those bytes,
    # nothing else changes (both designs run the linear layers in the same blocks)
    work8, work4 = design_work(designs["w8a8"]), design_work(designs["w4a8"])
    assert work8.block == work4.block
    passes = work8.tokens // (work8.block or work8.tokens)
    assert e8.prefill_bytes - e4.prefill_bytes == weights8 // 2 * passes
    assert e8.prefill_roofline.memory_cycles > e4.prefill_roofline.memory_cycles
    # every packed multiplier is one DSP and makes two outputs: the array's DSPs are its
    # multipliers (beside the adders of its other stages, a lane each: model.epilogue_lanes)
    from tvm_spatial.estimate.model import epilogue_lanes

    by_name = {q.name: q for q in work4.processes}
    for p in e4.processes:
        if p.packed == 2:
            proc = next(q for k in designs["w4a8"].kernels for q in k.processes if q.name == p.name)
            assert p.parallelism.cols == 2 * proc.array[1]
            adders = epilogue_lanes(by_name[p.name], p.parallelism.rows, p.parallelism.cols)
            add = costs.op_cost("add", by_name[p.name].dtype)
            assert p.resources.dsp == proc.array[0] * proc.array[1] + adders * add.dsp


def test_w4a8_arrays_as_built_are_the_allocation(designs):
    design = designs["w4a8"]
    chosen = allocate_for_codegen(design_work(design), get_device("u280"))
    names = {p.name for p in design_work(design).processes if p.matmul is not None}
    realized = {n: par for n, par in realized_config(design).parallelism if n in names}
    assert realized == {n: par for n, par in chosen.config.parallelism if n in names}
    arrays = {q.name: q.realized for k in design.kernels for q in k.processes if q.array}
    assert arrays == chosen.matmul_tilings()
    est = estimate_work(design_work(design), get_device("u280"), realized_config(design))
    assert est.prefill_cycles == pytest.approx(chosen.estimate.prefill_cycles)
