"""The model's what-if of a causal prefill split by tokens over the SLRs, one engine each
(tvm_spatial/estimate/token_parallel.py): that the engines hold the design's work, fit
their SLRs, and are priced no faster than their arrays allow."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

import tvm_spatial
from tvm_spatial.devices import get_device
from tvm_spatial.estimate import design_from_onnx, design_work
from tvm_spatial.estimate.model import Parallelism, process_estimate
from tvm_spatial.estimate.token_parallel import engine_work, token_parallel

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def gpt2_work():
    with tvm_spatial.allocation(layers="reuse"):
        return design_work(design_from_onnx(FIXTURES / "gpt2_tiny.onnx"))


def test_the_engines_hold_every_linear_and_the_causal_attention(gpt2_work):
    dev = get_device("u280")
    tp = token_parallel(gpt2_work, dev)
    tokens = gpt2_work.tokens
    bounds = [a for a, _ in tp.rows] + [tp.rows[-1][1]]
    assert bounds[0] == 0 and bounds[-1] == tokens and bounds == sorted(set(bounds))
    assert len(tp.engines) == dev.slrs
    linear_macs = sum(p.matmul.macs * p.calls for p in gpt2_work.processes if p.matmul is not None)
    attention = [p for p in gpt2_work.processes if p.macs]
    assert attention, "the tiny GPT2 has a fused attention"
    layers, hidden = attention[0].calls * len(attention), attention[0].width
    got_linear = got_attention = 0
    for slr, (start, end) in enumerate(tp.rows):
        w = engine_work(gpt2_work, start, end, slr, dev.slrs, 64)
        for mm in (w.matmul, *w.more):
            if mm.b_offchip:
                got_linear += mm.macs
            else:
                got_attention += mm.macs
    assert got_linear == linear_macs
    # QK^T and AV over every earlier key at least (causal), never more than every key
    causal = 2 * layers * hidden * tokens * (tokens + 1) // 2
    assert causal <= got_attention <= 2 * layers * hidden * tokens * tokens


def test_each_engine_fits_its_slr_and_the_slowest_sets_the_prefill(gpt2_work):
    dev = get_device("u280")
    tp = token_parallel(gpt2_work, dev, budget=0.85)
    for engine in tp.engines:
        cap = dev.slr(engine.slr)
        for resource in ("dsp", "bram18k", "uram", "lut", "ff"):
            assert engine.resources.get(resource) <= 0.85 * cap.get(resource) + 1e-6
    assert tp.prefill_cycles == max(e.block_cycles for e in tp.engines)
    assert tp.prefill_dsp_ratio == pytest.approx(tp.prefill_roofline.dsp_cycles / tp.prefill_cycles)


def test_an_engine_is_no_faster_than_its_macs_on_its_array(gpt2_work):
    dev = get_device("u280")
    tp = token_parallel(gpt2_work, dev)
    for slr, ((start, end), engine) in enumerate(zip(tp.rows, tp.engines)):
        w = engine_work(gpt2_work, start, end, slr, dev.slrs, 64)
        units = min(engine.parallelism.rows, end - start) * engine.parallelism.cols
        macs = sum(mm.macs for mm in (w.matmul, *w.more))
        assert engine.block_cycles >= math.ceil(macs / units)


def test_element_wise_stages_with_units_of_their_own_cost_dsps_and_no_time(gpt2_work):
    dev = get_device("u280")
    par = Parallelism(rows=4, cols=16, channels=8)
    shared = engine_work(gpt2_work, 0, gpt2_work.tokens, 0, 1, 64, shared_stages=True)
    own = dataclasses.replace(shared, shared_stages=False)
    a, b = (process_estimate(p, par, dev, 300.0, None) for p in (shared, own))
    assert b.resources.dsp > a.resources.dsp
    assert a.block_cycles == b.block_cycles  # the same schedule either way


def test_a_bidirectional_model_gets_no_token_parallel_engines():
    with tvm_spatial.allocation(layers="reuse"):
        work = design_work(design_from_onnx(FIXTURES / "bert_tiny.onnx"))
    assert not work.causal
    with pytest.raises(ValueError, match="causal"):
        token_parallel(work, get_device("u280"))
