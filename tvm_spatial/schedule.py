"""Allo-style hardware customizations on TensorIR: one :class:`Schedule`, many primitives.

``s = customize(func)`` wraps a PrimFunc (TVMScript, TE-made) or an IRModule of PrimFuncs
(one of them, ``main`` by default, calls the others). Every primitive applies at once,
either rewriting the TIR through ``tvm.s_tir.Schedule`` (split, reorder, fuse, compute_at,
buffer_at, reshape, integer cast and quantize, reuse_at) or recording a typed annotation in
the IR (pipeline, unroll, unfold, dataflow, partition, to, fixed-point cast); the keys and
their meaning are in :mod:`tvm_spatial.annotations`, the only place the HLS printer reads
them from.

Data types: ``cast(buf, "int8")`` narrows an on-chip buffer; ``cast(buf, "ap_fixed<16,8>")``
makes it fixed point (TIR keeps the float dtype as carrier, the HLS declares the
``ap_fixed`` type, so emulation and synthesis share ``ap_fixed.h``'s numerics);
``quantize(buf, "int4", scale=0.25)`` stores integer codes and reads ``code * scale`` back.
Parameters keep host types.

Every primitive appends ``(name, arguments)`` to ``s.log``. A primitive *declares* which of
its arguments are loops, sblocks, buffers or functions (``@primitive(loop=..., buffer=...)``);
arguments are stored in the log as qualified handles (``"gemm:C/j"`` is loop ``j`` above
sblock ``C`` of function ``gemm``), so replaying a log and renaming it for composition are
the same generic code for every primitive. A new primitive is one method with its
declaration; nothing else needs to know about it.

Handles: loops by ``"sblock/loop"``, or by ``"loop"`` when that name is unique in the
function, optionally prefixed with ``"function:"``; sblocks and buffers by name. Handles are
names, not TVM random variables, so they stay valid after any number of primitives.

Interfaces: a function's interface type is, per buffer parameter, its element type, shape,
partition layout and stream-ness (``to`` on a parameter makes it an ``hls::stream&``).
``compose`` applies a sub-function's schedule (its log) inside the caller -- to every call,
or with ``id`` to one call site, on its own copy of the callee -- propagates the callee's
parameter partitions to the caller's buffers, and checks its calls: a disagreement raises
:class:`InterfaceMismatchError` naming both sides. A stream parameter waits for the caller's
``to(buffer, callee)`` (which checks the callee's side at once); ``build`` checks every call.
"""

from __future__ import annotations

import functools
import inspect
import math
import re
from dataclasses import dataclass

import tvm
import tvm_ffi
from tvm import s_tir, tirx
from tvm.sym import Analyzer

import tvm_spatial.annotations as ann  # not "from . import": the package namespace has __future__.annotations
from .errors import InterfaceMismatchError, ScheduleError

__all__ = [
    "Buffer",
    "Function",
    "InterfaceType",
    "Log",
    "LogEntry",
    "Loop",
    "SBlock",
    "Schedule",
    "customize",
    "primitive",
]


# ---------------------------------------------------------------------------------------
# handles: plain names, qualified by function; printed as the string a user may type


@dataclass(frozen=True)
class Loop:
    func: str
    sblock: str
    name: str

    def __str__(self) -> str:
        return f"{self.func}:{self.sblock}/{self.name}"

    def __repr__(self) -> str:
        return repr(str(self))

    def in_func(self, func: str) -> "Loop":
        return Loop(func, self.sblock, self.name)


@dataclass(frozen=True)
class SBlock:
    func: str
    name: str

    def __str__(self) -> str:
        return f"{self.func}:{self.name}"

    __repr__ = Loop.__repr__

    def in_func(self, func: str) -> "SBlock":
        return SBlock(func, self.name)


@dataclass(frozen=True)
class Buffer:
    func: str
    name: str

    def __str__(self) -> str:
        return f"{self.func}:{self.name}"

    __repr__ = Loop.__repr__

    def in_func(self, func: str) -> "Buffer":
        return Buffer(func, self.name)


@dataclass(frozen=True)
class Function:
    name: str

    def __str__(self) -> str:
        return self.name

    __repr__ = Loop.__repr__

    @property
    def func(self) -> str:
        return self.name

    def in_func(self, func: str) -> "Function":
        return Function(func)


_HANDLES = (Loop, SBlock, Buffer, Function)

# function attribute of a specialized copy: the function it copies (see Schedule.specialize)
_INSTANCE_OF = "tvm_spatial.instance_of"


class Loops(tuple):
    """The loops above one sblock, outermost first; also by name: ``loops.j``, ``loops["j"]``."""

    def __getitem__(self, key):
        if isinstance(key, str):
            for loop in self:
                if loop.name == key:
                    return loop
            raise ScheduleError(f"no loop named {key!r}; the loops are {', '.join(l.name for l in self)}")
        return tuple.__getitem__(self, key)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]


# ---------------------------------------------------------------------------------------
# the log


@dataclass(frozen=True)
class LogEntry:
    """One applied primitive: its name and its arguments in signature order.
    ``star`` names the variadic argument (e.g. ``reorder(*loops)``), if any."""

    name: str
    args: tuple  # ((parameter name, value), ...)
    star: str | None = None

    def __str__(self) -> str:
        parts = []
        for pname, value in self.args:
            if pname == self.star:
                parts.extend(repr(v) for v in value)
            else:
                parts.append(f"{pname}={value!r}")
        return f"{self.name}({', '.join(parts)})"

    def renamed(self, funcs: dict[str, str]) -> "LogEntry":
        """The same entry with every handle moved to another function (``funcs[old]``)."""

        def move(value):
            if isinstance(value, _HANDLES):
                return value.in_func(funcs.get(value.func, value.func))
            if isinstance(value, tuple):
                return tuple(move(v) for v in value)
            return value

        return LogEntry(self.name, tuple((p, move(v)) for p, v in self.args), self.star)

    def apply(self, schedule: "Schedule"):
        method = getattr(schedule, self.name)
        positional = []
        for pname, value in self.args:
            if pname == self.star:
                positional.extend(value)
            else:
                positional.append(value)
        return method(*positional)


class Log(list):
    """The primitives applied to a schedule, in order; ``print(s.log)`` shows them as calls."""

    def __str__(self) -> str:
        return "\n".join(f"s.{entry}" for entry in self)


def primitive(**roles):
    """Declare a Schedule method a primitive; ``roles`` maps parameter name to what it is:
    ``"loop"``, ``"loops"`` (variadic), ``"sblock"``, ``"buffer"``, ``"func"`` or
    ``"loop_or_func"``. The wrapper turns user input into qualified handles (with an error
    naming what is valid), runs the method, and appends it to the log."""

    def decorate(method):
        signature = inspect.signature(method)
        star = next(
            (p.name for p in signature.parameters.values() if p.kind == p.VAR_POSITIONAL), None
        )

        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            try:
                bound = signature.bind(self, *args, **kwargs)
            except TypeError as exc:
                raise ScheduleError(f"{method.__name__}: {exc}") from None
            bound.apply_defaults()
            for pname, role in roles.items():
                bound.arguments[pname] = self._handle(role, bound.arguments[pname], method.__name__)
            entry = LogEntry(
                method.__name__, tuple((p, v) for p, v in bound.arguments.items() if p != "self"), star
            )
            self._depth += 1
            before = self._mod  # all or nothing: a refused primitive leaves the module as it was
            try:
                result = method(*bound.args, **bound.kwargs)
            except s_tir.ScheduleError as exc:
                self._mod = before
                raise ScheduleError(f"{entry}: TVM refused it: {_tvm_reason(exc)}") from None
            except BaseException:
                self._mod = before
                raise
            finally:
                self._depth -= 1
            if self._depth == 0:
                self._log.append(entry)
            return result

        wrapper.roles = dict(roles)
        return wrapper

    return decorate


def _tvm_reason(exc) -> str:
    text = str(exc)
    marker = "Error message:"
    if marker in text:
        return text.split(marker, 1)[1].strip().splitlines()[0]
    return text.strip().splitlines()[0]


# ---------------------------------------------------------------------------------------
# IR helpers


def _walk_sblocks(stmt, loops, visit):
    """Call ``visit(realize, loops)`` for every non-root sblock, ``loops`` the enclosing
    For nodes of the function (outermost first)."""
    if isinstance(stmt, tirx.SeqStmt):
        for child in stmt.seq:
            _walk_sblocks(child, loops, visit)
    elif isinstance(stmt, tirx.For):
        _walk_sblocks(stmt.body, [*loops, stmt], visit)
    elif isinstance(stmt, s_tir.SBlockRealize):
        if stmt.block.name_hint != "root" or len(stmt.block.iter_vars):
            visit(stmt, loops)
        _walk_sblocks(stmt.block.body, loops, visit)
        if stmt.block.init is not None:
            _walk_sblocks(stmt.block.init, loops, visit)
    elif isinstance(stmt, tirx.IfThenElse):
        _walk_sblocks(stmt.then_case, loops, visit)
        if stmt.else_case is not None:
            _walk_sblocks(stmt.else_case, loops, visit)
    elif isinstance(stmt, tirx.AttrStmt):
        _walk_sblocks(stmt.body, loops, visit)


def _uses(expr, var) -> bool:
    found = []
    tvm_ffi.structural_walk(expr, lambda n: found.append(1) if n.same_as(var) else None)
    return bool(found)


def _substitute(expr, mapping: dict):
    if not mapping:
        return expr
    return tvm_ffi.structural_map(expr, lambda n: mapping.get(n, n) if isinstance(n, tirx.Var) else n)


def _shape(buffer_var) -> tuple[int, ...]:
    return tuple(int(d.value) if hasattr(d, "value") else int(d) for d in buffer_var.ty.shape)


def _const_int(expr) -> int | None:
    return int(expr.value) if isinstance(expr, tirx.IntImm) else None


def _is_buffer(var) -> bool:
    return isinstance(var, tirx.Var) and hasattr(var.ty, "shape") and hasattr(var.ty, "dtype")


def _global_calls(stmt) -> list:
    calls = []

    def visit(node):
        if isinstance(node, tvm.ir.Call) and isinstance(node.op, tvm.ir.GlobalVar):
            calls.append(node)

    tvm_ffi.structural_walk(stmt, visit, order="pre")
    return calls


@dataclass(frozen=True)
class InterfaceType:
    """What a buffer looks like across a call: element type (a fixed-point type when cast
    to one), shape, partition, stream-ness."""

    dtype: str
    shape: tuple[int, ...]
    partition: tuple[ann.Partition, ...] = ()
    stream: ann.Stream | None = None
    fixed: ann.Fixed | None = None

    @property
    def is_stream(self) -> bool:
        return self.stream is not None

    def accepted_by(self, param: "InterfaceType") -> bool:
        """Can a buffer of this type be passed to a parameter of type ``param``? Element type,
        shape and stream-ness must agree (a stream's depth is the caller's channel, not part
        of the type); every partition the parameter declares must be the buffer's too (a
        parameter without a partition takes the caller's, as in Vitis)."""
        return (
            (self.dtype, self.shape, self.fixed) == (param.dtype, param.shape, param.fixed)
            and self.is_stream == param.is_stream
            and (not self.is_stream or self.stream.array_dims == param.stream.array_dims)
            and all(p in self.partition for p in param.partition)
        )

    def __str__(self) -> str:
        text = f"{self.fixed if self.fixed is not None else self.dtype}[{', '.join(map(str, self.shape))}]"
        if self.partition:
            text += " partitioned " + "; ".join(str(p) for p in self.partition)
        text += f" stream(depth={self.stream.depth})" if self.stream is not None else " array"
        return text


@dataclass(frozen=True)
class _CallUse:
    callee: str
    param: str
    uses: frozenset  # {"read", "write"}
    in_loop: bool


def _calls_in(stmt, in_loop=False):
    """(call, inside a loop?) for every call of another PrimFunc in ``stmt``."""
    if isinstance(stmt, tirx.SeqStmt):
        for child in stmt.seq:
            yield from _calls_in(child, in_loop)
    elif isinstance(stmt, tirx.For):
        yield from _calls_in(stmt.body, True)
    elif isinstance(stmt, s_tir.SBlockRealize):
        yield from _calls_in(stmt.block.body, in_loop)
    elif isinstance(stmt, tirx.IfThenElse):
        yield from _calls_in(stmt.then_case, in_loop)
        if stmt.else_case is not None:
            yield from _calls_in(stmt.else_case, in_loop)
    elif isinstance(stmt, tirx.AttrStmt):
        yield from _calls_in(stmt.body, in_loop)
    elif isinstance(stmt, tirx.Evaluate):
        for call in _global_calls(stmt):
            yield call, in_loop


@dataclass
class _Access:
    store: bool
    sblock: str
    loops: list  # enclosing For nodes, outermost first
    indices: list  # in loop variables
    expr: object  # the TensorLoad / BufferStore node


# ---------------------------------------------------------------------------------------
# the schedule


def _as_module(func) -> tuple[tvm.IRModule, str]:
    if isinstance(func, Schedule):
        return func.module, func.top
    if isinstance(func, tvm.IRModule):
        prims = {gv.name_hint: f for gv, f in func.functions_items() if isinstance(f, tirx.PrimFunc)}
        if not prims:
            raise ScheduleError("customize: the IRModule holds no PrimFunc")
        if len(prims) == 1:
            return func, next(iter(prims))
        if "main" not in prims:
            raise ScheduleError(
                f"customize: the IRModule holds {len(prims)} PrimFuncs ({', '.join(sorted(prims))}) "
                "and none is 'main'; pass top='<name of the calling function>'"
            )
        return func, "main"
    if isinstance(func, tirx.PrimFunc):
        symbol = func.attrs.get("global_symbol") if func.attrs is not None else None
        name = str(symbol) if symbol is not None else "main"
        return tvm.IRModule({name: func}), name
    raise ScheduleError(
        f"customize expects a PrimFunc (TVMScript or te.create_prim_func) or an IRModule, "
        f"got {type(func).__name__}"
    )


def customize(func, *, top: str | None = None) -> "Schedule":
    """Start customizing ``func`` (a PrimFunc or an IRModule of PrimFuncs)."""
    mod, default_top = _as_module(func)
    return Schedule(mod, top or default_top)


class Schedule:
    """Hardware customizations of one TensorIR module. See the module docstring."""

    def __init__(self, mod: tvm.IRModule, top: str) -> None:
        self._original = mod
        self._mod = mod
        self.top = top
        self._log = Log()
        self._depth = 0
        self._func(top)  # exists
        for name in self.function_names():
            self._check_unique_buffers(name)

    # ---- views -------------------------------------------------------------------------
    @property
    def module(self) -> tvm.IRModule:
        """The customized TIR (annotations included)."""
        return self._mod

    @property
    def func(self) -> tirx.PrimFunc:
        return self._func(self.top)

    @property
    def original(self) -> tvm.IRModule:
        return self._original

    @property
    def log(self) -> Log:
        return Log(self._log)

    def function_names(self) -> list[str]:
        return sorted(gv.name_hint for gv, f in self._mod.functions_items() if isinstance(f, tirx.PrimFunc))

    def __repr__(self) -> str:
        return f"<Schedule of {self.top}: {len(self._log)} primitive(s)>"

    def show(self) -> None:
        self._mod.show()

    # ---- handles -----------------------------------------------------------------------
    def get_sblock(self, name: str, func: str | None = None) -> SBlock:
        return self._sblock(name if func is None else f"{func}:{name}")

    def get_loops(self, sblock) -> Loops:
        ref = self._sblock(sblock)
        return Loops(Loop(ref.func, ref.name, f.loop_var.name) for f in self._loops_above(ref))

    def buffer(self, name: str, func: str | None = None) -> Buffer:
        return self._buffer(name if func is None else f"{func}:{name}")

    def _split_func(self, text: str) -> tuple[str, str]:
        if ":" in text:
            func, rest = text.split(":", 1)
            self._func(func)
            return func, rest
        return self.top, text

    def _handle(self, role: str, value, primitive_name: str):
        if role == "loops":
            return tuple(self._loop(v) for v in value)
        if role == "loop":
            return self._loop(value)
        if role == "sblock":
            return self._sblock(value)
        if role == "buffer":
            return self._buffer(value)
        if role == "func":
            return self._function(value)
        if role == "consumer":  # an sblock, a called function, or None
            if value is None or isinstance(value, SBlock):
                return None if value is None else self._sblock(value)
            if isinstance(value, Function):
                return self._function(value)
            try:
                return self._sblock(value)
            except ScheduleError as exc:
                if isinstance(value, str) and value in self.function_names():
                    return Function(value)
                raise ScheduleError(f"{exc}; or a function: {', '.join(self.function_names())}") from None
        if role == "loop_or_func":
            if value is None:
                return Function(self.top)
            if isinstance(value, Function) or (isinstance(value, str) and value in self.function_names()):
                return self._function(value)
            return self._loop(value)
        raise AssertionError(f"{primitive_name}: unknown role {role}")

    def _function(self, value) -> Function:
        name = value.name if isinstance(value, Function) else str(value)
        self._func(name)
        return Function(name)

    def _func(self, name: str) -> tirx.PrimFunc:
        for gv, func in self._mod.functions_items():
            if gv.name_hint == name and isinstance(func, tirx.PrimFunc):
                return func
        raise ScheduleError(
            f"no function named {name!r}; the functions are {', '.join(self.function_names())}"
        )

    def _realizes(self, func: str) -> list:
        found = []
        _walk_sblocks(self._func(func).body, [], lambda r, loops: found.append((r, loops)))
        return found

    def _sblock(self, value) -> SBlock:
        if isinstance(value, SBlock):
            func, name = value.func, value.name
        elif isinstance(value, str):
            func, name = self._split_func(value)
        else:
            raise ScheduleError(f"expected an sblock (name or handle), got {value!r}")
        names = [r.block.name_hint for r, _ in self._realizes(func)]
        if names.count(name) == 0:
            raise ScheduleError(
                f"no sblock named {name!r} in function {func}; the sblocks are {', '.join(names) or 'none'}"
            )
        if names.count(name) > 1:
            raise ScheduleError(f"sblock name {name!r} is not unique in function {func}")
        return SBlock(func, name)

    def _loops_above(self, ref: SBlock) -> list:
        for realize, loops in self._realizes(ref.func):
            if realize.block.name_hint == ref.name:
                return loops
        raise ScheduleError(f"no sblock named {ref.name!r} in function {ref.func}")

    def _loop(self, value) -> Loop:
        if isinstance(value, Loop):
            func, sblock, name = value.func, value.sblock, value.name
        elif isinstance(value, str):
            func, rest = self._split_func(value)
            sblock, _, name = rest.rpartition("/")
        else:
            raise ScheduleError(f"expected a loop (e.g. 'C/j', 'j' or a handle from get_loops), got {value!r}")
        if sblock:
            ref = self._sblock(SBlock(func, sblock))
            names = [f.loop_var.name for f in self._loops_above(ref)]
            if names.count(name) != 1:
                what = "no loop" if not names.count(name) else "more than one loop"
                raise ScheduleError(
                    f"{what} named {name!r} above sblock {sblock} in function {func}; its loops are "
                    f"{', '.join(names) or 'none'}"
                )
            return Loop(func, sblock, name)
        # a bare loop name: unique among all loops of the function
        owners: dict = {}
        all_names = []
        for realize, loops in self._realizes(func):
            for loop in loops:
                all_names.append(f"{realize.block.name_hint}/{loop.loop_var.name}")
                if loop.loop_var.name == name:
                    owners.setdefault(loop, realize.block.name_hint)
        distinct = []
        for loop, owner in owners.items():
            if not any(loop.same_as(d) for d, _ in distinct):
                distinct.append((loop, owner))
        if len(distinct) == 1:
            return Loop(func, distinct[0][1], name)
        if not distinct:
            raise ScheduleError(
                f"no loop named {name!r} in function {func}; the loops are "
                f"{', '.join(dict.fromkeys(all_names)) or 'none'}"
            )
        raise ScheduleError(
            f"loop name {name!r} is ambiguous in function {func}; say which with "
            f"{' or '.join(repr(f'{o}/{name}') for _, o in distinct)}"
        )

    def _buffers(self, func: str) -> dict:
        prim = self._func(func)
        table: dict = {}
        for param in prim.params:
            if _is_buffer(param):
                table.setdefault(param.name, []).append(param)

        def visit(node):
            if isinstance(node, s_tir.SBlock):
                for b in node.alloc_buffers:
                    table.setdefault(b.name, []).append(b)
            elif isinstance(node, tirx.AllocBuffer):
                table.setdefault(node.buffer.name, []).append(node.buffer)

        tvm_ffi.structural_walk(prim.body, visit)
        return table

    def _check_unique_buffers(self, func: str) -> None:
        for name, bufs in self._buffers(func).items():
            if len(bufs) > 1:
                raise ScheduleError(
                    f"function {func} declares more than one buffer named {name!r}; buffer names "
                    "must be unique within a function for customization"
                )

    def _buffer(self, value) -> Buffer:
        if isinstance(value, Buffer):
            func, name = value.func, value.name
        elif isinstance(value, str):
            func, name = self._split_func(value)
        elif _is_buffer(value):
            func, name = self.top, value.name
        else:
            raise ScheduleError(f"expected a buffer (name, handle or buffer), got {value!r}")
        table = self._buffers(func)
        if name not in table:
            raise ScheduleError(
                f"no buffer named {name!r} in function {func}; the buffers are {', '.join(sorted(table))}"
            )
        return Buffer(func, name)

    def _buffer_var(self, ref: Buffer):
        return self._buffers(ref.func)[ref.name][0]

    def _is_param(self, ref: Buffer) -> bool:
        return any(p.name == ref.name for p in self._func(ref.func).params)

    def _for(self, ref: Loop) -> tirx.For:
        for loop in self._loops_above(SBlock(ref.func, ref.sblock)):
            if loop.loop_var.name == ref.name:
                return loop
        raise ScheduleError(f"loop {ref} no longer exists")

    # ---- applying changes --------------------------------------------------------------
    def _tir(self, func: str) -> s_tir.Schedule:
        sch = s_tir.Schedule(self._mod)
        sch.work_on(func)
        return sch

    def _loop_rv(self, sch, ref: Loop):
        block = sch.get_sblock(ref.sblock)
        for rv in sch.get_loops(block):
            if sch.get(rv).loop_var.name == ref.name:
                return rv
        raise ScheduleError(f"loop {ref} no longer exists")

    def _commit(self, sch: s_tir.Schedule) -> None:
        self._mod = sch.mod

    def _set_func(self, name: str, func: tirx.PrimFunc) -> None:
        gv = self._mod.get_global_var(name)
        mod = self._mod.shallow_copy() if hasattr(self._mod, "shallow_copy") else tvm.IRModule(self._mod.functions)
        mod[gv] = func
        self._mod = mod

    def _annotate_loop(self, ref: Loop, key: str, value) -> None:
        sch = self._tir(ref.func)
        sch.annotate(self._loop_rv(sch, ref), key, value)
        self._commit(sch)

    # ---- compute customizations -----------------------------------------------------
    @primitive(loop="loop")
    def split(self, loop, factor=None, nparts=None):
        """Split ``loop`` into (outer, inner); give the inner extent ``factor`` or the outer ``nparts``."""
        if (factor is None) == (nparts is None):
            raise ScheduleError(f"split({loop}): give exactly one of factor= or nparts=")
        count = factor if factor is not None else nparts
        if not isinstance(count, int) or count < 1:
            raise ScheduleError(f"split({loop}): factor/nparts must be a positive int, got {count!r}")
        sch = self._tir(loop.func)
        rv = self._loop_rv(sch, loop)
        outs = sch.split(rv, [None, factor] if factor is not None else [nparts, None])
        names = [sch.get(o).loop_var.name for o in outs]
        self._commit(sch)
        return tuple(Loop(loop.func, loop.sblock, n) for n in names)

    @primitive(loops="loops")
    def reorder(self, *loops):
        """Reorder loops of one loop nest into the given order."""
        self._same_function("reorder", loops)
        sch = self._tir(loops[0].func)
        sch.reorder(*[self._loop_rv(sch, l) for l in loops])
        self._commit(sch)

    @primitive(loops="loops")
    def fuse(self, *loops):
        """Fuse consecutive loops into one; returns the fused loop."""
        self._same_function("fuse", loops)
        sch = self._tir(loops[0].func)
        fused = sch.fuse(*[self._loop_rv(sch, l) for l in loops])
        name = sch.get(fused).loop_var.name
        self._commit(sch)
        return Loop(loops[0].func, loops[0].sblock, name)

    def _same_function(self, what, loops) -> None:
        if not loops:
            raise ScheduleError(f"{what}: give at least one loop")
        funcs = {l.func for l in loops}
        if len(funcs) > 1:
            raise ScheduleError(f"{what}: loops {', '.join(map(str, loops))} are in different functions")

    @primitive(loop="loop")
    def unroll(self, loop, factor=0):
        """Unroll ``loop`` by ``factor`` (0: fully) -> ``#pragma HLS UNROLL``."""
        extent = _const_int(self._for(loop).extent)
        if not isinstance(factor, int) or factor < 0 or (extent is not None and factor > extent):
            raise ScheduleError(
                f"unroll({loop}, factor={factor!r}): factor must be an int in 0..{extent} "
                "(0 unrolls fully)"
            )
        self._annotate_loop(loop, ann.UNROLL, factor)

    @primitive(loop="loop")
    def pipeline(self, loop, ii=1):
        """Pipeline ``loop`` with initiation interval ``ii`` -> ``#pragma HLS PIPELINE II=ii``."""
        if not isinstance(ii, int) or ii < 1:
            raise ScheduleError(f"pipeline({loop}, ii={ii!r}): ii must be a positive int")
        node = self._for(loop)
        inner = []

        def visit(n):
            if isinstance(n, tirx.For) and ann.is_dataflow_loop(n):
                inner.append(n.loop_var.name)
            if isinstance(n, tvm.ir.Call) and isinstance(n.op, tvm.ir.GlobalVar):
                callee = self._func(n.op.name_hint)
                if ann.is_dataflow_function(callee):
                    inner.append(f"function {n.op.name_hint}")

        tvm_ffi.structural_walk(node, visit)
        if inner:
            raise ScheduleError(
                f"pipeline({loop}): the loop contains the dataflow region {inner[0]}; a dataflow "
                "region cannot be pipelined as a whole: pipeline the loops inside its stages instead"
            )
        self._annotate_loop(loop, ann.PIPELINE_II, ii)

    @primitive(loop="loop")
    def unfold(self, loop, name=None):
        """Replicate the body of ``loop`` as an array of processing elements (one hardware
        instance per iteration, e.g. the rows/columns of a systolic array)."""
        if _const_int(self._for(loop).extent) is None:
            raise ScheduleError(f"unfold({loop}): the loop extent must be a constant")
        self._annotate_loop(loop, ann.UNFOLD, name or loop.sblock)

    @primitive(target="loop_or_func")
    def dataflow(self, target=None):
        """Make a loop body or a whole function (default: the top function) a dataflow
        region -> ``#pragma HLS DATAFLOW``."""
        if isinstance(target, Function):
            self._set_func(target.name, ann.with_dataflow(self._func(target.name)))
            return
        for loop in self._loops_above(SBlock(target.func, target.sblock)):
            if ann.pipeline_ii(loop) is not None:
                raise ScheduleError(
                    f"dataflow({target}): it is inside the pipelined loop {loop.loop_var.name}; "
                    "a dataflow region cannot sit inside a pipeline"
                )
            if loop.loop_var.name == target.name:
                break
        self._annotate_loop(target, ann.DATAFLOW, 1)

    @primitive(sblock="sblock", loop="loop")
    def compute_at(self, sblock, loop):
        """Move producer ``sblock`` under ``loop`` of its consumer."""
        sch = self._tir(sblock.func)
        sch.compute_at(sch.get_sblock(sblock.name), self._loop_rv(sch, loop))
        self._commit(sch)

    @primitive(sblock="sblock", loop="loop")
    def reverse_compute_at(self, sblock, loop):
        """Move consumer ``sblock`` under ``loop`` of its producer."""
        sch = self._tir(sblock.func)
        sch.reverse_compute_at(sch.get_sblock(sblock.name), self._loop_rv(sch, loop))
        self._commit(sch)

    # ---- memory customizations ------------------------------------------------------
    @primitive(buffer="buffer")
    def partition(self, buffer, dim=0, factor=0, kind="complete"):
        """Partition ``buffer`` along ``dim`` (1-based; 0 = all) -> ``ARRAY_PARTITION``."""
        shape = _shape(self._buffer_var(buffer))
        if kind not in ann.PARTITION_KINDS:
            raise ScheduleError(f"partition({buffer}): kind {kind!r} is not one of {', '.join(ann.PARTITION_KINDS)}")
        if not isinstance(dim, int) or not 0 <= dim <= len(shape):
            raise ScheduleError(
                f"partition({buffer}): dim {dim!r} is not valid for a {len(shape)}-d buffer; "
                f"use 1..{len(shape)}, or 0 for every dimension"
            )
        if buffer.name in ann.streams(self._func(buffer.func)):
            raise ScheduleError(f"partition({buffer}): the buffer is a stream; streams cannot be partitioned")
        if kind == "complete":
            factor = 0
        else:
            if not isinstance(factor, int) or factor < 1:
                raise ScheduleError(f"partition({buffer}, kind={kind!r}): factor must be a positive int")
            for d in ([dim] if dim else range(1, len(shape) + 1)):
                extent = shape[d - 1]
                if extent % factor:
                    valid = [f for f in range(1, extent + 1) if extent % f == 0]
                    raise ScheduleError(
                        f"partition({buffer}): factor {factor} does not divide dimension {d} "
                        f"(extent {extent}); valid factors: {', '.join(map(str, valid))}"
                    )
        func = ann.with_partition(self._func(buffer.func), buffer.name, ann.Partition(dim, factor, kind))
        self._set_func(buffer.func, func)

    def _accessing_sblocks(self, ref: Buffer, *, store: bool | None = None) -> list[str]:
        return list(dict.fromkeys(a.sblock for a in self._accesses(ref) if store is None or a.store == store))

    def _accesses(self, ref: Buffer) -> list[_Access]:
        """Every load and store of ``ref`` inside sblocks, indices in loop variables."""
        var = self._buffer_var(ref)
        found: list[_Access] = []

        def in_block(realize, loops):
            block = realize.block
            binding = {iv.var: value for iv, value in zip(block.iter_vars, realize.iter_values)}

            def visit(node):
                if isinstance(node, s_tir.SBlockRealize) and not node.same_as(realize):
                    return tvm_ffi.WalkResult.SKIP if hasattr(tvm_ffi, "WalkResult") else None
                if isinstance(node, tirx.BufferStore) and node.buffer.same_as(var):
                    found.append(_Access(True, block.name_hint, loops, [_substitute(i, binding) for i in node.indices], node))
                elif isinstance(node, tvm.ir.TensorLoad) and node.source.same_as(var):
                    found.append(_Access(False, block.name_hint, loops, [_substitute(i, binding) for i in node.indices], node))
                return None

            tvm_ffi.structural_walk(block.body, visit, order="pre")
            if block.init is not None:
                tvm_ffi.structural_walk(block.init, visit, order="pre")

        _walk_sblocks(self._func(ref.func).body, [], in_block)
        return found

    def _any_sblock_of(self, ref: Buffer, store=None) -> str:
        blocks = self._accessing_sblocks(ref, store=store)
        if not blocks:
            raise ScheduleError(f"buffer {ref} is not {'written' if store else 'accessed'} by any sblock")
        return blocks[0]

    @primitive(buffer="buffer")
    def reshape(self, buffer, shape):
        """Give ``buffer`` a new shape with the same number of elements (row-major order kept)."""
        old = _shape(self._buffer_var(buffer))
        shape = tuple(int(d) for d in shape)
        if math.prod(old) != math.prod(shape):
            raise ScheduleError(
                f"reshape({buffer}): {old} has {math.prod(old)} elements, {shape} has {math.prod(shape)}"
            )
        sch = self._tir(buffer.func)
        block = sch.get_sblock(self._any_sblock_of(buffer))

        def index_map(*idx):
            flat = 0
            for i, d in zip(idx, old):
                flat = flat * d + i
            out = []
            for d in reversed(shape):
                out.append(flat % d)
                flat = flat // d
            return list(reversed(out))

        sch.transform_layout(block, buffer.name, index_map)
        self._commit(sch)

    @primitive(buffer="buffer")
    def cast(self, buffer, dtype):
        """Store the on-chip ``buffer`` as ``dtype``: an integer type (``int8``, ``int4``:
        values convert where it is written and read) or a fixed-point type
        (``"ap_fixed<16,8>"``, ``"ap_ufixed<8,2,AP_RND,AP_SAT>"`` or an
        :class:`~tvm_spatial.annotations.Fixed`; see ``hls.fixed``)."""
        self._refuse_port(buffer, "cast", dtype)
        fixed = self._fixed_type(buffer, dtype, "cast")
        self._refuse_passed(buffer, "cast", dtype)
        if fixed is not None:
            self._set_fixed(buffer, fixed)
            return
        from codegen_hls.c_types import c_type  # what the printer can express

        try:
            c_type(dtype)
        except Exception as exc:  # CodegenError: say what is valid
            raise ScheduleError(
                f"cast({buffer}, {dtype!r}): {exc}; or a fixed-point type such as 'ap_fixed<16,8>'"
            ) from None
        self._refuse_retyped(buffer, "cast")
        self._hoist_allocation(buffer)
        sch = self._tir(buffer.func)
        writer = sch.get_sblock(self._any_sblock_of(buffer, store=True))
        index = [w.source.name for w in sch.get(writer).writes].index(buffer.name)
        sch.unsafe_set_dtype(writer, index, dtype)
        self._commit(sch)

    @primitive(buffer="buffer")
    def quantize(self, buffer, dtype="int8", scale=None):
        """Store the on-chip ``buffer`` quantized and read it back as its float dtype:

        * ``dtype`` an integer type (``int8``, ``int4``, ``uint8``...) with ``scale``: stores
          keep ``q = clamp(round_half_even(x / scale), min, max)`` and loads give
          ``float(q) * scale``; the TIR does this arithmetic, ``hls.quantize`` records it.
        * ``dtype`` a fixed-point type (no scale: the binary point is the scale): as
          ``cast(buffer, dtype)``."""
        self._refuse_port(buffer, "quantize", dtype)
        where = f"quantize({buffer}, {dtype!r})"
        fixed = self._fixed_type(buffer, dtype, "quantize")
        self._refuse_passed(buffer, "quantize", dtype)
        if fixed is not None:
            if scale is not None:
                raise ScheduleError(f"{where}: a fixed-point type has no scale (its binary point is the scale); drop scale=")
            self._set_fixed(buffer, fixed, "quantize")
            return
        match = re.fullmatch(r"(u?)int(\d+)", str(dtype))
        if match is None or not 2 <= int(match.group(2)) <= 16:  # codes exact in a float32 carrier
            raise ScheduleError(
                f"{where}: quantize to an integer type int2..int16 / uint2..uint16 (e.g. 'int8', "
                "'int4') with scale=, or to a fixed-point type such as 'ap_fixed<8,3>'"
            )
        if not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            raise ScheduleError(f"{where}: scale must be a positive finite number (the step of one code), got {scale!r}")
        self._refuse_retyped(buffer, "quantize")
        self._any_sblock_of(buffer, store=True)  # an sblock must write it
        self._hoist_allocation(buffer)
        bits, unsigned = int(match.group(2)), bool(match.group(1))
        lo, hi = (0, 2**bits - 1) if unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        func = _quantize_rewrite(self, buffer, float(scale), lo, hi)
        self._set_func(buffer.func, func)
        sch = self._tir(buffer.func)
        writer = sch.get_sblock(self._any_sblock_of(buffer, store=True))
        index = [w.source.name for w in sch.get(writer).writes].index(buffer.name)
        sch.unsafe_set_dtype(writer, index, str(dtype))
        self._commit(sch)
        func = _codes_through_int32(self._func(buffer.func), self._buffer_var(buffer))
        self._set_func(buffer.func, ann.with_quantized(func, buffer.name, ann.Quantized(str(dtype), float(scale))))

    def _refuse_port(self, buffer: Buffer, what: str, dtype) -> None:
        if self._is_param(buffer):
            port = "an off-chip port" if buffer.func == self.top else f"part of {buffer.func}'s interface"
            raise ScheduleError(
                f"{what}({buffer}, {dtype!r}): it is a parameter ({port}); parameters keep host "
                f"types. {what.capitalize()} an on-chip buffer instead: e.g. accumulate the output "
                "in one with buffer_at and cast that, or cast the intermediate buffer between stages"
            )

    def _refuse_passed(self, buffer: Buffer, what: str, dtype) -> None:
        """A buffer passed to another function keeps the parameter's element type: the
        parameter cannot change (it keeps host types), so neither can the buffer."""
        for c in self._calls_passing(buffer):
            want = _interface(self._func(c.callee), self._param_var(c.callee, c.param))
            raise InterfaceMismatchError(
                f"{what}({buffer}, {dtype!r}): {buffer.func} passes buffer {buffer.name!r} to parameter "
                f"{c.param!r} of {c.callee} ({want}), and a parameter keeps its host type; change the "
                f"type of a buffer inside {c.callee} instead (customize {c.callee} and compose it)"
            )

    def _refuse_retyped(self, buffer: Buffer, what: str) -> None:
        func = self._func(buffer.func)
        if buffer.name in ann.fixed_types(func) or buffer.name in ann.quantized(func):
            raise ScheduleError(f"{what}({buffer}): the buffer already has a fixed-point or quantized type")

    def _fixed_type(self, buffer: Buffer, dtype, what: str):
        """``dtype`` as a fixed-point type, or None when it is not spelled as one."""
        if isinstance(dtype, ann.Fixed):
            return dtype
        try:
            fixed = ann.Fixed.parse(str(dtype))
        except ValueError as exc:
            raise ScheduleError(f"{what}({buffer}, {dtype!r}): {exc}") from None
        if fixed is None and "fixed" in str(dtype):
            raise ScheduleError(
                f"{what}({buffer}, {dtype!r}): spell a fixed-point type as Vitis does: "
                "'ap_fixed<W,I>' or 'ap_ufixed<W,I,ROUNDING,OVERFLOW>'"
            )
        return fixed

    def _set_fixed(self, buffer: Buffer, fixed: ann.Fixed, what: str = "cast") -> None:
        func = self._func(buffer.func)
        if buffer.name in ann.quantized(func):
            raise ScheduleError(f"{what}({buffer}, {fixed}): the buffer is already quantized to integers")
        carrier = str(self._buffer_var(buffer).ty.dtype)
        bits = ann.CARRIER_BITS.get(carrier)
        if bits is None:
            raise ScheduleError(
                f"{what}({buffer}, {fixed}): a fixed-point buffer carries its values as float in TIR; "
                f"{buffer.name} is {carrier}: give it a float32/float64 buffer"
            )
        if fixed.width > bits:
            raise ScheduleError(
                f"{what}({buffer}, {fixed}): {fixed.width} bits do not convert exactly to its {carrier} "
                f"carrier; use a width up to {bits}{' or a float64 buffer' if bits < 53 else ''}"
            )
        self._set_func(buffer.func, ann.with_fixed(func, buffer.name, fixed))

    def _hoist_allocation(self, ref: Buffer) -> None:
        """TVM's buffer primitives (cache_write, unsafe_set_dtype) need a buffer allocated by
        an sblock; ``T.alloc_buffer`` at function level is an AllocBuffer statement instead.
        Move it into the root sblock (same buffer, same place in the HLS)."""
        func = self._func(ref.func)
        root = func.body
        if not isinstance(root, s_tir.SBlockRealize):
            return
        block = root.block
        if any(b.name == ref.name for b in block.alloc_buffers) or self._is_param(ref):
            return
        body = block.body
        seq = list(body.seq) if isinstance(body, tirx.SeqStmt) else [body]
        found = [s for s in seq if isinstance(s, tirx.AllocBuffer) and s.buffer.name == ref.name]
        if not found:
            raise ScheduleError(
                f"buffer {ref} is allocated inside a loop or sblock; this primitive needs a buffer "
                "allocated at function level (move its T.alloc_buffer to the top of the function)"
            )
        rest = [s for s in seq if not s.same_as(found[0])]
        new_block = s_tir.SBlock(
            block.iter_vars, list(block.reads), list(block.writes), block.name_hint,
            tirx.SeqStmt(rest) if len(rest) != 1 else rest[0], block.init,
            [*block.alloc_buffers, found[0].buffer], list(block.match_buffers), block.annotations,
        )
        self._set_func(ref.func, func.with_body(s_tir.SBlockRealize(list(root.iter_values), root.predicate, new_block)))

    @primitive(buffer="buffer", axis="loop")
    def buffer_at(self, buffer, axis):
        """Accumulate ``buffer`` (written by the sblock under ``axis``) in a local buffer the
        size of the region one iteration of ``axis`` writes, and write that region back once
        per iteration. Every reduction loop must be inside ``axis``. Returns the local buffer."""
        where = f"buffer_at({buffer}, {axis})"
        writers = self._accessing_sblocks(buffer, store=True)
        if not writers:
            raise ScheduleError(
                f"{where}: no sblock writes {buffer.name}; buffer_at buffers what a loop nest writes"
            )
        if axis.sblock not in writers:
            raise ScheduleError(
                f"{where}: sblock {axis.sblock} does not write {buffer.name}; it is written by "
                f"{', '.join(writers)}: name a loop above one of those"
            )
        if len(writers) > 1:
            raise ScheduleError(
                f"{where}: {buffer.name} is written by several sblocks ({', '.join(writers)}); "
                "buffer_at needs a single writer (e.g. before decompose_reduction)"
            )
        if buffer.name in ann.streams(self._func(buffer.func)):
            raise ScheduleError(f"{where}: {buffer.name} is a stream; it has no elements to buffer")
        self._check_reductions_inside(buffer, axis, where)
        mine = [a for a in self._accesses(buffer) if a.sblock == axis.sblock]
        _region_below(mine, self._for(axis).loop_var, buffer.name, axis.name, where)
        self._hoist_allocation(buffer)
        before = set(self._buffers(buffer.func))
        sch = self._tir(buffer.func)
        block = sch.get_sblock(axis.sblock)
        index = [w.source.name for w in sch.get(block).writes].index(buffer.name)
        sch.cache_write(block, index, "local")
        self._commit(sch)
        local = next(n for n in self._buffers(buffer.func) if n not in before)
        writeback = next(b for b in self._accessing_sblocks(buffer, store=True) if b != axis.sblock)
        sch = self._tir(buffer.func)
        sch.reverse_compute_at(sch.get_sblock(writeback), self._loop_rv(sch, axis))
        self._commit(sch)
        func = _shrink_local(self, Buffer(buffer.func, local), axis, where)
        fixed = ann.fixed_types(func).get(buffer.name)
        if fixed is not None:  # the accumulation keeps the buffer's fixed-point numerics
            func = ann.with_fixed(func, local, fixed)
        self._set_func(buffer.func, func)
        return Buffer(buffer.func, local)

    def _check_reductions_inside(self, buffer: Buffer, axis: Loop, where: str) -> None:
        """One element must be complete within one iteration of ``axis``: no reduction
        iterator of the writer may move with ``axis`` or a loop outside it."""
        loops = self._loops_above(SBlock(axis.func, axis.sblock))
        names = [l.loop_var.name for l in loops]
        position = names.index(axis.name)
        realize = next(r for r, _ in self._realizes(axis.func) if r.block.name_hint == axis.sblock)
        reducing = [
            k for k, loop in enumerate(loops)
            if any(iv.iter_type == tirx.IterVar.CommReduce and _uses(value, loop.loop_var)
                   for iv, value in zip(realize.block.iter_vars, realize.iter_values))
        ]
        if reducing and reducing[0] <= position:
            valid = names[: reducing[0]]
            raise ScheduleError(
                f"{where}: the reduction loop {names[reducing[0]]} is not inside {axis.name}, so an "
                f"element of {buffer.name} is still accumulating when an iteration of {axis.name} "
                f"ends; choose a loop outside every reduction loop: {', '.join(valid) or 'none (reorder first)'}"
            )

    @primitive(buffer="buffer", axis="loop")
    def reuse_at(self, buffer, axis):
        """Read ``buffer`` through a reuse buffer shifted along loop ``axis``: a line buffer
        for stencils and convolutions (a window buffer when applied to a line buffer).
        Every element of ``buffer`` is then read once. Returns the reuse buffer."""
        new_func, name, kind = _reuse_rewrite(self, buffer, axis)
        new_func = ann.with_reuse(new_func, name, ann.Reuse(buffer.name, axis.name, kind))
        self._set_func(buffer.func, new_func)
        return Buffer(buffer.func, name)

    # ---- communication customizations -----------------------------------------------
    @primitive(buffer="buffer", consumer="consumer")
    def to(self, buffer, consumer=None, depth=2):
        """Turn ``buffer`` into ``hls::stream`` FIFO(s) of ``depth``.

        * An on-chip buffer between its producer and ``consumer`` (an sblock, or a called
          function that reads it): producer and consumer write and read every element
          exactly once, in the same order; leading dimensions indexed only by unfolded
          loops select one stream of an array of streams (a systolic array's links). A call
          passing it must pass it to a stream parameter.
        * A parameter (``consumer`` None, or the sblock that reads it): the function takes a
          stream by reference instead of an array -- part of its interface type, so every
          caller must pass a stream. Read once in order, or written once in order, by one
          stage. (For the top function, ``build`` feeds it from the off-chip port.)"""
        where = f"to({buffer}, {consumer})"
        if isinstance(consumer, SBlock) and buffer.func != consumer.func:
            raise ScheduleError(f"{where}: buffer and consumer are in different functions")
        if not isinstance(depth, int) or depth < 1:
            raise ScheduleError(f"{where}: depth must be a positive int")
        if ann.partitions(self._func(buffer.func)).get(buffer.name):
            raise ScheduleError(f"{where}: the buffer is partitioned; a stream cannot be")
        accesses = self._accesses(buffer)
        calls = self._calls_passing(buffer)
        readers = list(dict.fromkeys([a.sblock for a in accesses if not a.store]
                                     + [c.callee for c in calls if "read" in c.uses]))
        writers = list(dict.fromkeys([a.sblock for a in accesses if a.store]
                                     + [c.callee for c in calls if "write" in c.uses]))
        pair = (f"{buffer.name} is written by {', '.join(writers) or 'nothing'} and read by "
                f"{', '.join(readers) or 'nothing'}")
        array_dims = _stream_array_dims(accesses) if accesses else 0
        if self._is_param(buffer):
            stages = list(dict.fromkeys(readers + writers))
            if consumer is not None and consumer.name not in readers:
                raise ScheduleError(f"{where}: {consumer.name} does not read parameter {buffer.name}; {pair}")
            if readers and writers:
                raise ScheduleError(
                    f"{where}: parameter {buffer.name} is both read and written ({pair}); a stream "
                    "parameter is either an input or an output"
                )
            if len(stages) != 1:
                raise ScheduleError(
                    f"{where}: parameter {buffer.name} is accessed by {', '.join(stages) or 'nothing'}; a "
                    "stream parameter feeds (or is fed by) exactly one stage"
                )
            if array_dims:
                raise ScheduleError(f"{where}: an array of streams cannot be a parameter; stream a single FIFO")
        else:
            if consumer is None:
                raise ScheduleError(
                    f"{where}: name the consumer of on-chip buffer {buffer.name} (an sblock or a called "
                    f"function that reads it); {pair}"
                )
            if consumer.name not in readers or not writers:
                raise ScheduleError(
                    f"{where}: not a producer/consumer pair: {pair}; name a consumer that reads it"
                )
            if calls and array_dims:
                raise ScheduleError(f"{where}: an array of streams cannot be passed to a function")
        shape = _shape(self._buffer_var(buffer))
        for access in accesses:
            _check_stream_order(buffer, access, array_dims, shape)
        for kind in (True, False):
            per_block: dict = {}
            for a in accesses:
                if a.store == kind:
                    per_block[a.sblock] = per_block.get(a.sblock, 0) + 1
            for blk, count in per_block.items():
                if count > 1:
                    raise ScheduleError(
                        f"{where}: sblock {blk} {'writes' if kind else 'reads'} "
                        f"{buffer.name} {count} times per iteration; a stream element can be "
                        f"{'written' if kind else 'read'} once: bind it to a local value first"
                    )
        for c in calls:
            self._check_stream_call(buffer, c, where)
        func = ann.with_stream(self._func(buffer.func), buffer.name, ann.Stream(depth, array_dims))
        self._set_func(buffer.func, func)

    def _check_stream_call(self, buffer: Buffer, c: "_CallUse", where: str) -> None:
        if c.in_loop:
            raise ScheduleError(
                f"{where}: {buffer.func} calls {c.callee} with {buffer.name} inside a loop; a stream "
                "crosses a call whole: call it outside loops"
            )
        if c.uses == {"read", "write"}:
            raise ScheduleError(f"{where}: {c.callee} both reads and writes its parameter {c.param}")
        want = _interface(self._func(c.callee), self._param_var(c.callee, c.param))
        if not want.is_stream:
            raise InterfaceMismatchError(
                f"{where}: {buffer.func} streams buffer {buffer.name!r} into parameter {c.param!r} of "
                f"{c.callee}, which takes an array ({want}); stream the parameter too (to('{c.param}') "
                f"in {c.callee}'s schedule, then compose it), or keep {buffer.name} an array"
            )

    def _param_var(self, func: str, name: str):
        return next(p for p in self._func(func).params if p.name == name)

    def _calls_passing(self, ref: Buffer) -> list["_CallUse"]:
        """Every call in ``ref``'s function that passes ``ref``: callee, parameter, whether
        the callee reads/writes it, and whether the call sits in a loop."""
        var = self._buffer_var(ref)
        found = []
        for call, in_loop in _calls_in(self._func(ref.func).body):
            callee = self._func(call.op.name_hint)
            for arg, param in zip(call.args, callee.params):
                if isinstance(arg, tirx.Var) and arg.same_as(var):
                    uses = self._param_uses(callee_name := call.op.name_hint, param.name)
                    found.append(_CallUse(callee_name, param.name, frozenset(uses), in_loop))
        return found

    def _param_uses(self, func: str, param: str) -> set:
        ref = Buffer(func, param)
        uses = {"write" if a.store else "read" for a in self._accesses(ref)}
        for c in self._calls_passing(ref):
            uses |= c.uses
        return uses

    # ---- composition ----------------------------------------------------------------
    @primitive(callee="func")
    def specialize(self, callee, id):
        """Give call site ``id`` (0-based, in program order) of ``callee`` in the top function
        its own copy ``<callee>_<id>`` of the callee, so it can be customized on its own.
        Returns the copy's name."""
        name = f"{callee.name}_{id}"
        top = self._func(self.top)
        def instance_of(fname):
            attrs = self._func(fname).attrs
            origin = attrs.get(_INSTANCE_OF) if attrs is not None else None
            return str(origin) if origin is not None else fname

        # call sites are numbered in program order among calls of the callee and its copies
        sites = [c for c in _global_calls(top.body) if instance_of(c.op.name_hint) == callee.name]
        try:
            index = int(id)
        except (TypeError, ValueError):
            index = -1
        if not 0 <= index < len(sites):
            raise ScheduleError(
                f"specialize({callee}, id={id!r}): {self.top} calls {callee.name} {len(sites)} "
                f"time(s); id must be 0..{len(sites) - 1}"
            )
        if name in self.function_names():
            raise ScheduleError(f"specialize({callee}, id={id!r}): {name} exists already")
        # fresh variables: a copy sharing nodes with the original could be changed with it
        target = sites[index]
        if target.op.name_hint != callee.name:
            raise ScheduleError(
                f"specialize({callee}, id={id!r}): that call already has its own copy, {target.op.name_hint}"
            )
        copy = s_tir.renew_defs(self._func(callee.name)).with_attrs(
            {"global_symbol": name, _INSTANCE_OF: callee.name}
        )
        gv = tvm.ir.GlobalVar(name)

        def retarget(node):
            if isinstance(node, tvm.ir.Call) and node.same_as(target):
                return tvm.ir.Call(gv, list(node.args))
            return node

        new_top = top.with_body(tvm_ffi.structural_map(top.body, retarget, order="pre"))
        funcs = {g.name_hint: f for g, f in self._mod.functions_items()}
        funcs[self.top] = new_top
        funcs[name] = copy
        self._mod = _module_of(funcs)
        return name

    def compose(self, sub: "Schedule", id=None) -> None:
        """Apply ``sub``'s customizations to the function it customized, inside this module:
        to every call of it, or (with ``id``) to call site ``id`` only, on its own copy.
        Parameter partitions propagate to the caller's buffers; every call is checked."""
        if not isinstance(sub, Schedule):
            raise ScheduleError(f"compose expects a Schedule, got {type(sub).__name__}")
        callee = sub.top
        if callee not in self.function_names():
            raise ScheduleError(
                f"compose: {self.top} has no function {callee!r} to apply the schedule to; the "
                f"functions are {', '.join(self.function_names())}"
            )
        mine, theirs = self._func(callee), sub.original[callee]
        if not tvm_ffi.structural_equal(mine.with_attr("global_symbol", callee), theirs.with_attr("global_symbol", callee)):
            self._check_same_interface(callee, mine, theirs)
            raise ScheduleError(
                f"compose: the schedule was made for a different body of {callee!r} than the one "
                f"{self.top} calls"
            )
        saved = (self._mod, list(self._log))
        try:  # all or nothing: a mismatch leaves the schedule as it was
            target = callee if id is None else self.specialize(callee, id)
            for entry in sub.log:
                entry.renamed({callee: target}).apply(self)
            self._propagate_partitions(target)
            self.check_interfaces(target, pending_streams=True)
        except Exception:
            self._mod, self._log[:] = saved[0], saved[1]
            raise

    def _check_same_interface(self, callee, mine, theirs) -> None:
        for p, q in zip(mine.params, theirs.params):
            a, b = self.interface_type_of(mine, p.name), self.interface_type_of(theirs, q.name)
            if a != b:
                raise InterfaceMismatchError(
                    f"compose: parameter {p.name} of {callee} is {a} in {self.top}'s module but "
                    f"{b} in the composed schedule"
                )

    @staticmethod
    def interface_type_of(func: tirx.PrimFunc, name: str) -> InterfaceType:
        var = next(p for p in func.params if p.name == name) if any(
            p.name == name for p in func.params
        ) else None
        if var is None:
            raise ScheduleError(f"function has no parameter {name!r}")
        return _interface(func, var)

    def interface_type(self, buffer) -> InterfaceType:
        ref = self._buffer(buffer)
        return _interface(self._func(ref.func), self._buffer_var(ref))

    def _call_sites(self):
        """(caller, call, callee) for every call between functions of the module."""
        for caller in self.function_names():
            for call in _global_calls(self._func(caller).body):
                yield caller, call, call.op.name_hint

    def _propagate_partitions(self, callee: str) -> None:
        callee_func = self._func(callee)
        for caller, call, name in list(self._call_sites()):
            if name != callee:
                continue
            for arg, param in zip(call.args, callee_func.params):
                want = ann.partitions(callee_func).get(param.name, ())
                have = ann.partitions(self._func(caller)).get(arg.name, ())
                for part in want:
                    if part not in have and not any(h.dim == part.dim for h in have):
                        self.partition(Buffer(caller, arg.name), part.dim, part.factor, part.kind)

    def check_interfaces(self, callee: str | None = None, *, pending_streams: bool = False) -> None:
        """Raise :class:`InterfaceMismatchError` for the first call (of ``callee``, or of
        any function) whose argument's interface type differs from the callee parameter's.

        ``pending_streams``: accept an array passed to a stream parameter -- compose checks
        so, because the caller streams its buffer only after composing the callee (``to``
        checks the callee's side); ``build`` checks everything."""
        for caller, call, name in self._call_sites():
            if callee is not None and name != callee:
                continue
            func = self._func(name)
            if len(call.args) != len(func.params):
                raise InterfaceMismatchError(
                    f"{caller} calls {name} with {len(call.args)} arguments; it has {len(func.params)} parameters"
                )
            for arg, param in zip(call.args, func.params):
                if not _is_buffer(arg):
                    continue
                have = _interface(self._func(caller), arg)
                want = _interface(func, param)
                if have.accepted_by(want):
                    continue
                only_stream = have.accepted_by(InterfaceType(want.dtype, want.shape, want.partition, None, want.fixed))
                if pending_streams and only_stream and want.is_stream:
                    continue
                if only_stream and want.is_stream:
                    hint = (f"stream it in {caller}: s.to('{caller}:{arg.name}', <the stage that reads it>)"
                            f" (or keep parameter {param.name} of {name} an array)")
                elif only_stream:
                    hint = (f"stream parameter {param.name} of {name} too (to('{param.name}') in its "
                            f"schedule), or keep {arg.name} an array")
                else:
                    hint = ("customize the caller's buffer to match (e.g. the same partition or element "
                            "type), or the callee's parameter")
                raise InterfaceMismatchError(
                    f"{caller} passes buffer {arg.name!r} ({have}) to parameter {param.name!r} of {name} "
                    f"({want}); {hint}"
                )

    # ---- replay ---------------------------------------------------------------------
    def replay(self, log) -> "Schedule":
        """Apply every entry of ``log`` (e.g. another schedule's ``s.log``) here, in order."""
        for entry in log:
            entry.apply(self)
        return self


def _module_of(funcs: dict) -> tvm.IRModule:
    """A module from name -> PrimFunc in which every call refers to the module's GlobalVar."""
    mod = tvm.IRModule({name: funcs[name] for name in sorted(funcs)})
    gvs = {gv.name_hint: gv for gv in mod.get_global_vars()}

    def relink(node):
        if isinstance(node, tvm.ir.Call) and isinstance(node.op, tvm.ir.GlobalVar):
            gv = gvs.get(node.op.name_hint)
            if gv is not None and not gv.same_as(node.op):
                return tvm.ir.Call(gv, list(node.args))
        return node

    for name in sorted(funcs):
        func = mod[name]
        body = tvm_ffi.structural_map(func.body, relink)
        if not body.same_as(func.body):
            mod[gvs[name]] = func.with_body(body)
    return mod


def _interface(func, var) -> InterfaceType:
    return InterfaceType(
        str(var.ty.dtype),
        _shape(var),
        tuple(sorted(ann.partitions(func).get(var.name, ()), key=lambda p: (p.dim, p.kind, p.factor))),
        ann.streams(func).get(var.name),
        ann.fixed_types(func).get(var.name),
    )


def _unfolded(loops) -> list:
    return [l for l in loops if ann.unfold_name(l) is not None]


def _stream_array_dims(accesses: list[_Access]) -> int:
    """How many leading dimensions every access indexes with unfolded loops (or constants)
    only: those select one stream of an array of streams."""
    dims = None
    for a in accesses:
        other = [l.loop_var for l in a.loops if ann.unfold_name(l) is None]
        k = 0
        for index in a.indices:
            if any(_uses(index, v) for v in other):
                break
            k += 1
        dims = k if dims is None else min(dims, k)
    return dims or 0


def _check_stream_order(buffer, access: _Access, array_dims: int, shape) -> None:
    """The access must visit the stream's elements once each, in row-major order, as the
    (non-unfolded) loops around it iterate."""
    loops = [l for l in access.loops if ann.unfold_name(l) is None and _const_int(l.extent) != 1]
    stream_shape = shape[array_dims:]
    what = "writes" if access.store else "reads"
    analyzer = Analyzer()
    flat = tirx.IntImm("int32", 0)
    for index, extent in zip(access.indices[array_dims:], stream_shape):
        flat = flat * extent + index
    linear = tirx.IntImm("int32", 0)
    for loop in loops:
        linear = linear * loop.extent + (loop.loop_var - loop.min)
    extents = [_const_int(l.extent) for l in loops]
    ok = None not in extents and math.prod(extents) == math.prod(stream_shape)
    ok = ok and analyzer.can_prove_equal(flat, linear)
    if not ok:
        hint = "" if access.store else " (read it into a local buffer first, e.g. with reuse_at)"
        raise ScheduleError(
            f"to({buffer}): sblock {access.sblock} {what} {buffer.name} out of stream order: as its "
            f"loops {', '.join(l.loop_var.name for l in loops) or '(none)'} iterate, a stream needs "
            f"every element of {tuple(stream_shape)} {'written' if access.store else 'read'} once, "
            f"in row-major order{hint}"
        )


# ---------------------------------------------------------------------------------------
# reuse_at: the TIR rewrite


def _region(buffer_var, ranges):
    return tvm.ir.TensorRegion(buffer_var, ranges, tirx.BufferRegionType())


def _full(buffer_var):
    return [tvm.ir.Range.from_min_extent(0, d) for d in _shape(buffer_var)]


def _replace(root, target, replacement):
    return tvm_ffi.structural_map(
        root, lambda n: replacement if n is not None and n.same_as(target) else n, order="pre"
    )


def _reuse_rewrite(s: "Schedule", buffer: Buffer, axis: Loop):
    """Line/window buffer of ``buffer`` along loop ``axis``.

    Before: under ``axis`` (extent E) one sblock reads ``buffer`` at ``axis + c`` along one
    dimension d for offsets c in [lo, hi] (R = hi - lo + 1 > 1 of them).
    After: a reuse buffer holds R slices of ``buffer`` (dimension d of extent R); ``axis``
    runs E + R - 1 times; every iteration shifts the slices by one and loads slice
    ``axis + lo`` of ``buffer`` (each element of ``buffer`` is read once), and the sblock
    -- guarded by ``axis >= R - 1``, its ``axis`` binding shifted by R - 1 -- reads the
    reuse buffer at ``c - lo`` along d.
    """
    where = f"reuse_at({buffer}, {axis})"
    func = s._func(buffer.func)
    var = s._buffer_var(buffer)
    loop = s._for(axis)
    lv = loop.loop_var
    extent = _const_int(loop.extent)
    if extent is None or _const_int(loop.min) != 0:
        raise ScheduleError(f"{where}: the loop must start at 0 and have a constant extent")
    under = []
    _walk_sblocks(loop.body, [], lambda r, loops: under.append(r))
    readers = [r.block.name_hint for r in under if any(not a.store for a in _block_accesses(r, var))]
    if not readers:
        raise ScheduleError(f"{where}: no sblock under loop {axis.name} reads {buffer.name}")
    if len(under) != 1:
        raise ScheduleError(
            f"{where}: loop {axis.name} holds the sblocks {', '.join(r.block.name_hint for r in under)}; "
            f"it must hold only the one that reads {buffer.name} (split the nest, e.g. with compute_at)"
        )
    realize = under[0]
    accesses = _block_accesses(realize, var)
    if any(a.store for a in accesses):
        raise ScheduleError(f"{where}: sblock {realize.block.name_hint} also writes {buffer.name}")
    nest = s._loops_above(SBlock(axis.func, realize.block.name_hint))
    position = [l.loop_var.name for l in nest].index(axis.name)
    outer_loops, inner = nest[:position], [l.loop_var for l in nest[position + 1:]]
    outer = [l.loop_var for l in outer_loops]
    analyzer = Analyzer()
    dims, offsets = set(), []
    fixed: dict = {}  # dimension -> index in outer loops only: constant while the axis runs
    for a in accesses:
        along = [d for d, index in enumerate(a.indices) if _uses(index, lv)]
        if len(along) != 1:
            raise ScheduleError(
                f"{where}: {buffer.name}{list(a.indices)} uses loop {axis.name} in "
                f"{len(along)} dimensions; reuse needs exactly one"
            )
        offset = analyzer.simplify(a.indices[along[0]] - lv)
        if not isinstance(offset, tirx.IntImm):
            raise ScheduleError(
                f"{where}: {buffer.name} is indexed by {a.indices[along[0]]} along dimension "
                f"{along[0] + 1}; reuse needs {axis.name} + a constant"
            )
        for d, index in enumerate(a.indices):
            if d == along[0] or not any(_uses(index, v) for v in outer):
                continue
            if any(_uses(index, v) for v in inner) or (
                d in fixed and not analyzer.can_prove_equal(fixed[d], index)
            ):
                raise ScheduleError(
                    f"{where}: dimension {d + 1} of {buffer.name} mixes loops outside and inside "
                    f"{axis.name} (or differs between reads); reuse needs it to depend on one side"
                )
            fixed[d] = index
        dims.add(along[0])
        offsets.append(int(offset.value))
    if len(dims) != 1:
        raise ScheduleError(f"{where}: {buffer.name} is read along loop {axis.name} in several dimensions")
    d = dims.pop()
    lo, hi = min(offsets), max(offsets)
    window = hi - lo + 1
    if window == 1:
        raise ScheduleError(
            f"{where}: no reuse along {axis.name}: every iteration reads {buffer.name} at offset "
            f"{lo} only, so no element is read twice; choose a loop along which the reads overlap "
            "(e.g. the row loop of a stencil)"
        )
    source_is_reuse = buffer.name in ann.reuse_buffers(func)
    kind = "window" if source_is_reuse else "line"
    taken = set(s._buffers(buffer.func))
    base = buffer.name.rsplit("_line", 1)[0] if source_is_reuse else buffer.name
    name = f"{base}_{kind}"
    while name in taken:
        name += "_"
    shape = list(_shape(var))
    new_shape = [window if k == d else 1 if k in fixed else n for k, n in enumerate(shape)]
    dtype = str(var.ty.dtype)
    reuse = tirx.decl_buffer(new_shape, dtype, name)

    # the update: for every other dimension, shift the R slices and load the new one
    new_extent = extent + window - 1
    loop_vars, iter_vars, bound = [], [], []
    v_axis = tirx.Var(f"v_{axis.name}", lv.ty.dtype if hasattr(lv.ty, "dtype") else "int32")
    iter_vars.append(tirx.IterVar(tvm.ir.Range.from_min_extent(0, new_extent), v_axis, tirx.IterVar.Opaque))
    bound.append(lv)
    outer_iters = {}
    for l in outer_loops:
        if any(_uses(e, l.loop_var) for e in fixed.values()):
            v = tirx.Var(f"v_{l.loop_var.name}", "int32")
            iter_vars.append(tirx.IterVar(tvm.ir.Range.from_min_extent(l.min, l.extent), v, tirx.IterVar.Opaque))
            bound.append(l.loop_var)
            outer_iters[l.loop_var] = v
    index_vars = []
    for k, n in enumerate(shape):
        if k == d:
            index_vars.append(None)
            continue
        if k in fixed:
            index_vars.append(tirx.IntImm("int32", 0))
            continue
        u = tirx.Var(f"ax{k}", "int32")
        v = tirx.Var(f"v_ax{k}", "int32")
        loop_vars.append((u, n))
        iter_vars.append(tirx.IterVar(tvm.ir.Range.from_min_extent(0, n), v, tirx.IterVar.DataPar))
        bound.append(u)
        index_vars.append(v)

    def at(slot):
        return [slot if k == d else index_vars[k] for k in range(len(shape))]

    stores = []
    for r in range(window - 1):
        stores.append(tirx.BufferStore(reuse, tirx.BufferLoad(reuse, at(tirx.IntImm("int32", r + 1))), at(tirx.IntImm("int32", r))))
    source_index = [
        v_axis + lo if k == d else _substitute(fixed[k], outer_iters) if k in fixed else index_vars[k]
        for k in range(len(shape))
    ]
    stores.append(tirx.BufferStore(reuse, tirx.BufferLoad(var, source_index), at(tirx.IntImm("int32", window - 1))))

    def point(k, v):
        return tvm.ir.Range.from_min_extent(v, 1)

    reuse_rows = [tvm.ir.Range.from_min_extent(0, window) if k == d else point(k, index_vars[k]) for k in range(len(shape))]
    source_point = [tvm.ir.Range.from_min_extent(i, 1) for i in source_index]
    update_block = s_tir.SBlock(
        iter_vars,
        [_region(reuse, reuse_rows), _region(var, source_point)],
        [_region(reuse, reuse_rows)],
        f"{name}_update",
        tirx.SeqStmt(stores) if len(stores) > 1 else stores[0],
    )
    update = s_tir.SBlockRealize(bound, True, update_block)
    for u, n in reversed(loop_vars):
        update = tirx.For(u, 0, n, tirx.ForKind.SERIAL, update)

    # the consumer: read the reuse buffer; its binding of the axis shifts by R - 1
    block = realize.block
    binding = {iv.var: value for iv, value in zip(block.iter_vars, realize.iter_values)}

    def redirect(node):
        if isinstance(node, tvm.ir.TensorLoad) and node.source.same_as(var):
            flat = [_substitute(i, binding) for i in node.indices]
            slot = int(analyzer.simplify(flat[d] - lv).value) - lo
            return tirx.BufferLoad(
                reuse,
                [tirx.IntImm("int32", slot) if k == d else tirx.IntImm("int32", 0) if k in fixed else i
                 for k, i in enumerate(node.indices)],
            )
        return node

    shifted = {lv: lv - (window - 1)}
    new_block = s_tir.SBlock(
        block.iter_vars,
        [_region(reuse, _full(reuse)) if r.source.same_as(var) else r for r in block.reads],
        list(block.writes),
        block.name_hint,
        tvm_ffi.structural_map(block.body, redirect),
        None if block.init is None else tvm_ffi.structural_map(block.init, redirect),
        list(block.alloc_buffers),
        list(block.match_buffers),
        block.annotations,
    )
    guard = lv >= window - 1
    predicate = guard if _const_int(realize.predicate) == 1 else tirx.And(_substitute(realize.predicate, shifted), guard)
    new_realize = s_tir.SBlockRealize([_substitute(v, shifted) for v in realize.iter_values], predicate, new_block)
    body = _replace(loop.body, realize, new_realize)
    new_loop = tirx.For(lv, 0, new_extent, loop.kind, tirx.SeqStmt([update, body]), None, loop.annotations)

    root = func.body
    if not isinstance(root, s_tir.SBlockRealize):
        raise ScheduleError(f"{where}: function {buffer.func} has no root sblock to hold {name}")
    rb = root.block
    new_root_block = s_tir.SBlock(
        rb.iter_vars, list(rb.reads), list(rb.writes), rb.name_hint,
        _replace(rb.body, loop, new_loop), rb.init, [*rb.alloc_buffers, reuse], list(rb.match_buffers),
        rb.annotations,
    )
    new_func = func.with_body(s_tir.SBlockRealize(list(root.iter_values), root.predicate, new_root_block))
    return new_func, name, kind


def _block_accesses(realize, var) -> list[_Access]:
    block = realize.block
    binding = {iv.var: value for iv, value in zip(block.iter_vars, realize.iter_values)}
    found = []

    def visit(node):
        if isinstance(node, tirx.BufferStore) and node.buffer.same_as(var):
            found.append(_Access(True, block.name_hint, [], [_substitute(i, binding) for i in node.indices], node))
        elif isinstance(node, tvm.ir.TensorLoad) and node.source.same_as(var):
            found.append(_Access(False, block.name_hint, [], [_substitute(i, binding) for i in node.indices], node))

    tvm_ffi.structural_walk(block.body, visit)
    if block.init is not None:
        tvm_ffi.structural_walk(block.init, visit)
    return found


# ---------------------------------------------------------------------------------------
# quantize: the TIR rewrite


def _quantize_rewrite(s: "Schedule", buffer: Buffer, scale: float, lo: int, hi: int):
    """Every store of ``buffer`` keeps ``clamp(round(x / scale), lo, hi)`` and every load
    reads ``x * scale`` (still in the float dtype; ``unsafe_set_dtype`` then narrows the
    buffer, which casts at both ends)."""
    func = s._func(buffer.func)
    var = s._buffer_var(buffer)
    dtype = str(var.ty.dtype)
    if dtype not in ann.CARRIER_BITS:
        raise ScheduleError(f"quantize({buffer}): {buffer.name} is {dtype}; quantize a float32/float64 buffer")
    step = tirx.FloatImm(dtype, scale)
    low, high = tirx.FloatImm(dtype, float(lo)), tirx.FloatImm(dtype, float(hi))

    def rewrite(node):
        if isinstance(node, tirx.BufferStore) and node.buffer.same_as(var):
            code = tirx.max(tirx.min(tirx.round(node.value / step), high), low)
            return tirx.BufferStore(var, code, list(node.indices))
        if isinstance(node, tvm.ir.TensorLoad) and node.source.same_as(var):
            return node * step
        return node

    return func.with_body(tvm_ffi.structural_map(func.body, rewrite))


def _codes_through_int32(func, var):
    """A float code goes to an ``ap_int`` through int32: Xilinx's float -> ap_int conversion
    is not C's truncation for negative fractions (and -0.0), int32 -> ap_int is exact."""
    from codegen_hls.c_types import needs_ap_types

    dtype = str(var.ty.dtype)
    if not needs_ap_types(dtype):
        return func

    def rewrite(node):
        if isinstance(node, tirx.BufferStore) and node.buffer.same_as(var):
            value = node.value
            if isinstance(value, tirx.Cast) and str(value.value.ty.dtype).startswith("float"):
                value = tirx.Cast(dtype, tirx.Cast("int32", value.value))
                return tirx.BufferStore(var, value, list(node.indices))
        return node

    return func.with_body(tvm_ffi.structural_map(func.body, rewrite))


# ---------------------------------------------------------------------------------------
# buffer_at: shrink the local buffer to the region below the axis


def _shrink_local(s: "Schedule", local: Buffer, axis: Loop, where: str):
    """Give ``local`` (a full-size cache of the output) the shape of the region one
    iteration of ``axis`` touches. Per dimension, every access index is ``offset(loops at
    or outside axis) + residual(loops inside)``; the region is the residual's range. The
    offsets must be multiples of the region's extent (aligned tiles), so the local index is
    ``index mod extent`` -- still an expression of the sblock's own iterators. Dimensions
    of extent 1 are dropped."""
    func = s._func(local.func)
    var = s._buffer_var(local)
    shape = _shape(var)
    extents = _region_below(s._accesses(local), s._for(axis).loop_var, local.name, axis.name, where)
    kept = [d for d, e in enumerate(extents) if e > 1] or [len(shape) - 1]
    new_shape = [extents[d] for d in kept]
    new_var = tirx.decl_buffer(new_shape, str(var.ty.dtype), local.name, scope="local")
    domains = Analyzer()

    def bind_iters(node):
        if isinstance(node, s_tir.SBlock):
            for iv in node.iter_vars:
                if isinstance(iv.dom.min, tirx.IntImm) and isinstance(iv.dom.extent, tirx.IntImm):
                    domains.bind(iv.var, iv.dom)

    tvm_ffi.structural_walk(func.body, bind_iters)

    def local_index(indices):
        return [domains.simplify(tirx.floormod(indices[d], extents[d])) for d in kept]

    def rewrite(node):
        if isinstance(node, tirx.BufferStore) and node.buffer.same_as(var):
            return tirx.BufferStore(new_var, node.value, local_index(node.indices))
        if isinstance(node, tvm.ir.TensorLoad) and node.source.same_as(var):
            return tirx.BufferLoad(new_var, local_index(node.indices))
        if isinstance(node, tvm.ir.TensorRegion) and node.source.same_as(var):
            return _region(new_var, _full(new_var))
        if isinstance(node, s_tir.SBlock) and any(b.same_as(var) for b in node.alloc_buffers):
            return s_tir.SBlock(
                node.iter_vars, list(node.reads), list(node.writes), node.name_hint, node.body, node.init,
                [new_var if b.same_as(var) else b for b in node.alloc_buffers], list(node.match_buffers),
                node.annotations,
            )
        return node

    return func.with_body(tvm_ffi.structural_map(func.body, rewrite))


def _region_below(accesses: list, axis_var, name: str, axis_name: str, where: str) -> list[int]:
    """Per dimension, the extent of the region of a buffer that one iteration of the axis
    touches. Every index must be ``offset(loops at or outside the axis) + residual(loops
    inside)`` with the offsets multiples of the extent: disjoint, aligned tiles."""
    analyzer = Analyzer()
    extents = [1] * (len(accesses[0].indices) if accesses else 0)
    split = []  # per access: the offset per dimension
    for a in accesses:
        names = [l.loop_var for l in a.loops]
        position = next((k for k, v in enumerate(names) if v.same_as(axis_var)), None)
        if position is None:
            raise ScheduleError(f"{where}: sblock {a.sblock} accesses {name} outside loop {axis_name}")
        inner = a.loops[position + 1:]
        for loop in a.loops:
            analyzer.bind(loop.loop_var, tvm.ir.Range.from_min_extent(loop.min, loop.extent))
        parts = []
        for d, index in enumerate(a.indices):
            offset = analyzer.simplify(_substitute(index, {l.loop_var: l.min for l in inner}))
            residual = analyzer.simplify(index - offset)
            bound = analyzer.const_int_bound(residual)
            if any(_uses(offset, l.loop_var) for l in inner) or bound.min_value < 0:
                raise ScheduleError(
                    f"{where}: {name} is indexed by {index} along dimension {d + 1}; the "
                    f"region below {axis_name} must be a box offset by the outer loops"
                )
            extents[d] = max(extents[d], int(bound.max_value) + 1)
            parts.append(offset)
        split.append(parts)
    for parts in split:
        for d, offset in enumerate(parts):
            if extents[d] > 1 and not analyzer.can_prove_equal(tirx.floormod(offset, extents[d]), 0):
                raise ScheduleError(
                    f"{where}: the regions of {name} below {axis_name} overlap or are not "
                    f"aligned along dimension {d + 1} (offset {offset}, extent {extents[d]}); "
                    "buffer_at needs each iteration to write its own tile"
                )
    return extents
