"""Multi-head attention as one Relax operator over token-major tensors.

Why an operator: exporters write attention as a head split (reshape + transpose) of Q,
K and V, two batched matmuls, a masked softmax, and a head merge. Printed operator by
operator, every step is a process that holds a whole ``heads x tokens x tokens`` or
``tokens x hidden`` tensor: GPT2-small's attention needed 1,872 URAM of the U280's 960.
The transposes only reorder indices, so the fused operator reads Q, K and V as they
leave the linear layers (``[tokens, hidden]``, row-major) and indexes a head's columns
directly: no transposed copy exists, and its output row ``t`` (all heads) depends on
query row ``t`` alone. That is what lets the codegen stream queries in token blocks
while K and V are held (``codegen_hls.token_blocks``).

``relax_passes/attention_fusion.py`` proves an exporter's subgraph is this operator (the
view chains are checked on index arrays) before rewriting it. The legalization
(:func:`_attention_te`) is the same TIR for TVM's ``llvm`` build and the HLS printer:

    scores[h, i, j] = sum_e (q[i, h*D + e] * sq) * (k[j, h*D + e] * sk)
    logits = scores * ss + mask (broadcast to [heads, Tq, Tk])
    probs  = softmax(logits, over j)   (where(isnan(p), guard, p) when the graph had it)
    out[i, h*D + d] = sum_j probs[h, i, j] * v[j, h*D + d]

with each scale a multiply or a divide, as the graph had it.

``kv_heads``: K and V are head-major, ``[1.., heads, Tk, D]`` (``k[h, j, e]`` in place of
``k[j, h*D + e]``): a decode step's K and V, which leave the in-place cache update
(``relax_passes.kv_inplace``) as the cache holds them. The queries and the output stay
token-major.

``merge_row`` (with ``kv_heads``): three more arguments, ``new_k`` and ``new_v``
(``[1.., heads, 1, D]``) and ``position`` (``[1]``, an integer): K and V are the cache's
slices *before* this step's row is written, and key ``position`` reads the new row
instead -- what the slices with the row written would hold. A decode step's in-place
cache update (``relax_passes.kv_inplace.merge_new_rows``) can then stream the old slice
while the QKV linear still computes the new row: the slice read leaves the token's chain.

``causal``: a promise, checked on the constant mask by the fusion pass, that the mask
hides every later key from each query by at most ``HARD_MASK`` (those probabilities are
exactly 0). The TIR is the same; the codegen then computes query block ``b`` as soon as
K and V blocks ``0..b`` have arrived, with the later rows of its K and V buffers zero
(they are zeroed after every call), which leaves every sum bit for bit as it was.
"""

from __future__ import annotations

import tvm
from tvm import relax, s_tir, te, tirx
from tvm.ir import _ffi_api as _ir_api

ATTENTION = "relax.vitis_spatial.attention"
# attributes: heads; for each of q, k and the scores (s) an optional constant scale,
# multiplied or divided ("<x>_scale", "<x>_divide"); the softmax's NaN guard; the output's
# rank; "causal" and "kv_heads" (see the module docstring)
_SCALED = ("q", "k", "s")


def _static(dim) -> int | None:
    value = getattr(dim, "value", dim)
    return int(value) if isinstance(value, int) else None


def token_major(shape) -> bool:
    """``[1, ..., 1, tokens, hidden]``: the layout the operator reads and writes."""
    return len(shape) >= 2 and all(_static(d) == 1 for d in shape[:-2])


def head_major(shape, heads: int, width) -> bool:
    """``[1.., heads, tokens, width]``: the layout of K and V with ``kv_heads``."""
    return (len(shape) >= 3 and all(_static(d) == 1 for d in shape[:-3]) and _static(shape[-3]) == heads
            and _same(shape[-1], width))


def _same(a, b) -> bool:
    """Two extents are equal: both static and equal, or the same symbolic variable (the
    block length while ``codegen_hls.token_blocks`` checks a blocked operator)."""
    sa, sb = _static(a), _static(b)
    return sa == sb if sa is not None and sb is not None else a.same_as(b)


def _check(call: relax.Call) -> tuple[list, str]:
    """(output shape, dtype) of a well-formed call, else ValueError saying what is wrong."""
    args, attrs = call.args, call.attrs
    merge = int(attrs.get("merge_row", 0))
    if (len(args) == 7) != bool(merge) or len(args) not in (3, 4, 7):
        raise ValueError(f"{ATTENTION} takes q, k, v and an optional mask; with merge_row, a mask, new_k, new_v "
                         "and position")
    if not all(isinstance(a.ty, relax.TensorType) and a.ty.shape is not None for a in args):
        raise ValueError(f"{ATTENTION} takes tensors of known shape")
    if merge:
        _check_merge(call)
        args = args[:4]
    shapes = [list(a.ty.shape.values) for a in args]
    q, k, v = shapes[:3]
    dtype = str(args[0].ty.dtype)
    if any(str(a.ty.dtype) != dtype for a in args) or not dtype.startswith("float"):
        raise ValueError(f"{ATTENTION} takes float tensors of one type, got {[str(a.ty.dtype) for a in args]}")
    heads = int(attrs["heads"])
    if not token_major(q) or _static(q[-1]) is None:
        raise ValueError(f"{ATTENTION}: q must be [1.., tokens, hidden]; got {q}")
    if heads < 1 or _static(q[-1]) % heads:
        raise ValueError(f"{ATTENTION}: {heads} heads do not divide hidden size {q[-1]}")
    if int(attrs.get("kv_heads", 0)):
        width = _static(q[-1]) // heads
        if not (head_major(k, heads, width) and head_major(v, heads, width) and _same(k[-2], v[-2])):
            raise ValueError(f"{ATTENTION}: with kv_heads, k and v must be [1.., {heads}, tokens, {width}] of "
                             f"one length; got {k}, {v}")
    elif (not all(token_major(s) for s in (k, v))
            or not _same(q[-1], k[-1]) or not _same(q[-1], v[-1]) or not _same(k[-2], v[-2])):
        raise ValueError(f"{ATTENTION}: q, k, v must be [1.., tokens, hidden] with one hidden size, k and v "
                         f"one length; got {q}, {k}, {v}")
    if len(args) == 4:
        full = [heads, q[-2], k[-2]]
        mask = shapes[3]
        if (any(_static(m) != 1 for m in mask[:-3])
                or any(_static(m) != 1 and not _same(m, f) for m, f in zip(reversed(mask), reversed(full)))):
            raise ValueError(f"{ATTENTION}: mask {mask} does not broadcast to [heads, Tq, Tk] = {full}")
    rank = int(attrs["out_rank"])
    if rank < 2:
        raise ValueError(f"{ATTENTION}: output rank {rank} < 2")
    return [1] * (rank - 2) + q[-2:], dtype


def _check_merge(call: relax.Call) -> None:
    """The merge_row arguments: head-major new rows of K and V, an integer position."""
    q, k, _, _, new_k, new_v, position = call.args
    heads = int(call.attrs["heads"])
    hidden = _static(q.ty.shape.values[-1])
    if not int(call.attrs.get("kv_heads", 0)) or hidden is None or hidden % heads:
        raise ValueError(f"{ATTENTION}: merge_row needs kv_heads")
    width = hidden // heads
    for name, row in (("new_k", new_k), ("new_v", new_v)):
        shape = list(row.ty.shape.values)
        if not head_major(shape, heads, width) or _static(shape[-2]) != 1 or str(row.ty.dtype) != str(k.ty.dtype):
            raise ValueError(f"{ATTENTION}: {name} must be [1.., {heads}, 1, {width}] {k.ty.dtype}; got {shape} "
                             f"{row.ty.dtype}")
    if [_static(d) for d in position.ty.shape.values] != [1] or not str(position.ty.dtype).startswith("int"):
        raise ValueError(f"{ATTENTION}: position must be one integer, [1]; got {list(position.ty.shape.values)} "
                         f"{position.ty.dtype}")


def _infer(call: relax.Call, _ctx):
    out, dtype = _check(call)
    return relax.TensorType(out, dtype)


def _scale(attrs, which: str, value, dtype: str):
    key = f"{which}_scale"
    if key not in attrs:
        return value
    factor = tirx.const(float(attrs[key]), dtype)
    return value / factor if int(attrs[f"{which}_divide"]) else value * factor


def _attention_te(q: te.Tensor, k: te.Tensor, v: te.Tensor, *rest, attrs=None):
    """The fused operator's TIR: five stages, no transposed copy of Q, K or V."""
    mask = rest[0] if rest else None
    merged = rest[1:] if int(attrs.get("merge_row", 0)) else ()
    dtype = q.dtype
    tq, hidden, tk = int(q.shape[-2]), int(q.shape[-1]), int(k.shape[-2])
    heads = int(attrs["heads"])
    width = hidden // heads
    lead = lambda t, n=2: (0,) * (len(t.shape) - n)  # noqa: E731 -- the leading unit axes
    if int(attrs.get("kv_heads", 0)):  # head-major K and V: [1.., heads, tokens, width]
        key = lambda h, j, e: k[(*lead(k, 3), h, j, e)]  # noqa: E731
        value = lambda h, j, d: v[(*lead(v, 3), h, j, d)]  # noqa: E731
        if merged:  # key ``position`` is this step's new row
            new_k, new_v, position = merged
            at = lambda j: tirx.Cast(position.dtype, j) == position[0]  # noqa: E731
            old_key, old_value = key, value
            key = lambda h, j, e: tirx.Select(at(j), new_k[(*lead(new_k, 3), h, 0, e)], old_key(h, j, e))  # noqa: E731
            value = lambda h, j, d: tirx.Select(at(j), new_v[(*lead(new_v, 3), h, 0, d)], old_value(h, j, d))  # noqa: E731
    else:
        key = lambda h, j, e: k[(*lead(k), j, h * width + e)]  # noqa: E731
        value = lambda h, j, d: v[(*lead(v), j, h * width + d)]  # noqa: E731
    e = te.reduce_axis((0, width), "e")
    scores = te.compute(
        (heads, tq, tk),
        lambda h, i, j: te.sum(
            _scale(attrs, "q", q[(*lead(q), i, h * width + e)], dtype) * _scale(attrs, "k", key(h, j, e), dtype),
            axis=e,
        ),
        name="attention_scores",
    )

    def masked(h, i, j):
        value = _scale(attrs, "s", scores[h, i, j], dtype)
        if mask is None:
            return value
        rank = len(mask.shape)
        index = [tirx.const(0, "int32")] * rank
        for axis, (var, full) in enumerate(zip((j, i, h), (tk, tq, heads)), start=1):
            if axis <= rank:
                index[rank - axis] = var if int(mask.shape[rank - axis]) == full else tirx.const(0, "int32")
        return value + mask[tuple(index)]

    logits = te.compute((heads, tq, tk), masked, name="attention_logits")
    jm = te.reduce_axis((0, tk), "j")
    peak = te.compute((heads, tq), lambda h, i: te.max(logits[h, i, jm], axis=jm), name="attention_max")
    exps = te.compute((heads, tq, tk), lambda h, i, j: te.exp(logits[h, i, j] - peak[h, i]), name="attention_exp")
    js = te.reduce_axis((0, tk), "j")
    total = te.compute((heads, tq), lambda h, i: te.sum(exps[h, i, js], axis=js), name="attention_sum")

    def prob(h, i, j):
        p = exps[h, i, j] / total[h, i]
        if int(attrs.get("guard", 0)):
            return tirx.Select(tirx.isnan(p), tirx.const(float(attrs["guard_value"]), dtype), p)
        return p

    probs = te.compute((heads, tq, tk), prob, name="attention_probs")
    jc = te.reduce_axis((0, tk), "j")
    out_shape = [1] * (int(attrs["out_rank"]) - 2) + [tq, hidden]
    return te.compute(
        out_shape,
        lambda *idx: te.sum(probs[idx[-1] // width, idx[-2], jc] * value(idx[-1] // width, jc, idx[-1] % width),
                            axis=jc),
        name="attention",
    )


# each of these is computed element by element from the one before it, after which nothing
# reads that one: one array holds them all, in turn (``hls.storage``; the max and the sum
# read their row whole before the next stage overwrites it)
IN_PLACE = (("attention_logits", "attention_scores"), ("attention_exp", "attention_logits"),
            ("attention_probs", "attention_exp"))


def _legalize(bb: relax.BlockBuilder, call: relax.Call):
    import tvm_spatial.annotations as ann

    expr = bb.call_te(_attention_te, *call.args, attrs=call.attrs, primfunc_name_hint="attention")
    gv = expr.args[0]
    func = _keys_outside(bb.get()[gv])
    for buffer, source in IN_PLACE:  # GPT2-small's second engine: 4 x 96 BRAM18 of scores -> 96
        func = ann.with_storage(func, buffer, source)
    bb.update_func(gv, func)
    return expr


def _keys_outside(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """AV with the loop over keys outside the loop over output columns: each key's row of V
    is then read along its contiguous columns, and each output row accumulates in place
    (the order of every sum is unchanged), zeroed first. TE puts the reduction innermost, where it reads
    V down a column, a stride of ``hidden`` elements per step: on the host that made the
    fused attention 40 % of GPT2-small's emulation time. For the lanes schedule it is a
    map over the output columns (``codegen_hls.lanes``), the same elements per cycle."""
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    block = sch.get_sblock("attention")
    loops = sch.get_loops(block)
    sch.reorder(loops[-1], loops[-2])
    # the zeroing as a loop of its own before the keys' loop: a body without a branch
    # is one the host compiler vectorizes
    sch.decompose_reduction(block, sch.get_loops(block)[-2])
    return sch.mod["main"]


def register_ops() -> None:
    """Register the operator once per process (its attributes are set only here)."""
    if ATTENTION in [str(n) for n in _ir_api.ListOpNames()]:
        if _ir_api.OpHasAttr(tvm.ir.Op.get(ATTENTION), "FLegalize"):
            return
    else:
        _ir_api.RegisterOp(ATTENTION, "multi-head attention on token-major q, k, v (tvm-spatial)")
    tvm.ir.register_op_attr(ATTENTION, "FInferType", _infer)
    tvm.ir.register_op_attr(ATTENTION, "FPurity", True)
    tvm.ir.register_op_attr(ATTENTION, "FLegalize", _legalize)


def attention(q, k, v, mask=None, *, heads: int, out_rank: int = 2, scales: dict | None = None,
              guard: float | None = None, causal: bool = False, kv_heads: bool = False,
              merge_row: tuple | None = None) -> relax.Call:
    """The output is ``[1.., Tq, hidden]`` of rank ``out_rank``; ``scales``: {"q" | "k" | "s": (factor, divide)} as the graph applies them;
    ``guard``: the value the graph puts where softmax gives NaN (None: no guard); ``kv_heads``:
    K and V are head-major; ``merge_row``: (new_k, new_v, position), K and V being the
    slices before the row is written (module docstring)."""
    register_ops()
    attrs = {"heads": int(heads), "out_rank": int(out_rank)}
    for which, (factor, divide) in sorted((scales or {}).items()):
        if which not in _SCALED:
            raise ValueError(f"scales: {which!r} is not one of {_SCALED}")
        attrs[f"{which}_scale"] = float(factor)
        attrs[f"{which}_divide"] = int(bool(divide))
    if guard is not None:
        attrs["guard"], attrs["guard_value"] = 1, float(guard)
    if causal:
        attrs["causal"] = 1
    if kv_heads:
        attrs["kv_heads"] = 1
    args = [q, k, v] + ([mask] if mask is not None else [])
    if merge_row is not None:
        if mask is None:
            raise ValueError("merge_row: the attention takes a mask first")
        attrs["merge_row"] = 1
        args += list(merge_row)
    return relax.Call(tvm.ir.Op.get(ATTENTION), args, tvm.ir.make_node("ir.DictAttrs", **attrs))


def is_causal(fn: relax.Function) -> bool:
    """Whether a composite function's attention is ``causal`` (module docstring)."""
    for block in fn.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name == ATTENTION:
                return int(value.attrs.get("causal", 0)) == 1
    return False
