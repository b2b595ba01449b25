"""Rewrite exporters' multi-head attention into one ``vitis_spatial.attention`` operator.

What is matched, starting from each ``matmul(P, V')`` (the context matmul):

* ``P`` is ``softmax(x, axis=-1)``, or that guarded by ``where(isnan(p), c, p)``;
* ``x`` is the scores, or ``scores + mask`` (either operand order, any mask that
  broadcasts), the scores ``matmul(Q', K')`` with optional constant scalar scalings of
  each operand and of the product;
* ``Q'``, ``K'``, ``V'`` are chains of reshapes and transposes of token-major tensors
  ``[1.., tokens, hidden]``, and the context's only user chain of them ends in one; or
  ``K'`` and ``V'`` both of head-major ones ``[1.., heads, tokens, dim]`` (a decode step's
  K and V as its in-place cache update returns them: the operator's ``kv_heads``).

Why the index check: exporters spell the head split and merge differently (GPT2 exports
K transposed through a reshape to ``[heads, tokens, dim]`` and back). Rather than listing
spellings, each view chain is replayed on an index array (numpy), and the rewrite happens
only when ``Q'[h, i, e]`` is element ``(i, h*D + e)`` of its source, ``K'[h, e, j]`` is
``(j, h*D + e)`` (``V'[h, j, d]`` likewise) and the output's ``(i, h*D + d)`` is the
context's ``[h, i, d]`` (head-major: ``K'[h, e, j]`` is ``[h, j, e]`` of its source, ``V'``
is its source). A constant mask that hides every later key (GPT2's causal mask)
marks the operator ``causal``. Anything else (quantized attention, a KV cache concatenation, a
layout the operator does not read) is left as it was.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from codegen_hls.attention_kernel import attention, head_major, token_major

_VIEWS = frozenset({"relax.reshape", "relax.permute_dims"})


def _op_name(value) -> str:
    return value.op.name if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) else ""


def _shape(expr) -> list[int] | None:
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    try:
        return [int(d) for d in ty.shape.values]
    except TypeError:
        return None


def _scalar(expr) -> float | None:
    if isinstance(expr, tvm.ir.GenericConst) and expr.value.numpy().size == 1:
        return float(expr.value.numpy().reshape(()))
    return None


def _apply_view(index: np.ndarray, call: relax.Call) -> np.ndarray:
    if _op_name(call) == "relax.reshape":
        return index.reshape(_shape(call))
    axes = call.attrs.axes
    return index.transpose(None if axes is None else [int(a) for a in axes])


class _Graph:
    """The bindings of one function: what each variable is bound to, and who uses it."""

    def __init__(self, func: relax.Function) -> None:
        self.value: dict = {}
        self.users: dict = {}
        for block in func.body.blocks:
            for binding in block.bindings:
                if not isinstance(binding, relax.VarBinding):
                    continue
                self.value[binding.var] = binding.value
                for arg in getattr(binding.value, "args", ()):
                    if isinstance(arg, relax.Var):
                        self.users.setdefault(arg, []).append(binding.var)
        for out in _outputs(func.body.body):
            self.users.setdefault(out, []).append(None)  # the function's result: a user outside

    def call(self, expr, *names) -> relax.Call | None:
        value = self.value.get(expr) if isinstance(expr, relax.Var) else None
        return value if _op_name(value) in names else None

    def scaled(self, expr):
        """(inner, (factor, divide) or None): peel one constant scalar multiply/divide."""
        call = self.call(expr, "relax.multiply", "relax.divide")
        if call is not None:
            factor = _scalar(call.args[1])
            if factor is not None:
                return call.args[0], (factor, _op_name(call) == "relax.divide")
            if _op_name(call) == "relax.multiply" and _scalar(call.args[0]) is not None:
                return call.args[1], (_scalar(call.args[0]), False)
        return expr, None

    def _farthest(self, expr, fits) -> relax.Expr | None:
        """The farthest tensor up the view chain ending in ``expr`` (the chain may be empty)
        for which ``fits(shape, index, chain)`` holds, ``index`` being its element numbers
        replayed through the chain to ``expr``'s shape."""
        chain, found, node = [], None, expr
        while True:
            shape = _shape(node)
            if shape is not None:
                index = np.arange(int(np.prod(shape))).reshape(shape)
                for call in reversed(chain):
                    index = _apply_view(index, call)
                if fits(shape, index, chain):
                    found = node
            call = self.call(node, *_VIEWS)
            if call is None:
                return found
            chain.append(call)
            node = call.args[0]

    def source(self, expr, layout) -> relax.Expr | None:
        """The farthest token-major tensor that the view chain ending in ``expr`` reads, with
        ``layout(index of expr, hidden)`` holding."""
        return self._farthest(expr, lambda shape, index, chain: bool(chain) and token_major(shape)
                              and layout(index, shape[-1]))

    def head_source(self, expr, heads: int, width: int, transposed: bool) -> relax.Expr | None:
        """The farthest head-major tensor ``[1.., heads, tokens, width]`` that the view chain
        ending in ``expr`` reads as ``[h, j, e]`` (``transposed``: ``expr`` is ``[h, e, j]``
        of it)."""
        def fits(shape, index, _chain) -> bool:
            if not head_major(shape, heads, width) or token_major(shape):
                return False
            want = np.arange(index.size).reshape(heads, shape[-2], width)
            want = want.transpose(0, 2, 1) if transposed else want
            return np.array_equal(index.reshape(want.shape), want)

        return self._farthest(expr, fits)

    def merged(self, context) -> relax.Var | None:
        """The end of the context's view chain where it is token-major again."""
        shape = _shape(context)
        heads, tq, width = int(np.prod(shape[:-2])), shape[-2], shape[-1]
        index = np.arange(int(np.prod(shape))).reshape(shape)
        node, found = context, None
        while len(self.users.get(node, [])) == 1:
            user = self.users[node][0]
            call = self.call(user, *_VIEWS)
            if call is None:
                break
            index = _apply_view(index, call)
            node = user
            out = _shape(node)
            if token_major(out) and out[-2:] == [tq, heads * width]:
                want = np.arange(heads * tq * width).reshape(heads, tq, width).transpose(1, 0, 2)
                if np.array_equal(index.reshape(tq, heads * width), want.reshape(tq, heads * width)):
                    found = node
        return found


def _outputs(expr) -> list:
    if isinstance(expr, relax.Var):
        return [expr]
    if isinstance(expr, relax.Tuple):
        return [v for f in expr.fields for v in _outputs(f)]
    return []


def _head_layout(heads: int, width: int, transposed: bool):
    """Whether an index array of a head view reads element (t, h*width + e) of its source."""
    def check(index: np.ndarray, hidden: int) -> bool:
        if hidden != heads * width or index.size % hidden:
            return False
        tokens = index.size // hidden
        h, t, e = np.meshgrid(np.arange(heads), np.arange(tokens), np.arange(width), indexing="ij")
        want = t * hidden + h * width + e  # [heads, tokens, width]
        if transposed:
            want = want.transpose(0, 2, 1)
        return index.size == want.size and np.array_equal(index.reshape(want.shape), want)
    return check


def _match(graph: _Graph, context_var):
    """The attention ending at ``context_var = matmul(P, V')``: (output var, call) or None."""
    ctx = graph.value[context_var]
    probs, v_view = ctx.args
    if _op_name(ctx) != "relax.matmul":
        return None
    guard = None
    where = graph.call(probs, "relax.where")
    if where is not None:
        isnan = graph.call(where.args[0], "relax.isnan")
        guard = _scalar(where.args[1])
        if isnan is None or guard is None or not isnan.args[0].same_as(where.args[2]):
            return None
        probs = where.args[2]
    softmax = graph.call(probs, "relax.nn.softmax")
    if softmax is None or int(softmax.attrs.axis) not in (-1, len(_shape(probs)) - 1):
        return None
    logits, mask = softmax.args[0], None
    add = graph.call(logits, "relax.add")
    if add is not None:
        for i in (0, 1):
            inner, _ = graph.scaled(add.args[i])
            if graph.call(inner, "relax.matmul") is not None:
                logits, mask = add.args[i], add.args[1 - i]
                break
        else:
            return None
    scores_var, s_scale = graph.scaled(logits)
    scores = graph.call(scores_var, "relax.matmul")
    if scores is None:
        return None
    (q_view, q_scale), (k_view, k_scale) = (graph.scaled(a) for a in scores.args)
    q_shape, k_shape, v_shape = _shape(q_view), _shape(k_view), _shape(v_view)
    if None in (q_shape, k_shape, v_shape) or len(q_shape) < 3 or len(k_shape) < 3 or len(v_shape) < 3:
        return None
    heads, width = int(np.prod(q_shape[:-2])), q_shape[-1]
    if int(np.prod(k_shape[:-2])) != heads or int(np.prod(v_shape[:-2])) != heads or v_shape[-1] != width:
        return None
    q = graph.source(q_view, _head_layout(heads, width, False))
    k = graph.source(k_view, _head_layout(heads, width, True))
    v = graph.source(v_view, _head_layout(heads, width, False))
    kv_heads = k is None and v is None
    if kv_heads:  # a decode step's K and V, head-major as its cache holds them
        k = graph.head_source(k_view, heads, width, transposed=True)
        v = graph.head_source(v_view, heads, width, transposed=False)
    out = graph.merged(context_var)
    if q is None or k is None or v is None or out is None:
        return None
    dtypes = {str(e.ty.dtype) for e in (q, k, v, *([mask] if mask is not None else []))}
    if len(dtypes) != 1 or not next(iter(dtypes)).startswith("float"):
        return None
    scales = {w: s for w, s in (("q", q_scale), ("k", k_scale), ("s", s_scale)) if s is not None}
    try:
        call = attention(q, k, v, mask, heads=heads, out_rank=len(_shape(out)), scales=scales, guard=guard,
                         causal=_causal(mask), kv_heads=kv_heads)
        relax.BlockBuilder().normalize(call)  # its type checks: a mask that does not broadcast fails here
    except (ValueError, tvm.error.TVMError):
        return None
    return out, call


# a masked logit at or below this is exactly 0 after softmax, whatever the finite score
# added to it (exp underflows to 0 below -104; scores of finite fp32 q.k stay far above)
HARD_MASK = -1e30


def _causal(mask) -> bool:
    """A constant mask that hides every later key from each query ([.., T, T], values at
    most ``HARD_MASK`` above the diagonal): the codegen may then compute each query block
    before later keys arrive (``codegen_hls.attention_kernel``)."""
    if not isinstance(mask, tvm.ir.GenericConst):
        return False
    m = mask.value.numpy()
    if m.ndim < 2 or m.shape[-1] != m.shape[-2] or m.shape[-1] < 2:
        return False
    later = np.triu(np.ones(m.shape[-2:], dtype=bool), 1)
    return bool(np.all(m[..., later] <= HARD_MASK))


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def __init__(self, mod, replace: dict) -> None:
        super().__init__(mod)
        self.replace = replace

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        if binding.var in self.replace:
            call = self.replace[binding.var]
            new = relax.Call(call.op, [self.visit_expr(a) for a in call.args], call.attrs)
            if isinstance(binding.var, relax.DataflowVar) or not self.builder_.current_block_is_dataflow():
                var = self.builder_.emit(new, binding.var.name)
            else:  # the dataflow block's output
                var = self.builder_.emit_output(new, binding.var.name)
            self.set_var_remap(binding.var, var)
            return
        super().visit_var_binding_(binding)


def fuse_attention(mod: tvm.IRModule) -> tvm.IRModule:
    """Every matched attention of ``mod["main"]`` becomes one operator (module docstring)."""
    func = mod["main"]
    graph = _Graph(func)
    replace = {}
    for var, value in graph.value.items():
        if _op_name(value) == "relax.matmul":
            found = _match(graph, var)
            if found is not None:
                replace[found[0]] = found[1]
    if not replace:
        return mod
    new = _Rewriter(mod, replace).visit_expr(func)
    mod = tvm.IRModule(dict(mod.functions.items()), attrs=mod.attrs, global_infos=mod.global_infos)
    mod["main"] = new
    return relax.transform.DeadCodeElimination(["main"])(mod)
