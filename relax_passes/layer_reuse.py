"""Outline a run of identical layers into one function called once per layer.

Why: a spatial design that lays out every layer of a transformer side by side has a
pipeline as long as the model (GPT2-small: over 130 processes) and re-reads weights that
do not fit on chip once per token block. One layer's hardware, called once per layer with
that layer's weights, is how Allo's and Chen et al.'s GPT2 designs reach their rooflines.

Where: after ``FuseOpsByPattern`` (which already gives every layer's matching operator the
same composite function) and before ``MergeCompositeFunctions``, so the outlined
function's composites become one region, one Vitis kernel, that the host calls per layer.

What counts as a layer: a run of ``N >= 2`` consecutive repeats of ``p`` bindings of
``main``'s dataflow block that call the same functions in the same order, and whose
dataflow is the same in every repeat. A value a repeat reads from outside itself is
either *carried* (repeat ``r`` reads what repeat ``r - 1`` computed at one position; repeat
0 reads a value from before the run) or *shared* (the same value in every repeat: an
input of ``main``, or a value computed before the run, such as an attention mask).
Tensor constants (weights, biases, masks) become parameters: each call passes its own;
so does a 0-d constant that differs between repeats (a quantized layer's activation
scale, or the layer index a decode step's in-place cache update writes at: ``kv_inplace``
gives every layer's update of one cache the same composite, so the cache is a shared
input and the index an argument of each call), while one with the same value in every
repeat that its operator folds into a literal (a GELU's 0.5) stays in the layer. Hence this runs before
``scalar_constants.bind_scalar_constants``, which would otherwise give every quantized
layer's operators functions of their own.
The run covering the most bindings wins; on a tie, the shorter repeat.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
import tvm_ffi
from tvm import relax

from .scalar_constants import is_scalar_constant, uses_fold_into_literals

CALLS_ATTR = "vitis_spatial.calls"  # on a region: how many times one inference calls it
LAYER_FUNCTION = "vitis_spatial_layer"
MIN_REPEAT = 2  # bindings: a single composite is not worth a function of its own


@dataclass(frozen=True)
class Run:
    start: int
    period: int
    count: int

    def index(self, repeat: int, position: int) -> int:
        return self.start + repeat * self.period + position


def _shape_key(ty) -> tuple:
    return (str(ty.dtype), tuple(int(d) for d in ty.shape.values)) if isinstance(ty, relax.TensorType) else (str(ty),)


def _loose(binding) -> tuple | None:
    """What a binding computes (its callee or operator with its attributes, the kinds of its
    arguments, its result type), without where its inputs come from."""
    value = binding.value
    result = _shape_key(binding.var.ty)
    if isinstance(value, relax.TupleGetItem):
        return ("item", value.index, result)
    if not isinstance(value, relax.Call):
        return None
    if isinstance(value.op, tvm.ir.GlobalVar):
        op = ("call", value.op.name_hint)
    else:
        op = (str(getattr(value.op, "name", value.op)),
              tvm_ffi.structural_hash(value.attrs) if value.attrs is not None else 0)
    kinds = tuple(("const", _shape_key(a.ty)) if isinstance(a, tvm.ir.GenericConst) else ("var",) for a in value.args)
    return (op, kinds, result)


def _args(value) -> list:
    if isinstance(value, relax.TupleGetItem):
        return [value.tuple_value]
    if isinstance(value, relax.Call):
        return list(value.args)
    if isinstance(value, relax.Tuple):
        return list(value.fields)
    return [value]


@dataclass
class _Plan:
    """A run checked against the rules in the module docstring: where each repeat's inputs
    come from and which of its values leave it."""

    run: Run
    carried: dict  # position in the previous repeat -> repeat 0's value there (initial)
    shared: list  # values read unchanged by every repeat
    outputs: tuple[int, ...]  # positions whose values leave their repeat

    @property
    def covered(self) -> int:
        return self.run.count * self.run.period


def _check(bindings, run: Run, tail_uses) -> _Plan | None:
    """The plan for ``run`` if every repeat has the same dataflow, else None."""
    where = {b.var: i for i, b in enumerate(bindings)}
    carried: dict = {}
    shared: list = []
    for k in range(run.period):
        slots = list(zip(*(_args(bindings[run.index(r, k)].value) for r in range(run.count))))
        for refs in slots:  # one argument of binding k, in every repeat
            if isinstance(refs[0], tvm.ir.GenericConst):
                continue  # a parameter of the layer: each call passes its own
            if not isinstance(refs[0], relax.Var):  # a shape, a literal: the same in all, kept inline
                if all(tvm_ffi.structural_equal(v, refs[0]) for v in refs):
                    continue
                return None
            rel = [where[v] - run.index(r, 0) if v in where else None for r, v in enumerate(refs)]
            if rel[0] is not None and rel[0] >= 0:  # inside the repeat: the same place in all
                if any(x != rel[0] for x in rel):
                    return None
            elif all(v.same_as(refs[0]) for v in refs):  # shared
                if refs[0] not in shared:
                    shared.append(refs[0])
            else:  # carried: repeat r >= 1 reads position q of repeat r - 1
                q = None if rel[1] is None else rel[1] + run.period
                if q is None or not 0 <= q < run.period:
                    return None
                if any(x is None or x + run.period != q for x in rel[1:]):
                    return None
                if q in carried and not carried[q].same_as(refs[0]):
                    return None
                carried[q] = refs[0]
    outputs = set(carried)
    end = run.index(run.count, 0)
    later = {a for b in bindings[end:] for a in _args(b.value)} | set(tail_uses)
    for r in range(run.count):
        for k in range(run.period):
            if bindings[run.index(r, k)].var in later:
                outputs.add(k)
    return _Plan(run, carried, shared, tuple(sorted(outputs)))


def find_layers(bindings, tail_uses) -> _Plan | None:
    """The run of identical repeats covering the most bindings (see the module docstring)."""
    sigs = [_loose(b) for b in bindings]
    n = len(sigs)
    best: _Plan | None = None
    for period in range(MIN_REPEAT, n // 2 + 1):
        start = 0
        while start + 2 * period <= n:
            if None in sigs[start:start + period]:
                start += 1
                continue
            count = 1
            while (start + (count + 1) * period <= n
                   and sigs[start + count * period:start + (count + 1) * period] == sigs[start:start + period]):
                count += 1
            covered = count * period
            if count >= 2 and (best is None or covered > best.covered):
                for c in range(count, 1, -1):
                    if c * period <= (best.covered if best else 0):
                        break
                    plan = _check(bindings, Run(start, period, c), tail_uses)
                    if plan is not None:
                        best = plan
                        break
            start += 1
    return best


def _orders(bindings) -> list[list]:
    """Candidate orders of the bindings: for each binding that reads no other (a root),
    everything that does not depend on it first, then the rest, each in its order. Why:
    an exporter may compute a value every layer shares (BERT's extended attention mask)
    in the middle of the first layer; with the embedding as the root, the mask moves
    before the layers and their bindings line up."""
    parents = {b.var: [a for a in _args(b.value) if isinstance(a, relax.Var)] for b in bindings}
    orders = [bindings]
    for root in (b.var for b in bindings if not any(p in parents for p in parents[b.var])):
        on = {root}
        for b in bindings:
            if any(p in on for p in parents[b.var]):
                on.add(b.var)
        order = [b for b in bindings if b.var not in on] + [b for b in bindings if b.var in on]
        if order != bindings:
            orders.append(order)
    return orders


def _rebuild(value, env: dict):
    def sub(x):
        return env.get(x, x) if isinstance(x, relax.Var) else x

    if isinstance(value, relax.TupleGetItem):
        return relax.TupleGetItem(sub(value.tuple_value), value.index)
    if isinstance(value, relax.Call):
        return relax.Call(value.op, [sub(a) for a in value.args], value.attrs, value.ty_args)
    if isinstance(value, relax.Tuple):
        return relax.Tuple([sub(f) for f in value.fields])
    return sub(value)


def _same_literal_in_every_repeat(mod: tvm.IRModule, bindings, run: Run, k: int, a: int) -> bool:
    """Argument ``a`` of position ``k`` is a 0-d constant of one value in every repeat, of a
    composite that folds it into a literal (``scalar_constants``): a GELU's 0.5 stays a
    literal in the layer; a per-layer quantization scale becomes a parameter of each call."""
    first = bindings[run.index(0, k)].value
    if not (isinstance(first, relax.Call) and isinstance(first.op, tvm.ir.GlobalVar)):
        return False
    value = first.args[a]
    if not is_scalar_constant(value):
        return False
    func = mod[first.op]
    if not (isinstance(func, relax.Function) and uses_fold_into_literals(func, func.params[a])):
        return False
    return all(_same_scalar(value, bindings[run.index(r, k)].value.args[a]) for r in range(1, run.count))


def _same_scalar(a, b) -> bool:
    """Two 0-d constants of one type and one value (bit for bit)."""
    return (is_scalar_constant(b) and str(a.ty.dtype) == str(b.ty.dtype)
            and a.value.numpy().tobytes() == b.value.numpy().tobytes())


def outline_layers(mod: tvm.IRModule) -> tvm.IRModule:
    """``main`` with its longest run of identical layers outlined (unchanged if none)."""
    main = mod["main"]
    body = main.body
    if len(body.blocks) != 1 or not isinstance(body.blocks[0], relax.DataflowBlock):
        return mod
    if any(not isinstance(b, relax.VarBinding) for b in body.blocks[0].bindings):
        return mod
    best = None
    results = set(relax.analysis.free_vars(body.body))  # what main returns
    for order in _orders(list(body.blocks[0].bindings)):
        found = find_layers(order, results)
        if found is not None and (best is None or found.covered > best[1].covered):
            best = (order, found)
    if best is None:
        return mod
    bindings, plan = best
    run = plan.run
    bb = relax.BlockBuilder(mod)

    # the layer: inputs (carried, then shared), then each repeat's constants in order; a
    # scalar the same in every repeat stays in the layer, to become a literal (inlined)
    inlined = {(k, a) for k in range(run.period)
               for a, arg in enumerate(_args(bindings[run.index(0, k)].value))
               if _same_literal_in_every_repeat(mod, bindings, run, k, a)}
    const_slots = [(k, a) for k in range(run.period)
                   for a, arg in enumerate(_args(bindings[run.index(0, k)].value))
                   if isinstance(arg, tvm.ir.GenericConst) and (k, a) not in inlined]
    carried = sorted(plan.carried.items())
    ins = [v for _, v in carried] + list(plan.shared)
    # an input of main keeps its name: it names the kernel's port (a decode step's
    # ``past_key`` is found by it: tvm_spatial.estimate.workload)
    main_inputs = {p for p in main.params}
    in_params = [relax.Var(v.name if v in main_inputs else f"x{i}", v.ty) for i, v in enumerate(ins)]
    const_params = [relax.Var(f"w{i}", bindings[run.index(0, k)].value.args[a].ty)
                    for i, (k, a) in enumerate(const_slots)]
    with bb.function(LAYER_FUNCTION, in_params + const_params, {CALLS_ATTR: run.count}, private=True):
        with bb.dataflow():
            env = dict(zip(ins, in_params))
            slot_param = dict(zip(const_slots, const_params))
            for k in range(run.period):
                value = bindings[run.index(0, k)].value
                if isinstance(value, relax.Call):
                    args = [slot_param.get((k, a), arg) for a, arg in enumerate(value.args)]
                    value = relax.Call(value.op, args, value.attrs, value.ty_args)
                env[bindings[run.index(0, k)].var] = bb.emit(_rebuild(value, env))
            outs = [env[bindings[run.index(0, k)].var] for k in plan.outputs]
            result = bb.emit_output(outs[0] if len(outs) == 1 else relax.Tuple(outs))
        bb.emit_func_output(result)
    layer_gv = bb.get().get_global_var(LAYER_FUNCTION)

    with bb.function("__vitis_spatial_main", main.params):
        with bb.dataflow():
            env: dict = {}

            def emit(var, value):  # main's results leave the dataflow block
                return bb.emit(value) if isinstance(var, relax.DataflowVar) else bb.emit_output(value)

            for b in bindings[:run.start]:
                env[b.var] = emit(b.var, _rebuild(b.value, env))
            state = {pos: env.get(v, v) for pos, v in carried}
            for r in range(run.count):
                args = [state[pos] for pos, _ in carried] + [env.get(v, v) for v in plan.shared]
                args += [bindings[run.index(r, k)].value.args[a] for k, a in const_slots]
                vars_out = [bindings[run.index(r, k)].var for k in plan.outputs]
                leaves = any(not isinstance(v, relax.DataflowVar) for v in vars_out)
                call = (bb.emit_output if leaves else bb.emit)(relax.Call(layer_gv, args))
                got = {}
                for i, (k, var) in enumerate(zip(plan.outputs, vars_out)):
                    got[k] = call if len(plan.outputs) == 1 else emit(var, relax.TupleGetItem(call, i))
                    env[var] = got[k]
                state = {pos: got[pos] for pos, _ in carried}
            for b in bindings[run.index(run.count, 0):]:
                env[b.var] = emit(b.var, _rebuild(b.value, env))
            result = _rebuild(body.body, env)
        bb.emit_func_output(result)
    built = bb.get()
    temp = built.get_global_var("__vitis_spatial_main")
    new_main = built[temp]
    new_main = relax.Function(new_main.params, new_main.body, new_main.ret_ty, main.is_pure, main.attrs)
    functions = {gv: f for gv, f in built.functions.items() if not gv.same_as(temp)}
    functions[built.get_global_var("main")] = new_main
    out = tvm.IRModule(functions, attrs=mod.attrs, global_infos=mod.global_infos)
    return relax.transform.Normalize()(out)


def merge_regions(mod: tvm.IRModule) -> tvm.IRModule:
    """``MergeCompositeFunctions`` on ``main`` and on the outlined layer.

    Why not once on the module: TVM 0.27's pass groups only ``main`` and then fails on the
    composites of any other function ("could not be found in any group"). So each
    function goes through it alone, as the ``main`` of a module that holds it and the
    composites it calls, and the regions it makes are collected."""
    merge = relax.transform.MergeCompositeFunctions()
    if not any(gv.name_hint == LAYER_FUNCTION for gv in mod.get_global_vars()):
        return merge(mod)
    composites = {gv: f for gv, f in mod.functions.items()
                  if isinstance(f, relax.Function) and f.attrs and "Composite" in f.attrs}
    out: dict = {gv: f for gv, f in mod.functions.items() if gv not in composites}
    names = {gv.name_hint for gv in out}
    layer = mod.get_global_var(LAYER_FUNCTION)
    for gv in (layer, mod.get_global_var("main")):  # the layer first: main calls it
        # main's pass sees the layer as an opaque callee (the attribute makes it skip it)
        done = {} if gv.same_as(layer) else {
            layer: out[layer].with_attr("Codegen", "opaque"),
            **{g: f for g, f in out.items() if f.attrs and "Codegen" in f.attrs}}
        alone = tvm.IRModule({tvm.ir.GlobalVar("main"): mod[gv], **composites, **done})
        merged = merge(alone)
        renamed = None
        for sub_gv, func in merged.functions.items():
            if sub_gv.name_hint == "main":
                out[gv] = func
            elif func.attrs and func.attrs.get("Codegen") == "opaque":  # the pass renamed it
                renamed = sub_gv
            elif func.attrs and "Codegen" in func.attrs and sub_gv not in done:
                if sub_gv.name_hint in names:
                    raise ValueError(f"two regions are named {sub_gv.name_hint}")
                names.add(sub_gv.name_hint)
                calls = mod[gv].attrs.get(CALLS_ATTR) if mod[gv].attrs else None
                out[sub_gv] = func.with_attr(CALLS_ATTR, calls) if calls else func
        if renamed is not None:
            out[gv] = _Callee(merged, renamed, layer).rewrite(out[gv])
    return tvm.IRModule(out, attrs=mod.attrs, global_infos=mod.global_infos)


@relax.expr_functor.mutator
class _Callee(relax.PyExprMutator):
    """Calls of one function redirected to another of the same signature."""

    def __init__(self, mod, old, new) -> None:
        super().__init__(mod)
        self.old, self.new = old, new

    def rewrite(self, func: relax.Function) -> relax.Function:
        body = self.visit_expr(func.body)
        return relax.Function(func.params, body, func.ret_ty, func.is_pure, func.attrs, func.span)

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if call.op.same_as(self.old):
            return relax.Call(self.new, call.args, call.attrs, call.ty_args)
        return call


def reuses_layers(mod: tvm.IRModule) -> bool:
    """Whether partitioning outlined a layer (some region is called more than once)."""
    return any(isinstance(f, relax.Function) and f.attrs and int(f.attrs.get(CALLS_ATTR, 1)) > 1
               for f in mod.functions.values())
