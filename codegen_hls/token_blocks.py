"""Token blocks: a row-wise process computes ``rows`` tokens at a time.

Why: a process that buffers whole tensors holds every token of its input before it starts,
so a chain of processes runs one after another and each holds ``tokens x width`` elements
(GPT2-small: 11 URAM per fp32 activation). A row-wise operator (layer norm, a linear
layer, GELU, a residual add, a split along the hidden axis) computes output row ``t``
from input row ``t`` alone, so it can loop over blocks of ``rows`` tokens with
block-sized buffers, and the next process starts after the first block.

The stream between two processes carries the same elements in the same order either
way (row-major, token after token), so a blocked process needs nothing of its neighbours.

How a process is blocked: its composite Relax function is rebuilt with its streamed
inputs ``rows`` tokens long (the token axis: the first axis that is not 1, and equal to
the design's token count). Each operator is re-emitted and its shapes inferred again
by Relax, then legalized as usual; ``rows`` is first a symbolic variable, to check that
every value keeps the token axis where it was and that no operator mixes tokens:

* element-wise operators (ports broadcast against the block, or fail to infer);
* matmuls whose second operand has no token axis, and whose first operand does not reduce
  over it;
* normalizations, softmax, reductions and splits along other axes;
* the fused attention (``codegen_hls.attention_kernel``): its queries, and its mask when
  the mask has a row per query, are cut into blocks; K and V are *held*: read whole
  before the first block (each query needs every key), so attention is row-wise in its
  queries alone. A mask that is a port (GPT2's causal mask) is cut too: each block reads
  its rows of it.

A port with a row per token (a reused layer's input, which its first layer norm and its
residual add read) is cut like a stream where the operator is row-wise in it: each block
copies its rows of the port into a block buffer. Without that, a reused layer's first
process and its residual add held whole tensors and split the layer's pipeline in three.

Anything else (a transpose, a gather, a token-indexed port such as a position table)
keeps the whole tensor.
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import relax

from .attention_kernel import ATTENTION
from .quant_kernels import W4A8_MATMUL
from .stage_fusion import fusible, fuse_stages

# element-wise: output element i from input elements i (broadcast) only
_ELEMENTWISE = frozenset(
    f"relax.{name}" for name in (
        "add", "subtract", "multiply", "divide", "floor_divide", "power", "maximum", "minimum", "mod", "floor_mod",
        "less", "greater", "equal", "not_equal", "less_equal", "greater_equal", "where", "astype", "clip",
        "exp", "log", "sqrt", "rsqrt", "tanh", "erf", "sigmoid", "negative", "abs", "floor", "ceil", "round",
        "square", "sin", "cos", "sign", "logical_and", "logical_or", "logical_not", "bitwise_and", "bitwise_or",
        "bitwise_xor", "bitwise_not", "isnan", "isinf", "isfinite", "nn.gelu", "nn.gelu_tanh", "nn.relu", "nn.silu",
        "zeros_like", "ones_like", "full_like",
    )
)
# reduce or normalize along ``attrs.axes`` / ``attrs.axis``: separable along every other axis
_ALONG_AXES = frozenset(
    f"relax.{name}" for name in (
        "nn.layer_norm", "nn.rms_norm", "nn.softmax", "nn.log_softmax", "sum", "mean", "max", "min", "prod",
        "variance", "std", "split",
    )
)
_MATMULS = frozenset({"relax.matmul", W4A8_MATMUL})


def token_axis(shape, tokens: int) -> int | None:
    """The token axis of a streamed tensor: its first axis that is not 1, if it is ``tokens`` long."""
    for axis, extent in enumerate(shape):
        if extent != 1:
            return axis if extent == tokens and tokens > 1 else None
    return None


def _dims(value) -> list:
    sinfo = value.ty
    if not isinstance(sinfo, relax.TensorType) or sinfo.shape is None:
        return []
    return list(sinfo.shape.values)


def _extent(dim) -> int | None:
    """A static extent's value (None: symbolic)."""
    value = getattr(dim, "value", None)
    return int(value) if isinstance(value, int) else None


def _axis_of(value, rows) -> int | None:
    """Where ``rows`` (the symbolic block length) is in a tensor's shape (None: nowhere)."""
    found = [i for i, d in enumerate(_dims(value)) if d.same_as(rows)]
    return found[0] if len(found) == 1 else None


def _attr_axes(attrs, rank: int) -> list[int] | None:
    for key in ("axes", "axis"):
        if attrs is not None and hasattr(attrs, key):
            value = getattr(attrs, key)
            if value is None:
                return None  # all axes
            values = list(value) if isinstance(value, (list, tuple, tvm.ir.Array)) else [value]
            return [int(v) % rank for v in values]
    return None


def _broadcasts(args: list, rows) -> bool:
    """No operand puts a static extent (a token-indexed port: a mask, a position table)
    against the block's token axis (numpy broadcasting, right-aligned)."""
    shapes = [_dims(a) for a in args if isinstance(a.ty, relax.TensorType)]
    blocked = [(s, i) for s in shapes for i, d in enumerate(s) if d.same_as(rows)]
    if not blocked:
        return True
    shape, axis = blocked[0]
    from_right = len(shape) - axis
    for other in shapes:
        if len(other) >= from_right:
            d = other[len(other) - from_right]
            if not d.same_as(rows) and _extent(d) != 1:
                return False
    return True


def _has(value, rows) -> bool:
    return any(d.same_as(rows) for d in _dims(value))


def _attention_separable(args: list, rows) -> bool:
    """Queries cut along their token axis, K and V whole, the mask cut like the queries or
    the same for every query."""
    if _axis_of(args[0], rows) != len(_dims(args[0])) - 2 or _has(args[1], rows) or _has(args[2], rows):
        return False
    if len(args) == 4:
        mask = _dims(args[3])
        cut = _axis_of(args[3], rows)
        return cut == len(mask) - 2 if cut is not None else (len(mask) < 2 or _extent(mask[-2]) == 1)
    return True


def _separable(call: relax.Call, args: list, rows) -> bool:
    """Whether ``call`` on these (re-emitted) arguments computes each token from its own row."""
    name = call.op.name if isinstance(call.op, tvm.ir.Op) else ""
    if name == ATTENTION:
        return _attention_separable(args, rows)
    if name in _ELEMENTWISE:
        return _broadcasts(args, rows)
    if name in _MATMULS:
        lhs, rhs = (_axis_of(a, rows) for a in args[:2])
        return lhs is not None and rhs is None and lhs != len(_dims(args[0])) - 1
    if name in _ALONG_AXES:
        axis = _axis_of(args[0], rows)
        along = _attr_axes(call.attrs, len(_dims(args[0])))
        return axis is not None and along is not None and axis not in along
    return False


def blocked_function(fn: relax.Function, streamed: set[int], tokens: int, rows) -> relax.Function | None:
    """``fn`` (a composite operator) rebuilt with its ``streamed`` parameters (those cut into
    blocks: :func:`block_cut`) ``rows`` tokens long (an int, or a ``tirx.Var`` to check separability), or None when it is not
    row-wise (see the module docstring)."""
    symbolic = not isinstance(rows, int)
    params, remap = [], {}
    for index, param in enumerate(fn.params):
        sinfo = param.ty
        if index in streamed:
            if not isinstance(sinfo, relax.TensorType) or sinfo.shape is None:
                return None
            shape = [int(d) for d in sinfo.shape.values]
            axis = token_axis(shape, tokens)
            if axis is None:
                return None
            shape[axis] = rows
            sinfo = relax.TensorType(shape, sinfo.dtype)
        new = relax.Var(param.name, sinfo)
        params.append(new)
        remap[param] = new

    def arg(expr):
        if isinstance(expr, relax.Var):
            return remap[expr]
        if isinstance(expr, relax.Tuple):  # concat's operands
            return relax.Tuple([arg(field) for field in expr.fields])
        return expr  # constants, shapes, attributes

    bb = relax.BlockBuilder()
    mixes = False  # an operator mixes tokens: stop there (the builder still closes cleanly)
    try:
        with bb.function("main", params):
            with bb.dataflow():
                for block in fn.body.blocks:
                    for binding in block.bindings:
                        value = binding.value
                        if isinstance(value, relax.TupleGetItem):
                            new = relax.TupleGetItem(arg(value.tuple_value), value.index)
                        elif isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
                            args = [arg(a) for a in value.args]
                            if symbolic and not _separable(value, args, rows):
                                mixes = True
                                break
                            new = relax.Call(value.op, args, value.attrs, value.ty_args)
                        else:
                            mixes = True
                            break
                        remap[binding.var] = bb.emit(new)
                    if mixes:
                        break
                out = bb.emit_output(params[0] if mixes else arg(fn.body.body))
            bb.emit_func_output(out)
    except (ValueError, TypeError, KeyError, tvm.error.InternalError, tvm.error.DiagnosticError, tvm.error.OpError):
        return None  # the checks above let nothing through that fails to infer; this is a backstop
    if mixes:
        return None
    result = bb.get()["main"]
    if symbolic:
        outputs = result.ret_ty
        fields = outputs.fields if isinstance(outputs, relax.TupleType) else [outputs]
        originals = fn.ret_ty
        original = originals.fields if isinstance(originals, relax.TupleType) else [originals]
        for got, want in zip(fields, original):
            if not isinstance(got, relax.TensorType) or got.shape is None:
                return None
            dims, expected = list(got.shape.values), [int(d) for d in want.shape.values]
            axis = token_axis(expected, tokens)
            if axis is None or len(dims) != len(expected):
                return None
            for i, (d, e) in enumerate(zip(dims, expected)):
                if not (d.same_as(rows) if i == axis else _extent(d) == e):
                    return None
    return result


def held_and_cut(fn: relax.Function, streamed: set[int], tokens: int) -> tuple[set[int], set[int]]:
    """(held, cut): the streamed parameters read whole before the first block (attention's
    K and V), and the parameters cut into token blocks (the other streamed ones, and a
    mask port with a row per query)."""
    position = {param: i for i, param in enumerate(fn.params)}
    held, masks = set(), set()
    for block in fn.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name == ATTENTION:
                held |= {position[a] for a in value.args[1:3] if a in position}
                if len(value.args) == 4 and value.args[3] in position:
                    dims = [_extent(d) for d in _dims(value.args[3])]
                    if len(dims) >= 2 and dims[-2] == tokens and token_axis(dims, tokens) == len(dims) - 2:
                        masks.add(position[value.args[3]])
    return held & streamed, (streamed - held) | masks


def block_cut(fn: relax.Function, streamed: set[int], tokens: int) -> frozenset[int] | None:
    """The parameters to cut into token blocks when this operator streams them (see
    :func:`held_and_cut`), or None when it cannot (module docstring)."""
    if not streamed or tokens <= 1:
        return None
    _, cut = held_and_cut(fn, streamed, tokens)
    if not cut or blocked_function(fn, cut, tokens, tvm.tirx.Var("rows", "int64")) is None:
        return None
    return frozenset(cut)


def separable(fn: relax.Function, streamed: set[int], tokens: int) -> bool:
    """Whether the codegen can stream this operator in token blocks (module docstring)."""
    return block_cut(fn, streamed, tokens) is not None


def legal_whole(source: relax.Function, tokens: int) -> tvm.IRModule | None:
    """The operator ``source`` on whole tensors, legalized on its own so that its element-wise
    stages fuse as in its blocks (the same expressions, so the same bits); None when there
    is nothing to fuse (``codegen_hls.stage_fusion``)."""
    if not fusible(source) or blocked_function(source, set(), tokens, tokens) is None:
        return None
    return legal_block(source, set(), tokens, tokens)


_LEGAL_BLOCKS: dict = {}  # (structural hash, streamed, tokens, rows) -> [(operator, legalized module)]


def legal_block(source: relax.Function, streamed: set[int], tokens: int, rows: int) -> tvm.IRModule:
    """The operator ``source`` for ``rows`` tokens (``streamed``: its parameters cut into
    blocks), legalized, its element-wise stages fused (``codegen_hls.stage_fusion``).
    Cached: every layer has the same operators, and legalizing each of them again costs
    seconds."""
    key = (tvm_ffi.structural_hash(source), tuple(sorted(streamed)), tokens, rows)
    for known, legal in _LEGAL_BLOCKS.get(key, ()):
        if tvm_ffi.structural_equal(known, source):
            return legal
    legal = relax.transform.LegalizeOps()(tvm.IRModule({"main": blocked_function(source, streamed, tokens, rows)}))
    legal = fuse_stages(source, legal)
    if len(_LEGAL_BLOCKS) > 1024:  # a long session building many models: start over
        _LEGAL_BLOCKS.clear()
    _LEGAL_BLOCKS.setdefault(key, []).append((source, legal))
    return legal
