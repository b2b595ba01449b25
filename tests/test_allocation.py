"""The model-driven allocation realized in the HLS: ``relax.build(..., "vitis_spatial")``
gives every matmul process the MAC array ``allocate_for_codegen`` chose, the HLS text
implies that array (pipeline II, unrolled tile loops, partitioned accumulator), the design
records it, and the estimate of the built design reads it back."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from tvm import relax

import tvm_spatial
from relax_passes import offloaded_regions
from codegen_hls.kernel import build_design, plan_design
from codegen_hls.library import DEFAULT_MATMUL_TILING, MacArray
from tvm_spatial.devices import get_device
from tvm_spatial.estimate import costs, design_work, estimate_work, realized_config

FIXTURES = Path(__file__).parent / "fixtures"


def _offloaded(name: str, device: str = "u280"):
    from relax_passes import host_operators, partition_for_vitis_spatial

    mod = partition_for_vitis_spatial(tvm_spatial.frontend.from_onnx(FIXTURES / f"{name}.onnx"))
    funcs = offloaded_regions(mod)
    return funcs, host_operators(mod)


@pytest.fixture(scope="module")
def bert():
    funcs, host_ops = _offloaded("bert_tiny")
    from tvm_spatial.tuning.policy import allocate_planned

    plan = plan_design(funcs, "u280", host_ops)
    alloc = allocate_planned(funcs, "u280", host_ops)  # what relax.build applies on all SLRs
    design = build_design(funcs, "u280", host_ops, arrays=alloc.codegen_table(), rows=alloc.config.block,
                          placement=alloc.placement)  # as relax.build applies it
    return plan, alloc, design


def _function_body(source: str, name: str) -> str:
    start = source.index(f"static void {name}(")
    return source[start: source.index("\n}\n", start)]


def _stage_of(kernel, proc) -> str:
    body = _function_body(kernel.source, proc.name)
    return re.search(rf"\b({re.escape(kernel.name)}__\w+_a\d+x\d+(?:_c\d+)?(?:_o)?)\(", body).group(1)


def test_every_matmul_process_realizes_its_allocated_array(bert):
    plan, alloc, design = bert
    chosen = alloc.matmul_tilings()
    procs = [p for p in design.kernels[0].processes if p.matmul]
    assert procs and {p.name for p in procs} == set(chosen)
    for p in procs:
        rows, cols, *channels = chosen[p.name]
        assert p.array == (rows, cols), p.name
        assert len(p.weight_stripes) == (channels[0] if channels else 0), p.name  # its weight's ports
        t_rows, t_cols = p.tile
        assert t_rows % rows == 0 and t_cols % cols == 0
        batch, m, n, k = p.matmul
        assert m % t_rows == 0 and n % t_cols == 0  # the fixtures' shapes are tile multiples


def test_hls_text_implies_the_array(bert):
    """Count the MAC units the HLS text implies, independently of the model: the unrolled tile
    holds tile_rows x tile_cols updates per k step, issued over II cycles, so II * units must
    cover the tile; the accumulator's partition gives rows x cols banks, one update each per
    cycle, so there are at most that many units. With partial sums (``k_0``: a step over
    each residue of k) the accumulator holds that many per output, updated in the same II."""
    _, _, design = bert
    kernel = design.kernels[0]
    for p in (p for p in kernel.processes if p.matmul):
        text = _function_body(kernel.source, _stage_of(kernel, p))
        loop = re.search(r"for \(int k(_0)? = 0; k(?:_0)? < \d+; \+\+k(?:_0)?\) \{\n\s*#pragma HLS PIPELINE II=(\d+)", text)
        ii = int(loop.group(2))
        decl = re.search(r"float (\w+)((?:\[\d+\])+);\n((?:\s*#pragma HLS ARRAY_PARTITION[^\n]*\n)+)", text)
        acc, pragmas = decl.group(1), decl.group(3)
        shape = [int(d) for d in re.findall(r"\d+", decl.group(2))]
        dims = tuple(shape[-2:])
        partials = shape[-3] if loop.group(1) else 1
        assert dims == p.tile and all(d == 1 for d in shape[:-3 if loop.group(1) else -2])
        banks = []
        for dim, extent in zip((len(shape) - 1, len(shape)), dims):
            m = re.search(rf"variable={acc} type=(\w+)(?: factor=(\d+))? dim={dim}", pragmas)
            banks.append(1 if m is None else extent if m.group(1) == "complete" else int(m.group(2)))
        units = banks[0] * banks[1]
        assert units == p.array[0] * p.array[1], p.name
        assert ii * units == dims[0] * dims[1] * partials, p.name
        assert text.count("#pragma HLS UNROLL") >= 4  # init and update tile loops


def test_estimate_of_the_built_design_reads_back_the_allocation(bert):
    _, alloc, design = bert
    est = tvm_spatial.estimate(design)
    assert est.prefill_cycles == pytest.approx(alloc.estimate.prefill_cycles)
    assert est.total.dsp == pytest.approx(alloc.estimate.total.dsp)
    assert est.max_slr_utilization[0] <= 0.85 + 1e-9
    # each array's MACs, and the adders of its bias add (a lane each, model.epilogue_lanes)
    from tvm_spatial.estimate.model import epilogue_lanes

    work = {p.name: p for p in design_work(design).processes}
    dsp = sum(p.array[0] * p.array[1] * costs.MAC_COSTS["fp32"].dsp
              + epilogue_lanes(work[p.name], *p.array) * costs.op_cost("add", "float32").dsp
              for p in design.kernels[0].processes if p.array)
    assert sum(e.resources.dsp for e in est.processes if e.macs) == pytest.approx(dsp)


def test_design_json_round_trips_the_realized_fields(bert):
    _, _, design = bert
    again = type(design).from_json(design.to_json())
    assert again == design
    assert realized_config(again) == realized_config(design)


def test_allocation_fits_where_the_library_default_does_not(bert):
    plan, alloc, _ = bert
    work, dev = design_work(plan), get_device("u280")
    default = estimate_work(work, dev)  # the library's 8 x 32 array in every matmul process
    # in fp32 that is over the U280's DSPs
    assert default.max_slr_utilization[0] > 1.0
    assert alloc.estimate.max_slr_utilization[0] <= 0.85 + 1e-9


def test_policy_default_and_overrides():
    funcs, host_ops = _offloaded("bert_tiny")
    from tvm_spatial.tuning.policy import AllocationPolicy, choose_arrays, choose_layout

    assert choose_arrays(funcs, "u280", host_ops, AllocationPolicy(mode="default")) is None
    name = next(p.name for p in plan_design(funcs, "u280", host_ops).kernels[0].processes if p.op == "linear")
    policy = AllocationPolicy.from_json(AllocationPolicy(arrays=((name, (2, 16)),)).to_json())
    arrays = choose_arrays(funcs, "u280", host_ops, policy)
    assert arrays[name] == (2, 16) and len(arrays) > 1
    # a placement survives the trip through RunCodegen's JSON options and reaches the layout
    placed = AllocationPolicy.from_json(AllocationPolicy(placement=((name, 2),), slrs=3).to_json())
    assert placed.placement == ((name, 2),)
    layout = choose_layout(funcs, "u280", host_ops, placed)
    # a placement asked for is kept as asked (no SLR cuts searched), the rest split by work
    asked = plan_design(funcs, "u280", host_ops, slrs=3, placement={name: 2})
    assert layout.placement == {p.name: p.slr for k in asked.kernels for p in k.processes}
    assert layout.placement[name] == 2
    with tvm_spatial.allocation("default", arrays={name: (4, 8)}) as current:
        assert tvm_spatial.tuning.current_policy() is current
    assert tvm_spatial.tuning.current_policy().mode == "model"
    with pytest.raises(tvm_spatial.UsageError, match="budget"):
        with tvm_spatial.allocation(budget=1.5):
            pass


def test_device_comes_from_the_target_tag():
    """A tighter budget (or another card) gives another allocation; the codegen follows it."""
    funcs, host_ops = _offloaded("bert_tiny")
    from tvm_spatial.tuning.policy import AllocationPolicy, choose_arrays, choose_layout

    wide = choose_arrays(funcs, "u280", host_ops, AllocationPolicy())
    narrow = choose_arrays(funcs, "u280", host_ops, AllocationPolicy(budget=0.3))
    units = lambda arrays: sum(v[0] * v[1] for v in arrays.values() if isinstance(v, tuple))  # noqa: E731
    assert units(narrow) < units(wide)
    for key in ("u250", "u55c"):
        layout = choose_layout(funcs, key, host_ops, AllocationPolicy())
        design = build_design(funcs, key, host_ops, arrays=layout.arrays, slrs=layout.slrs,
                              placement=layout.placement, rows=layout.rows)
        est = tvm_spatial.estimate(design)
        assert est.device.key == key and est.max_slr_utilization[0] <= 0.85 + 1e-9


@pytest.mark.parametrize("shape", [(16, 96), (1, 768), (128, 50257), (12, 20)])
@pytest.mark.parametrize("array", [(1, 1), (2, 3), (4, 16), (8, 32), (16, 256)])
def test_mac_array_tile(shape, array):
    m, n = shape
    tile, real = MacArray(*array, latency=4).tile(m, n)
    assert tile.rows % real.rows == 0 and tile.cols % real.cols == 0
    assert real.rows <= array[0] and real.cols <= array[1]
    positions = (tile.rows // real.rows) * (tile.cols // real.cols)
    available = math.ceil(m / real.rows) * math.ceil(n / real.cols)
    assert positions >= min(4, available)  # the fp32 accumulate recurrence is covered when possible
    default = DEFAULT_MATMUL_TILING.rows * DEFAULT_MATMUL_TILING.cols
    assert tile.rows * tile.cols <= max(2 * default, 4 * 2 * real.rows * real.cols)  # small on the host


@pytest.mark.parametrize("array", [(1, 1), (2, 3), (2, 8)])
def test_odd_arrays_compute_the_same_matmul(array):
    """Odd arrays, and one whose columns do not divide the output (8 of 45: a partial last
    tile), still compute the matmul: the emulation against numpy."""
    from helpers import run_vm

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((6, 20), "float32"))
    w = relax.Var("w", relax.TensorType((20, 45), "float32"))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.matmul(x, w))
        bb.emit_func_output(y)
    rng = np.random.default_rng(0)
    xs, ws = rng.standard_normal((6, 20), dtype=np.float32), rng.standard_normal((20, 45), dtype=np.float32)
    from relax_passes import partition_for_vitis_spatial

    part = partition_for_vitis_spatial(bb.get())
    funcs = offloaded_regions(part)
    names = [p.name for p in plan_design(funcs, "u280").kernels[0].processes if p.matmul]
    with tvm_spatial.allocation(arrays={n: array for n in names}):
        ex = relax.build(bb.get(), target="vitis_spatial")
    design = tvm_spatial.design_of(ex)
    assert all(p.array == array for p in design.kernels[0].processes if p.matmul)
    (got,) = run_vm(ex, [xs, ws])
    np.testing.assert_allclose(got, xs @ ws, rtol=1e-5, atol=1e-5)


def test_design_over_budget_warns_and_builds_or_raises_when_strict():
    funcs, host_ops = _offloaded("bert_tiny")
    from tvm_spatial.tuning.policy import AllocationPolicy, DesignOverBudgetWarning, choose_arrays

    with pytest.warns(DesignOverBudgetWarning, match=r"does not fit.*SLR \d.*process k0_\w+"):
        assert choose_arrays(funcs, "u280", host_ops, AllocationPolicy(budget=0.001)) is None
    with pytest.raises(tvm_spatial.ResourceBudgetError) as err:
        choose_arrays(funcs, "u280", host_ops, AllocationPolicy(budget=0.001, strict=True))
    assert err.value.process.startswith("k0_") and err.value.resource in ("dsp", "bram18k", "uram", "lut", "ff")


def test_a_build_allocates_each_partition_once(monkeypatch):
    """With layers="auto" the build allocates both partitions to choose one; the codegen's
    request for the kept one is answered from memory, and gets its own copy of the tables.
    A design over budget warns each time it is asked for, remembered or not."""
    from tvm_spatial.tuning import policy

    calls = []
    real = policy._choose_layout
    monkeypatch.setattr(policy, "_choose_layout", lambda *a: calls.append(a) or real(*a))
    monkeypatch.setattr(policy, "_LAYOUTS", {})
    relax.build(tvm_spatial.frontend.from_onnx(FIXTURES / "bert_tiny.onnx"), target="vitis_spatial")
    assert len(calls) == 2  # reused and unrolled; not a third time for the kept one
    funcs, host_ops = _offloaded("bert_tiny")  # the unrolled partition: allocated by the build
    first = policy.choose_layout(funcs, "u280", host_ops, policy.AllocationPolicy())
    first.arrays.clear()
    again = policy.choose_layout(funcs, "u280", host_ops, policy.AllocationPolicy())
    assert again.arrays and len(calls) == 2
    for _ in range(2):
        with pytest.warns(policy.DesignOverBudgetWarning, match="does not fit"):
            policy.choose_layout(funcs, "u280", host_ops, policy.AllocationPolicy(budget=0.001))
    assert len(calls) == 3


def test_only_a_layout_needed_searches_for_a_split_that_fits(monkeypatch):
    """When no work-balanced SLR split fits, the search for one that does runs only when
    asked (``rescue``; the build asks for the unrolled layout only if the reused one does
    not fit). A layout made without the search serves a later request that would search
    when it fits, and not when it does not."""
    from tvm_spatial.tuning import policy

    searched, made = [], []
    real_search, real_choose = policy._fitting_split, policy._choose_layout
    monkeypatch.setattr(policy, "_fitting_split", lambda *a: searched.append(a) or real_search(*a))
    monkeypatch.setattr(policy, "_choose_layout", lambda *a: made.append(a) or real_choose(*a))
    monkeypatch.setattr(policy, "_LAYOUTS", {})
    funcs, host_ops = _offloaded("gpt2_tiny")
    tight = policy.AllocationPolicy(budget=0.001)
    with pytest.warns(policy.DesignOverBudgetWarning, match="does not fit"):
        policy.choose_layout(funcs, "u280", host_ops, tight, rescue=False)
    assert not searched and len(made) == 1
    with pytest.warns(policy.DesignOverBudgetWarning, match="does not fit"):
        policy.choose_layout(funcs, "u280", host_ops, tight)
    assert searched and len(made) == 2  # not served from memory: that one did not search
    fits = policy.choose_layout(funcs, "u280", host_ops, policy.AllocationPolicy(), rescue=False)
    again = policy.choose_layout(funcs, "u280", host_ops, policy.AllocationPolicy())
    assert fits.estimate is not None and again == fits and len(made) == 3


def test_slrs_fit_first_takes_the_fewest_slrs_that_cost_no_speed():
    """The rule: allocate the plan on 1, 2 and 3 SLRs (each with its SLR cuts searched by
    the model, as the build does); the policy must take the fewest whose prefill is within
    SLR_SLACK of the fastest, and the built design must use exactly that many SLRs within
    budget."""
    from tvm_spatial.tuning.policy import SLR_SLACK, AllocationPolicy, allocate_planned, choose_layout

    funcs, host_ops = _offloaded("gpt2_tiny")
    dev = get_device("u280")
    cycles = {n: allocate_planned(funcs, "u280", host_ops, n).estimate.prefill_cycles for n in range(1, dev.slrs + 1)}
    layout = choose_layout(funcs, "u280", host_ops, AllocationPolicy())
    assert layout.slrs == min(n for n, c in cycles.items() if c <= min(cycles.values()) * (1 + SLR_SLACK))
    design = build_design(funcs, "u280", host_ops, arrays=layout.arrays, slrs=layout.slrs,
                          placement=layout.placement, rows=layout.rows)
    assert {p.slr for k in design.kernels for p in k.processes} == set(range(layout.slrs))
    assert len(design.vitis_kernels()) == (layout.slrs if layout.slrs > 1 else 1)
    assert tvm_spatial.estimate(design).max_slr_utilization[0] <= 0.85 + 1e-9


def test_small_design_stays_on_one_slr_unless_told():
    """An MLP gains nothing from more SLRs: one kernel, no AXI-stream links. Asked for 3, it
    is split in 3; asked for more than the card has, a usage error names the limit."""
    from tvm_spatial import examples

    design = tvm_spatial.design_of(relax.build(examples.mlp().mod, target="vitis_spatial"))
    assert {p.slr for p in design.kernels[0].processes} == {0} and design.kernels[0].segments == ()
    with tvm_spatial.allocation(slrs=3):
        split = tvm_spatial.design_of(relax.build(examples.mlp().mod, target="vitis_spatial"))
    assert {p.slr for p in split.kernels[0].processes} == {0, 1, 2} and len(split.kernels[0].segments) == 3
    with pytest.raises(tvm_spatial.UsageError, match="slrs=4.*3 SLRs"):
        with tvm_spatial.allocation(slrs=4):
            relax.build(examples.mlp().mod, target="vitis_spatial")
    with pytest.raises(tvm_spatial.UsageError, match="count of SLRs"):
        with tvm_spatial.allocation(slrs=-1):
            pass


def test_an_allocation_the_budget_never_held_back_stops_at_one_slr(monkeypatch):
    """``Allocation.resource_bound``: the MLP grows every process as far as it saves cycles
    within one SLR, so more SLRs cannot speed it up -- allocated on 2 and 3 they are no
    faster -- and the build allocates it on one count of SLRs only, with no placement
    search. GPT2's fixture wants more than one SLR gives, and so does the MLP in 5 % of
    each resource."""
    from relax_passes import host_operators, partition_for_vitis_spatial
    from tvm_spatial import examples
    from tvm_spatial.tuning import policy

    mod = partition_for_vitis_spatial(examples.mlp().mod)
    funcs = offloaded_regions(mod)
    host_ops = host_operators(mod)
    alone = policy.allocate_planned(funcs, "u280", host_ops, 1)
    assert not alone.resource_bound
    for count in (2, 3):
        assert policy.allocate_planned(funcs, "u280", host_ops, count).estimate.prefill_cycles >= \
            alone.estimate.prefill_cycles
    tight = policy.allocate_planned(funcs, "u280", host_ops, 1, budget=0.05)
    assert tight.resource_bound and tight.estimate.prefill_cycles > alone.estimate.prefill_cycles
    gpt2_funcs, gpt2_host_ops = _offloaded("gpt2_tiny")
    assert policy.allocate_planned(gpt2_funcs, "u280", gpt2_host_ops, 1).resource_bound

    counts = []
    real = policy.allocate_planned
    monkeypatch.setattr(policy, "allocate_planned", lambda f, d, h, slrs, *a, **k: counts.append(slrs) or
                        real(f, d, h, slrs, *a, **k))
    monkeypatch.setattr(policy, "_LAYOUTS", {})
    layout = policy.choose_layout(funcs, "u280", host_ops, policy.AllocationPolicy())
    assert counts == [1] and layout.slrs == 1


def test_layouts_are_forgotten_least_recently_used_first(monkeypatch):
    """The layout memory keeps ``_LAYOUTS_KEPT`` designs: a new one pushes out the one
    asked for least recently, not every one at once."""
    from tvm_spatial.tuning import policy

    def region(n: int):
        bb = relax.BlockBuilder()
        x = relax.Var("x", relax.TensorType((n,), "float32"))
        with bb.function("f", [x]):
            bb.emit_func_output(x)
        return bb.get()["f"]

    chosen = []
    monkeypatch.setattr(policy, "_choose_layout",
                        lambda funcs, *rest: chosen.append(funcs[0]) or (policy.Layout(None, None), None))
    monkeypatch.setattr(policy, "_LAYOUTS", {})
    monkeypatch.setattr(policy, "_LAYOUTS_KEPT", 2)
    first, second, third = region(2), region(3), region(4)

    def ask(func):
        policy.choose_layout([func], "u280", (), policy.AllocationPolicy())

    for func in (first, second, first, third):  # the third pushes out the second
        ask(func)
    assert len(chosen) == 3
    ask(first)
    assert len(chosen) == 3
    ask(second)
    assert len(chosen) == 4 and chosen[-1].same_as(second)
