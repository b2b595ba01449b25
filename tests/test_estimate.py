"""The analytical model: device data, extraction from a design, purity, allocation, CLI."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import tvm_spatial
from tvm_spatial.devices import RESOURCES, device_keys, get_device
from tvm_spatial.estimate import (
    ModelConfig, Parallelism, allocate, costs, design_from_onnx, design_work, estimate_work, transformer_layers,
)
from tvm_spatial.errors import ResourceBudgetError

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def gpt2_design():
    """Every layer its own processes: one region, one chain (the pipeline tests count it)."""
    with tvm_spatial.allocation(layers="unroll"):
        return design_from_onnx(FIXTURES / "gpt2_tiny.onnx")


@pytest.fixture(scope="module")
def bert_design():
    return design_from_onnx(FIXTURES / "bert_tiny.onnx")


# ---- devices as data -------------------------------------------------------------------
@pytest.mark.parametrize("key", device_keys())
def test_slr_split_sums_to_totals_and_has_a_source(key):
    dev = get_device(key)
    assert len(dev.slr_resources) == dev.slrs
    for r in RESOURCES:
        assert sum(dev.slr(i).get(r) for i in range(dev.slrs)) == getattr(dev, r)
    assert dev.source_text("slr_resources")
    assert dev.source_text("resources")


def test_u280_slr0_has_fewer_dsps():
    dev = get_device("u280")
    assert [dev.slr(i).dsp for i in range(3)] == [2880, 3072, 3072]


# ---- cost of arithmetic by data type --------------------------------------------------------
def test_dsp_per_mac_by_dtype():
    dsp = {k: costs.MAC_COSTS[costs.mac_class(a, w)].dsp
           for k, (a, w) in {"fp32": ("float32", "float32"), "int8": ("int8", "int8"),
                              "w4a8": ("int8", "int4")}.items()}
    assert dsp == {"fp32": 5, "int8": 1, "w4a8": 0.5}


def test_bram_shapes():
    assert costs.bram18_for(16, 32) == 0  # 512 bits: registers
    assert costs.bram18_for(512, 36) == 1
    assert costs.bram18_for(1024, 32) == 2
    assert costs.uram_for(4096 * 2, 32) == 1  # two 32-bit words per 72-bit URAM word


# ---- reading the design ----------------------------------------------------------------
def test_matmul_shapes_come_from_the_design(gpt2_design):
    work = design_work(gpt2_design)
    linears = [p for p in work.processes if p.op == "linear"]
    first = linears[0].matmul
    assert (first.m, first.k, first.n, first.b_offchip) == (16, 64, 192, True)
    # the fused attention: lanes, no MAC array; its QK^T and AV MACs count for the roofline
    attention = next(p for p in work.processes if p.op == "attention")
    assert attention.matmul is None and attention.macs == 2 * 16 * 16 * 64
    assert work.tokens == 16 and work.causal


def test_a_matmul_process_other_stages_are_charged_at_the_lanes_the_codegen_gives_them(gpt2_design):
    """A linear's bias add runs after its array, in series: the design records its loop
    nests, and the model's rule for their lanes (which it needs for arrays the allocation
    only considers) gives the ones the HLS text was printed with (``_l<lanes>``)."""
    import re

    from tvm_spatial.estimate.model import epilogue_lanes, matmul_epilogue

    work = {p.name: p for p in design_work(gpt2_design).processes}
    checked = 0
    for kernel in gpt2_design.kernels:
        for proc in kernel.processes:
            if not proc.array or not proc.nests:
                continue
            p = work[proc.name]
            assert proc.writeback in ("array", "port")
            start = kernel.source.index(f"static void {proc.name}(")
            body = kernel.source[start:kernel.source.index("\n}\n", start)]
            printed = {int(n) for n in re.findall(rf"\b{re.escape(kernel.name)}__\w+?_l(\d+)\w*\(", body)}
            lanes = epilogue_lanes(p, *proc.array)
            assert printed == ({lanes} if lanes > 1 else set())  # one lane: no suffix
            bare = matmul_epilogue(dataclasses.replace(p, nests=()), *proc.array, 4)
            assert matmul_epilogue(p, *proc.array, 4) > bare > 0
            checked += 1
    assert checked >= 4  # the fixture's linears have biases


def test_bert_attention_is_a_barrier(bert_design):
    """Built in token blocks, a bidirectional attention starts its first block only after
    all of K and V are in: the pipeline of blocks restarts after it."""
    work = design_work(bert_design)
    assert not work.causal and work.block == 8
    attention = [p for p in work.processes if p.op == "attention"]  # one per layer, or one called per layer
    assert sum(p.calls for p in attention) == 2 and all(p.barrier and p.rows == 8 for p in attention)
    assert not any(p.barrier for p in work.processes if p.op != "attention")


# ---- the model -------------------------------------------------------------------------
def test_model_is_pure_and_reports_everything(gpt2_design):
    work, dev = design_work(gpt2_design), get_device("u280")
    a, b = estimate_work(work, dev), estimate_work(work, dev)
    assert a == b
    assert a.prefill_cycles > 0 and a.decode_cycles > 0
    assert a.bottleneck in {p.name for p in a.processes}
    p = a.process(a.bottleneck)
    assert p.trip_counts and p.ii >= 1 and p.resources.dsp >= 0
    assert 0 < a.prefill_roofline.dsp_cycles < a.prefill_cycles
    assert set(a.utilization()) == set(RESOURCES)
    assert "prefill latency" in str(a)


def test_whole_tensor_pipeline_is_the_sum_and_blocks_overlap(gpt2_design):
    work, dev = design_work(gpt2_design), get_device("u280")
    whole = estimate_work(work, dev, ModelConfig())
    assert whole.prefill_cycles == pytest.approx(sum(p.block_cycles for p in whole.processes))
    blocked = estimate_work(work, dev, ModelConfig(block=1))
    # runs of row-wise processes overlap (fill + (blocks - 1) x their slowest); a process
    # holding whole tensors (attention) runs alone between them
    total, run = 0.0, []
    for est, p in zip(blocked.processes, work.processes):
        if p.separable and not p.barrier:
            run.append(est.block_cycles)
            continue
        total += sum(run) + (work.tokens - 1) * max(run, default=0) + est.block_cycles
        run = []
    total += sum(run) + (work.tokens - 1) * max(run, default=0)
    assert any(p.separable for p in work.processes) and not all(p.separable for p in work.processes)
    assert blocked.prefill_cycles == pytest.approx(total)
    # every operator streaming (the what-if): one chain
    streaming = estimate_work(work.streaming(), dev, ModelConfig(block=1))
    taus = [p.block_cycles for p in streaming.processes]
    assert streaming.prefill_cycles == pytest.approx(sum(taus) + (work.tokens - 1) * max(taus))


def test_quantized_matmuls_cost_fewer_dsps(gpt2_design):
    work, dev = design_work(gpt2_design), get_device("u280")
    fp32 = estimate_work(work, dev).total.dsp
    w4a8 = estimate_work(work.with_precision("w4a8"), dev).total.dsp
    assert w4a8 < fp32


def test_decode_is_memory_bound_for_a_narrow_array():
    work = transformer_layers(layers=1, hidden=256, heads=4, ffn=1024, seq=64, weight_dtype="int8", act_dtype="int8")
    table = {p.name: Parallelism(rows=8, cols=64) for p in work.processes if p.matmul is not None}
    est = estimate_work(work, get_device("u280"), ModelConfig(block=8).with_parallelism(table))
    linear = next(p for p in est.processes if p.op == "linear")
    assert linear.decode_bound == "memory"


# ---- allocation ------------------------------------------------------------------------
def test_allocation_fits_the_budget_and_beats_the_smallest(gpt2_design):
    work, dev = design_work(gpt2_design).with_precision("w8a8"), get_device("u280")
    alloc = allocate(work, dev)
    frac, _, _ = alloc.estimate.max_slr_utilization
    assert frac <= 0.85 + 1e-9
    small = {p.name: Parallelism(rows=1, cols=1) if p.matmul else Parallelism() for p in work.processes}
    smallest = estimate_work(work, dev, ModelConfig(block=alloc.config.block).with_parallelism(small))
    assert alloc.estimate.prefill_cycles < smallest.prefill_cycles / 4
    tilings = alloc.matmul_tilings()
    assert tilings and all(entry[0] >= 1 and entry[1] >= 1 for entry in tilings.values())
    assert alloc.estimate == estimate_work(work, dev, alloc.config)  # the same pure function


def test_allocation_steps_grow_by_half_as_well_as_double(gpt2_design):
    """Doubling alone leaves a process at half of what its SLR could give it when the next
    doubling does not fit; a step of 1.5x (realized: a side dividing the output) fills the gap."""
    from tvm_spatial.estimate.allocation import _grow, realizable_array, realizable_lanes
    from tvm_spatial.estimate.model import process_estimate

    work, dev = design_work(gpt2_design), get_device("u280")
    linear = next(p for p in work.processes if p.matmul is not None and p.matmul.n % 24 == 0)
    par = Parallelism(rows=1, cols=16)
    est = process_estimate(linear, par, dev, dev.clock_mhz, None)
    steps = _grow(linear, par, est, 1, realize=realizable_array)
    assert Parallelism(rows=1, cols=24) in steps and Parallelism(rows=1, cols=32) in steps
    # lanes: a divisor of the row (GPT2-small's 768 has 12 and 16; the fixture's 64 has no 12)
    other = dataclasses.replace(next(p for p in work.processes if p.op == "layer_norm"), width=96)
    par = Parallelism(lanes=8)
    est = process_estimate(other, par, dev, dev.clock_mhz, None)
    lanes = {c.lanes for c in _grow(other, par, est, 1, max_lanes=64, realize_lanes=realizable_lanes)}
    assert lanes == {12, 16}


def test_smallest_design_over_budget_names_process_and_resource(gpt2_design):
    work = design_work(gpt2_design)
    with pytest.raises(ResourceBudgetError) as info:
        allocate(work, get_device("u280"), budget=0.001)
    err = info.value
    assert err.process and err.resource in RESOURCES and err.kernel
    assert err.process in str(err) and err.resource in str(err)


# ---- public API and CLI -------------------------------------------------------------------
def test_estimate_accepts_a_design_and_a_schedule(gpt2_design):
    est = tvm_spatial.estimate(gpt2_design, precision="w4a8", allocate_resources=True)
    assert est.device.key == "u280"
    from tvm_spatial.estimate import published

    s = tvm_spatial.customize(published.allo_gemm)
    published.schedule_allo_gemm(s)
    kernel = tvm_spatial.estimate(s, device="u280")
    assert [p.name for p in kernel.processes] == ["mm1", "ele_add"]
    assert kernel.process("mm1").ii == 4
    assert kernel.prefill_cycles > 0 and kernel.processes


def test_estimate_cli_writes_html(tmp_path, capsys):
    from tvm_spatial.cli import main

    html = tmp_path / "report.html"
    assert main(["estimate", str(FIXTURES / "gpt2_tiny.onnx"), "--html", str(html), "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "prefill latency" in out and "SLR" in out
    text = html.read_text()
    assert text.count("<svg") >= 3


def test_estimate_cli_bad_model(capsys):
    from tvm_spatial.cli import main

    assert main(["estimate", "no_such_model.onnx"]) == 2


def test_parallelism_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Parallelism().rows = 3  # type: ignore[misc]


def test_copy_loops_do_not_hide_memory_traffic():
    """A process reads its input streams before its stages and writes its outputs after
    them, so its off-chip traffic overlaps only the stages: ``io + max(stages, bytes /
    bandwidth)``, not ``max(io + stages, bytes / bandwidth)``. The bandwidth is one HBM
    pseudo-channel of the U280 (460 GB/s over 32, at the sustained fraction), at 300 MHz."""
    from tvm_spatial.estimate import costs
    from tvm_spatial.estimate.model import Parallelism, process_estimate
    from tvm_spatial.estimate.workload import ProcessWork

    dev = get_device("u280")
    per_cycle = 460e9 / 32 / 300e6 * costs.HBM_EFFICIENCY
    stages, io = 256, 100

    def decode(port_bytes):
        p = ProcessWork("k0", "k0_p0_take", "take", 0, 0, stages, 1, stages, "float32", ports=("cache",),
                        port_bytes=port_bytes, nests=((1, stages, 0),), stream_io=io)
        return process_estimate(p, Parallelism(), dev, 300.0, None)

    slow = decode(int(per_cycle * 1000))  # about 1,000 cycles of traffic: more than the stages
    assert slow.decode_bound == "memory"
    assert slow.decode_cycles == pytest.approx(io + 1000 + costs.PIPELINE_DEPTH, abs=1.0)
    fast = decode(int(per_cycle * 10))  # traffic well inside the stages: the copy loops add on
    assert fast.decode_bound == "compute"
    assert fast.decode_cycles == pytest.approx(io + stages + costs.PIPELINE_DEPTH)


def test_a_prologue_hides_nothing_of_the_stages_after_it():
    """A prologue (stages before the stream reads, ``ProcessWork.prologue_nests``) reads
    its ports then; the stages after the copy loops cannot hide that traffic: a slice read
    of about 1,000 cycles in the prologue, then 300 cycles of stages, take 1,000 + io +
    300 -- not io + max(556, 1,000) as when the model let any stage overlap any traffic."""
    from tvm_spatial.estimate import costs
    from tvm_spatial.estimate.model import Parallelism, process_estimate
    from tvm_spatial.estimate.workload import ProcessWork

    dev = get_device("u280")
    per_cycle = 460e9 / 32 / 300e6 * costs.HBM_EFFICIENCY
    io, take, where = 100, 256, 300
    nests = ((1, take, 0), (1, where, 0))
    slice_bytes = int(per_cycle * 1000)
    p = ProcessWork("k0", "k0_p0_update", "kv_update", 0, 0, take + where, 1, where, "float32", ports=("cache",),
                    port_bytes=slice_bytes, nests=nests, stream_io=io, prologue_nests=1,
                    prologue_bytes=slice_bytes)
    est = process_estimate(p, Parallelism(), dev, 300.0, None)
    assert est.decode_prologue == pytest.approx(1000, abs=1.0)
    assert est.decode_cycles == pytest.approx(1000 + io + where + costs.PIPELINE_DEPTH, abs=1.0)
    plain = process_estimate(dataclasses.replace(p, prologue_nests=0, prologue_bytes=0), Parallelism(), dev,
                             300.0, None)
    assert plain.decode_prologue == 0
    assert plain.decode_cycles == pytest.approx(io + 1000 + costs.PIPELINE_DEPTH, abs=1.0)
