"""The lanes schedule of non-matmul processes (``codegen_hls.lanes``): the emulation of the
scheduled HLS equals numpy, the pragmas carry the realized factors, the design records the
lanes, and the analytical model's cycles agree with the loop trips the HLS text implies."""

from __future__ import annotations

import math
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from tvm import relax
from tvm.relax import op

import tvm_spatial
from codegen_hls import emulation
from codegen_hls.design import Design
from codegen_hls.kernel import build_design, plan_design
from helpers import run_vm

FIXTURES = Path(__file__).parent / "fixtures"
ROWS, WIDTH = 6, 40


def _divisor_at_most(n: int, k: int) -> int:
    return max(d for d in range(1, n + 1) if n % d == 0 and d <= max(1, k))


def _chain():
    """layer norm -> gelu -> residual add -> softmax, a transpose, a column sum, and a sum
    of everything (a reduction its own loop carries: no row loop to pipeline around it)."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((ROWS, WIDTH), "float32"))
    y = relax.Var("y", relax.TensorType((ROWS, WIDTH), "float32"))
    g = relax.Var("g", relax.TensorType((WIDTH,), "float32"))
    b = relax.Var("b", relax.TensorType((WIDTH,), "float32"))
    with bb.function("main", [x, y, g, b]):
        with bb.dataflow():
            h = bb.emit(op.nn.layer_norm(x, g, b, axes=[-1]))
            h = bb.emit(op.nn.gelu(h))
            h = bb.emit(op.add(h, y))
            s = bb.emit(op.nn.softmax(h, axis=-1))
            t = bb.emit(op.permute_dims(s))
            c = bb.emit(op.sum(h, axis=[0]))
            total = bb.emit(op.sum(y, axis=[0, 1], keepdims=True))
            out = bb.emit_output(relax.Tuple([s, t, c, total]))
        bb.emit_func_output(out)
    return bb.get()


def _reference(x, y, g, b):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    h = (x - mean) / np.sqrt(var + 1e-5) * g + b
    erf = np.vectorize(math.erf)
    h = 0.5 * h * (1 + erf(h / math.sqrt(2)))
    h = h + y
    e = np.exp(h - h.max(-1, keepdims=True))
    s = e / e.sum(-1, keepdims=True)
    return [s, s.T, h.sum(0), y.sum(keepdims=True)]


def _offloaded(mod):
    from relax_passes import host_operators, partition_for_vitis_spatial

    part = partition_for_vitis_spatial(mod)
    funcs = [f for _, f in part.functions.items()
             if isinstance(f, relax.Function) and f.attrs and f.attrs.get("Codegen")]
    return funcs, host_operators(part)


def _function_body(source: str, name: str) -> str:
    start = source.index(f"static void {name}(")
    return source[start: source.index("\n}\n", start)]


def _stage_calls(kernel, proc) -> list[str]:
    return re.findall(rf"\b({re.escape(kernel.name)}__\w+)\(", _function_body(kernel.source, proc.name))


def _pipelined_cycles(text: str) -> int:
    """Cycles the HLS text implies: for every pipelined loop, its trips (with those of the
    loops around it) times its II. Read from the text alone, independently of the model."""
    stack, total, last = [], 0, 0
    for line in text.split("\n"):
        line = line.strip()
        loop = re.match(r"for \(\w+ \w+ = 0; \w+ < (\d+); \+\+\w+\) \{$", line)
        pipe = re.match(r"#pragma HLS PIPELINE II=(\d+)$", line)
        partial = re.match(r"#pragma HLS UNROLL factor=(\d+)$", line)
        if loop:
            stack.append(int(loop.group(1)))
        elif pipe:
            last = math.prod(stack) * int(pipe.group(1))
            total += last
        elif partial and last:  # the pipelined loop is unrolled by N first: N iterations per II
            total += last // int(partial.group(1)) - last
        else:  # other scopes: blocks, ifs, the function itself
            last = 0
            for ch in line:
                if ch == "{":
                    stack.append(1)
                elif ch == "}":
                    stack.pop()
    return total


@pytest.fixture(scope="module")
def chain_inputs():
    rng = np.random.default_rng(3)
    return [rng.standard_normal((ROWS, WIDTH)).astype("float32") for _ in range(2)] + [
        rng.standard_normal(WIDTH).astype("float32") for _ in range(2)
    ]


@pytest.fixture(scope="module")
def chain_processes():
    funcs, host_ops = _offloaded(_chain())
    plan = plan_design(funcs, "u280", host_ops)
    return [p for k in plan.kernels for p in k.processes if not p.matmul and p.op != "copy"]


@pytest.mark.parametrize("lanes", [1, 4, 16, 7])  # 16 and 7 do not divide the width of 40
def test_scheduled_processes_match_numpy_and_realize_the_lanes(lanes, chain_inputs, chain_processes):
    names = {p.name: lanes for p in chain_processes}
    with tvm_spatial.allocation("default", lanes=names):
        ex = relax.build(_chain(), target="vitis_spatial")
    got = run_vm(ex, chain_inputs)
    for g, w in zip(got, _reference(*[v.astype("float64") for v in chain_inputs])):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)

    design = tvm_spatial.design_of(ex)
    procs = [p for k in design.kernels for p in k.processes if p.name in names]
    assert {p.name for p in procs} == set(names)
    for p in procs:
        assert p.lanes == _divisor_at_most(p.width, lanes), p.name
    est = tvm_spatial.estimate(design)
    for p in procs:
        assert est.process(p.name).parallelism.lanes == (p.lanes if p.lanes > 1 else 1)
    kernel = design.kernels[0]

    norm = next(p for p in procs if p.op == "layer_norm")
    real = _divisor_at_most(WIDTH, lanes)
    text = "\n".join(_function_body(kernel.source, s) for s in _stage_calls(kernel, norm))
    # the two row reductions (mean, variance): the row loop at ceil(K / lanes), K unrolled
    assert text.count(f"#pragma HLS PIPELINE II={math.ceil(WIDTH / real)}\n") == 2
    assert "#pragma HLS PIPELINE II=1\n" in text  # the normalization
    # x comes straight from the kernel's m_axi port: an AXI master is never partitioned
    assert "variable=x " not in text
    gelu = next(p for p in procs if p.op == "gelu")
    gelu_text = "\n".join(_function_body(kernel.source, s) for s in _stage_calls(kernel, gelu))
    first_param = re.search(r"\(const float (\w+)\[", gelu_text).group(1)  # a buffer of the stream
    if real == 1:  # one lane: pipelined loops, nothing unrolled or partitioned
        assert "UNROLL" not in gelu_text and "ARRAY_PARTITION" not in gelu_text
        assert "#pragma HLS PIPELINE II=1" in gelu_text
    else:  # the row loop unrolled by the lanes, then pipelined: that many elements per cycle
        assert f"variable={first_param} type=cyclic factor={real} dim=2" in gelu_text
        lanes_loop = rf"< {WIDTH}; \+\+\w+\) \{{\n\s*#pragma HLS PIPELINE II=1\n\s*#pragma HLS UNROLL factor={real}\n"
        assert re.search(lanes_loop, gelu_text) and re.search(lanes_loop, text)


def test_model_cycles_agree_with_the_hls_text(chain_processes):
    """For every non-matmul process, the model's cycles and those the pipelined loops of
    its stage functions and of its own copy loops (stream reads and writes) imply
    (trips x II) are the same."""
    funcs, host_ops = _offloaded(_chain())
    for lanes in (1, 4, 8):
        design = build_design(funcs, "u280", host_ops, arrays={p.name: lanes for p in chain_processes})
        est = tvm_spatial.estimate(design)
        checked = 0
        for kernel in design.kernels:
            for p in kernel.processes:
                if p.op == "copy" or not p.lanes:
                    continue
                text = "\n".join(_function_body(kernel.source, s) for s in [p.name, *_stage_calls(kernel, p)])
                hls = _pipelined_cycles(text)
                model = est.process(p.name).prefill_cycles
                assert hls == pytest.approx(model, abs=1), (p.name, lanes, hls, model)
                checked += 1
        assert checked == len(chain_processes)
    # the sum of everything has no row loop: its loop carries the add chain, II = add latency
    sum_all = next(k for k in design.kernels if k.name.endswith("_sum"))
    assert "#pragma HLS PIPELINE II=4\n" in sum_all.source


@pytest.fixture(scope="module")
def gpt2():
    funcs, host_ops = _offloaded(tvm_spatial.frontend.from_onnx(FIXTURES / "gpt2_tiny.onnx"))
    from tvm_spatial.tuning.policy import allocate_planned

    return funcs, host_ops, allocate_planned(funcs, "u280", host_ops)


def test_gpt2_allocation_realizes_lanes_and_element_wise_latency_drops(gpt2):
    funcs, host_ops, alloc = gpt2
    rows = alloc.config.block
    wide = build_design(funcs, "u280", host_ops, arrays=alloc.codegen_table(), rows=rows, placement=alloc.placement)
    narrow = build_design(funcs, "u280", host_ops, arrays=alloc.matmul_tilings(), rows=rows,
                          placement=alloc.placement)  # one lane each, on the allocation's SLRs
    procs = [p for p in wide.kernels[0].processes if p.lanes]
    assert procs and any(p.lanes > 1 for p in procs)
    chosen = alloc.lanes()
    for p in procs:
        assert p.lanes == chosen.get(p.name, 1) and p.width % p.lanes == 0, p.name
    est_wide, est_narrow = tvm_spatial.estimate(wide), tvm_spatial.estimate(narrow)
    assert est_wide.prefill_cycles == pytest.approx(alloc.estimate.prefill_cycles)
    assert est_wide.max_slr_utilization[0] <= 0.85 + 1e-9
    kernel, narrow_kernel = wide.kernels[0], narrow.kernels[0]
    for p, q in zip(kernel.processes, narrow_kernel.processes):
        if not p.lanes:
            continue
        # a blocked process calls its stage functions once per block of ``rows`` tokens
        calls = est_wide.tokens // p.rows if p.rows else 1
        # ... and runs its own copy loops (stream reads and writes) around them
        cycles = [calls * _pipelined_cycles("\n".join(_function_body(k.source, s) for s in _stage_calls(k, r)))
                  + _pipelined_cycles(_function_body(k.source, r.name))
                  for k, r in ((kernel, p), (narrow_kernel, q))]
        # the HLS text's own cycles fall with the lanes, and the model's are those
        for est, count in ((est_wide, cycles[0]), (est_narrow, cycles[1])):
            assert count == pytest.approx(est.process(p.name).prefill_cycles, abs=1), (p.name, cycles)
        if p.lanes > 1:
            assert cycles[0] < cycles[1], (p.name, p.lanes, cycles)
    # element-wise processes are no longer the bottleneck: their copy loops move a packet of
    # elements per cycle (wide streams), and their lanes keep up; a MAC process bounds it
    from tvm_spatial.estimate import design_work

    bottleneck = next(w for w in design_work(wide).processes if w.name == est_wide.bottleneck)
    assert bottleneck.matmul is not None or bottleneck.macs > 0, bottleneck.name
    assert bottleneck.stream_io < est_wide.process(bottleneck.name).prefill_cycles / 2


def test_design_records_lanes_deterministically_and_compiles_strictly(gpt2, tmp_path):
    funcs, host_ops, alloc = gpt2
    first = build_design(funcs, "u280", host_ops, arrays=alloc.codegen_table(), rows=alloc.config.block)
    second = build_design(funcs, "u280", host_ops, arrays=alloc.codegen_table(), rows=alloc.config.block)
    assert first.to_json() == second.to_json()  # byte-identical sources and records
    again = Design.from_json(first.to_json())
    assert again == first and any(p.lanes > 1 for p in again.kernels[0].processes)
    (tmp_path / Design.COMMON_HEADER_NAME).write_text(first.common_header)
    for kernel in first.kernels:
        source = tmp_path / kernel.filename
        source.write_text(kernel.source)
        args = ["-std=c++17", "-O2", "-c", "-isystem", str(emulation.xilinx_include_dir()),
                *emulation.STRICT_FLAGS, str(source), "-o", os.devnull]
        proc = subprocess.run([emulation.host_compiler(), *args], cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_lanes_policy_round_trips_and_rejects_nonsense():
    from tvm_spatial.tuning.policy import AllocationPolicy

    policy = AllocationPolicy(lanes=(("k0_p1_gelu", 8),))
    assert AllocationPolicy.from_json(policy.to_json()) == policy
    with pytest.raises(tvm_spatial.UsageError, match="lanes"):
        with tvm_spatial.allocation(lanes={"k0_p1_gelu": 0}):
            pass
