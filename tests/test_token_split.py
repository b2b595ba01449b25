"""relax_passes/token_split.py: a causal prefill computed in token chunks is the same
function (TVM's llvm build of both, and onnxruntime's logits), and what cannot be split
says why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax

from relax_passes.attention_fusion import fuse_attention
from relax_passes.token_split import TokenSplitError, chunk_bounds, split_tokens
from tvm_spatial.estimate import module_from_onnx

FIXTURES = Path(__file__).parent / "fixtures"


def _fused(name: str) -> tvm.IRModule:
    mod = module_from_onnx(FIXTURES / name)
    return fuse_attention(relax.transform.FoldConstant()(relax.transform.Normalize()(mod)))


def _run(mod, *inputs):
    vm = relax.VirtualMachine(relax.build(mod, target="llvm"), tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(x) for x in inputs])
    return out.numpy()


@pytest.fixture(scope="module")
def gpt2():
    return _fused("gpt2_tiny.onnx")


@pytest.mark.parametrize("chunks", [3, (10, 6)])
def test_chunks_compute_the_same_logits(gpt2, chunks):
    data = np.load(FIXTURES / "gpt2_tiny.npz")
    ids = data["in:input_ids"]
    split = split_tokens(gpt2, chunks)
    got = _run(split, ids)
    np.testing.assert_allclose(got, _run(gpt2, ids), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, data["out:logits"], rtol=1e-4, atol=1e-4)
    # every chunk's operators are there: its slice of the input, its attentions
    text = split["main"].script()
    count = len(chunk_bounds(ids.shape[-1], chunks))
    assert text.count("R.strided_slice(input_ids") == count
    assert text.count("R.vitis_spatial.attention(") == count * gpt2["main"].script().count("R.vitis_spatial.attention(")


def test_a_later_chunk_attends_to_the_earlier_chunks_keys(gpt2):
    split = split_tokens(gpt2, (10, 6))
    calls = []

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name.endswith("attention"):
            calls.append(expr)

    relax.analysis.post_order_visit(split["main"], visit)
    second = [c for c in calls if [int(d) for d in c.args[0].ty.shape.values][-2] == 6]
    assert second, "the second chunk's attentions take 6 queries"
    for call in second:
        assert [int(d) for d in call.args[1].ty.shape.values][-2] == 16  # K of all 16 tokens up to its last
        assert [int(d) for d in call.args[3].ty.shape.values][-2:] == [6, 16]  # its rows of the mask
        assert not int(call.attrs.get("causal", 0))  # its queries are not its keys' first rows


def test_chunk_bounds_cover_the_tokens():
    assert chunk_bounds(16, 3) == ((0, 6), (6, 11), (11, 16))
    assert chunk_bounds(16, [4, 12]) == ((0, 4), (4, 16))
    with pytest.raises(TokenSplitError, match="do not cover"):
        chunk_bounds(16, [4, 4])
    with pytest.raises(TokenSplitError, match="need 1 to 16"):
        chunk_bounds(16, 17)


def test_chunk_ends_divide_into_the_softmax_lanes():
    """GPT2-small's 128 tokens in three: an even split (43 / 43 / 42) ends its first two
    chunks at 43 and 86 keys, which the codegen's lanes rule (the largest divisor of a
    row's length up to 16) runs at 1 and 2 elements a cycle; the chosen split stays within
    a token of even and ends where rows take 8 lanes or more."""
    from codegen_hls.lanes import largest_divisor

    bounds = chunk_bounds(128, 3)
    sizes = [end - start for start, end in bounds]
    assert sum(sizes) == 128 and max(sizes) <= 44
    assert all(largest_divisor(end, 16) >= 8 for _, end in bounds)
    assert [largest_divisor(e, 16) for e in (43, 86)] == [1, 2]  # the even split's ends


def test_a_bidirectional_attention_is_not_split():
    with pytest.raises(TokenSplitError, match="not causal"):
        split_tokens(_fused("bert_tiny.onnx"), 2)
