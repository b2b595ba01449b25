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

``prepare_for_hls`` then lowers reduction inits and moves/shrinks buffers to where they
are used (TVM's own passes), so a tile accumulator is declared inside its tile loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
import tvm_ffi
from tvm import s_tir, tirx


@dataclass(frozen=True)
class MatmulTiling:
    """Output tile of a matmul: ``rows`` x ``cols`` multiply-accumulates per ``k`` step."""

    rows: int = 8
    cols: int = 32

    def fit(self, m: int, n: int) -> "MatmulTiling":
        """The largest tile not above this one whose sides divide the output, except that a
        wide output whose width has no divisor that is a multiple of 8 (a vocabulary of
        50257) keeps the full column tile and shortens the last one: odd widths would
        not vectorize."""
        cols = _largest_divisor(n, self.cols)
        if cols % 8 and n >= 4 * self.cols:  # not a whole number of vectors: keep the tile
            cols = self.cols
        return MatmulTiling(_largest_divisor(m, self.rows), cols)


DEFAULT_MATMUL_TILING = MatmulTiling()


def _largest_divisor(n: int, at_most: int) -> int:
    for d in range(min(n, at_most), 0, -1):
        if n % d == 0:
            return d
    return 1


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


def schedule_matmul(func: tirx.PrimFunc, tiling: MatmulTiling = DEFAULT_MATMUL_TILING) -> tirx.PrimFunc:
    """Tile a matmul-like PrimFunc (see module docstring); anything else is returned as is."""
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
    tile = tiling.fit(*extents)
    io, ii = sch.split(i, [None, tile.rows])
    jo, ji = sch.split(j, [None, tile.cols])
    sch.reorder(*batch, jo, io, k, ii, ji)
    accumulate = sch.cache_write(block, 0, "local")
    sch.reverse_compute_at(accumulate, io)
    sch.decompose_reduction(block, k)
    return sch.mod["main"]


_HLS_LOWERING = None


def prepare_for_hls(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """Library schedule, then init lowering and buffer placement/compaction."""
    global _HLS_LOWERING
    if _HLS_LOWERING is None:
        _HLS_LOWERING = tvm.transform.Sequential(
            [
                s_tir.transform.LowerInitBlock(),
                s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
                s_tir.transform.ConvertBlocksToOpaque(),
                s_tir.transform.CompactBufferAllocation(),
                tirx.transform.StmtSimplify(),
            ]
        )
    scheduled = schedule_matmul(func)
    return _HLS_LOWERING(tvm.IRModule({"main": scheduled}))["main"]
