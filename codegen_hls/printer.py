"""TensorIR (schedulable ``s_tir`` form) -> one HLS C++ function.

Why print the schedulable form directly instead of lowering first: lowering drops
sblock annotations and flattens buffers, but HLS wants multi-dimensional arrays (so
``ARRAY_PARTITION dim=`` means something) and the schedule's annotations. The printer
handles the few constructs that form has: loops, sblocks (iterator bindings, predicates,
reduction init, local buffers), stores, conditionals and scalar expressions. Anything
else raises :class:`CodegenError` naming the construct.
"""

from __future__ import annotations

import re

import numpy as np
import tvm
import tvm_ffi
from tvm import s_tir, tirx
from tvm.sym import Analyzer

import tvm_spatial.annotations as ann  # the one definition of the HLS annotation keys
from tvm_spatial.errors import CodegenError

from .c_types import c_type, is_float
from .code_writer import CodeWriter

_C_KEYWORDS = frozenset(
    "auto break case char const continue default do double else enum extern float for goto if "
    "inline int long register restrict return short signed sizeof static struct switch typedef "
    "union unsigned void volatile while bool class delete new operator private protected public "
    "template this throw try catch namespace using virtual friend true false".split()
)

_BINARY = {
    tirx.Add: "+",
    tirx.Sub: "-",
    tirx.Mul: "*",
    tirx.EQ: "==",
    tirx.NE: "!=",
    tirx.LT: "<",
    tirx.LE: "<=",
    tirx.GT: ">",
    tirx.GE: ">=",
    tirx.And: "&&",
    tirx.Or: "||",
    tirx.BitwiseAnd: "&",
    tirx.BitwiseOr: "|",
    tirx.BitwiseXor: "^",
    tirx.LShift: "<<",
    tirx.RShift: ">>",
}

# TIR intrinsics with a direct <cmath> spelling (float overloads keep float32 in float),
# by name without the registry prefix (TVM spells some "tirx.x", others "prim.x").
_MATH = {
    "exp": "std::exp",
    "exp2": "std::exp2",
    "log": "std::log",
    "log2": "std::log2",
    "log1p": "std::log1p",
    "sqrt": "std::sqrt",
    "tanh": "tvs_tanh",  # the common header's, as erf
    "erf": "tvs_erf",  # the common header's (codegen_hls.kernel.common_header)
    "sin": "std::sin",
    "cos": "std::cos",
    "tan": "std::tan",
    "atan": "std::atan",
    "fabs": "std::fabs",
    "floor": "std::floor",
    "ceil": "std::ceil",
    "trunc": "std::trunc",
    "round": "std::nearbyint",
    "nearbyint": "std::nearbyint",
    "pow": "std::pow",
    "fmod": "std::fmod",
    "isnan": "std::isnan",
    "isinf": "std::isinf",
    "isfinite": "std::isfinite",
}


def dtype_of(expr) -> str:
    return str(expr.ty.dtype) if hasattr(expr.ty, "dtype") else str(expr.ty)


def buffer_shape(buffer_var) -> tuple[int, ...]:
    """Static shape of a buffer variable; symbolic dims are a codegen error."""
    dims = []
    for dim in buffer_var.ty.shape:
        if not isinstance(dim, tirx.IntImm):
            raise CodegenError(f"buffer {buffer_var.name} has a symbolic dimension {dim}")
        dims.append(int(dim.value))
    return tuple(dims)


def buffer_dtype(buffer_var) -> str:
    return str(buffer_var.ty.dtype)


def array_declarator(name: str, shape: tuple[int, ...]) -> str:
    """``name[d0][d1]``; a 0-d buffer is a one-element array so it can live in memory."""
    return name + "".join(f"[{d}]" for d in (shape or (1,)))


def shared_storage(func: tirx.PrimFunc) -> dict[str, str]:
    """Local buffer -> the local buffer whose array it takes (``hls.storage``, chains
    followed to their first buffer), where that holds: both allocated in the function,
    of one shape and type, and their partitions never two different ones of one dimension
    (the shared array takes them all). What the printer declares once and the model counts
    once (``codegen_hls.kernel`` scratch)."""
    wanted = ann.storage(func)
    if not wanted:
        return {}
    local = {}

    def visit(node):
        if isinstance(node, s_tir.SBlock):
            local.update({b.name: b for b in node.alloc_buffers})

    tvm_ffi.structural_walk(func.body, visit)
    parts = ann.partitions(func)

    def root(name: str) -> str:
        seen = {name}
        while name in wanted and wanted[name] not in seen:
            name = wanted[name]
            seen.add(name)
        return name

    shared = {}
    for name in wanted:
        first = root(name)
        a, b = local.get(name), local.get(first)
        if a is None or b is None or first == name:
            continue
        if buffer_shape(a) != buffer_shape(b) or buffer_dtype(a) != buffer_dtype(b):
            continue
        shared[name] = first
    for first in set(shared.values()):  # one array: its buffers' partitions must agree per dimension
        group = [first, *(n for n, r in shared.items() if r == first)]
        by_dim: dict[int, set] = {}
        for name in group:
            for part in parts.get(name, ()):
                by_dim.setdefault(part.dim, set()).add(part)
        if any(len(kinds) > 1 for kinds in by_dim.values()) or (0 in by_dim and len(by_dim) > 1):
            shared = {n: r for n, r in shared.items() if r != first}
    return shared


def stored_buffers(func: tirx.PrimFunc) -> set:
    """Buffer variables a function writes: the rest are printed ``const``."""
    written = set()

    def visit(node):
        if isinstance(node, tirx.BufferStore):
            written.add(node.buffer)

    tvm_ffi.structural_walk(func.body, visit)
    return written


class Namer:
    """Unique, legal C identifiers for TIR variables (TIR loop names are not unique)."""

    def __init__(self, reserved=()) -> None:
        self._names: dict = {}
        self._taken: set[str] = set(reserved)

    def fresh(self, hint: str) -> str:
        base = re.sub(r"[^0-9A-Za-z_]", "_", hint) or "v"
        if base[0].isdigit() or base in _C_KEYWORDS or base.startswith("__"):
            base = "v_" + base.lstrip("_")
        name, i = base, 1
        while name in self._taken:
            name = f"{base}_{i}"
            i += 1
        self._taken.add(name)
        return name

    def bind(self, var, hint: str | None = None) -> str:
        name = self.fresh(hint or var.name)
        self._names[var] = name
        return name

    def share(self, var, name: str) -> None:
        """``var`` is printed as ``name``, already taken (the same array)."""
        self._names[var] = name

    def __getitem__(self, var) -> str:
        try:
            return self._names[var]
        except KeyError:
            raise CodegenError(f"variable {var.name} is used outside its definition") from None

    def __contains__(self, var) -> bool:
        return var in self._names


def float_literal(value: float, dtype: str) -> str:
    if np.isnan(value):
        return f"{c_type(dtype)}(NAN)"
    if np.isinf(value):
        return f"{'-' if value < 0 else ''}{c_type(dtype)}(INFINITY)"
    if dtype in ("float32", "float64"):
        text = str(np.float32(value) if dtype == "float32" else np.float64(value))
        if not any(c in text for c in ".e"):
            text += ".0"
        return text + ("f" if dtype == "float32" else "")
    raise CodegenError(f"float literal of dtype {dtype} is not supported")


def int_literal(value: int, dtype: str) -> str:
    if dtype == "bool":
        return "true" if value else "false"
    if c_type(dtype).startswith("ap_"):
        return f"{c_type(dtype)}({value})"
    if dtype == "int64" and not -(2**31) <= value < 2**31:
        return f"INT64_C({value})"
    if dtype.startswith("uint"):
        return f"{value}u" if dtype != "uint64" else f"UINT64_C({value})"
    return str(value)


class FunctionPrinter:
    """Prints one PrimFunc as ``static void name(arrays...) { ... }``.

    ``callees`` maps the name of each PrimFunc this one calls to (its C name, the indices
    of the parameters it writes); everything else is named here. The hardware
    customizations recorded in the IR (``tvm_spatial.annotations``) become pragmas and
    structures in the methods of the section "schedule annotations" below.
    """

    def __init__(self, func: tirx.PrimFunc, name: str, callees: dict | None = None) -> None:
        self.func = func
        self.name = name
        self.names = Namer(reserved={name, *(c for c, _ in (callees or {}).values())})
        self.analyzer = Analyzer()
        self.out = CodeWriter()
        self.callees = dict(callees or {})
        self.partitions = ann.partitions(func)
        self.shared = shared_storage(func)  # buffer -> the buffer whose array it takes
        for name, first in self.shared.items():  # the shared array takes every partition of its buffers
            merged = {p.dim: p for p in (*self.partitions.get(first, ()), *self.partitions.get(name, ()))}
            self.partitions[first] = tuple(merged.values())
        self.arrays: dict[str, str] = {}  # local buffer name -> its array's C name
        self.streams = ann.streams(func)
        self.reuse = ann.reuse_buffers(func)
        self.fixed = ann.fixed_types(func)
        self.quantized = ann.quantized(func)

    # ---- declarations -------------------------------------------------
    def signature(self, storage: str = "static void") -> str:
        written = self.written_buffers()
        params = []
        for param in self.func.params:
            if not hasattr(param.ty, "shape"):
                raise CodegenError(
                    f"{self.name}: scalar parameter {param.name} is not supported; "
                    "pass scalars as 0-d tensors"
                )
            cname = self.names.bind(param)
            if param.name in self.streams:
                params.append(self.stream_parameter(param, cname))
                continue
            if param.name in self.fixed:
                raise CodegenError(
                    f"{self.name}: parameter {param.name} is fixed point; parameters keep host types"
                )
            const = "" if param in written else "const "
            decl = array_declarator(cname, buffer_shape(param))
            params.append(f"{const}{c_type(buffer_dtype(param))} {decl}")
        return f"{storage} {self.name}({', '.join(params)})"

    def print(self) -> str:
        with self.out.block(self.signature()):
            self.function_pragmas()
            self.stmt(self.func.body)
        return self.out.text()

    # ---- statements ---------------------------------------------------
    def stmt(self, node) -> None:
        if isinstance(node, tirx.SeqStmt):
            for child in node.seq:
                self.stmt(child)
        elif isinstance(node, s_tir.SBlockRealize):
            self.sblock_realize(node)
        elif isinstance(node, tirx.For):
            self.for_loop(node)
        elif isinstance(node, tirx.BufferStore):
            if node.buffer.name in self.streams:
                self.out.line(f"{self.stream_access(node.buffer, node.indices)}.write({self.expr(node.value)});")
            else:
                self.out.line(f"{self.buffer_access(node.buffer, node.indices)} = {self.expr(node.value)};")
        elif isinstance(node, tirx.IfThenElse):
            self.if_then_else(node)
        elif isinstance(node, tirx.Bind):
            name = self.names.bind(node.var)
            self.out.line(f"const {c_type(dtype_of(node.var))} {name} = {self.expr(node.value)};")
        elif isinstance(node, tirx.LetStmt):
            name = self.names.bind(node.var)
            self.out.line(f"const {c_type(dtype_of(node.var))} {name} = {self.expr(node.value)};")
            self.stmt(node.body)
        elif isinstance(node, tirx.AttrStmt):
            self.stmt(node.body)
        elif isinstance(node, tirx.Evaluate):
            if isinstance(node.value, tvm.ir.Call) and isinstance(node.value.op, tvm.ir.GlobalVar):
                self.subroutine_call(node.value)
            elif not isinstance(node.value, tirx.IntImm):
                self.out.line(f"{self.expr(node.value)};")
        elif isinstance(node, tirx.AllocBuffer):
            self.declare_local(node.buffer)
        elif isinstance(node, tirx.DeclBuffer):
            pass
        else:
            raise CodegenError(f"{self.name}: TIR statement {type(node).__name__} is not supported")

    def declare_local(self, buffer_var) -> None:
        """A local buffer: an on-chip array. ``static`` keeps large buffers off the
        emulation stack; HLS maps it to BRAM/URAM either way."""
        if buffer_var.name in self.streams:
            self.declare_stream(buffer_var)
            return
        first = self.shared.get(buffer_var.name)
        if first in self.arrays:  # computed in place over another buffer: its array
            self.names.share(buffer_var, self.arrays[first])
            self.out.line(f"// {buffer_var.name}: in place over {first} (hls.storage)")
            return
        cname = self.names.bind(buffer_var)
        self.arrays[buffer_var.name] = cname
        decl = array_declarator(cname, buffer_shape(buffer_var))
        reuse = self.reuse.get(buffer_var.name)
        if reuse is not None:
            self.out.line(f"// {reuse.kind} buffer: reuses {reuse.source} along loop {reuse.axis}")
        quant = self.quantized.get(buffer_var.name)
        if quant is not None:
            self.out.line(f"// quantized: {quant.dtype} codes of {quant.scale!r} steps")
        storage = "" if _is_register_scope(buffer_var) else "static "
        self.out.line(f"{storage}{self.element_type(buffer_var)} {decl};")
        self.partition_pragmas(buffer_var)

    def for_loop(self, loop: tirx.For) -> None:
        var = loop.loop_var
        ctype = _loop_counter_type(loop)
        name = self.names.bind(var)
        lo, extent = self.expr(loop.min), self.expr(loop.extent)
        end = extent if _is_zero(loop.min) else f"{lo} + {extent}"
        if isinstance(loop.min, tirx.IntImm) and isinstance(loop.extent, tirx.IntImm):
            self.analyzer.bind(var, tvm.ir.Range.from_min_extent(loop.min, loop.extent))
        pe_array = ann.unfold_name(loop)
        if pe_array is not None:
            self.out.line(f"// PE array {pe_array}: {extent} processing elements along {name}")
        tail = self.guard_as_bound(loop)
        if tail is not None:
            end = f"tvs_min<{ctype}>({end}, {tail})"
        with self.out.block(f"for ({ctype} {name} = {lo}; {name} < {end}; ++{name})"):
            if tail is not None:
                self.out.line(f"#pragma HLS LOOP_TRIPCOUNT max={extent}")
            if loop.kind == tirx.ForKind.UNROLLED and ann.unroll_factor(loop) is None and pe_array is None:
                self.out.line("#pragma HLS UNROLL")
            self.loop_pragmas(loop)
            if tail is not None:
                self.sblock_realize(loop.body, guard_folded=True)
            else:
                self.stmt(loop.body)

    def guard_as_bound(self, loop: tirx.For) -> str | None:
        """A last, partial tile: ``for v < E: if (a + v < b) S`` -> ``for v < min(E, b - a): S``.

        Splitting a width that the tile does not divide guards the innermost loop; as a
        bound (with a trip-count hint for HLS) the loop stays vectorizable and pipelinable.
        Only a loop starting at 0 whose body is one guarded opaque sblock qualifies."""
        body, var = loop.body, loop.loop_var
        if not (_is_zero(loop.min) and loop.kind == tirx.ForKind.SERIAL):
            return None
        if not isinstance(body, s_tir.SBlockRealize) or len(body.block.iter_vars):
            return None
        cond = body.predicate
        if not isinstance(cond, tirx.LT) or not isinstance(cond.b, tirx.IntImm):
            return None
        offset = self.analyzer.simplify(cond.a - var)
        if uses_var(offset, var) or not isinstance(loop.extent, tirx.IntImm):
            return None
        return self.expr(self.analyzer.simplify(cond.b - offset))

    def sblock_realize(self, realize: s_tir.SBlockRealize, guard_folded: bool = False) -> None:
        block = realize.block
        if len(block.match_buffers):
            raise CodegenError(f"{self.name}: sblock {block.name_hint} uses match_buffer")
        is_root = len(block.iter_vars) == 0 and block.name_hint == "root"
        opened = not is_root
        if opened:
            self.out.open(f"{{  // {block.name_hint}")
        for buffer_var in block.alloc_buffers:
            self.declare_local(buffer_var)
        for iter_var, value in zip(block.iter_vars, realize.iter_values):
            name = self.names.bind(iter_var.var)
            self.out.line(f"const {c_type(dtype_of(iter_var.var))} {name} = {self.expr(value)};")
            dom = iter_var.dom
            if isinstance(dom.min, tirx.IntImm) and isinstance(dom.extent, tirx.IntImm):
                self.analyzer.bind(iter_var.var, dom)
        trivial = isinstance(realize.predicate, tirx.IntImm) and int(realize.predicate.value) == 1
        guarded = not (trivial or guard_folded)
        if guarded:
            self.out.open(f"if ({self.expr(realize.predicate)}) {{")
        if block.init is not None:
            first = [
                f"{self.names[iv.var]} == {self.expr(iv.dom.min)}"
                for iv in block.iter_vars
                if iv.iter_type == tirx.IterVar.CommReduce
            ]
            with self.out.block(f"if ({' && '.join(first) or 'true'})"):
                self.stmt(block.init)
        self.stmt(block.body)
        if guarded:
            self.out.close()
        if opened:
            self.out.close()

    def if_then_else(self, node: tirx.IfThenElse) -> None:
        self.out.line(f"if ({self.expr(node.condition)}) {{")
        with self.out.indented():
            self.stmt(node.then_case)
        if node.else_case is not None:
            self.out.line("} else {")
            with self.out.indented():
                self.stmt(node.else_case)
        self.out.line("}")

    # ---- expressions --------------------------------------------------
    def buffer_access(self, buffer_var, indices) -> str:
        if len(indices) == 0:
            return f"{self.names[buffer_var]}[0]"
        return self.names[buffer_var] + "".join(f"[{self.expr(i)}]" for i in indices)

    def expr(self, node) -> str:  # noqa: C901 - one dispatch table over TIR expression kinds
        if isinstance(node, tvm.ir.TensorLoad) and node.source.name in self.fixed:
            return self.fixed_load(node)
        if isinstance(node, tvm.ir.TensorLoad) and node.source.name in self.streams:
            return f"{self.stream_access(node.source, node.indices)}.read()"
        if isinstance(node, tirx.IntImm):
            return int_literal(int(node.value), dtype_of(node))
        if isinstance(node, tirx.FloatImm):
            return float_literal(float(node.value), dtype_of(node))
        if isinstance(node, tvm.ir.TensorLoad):
            return self.buffer_access(node.source, node.indices)
        if isinstance(node, tirx.Var):
            return self.names[node]
        op = _BINARY.get(type(node))
        if op is not None:
            return f"({self.expr(node.a)} {op} {self.expr(node.b)})"
        if isinstance(node, tirx.Div):
            return f"({self.expr(node.a)} / {self.expr(node.b)})"
        if isinstance(node, tirx.Mod):
            return f"({self.expr(node.a)} % {self.expr(node.b)})"
        if isinstance(node, (tirx.FloorDiv, tirx.FloorMod)):
            return self.floor_div_mod(node)
        if isinstance(node, tirx.Min):
            return f"tvs_min<{c_type(dtype_of(node))}>({self.expr(node.a)}, {self.expr(node.b)})"
        if isinstance(node, tirx.Max):
            return f"tvs_max<{c_type(dtype_of(node))}>({self.expr(node.a)}, {self.expr(node.b)})"
        if isinstance(node, tirx.Not):
            return f"(!{self.expr(node.a)})"
        if isinstance(node, tirx.Select):
            return f"({self.expr(node.condition)} ? {self.expr(node.true_value)} : {self.expr(node.false_value)})"
        if isinstance(node, tirx.Cast):
            return f"static_cast<{c_type(dtype_of(node))}>({self.expr(node.value)})"
        if isinstance(node, tirx.Let):
            raise CodegenError(f"{self.name}: let-expressions are not supported")
        if isinstance(node, tvm.ir.Call):
            return self.call(node)
        raise CodegenError(f"{self.name}: TIR expression {type(node).__name__} is not supported")

    def floor_div_mod(self, node) -> str:
        """Floor semantics equal C's truncation when both sides are provably >= 0."""
        is_div = isinstance(node, tirx.FloorDiv)
        a, b = self.expr(node.a), self.expr(node.b)
        if self.analyzer.can_prove(node.a >= 0) and self.analyzer.can_prove(node.b > 0):
            return f"({a} {'/' if is_div else '%'} {b})"
        if is_float(dtype_of(node)):
            return f"std::floor({a} / {b})" if is_div else f"({a} - std::floor({a} / {b}) * {b})"
        return f"{'tvs_floordiv' if is_div else 'tvs_floormod'}<{c_type(dtype_of(node))}>({a}, {b})"

    def call(self, node) -> str:
        op_name = node.op.name if isinstance(node.op, tvm.ir.Op) else str(node.op)
        short = op_name.split(".", 1)[-1]
        args = [self.expr(a) for a in node.args]
        if short == "pow" and _small_integer(node.args[1]) in (2, 3):
            # x*x(*x): exact enough, and a multiply instead of a libm call per element
            base = args[0]
            return "(" + " * ".join([base] * _small_integer(node.args[1])) + ")"
        if short in _MATH:
            return f"{_MATH[short]}({', '.join(args)})"
        if short == "rsqrt":
            one = float_literal(1.0, dtype_of(node))
            return f"({one} / std::sqrt({args[0]}))"
        if short == "sigmoid":
            one = float_literal(1.0, dtype_of(node))
            return f"({one} / ({one} + std::exp(-{args[0]})))"
        if short == "if_then_else":
            return f"({args[0]} ? {args[1]} : {args[2]})"
        if short == "likely":
            return args[0]
        if short == "bitwise_not":
            return f"(~{args[0]})"
        raise CodegenError(f"{self.name}: TIR intrinsic {op_name} has no HLS mapping")


    # ---- schedule annotations (keys and meaning: tvm_spatial.annotations) ----------------
    def written_buffers(self) -> set:
        """Buffers this function writes, directly or through the functions it calls."""
        written = stored_buffers(self.func)

        def visit(node):
            if isinstance(node, tvm.ir.Call) and isinstance(node.op, tvm.ir.GlobalVar):
                _, callee_writes = self.callee(node)
                for i in callee_writes:
                    written.add(node.args[i])

        tvm_ffi.structural_walk(self.func.body, visit)
        return written

    def callee(self, call) -> tuple[str, frozenset]:
        try:
            return self.callees[call.op.name_hint]
        except KeyError:
            raise CodegenError(
                f"{self.name}: call of {call.op.name_hint}, which is not a function of this kernel"
            ) from None

    def subroutine_call(self, call) -> None:
        cname, _ = self.callee(call)
        args = []
        for arg in call.args:
            if not (isinstance(arg, tirx.Var) and arg in self.names):
                raise CodegenError(f"{self.name}: argument {arg} of {call.op.name_hint} is not a buffer")
            args.append(self.names[arg])
        self.out.line(f"{cname}({', '.join(args)});")

    def function_pragmas(self) -> None:
        if ann.is_dataflow_function(self.func):
            self.out.line("#pragma HLS DATAFLOW")
        for param in self.func.params:
            if hasattr(param.ty, "shape"):
                self.partition_pragmas(param)

    def partition_pragmas(self, buffer_var) -> None:
        for part in self.partitions.get(buffer_var.name, ()):
            self.out.line(part.pragma(self.names[buffer_var]))

    def loop_pragmas(self, loop: tirx.For) -> None:
        ii = ann.pipeline_ii(loop)
        if ii is not None:
            self.out.line(f"#pragma HLS PIPELINE II={ii}")
        factor = ann.unroll_factor(loop)
        if factor is not None:
            self.out.line("#pragma HLS UNROLL" + (f" factor={factor}" if factor else ""))
        if ann.unfold_name(loop) is not None:
            self.out.line("#pragma HLS UNROLL")
        if ann.is_dataflow_loop(loop):
            self.out.line("#pragma HLS DATAFLOW")

    def declare_stream(self, buffer_var) -> None:
        """An on-chip buffer turned into FIFO(s): its leading ``array_dims`` dimensions index
        an array of ``hls::stream``; the rest is the order elements pass through in time."""
        stream = self.streams[buffer_var.name]
        cname = self.names.bind(buffer_var)
        dims = buffer_shape(buffer_var)[: stream.array_dims]
        decl = cname + "".join(f"[{d}]" for d in dims)
        self.out.line(f"static hls::stream<{self.element_type(buffer_var)}> {decl};")
        self.out.line(f"#pragma HLS STREAM variable={cname} depth={stream.depth}")

    def stream_parameter(self, param, cname: str) -> str:
        """A parameter the schedule streamed (``to`` on it): one FIFO by reference; the
        caller passes its own stream. Arrays of streams do not cross calls."""
        if self.streams[param.name].array_dims:
            raise CodegenError(f"{self.name}: parameter {param.name} is an array of streams")
        return f"hls::stream<{self.element_type(param)}>& {cname}"

    def element_type(self, buffer_var) -> str:
        """The C element type of a buffer: its dtype's, or the fixed-point type ``cast``
        gave it (``hls.fixed``)."""
        fixed = self.fixed.get(buffer_var.name)
        return fixed.c_type() if fixed is not None else c_type(buffer_dtype(buffer_var))

    def fixed_load(self, node) -> str:
        """A fixed-point element read back into its carrier dtype (exact: see hls.fixed)."""
        source = node.source
        if source.name in self.streams:
            access = f"{self.stream_access(source, node.indices)}.read()"
        else:
            access = self.buffer_access(source, node.indices)
        return f"static_cast<{c_type(buffer_dtype(source))}>({access})"

    def stream_access(self, buffer_var, indices) -> str:
        stream = self.streams[buffer_var.name]
        return self.names[buffer_var] + "".join(f"[{self.expr(i)}]" for i in indices[: stream.array_dims])


def _small_integer(expr) -> int | None:
    """The value of a float or int literal that is a small whole number, else None."""
    if isinstance(expr, (tirx.FloatImm, tirx.IntImm)) and float(expr.value).is_integer():
        value = int(expr.value)
        return value if abs(value) <= 8 else None
    return None


def uses_var(expr, var) -> bool:
    """Does ``expr`` mention the TIR variable ``var``?"""
    found = []

    def visit(node):
        if isinstance(node, tirx.Var) and node.same_as(var):
            found.append(node)

    tvm_ffi.structural_walk(expr, visit)
    return bool(found)


def _loop_counter_type(loop: tirx.For) -> str:
    """``int`` for a 64-bit loop whose bounds fit in 32 bits (TVM legalizes with int64
    indices; HLS and the host compiler both prefer narrow counters), else the exact type."""
    dtype = dtype_of(loop.loop_var)
    bounds = (loop.min, loop.extent)
    if dtype == "int64" and all(isinstance(b, tirx.IntImm) for b in bounds):
        if 0 <= int(loop.min.value) and int(loop.min.value) + int(loop.extent.value) < 2**31:
            return "int"
    return c_type(dtype)


def _is_register_scope(buffer_var) -> bool:
    """``local`` buffers (tile accumulators) are small and live in registers: a plain
    automatic array, which the host compiler can keep in vector registers."""
    return str(getattr(buffer_var.ty, "storage_scope", "")) == "local"


def _is_zero(expr) -> bool:
    return isinstance(expr, tirx.IntImm) and int(expr.value) == 0
