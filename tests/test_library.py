"""The kernel library's matmul schedule: tiling and the peeled last column tile."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from tvm import relax
from tvm.relax import op

import tvm_spatial
from helpers import build_and_compare


def _matmul_module(a_shape, b_shape, then=None):
    """``a @ b``, and ``then`` of it if given (its result then feeds a stage, not a port)."""
    bb = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType(a_shape, "float32"))
    b = relax.Var("b", relax.TensorType(b_shape, "float32"))
    with bb.function("main", [a, b]):
        with bb.dataflow():
            result = bb.emit(op.matmul(a, b))
            out = bb.emit_output(bb.emit(then(result)) if then else result)
        bb.emit_func_output(out)
    return bb.get()


@pytest.mark.parametrize(
    "a_shape, b_shape",
    [
        ((8, 24), (24, 1000)),  # whole column tiles, then a partial last tile
        ((2, 5, 16), (16, 131)),  # batched; a prime width keeps full tiles + a short tail
        ((3, 8), (8, 40)),  # width 40: the tile becomes 20, no tail
    ],
)
def test_matmul_with_a_partial_last_tile_matches_llvm(a_shape, b_shape):
    rng = np.random.default_rng(7)
    inputs = [rng.standard_normal(a_shape).astype("float32"), rng.standard_normal(b_shape).astype("float32")]
    build_and_compare(_matmul_module(a_shape, b_shape), inputs, rtol=1e-5, atol=1e-5)


def test_only_the_last_column_tile_is_guarded():
    """Whole tiles get constant loop bounds; the guard survives only in the peeled tail."""
    from codegen_hls.library import DEFAULT_MATMUL_TILING

    with tvm_spatial.allocation("default"):  # the library's own tile, not an allocated array
        ex = relax.build(_matmul_module((8, 24), (24, 1000)), target="vitis_spatial")
    source = tvm_spatial.design_of(ex).kernels[0].source
    cols = DEFAULT_MATMUL_TILING.cols
    assert 1000 % cols, "the test needs a width that is not a multiple of the tile"
    whole = 1000 // cols
    assert re.search(rf"< {whole}; \+\+", source), f"the {whole} whole column tiles should be one loop"
    assert re.findall(rf"\+ {whole * cols}\)?\]", source), "the tail tile should have constant offsets"


def _linear_relu_module(a_shape, b_shape):
    """A matmul whose result feeds another stage (a partitioned buffer), not a port."""
    return _matmul_module(a_shape, b_shape, then=op.nn.relu)


@pytest.mark.parametrize("module", [_matmul_module, _linear_relu_module])
@pytest.mark.parametrize("a_shape, b_shape", [((1, 64), (64, 200)), ((16, 32), (32, 96))])
def test_a_matmul_copying_its_tiles_out_a_row_at_a_time_matches_llvm(module, a_shape, b_shape):
    """One token (decode) and a block of rows; the result written in place through a port
    (a beat a cycle) or into a buffer the next stage reads (an array's columns a cycle)."""
    rng = np.random.default_rng(11)
    inputs = [rng.standard_normal(a_shape).astype("float32"), rng.standard_normal(b_shape).astype("float32")]
    build_and_compare(module(a_shape, b_shape), inputs, rtol=1e-5, atol=1e-5)


def _matmul_func(m, k, n):
    from tvm import te

    a, b = te.placeholder((m, k), name="A"), te.placeholder((k, n), name="B")
    r = te.reduce_axis((0, k), name="r")
    c = te.compute((m, n), lambda i, j: te.sum(a[i, r] * b[r, j], axis=r), name="C")
    return te.create_prim_func([a, b, c])


def _copy_out_loops(func) -> tuple[int, int]:
    """(iterations, entries) of the pipelined loops that write the result ``C``, with the
    loops around them: what the hardware spends copying accumulator tiles out (each at
    II=1), and how many times such a loop starts (once per tile)."""
    import tvm_ffi
    from tvm import tirx

    import tvm_spatial.annotations as ann

    total = []

    def walk(node, outer):
        if isinstance(node, tirx.For):
            trips = outer * int(node.extent)
            if ann.pipeline_ii(node) == 1:
                stores = []
                tvm_ffi.structural_walk(node.body, lambda x: stores.append(x) if isinstance(x, tirx.BufferStore)
                                        and x.buffer.name == "C" else None)
                if stores:
                    total.append((outer * int(node.extent), outer))
                    return
            walk(node.body, trips)
        elif isinstance(node, tirx.SeqStmt):
            for stmt in node.seq:
                walk(stmt, outer)
        elif hasattr(node, "block"):  # a block's realize
            walk(node.block, outer)
        elif hasattr(node, "body"):
            walk(node.body, outer)
        elif hasattr(node, "then_case"):
            walk(node.then_case, outer)

    walk(func.body, 1)
    return sum(t for t, _ in total), sum(e for _, e in total)


@pytest.mark.parametrize("m, k, n, rows, cols", [(1, 768, 768, 1, 384), (16, 64, 192, 4, 64), (8, 32, 100, 2, 50)])
@pytest.mark.parametrize("out_port", [False, True])
def test_an_accumulator_tile_is_copied_out_at_the_rate_the_model_counts(m, k, n, rows, cols, out_port):
    """The write-back of every tile is one pipelined loop moving the array's columns a cycle
    into a result partitioned like the accumulator (or a 512-bit beat into a port, which
    cannot be partitioned), and the model's epilogue counts exactly its iterations."""
    import tvm_spatial.annotations as ann
    from codegen_hls.library import MacArray, WRITEBACK_PORT_ELEMENTS, prepare_for_hls
    from tvm_spatial.estimate import costs
    from tvm_spatial.estimate.model import matmul_epilogue
    from tvm_spatial.estimate.workload import Matmul, ProcessWork

    array = MacArray(rows, cols, 4, out_port=out_port)
    func = prepare_for_hls(_matmul_func(m, k, n), array)
    copies, tiles = _copy_out_loops(func)
    assert copies * (cols if not out_port else WRITEBACK_PORT_ELEMENTS) <= m * n * 2  # a serial copy: m * n
    if not out_port and n % cols == 0:
        assert copies == m * n // cols
    parts = ann.partitions(func).get("C", ())
    assert bool(parts) != out_port
    if parts:
        assert [(p.dim, p.factor, p.kind) for p in parts] == [(2, cols, "cyclic")]
    work = ProcessWork("k", "k_p0_linear", "linear", 0, 0, m * n * k, m, m * n, "float32",
                       matmul=Matmul(1, m, n, k, "float32", "float32", True), writeback="port" if out_port else "array")
    assert matmul_epilogue(work, rows, cols, 4) == copies + tiles * costs.PIPELINE_DEPTH  # and a fill per tile
    assert matmul_epilogue(dataclasses.replace(work, writeback=""), rows, cols, 4) == 0  # a design by its sizes


@pytest.mark.parametrize("m, k, n, cols", [(1, 64, 64, 32), (1, 96, 48, 48), (4, 64, 64, 32), (1, 63, 64, 32)])
def test_partial_sums_keep_a_one_row_array_from_waiting_on_its_adds(m, k, n, cols):
    """An output of one row (a decode step) fits few arrays in a tile: each accumulator
    would be updated every ``positions`` cycles, sooner than its add's latency. The array
    then keeps ``latency / positions`` partial sums per output, each k step updating every
    sum once per ``II >= latency`` cycles, and adds them as the tile is copied out; the
    result is numpy's. When they do not divide ``k`` (63) there are none and the II stays
    at the tile's positions (the model charges the stall)."""
    import tvm
    import tvm_ffi
    from tvm import tirx

    import tvm_spatial.annotations as ann
    from codegen_hls.library import MacArray, partial_sums, prepare_for_hls

    array = MacArray(1 if m == 1 else m, cols, 4)
    tile, real = array.tile(m, n)
    positions = (tile.rows // real.rows) * (tile.cols // real.cols)
    partials = partial_sums(positions, 4, k)
    assert (partials > 1) == (positions < 4 and k % 2 == 0)
    func = prepare_for_hls(_matmul_func(m, k, n), array)
    pipelined = []
    tvm_ffi.structural_walk(func.body, lambda x: pipelined.append(x) if isinstance(x, tirx.For)
                            and (ann.pipeline_ii(x) or 0) > 1 else None)
    assert [(int(loop.extent), ann.pipeline_ii(loop)) for loop in pipelined] == [(k // partials, positions * partials)]
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((m, k)).astype("float32"), rng.standard_normal((k, n)).astype("float32")
    lib = tvm.compile(tvm.IRModule({"main": func}), target="llvm")
    out = tvm.runtime.tensor(np.zeros((m, n), "float32"))
    lib["main"](tvm.runtime.tensor(a), tvm.runtime.tensor(b), out)
    np.testing.assert_allclose(out.numpy(), a @ b, rtol=1e-5, atol=1e-5)
