"""Split a causal prefill's token rows into chunks: the graph of token-parallel engines.

Why: a prefill built as one layer's pipeline called per layer, with the LM head in a
region of its own, keeps every array idle while another region runs, and cannot pass
about half of the card's DSP rate (docs/model_validation.md). Split by tokens, each chunk
computes the whole model for its own rows -- every layer, then its rows of the logits --
so one chunk's hardware (an SLR's engine: ``codegen_hls.engine``) serves every linear,
the LM head included (``tvm_spatial.estimate.token_parallel`` prices it).

What makes it exact: every operator of a transformer but the attention works row by row,
and a causal attention's query reads only its own and earlier tokens' K and V. So chunk
``c`` computes its rows of every tensor from its rows of the operands, and its attention
reads the K and V rows of chunks ``0..c`` (concatenated) under its rows of the constant
mask. Data only flows from a chunk to later ones: the chunks' processes form a dataflow.

How the token axis is followed: from the inputs (their axis as long as the sequence)
through each operator by its semantics -- broadcasting element-wise operators, a
reshape that keeps the elements before and after the axis, ``take`` (an embedding),
``matmul`` with a token-free right operand, a layer norm over other axes, a split along
another axis, the fused attention. A constant aligned with the token axis (a position
embedding) is sliced with it. Anything else -- an operator that mixes tokens, a
bidirectional attention, a mask that is not a constant -- raises :class:`TokenSplitError`
naming it, and the caller keeps the graph as it was.

The chunks are emitted one after another (all of chunk 0, then chunk 1, ...); the
function's results are the chunks' rows concatenated.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from codegen_hls.attention_kernel import ATTENTION
from tvm_spatial.errors import TokenSplitError

_ELEMENTWISE = frozenset({
    "relax.add", "relax.subtract", "relax.multiply", "relax.divide", "relax.power", "relax.maximum",
    "relax.minimum", "relax.less", "relax.greater", "relax.less_equal", "relax.greater_equal", "relax.equal",
    "relax.not_equal", "relax.where", "relax.tanh", "relax.exp", "relax.sqrt", "relax.rsqrt", "relax.erf",
    "relax.sigmoid", "relax.negative", "relax.abs", "relax.astype", "relax.nn.gelu", "relax.nn.gelu_tanh",
    "relax.nn.relu", "relax.nn.silu", "relax.clip", "relax.floor", "relax.ceil", "relax.isnan",
    "relax.logical_and", "relax.logical_or", "relax.logical_not", "relax.floor_divide", "relax.floor_mod",
})


def _shape(expr) -> list[int]:
    ty = expr.ty
    if isinstance(ty, relax.TensorType) and ty.shape is not None:
        try:
            return [int(d) for d in ty.shape.values]
        except TypeError:
            pass
    raise TokenSplitError(f"{expr} has no static tensor shape")


def _op(value) -> str:
    return value.op.name if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) else ""


SOFTMAX_LANES = 16  # the most lanes a chunk's attention rows take (one stream transfer of fp32)


def lane_friendly_sizes(tokens: int, count: int, lanes: int = SOFTMAX_LANES) -> list[int]:
    """``count`` chunk sizes, none above an even split's largest by more than one token,
    whose ends -- the keys each chunk's attention rows span -- divide into the most lanes.

    Why: the codegen gives a loop over ``n`` elements the largest divisor of ``n`` not above
    its lanes (``codegen_hls.lanes``). GPT2-small's 128 tokens split evenly as 43 / 43 / 42
    left the first two engines' softmax rows of 43 and 86 keys at one and two lanes, 8 %
    of their time; 42 / 42 / 44 gives 14, 14 and 16. Among equals: the most even split, then
    the one whose later chunks (more keys each) are smaller."""
    from codegen_hls.lanes import largest_divisor  # the codegen's rule

    if not 1 <= count <= tokens:
        raise TokenSplitError(f"{count} chunks of {tokens} tokens: need 1 to {tokens}")
    cap = -(-tokens // count) + 1
    best = None

    def visit(sizes: list[int]) -> None:
        nonlocal best
        left = tokens - sum(sizes)
        if len(sizes) == count - 1:
            if not 1 <= left <= cap:
                return
            sizes = [*sizes, left]
            ends = np.cumsum(sizes)
            row = max(int(e) // largest_divisor(int(e), lanes) for e in ends)
            key = (row, max(sizes) - min(sizes), sizes[::-1])
            if best is None or key < best[0]:
                best = (key, sizes)
            return
        for size in range(1, min(cap, left - (count - 1 - len(sizes))) + 1):
            if abs(size - tokens / count) <= 2:
                visit([*sizes, size])

    visit([])
    if best is None:  # too few tokens for the +-2 window: as even as it divides
        base, extra = divmod(tokens, count)
        return [base + (1 if i < extra else 0) for i in range(count)]
    return best[1]


def chunk_bounds(tokens: int, chunks) -> tuple[tuple[int, int], ...]:
    """``[start, end)`` of each chunk: ``chunks`` as a count (:func:`lane_friendly_sizes`)
    or as the sizes of the chunks in order."""
    sizes = list(chunks) if isinstance(chunks, (list, tuple)) else None
    if sizes is None:
        sizes = lane_friendly_sizes(tokens, int(chunks))
    if sum(sizes) != tokens or min(sizes) < 1:
        raise TokenSplitError(f"chunk sizes {sizes} do not cover {tokens} tokens")
    bounds, start = [], 0
    for size in sizes:
        bounds.append((start, start + size))
        start += size
    return tuple(bounds)


def _reshaped_axis(old: list[int], axis: int, new: list[int]) -> int | None:
    """The axis of ``new`` that is ``old``'s ``axis`` under a row-major reshape: the same
    extent with the same number of elements before it."""
    before = int(np.prod(old[:axis]))
    for i, extent in enumerate(new):
        if extent == old[axis] and int(np.prod(new[:i])) == before:
            return i
    return None


class _Split:
    def __init__(self, func: relax.Function, chunks) -> None:
        self.func = func
        self.tokens = self._tokens()
        self.bounds = chunk_bounds(self.tokens, chunks)
        self.axis: dict = {}  # var -> its token axis (None: token-free)

    def _tokens(self) -> int:
        """The sequence's length: its attentions' query rows (each must be causal: a
        bidirectional one reads every token's K and V, so no chunk could go first)."""
        attentions = [b for b in self._bindings() if _op(b.value) == ATTENTION]
        if not attentions:
            raise TokenSplitError("no fused attention: nothing tells the sequence's length")
        for binding in attentions:
            self._attention_axis(binding.var.name, binding.value, None)
        return _shape(attentions[0].value.args[0])[-2]

    def _bindings(self):
        for block in self.func.body.blocks:
            yield from block.bindings

    # ---- which axis carries the tokens --------------------------------------
    def analyse(self) -> None:
        for param in self.func.params:
            shape = _shape(param)
            hits = [i for i, d in enumerate(shape) if d == self.tokens]
            self.axis[param] = hits[-1] if hits else None
        for binding in self._bindings():
            if not isinstance(binding, relax.VarBinding):
                raise TokenSplitError(f"binding {binding.var.name} is not a plain binding")
            self.axis[binding.var] = self._axis_of(binding.var, binding.value)

    def _arg_axis(self, arg):
        return self.axis.get(arg) if isinstance(arg, relax.Var) else None

    def _axis_of(self, var, value):
        name = var.name
        if isinstance(value, relax.TupleGetItem):
            return self._arg_axis(value.tuple_value)
        if isinstance(value, relax.Var):
            return self._arg_axis(value)
        if not isinstance(value, relax.Call):
            raise TokenSplitError(f"{name}: {type(value).__name__} is not an operator call")
        op = _op(value)
        axes = [self._arg_axis(a) for a in value.args]
        if all(a is None for a in axes) and op != ATTENTION:
            return None  # on constants alone (the caller folds those)
        if op in _ELEMENTWISE:
            rank = len(_shape(var))
            out = {a + rank - len(_shape(arg)) for arg, a in zip(value.args, axes) if a is not None}
            if len(out) != 1:
                raise TokenSplitError(f"{name} ({op}): its operands' token axes do not line up")
            return out.pop()
        if op == "relax.reshape":
            found = _reshaped_axis(_shape(value.args[0]), axes[0], _shape(var))
            if found is None:
                raise TokenSplitError(f"{name}: the reshape mixes the token axis with others")
            return found
        if op == "relax.permute_dims":
            order = value.attrs.axes
            order = list(range(len(_shape(var))))[::-1] if order is None else [int(a) for a in order]
            return order.index(axes[0])
        if op == "relax.take":
            if axes[0] is not None:
                raise TokenSplitError(f"{name}: take gathers along the token axis")
            return int(value.attrs.axis) + axes[1]
        if op == "relax.matmul":
            if axes[1] is not None or axes[0] >= len(_shape(value.args[0])) - 1:
                raise TokenSplitError(f"{name}: a matmul that mixes tokens (not a linear layer)")
            return axes[0] + len(_shape(var)) - len(_shape(value.args[0]))
        if op in ("relax.nn.layer_norm", "relax.nn.rms_norm"):
            rank = len(_shape(value.args[0]))
            if any(int(a) % rank == axes[0] for a in value.attrs.axes):
                raise TokenSplitError(f"{name}: the normalization is over the token axis")
            return axes[0]
        if op == "relax.split":
            if int(value.attrs.axis) % len(_shape(value.args[0])) == axes[0]:
                raise TokenSplitError(f"{name}: split along the token axis")
            return axes[0]
        if op == ATTENTION:
            return self._attention_axis(name, value, axes)
        raise TokenSplitError(f"{name}: operator {op or type(value.op).__name__} is not known to work row by row")

    def _attention_axis(self, name, value, axes):
        attrs = value.attrs
        if not int(attrs.get("causal", 0)):
            raise TokenSplitError(f"{name}: the attention is not causal, so a chunk would read later tokens' K and V")
        if int(attrs.get("kv_heads", 0)) or int(attrs.get("merge_row", 0)):
            raise TokenSplitError(f"{name}: an attention over a KV cache (a decode step) is not a prefill")
        for arg, axis in zip(value.args[:3], (axes or [])[:3]):
            if axis != len(_shape(arg)) - 2:
                raise TokenSplitError(f"{name}: q, k and v must be token-major")
        if len(value.args) > 3 and not isinstance(value.args[3], tvm.ir.GenericConst):
            raise TokenSplitError(f"{name}: its mask is not a constant")
        return int(attrs["out_rank"]) - 2

    # ---- the chunks ------------------------------------------------------------
    def rewrite(self) -> relax.Function:
        self.analyse()
        bb = relax.BlockBuilder()
        params = [relax.Var(p.name, p.ty) for p in self.func.params]
        attrs = {key: self.func.attrs[key] for key in self.func.attrs.keys()} if self.func.attrs else {}
        with bb.function("main", params, attrs=attrs):
            with bb.dataflow():
                shared = dict(zip(self.func.params, params))  # token-free values, once
                parts: dict = {}  # token values: one expression per chunk
                for old, new in zip(self.func.params, params):
                    axis = self.axis[old]
                    if axis is not None:
                        parts[old] = [bb.emit(relax.op.strided_slice(new, [axis], [a], [b]), f"{old.name}_c{c}")
                                      for c, (a, b) in enumerate(self.bounds)]
                bindings = list(self._bindings())
                for binding in bindings:
                    if self.axis[binding.var] is None:
                        shared[binding.var] = bb.emit(self._rebuild(binding.value, shared, {}),
                                                      binding.var.name)
                for c in range(len(self.bounds)):
                    for binding in bindings:
                        if self.axis[binding.var] is not None:
                            expr = self._chunk(binding, c, shared, parts)
                            parts.setdefault(binding.var, []).append(bb.emit(expr, f"{binding.var.name}_c{c}"))
                # each chunk's rows of a result leave the dataflow block as they are: the
                # design writes them through ports of their own (nothing gathers them on chip)
                result = self._result(self.func.body.body, shared, {v: [bb.emit_output(p) for p in ps]
                                                                    for v, ps in parts.items()
                                                                    if self._returned(v)})
            # ... and the host puts them together (a copy of the outputs, as reading them is)
            bb.emit_func_output(bb.emit(result) if not isinstance(result, relax.Var) else result)
        return bb.get()["main"]

    def _returned(self, var) -> bool:
        body = self.func.body.body
        return any(var.same_as(f) for f in (body.fields if isinstance(body, relax.Tuple) else [body]))

    def _result(self, expr, shared, parts):
        if isinstance(expr, relax.Tuple):
            return relax.Tuple([self._result(f, shared, parts) for f in expr.fields])
        if expr in parts:
            pieces = parts[expr]
            return relax.op.concat(pieces, axis=self.axis[expr]) if len(pieces) > 1 else pieces[0]
        return shared.get(expr, expr)

    def _rebuild(self, value, shared, chunk_args):
        """``value`` with its variables replaced: token ones by their chunk's (in
        ``chunk_args``), the others by their rewritten selves."""
        def arg(a):
            if isinstance(a, relax.Var):
                return chunk_args.get(a, shared.get(a, a))
            return a

        if isinstance(value, relax.TupleGetItem):
            return relax.TupleGetItem(arg(value.tuple_value), value.index)
        if isinstance(value, relax.Var):
            return arg(value)
        return relax.Call(value.op, [arg(a) for a in value.args], value.attrs, value.ty_args)

    def _chunk(self, binding, c, shared, parts):
        value = binding.value
        start, end = self.bounds[c]
        chunk_args = {a: parts[a][c] for a in getattr(value, "args", ()) if isinstance(a, relax.Var) and a in parts}
        if isinstance(value, relax.TupleGetItem):
            return relax.TupleGetItem(parts[value.tuple_value][c], value.index)
        if isinstance(value, relax.Var):
            return parts[value][c]
        op = _op(value)
        axis = self.axis[binding.var]
        if op == ATTENTION:
            return self._chunk_attention(value, c, parts)
        if op == "relax.reshape":
            shape = _shape(binding.var)
            shape[axis] = end - start
            return relax.op.reshape(chunk_args[value.args[0]], shape)
        if op in _ELEMENTWISE:
            rank = len(_shape(binding.var))
            args = []
            for a in value.args:
                if isinstance(a, tvm.ir.GenericConst):
                    a = self._sliced_constant(a, axis - (rank - len(_shape(a))), start, end, binding.var.name)
                args.append(chunk_args.get(a, shared.get(a, a)) if isinstance(a, relax.Var) else a)
            return relax.Call(value.op, args, value.attrs, value.ty_args)
        return self._rebuild(value, shared, chunk_args)

    def _sliced_constant(self, const, axis: int, start: int, end: int, name: str):
        """A constant operand of an element-wise operator on chunk rows: its rows of the
        token axis when it has them (a position embedding), else itself (broadcast)."""
        data = const.value.numpy()
        if axis < 0 or data.shape[axis] == 1:
            return const
        if data.shape[axis] != self.tokens:
            raise TokenSplitError(f"{name}: a constant of shape {data.shape} does not line up with the tokens")
        index = [slice(None)] * data.ndim
        index[axis] = slice(start, end)
        return relax.const(np.ascontiguousarray(data[tuple(index)]), str(const.ty.dtype))

    def _chunk_attention(self, value, c, parts):
        start, end = self.bounds[c]
        q, k, v = (parts[a] for a in value.args[:3])
        keys = [relax.op.concat(side[:c + 1], axis=len(_shape(value.args[1])) - 2) if c else side[0]
                for side in (k, v)]
        args = [q[c], *keys]
        attrs = {key: value.attrs[key] for key in value.attrs.keys()}
        if len(value.args) > 3:  # its rows of the mask, over the keys up to its last row
            mask = value.args[3].value.numpy()
            index = [slice(None)] * mask.ndim
            if mask.shape[-2] != 1:
                index[-2] = slice(start, end)
            if mask.shape[-1] != 1:
                index[-1] = slice(0, end)
            args.append(relax.const(np.ascontiguousarray(mask[tuple(index)]), str(value.args[3].ty.dtype)))
        if c:  # its queries are not the first rows of its keys: the codegen's causal
            attrs.pop("causal", None)  # streaming (query block b after key blocks 0..b) does not apply
        return relax.Call(value.op, args, tvm.ir.make_node("ir.DictAttrs", **attrs))


CHUNKS_ATTR = "vitis_spatial.token_chunks"  # on a region: its processes are this many token chunks


def mark_chunked(mod: tvm.IRModule, chunks: int) -> tvm.IRModule:
    """Tell the codegen that every offloaded region computes ``chunks`` token chunks, each
    to become one engine (``codegen_hls.engine.chunk_runs``)."""
    from .patterns import CODEGEN

    out = tvm.IRModule(dict(mod.functions.items()), attrs=mod.attrs, global_infos=mod.global_infos)
    for gv, func in mod.functions.items():
        if isinstance(func, relax.Function) and func.attrs and func.attrs.get("Codegen") == CODEGEN:
            out[gv] = func.with_attr(CHUNKS_ATTR, int(chunks))
    return out


def split_tokens(mod: tvm.IRModule, chunks) -> tvm.IRModule:
    """``mod`` with ``main`` computed in token chunks (module docstring); ``chunks`` is a
    count or the chunks' sizes. Raises :class:`TokenSplitError` when it cannot be."""
    new = _Split(mod["main"], chunks).rewrite()
    out = tvm.IRModule(dict(mod.functions.items()), attrs=mod.attrs, global_infos=mod.global_infos)
    out["main"] = new
    return relax.transform.Normalize()(out)
