"""The kernel library's matmul schedule: tiling and the peeled last column tile."""

from __future__ import annotations

import re

import numpy as np
import pytest
from tvm import relax
from tvm.relax import op

import tvm_spatial
from helpers import build_and_compare


def _matmul_module(a_shape, b_shape):
    bb = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType(a_shape, "float32"))
    b = relax.Var("b", relax.TensorType(b_shape, "float32"))
    with bb.function("main", [a, b]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(op.matmul(a, b)))
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
