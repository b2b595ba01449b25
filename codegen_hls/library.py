"""Default schedules of the kernel library, and the TIR clean-up before printing.

Why here: TVM's legalized operators are correct but naive (a matmul is an i-j-k nest
reading the weight column-wise). The library gives each operator kind a parameterized
schedule with a shape that suits both the FPGA and the emulation host:

* **matmul** (linear layers, attention matmuls): output tiles of ``rows x cols``
  (``MatmulTiling``); ``jo`` outermost, so each column tile of the weight is read from
  memory once and then served from cache (on the FPGA: one burst per tile); a tile of
  rows accumulates in a small ``local`` buffer (registers / a PE array in HLS) along
  ``k``, then is written back. (Copying the weight tile into a contiguous buffer first
  was measured slower on the host, 22 vs 35 GFLOP/s, so it is not done.) The reduction order over ``k`` is unchanged, so results match
  the untiled kernel.
* **everything else** (element-wise, broadcast, normalizations, softmax, layout copies):
  ``lanes`` elements per cycle (:mod:`codegen_hls.lanes`, ``Lanes``), what the
  allocation chooses for each non-matmul process.

``prepare_for_hls`` then lowers reduction inits and moves/shrinks buffers to where they
are used (TVM's own passes), so a tile accumulator is declared inside its tile loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tvm
import tvm_ffi
from tvm import s_tir, tirx

import tvm_spatial.annotations as ann

from .lanes import Lanes, largest_divisor, partition_lanes, sblocks, schedule_lanes


@dataclass(frozen=True)
class MatmulTiling:
    """Output tile of a matmul: ``rows`` x ``cols`` multiply-accumulates per ``k`` step."""

    rows: int = 8
    cols: int = 32

    def fit(self, m: int, n: int, ragged_rows: bool = False) -> "MatmulTiling":
        """The largest tile not above this one whose sides divide the output, except that a
        wide output whose width has no divisor that is a multiple of 8 (a vocabulary of
        50257) keeps the full column tile and shortens the last one: odd widths would
        not vectorize. ``ragged_rows``: the rows too are kept (up to ``m``) and the last row
        tile is shortened (``MacArray.ragged_rows``)."""
        cols = largest_divisor(n, self.cols)
        if cols % 8 and n >= 4 * self.cols:  # not a whole number of vectors: keep the tile
            cols = self.cols
        return MatmulTiling(min(m, self.rows) if ragged_rows else largest_divisor(m, self.rows), cols)


# The emulation's tile: 8 rows x 64 columns, 32 accumulator vectors of 16 floats (GCC 12
# keeps 27 in AVX-512 registers and spills 5), four weight loads and eight broadcasts per
# 32 FMAs. On a 128 x 768 x 3072 matmul it was the fastest of 8x32, 8x48, 4x64, 16x32, 4x96
# and 8x96 (83 vs 43-78 GFLOP/s; an earlier build: 61 vs 49 for 8 x 32), and GPT2-small
# ran 12 % faster end to end than with 8 x 32. The hardware's parallelism is the MAC array
# (``MacArray``), not this tile.
DEFAULT_MATMUL_TILING = MatmulTiling(8, 64)


def _matmul_block(func: tirx.PrimFunc):
    """The one reduction sblock computing ``C[.., i, j] += A[.., i, k] * B[.., k, j]``, if any."""
    found = []

    def visit(node):
        if not isinstance(node, s_tir.SBlock) or node.init is None:
            return
        kinds = [iv.iter_type for iv in node.iter_vars]
        reduce = tirx.IterVar.CommReduce
        if kinds.count(reduce) == 1 and kinds[-1] == reduce and len(kinds) >= 3:
            body = node.body
            if (
                isinstance(body, tirx.BufferStore)
                and isinstance(body.value, tirx.Add)
                and isinstance(body.value.b, tirx.Mul)
            ):
                found.append(node.name_hint)

    tvm_ffi.structural_walk(func.body, visit)
    return found[0] if len(found) == 1 else None


def schedule_matmul(func: tirx.PrimFunc, tiling: MatmulTiling = DEFAULT_MATMUL_TILING, partials: int = 1,
                    ragged_rows: bool = False) -> tirx.PrimFunc:
    """Tile a matmul-like PrimFunc (see module docstring); anything else is returned as is.
    ``partials`` > 1 (it must divide ``k``): each output keeps that many partial sums,
    over the ``k`` steps of each residue (``rfactor``), added up as the tile is copied out
    (:func:`partial_sums` says when the MAC array needs them). ``ragged_rows``: the tile's
    rows need not divide the output's; the last row tile is peeled, as a last column tile is."""
    name = _matmul_block(func)
    if name is None:
        return func
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    block = sch.get_sblock(name)
    loops = sch.get_loops(block)
    if len(loops) < 3:
        return func
    *batch, i, j, k = loops
    extents = [int(sch.get(loop).extent) for loop in (i, j)]
    if not all(isinstance(sch.get(loop).extent, tirx.IntImm) for loop in (i, j, k)):
        return func
    tile = tiling.fit(*extents, ragged_rows)
    if tile.cols % 8 and extents[1] > tiling.cols:  # the last tile is peeled: partial is cheap
        tile = MatmulTiling(tile.rows, tiling.cols)
    if partials > 1:
        k, residue = sch.split(k, [None, partials])
        total = sch.get_sblock(name)
        block = sch.rfactor(residue, len(batch))  # the partial sums: [.., residue, i, j]
        *batch, i, j, k, residue = sch.get_loops(block)
    io, ii = sch.split(i, [None, tile.rows])
    jo, ji = sch.split(j, [None, tile.cols])
    if partials > 1:
        sch.reorder(*batch, jo, io, k, residue, ii, ji)
        sch.set_scope(block, 0, "local")
        sch.reverse_compute_at(total, io)
        sch.decompose_reduction(block, k)
        return sch.mod["main"]
    sch.reorder(*batch, jo, io, k, ii, ji)
    accumulate = sch.cache_write(block, 0, "local")
    sch.reverse_compute_at(accumulate, io)
    sch.decompose_reduction(block, k)
    if extents[1] % tile.cols and extents[1] > tile.cols:
        sch.annotate(jo, _PEEL_LAST, 1)
    if extents[0] % tile.rows and extents[0] > tile.rows:
        sch.annotate(io, _PEEL_LAST, 1)
    return sch.mod["main"]


# Loop annotation (internal to the library, removed before printing): emit the last
# iteration of this loop separately, so every other iteration has constant bounds.
_PEEL_LAST = "tvm_spatial.library.peel_last"


def peel_last_iterations(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """Split each loop annotated ``_PEEL_LAST`` into ``extent - 1`` whole iterations and
    the last one. Why: a matmul whose width is not a multiple of the tile (a 50257-word
    LM head) otherwise guards every tile with ``j < n``; the compiler then cannot
    vectorize the inner loop with a constant trip count, although only the last tile is
    partial. After this, simplification drops the guard from all whole tiles."""

    def peel(node):
        if not (isinstance(node, tirx.For) and _PEEL_LAST in node.annotations):
            return node
        extent = int(node.extent)
        last_index = tirx.IntImm(str(node.extent.ty), extent - 1)
        last = tvm_ffi.structural_map(
            node.body, lambda x: last_index if isinstance(x, tirx.Var) and x.same_as(node.loop_var) else x
        )
        kept = {key: value for key, value in node.annotations.items() if key != _PEEL_LAST}
        whole = tirx.For(node.loop_var, node.min, extent - 1, node.kind, node.body, node.thread_binding, kept)
        return tirx.SeqStmt([whole, last])

    return func.with_body(tvm_ffi.structural_map(func.body, peel))


_HLS_LOWERING = None


def prepare_for_hls(func: tirx.PrimFunc, array: "MacArray | Lanes | None" = None) -> tirx.PrimFunc:
    """Library schedule, then init lowering and buffer placement/compaction. With a
    ``MacArray``, a matmul is tiled and annotated for that array (:func:`schedule_array`);
    with ``Lanes``, every loop nest gets the lanes schedule (:mod:`codegen_hls.lanes`);
    with neither, a matmul gets the library's host-friendly tile and nothing else changes."""
    global _HLS_LOWERING
    if _HLS_LOWERING is None:
        _HLS_LOWERING = tvm.transform.Sequential(
            [
                s_tir.transform.LowerInitBlock(),
                s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
                s_tir.transform.ConvertBlocksToOpaque(),
                s_tir.transform.CompactBufferAllocation(),
            ]
        )
    tile = None
    if isinstance(array, Lanes):
        scheduled = schedule_lanes(func, array)
    elif array is None:
        scheduled = schedule_matmul(func)
    else:
        scheduled, tile, _ = schedule_array(func, array)
    lowered = peel_last_iterations(_HLS_LOWERING(tvm.IRModule({"main": scheduled}))["main"])
    simplified = tirx.transform.StmtSimplify()(tvm.IRModule({"main": lowered}))["main"]
    if isinstance(array, Lanes):
        return partition_lanes(simplified, array)
    from .weight_stripes import drop_dead, stripe_weight, weight_stripes  # late: it reads this module

    if isinstance(array, MacArray) and tile is not None and weight_stripes(func, array) > 1:
        striped = stripe_weight(simplified, array.channels, tile.cols)
        striped = tirx.transform.StmtSimplify()(tvm.IRModule({"main": striped}))["main"]
        return tirx.PrimFunc(striped.params, drop_dead(striped.body), striped.ret_type, striped.attrs)
    return simplified


# ---- the hardware array of a matmul process (what the allocation chooses) -------------
@dataclass(frozen=True)
class MacArray:
    """``rows x cols`` multiply-accumulate units of one matmul process: the parallelism the
    analytical model assumes (``tvm_spatial.estimate.Parallelism``).

    How the HLS text realizes it without changing the emulation's loop structure: the
    matmul keeps the host-friendly tile of :class:`MatmulTiling` (``tile``, a whole
    number of arrays and at least ``latency`` of them, so that consecutive updates of one
    accumulator are that many cycles apart); the ``k`` loop is pipelined at
    ``II = tile / array`` (the number of array positions in the tile), the tile loops
    are unrolled, and the accumulator is partitioned cyclically by ``rows`` and ``cols``:
    ``rows * cols`` banks with one update per cycle each bound the adders and multipliers
    to ``rows * cols`` units, time-shared over the ``II`` cycles of a ``k`` step."""

    rows: int = 8
    cols: int = 32
    latency: int = 1  # cycles of the accumulate recurrence (fp32 add: 4)
    channels: int = 1  # m_axi ports (HBM pseudo-channels) its weight is striped over (weight_stripes)
    # its result is written in place through an m_axi port (which cannot be partitioned):
    # the accumulator tile goes out ``writeback_width`` elements a cycle, not a whole array's
    out_port: bool = False
    # its rows need not divide the output's: the last row tile is shortened (a token-parallel
    # engine's chunk of 44 tokens could otherwise take 4 or 11 rows, not 9)
    ragged_rows: bool = False

    def writeback_width(self, tile_cols: int) -> int:
        """Elements of an accumulator tile :func:`schedule_array` copies out per cycle, a row
        at a time: the array's columns (into a result partitioned as the accumulator's
        columns; its rows too would bank the result ``rows`` times finer for a copy that
        takes ``rows / k`` of the array's time), or into a port the largest divisor of the
        tile's width not above one 512-bit beat."""
        if self.out_port:
            return largest_divisor(tile_cols, WRITEBACK_PORT_ELEMENTS)
        return self.cols

    def tile(self, m: int, n: int) -> tuple["MatmulTiling", "MacArray"]:
        """(the loop tile, the realized array) for an ``m x n`` output. The array is fitted
        to the output as :meth:`MatmulTiling.fit` fits a tile (sides that divide it); the
        tile then grows from it by whole arrays -- columns first up to the library's
        default tile, then rows -- until it is at least the default tile's size and holds
        ``latency`` arrays, as far as the output allows. The realized array divides the tile."""
        real = MatmulTiling(self.rows, self.cols).fit(m, n, self.ragged_rows)
        want = max(DEFAULT_MATMUL_TILING.rows * DEFAULT_MATMUL_TILING.cols, self.latency * real.rows * real.cols)
        t_rows, t_cols = real.rows, real.cols
        while t_rows * t_cols < want:
            wider = _next_multiple(n, t_cols, 1)
            taller = None if self.ragged_rows else _next_multiple(m, t_rows, 1)
            if wider and (t_cols < DEFAULT_MATMUL_TILING.cols or not taller):
                t_cols = wider
            elif taller:
                t_rows = taller
            else:
                break
        tile = MatmulTiling(t_rows, t_cols).fit(m, n, self.ragged_rows)
        return tile, MacArray(math.gcd(real.rows, tile.rows), math.gcd(real.cols, tile.cols), self.latency,
                              out_port=self.out_port, ragged_rows=self.ragged_rows)


# The other stages of a matmul process (bias add, quantization) run after its array, in
# series: they get the lanes that make them at most 1/KEEP_PACE of its time. At 1/8,
# GPT2-small's decode step took 749 k cycles by the model (FFN1's bias add: 3,072 outputs
# at 3 lanes, 1,024 cycles a layer); at 1/32, 666 k, for a few more fp32 adders a linear.
KEEP_PACE = 32
# ... and never more than a stream packet a cycle: their result leaves the process at that
# rate (a tiny model's ``k`` of 64 asked 192 lanes of a 4 x 96 array: 384 DSPs of adders).
MAX_KEEP_PACE_LANES = 16


def keep_pace_lanes(rows: int, cols: int, k: int) -> int:
    """Lanes of the other stages of a matmul process with a ``rows x cols`` array over ``k``
    (before fitting them to a divisor of the width): ``KEEP_PACE rows cols / k``, at most
    ``MAX_KEEP_PACE_LANES``."""
    return min(MAX_KEEP_PACE_LANES, max(1, -(-KEEP_PACE * rows * cols // max(1, k))))

# Elements per cycle of an accumulator tile copied out to an m_axi port: one 512-bit beat
# of fp32 (the port width the copy loops use, ``codegen_hls.kernel.port_width``).
WRITEBACK_PORT_ELEMENTS = 16


def _next_multiple(extent: int, side: int, other: int) -> int:
    """The smallest multiple of ``side`` above it that :meth:`MatmulTiling.fit` keeps as the
    tile's side along ``extent`` (a divisor, or a vector-friendly width of an output with
    no such divisor); 0 if none. ``other`` is only a placeholder for the other side."""
    for cand in range(2 * side, extent + 1, side):
        if MatmulTiling(other, cand).fit(other, extent).cols == cand:
            return cand
    return 0


def _matmul_shape(func: tirx.PrimFunc) -> tuple[int, int, int, int] | None:
    """(batch, m, n, k) of a matmul-like PrimFunc with static extents, else None."""
    name = _matmul_block(func)
    if name is None:
        return None
    found = []

    def visit(node):
        if isinstance(node, s_tir.SBlock) and node.name_hint == name:
            found.append(node)

    tvm_ffi.structural_walk(func.body, visit)
    extents = [iv.dom.extent for iv in found[0].iter_vars]
    if not all(isinstance(e, tirx.IntImm) for e in extents):
        return None
    *batch, m, n, k = (int(e) for e in extents)
    return math.prod(batch), m, n, k


def matmul_info(func: tirx.PrimFunc):
    """(batch, m, n, k) and the two operands' dtypes of a matmul PrimFunc, else None."""
    shape = _matmul_shape(func)
    if shape is None or len(func.params) < 2:
        return None
    return shape, tuple(str(p.ty.dtype) for p in func.params[:2])


def schedule_array(func: tirx.PrimFunc, array: MacArray) -> tuple[tirx.PrimFunc, MatmulTiling | None, MacArray | None]:
    """:func:`schedule_matmul` with the tile of ``array`` (``MacArray.tile``), plus the
    pragmas that make the tile an array of ``rows x cols`` MACs. Returns the function,
    the tile and the realized array (``None, None`` for a function that is not a matmul)."""
    shape = _matmul_shape(func)
    if shape is None:
        return func, None, None
    _, m, n, k = shape
    tile, real = array.tile(m, n)
    positions = (tile.rows // real.rows) * (tile.cols // real.cols)
    partials = partial_sums(positions, array.latency, k)
    scheduled = schedule_matmul(func, tile, partials, array.ragged_rows)
    if scheduled is func:
        return func, None, None
    sch = s_tir.Schedule(tvm.IRModule({"main": scheduled}))
    update = init = None
    accumulator = None
    for block in sblocks(scheduled):  # the MAC: it reads its accumulator and both operands
        if any(iv.iter_type == tirx.IterVar.CommReduce for iv in block.iter_vars) and len(block.reads) >= 3:
            update = block.name_hint
            accumulator = block.writes[0].source
    for block in sblocks(scheduled):
        if accumulator is not None and not len(block.reads) and any(w.source.same_as(accumulator) for w in block.writes):
            init = block.name_hint
    if update is None:
        return scheduled, tile, real
    # a k step (of each residue, with partial sums) updates every accumulator once
    unrolled = 3 if partials > 1 else 2
    k_loop, *inner = sch.get_loops(sch.get_sblock(update))[-1 - unrolled:]
    sch.annotate(k_loop, ann.PIPELINE_II, positions * partials)
    for loop in inner:
        sch.annotate(loop, ann.UNROLL, 0)
    if init is not None:
        for loop in sch.get_loops(sch.get_sblock(init))[-unrolled:]:
            sch.annotate(loop, ann.UNROLL, 0)
    result = _schedule_writeback(sch, update, accumulator, tile, real, partials)
    out = sch.mod["main"]
    rank = len(accumulator.shape)
    for dim, factor in ((rank - 1, real.rows), (rank, real.cols)):
        extent = tile.rows if dim == rank - 1 else tile.cols
        if factor >= extent:
            out = ann.with_partition(out, accumulator.name, ann.Partition(dim, 0, "complete"))
        elif factor > 1:
            out = ann.with_partition(out, accumulator.name, ann.Partition(dim, factor, "cyclic"))
    if result is not None and not real.out_port and real.cols > 1:  # its banks line up with the accumulator's
        out = ann.with_partition(out, result.name, ann.Partition(len(result.shape), real.cols, "cyclic"))
    return out, tile, real


def partial_sums(positions: int, latency: int, k: int) -> int:
    """Partial sums per output a MAC array keeps (``schedule_matmul``'s ``partials``): an
    accumulator updated every ``positions`` cycles (the arrays in its tile) waits on its own
    add when that is less than the add's ``latency``; ``ceil(latency / positions)`` sums of
    interleaved ``k`` steps, updated in turn, do not. Why: in a decode step the output is
    one row, so a wide array's tile holds few arrays -- GPT2-small's ``768``-wide linears
    held two ``1 x 384`` arrays and took ``k x latency`` cycles at any width. 1 when no
    stall, or when the count does not divide ``k``."""
    if positions >= latency:
        return 1
    partials = -(-latency // positions)
    return partials if k % partials == 0 else 1


def _schedule_writeback(sch: s_tir.Schedule, update: str, accumulator, tile: MatmulTiling, real: MacArray,
                        partials: int = 1):
    """Copy each accumulator tile out ``real.writeback_width`` elements a cycle (one
    pipelined loop over the tile's rows and column groups, a group unrolled) instead of one
    a cycle: a serial copy takes a cycle per element, which for one token is a large share
    of the array's time (GPT2-small's LM head in decode: 50,257 of 151 k cycles). Returns
    the result buffer (None: no write-back block found)."""
    for block in sblocks(sch.mod["main"]):
        if any(r.source.same_as(accumulator) for r in block.reads) and block.writes \
                and not block.writes[0].source.same_as(accumulator):
            break
    else:
        return None
    # its own loops (below the tile loops it shares with the update): a tile of one row has
    # one; with partial sums the residues' loop comes first
    shared = {sch.get(loop) for loop in sch.get_loops(sch.get_sblock(update))}
    own = [loop for loop in sch.get_loops(sch.get_sblock(block.name_hint)) if sch.get(loop) not in shared]
    residue = own.pop(0) if partials > 1 else None
    extents = tuple(int(sch.get(loop).extent) for loop in own)
    if extents != tuple(e for e in (tile.rows, tile.cols) if e > 1):
        raise ValueError(f"the accumulator's write-back loops {extents} are not its {tile.rows} x {tile.cols} tile")
    if tile.cols == 1:  # one column: a loop over the rows at most, a row a cycle
        if residue is not None and own:
            sch.reorder(own[0], residue)
        if residue is not None:
            sch.annotate(residue, ann.UNROLL, 0)
        if own:
            sch.annotate(own[0], ann.PIPELINE_II, 1)
        return block.writes[0].source
    c_o, c_i = sch.split(own[-1], [None, real.writeback_width(tile.cols)])
    if residue is not None:  # each output's partial sums added as it is copied out
        sch.reorder(*own[:-1], c_o, residue, c_i)
        sch.annotate(residue, ann.UNROLL, 0)
        init = sch.decompose_reduction(sch.get_sblock(block.name_hint), residue)
        sch.annotate(sch.get_loops(init)[-1], ann.UNROLL, 0)
    if tile.rows > 1:  # one pipelined loop over the tile's rows and column groups
        c_o = sch.fuse(own[0], c_o)
    sch.annotate(c_o, ann.PIPELINE_II, 1)
    sch.annotate(c_i, ann.UNROLL, 0)
    return block.writes[0].source
