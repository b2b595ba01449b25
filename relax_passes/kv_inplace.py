"""Decode designs update their KV cache in place.

Why: a decode graph (``contrib.hf_export.build_kv_model``) returns its whole cache,
``present = stack_l(where(slots == position, new_l, past[l]))``. Offloaded as written,
the kernel reads every layer's cache, builds the whole present cache and writes it all
back each token. What changes per token is one row per layer, so:

- :func:`kv_inplace` (before matching) finds that pattern in ``main`` and turns each
  layer's ``where(onehot(position), new_l, take(past, l))`` into a call of the
  ``vitis_spatial.kv_update`` composite -- take, one-hot, where, exactly as before,
  computing the K (or V) attention reads -- whose offloaded process also writes
  ``new_l`` into row ``position`` of layer ``l`` of ``past`` (its port is ``inout``:
  ``codegen_hls.kernel``). ``main`` then returns ``past`` itself as ``present``.
- :func:`make_calls_inplace` (after the regions are formed) replaces ``main``'s call of
  each region that holds such composites by ``R.call_inplace_packed`` on the kernel:
  the region's ordinary outputs are passed as fresh buffers, and every written tensor --
  the caches it updates and those buffers -- comes back aliased, so the IR says that
  ``present_key`` *is* the mutated ``past_key``. (Between the two, ``main`` relies on the
  composite's write: ``partition_for_vitis_spatial`` always runs both.)

The kernel returns its written arguments in ascending argument order
(:func:`written_args`; ``codegen_hls.emulation.in_place_results`` follows the same
rule). The composite's parameters are always ``(cache, layer, new_row, position, slots)``
(:data:`KV_UPDATE_PARAMS`): the codegen reads its roles from that order.

:func:`merge_new_rows` (after the attention is fused) then turns an update whose only
reader is a decode attention into a ``kv_append`` -- it passes on its layer's slice as
it was, and writes the row -- and gives the attention the new rows and ``position`` to
merge (``codegen_hls.attention_kernel``, ``merge_row``). Why: the old slice does not
depend on this token, so the process streams it while the QKV linear computes the new
row; the update left the token's chain.

Hazard-free by construction: each (cache, layer) slice is touched by one process only,
which reads the slice (its ``take``) before it writes the one row; layers are distinct
constants, checked here. Every layer's update of one cache calls one composite (the
layer is its argument), so ``layer_reuse`` can outline a decode step's layers: the reused
layer's one update process then serves each layer in its own call, one after another.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from codegen_hls.attention_kernel import ATTENTION

from .patterns import CODEGEN

KV_UPDATE = "kv_update"
COMPOSITE = f"{CODEGEN}.{KV_UPDATE}"
KV_UPDATE_PARAMS = ("cache", "layer", "new_row", "position", "slots")
# the update whose attention merges the new row itself (merge_new_rows): it passes on the
# slice as it was and writes the row
KV_APPEND = "kv_append"
APPEND_COMPOSITE = f"{CODEGEN}.{KV_APPEND}"
KV_APPEND_PARAMS = ("cache", "layer", "new_row", "position")
IN_PLACE = (COMPOSITE, APPEND_COMPOSITE)  # the composites that write their cache


def _op_name(expr) -> str:
    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
        return expr.op.name
    return ""


def _const_ints(expr) -> list[int] | None:
    if isinstance(expr, tvm.ir.GenericConst) and "int" in str(expr.ty.dtype):
        return np.asarray(expr.value.numpy()).reshape(-1).tolist()
    return None


def _shape(expr) -> tuple[int, ...] | None:
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    dims = ty.shape.values
    if not all(isinstance(d, tvm.tirx.IntImm) for d in dims):
        return None
    return tuple(int(d.value) for d in dims)


@dataclass(frozen=True)
class _Layer:
    var: relax.Var  # bound to where(mask, new_row, take(cache, layer))
    new_row: relax.Expr
    slots: relax.Expr  # the constant arange the one-hot compares position with
    equal: relax.Call  # equal(slots, position) or equal(position, slots)
    mask_shape: tuple[int, ...]


@dataclass(frozen=True)
class CacheUpdate:
    """One cache ``main`` returns updated: output field ``output`` is built from
    parameter ``param``, one row per layer."""

    output: int
    param: int
    layers: tuple[_Layer, ...]


class _Bindings:
    def __init__(self, func: relax.Function) -> None:
        self.value: dict = {}
        for block in func.body.blocks:
            for binding in block.bindings:
                if isinstance(binding, relax.VarBinding):
                    self.value[binding.var] = binding.value

    def of(self, expr):
        """The value an expression names (following var-to-var bindings)."""
        seen = 0
        while isinstance(expr, relax.Var) and expr in self.value and seen < 64:
            expr = self.value[expr]
            seen += 1
        return expr


def _layer_update(b: _Bindings, var, params: dict, position) -> tuple[int, int, _Layer] | None:
    """``var`` = where(reshape(equal(arange, position)), new, take(param, l, axis=0)):
    (param index, l, the layer record); else None."""
    where = b.of(var)
    if _op_name(where) != "relax.where" or not isinstance(var, relax.Var):
        return None
    mask, new_row, past = where.args
    take = b.of(past)
    if _op_name(take) != "relax.take" or int(take.attrs.axis) != 0:
        return None
    cache = take.args[0]
    if not isinstance(cache, relax.Var) or cache not in params:
        return None
    layer = _const_ints(b.of(take.args[1]))
    if layer is None or len(layer) != 1 or len(_shape(take.args[1]) or ()) != 0:
        return None
    mask_call = b.of(mask)
    equal = b.of(mask_call.args[0]) if _op_name(mask_call) == "relax.reshape" else mask_call
    if _op_name(equal) != "relax.equal":
        return None
    a, c = equal.args
    slots, pos = (a, c) if c.same_as(position) else (c, a)
    if not pos.same_as(position):
        return None
    slot_values = _const_ints(b.of(slots))
    cache_shape = _shape(cache)
    if cache_shape is None or len(cache_shape) != 5 or cache_shape[1] != 1:
        return None
    layers, _, heads, context, head_dim = cache_shape
    if slot_values != list(range(context)) or _shape(position) != (1,):
        return None
    mask_shape = _shape(mask)
    if mask_shape not in ((1, 1, context, 1), (context, 1)) or _shape(new_row) != (1, heads, 1, head_dim):
        return None
    if _shape(var) != (1, heads, context, head_dim) or not 0 <= layer[0] < layers:
        return None
    return params[cache], layer[0], _Layer(var, new_row, b.of(slots), equal, mask_shape)


def _stacked(b: _Bindings, expr) -> list | None:
    """The per-layer tensors of concat(expand_dims(x_l, 0)...) or stack(x_l...) on axis 0."""
    value = b.of(expr)
    name = _op_name(value)
    if name not in ("relax.concat", "relax.stack") or int(value.attrs.axis) != 0:
        return None
    fields = b.of(value.args[0])
    if not isinstance(fields, relax.Tuple):
        return None
    if name == "relax.stack":
        return list(fields.fields)
    parts = []
    for field in fields.fields:
        item = b.of(field)
        if _op_name(item) == "relax.expand_dims" and [int(a) for a in item.attrs.axis] == [0]:
            parts.append(item.args[0])
        elif _op_name(item) == "relax.reshape" and _shape(item) == (1, *(_shape(item.args[0]) or ())):
            parts.append(item.args[0])
        else:
            return None
    return parts


def find_cache_updates(func: relax.Function) -> list[CacheUpdate]:
    """The outputs of ``func`` that are its cache parameters with one row written per
    layer (see the module docstring; the write slot is the input named ``position``, as
    in ``tvm_spatial.generate``); empty when the graph has another shape."""
    names = [p.name for p in func.params]
    if "position" not in names:
        return []
    position = func.params[names.index("position")]
    params = {p: i for i, p in enumerate(func.params)}
    b = _Bindings(func)
    result = b.of(func.body.body)
    if not isinstance(result, relax.Tuple):
        return []
    updates = []
    for index, field in enumerate(result.fields):
        parts = _stacked(b, field)
        if not parts:
            continue
        found = [_layer_update(b, part, params, position) for part in parts]
        if any(f is None for f in found):
            continue
        param = found[0][0]
        cache_shape = _shape(func.params[param])
        if any(f[0] != param for f in found) or [f[1] for f in found] != list(range(cache_shape[0])):
            continue
        if _shape(field) != cache_shape:
            continue
        updates.append(CacheUpdate(index, param, tuple(f[2] for f in found)))
    params_used = [u.param for u in updates]
    # each cache is updated once and read nowhere else: the rewrite then owns it
    return [u for u in updates if params_used.count(u.param) == 1 and _only_taken(func, u.param)]


def _only_taken(func: relax.Function, param: int) -> bool:
    """Every use of the parameter is a take (the per-layer reads) or a shape query."""
    var = func.params[param]
    ok = [True]

    def visit(expr):
        if isinstance(expr, relax.Call):
            if any(isinstance(a, relax.Var) and a.same_as(var) for a in expr.args):
                if _op_name(expr) not in ("relax.take", "relax.shape_of"):
                    ok[0] = False
        elif isinstance(expr, relax.Tuple):
            if any(isinstance(a, relax.Var) and a.same_as(var) for a in expr.fields):
                ok[0] = False

    relax.analysis.post_order_visit(func.body, visit)
    return ok[0]


def _kv_update_function(cache_ty, new_ty, position_ty, slots_ty, mask_shape, position_first: bool):
    """The composite: take + one-hot + where (what attention reads), offloaded in place."""
    cache = relax.Var("cache", cache_ty)
    layer = relax.Var("layer", relax.TensorType((), "int64"))
    new_row = relax.Var("new_row", new_ty)
    position = relax.Var("position", position_ty)
    slots = relax.Var("slots", slots_ty)
    bb = relax.BlockBuilder()
    with bb.function("kv_update", [cache, layer, new_row, position, slots], private=True):
        with bb.dataflow():
            past = bb.emit(relax.op.take(cache, layer, axis=0))
            hit = bb.emit(relax.op.equal(position, slots) if position_first else relax.op.equal(slots, position))
            mask = bb.emit(relax.op.reshape(hit, mask_shape))
            out = bb.emit_output(relax.op.where(mask, new_row, past))
        bb.emit_func_output(out)
    func = bb.get()["kv_update"]
    assert tuple(p.name for p in func.params) == KV_UPDATE_PARAMS
    return func.with_attrs({"Composite": COMPOSITE, "Primitive": True})


def _kv_append_function(cache_ty, new_ty, position_ty):
    """The composite of an update its attention merges: the take (the slice before this
    step's row), offloaded in place -- its process also writes ``new_row`` at ``position``."""
    cache = relax.Var("cache", cache_ty)
    layer = relax.Var("layer", relax.TensorType((), "int64"))
    new_row = relax.Var("new_row", new_ty)
    position = relax.Var("position", position_ty)
    bb = relax.BlockBuilder()
    with bb.function("kv_append", [cache, layer, new_row, position], private=True):
        with bb.dataflow():
            out = bb.emit_output(relax.op.take(cache, layer, axis=0))
        bb.emit_func_output(out)
    func = bb.get()["kv_append"]
    assert tuple(p.name for p in func.params) == KV_APPEND_PARAMS
    return func.with_attrs({"Composite": APPEND_COMPOSITE, "Primitive": True})


def _main(mod: tvm.IRModule) -> relax.Function | None:
    """The module's Relax ``main``, if it has one."""
    if "main" not in [gv.name_hint for gv in mod.get_global_vars()]:
        return None
    func = mod["main"]
    return func if isinstance(func, relax.Function) else None


def _composite_call(mod: tvm.IRModule, expr, name: str):
    """``expr`` if it calls a global composite function ``name``, else None."""
    if not isinstance(expr, relax.Call) or not isinstance(expr.op, relax.GlobalVar) or expr.op not in mod:
        return None
    target = mod[expr.op]
    return expr if target.attrs and target.attrs.get("Composite") == name else None


def merge_new_rows(mod: tvm.IRModule) -> tvm.IRModule:
    """A decode attention reading K and V from two ``kv_update`` composites, and nothing
    else reading them, merges the new rows itself: the updates become ``kv_append``
    composites and the attention takes ``merge_row`` (module docstring). Other modules
    come back unchanged."""
    func = _main(mod)
    if func is None:
        return mod
    b = _Bindings(func)
    uses: dict = {}

    def count(expr):
        if isinstance(expr, relax.Var):
            uses[expr] = uses.get(expr, 0) + 1

    relax.analysis.post_order_visit(func.body, count)
    bb = relax.BlockBuilder(mod)
    appends: dict = {}  # the update's composite -> its kv_append
    replace: dict = {}
    for var, value in b.value.items():
        if _op_name(value) != ATTENTION or len(value.args) != 4 or not int(value.attrs.get("kv_heads", 0)):
            continue
        _, k, v, _ = value.args
        updates = [_composite_call(mod, b.value.get(x), COMPOSITE) for x in (k, v)]
        if any(u is None for u in updates) or k.same_as(v) or uses.get(k) != 1 or uses.get(v) != 1:
            continue
        if not updates[0].args[3].same_as(updates[1].args[3]):  # one position
            continue
        for x, update in zip((k, v), updates):
            if update.op not in appends:
                cache, _, new_row, position, _ = update.args
                appends[update.op] = bb.add_func(_kv_append_function(cache.ty, new_row.ty, position.ty),
                                                 f"fused_kv_append_{cache.name}_{len(appends)}")
            replace[x] = relax.Call(appends[update.op], list(update.args[:4]))
        # the same call, every attribute kept, with the rows and their position appended
        attrs = {key: value.attrs[key] for key in value.attrs.keys()}
        merged = [updates[0].args[2], updates[1].args[2], updates[0].args[3]]
        replace[var] = relax.Call(value.op, [*value.args, *merged],
                                  tvm.ir.make_node("ir.DictAttrs", **attrs, merge_row=1))
    if not replace:
        return mod
    mod = bb.get()
    mod["main"] = _Rewriter(mod, replace, {}).rewrite(func)
    return relax.transform.DeadCodeElimination(["main"])(mod)


def kv_inplace(mod: tvm.IRModule) -> tvm.IRModule:
    """Rewrite ``main`` so its cache outputs are its cache inputs, updated by
    ``kv_update`` composites (module docstring). Other modules come back unchanged."""
    func = _main(mod)
    if func is None:
        return mod
    updates = find_cache_updates(func)
    if not updates:
        return mod
    position = next(p for p in func.params if p.name == "position")
    replace: dict = {}
    bb = relax.BlockBuilder(mod)
    for u in updates:
        cache = func.params[u.param]
        shared: dict = {}  # one composite per form: layer reuse then sees every layer's update as the same call
        for number, layer in enumerate(u.layers):
            position_first = layer.equal.args[0].same_as(position)
            form = (str(layer.new_row.ty), str(layer.slots.ty), layer.mask_shape, position_first)
            if form not in shared:
                composite = _kv_update_function(cache.ty, layer.new_row.ty, position.ty, layer.slots.ty,
                                                layer.mask_shape, position_first)
                shared[form] = bb.add_func(composite, f"fused_kv_update_{cache.name}_{len(shared)}")
            gv = shared[form]
            replace[layer.var] = relax.Call(
                gv, [cache, relax.const(number, "int64"), layer.new_row, position, layer.slots])
    outputs = {u.output: func.params[u.param] for u in updates}
    mod = bb.get()
    func = _Rewriter(mod, replace, outputs).rewrite(func)
    mod["main"] = func
    return relax.transform.DeadCodeElimination(["main"])(mod)


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    """Replaces the where bindings by composite calls and the cache outputs by the caches."""

    def __init__(self, mod, replace: dict, outputs: dict) -> None:
        super().__init__(mod)
        self.replace = replace
        self.outputs = outputs

    def rewrite(self, func: relax.Function) -> relax.Function:
        self.result = func.body.body
        body = self.visit_expr(func.body)
        return relax.Function(func.params, body, func.ret_ty, func.is_pure, func.attrs, func.span)

    def visit_var_binding_(self, binding) -> None:
        if binding.var in self.replace:
            call = self.replace[binding.var]
            value = relax.Call(call.op, [self.visit_expr(a) for a in call.args], call.attrs)
            self.builder_.emit_normalized(relax.VarBinding(binding.var, self.builder_.normalize(value)))
            return
        value = binding.value
        if isinstance(value, relax.Tuple) and binding.var.same_as(self.result):
            fields = [self.outputs.get(i, f) for i, f in enumerate(value.fields)]
            new = self.builder_.normalize(relax.Tuple([self.visit_expr(f) for f in fields]))
            self.builder_.emit_normalized(relax.VarBinding(binding.var, new))
            return
        super().visit_var_binding_(binding)


# ---- after the regions are formed ------------------------------------------------------


def updated_params(region: relax.Function, mod: tvm.IRModule) -> list[int]:
    """Indices of the region's parameters a ``kv_update`` or ``kv_append`` composite writes (its cache)."""
    params = {p: i for i, p in enumerate(region.params)}
    local = {}
    found: list[int] = []

    def visit(expr):
        if isinstance(expr, relax.Call):
            callee = expr.op
            target = local.get(callee) if isinstance(callee, relax.Var) else None
            if target is None and isinstance(callee, relax.GlobalVar) and callee in mod:
                target = mod[callee]
            if target is None and isinstance(callee, relax.Function):
                target = callee
            if isinstance(target, relax.Function) and target.attrs and target.attrs.get("Composite") in IN_PLACE:
                cache = expr.args[0]
                if isinstance(cache, relax.Var) and cache in params and params[cache] not in found:
                    found.append(params[cache])

    for block in region.body.blocks:
        for binding in block.bindings:
            if isinstance(binding.value, relax.Function):
                local[binding.var] = binding.value
    relax.analysis.post_order_visit(region.body, visit)
    return sorted(found)


def written_args(num_params: int, updated: list[int], num_outputs: int) -> list[int]:
    """The kernel's written arguments in ascending order -- what it returns: the updated
    parameters, then one fresh buffer per ordinary output (appended after the params)."""
    return sorted(updated) + [num_params + k for k in range(num_outputs)]


def make_calls_inplace(mod: tvm.IRModule) -> tvm.IRModule:
    """Call every region that updates a parameter through ``R.call_inplace_packed``."""
    regions = {
        gv: func for gv, func in mod.functions.items()
        if isinstance(func, relax.Function) and func.attrs and func.attrs.get("Codegen") == CODEGEN
    }
    inplace = {gv: updated_params(func, mod) for gv, func in regions.items()}
    inplace = {gv: idx for gv, idx in inplace.items() if idx}
    if not inplace:
        return mod
    for gv, func in list(mod.functions.items()):
        if isinstance(func, relax.Function) and not (func.attrs and func.attrs.get("Codegen")):
            if any(_calls(func, g) for g in inplace):
                mod[gv] = _InplaceCalls(mod, inplace).rewrite(func)
    return mod


def _calls(func: relax.Function, gv) -> bool:
    found = [False]

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, relax.GlobalVar) and expr.op.same_as(gv):
            found[0] = True

    relax.analysis.post_order_visit(func.body, visit)
    return found[0]


@relax.expr_functor.mutator
class _InplaceCalls(relax.PyExprMutator):
    def __init__(self, mod, inplace: dict) -> None:
        super().__init__(mod)
        self.mod = mod
        self.inplace = inplace
        self.aliased: dict = {}  # a caller's tensor the kernel updated -> the call's alias of it

    def visit_var_(self, var):
        if var in self.aliased:
            return self.aliased[var]
        return super().visit_var_(var)

    def rewrite(self, func: relax.Function) -> relax.Function:
        body = self.visit_expr(func.body)
        return relax.Function(func.params, body, func.ret_ty, func.is_pure, func.attrs, func.span)

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if not isinstance(call.op, relax.GlobalVar) or call.op not in self.inplace:
            return call
        region = self.mod[call.op]
        updated = self.inplace[call.op]
        ret = region.ret_ty
        outputs = list(ret.fields) if isinstance(ret, relax.TupleType) else [ret]
        buffers = []
        for ty in outputs:
            if not isinstance(ty, relax.TensorType):
                return call
            buffers.append(self.builder_.emit(
                relax.op.builtin.alloc_tensor(ty.shape, str(ty.dtype), 0), "kv_out"))
        args = list(call.args) + buffers
        written = written_args(len(call.args), updated, len(outputs))
        types = [args[i].ty for i in written]
        symbol = str(region.attrs["global_symbol"])
        packed = self.builder_.emit(
            relax.op.call_inplace_packed(symbol, *args, inplace_indices=written, ty_args=types), "kv_step")
        for index in updated:
            if isinstance(call.args[index], relax.Var):  # later uses read the updated tensor
                self.aliased[call.args[index]] = self.builder_.emit(
                    relax.TupleGetItem(packed, written.index(index)), "kv_updated")
        # The region stays called once, unused: RunCodegen compiles every offloaded function but
        # strips (and so drops) only the ones it replaces a call of; its DeadCodeElimination
        # then removes this binding, a pure call whose value nothing reads.
        self.builder_.emit(relax.Call(call.op, call.args), "kv_codegen_anchor")
        fields = [relax.TupleGetItem(packed, written.index(len(call.args) + k)) for k in range(len(outputs))]
        result = relax.Tuple(fields) if isinstance(ret, relax.TupleType) else fields[0]
        return self.builder_.normalize(result)
