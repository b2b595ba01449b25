"""The ``lanes`` schedule: every stage that is not a matmul handles ``lanes`` elements per cycle.

Why: element-wise operators, broadcasts, layer norm, softmax and the layout copies are
most of a transformer's processes; the analytical model (``tvm_spatial.estimate``,
``Parallelism.lanes``) gives each of them ``lanes`` elements per cycle, so the HLS text
must realize exactly that. What the schedule does to each sblock's innermost loop nest
(TVM's legalized operators have one sblock per nest):

* **spatial** innermost loop (element-wise, broadcast, copies, normalize): with ``l``, the
  largest divisor of its extent not above ``lanes``, the loop is unrolled by ``l`` and
  pipelined at II=1 (``PIPELINE II=1`` with ``UNROLL factor=l`` on the one loop: Vitis
  unrolls, then pipelines the unrolled loop -- what splitting off an inner ``l``-loop
  would say). Not splitting keeps the C++ loop the host compiler sees unchanged: a split
  16-trip inner loop is completely unrolled by ``g++ -O3`` everywhere, which doubled the
  emulation's compile time of GPT2-small (12.5 s vs 5.5-6.1 s) for no run-time gain. A
  whole row of at most ``lanes`` is unrolled and its parent pipelined; ``l = 1``: the
  loop is pipelined, nothing is unrolled.
* **reduction** innermost loop over ``K`` (layer norm's mean and variance, softmax's max
  and sum): a float add chain cannot take one element per cycle (each add waits for the
  previous one, 4 cycles). Rather than reassociate it (which would change the results),
  the reduction is unrolled and the loop over *rows* around it is pipelined at
  ``II = K / l`` (``l`` the largest divisor of ``K`` not above ``lanes``): rows are
  independent, so the chain only adds pipeline depth, and the ``K`` operations of a row
  share ``l`` operator instances over ``II`` cycles. That is ``l`` elements per cycle, in
  the original summation order -- also with one lane (one shared adder, II = K). A
  reduction with no row loop around it, or inside another reduction loop, is pipelined
  at the recurrence's latency instead (honest, and slow).
* **memory**: every buffer an unrolled loop indexes (locals and parameters, except the
  m_axi ports in ``Lanes.ports``) is partitioned cyclically by that loop's elements per
  cycle along the indexed dimension (completely when that covers the dimension), so
  ``lanes`` elements can be read and written each cycle.

* **more lanes than the innermost loop has** (a reduction over a head's 64 elements given
  256 lanes): the innermost loop runs whole each cycle, and the spatial loop around it is
  unrolled by ``r`` (the largest divisor of its extent not above ``lanes / K``) and
  pipelined at II=1: ``r * K`` elements per cycle (:func:`rows_unrolled`).

Every nest thus takes ``trips * extent / l`` cycles (``trips / r`` with rows unrolled), or
``trips * extent * latency`` for a carried reduction; :func:`loop_nests` records each nest
so that the analytical model computes exactly that (``Process.nests``).

On the host the emulation compiles the same loops as without the schedule (the pragmas are
HLS-only), so its speed and results do not change; the reduction order is unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tvm
import tvm_ffi
from tvm import s_tir, tirx

import tvm_spatial.annotations as ann

from .printer import uses_var

# Loop annotation internal to the library (removed before printing): the elements per
# cycle an unrolled loop must be fed with, read by ``partition_lanes`` after lowering.
_LANES = "tvm_spatial.library.lanes"


@dataclass(frozen=True)
class Lanes:
    """``lanes`` elements per cycle for every non-matmul stage of one process.

    ``ports``: indices of the stage's parameters that are m_axi ports of the kernel (an
    AXI master cannot be partitioned; the others are the process's on-chip buffers)."""

    lanes: int = 1
    ports: tuple[int, ...] = ()
    # lanes of its multiply-accumulate nests (a product summed into its output, as an
    # attention's QK^T and AV): an engine's attention takes them on the engine's shared
    # multipliers and adders, as wide as its array (0: ``lanes``, as every other nest)
    mac: int = 0

    def fit(self, extent: int) -> int:
        """The lanes realized along a loop of ``extent``: its largest divisor <= lanes."""
        return largest_divisor(extent, self.lanes)

    def of(self, block) -> int:
        """The lanes of ``block``'s nest: ``mac`` for a multiply-accumulate, else ``lanes``."""
        return self.mac if self.mac and is_mac(block) else self.lanes


def is_mac(block) -> bool:
    """Whether ``block`` adds a product into its output (``C[..] = C[..] + a * b``)."""
    body = block.body
    if not isinstance(body, tirx.BufferStore) or not isinstance(body.value, tirx.Add):
        return False
    a, b = body.value.a, body.value.b
    return any(isinstance(x, tirx.Mul) for x in (a, b)) and any(
        isinstance(x, tvm.ir.TensorLoad) and x.source.same_as(body.buffer) for x in (a, b))


def arith_ops(block) -> int:
    """Adds, subtracts and multiplies ``block`` computes per element on data (floats, or
    integers narrower than 32 bits; the 32- and 64-bit ones are index arithmetic): the
    operators an engine's element-wise nest takes from its shared units (0: a copy)."""
    count = 0

    def visit(node):
        nonlocal count
        if isinstance(node, (tirx.Add, tirx.Sub, tirx.Mul)):
            dtype = str(node.ty.dtype)
            if dtype.startswith(("float", "bfloat")) or (dtype.startswith(("int", "uint"))
                                                        and tvm.DataType(dtype).bits < 32):
                count += 1

    tvm_ffi.structural_walk(block.body, visit)
    return count


def largest_divisor(n: int, at_most: int) -> int:
    for d in range(max(1, min(n, at_most)), 0, -1):
        if n % d == 0:
            return d
    return 1


def recurrence_latency(op: str, dtype: str) -> int:
    """Cycles between dependent updates of an accumulator (the model's operator costs)."""
    from tvm_spatial.estimate import costs

    return costs.op_cost(op, dtype).latency


def sblocks(func: tirx.PrimFunc) -> list:
    """The sblocks of ``func`` that compute something (with block variables), in order."""
    found = []

    def visit(node):
        if isinstance(node, s_tir.SBlock) and len(node.iter_vars):
            found.append(node)

    tvm_ffi.structural_walk(func.body, visit)
    return found


def _iter_kind(realize: s_tir.SBlockRealize, loop_var) -> int | None:
    """The iter type of the one block variable bound to ``loop_var`` (None: not exactly one)."""
    kinds = [iv.iter_type for iv, value in zip(realize.block.iter_vars, realize.iter_values) if uses_var(value, loop_var)]
    return kinds[0] if len(kinds) == 1 else None


def _reducer_op(block: s_tir.SBlock) -> str:
    value = block.body.value if isinstance(block.body, tirx.BufferStore) else None
    if isinstance(value, (tirx.Max, tirx.Min)):
        return "cmp"
    if isinstance(value, tirx.Mul):
        return "mul"
    return "add"


# A loop nest as the model reads it (``Process.nests``): (trips of the loops around the
# innermost one, the innermost loop's extent, fixed II per element -- 0 when the nest
# takes ``extent / fit(extent)`` cycles per trip, i.e. scales with the lanes).
LoopNest = tuple


def _nest(sch: s_tir.Schedule, name: str):
    """(loop RVs, kind, latency) of one sblock's nest under the schedule: kind is "map"
    (spatial innermost loop), "rows" (a reduction pipelined over the rows around it),
    "carried" (a reduction with no independent row loop around it: II = latency), or
    None (left as it is: symbolic, or several statements under the innermost loop)."""
    block = sch.get_sblock(name)
    loops = sch.get_loops(block)
    if not loops:
        return loops, None, 0
    inner = sch.get(loops[-1])
    realize = inner.body
    if not isinstance(inner.extent, tirx.IntImm) or not isinstance(realize, s_tir.SBlockRealize):
        return loops, None, 0
    kind = _iter_kind(realize, inner.loop_var)
    if kind is None:
        return loops, None, 0
    if kind != tirx.IterVar.CommReduce:
        return loops, "map", 0
    parent = sch.get(loops[-2]) if len(loops) > 1 else None
    if parent is not None and _iter_kind(realize, parent.loop_var) != tirx.IterVar.CommReduce:
        return loops, "rows", 0
    body = sch.get(block).body
    dtype = str(body.value.ty.dtype) if isinstance(body, tirx.BufferStore) else "float32"
    return loops, "carried", recurrence_latency(_reducer_op(sch.get(block)), dtype)


def loop_nests(func: tirx.PrimFunc, mac: int = 0) -> tuple[LoopNest, ...]:
    """Every sblock's nest of ``func`` as (trips, extent, fixed II, rows, own lanes, ops):
    what the lanes schedule makes of it, for the analytical model (``tvm_spatial.estimate``);
    ``rows`` is the extent of the loop around the innermost one when lanes beyond the
    innermost extent may unroll it too (:func:`rows_unrolled`), else 1; ``own lanes``, with
    ``mac`` (``Lanes.mac``), a multiply-accumulate nest's (0: the stage's); ``ops``, its
    adds and multiplies per element (:func:`arith_ops`)."""
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    nests = []
    for name in [b.name_hint for b in sblocks(func)]:
        loops, kind, latency = _nest(sch, name)
        if kind is None:
            continue
        extents = [int(sch.get(loop).extent) for loop in loops]
        rows = extents[-2] if _row_loop(sch, name, loops, kind) else 1
        block = sch.get(sch.get_sblock(name))
        own = mac if mac and is_mac(block) else 0
        nests.append((math.prod(extents[:-1]), extents[-1], latency, rows, own, arith_ops(block)))
    return tuple(nests)


def _row_loop(sch: s_tir.Schedule, name: str, loops, kind: str) -> bool:
    """Whether the loop around the innermost one is a spatial loop that more lanes may
    unroll (the innermost then runs whole in one cycle)."""
    if kind not in ("map", "rows") or len(loops) < 2:
        return False
    parent = sch.get(loops[-2])
    realize = sch.get(loops[-1]).body
    return isinstance(parent.extent, tirx.IntImm) and _iter_kind(realize, parent.loop_var) == tirx.IterVar.DataPar


def rows_unrolled(extent: int, rows: int, lanes: int) -> int:
    """Rows handled per cycle when ``lanes`` exceed a whole innermost ``extent``: the
    largest divisor of the row loop's extent not above ``lanes // extent`` (1: none)."""
    if rows <= 1 or extent < 1 or lanes < 2 * extent:
        return 1
    return largest_divisor(rows, lanes // extent)


def schedule_lanes(func: tirx.PrimFunc, lanes: Lanes) -> tirx.PrimFunc:
    """Apply the lanes schedule (module docstring) to every sblock of ``func``."""
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    for name in [b.name_hint for b in sblocks(func)]:
        loops, kind, latency = _nest(sch, name)
        if kind is None:
            continue
        extent = int(sch.get(loops[-1]).extent)
        wanted = lanes.of(sch.get(sch.get_sblock(name)))
        width = largest_divisor(extent, wanted)
        rows = rows_unrolled(extent, int(sch.get(loops[-2]).extent), wanted) \
            if _row_loop(sch, name, loops, kind) else 1
        if kind == "carried":
            sch.annotate(loops[-1], ann.PIPELINE_II, latency)
        elif rows > 1:  # the whole innermost loop, and ``rows`` rows of the loop around it, per cycle
            sch.annotate(loops[-1], ann.UNROLL, 0)
            sch.annotate(loops[-1], _LANES, width)
            sch.annotate(loops[-2], ann.PIPELINE_II, 1)
            sch.annotate(loops[-2], ann.UNROLL, rows)
            sch.annotate(loops[-2], _LANES, rows)
        elif kind == "rows":  # K unrolled, the row loop at K / width: width operators shared
            sch.annotate(loops[-1], ann.UNROLL, 0)
            sch.annotate(loops[-1], _LANES, width)
            sch.annotate(loops[-2], ann.PIPELINE_II, extent // width)
        elif width == 1:
            sch.annotate(loops[-1], ann.PIPELINE_II, 1)
        elif width == extent:  # the whole row at once: unrolled, its parent pipelined
            sch.annotate(loops[-1], ann.UNROLL, 0)
            sch.annotate(loops[-1], _LANES, width)
            if len(loops) > 1:
                sch.annotate(loops[-2], ann.PIPELINE_II, 1)
        else:  # pipelined at II=1 after unrolling by ``width``: width elements per cycle
            sch.annotate(loops[-1], ann.PIPELINE_II, 1)
            sch.annotate(loops[-1], ann.UNROLL, width)
            sch.annotate(loops[-1], _LANES, width)
    return sch.mod["main"]


def partition_lanes(func: tirx.PrimFunc, lanes: Lanes) -> tirx.PrimFunc:
    """After lowering (buffers are final): partition what each unrolled lanes loop indexes
    (module docstring), then drop the library's internal loop annotation."""
    ports = {func.params[i].name for i in lanes.ports if i < len(func.params)}
    wanted: dict[tuple[str, int], tuple[int, int]] = {}  # (buffer, dim) -> (factor, extent)

    def visit(node):
        if not (isinstance(node, tirx.For) and _LANES in node.annotations):
            return
        factor = int(node.annotations[_LANES])
        var = node.loop_var

        def access(inner):
            if isinstance(inner, (tvm.ir.TensorLoad, tirx.BufferStore)):
                buf = inner.source if isinstance(inner, tvm.ir.TensorLoad) else inner.buffer
                shape = buf.ty.shape
                if buf.name in ports:
                    return
                for dim, index in enumerate(inner.indices):
                    if uses_var(index, var) and isinstance(shape[dim], tirx.IntImm):
                        key = (buf.name, dim + 1)
                        old = wanted.get(key, (0, 0))[0]
                        wanted[key] = (max(old, factor), int(shape[dim]))

        tvm_ffi.structural_walk(node.body, access)

    tvm_ffi.structural_walk(func.body, visit)
    out = func
    for (name, dim), (factor, extent) in sorted(wanted.items()):
        if factor <= 1:
            continue
        part = ann.Partition(dim, 0, "complete") if factor >= extent else ann.Partition(dim, factor, "cyclic")
        out = ann.with_partition(out, name, part)

    def strip(node):
        if isinstance(node, tirx.For) and _LANES in node.annotations:
            kept = {k: v for k, v in node.annotations.items() if k != _LANES}
            return tirx.For(node.loop_var, node.min, node.extent, node.kind, node.body, node.thread_binding, kept)
        return node

    return out.with_body(tvm_ffi.structural_map(out.body, strip))
