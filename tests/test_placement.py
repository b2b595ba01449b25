"""SLR cuts chosen with the model (tvm_spatial.estimate.placement).

The search is checked on synthetic chains against a brute force over every placement of
every kernel at once (an independent enumeration: itertools.product over all SLR
labellings, filtered to contiguous splits), then wired into the build: the GPT2 fixture's
layout is no slower than the work-balanced split's allocation, and the design built from
it realizes that placement and that estimate.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

import tvm_spatial
from relax_passes import offloaded_regions
from codegen_hls.kernel import build_design
from tvm_spatial.devices import get_device
from tvm_spatial.errors import ResourceBudgetError
from tvm_spatial.estimate import design_work
from tvm_spatial.estimate.placement import (
    EXHAUSTIVE_SPLITS,
    MIN_GAIN,
    chain_splits,
    crossings,
    search_placement,
    split_labels,
)
from tvm_spatial.estimate.workload import DesignWork, ProcessWork, StreamWork

FIXTURES = Path(__file__).parent / "fixtures"


def _contiguous_in_order(labels) -> bool:
    return all(a <= b for a, b in zip(labels, labels[1:]))


@pytest.mark.parametrize("length,slrs", [(1, 3), (4, 2), (5, 3), (6, 4)])
def test_chain_splits_are_every_ordered_contiguous_split(length, slrs):
    want = {labels for labels in itertools.product(range(slrs), repeat=length) if _contiguous_in_order(labels)}
    got = list(chain_splits(length, slrs))
    assert len(got) == len(set(got)) == math.comb(length + slrs - 1, slrs - 1)
    assert set(got) == want


def test_split_labels_reads_cuts_as_where_the_next_slr_begins():
    assert split_labels((2, 4), 6) == (0, 0, 1, 1, 2, 2)
    assert split_labels((0, 6), 6) == (1, 1, 1, 1, 1, 1)  # SLR0 and SLR2 empty
    assert split_labels((3, 3), 5) == (0, 0, 0, 2, 2)  # SLR1 empty


def test_crossings_count_the_slr_boundaries_each_stream_passes():
    work = _chain_work({"k0": 3}, 3)  # p0 on SLR0, p1 on SLR1, p2 on SLR2
    assert [p.slr for p in work.processes] == [0, 1, 2]
    assert crossings(work) == 2
    assert crossings(work.with_placement({"k0_p1": 0})) == 2  # one stream from SLR0 to SLR2
    assert crossings(work.with_placement({"k0_p0": 2, "k0_p1": 2})) == 0


def _chain_work(chains: dict[str, int], slrs: int) -> DesignWork:
    """Kernels of ``chains[kernel]`` processes, each chain split evenly over ``slrs``, a
    stream between neighbours."""
    procs, streams = [], []
    for kernel, length in chains.items():
        for i in range(length):
            procs.append(ProcessWork(kernel, f"{kernel}_p{i}", "gelu", 0, i * slrs // length, 1, 1, 1, "float32"))
            if i:
                streams.append(StreamWork(f"{kernel}_s{i}", 32, 2, 1, 0, f"{kernel}_p{i - 1}", f"{kernel}_p{i}"))
    return DesignWork("u280", 1, False, tuple(procs), tuple(streams))


def _toy_score(weights: dict[str, float], slrs: int, capacity: float):
    """Prefill of a toy model: the busiest SLR's load (the sum of its processes'
    weights), plus 1 per crossing stream; over ``capacity`` on an SLR does not fit."""

    def score(work: DesignWork) -> float:
        load = [0.0] * slrs
        for p in work.processes:
            load[p.slr] += weights[p.name]
        if max(load) > capacity:
            raise ResourceBudgetError("over")
        return max(load) + crossings(work)

    return score


def _best_for_kernel(work: DesignWork, placement: dict, kernel: str, slrs: int, score) -> float:
    """The least score over every contiguous ordered split of ``kernel``, the others as in
    ``placement`` (an enumeration of its own: every labelling, the ordered ones kept)."""
    chain = work.kernel_processes()[kernel]
    best = math.inf
    for labels in itertools.product(range(slrs), repeat=len(chain)):
        if not _contiguous_in_order(labels):
            continue
        trial = {**placement, **{p.name: slr for p, slr in zip(chain, labels)}}
        try:
            best = min(best, score(work.with_placement(trial)))
        except ResourceBudgetError:
            pass
    return best


@pytest.mark.parametrize("seed", range(6))
def test_search_leaves_no_kernel_a_split_that_wins(seed):
    """Coordinate descent over kernels: at its end no kernel has a split (the others fixed)
    that beats it by MIN_GAIN -- checked by enumerating each kernel's splits anew."""
    import random

    rng = random.Random(seed)
    work = _chain_work({"k0": 5, "k1": 2, "k2": 3}, 3)
    weights = {p.name: rng.choice([1, 2, 5, 10, 30]) for p in work.processes}
    capacity = sum(weights.values()) * 0.6
    score = _toy_score(weights, 3, capacity)
    found = search_placement(work, 3, score)
    placed = work.with_placement(found)
    for chain in placed.kernel_processes().values():
        assert _contiguous_in_order([p.slr for p in chain])
    got = score(placed)
    for kernel in work.kernel_processes():
        assert got <= _best_for_kernel(work, found, kernel, 3, score) / (1 - MIN_GAIN), kernel
    try:
        start = score(work)
    except ResourceBudgetError:
        start = math.inf
    assert got <= start


def test_long_chains_move_one_cut_at_a_time_and_never_get_worse():
    """A chain with more splits than EXHAUSTIVE_SPLITS: the cuts move one at a time; the
    result is never slower than the start and is a local optimum of single-cut moves."""
    length, slrs = 40, 4
    assert math.comb(length + slrs - 1, slrs - 1) > EXHAUSTIVE_SPLITS
    work = _chain_work({"k0": length}, slrs)
    weights = {p.name: (7 if i % 5 == 0 else 1) + (20 if i > 30 else 0) for i, p in enumerate(work.processes)}
    score = _toy_score(weights, slrs, math.inf)
    found = search_placement(work, slrs, score)
    labels = [found[p.name] for p in work.processes]
    assert _contiguous_in_order(labels)
    best = score(work.with_placement(found))
    assert best < score(work)
    cuts = [sum(1 for s in labels if s < j) for j in range(1, slrs)]
    names = [p.name for p in work.processes]
    for j in range(len(cuts)):
        for shift in (-1, 1):
            trial = list(cuts)
            trial[j] += shift
            if trial != sorted(trial) or not 0 <= trial[j] <= length:
                continue
            moved = dict(zip(names, split_labels(trial, length)))
            assert score(work.with_placement(moved)) >= best * (1 - MIN_GAIN)


def test_a_gain_under_min_gain_keeps_the_current_split():
    """A split half MIN_GAIN faster with as many crossing streams is not worth the move;
    one as fast with fewer crossings is."""
    work = _chain_work({"k0": 4}, 2)
    start = {p.name: p.slr for p in work.processes}
    assert list(start.values()) == [0, 0, 1, 1]
    nearly = dict(zip(start, (0, 1, 1, 1)))  # one crossing, as the start

    def score(w):
        labels = {p.name: p.slr for p in w.processes}
        if labels == nearly:
            return 1000.0 * (1 - MIN_GAIN / 2)
        return 1100.0 if crossings(w) == 0 else 1000.0

    assert search_placement(work, 2, score) == start

    def fewer(w):  # now one SLR is as fast: no crossing wins the tie
        return 1000.0

    assert set(search_placement(work, 2, fewer).values()) in ({0}, {1})


def test_one_slr_leaves_everything_where_it_is():
    work = _chain_work({"k0": 3}, 1)
    assert search_placement(work, 1, lambda w: 1.0) == {p.name: 0 for p in work.processes}


def _offloaded(name: str):
    from relax_passes import host_operators, partition_for_vitis_spatial

    mod = partition_for_vitis_spatial(tvm_spatial.frontend.from_onnx(FIXTURES / f"{name}.onnx"))
    funcs = offloaded_regions(mod)
    return funcs, host_operators(mod)


def test_build_takes_the_searched_cuts_and_its_estimate():
    """The GPT2 fixture: the layout (SLR cuts searched) is no slower than the allocation
    on the work-balanced split of the same SLRs; the design built from the layout puts
    every process where the layout says, in contiguous ordered segments, within budget,
    and its estimate is the layout's."""
    from tvm_spatial.tuning.policy import AllocationPolicy, allocate_planned, choose_layout

    funcs, host_ops = _offloaded("gpt2_tiny")
    layout = choose_layout(funcs, "u280", host_ops, AllocationPolicy())
    balanced = allocate_planned(funcs, "u280", host_ops, layout.slrs, search=False)
    assert layout.estimate.prefill_cycles <= balanced.estimate.prefill_cycles
    design = build_design(funcs, "u280", host_ops, arrays=layout.arrays, slrs=layout.slrs,
                          placement=layout.placement, rows=layout.rows)
    for kernel in design.kernels:
        slrs = [p.slr for p in kernel.processes]
        assert slrs == [layout.placement[p.name] for p in kernel.processes]
        assert _contiguous_in_order(slrs)
    est = tvm_spatial.estimate(design)
    assert est.prefill_cycles == pytest.approx(layout.estimate.prefill_cycles)
    assert est.max_slr_utilization[0] <= 0.85 + 1e-9
    assert {p.name: p.slr for p in est.processes} == layout.placement
    work = design_work(design)
    assert crossings(work) == sum(abs(layout.placement[s.producer] - layout.placement[s.consumer])
                                  for k in design.kernels for s in k.streams)
    assert get_device("u280").slrs >= layout.slrs


def test_a_split_that_fits_is_searched_for_when_the_balanced_one_does_not():
    """The GPT2 fixture with its layers reused, in 4 % of each SLR: on three SLRs the
    work-balanced split is over budget, yet another split fits. The build searches for it
    instead of giving up (and building the library's arrays with a warning); the design
    built from that layout is within the budget on every SLR."""
    import warnings

    from relax_passes import host_operators, partition_for_vitis_spatial
    from tvm_spatial.tuning.policy import AllocationPolicy, allocate_planned, choose_layout

    budget = 0.04
    mod = partition_for_vitis_spatial(tvm_spatial.frontend.from_onnx(FIXTURES / "gpt2_tiny.onnx"), layers="reuse")
    funcs = offloaded_regions(mod)
    host_ops = host_operators(mod)
    with pytest.raises(ResourceBudgetError):  # the premise: balanced, it does not fit
        allocate_planned(funcs, "u280", host_ops, 3, budget=budget, search=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DesignOverBudgetWarning
        layout = choose_layout(funcs, "u280", host_ops, AllocationPolicy(budget=budget))
    assert layout.estimate is not None and layout.slrs == 3
    design = build_design(funcs, "u280", host_ops, arrays=layout.arrays, slrs=layout.slrs,
                          placement=layout.placement, rows=layout.rows)
    est = tvm_spatial.estimate(design)
    assert est.max_slr_utilization[0] <= budget + 1e-9
    assert est.prefill_cycles == pytest.approx(layout.estimate.prefill_cycles)
