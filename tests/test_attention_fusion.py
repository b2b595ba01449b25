"""Multi-head attention as one operator (codegen_hls/attention_kernel.py), the pass that
finds it in exported graphs (relax_passes/attention_fusion.py), and its token blocks."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm import relax

import tvm_spatial
from codegen_hls.attention_kernel import ATTENTION, attention
from relax_passes.attention_fusion import fuse_attention
from relax_passes.kv_inplace import merge_new_rows
from tvm_spatial.frontend import from_onnx

sys.path.insert(0, str(Path(__file__).parent))
from test_models import load_fixture  # noqa: E402

RNG = np.random.default_rng(7)


def _llvm(mod: tvm.IRModule, *args):
    ex = relax.build(relax.transform.LegalizeOps()(mod), "llvm")
    out = relax.VirtualMachine(ex, tvm.cpu())["main"](*[tvm.runtime.tensor(a) for a in args])
    return out.numpy() if isinstance(out, tvm.runtime.Tensor) else out[0].numpy()


def _numpy_attention(q, k, v, mask, heads, q_scale=1.0, s_div=1.0):
    tokens, hidden = q.shape[-2:]
    width = hidden // heads
    split = lambda x: x.reshape(-1, heads, width).transpose(1, 0, 2)  # noqa: E731
    s = (split(q * q_scale) @ split(k).transpose(0, 2, 1)) / s_div + mask
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return (p @ split(v)).transpose(1, 0, 2).reshape(tokens, hidden)


@pytest.mark.parametrize("mask_shape", [(1, 1, 6, 6), (1, 1, 1, 6), (2, 6, 6)])
def test_the_operator_matches_numpy(mask_shape):
    tokens, hidden, heads = 6, 8, 2
    q, k, v = (relax.Var(n, relax.TensorType([1, tokens, hidden], "float32")) for n in "qkv")
    m = relax.Var("m", relax.TensorType(list(mask_shape), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [q, k, v, m]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(attention(q, k, v, m, heads=heads, scales={"q": (0.5, False), "s": (2.0, True)})))
        bb.emit_func_output(out)
    a = [RNG.standard_normal((1, tokens, hidden)).astype("float32") for _ in range(3)]
    mask = RNG.standard_normal(mask_shape).astype("float32")
    got = _llvm(bb.get(), *a, mask)
    want = _numpy_attention(a[0][0], a[1][0], a[2][0], mask.reshape((1,) * (4 - len(mask_shape)) + mask_shape)[0],
                            heads, q_scale=0.5, s_div=2.0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_head_major_k_and_v_match_numpy():
    """``kv_heads``: K and V arrive ``[1, heads, Tk, D]`` (a decode step's cache slices),
    the queries and the output token-major; the same numbers as token-major K and V."""
    tq, tk, heads, width = 2, 5, 3, 4
    hidden = heads * width
    q = relax.Var("q", relax.TensorType([1, tq, hidden], "float32"))
    k, v = (relax.Var(n, relax.TensorType([1, heads, tk, width], "float32")) for n in "kv")
    m = relax.Var("m", relax.TensorType([1, 1, 1, tk], "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [q, k, v, m]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(attention(q, k, v, m, heads=heads, kv_heads=True, scales={"s": (2.0, True)})))
        bb.emit_func_output(out)
    a = RNG.standard_normal((1, tq, hidden)).astype("float32")
    kh, vh = (RNG.standard_normal((1, heads, tk, width)).astype("float32") for _ in "kv")
    mask = RNG.standard_normal((1, 1, 1, tk)).astype("float32")
    got = _llvm(bb.get(), a, kh, vh, mask)
    token_major = lambda x: x[0].transpose(1, 0, 2).reshape(tk, hidden)  # noqa: E731 -- [Tk, heads * D]
    want = _numpy_attention(a[0], token_major(kh), token_major(vh), mask[0], heads, s_div=2.0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    bad = relax.Var("k", relax.TensorType([1, heads + 1, tk, width], "float32"))
    with pytest.raises(Exception, match="kv_heads"):
        relax.BlockBuilder().normalize(attention(q, bad, v, heads=heads, kv_heads=True))


def test_merged_row_reads_as_the_slice_with_the_row_written():
    """``merge_row``: K and V are the slices before the step's row is written; key
    ``position`` reads the new rows instead -- numpy writes the row, then attends. Bad
    merge arguments say what is wrong."""
    tq, tk, heads, width = 1, 6, 2, 4
    hidden = heads * width
    q = relax.Var("q", relax.TensorType([1, tq, hidden], "float32"))
    k, v = (relax.Var(n, relax.TensorType([1, heads, tk, width], "float32")) for n in "kv")
    nk, nv = (relax.Var(n, relax.TensorType([1, heads, 1, width], "float32")) for n in ("nk", "nv"))
    m = relax.Var("m", relax.TensorType([1, 1, 1, tk], "float32"))
    pos = relax.Var("pos", relax.TensorType([1], "int64"))
    bb = relax.BlockBuilder()
    with bb.function("main", [q, k, v, m, nk, nv, pos]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(attention(q, k, v, m, heads=heads, kv_heads=True, scales={"s": (2.0, True)},
                                                   merge_row=(nk, nv, pos))))
        bb.emit_func_output(out)
    mod = bb.get()
    a = RNG.standard_normal((1, tq, hidden)).astype("float32")
    kh, vh = (RNG.standard_normal((1, heads, tk, width)).astype("float32") for _ in "kv")
    rows = [RNG.standard_normal((1, heads, 1, width)).astype("float32") for _ in "kv"]
    mask = RNG.standard_normal((1, 1, 1, tk)).astype("float32")
    token_major = lambda x: x[0].transpose(1, 0, 2).reshape(tk, hidden)  # noqa: E731 -- [Tk, heads * D]
    for at in (0, 3, tk - 1):
        got = _llvm(mod, a, kh, vh, mask, *rows, np.array([at], "int64"))
        written = [x.copy() for x in (kh, vh)]
        for x, row in zip(written, rows):
            x[:, :, at, :] = row[:, :, 0, :]
        want = _numpy_attention(a[0], token_major(written[0]), token_major(written[1]), mask[0], heads, s_div=2.0)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert not np.allclose(got, _numpy_attention(a[0], token_major(kh), token_major(vh), mask[0], heads,
                                                     s_div=2.0), rtol=1e-3)  # the old slices alone differ
    with pytest.raises(Exception, match="needs kv_heads"):
        tm = relax.Var("k", relax.TensorType([1, tk, hidden], "float32"))
        relax.BlockBuilder().normalize(attention(q, tm, tm, m, heads=heads, merge_row=(nk, nv, pos)))
    with pytest.raises(Exception, match="position must be one integer"):
        fpos = relax.Var("pos", relax.TensorType([1], "float32"))
        relax.BlockBuilder().normalize(attention(q, k, v, m, heads=heads, kv_heads=True, merge_row=(nk, nv, fpos)))
    with pytest.raises(Exception, match="new_k must be"):
        relax.BlockBuilder().normalize(attention(q, k, v, m, heads=heads, kv_heads=True, merge_row=(k, nv, pos)))
    with pytest.raises(ValueError, match="takes a mask first"):
        attention(q, k, v, heads=heads, kv_heads=True, merge_row=(nk, nv, pos))


def test_decode_attention_over_the_cache_slices_becomes_one_operator():
    """A decode step's attention reads K and V as its in-place cache updates return them
    (head-major): one operator per layer, with ``kv_heads``, and the rewritten module gives
    what TVM's own build of the original gives."""
    from relax_passes.kv_inplace import kv_inplace

    data = np.load(Path(__file__).parent / "fixtures" / "gpt2_tiny_generate.npz")
    names = [k.split(":", 2)[2] for k in data.files if k.startswith("in:decode:")]
    path = Path(__file__).parent / "fixtures" / "gpt2_tiny_decode.onnx"
    mod = kv_inplace(relax.transform.FoldConstant()(relax.transform.Normalize()(from_onnx(path))))
    fused = fuse_attention(mod)
    calls = []
    relax.analysis.post_order_visit(
        fused["main"], lambda e: calls.append(e) if isinstance(e, relax.Call) and getattr(e.op, "name", "") == ATTENTION else None)
    assert len(calls) == 2 and all(int(c.attrs.get("kv_heads", 0)) == 1 for c in calls)
    ops = []
    relax.analysis.post_order_visit(fused["main"], lambda e: ops.append(e) if isinstance(e, relax.Call) else None)
    # no softmax, no per-head matmul (QK^T, AV) left: only the linear layers' matmuls
    assert not any(getattr(e.op, "name", "") == "relax.nn.softmax" for e in ops)
    assert not any(getattr(e.op, "name", "") == "relax.matmul" and e.args[0].ty.ndim == 4 for e in ops)
    args = [data[f"in:decode:{n}"] for n in names]
    # the kv_update composite writes the cache in place: each build gets fresh copies
    got = _llvm(fused, *[a.copy() for a in args])
    np.testing.assert_allclose(got, _llvm(mod, *[a.copy() for a in args]), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got, data["out:decode:logits"], rtol=1e-4, atol=1e-4)
    # then each attention merges its new rows: its updates pass the old slices on (kv_append)
    merged = merge_new_rows(fused)
    calls = []
    relax.analysis.post_order_visit(
        merged["main"], lambda e: calls.append(e) if isinstance(e, relax.Call) and getattr(e.op, "name", "") == ATTENTION else None)
    assert len(calls) == 2 and all(int(c.attrs.get("merge_row", 0)) == 1 and len(c.args) == 7 for c in calls)
    composites = [str(f.attrs["Composite"]) for _, f in merged.functions.items()
                  if isinstance(f, relax.Function) and f.attrs and "Composite" in f.attrs]
    assert composites and all(c.endswith("kv_append") for c in composites)
    got = _llvm(merged, *[a.copy() for a in args])
    np.testing.assert_allclose(got, data["out:decode:logits"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case, shapes, heads, error", [
    ("heads do not divide the hidden size", ([1, 4, 6], [1, 4, 6], [1, 4, 6], None), 4, "do not divide"),
    ("k and v of different lengths", ([1, 4, 8], [1, 4, 8], [1, 5, 8], None), 2, "one length"),
    ("a mask that does not broadcast", ([1, 4, 8], [1, 4, 8], [1, 4, 8], [1, 1, 3, 4]), 2, "does not broadcast"),
    ("heads first, not token-major", ([2, 4, 8], [1, 4, 8], [1, 4, 8], None), 2, "tokens, hidden"),
])
def test_malformed_calls_say_what_is_wrong(case, shapes, heads, error):
    args = [relax.Var(f"a{i}", relax.TensorType(s, "float32")) for i, s in enumerate(shapes) if s is not None]
    with pytest.raises(Exception, match=error):
        relax.BlockBuilder().normalize(attention(*args, heads=heads))


@pytest.mark.parametrize("name, causal", [("gpt2_tiny", True), ("bert_tiny", False)])
def test_exported_attention_becomes_one_operator_with_the_same_result(name, causal):
    """Both exporters' spellings (GPT2's K transposed through [heads, tokens, dim] and back,
    BERT's computed padding mask) are found, once per layer, and the rewritten module gives
    what TVM's own build of the original gives."""
    path, inputs, _, _ = load_fixture(name)
    mod = relax.transform.FoldConstant()(relax.transform.Normalize()(from_onnx(path)))
    fused = fuse_attention(mod)
    calls = []
    relax.analysis.post_order_visit(
        fused["main"], lambda e: calls.append(e) if isinstance(e, relax.Call) and getattr(e.op, "name", "") == ATTENTION else None)
    assert len(calls) == 2  # both fixtures have two layers
    assert all(int(c.attrs.get("causal", 0)) == causal for c in calls)
    assert "permute_dims" not in fused["main"].script()  # the head splits and merges are gone
    args = list(inputs.values())
    np.testing.assert_allclose(_llvm(fused, *args), _llvm(mod, *args), rtol=1e-6, atol=1e-6)


def test_attention_in_another_layout_is_left_alone():
    """A head merge that puts heads last is not the operator's layout: nothing changes."""
    tokens, heads, width = 4, 2, 3
    hidden = heads * width
    x = {n: relax.Var(n, relax.TensorType([1, tokens, hidden], "float32")) for n in "qkv"}
    bb = relax.BlockBuilder()
    with bb.function("main", list(x.values())):
        with bb.dataflow():
            split = {n: bb.emit(relax.op.permute_dims(bb.emit(relax.op.reshape(x[n], [1, tokens, heads, width])),
                                                       [0, 2, 1, 3])) for n in "qkv"}
            kt = bb.emit(relax.op.permute_dims(split["k"], [0, 1, 3, 2]))
            p = bb.emit(relax.op.nn.softmax(bb.emit(relax.op.matmul(split["q"], kt)), axis=-1))
            ctx = bb.emit(relax.op.matmul(p, split["v"]))  # [1, heads, tokens, width]
            wrong = bb.emit(relax.op.reshape(bb.emit(relax.op.permute_dims(ctx, [0, 2, 3, 1])), [1, tokens, hidden]))
            out = bb.emit_output(wrong)
        bb.emit_func_output(out)
    mod = bb.get()
    assert tvm_ffi.structural_equal(fuse_attention(mod), mod)


def _processes(design, op):
    return [p for k in design.kernels for p in k.processes if p.op == op]


def test_causal_attention_streams_queries_beside_k_and_v():
    """GPT2: each query block is computed once K and V blocks up to it have arrived, so the
    queries' stream holds one block, and the result is the whole-tensor build's bit for bit."""
    from tvm_spatial.estimate import design_work

    path, inputs, outputs, _ = load_fixture("gpt2_tiny")
    built = {}
    for rows in (8, 16):  # every layer its own processes: one region, two attentions
        with tvm_spatial.allocation(rows=rows, layers="unroll"):
            built[rows] = relax.build(from_onnx(path), target="vitis_spatial")
    design = tvm_spatial.design_of(built[8])
    (att, _) = _processes(design, "attention")
    assert att.rows == 8 and att.held == 2 * 16 * 64  # K and V, whole
    (kernel,) = design.kernels
    queries = [s for s in kernel.streams if s.consumer == att.name and s.elements == 16 * 64]
    # K and V in lockstep, one block of Q (depths count transfers of ``width`` elements)
    assert sorted(s.depth * s.width for s in queries) == [2 * 16, 2 * 16, 8 * 64]
    assert not next(p for p in design_work(design).processes if p.name == att.name).barrier
    # after its last block it zeroes K and V as wide as their streams fill them; the cycles
    # the design records for its copy loops are those the HLS text implies
    from test_lanes import _function_body, _pipelined_cycles

    body = _function_body(kernel.source, att.name)
    width = min(s.width for s in queries)
    assert width > 1
    zeroing = body.split("// zero K and V", 1)[1]
    assert f"for (int i2 = 0; i2 < {64 // width}; ++i2) {{" in zeroing  # K, V: [1, 16, 64]
    assert f"for (int e = 0; e < {width}; ++e) {{" in zeroing
    assert att.stream_io == _pipelined_cycles(body)
    results = []
    for ex in built.values():
        vm = relax.VirtualMachine(ex, tvm.cpu())
        results.append(vm["main"](*[tvm.runtime.tensor(v) for v in inputs.values()]).numpy())
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_allclose(results[0], next(iter(outputs.values())), rtol=1e-4, atol=1e-4)


def test_bidirectional_attention_holds_k_and_v_before_its_first_block():
    """BERT: every query needs every key, so the block loop starts after K and V are in (the
    model counts it as a barrier), and the queries' stream holds them all meanwhile."""
    from tvm_spatial.estimate import design_from_onnx, design_work

    path, *_ = load_fixture("bert_tiny")
    with tvm_spatial.allocation(rows=8):
        design = design_from_onnx(path)
    att = _processes(design, "attention")[0]
    assert att.rows == 8
    kernel = next(k for k in design.kernels if att in k.processes)
    body = kernel.source.split(f"static void {att.name}(", 1)[1].split("\nstatic void ", 1)[0]
    assert body.index("for (int blk") < body.index("// 2 blocks of 8 tokens")  # K and V first
    assert "zero K and V" not in body
    assert next(p for p in design_work(design).processes if p.name == att.name).barrier


def test_the_softmax_of_the_printed_attention_runs_in_place_in_one_array():
    """``hls.storage`` (``attention_kernel.IN_PLACE``): the scores, logits, exponentials and
    probabilities -- each computed element by element from the one before -- share one
    array in the printed stage, which the model counts once; the emulation of that C++
    still matches numpy."""
    from codegen_hls.printer import shared_storage

    tokens, hidden, heads = 6, 8, 2
    q, k, v = (relax.Var(n, relax.TensorType([1, tokens, hidden], "float32")) for n in "qkv")
    m = relax.Var("m", relax.TensorType([1, 1, tokens, tokens], "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [q, k, v, m]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(attention(q, k, v, m, heads=heads, scales={"s": (2.0, True)})))
        bb.emit_func_output(out)
    a = [RNG.standard_normal((1, tokens, hidden)).astype("float32") for _ in range(3)]
    mask = np.triu(np.full((tokens, tokens), -1e4, "float32"), 1)[None, None]
    ex = relax.build(bb.get(), target="vitis_spatial")
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](*[tvm.runtime.tensor(x) for x in (*a, mask)]).numpy()
    want = _numpy_attention(a[0][0], a[1][0], a[2][0], mask[0], heads, s_div=2.0)
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-5, atol=1e-6)
    source = tvm_spatial.design_of(ex).kernels[0].source
    assert "static float attention_scores[" in source
    assert not any(f"static float attention_{n}[" in source for n in ("logits", "exp", "probs"))

    legal = relax.transform.LegalizeOps()(bb.get())
    prim = next(f for _, f in legal.functions.items() if isinstance(f, tvm.tirx.PrimFunc))
    assert shared_storage(prim) == {n: "attention_scores" for n in ("attention_logits", "attention_exp",
                                                                     "attention_probs")}
    # a buffer of another shape (the row maxima) cannot take the scores' array
    import tvm_spatial.annotations as ann
    assert "attention_max" not in shared_storage(ann.with_storage(prim, "attention_max", "attention_scores"))
    # two different partitions of one dimension cannot both hold on one array: no sharing
    split = ann.with_partition(ann.with_partition(prim, "attention_scores", ann.Partition(3, 2, "cyclic")),
                               "attention_exp", ann.Partition(3, 4, "cyclic"))
    assert shared_storage(split) == {}
