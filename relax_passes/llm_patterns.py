"""Transformer operators, however the ONNX exporters spell them.

Each entry matches the op sequence one exporter writes for one LLM operator and names the
composite after the operator (``vitis_spatial.gelu`` whether it came as ``nn.gelu``, an
erf expansion or the tanh "gelu_new" expansion). These entries come before the
one-operator table so that a whole operator becomes one dataflow process. Roles that
depend on context (the two attention matmuls, residual additions) are named afterwards
by :mod:`relax_passes.roles`.
"""

from __future__ import annotations

from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard

from codegen_hls.attention_kernel import ATTENTION, register_ops

from .patterns import PatternEntry, static_shapes


def _op(name):
    return is_op(f"relax.{name}")


def _any(*patterns):
    result = patterns[0]
    for p in patterns[1:]:
        result = result | p
    return result


def _attention(arity: int):
    """The fused operator (``relax_passes.attention_fusion``), with or without a mask, or
    with a mask and the new K/V rows and their position (``merge_row``)."""
    def build():
        register_ops()
        root = is_op(ATTENTION)(*[wildcard() for _ in range(arity)])
        return root, {"root": root}
    return build


def _embedding():
    """Gather (with ONNX's negative-index wrap) plus constant position/type embeddings."""
    raw = wildcard()
    wrapped = _op("where")(_op("less")(raw, is_const()), _op("add")(raw, is_const()), raw)
    gather = _op("take")(is_const(), _any(wrapped, wildcard()))
    one = _op("add")(gather, is_const())
    root = _any(_op("add")(one, is_const()), one, gather)
    return root, {"root": root}


def _linear_bias():
    mm = _op("matmul")(wildcard(), is_const())
    bias = is_const()
    root = _op("add")(mm, bias)
    return root, {"root": root, "matmul": mm, "bias": bias}


def _linear_bias_check(ctx) -> bool:
    bias, out = ctx.annotated_expr["bias"], ctx.annotated_expr["matmul"]
    if not static_shapes(ctx) or not isinstance(bias.ty, relax.TensorType):
        return False
    return bias.ty.ndim == 1 and int(bias.ty.shape.values[0]) == int(out.ty.shape.values[-1])


def _linear():
    root = _op("matmul")(wildcard(), is_const())
    return root, {"root": root}


def _scaled(x):
    return _any(_op("multiply")(x, is_const()), _op("divide")(x, is_const()), x)


def _attention_matmul():
    """Activation x activation matmul (QK^T or AV) with optional constant scalings."""
    mm = _op("matmul")(_scaled(wildcard()), _scaled(wildcard()))
    root = _scaled(mm)
    return root, {"root": root, "matmul": mm}


def _softmax_tail(x):
    """ONNX exporters guard softmax with ``where(isnan(p), 0, p)`` (fully masked rows)."""
    sm = _op("nn.softmax")(x)
    return _any(_op("where")(_op("isnan")(sm), is_const(), sm), sm)


def _masked_softmax():
    root = _softmax_tail(_op("add")(wildcard(), wildcard()))
    return root, {"root": root}


def _softmax():
    root = _softmax_tail(wildcard())
    return root, {"root": root}


def _gelu():
    x = wildcard()
    erf_arg = _any(_op("divide")(x, is_const()), _op("multiply")(x, is_const()))
    erf_half = _op("add")(_op("erf")(erf_arg), is_const())
    erf_forms = [
        _op("multiply")(x, _op("multiply")(is_const(), erf_half)),
        _op("multiply")(x, _op("multiply")(erf_half, is_const())),
        _op("multiply")(_op("multiply")(x, is_const()), erf_half),
        _op("multiply")(_op("multiply")(x, erf_half), is_const()),
    ]
    cube = _op("multiply")(_op("power")(x, is_const()), is_const())
    tanh_half = _op("add")(_op("tanh")(_op("multiply")(_op("add")(x, cube), is_const())), is_const())
    tanh_forms = [
        _op("multiply")(_op("multiply")(x, is_const()), tanh_half),
        _op("multiply")(x, _op("multiply")(is_const(), tanh_half)),
        _op("multiply")(_op("multiply")(x, tanh_half), is_const()),
    ]
    root = _any(_op("nn.gelu")(x), _op("nn.gelu_tanh")(x), *erf_forms, *tanh_forms)
    return root, {"root": root}


def _head_split():
    root = _op("permute_dims")(_op("reshape")(wildcard(), wildcard()))
    return root, {"root": root}


def _head_merge():
    root = _op("reshape")(_op("permute_dims")(wildcard()), wildcard())
    return root, {"root": root}


def _layer_norm():
    root = _op("nn.layer_norm")(wildcard(), wildcard(), wildcard())
    return root, {"root": root}


def llm_pattern_table() -> list[PatternEntry]:
    """In priority order: larger and more specific patterns first."""
    return [
        PatternEntry("attention", _attention(7), static_shapes),  # with merge_row (decode)
        PatternEntry("attention", _attention(4), static_shapes),
        PatternEntry("attention", _attention(3), static_shapes),
        PatternEntry("embedding", _embedding, static_shapes),
        PatternEntry("gelu", _gelu, static_shapes),
        PatternEntry("masked_softmax", _masked_softmax, static_shapes),
        PatternEntry("softmax", _softmax, static_shapes),
        PatternEntry("linear", _linear_bias, _linear_bias_check),
        PatternEntry("linear", _linear, static_shapes),
        PatternEntry("attention_matmul", _attention_matmul, static_shapes),
        PatternEntry("layer_norm", _layer_norm, static_shapes),
        PatternEntry("head_split", _head_split, static_shapes),
        PatternEntry("head_merge", _head_merge, static_shapes),
    ]
