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
* normalizations, softmax, reductions and splits along other axes.

Anything else (a transpose, a gather, a token-indexed port such as a position table or
a mask) keeps the whole tensor.
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import relax

from .quant_kernels import W4A8_MATMUL

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


def _separable(call: relax.Call, args: list, rows) -> bool:
    """Whether ``call`` on these (re-emitted) arguments computes each token from its own row."""
    name = call.op.name if isinstance(call.op, tvm.ir.Op) else ""
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
    """``fn`` (a composite operator) rebuilt with its ``streamed`` parameters ``rows`` tokens
    long (an int, or a ``tirx.Var`` to check separability), or None when it is not
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
        return remap[expr] if isinstance(expr, relax.Var) else expr  # constants, shapes, attributes

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


def separable(fn: relax.Function, streamed: set[int], tokens: int) -> bool:
    """Whether the codegen can stream this operator in token blocks (module docstring)."""
    if not streamed or tokens <= 1:
        return False
    return blocked_function(fn, streamed, tokens, tvm.tirx.Var("rows", "int64")) is not None


_LEGAL_BLOCKS: dict = {}  # (structural hash, streamed, tokens, rows) -> [(operator, legalized module)]


def legal_block(source: relax.Function, streamed: set[int], tokens: int, rows: int) -> tvm.IRModule:
    """The operator ``source`` for ``rows`` tokens, legalized (``token_blocks``). Cached: every
    layer has the same operators, and legalizing each of them again costs seconds."""
    key = (tvm_ffi.structural_hash(source), tuple(sorted(streamed)), tokens, rows)
    for known, legal in _LEGAL_BLOCKS.get(key, ()):
        if tvm_ffi.structural_equal(known, source):
            return legal
    legal = relax.transform.LegalizeOps()(tvm.IRModule({"main": blocked_function(source, streamed, tokens, rows)}))
    if len(_LEGAL_BLOCKS) > 1024:  # a long session building many models: start over
        _LEGAL_BLOCKS.clear()
    _LEGAL_BLOCKS.setdefault(key, []).append((source, legal))
    return legal
