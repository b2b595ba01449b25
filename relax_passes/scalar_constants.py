"""Bind scalar constants into the matched operators that use them.

Why: the partitioner keeps constants out of the offloaded regions so that weights become
kernel ports in HBM. A 0-d constant such as the ``3.0`` of ``power(x, 3.0)`` or the
``0.5`` of GELU is not a weight, though: as a port it costs an m_axi read, and the kernel
cannot see its value, so ``power`` becomes a ``powf`` call per element instead of two
multiplies. Bound inside the operator, TVM's legalization turns it into a literal of the
generated TIR (for the binary elementwise operators listed below, which are the ones
whose legalization does so), and the HLS is both cheaper and faster to emulate.
"""

from __future__ import annotations

import tvm
from tvm import relax

# Relax operators whose legalization folds a 0-d constant operand into the TIR as a literal
# (tvm/relax/transform/legalize_ops/binary.py: ``_try_convert_to_scalar_const``).
_FOLDS_SCALAR_OPERAND = frozenset(
    f"relax.{name}"
    for name in (
        "add", "subtract", "multiply", "divide", "power", "floor_divide", "mod", "floor_mod",
        "maximum", "minimum", "equal", "not_equal", "greater", "greater_equal", "less", "less_equal",
    )
)


def is_scalar_constant(expr) -> bool:
    return isinstance(expr, tvm.ir.GenericConst) and len(expr.ty.shape) == 0


def uses_fold_into_literals(func: relax.Function, param: relax.Var) -> bool:
    """Every use of ``param`` is an operand of an operator that folds it into a literal,
    and never both operands of one call (legalization then folds only one of them)."""
    ok = [True]

    def visit(expr):
        if isinstance(expr, relax.Call):
            uses = sum(1 for arg in expr.args if isinstance(arg, relax.Var) and arg.same_as(param))
            if uses and (
                not isinstance(expr.op, tvm.ir.Op) or expr.op.name not in _FOLDS_SCALAR_OPERAND or uses > 1
                or any(is_scalar_constant(arg) for arg in expr.args)
            ):
                ok[0] = False
        elif isinstance(expr, (relax.Tuple,)) and any(
            isinstance(f, relax.Var) and f.same_as(param) for f in expr.fields
        ):
            ok[0] = False
        elif isinstance(expr, relax.Function) and expr.body.body.same_as(param):
            ok[0] = False

    relax.analysis.post_order_visit(func.body, visit)
    return ok[0]


def bind_scalar_constants(mod: tvm.IRModule) -> tvm.IRModule:
    """Move 0-d constant arguments of composite-function calls into the composites
    (see the module docstring). A composite called from several places (FuseOpsByPattern
    shares one function among identical matches, e.g. every layer's GELU) gets a bound copy
    per distinct set of constants."""
    composites = {
        gv: func
        for gv, func in mod.functions.items()
        if isinstance(func, relax.Function) and func.attrs and "Composite" in func.attrs
    }
    if not composites:
        return mod
    calls: dict = {}

    def count(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.GlobalVar) and expr.op in composites:
            calls[expr.op] = calls.get(expr.op, 0) + 1

    callers = [gv for gv, f in mod.functions.items() if isinstance(f, relax.Function) and gv not in composites]
    for gv in callers:
        relax.analysis.post_order_visit(mod[gv].body, count)

    @relax.expr_functor.mutator
    class _Binder(relax.PyExprMutator):
        def visit_call_(self, call):  # noqa: N802 - TVM's visitor naming
            call = super().visit_call_(call)
            gv = call.op
            if not (isinstance(gv, tvm.ir.GlobalVar) and gv in composites):
                return call
            func = composites[gv]
            bound = {
                param: arg
                for param, arg in zip(func.params, call.args)
                if is_scalar_constant(arg) and uses_fold_into_literals(func, param)
            }
            if not bound:
                return call
            replaced[gv] = replaced.get(gv, 0) + 1
            # add_func shares one function among structurally equal bindings
            new_gv = self.builder_.add_func(func.bind_params(bound), gv.name_hint)
            kept = [arg for param, arg in zip(func.params, call.args) if param not in bound]
            return relax.Call(new_gv, kept, call.attrs, call.ty_args)

    replaced: dict = {}
    binder = _Binder(mod)
    for gv in callers:
        binder.builder_.update_func(gv, binder.visit_expr(mod[gv]))
    result = binder.builder_.get()
    for gv, bound_calls in replaced.items():
        if bound_calls == calls[gv]:  # no call of the unbound function is left
            del result[gv]
    return result
