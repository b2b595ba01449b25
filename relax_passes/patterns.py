"""The pattern table of the ``vitis_spatial`` codegen.

A new operator is one entry here (plus, if its legalized TIR uses an intrinsic the
printer lacks, one line in ``codegen_hls/printer.py``) and a test in
``tests/test_operators.py``. Entries are declarative: a name, a pattern builder, and a
check. Multi-operator patterns (``llm_patterns``: linear = matmul + bias, GELU
expansions, masked softmax, ...) come first so that they win over their parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import tvm
from tvm import relax
from tvm.relax.dpl import DFPattern, is_op, wildcard

from codegen_hls.c_types import c_type
from tvm_spatial.errors import SpatialError

CODEGEN = "vitis_spatial"


@dataclass(frozen=True)
class PatternEntry:
    """``name`` is the operator's name in reports; the composite is ``vitis_spatial.<name>``."""

    name: str
    build: Callable[[], tuple[DFPattern, dict]]
    check: Callable[[relax.transform.PatternCheckContext], bool]

    @property
    def composite(self) -> str:
        return f"{CODEGEN}.{self.name}"


def _is_static_tensor(ty) -> bool:
    if isinstance(ty, relax.TupleType):
        return all(_is_static_tensor(t) for t in ty.fields)
    if isinstance(ty, relax.ShapeType):
        return True
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return False
    try:
        c_type(str(ty.dtype))
    except SpatialError:
        return False
    return all(isinstance(d, tvm.tirx.IntImm) for d in ty.shape.values)


def static_shapes(ctx: relax.transform.PatternCheckContext) -> bool:
    """Offload only what has static shapes and HLS-expressible dtypes."""
    for expr in [ctx.matched_expr, *ctx.annotated_expr.values()]:
        if not _is_static_tensor(expr.ty):
            return False
    return True


def _single(op: str, arity: int | tuple[int, ...]):
    """One operator with any of the given argument counts (e.g. optional strides)."""
    arities = (arity,) if isinstance(arity, int) else arity

    def build():
        alternatives = [is_op(f"relax.{op}")(*[wildcard() for _ in range(n)]) for n in arities]
        root = alternatives[0]
        for alt in alternatives[1:]:
            root = root | alt
        return root, {"root": root}

    return build


# (relax op name without "relax.", number(s) of arguments the pattern matches)
SINGLE_OPS: tuple[tuple[str, int | tuple[int, ...]], ...] = (
    ("matmul", 2),
    ("add", 2),
    ("subtract", 2),
    ("multiply", 2),
    ("divide", 2),
    ("floor_divide", 2),
    ("floor_mod", 2),
    ("power", 2),
    ("maximum", 2),
    ("minimum", 2),
    ("nn.relu", 1),
    ("nn.gelu", 1),
    ("nn.gelu_tanh", 1),
    ("nn.silu", 1),
    ("sigmoid", 1),
    ("tanh", 1),
    ("exp", 1),
    ("erf", 1),
    ("sqrt", 1),
    ("rsqrt", 1),
    ("negative", 1),
    ("abs", 1),
    ("log", 1),
    ("sin", 1),
    ("cos", 1),
    ("floor", 1),
    ("ceil", 1),
    ("nn.softmax", 1),
    ("nn.log_softmax", 1),
    ("nn.layer_norm", 3),
    ("nn.rms_norm", 2),
    ("mean", 1),
    ("sum", 1),
    ("max", 1),
    ("min", 1),
    ("variance", 1),
    ("astype", 1),
    ("reshape", 2),
    ("permute_dims", 1),
    ("expand_dims", 1),
    ("squeeze", 1),
    ("broadcast_to", 2),
    ("concat", 1),
    ("stack", 1),
    ("split", 1),
    ("strided_slice", (4, 5)),
    ("take", 2),
    ("gather_elements", 2),
    ("gather_nd", 2),
    ("isnan", 1),
    ("isinf", 1),
    ("isfinite", 1),
    ("logical_and", 2),
    ("logical_or", 2),
    ("logical_not", 1),
    ("where", 3),
    ("less", 2),
    ("greater", 2),
    ("equal", 2),
    ("not_equal", 2),
    ("greater_equal", 2),
    ("less_equal", 2),
    ("bitwise_and", 2),
    ("bitwise_or", 2),
    ("bitwise_xor", 2),
    ("clip", 3),
)


def pattern_table() -> list[PatternEntry]:
    """Quantized matmuls (:mod:`relax_passes.quant_patterns`), transformer operators
    (:mod:`relax_passes.llm_patterns`), then single ops."""
    from .llm_patterns import llm_pattern_table
    from .quant_patterns import quant_pattern_table

    entries = quant_pattern_table() + llm_pattern_table()  # quantized matmuls before their parts
    for op, arity in SINGLE_OPS:
        entries.append(PatternEntry(op.replace("nn.", ""), _single(op, arity), static_shapes))
    return entries


def fuse_patterns() -> list[tuple]:
    """The table in the tuple form ``FuseOpsByPattern`` takes."""
    result = []
    for entry in pattern_table():
        pattern, annotations = entry.build()
        result.append((entry.composite, pattern, annotations, entry.check))
    return result


def supported_operators() -> tuple[str, ...]:
    return tuple(f"relax.{op}" for op, _ in SINGLE_OPS)
