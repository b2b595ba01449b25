"""Patterns of the quantized operators that ``relax_passes/quantize.py`` writes.

Each quantized matmul is one dataflow process: the activation quantization in front of
it, the integer matmul, and the dequantization (and the bias, for a linear layer) after
it. The composites keep the names of their float counterparts (``linear``,
``attention_matmul``, which ``relax_passes/roles.py`` renames to ``attention_scores`` /
``attention_context``), so layer accounting and the analytical model treat them alike;
the dtypes in their HLS signatures (int8, ``ap_int``) tell them apart. These entries come
before the float ones (``relax_passes/patterns.py``) so that the integer matmul is not
matched alone.

The activation quantization is exactly ``astype(clip(round(x / scale), -127, 127), int8)``
(``round`` is half-to-even); see ``relax_passes/quantize.py`` for the scheme.
"""

from __future__ import annotations

from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard

from codegen_hls.quant_kernels import W4A8_MATMUL, register_ops

from .patterns import PatternEntry, static_shapes


def _op(name):
    return is_op(name if name.startswith("relax.vitis") else f"relax.{name}")


def _any(*patterns):
    result = patterns[0]
    for p in patterns[1:]:
        result = result | p
    return result


def _scaled(x):
    return _any(_op("multiply")(x, is_const()), _op("divide")(x, is_const()), x)


def quantized(x):
    """The activation quantization the pass writes in front of an integer matmul."""
    return _op("astype")(_op("clip")(_op("round")(_op("divide")(x, is_const())), wildcard(), wildcard()))


def _dequantized(mm):
    return _op("multiply")(_op("astype")(mm), is_const())


def _qlinear():
    register_ops()
    q = quantized(wildcard())
    mm = _any(_op("matmul")(q, is_const()), _op(W4A8_MATMUL)(q, is_const()))
    deq = _dequantized(mm)
    # a W4A8 layer of odd width computes one padded output more and drops it here
    out = _any(_op("strided_slice")(deq, varg_default_wildcard=True), deq)
    bias = is_const()
    root = _any(_op("add")(out, bias), out)
    return root, {"root": root, "matmul": mm, "dequantized": deq, "out": out, "bias": bias}


def _qlinear_check(ctx) -> bool:
    if not static_shapes(ctx):
        return False
    root, bias = ctx.annotated_expr["root"], ctx.annotated_expr.get("bias")
    if bias is not None and isinstance(root, relax.Call) and root.op.name == "relax.add":
        out = ctx.annotated_expr["out"]
        if not isinstance(bias.ty, relax.TensorType) or bias.ty.ndim != 1:
            return False
        return int(bias.ty.shape.values[0]) == int(out.ty.shape.values[-1])
    return True


def _qattention_matmul():
    mm = _op("matmul")(quantized(_scaled(wildcard())), quantized(_scaled(wildcard())))
    root = _scaled(_dequantized(mm))
    return root, {"root": root, "matmul": mm}


def quant_pattern_table() -> list[PatternEntry]:
    return [
        PatternEntry("linear", _qlinear, _qlinear_check),
        PatternEntry("attention_matmul", _qattention_matmul, static_shapes),
    ]
