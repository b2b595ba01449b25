"""Name operators whose role depends on their neighbours.

A matmul of two activations is QK^T (``attention_scores``) unless its left operand is a
softmax's output, then it is ``attention_context`` (AV). An addition of two activations
of the same shape is a ``residual_add``; the partitioner counts those to tell layers
apart. Runs between ``FuseOpsByPattern`` and ``MergeCompositeFunctions``, renaming each
composite function (one per matched instance).
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import relax

from .patterns import CODEGEN

_SOFTMAXES = ("masked_softmax", "softmax")


def _composite(mod: tvm.IRModule, expr) -> str | None:
    if isinstance(expr, relax.Call) and isinstance(expr.op, relax.GlobalVar):
        func = mod[expr.op]
        if isinstance(func, relax.Function) and func.attrs and "Composite" in func.attrs:
            return str(func.attrs["Composite"]).split(".", 1)[-1]
    return None


def _is_activation(expr) -> bool:
    return not isinstance(expr, tvm.ir.GenericConst)


def _adds_two_activations(composite: relax.Function, call_args) -> bool:
    """The composite's ``add`` takes two distinct non-constant tensors of one shape."""
    add = composite.body.blocks[0].bindings[-1].value if composite.body.blocks else None
    if not isinstance(add, relax.Call) or len(add.args) != 2:
        return False
    outside = dict(zip(composite.params, call_args))
    a, b = (outside.get(arg) for arg in add.args)
    if a is None or b is None or a.same_as(b) or not (_is_activation(a) and _is_activation(b)):
        return False
    ta, tb = a.ty, b.ty
    if not (isinstance(ta, relax.TensorType) and isinstance(tb, relax.TensorType)):
        return False
    return bool(tvm_ffi.structural_equal(ta.shape, tb.shape))


def name_roles(mod: tvm.IRModule) -> tvm.IRModule:
    renames: dict = {}
    for gv, func in mod.functions.items():
        if not isinstance(func, relax.Function) or (func.attrs and "Composite" in func.attrs):
            continue
        producers: dict = {}
        for block in func.body.blocks:
            for binding in block.bindings:
                value = binding.value
                name = _composite(mod, value)
                producers[binding.var] = name
                if name == "attention_matmul":
                    left = value.args[0]
                    role = "attention_context" if producers.get(left) in _SOFTMAXES else "attention_scores"
                    renames[value.op] = role
                elif name == "add" and _adds_two_activations(mod[value.op], value.args):
                    renames[value.op] = "residual_add"
    for gv, role in renames.items():
        mod[gv] = mod[gv].with_attr("Composite", f"{CODEGEN}.{role}")
    return mod
