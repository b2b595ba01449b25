"""Meta-schedule tuning of a design's MAC arrays, lanes, SLR cuts and token block
(tvm_spatial.tuning.tuner): the GPT2 fixture (arrays, lanes and cuts) and the BERT
fixture (token blocks too) tuned with a small trial budget are faster than the model's
greedy allocation (what ``relax.build`` does untuned, SLR cuts searched with the model)
within the budget,
``relax.build`` under ``with database:`` realizes the best record (arrays and placement),
and the tuned design still matches onnxruntime in emulation.

Slow part: the first ``TuneContext`` imports TVM's tensor intrinsics (tens of seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_spatial
from relax_passes import offloaded_regions
from codegen_hls.kernel import plan_design
from tvm_spatial.devices import get_device
from tvm_spatial.estimate import allocate_for_codegen, design_work

FIXTURES = Path(__file__).parent / "fixtures"


def _fixture(name):
    data = np.load(FIXTURES / f"{name}.npz")
    inputs = {k[3:]: data[k] for k in data.files if k.startswith("in:")}
    outputs = {k[4:]: data[k] for k in data.files if k.startswith("out:")}
    return FIXTURES / f"{name}.onnx", inputs, outputs


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    from tvm_spatial.tuning.tuner import plan_module, tune_design

    # the GPT2 fixture in the build's blocks: arrays, lanes and SLR cuts alone. Its greedy
    # allocation is what 64 trials of those find (0.0440 ms; before the model stopped
    # hiding off-chip traffic behind copy loops it was 0.0452 ms and tuning found 0.0416),
    # as the BERT fixture's is what 128 find; tuning beats both with smaller token blocks
    # (test_tuning_the_bert_fixture_...)
    path, inputs, outputs = _fixture("gpt2_tiny")
    mod = tvm_spatial.frontend.from_onnx(path)
    _, plan = plan_module(mod)  # in the token blocks relax.build will print
    work_dir = tmp_path_factory.mktemp("tune_gpt2")
    seen = []
    result = tune_design(plan, str(work_dir), max_trials=32, trials_per_iter=16,
                         progress=lambda best, trials, failed: seen.append((best, trials, failed)))
    return mod, plan, result, work_dir, inputs, outputs, seen


def test_tuning_keeps_the_allocation_or_better_and_fits(tuned):
    _, plan, result, _, _, _, seen = tuned
    dev = get_device("u280")
    work = design_work(plan)
    greedy = allocate_for_codegen(work, dev).estimate
    assert result.baseline_seconds == pytest.approx(greedy.seconds(greedy.prefill_cycles))
    assert result.baseline_cuts == work.cuts() and max(map(len, work.cuts().values())) == dev.slrs - 1
    # the baseline is a record of its own, so the best is never slower; within these blocks
    # the search (seeded) finds nothing faster for this fixture, and some of the designs it
    # tries go over the budget: the greedy allocation fills the SLRs to it
    assert result.best_seconds <= result.baseline_seconds
    assert 0 < result.failed < result.trials
    from tvm_spatial.tuning.tuner import score

    assert result.rows == work.block == 8  # tuned in the blocks the plan was printed in
    est, error = score(work, dev, {**result.best_arrays, **result.best_lanes}, cuts=result.best_cuts,
                       rows=result.rows)
    assert error is None and est.max_slr_utilization[0] <= 0.85 + 1e-9
    assert est.seconds(est.prefill_cycles) == pytest.approx(result.best_seconds)
    assert result.trials == 32 and len(seen) == 32 and seen[-1][0] == pytest.approx(result.best_seconds)


def test_database_is_json_on_disk_and_reloads(tuned):
    from tvm.s_tir import meta_schedule as ms

    from tvm_spatial.tuning.tuner import tuned_arrays

    _, plan, result, work_dir, *_ = tuned
    files = {p.name for p in Path(work_dir).iterdir()}
    assert {"database_workload.json", "database_tuning_record.json"} <= files
    for line in (Path(work_dir) / "database_tuning_record.json").read_text().splitlines():
        json.loads(line)
    again = ms.database.JSONDatabase(work_dir=str(work_dir))
    assert tuned_arrays(again, plan) == result.best_arrays


def test_build_with_database_applies_the_best_record_and_matches_onnxruntime(tuned):
    mod, _, result, _, inputs, outputs, _ = tuned
    with result.database:
        ex = relax.build(mod, target="vitis_spatial")
    design = tvm_spatial.design_of(ex)
    realized = {p.name: p.realized for k in design.kernels for p in k.processes if p.array}
    assert realized == result.best_arrays
    # the tuned SLR cuts: each kernel's chain changes SLR exactly there
    for kernel in design.kernels:
        slrs = [p.slr for p in kernel.processes]
        cuts = tuple(i for i in range(1, len(slrs)) if slrs[i] != slrs[i - 1])
        assert cuts == result.best_cuts.get(kernel.name, ())
    est = tvm_spatial.estimate(design)
    assert est.seconds(est.prefill_cycles) == pytest.approx(result.best_seconds)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    got = vm["main"](*[tvm.runtime.tensor(v) for v in inputs.values()])
    got = [got] if isinstance(got, tvm.runtime.Tensor) else list(got)
    for g, (name, want) in zip(got, outputs.items()):
        np.testing.assert_allclose(g.numpy(), want, rtol=1e-4, atol=1e-4, err_msg=name)


def test_database_of_another_design_is_ignored(tuned):
    """A database without this design's workload leaves relax.build at the allocation."""
    from tvm_spatial.tuning.tuner import tuned_arrays

    _, _, result, *_ = tuned
    path, _, _ = _fixture("bert_tiny")
    from relax_passes import host_operators, partition_for_vitis_spatial

    part = partition_for_vitis_spatial(tvm_spatial.frontend.from_onnx(path))
    funcs = offloaded_regions(part)
    assert tuned_arrays(result.database, plan_design(funcs, "u280", host_operators(part))) is None


def test_tuning_keeps_to_the_policys_channels(tuned, tmp_path):
    """Under ``allocation(channels=1)`` no tuned array reads its weight through more than
    one port, where the same plan's allocation without the cap stripes every linear."""
    from tvm_spatial.tuning.tuner import tune_design

    _, plan, *_ = tuned
    uncapped = allocate_for_codegen(design_work(plan), get_device("u280")).codegen_table()
    assert any(isinstance(v, tuple) and len(v) > 2 and v[2] > 1 for v in uncapped.values())
    with tvm_spatial.allocation(channels=1):
        result = tune_design(plan, str(tmp_path), max_trials=8, trials_per_iter=8)
    assert result.best_arrays and all(len(v) == 2 for v in result.best_arrays.values())


def test_tuning_blocks_lie_below_the_builds_floor():
    from tvm_spatial.estimate.allocation import CODEGEN_MIN_ROWS
    from tvm_spatial.tuning.tuner import tuning_blocks

    assert CODEGEN_MIN_ROWS == 8  # the premise of the figures below
    assert tuning_blocks(16, 8) == (2, 4)
    assert tuning_blocks(128, 16) == (2, 4)  # the build's own blocks are its to choose
    assert tuning_blocks(12, 4) == (2,)
    assert tuning_blocks(15, 8) == ()  # no power of two divides it
    assert tuning_blocks(16, None) == () and tuning_blocks(1, 8) == ()


def test_tuning_the_bert_fixture_beats_the_allocation_and_matches_onnxruntime(tmp_path):
    """The BERT fixture (16 tokens): the build's allocation, in blocks of 8 with its SLR cuts
    searched, is a local optimum of the arrays, lanes and cuts; its pipeline is mostly
    fill. Tuning also tries the blocks below the build's floor, each planned and tuned on
    its own; the best record is faster, ``relax.build`` under the database realizes its
    block and arrays, and the design still matches onnxruntime in emulation."""
    from tvm_spatial.tuning.tuner import block_plans, plan_module, tune_design

    path, inputs, outputs = _fixture("bert_tiny")
    mod = tvm_spatial.frontend.from_onnx(path)
    part, plan = plan_module(mod)
    plans = block_plans(part, plan)
    assert design_work(plan).block == 8 and sorted(plans) == [2, 4]
    result = tune_design(plan, str(tmp_path), max_trials=24, trials_per_iter=8, block_plans=plans)
    greedy = allocate_for_codegen(design_work(plan), get_device("u280")).estimate
    assert result.baseline_seconds == pytest.approx(greedy.seconds(greedy.prefill_cycles))
    assert result.best_seconds < result.baseline_seconds and result.rows in plans
    assert result.trials == 24
    with result.database:
        ex = relax.build(mod, target="vitis_spatial")
    design = tvm_spatial.design_of(ex)
    assert max(p.rows for k in design.kernels for p in k.processes) == result.rows
    est = tvm_spatial.estimate(design)
    assert est.seconds(est.prefill_cycles) == pytest.approx(result.best_seconds)
    assert est.max_slr_utilization[0] <= 0.85 + 1e-9
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](*[tvm.runtime.tensor(v) for v in inputs.values()])
    got = [got] if isinstance(got, tvm.runtime.Tensor) else list(got)
    for g, (name, want) in zip(got, outputs.items()):
        np.testing.assert_allclose(g.numpy(), want, rtol=1e-4, atol=1e-4, err_msg=name)
