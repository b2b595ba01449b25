"""The model for customized TensorIR kernels (``tvm_spatial.Schedule``, e.g. PolyBench).

Reads the schedule's annotations from the IR through :mod:`tvm_spatial.annotations` and
computes, per top-level loop nest (a stage), the latency HLS would schedule:

* a loop with ``hls.pipeline_ii`` runs ``(trips - 1) * II + depth`` cycles; loops inside it
  are unrolled. The achieved II is the larger of the requested one and the recurrence of
  a float accumulation whose address does not move with the pipelined loop (an fp32 add
  has a latency of ``costs.MAC_COSTS["fp32"].latency`` cycles); an accumulation chain
  inside the unrolled body adds its adds to the depth;
* a loop with ``hls.unroll`` runs ``ceil(trips / factor)`` copies of its body's latency;
* an innermost loop with no annotation is pipelined at II 1 by Vitis HLS (its default
  ``config_compile -pipeline_loops``), with the same recurrence rule;
* any other loop runs its body ``trips`` times plus one cycle per iteration;
* stages run one after another (a top-level dataflow region takes the longest stage).

Resources: each floating-point operator inside a pipelined body is instantiated once per
unrolled copy and shared ``II`` ways (``costs.FP32_OPS``); arrays take BRAM by partition.
"""

from __future__ import annotations

import math

import tvm
import tvm_ffi
from tvm import tirx

import tvm_spatial.annotations as ann

from ..devices import Device
from . import costs
from .model import Estimate, Parallelism, ProcessEstimate, Resources, Roofline

_FP_ADD = costs.MAC_COSTS["fp32"].latency


def _extent(loop) -> int:
    ext = loop.extent
    return int(ext.value) if hasattr(ext, "value") else 1


def _is_float(expr) -> bool:
    return str(getattr(expr, "ty", getattr(expr, "dtype", ""))).startswith("float")


def _uses(expr, var, binds: dict | None = None) -> bool:
    """Whether ``expr`` depends on loop ``var``, through sblock iterator bindings too."""
    found = []

    def visit(n):
        if n.same_as(var):
            found.append(1)
        elif binds is not None and isinstance(n, tirx.Var):
            bound = binds.get(n)
            if bound is not None and _uses(bound, var):
                found.append(1)

    tvm_ffi.structural_walk(expr, visit)
    return bool(found)


def _bindings(stmt) -> dict:
    """sblock iterator variable -> the loop expression it is bound to, below ``stmt``."""
    binds = {}

    def visit(n):
        if isinstance(n, tvm.s_tir.SBlockRealize):
            for iv, value in zip(n.block.iter_vars, n.iter_values):
                binds[iv.var] = value

    tvm_ffi.structural_walk(stmt, visit)
    return binds


def _ops(stmt) -> dict[str, int]:
    counts: dict[str, int] = {}

    def visit(n):
        for cls, name in ((tirx.Add, "add"), (tirx.Sub, "add"), (tirx.Mul, "mul"), (tirx.Div, "div")):
            if isinstance(n, cls) and _is_float(n):
                counts[name] = counts.get(name, 0) + 1
        if isinstance(n, tvm.ir.Call) and hasattr(n.op, "name"):
            for fn in ("exp", "sqrt", "tanh", "erf"):
                if n.op.name.endswith(fn):
                    counts[fn] = counts.get(fn, 0) + 1

    tvm_ffi.structural_walk(stmt, visit)
    return counts


def _stores(stmt) -> list:
    out = []
    tvm_ffi.structural_walk(stmt, lambda n: out.append(n) if isinstance(n, tirx.BufferStore) else None)
    return out


def _accumulates(store) -> bool:
    """``X[i] = X[i] + ...`` with a float add."""
    value = store.value
    if not isinstance(value, tirx.Add) or not _is_float(value):
        return False
    for side in (value.a, value.b):
        if isinstance(side, tvm.ir.TensorLoad) and side.source.same_as(store.buffer):
            return all(tvm_ffi.structural_equal(x, y, map_free_vars=False) for x, y in zip(side.indices, store.indices))
    return False


def _inner_loops(stmt) -> list:
    out = []
    tvm_ffi.structural_walk(stmt, lambda n: out.append(n) if isinstance(n, tirx.For) else None)
    return out


def _depth(body) -> int:
    """Cycles of one iteration of a pipelined body whose inner loops are unrolled."""
    ops = _ops(body)
    depth = costs.PIPELINE_DEPTH - _FP_ADD - 3 + sum(costs.FP32_OPS[o].latency for o in ops if o in costs.FP32_OPS)
    binds = _bindings(body)
    for loop in _inner_loops(body):
        for store in _stores(loop.body):
            if _accumulates(store) and not any(_uses(i, loop.loop_var, binds) for i in store.indices):
                depth += (_extent(loop) - 1) * _FP_ADD  # a chain of dependent adds
    return max(depth, 1)


def _recurrence(loop) -> int:
    binds = _bindings(loop.body)
    for store in _stores(loop.body):
        if _accumulates(store) and not any(_uses(i, loop.loop_var, binds) for i in store.indices):
            return _FP_ADD
    return 1


def _unrolled_copies(body) -> int:
    n = 1
    for loop in _inner_loops(body):
        n *= _extent(loop)
    return n


class _Walker:
    def __init__(self) -> None:
        self.dsp = 0.0
        self.lut = 0.0
        self.ff = 0.0
        self.ii = 1
        self.trips: list[int] = []

    def pipelined(self, loop, ii_requested: int) -> float:
        ii = max(ii_requested, _recurrence(loop))
        self.ii = max(self.ii, ii)
        copies = _unrolled_copies(loop.body)
        for op, count in _ops(loop.body).items():
            c = costs.FP32_OPS.get(op)
            if c is not None:
                n = math.ceil(count * copies / ii)
                self.dsp += n * c.dsp
                self.lut += n * c.lut
                self.ff += n * c.ff
        return (_extent(loop) - 1) * ii + _depth(loop.body)

    def latency(self, stmt) -> float:
        if isinstance(stmt, tirx.For):
            self.trips.append(_extent(stmt))
            ii = ann.pipeline_ii(stmt)
            if ii is not None:
                return self.pipelined(stmt, ii)
            unroll = ann.unroll_factor(stmt)
            if ann.unfold_name(stmt) is not None:
                unroll = 0
            if unroll is not None:
                copies = _extent(stmt) if unroll == 0 else min(unroll, _extent(stmt))
                body = self.latency(stmt.body)
                return math.ceil(_extent(stmt) / copies) * body
            if not _inner_loops(stmt.body):  # Vitis pipelines innermost loops by default
                return self.pipelined(stmt, 1)
            return _extent(stmt) * (self.latency(stmt.body) + costs.LOOP_OVERHEAD)
        if isinstance(stmt, tirx.SeqStmt):
            return sum(self.latency(s) for s in stmt.seq)
        if isinstance(stmt, tvm.s_tir.SBlockRealize):
            return self.latency(stmt.block)
        if isinstance(stmt, tvm.s_tir.SBlock):
            init = self.latency(stmt.init) if stmt.init is not None else 0
            return init + self.latency(stmt.body)
        if isinstance(stmt, tirx.IfThenElse):
            other = self.latency(stmt.else_case) if stmt.else_case is not None else 0
            return max(self.latency(stmt.then_case), other)
        if isinstance(stmt, tirx.BufferStore):
            return _depth(stmt)
        body = getattr(stmt, "body", None)
        return self.latency(body) if body is not None else 0


def _stages(func) -> list:
    body = func.body
    while isinstance(body, (tvm.s_tir.SBlockRealize, tvm.s_tir.SBlock)) or (
        not isinstance(body, (tirx.SeqStmt, tirx.For)) and hasattr(body, "body")
    ):
        body = body.block if isinstance(body, tvm.s_tir.SBlockRealize) else body.body
    return list(body.seq) if isinstance(body, tirx.SeqStmt) else [body]


def _stage_name(stmt, index: int) -> str:
    names = []

    def visit(n):
        if isinstance(n, tvm.s_tir.SBlock) and n.name_hint and n.name_hint != "root":
            names.append(n.name_hint)

    tvm_ffi.structural_walk(stmt, visit)
    return names[0] if names else f"stage{index}"


def _buffer_memory(func) -> Resources:
    parts = ann.partitions(func)
    bram = 0.0
    buffers = []

    def visit(n):
        if isinstance(n, tvm.s_tir.SBlock):
            buffers.extend(n.alloc_buffers)

    tvm_ffi.structural_walk(func.body, visit)
    for buf in buffers:
        shape = [int(d) for d in buf.shape]
        elements = math.prod(shape) if shape else 1
        banks = 1
        for p in parts.get(buf.name, ()):
            dims = range(len(shape)) if p.dim == 0 else [p.dim - 1]
            for d in dims:
                banks *= shape[d] if p.kind == "complete" else min(p.factor, shape[d])
        bram += banks * costs.bram18_for(math.ceil(elements / banks), costs.dtype_bits(str(buf.dtype)))
    return Resources(0, bram, 0, 0, 0)


def estimate_schedule(schedule, device: Device, clock_mhz: float | None = None) -> Estimate:
    """The latency and resources of a customized kernel, per top-level stage."""
    func = schedule.module[schedule.top] if hasattr(schedule, "module") else schedule
    clock = clock_mhz or device.clock_mhz
    dataflow = ann.is_dataflow_function(func)
    procs = []
    for i, stmt in enumerate(_stages(func)):
        walker = _Walker()
        cycles = walker.latency(stmt)
        res = Resources(walker.dsp, 0, 0, walker.lut + costs.PROCESS_LUT, walker.ff + costs.PROCESS_FF)
        name = _stage_name(stmt, i)
        procs.append(ProcessEstimate(
            kernel=schedule.top if hasattr(schedule, "top") else "kernel", name=name, op="loop nest", layer=0,
            slr=0, parallelism=Parallelism(), trip_counts=tuple(walker.trips[:4]), ii=walker.ii, macs=0,
            prefill_cycles=cycles, block_cycles=cycles, block_bound="compute", decode_cycles=cycles,
            decode_bound="compute", prefill_bytes=0, decode_bytes=0, resources=res,
        ))
    cycles = (max if dataflow else sum)(p.block_cycles for p in procs) if procs else 0.0
    use = Resources()
    for p in procs:
        use = use + p.resources
    use = use + _buffer_memory(func)
    slr_use = (use,) + tuple(Resources() for _ in range(device.slrs - 1))
    bottleneck = max(procs, key=lambda p: p.block_cycles).name if procs else ""
    return Estimate(
        device=device, clock_mhz=clock, tokens=1, block=None, processes=tuple(procs), prefill_cycles=cycles,
        prefill_fill_cycles=0.0, decode_cycles=cycles, bottleneck=bottleneck, decode_bottleneck=bottleneck,
        slr_use=slr_use, prefill_roofline=Roofline(0.0, 0.0), decode_roofline=Roofline(0.0, 0.0),
        prefill_bytes=0, decode_bytes=0,
    )
