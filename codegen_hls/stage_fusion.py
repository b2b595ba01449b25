"""One loop nest for a chain of element-wise stages of one process.

Why: a composite operator such as GELU's erf or tanh expansion legalizes into one TIR
function per Relax operator (multiply, erf, add, multiply, ...). Printed as they are, the
process runs one pass per stage and keeps an array for every intermediate: for a
GPT2-small GELU in blocks of 8 tokens that is four 24,576-element arrays (24 URAM) and
five passes over the block. Fused, it is one pass and no array.

How: TVM's own fusion (``AnnotateTIROpPattern``, ``FuseOps``, ``FuseTIR``) merges the
stages into one PrimFunc, then every intermediate sblock that computes element by element
is inlined into its consumer (``compute_inline``: the same expression substituted, so the
arithmetic and its order do not change). Reductions (layer norm's mean) stay sblocks of
their own. Operators with a matmul are left alone: their matmul stage must remain the
plain matmul that the MAC-array schedule recognizes (``codegen_hls.library``).
"""

from __future__ import annotations

import tvm
from tvm import relax, s_tir, tirx

from .attention_kernel import ATTENTION
from .quant_kernels import W4A8_MATMUL

_KEEP = frozenset({"relax.matmul", W4A8_MATMUL, ATTENTION})
_FUSE = tvm.transform.Sequential([
    relax.transform.AnnotateTIROpPattern(),
    relax.transform.FuseOps(),
    relax.transform.FuseTIR(),
    relax.transform.DeadCodeElimination(),
])


def fusible(fn: relax.Function) -> bool:
    """Whether fusing ``fn``'s stages may change its TIR: no matmul or attention in it."""
    return not _calls_kept(fn)


def _calls_kept(fn: relax.Function) -> bool:
    found = []

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name in _KEEP:
            found.append(expr)

    relax.analysis.post_order_visit(fn.body, visit)
    return bool(found)


def _inline_elementwise(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """Inline every sblock that writes an intermediate buffer element by element."""
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    changed = True
    while changed:
        changed = False
        for block in reversed(sch.get_child_blocks(sch.get_sblock("root"))):
            if any(w.source.same_as(p) for w in sch.get(block).writes for p in func.params):
                continue
            try:
                sch.compute_inline(block)
            except s_tir.ScheduleError:  # a reduction, or not element by element
                continue
            changed = True
            break
    return sch.mod["main"]


def fuse_stages(source: relax.Function, legal: tvm.IRModule) -> tvm.IRModule:
    """``legal`` (``source`` legalized, as ``main``) with its element-wise stages fused
    (module docstring); unchanged when ``source`` has a matmul or attention."""
    if not fusible(source):
        return legal
    fused = _FUSE(legal)
    for gv, func in list(fused.functions.items()):
        if isinstance(func, tirx.PrimFunc):
            fused[gv] = _inline_elementwise(func)
    return fused
