"""A matmul's weight striped over several ``m_axi`` ports, one HBM pseudo-channel each.

Why: one ``m_axi`` port delivers at most 64 bytes per cycle, and its HBM pseudo-channel
about 14 GB/s; a MAC array wider than that, or the one token of a decode step, waits on
it. Striped, a ``k`` step reads each stripe's columns from its own port at once.

The layout (``codegen_hls.design.Port.stripe``, written by the host with
``Port.from_argument``): of a ``[K, N]`` weight and a MAC array working in column tiles of
``T`` columns, stripe ``c`` of ``C`` holds, of every tile, its ``g = T / C`` columns from
``c * g``, tile after tile -- ``B_sc[t][k][i] = B[k][t * T + c * g + i]`` -- zeros past ``N``
in a last tile that ``N`` cuts short. Tile-major, so the ``k`` steps of a tile read one
contiguous run of memory: one long AXI burst per tile and stripe on the card (row-major,
each ``k`` step was a burst of ``g`` elements), and a stream the host's prefetchers follow
(GPT2-small's LM head tile: 5.4 vs 18.7 GMAC/s in emulation). The matmul's unrolled loop
over a tile's columns becomes one loop per stripe; every sum keeps its order, so the result
is the unstriped one bit for bit.
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import s_tir, tirx
from tvm.sym import Analyzer

from .library import MacArray, _matmul_block, _matmul_shape


# Narrow stripes are short loops, which the host runs slowly: GPT2-small's emulation took
# 1.47 s per run with stripes of 24 and 8 columns, 2.17 s with 12 and 8, 2.39 s with 6
# and 4. Fewer than 8 (one 256-bit vector of fp32) are not made.
MIN_STRIPE_COLUMNS = 8


def stripes_fit(array: "MacArray", m: int, n: int, channels: int) -> bool:
    """Whether ``channels`` stripes fit the column tile ``array`` works through on an
    ``m x n`` output: they divide its width, ``MIN_STRIPE_COLUMNS`` or more each. The
    codegen (:func:`weight_stripes`) and the allocation
    (``tvm_spatial.estimate.allocation.realizable_channels``) both ask this."""
    tile, _ = MacArray(array.rows, array.cols, array.latency).tile(m, n)
    return tile.cols % channels == 0 and tile.cols // channels >= MIN_STRIPE_COLUMNS


def weight_stripes(func: tirx.PrimFunc, array: "MacArray") -> int:
    """How many ports the weight of this matmul is read through under ``array``: its
    ``channels``, when the weight is a rank-2 ``[K, N]`` operand read as ``B[k, j]`` and the
    stripes fit the array's tile (:func:`stripes_fit`); else 1. Layout: :func:`stripe_weight`."""
    if array.channels <= 1:
        return 1
    shape = _matmul_shape(func)
    if shape is None or len(func.params) < 2:
        return 1
    batch, m, n, _ = shape
    weight = func.params[1]
    if batch != 1 or len(weight.ty.shape) != 2 or not _reads_b_as_k_j(func, weight):
        return 1
    return array.channels if stripes_fit(array, m, n, array.channels) else 1


def _reads_b_as_k_j(func: tirx.PrimFunc, weight) -> bool:
    """The matmul's update reads ``weight[k, j]``: its reduction var, then its last spatial var."""
    name = _matmul_block(func)
    found = []

    def visit(node):
        if isinstance(node, s_tir.SBlock) and node.name_hint == name:
            found.append(node)

    tvm_ffi.structural_walk(func.body, visit)
    if len(found) != 1:
        return False
    block = found[0]
    *_, j, k = (iv.var for iv in block.iter_vars)
    loads = []
    tvm_ffi.structural_walk(block.body, lambda n: loads.append(n)
                            if isinstance(n, tvm.ir.TensorLoad) and n.source.same_as(weight) else None)
    return bool(loads) and all(len(x.indices) == 2 and x.indices[0].same_as(k) and x.indices[1].same_as(j)
                               for x in loads)


def stripe_weight(func: tirx.PrimFunc, channels: int, tile_cols: int) -> tirx.PrimFunc:
    """The lowered matmul ``func`` reading its weight ``B [K, N]`` through ``channels``
    parameters ``B_s0 .. B_s{C-1}``: stripe ``c`` holds, of every column tile of
    ``tile_cols`` columns, the ``g = tile_cols / C`` columns from ``c * g``, tile-major
    (``B_sc[t][k][i] = B[k][t * tile_cols + c * g + i]``, :func:`stripe_shape`; a last
    tile that ``N`` cuts short padded). Each unrolled loop over a tile's
    columns becomes ``C`` loops of ``g`` columns (fewer in the last tile), each reading its
    own stripe, so a ``k`` step reads ``g`` elements from each of ``C`` ports at once, and
    every sum keeps its order. Why: one ``m_axi`` port (one HBM pseudo-channel) delivers at
    most 64 bytes per cycle; an array wider than that, or one token's decode, waits on it."""
    weight = func.params[1]
    k_extent, n_extent = (int(d) for d in weight.ty.shape)
    shape = stripe_shape(k_extent, n_extent, tile_cols, channels)
    group = shape[-1]
    dtype = str(weight.ty.dtype)
    stripes = [tirx.decl_buffer(shape, dtype, f"{weight.name}_s{c}") for c in range(channels)]
    full = [tvm.ir.Range.from_min_extent(0, extent) for extent in shape]
    analyzer = Analyzer()
    rewritten = []

    def column_loop(node) -> bool:
        """An innermost loop whose variable indexes the weight's columns (the tile's)."""
        if not isinstance(node, tirx.For) or _children_loops(node.body):
            return False
        loads = []
        tvm_ffi.structural_walk(node.body, lambda n: loads.append(n)
                                if isinstance(n, tvm.ir.TensorLoad) and n.source.same_as(weight) else None)
        return bool(loads) and all(_uses(x.indices[1], node.loop_var) and not _uses(x.indices[0], node.loop_var)
                                   for x in loads)

    def split(node):
        if not column_loop(node):
            return node
        extent = analyzer.simplify(node.extent)
        if not isinstance(extent, tirx.IntImm) or int(extent) > tile_cols:
            raise ValueError(f"stripe_weight: the loop over {weight.name}'s columns runs {node.extent} times, "
                             f"not at most the tile's {tile_cols}")
        copies = []
        for c in range(channels):
            count = min(group, int(extent) - c * group)
            if count <= 0:
                continue  # the last tile ends before this stripe's columns
            var = tirx.Var(f"{node.loop_var.name}_s{c}", node.loop_var.ty.dtype)
            column = c * group + var

            def redirect(n, c=c, column=column):
                if isinstance(n, tirx.Var) and n.same_as(node.loop_var):
                    return column
                if isinstance(n, tvm.ir.TensorLoad) and n.source.same_as(weight):
                    k_index, j_index = n.indices
                    tile = tirx.floordiv(j_index, tile_cols)
                    return tirx.BufferLoad(stripes[c], [tile, k_index, tirx.floormod(j_index, group)])
                if isinstance(n, tvm.ir.TensorRegion) and n.source.same_as(weight):
                    return _region_of(stripes[c], full)
                return n

            body = tvm_ffi.structural_map(node.body, redirect)
            copies.append(tirx.For(var, 0, count, node.kind, body, None, node.annotations))
        rewritten.append(node)
        return tirx.SeqStmt(copies) if len(copies) > 1 else copies[0]

    body = tvm_ffi.structural_map(func.body, split)
    if not rewritten:
        raise ValueError(f"stripe_weight: no loop over a tile's {tile_cols} columns reads {weight.name}")
    params = [func.params[0], *stripes, *func.params[2:]]
    return tirx.PrimFunc(params, body, func.ret_type, func.attrs)


def drop_dead(stmt):
    """``stmt`` without the sblocks whose predicate is false (a last, short tile's stripes
    past its end) and the loops, sequences and sblocks left holding nothing."""
    nothing = tirx.Evaluate(0)

    def empty(node) -> bool:
        return isinstance(node, tirx.Evaluate) and isinstance(node.value, tirx.IntImm)

    def visit(node):
        if isinstance(node, s_tir.SBlockRealize):
            predicate = node.predicate
            if (isinstance(predicate, tirx.IntImm) and not int(predicate)) or empty(node.block.body):
                return nothing
        if isinstance(node, tirx.For) and empty(node.body):
            return nothing
        if isinstance(node, tirx.SeqStmt):
            kept = [child for child in node.seq if not empty(child)]
            if len(kept) != len(node.seq):
                return nothing if not kept else kept[0] if len(kept) == 1 else tirx.SeqStmt(kept)
        return node

    return tvm_ffi.structural_map(stmt, visit)


def stripe_shape(rows: int, columns: int, tile_cols: int, channels: int) -> tuple[int, int, int]:
    """The shape of each stripe of a ``[rows, columns]`` weight: ``[tiles, rows, g]``, a
    tile of ``g = tile_cols / channels`` columns after another, the last tile (which
    ``columns`` may cut short) counted whole."""
    return (-(-columns // tile_cols), rows, tile_cols // channels)


def _uses(expr, var) -> bool:
    found = []
    tvm_ffi.structural_walk(expr, lambda n: found.append(1) if n.same_as(var) else None)
    return bool(found)


def _children_loops(stmt) -> list:
    found = []
    tvm_ffi.structural_walk(stmt, lambda n: found.append(n) if isinstance(n, tirx.For) else None)
    return found


def _region_of(buffer_var, ranges):
    return tvm.ir.TensorRegion(buffer_var, ranges, tirx.BufferRegionType())
