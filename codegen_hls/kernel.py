"""One offloaded Relax function -> one Vitis kernel (a complete HLS C++ source file).

Why this shape: the partitioner hands the codegen Relax functions whose body calls
composite functions (one per matched operator). We legalize them to TIR, walk the
bindings in program order, and print every TIR function once as a ``static`` stage
function. The ``extern "C"`` top function owns the AXI ports (one ``m_axi`` bundle per
port, so each can sit on its own HBM bank) and the on-chip buffers between stages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import tvm
from tvm import relax

from tvm_spatial.errors import CodegenError, DynamicShapeError

from .c_types import c_type, needs_ap_types
from .code_writer import CodeWriter
from .design import Design, Kernel, Port
from .printer import FunctionPrinter, Namer, array_declarator

_CALL_TIR = tvm.ir.Op.get("relax.call_tir")


@dataclass(eq=False)
class Slot:
    """A tensor value inside the kernel: a port or an on-chip buffer."""

    dtype: str
    shape: tuple[int, ...]
    hint: str
    cname: str = ""


@dataclass
class Stage:
    prim_name: str  # name of the legalized PrimFunc in the module
    args: list[Slot]  # inputs then outputs (destination-passing style)
    op: str  # the Relax operator (composite name) this stage implements


def _static_shape(ty, what: str) -> tuple[int, ...]:
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        raise CodegenError(f"{what} is not a tensor of known shape ({ty})")
    dims = []
    for i, dim in enumerate(ty.shape.values):
        if not isinstance(dim, tvm.tirx.IntImm):
            raise DynamicShapeError(
                f"{what} has symbolic dimension {i} ({dim}); spatial designs need static "
                "shapes: bind it (e.g. shape_dict / --seq) before building"
            )
        dims.append(int(dim.value))
    return tuple(dims)


def _slot_for(var, hint: str) -> Slot:
    return Slot(str(var.ty.dtype), _static_shape(var.ty, f"tensor {var.name}"), hint)


class _Interpreter:
    """Walks the (legalized) Relax function and records the TIR stages in order."""

    def __init__(self, kernel_name: str) -> None:
        self.kernel_name = kernel_name
        self.stages: list[Stage] = []
        self.ops: list[str] = []  # composite operators, in program order

    def run(self, func: relax.Function, env: dict, op: str) -> object:
        body = func.body
        for block in body.blocks:
            for binding in block.bindings:
                if not isinstance(binding, relax.VarBinding):
                    raise CodegenError(f"{self.kernel_name}: {type(binding).__name__} is not supported")
                env[binding.var] = self.value(binding.value, binding.var, env, op)
        return self.value(body.body, None, env, op)

    def value(self, expr, bound_var, env: dict, op: str):
        if isinstance(expr, relax.Function):
            return expr
        if isinstance(expr, relax.Var):
            return env[expr]
        if isinstance(expr, relax.Tuple):
            return [self.value(e, None, env, op) for e in expr.fields]
        if isinstance(expr, relax.TupleGetItem):
            return self.value(expr.tuple_value, None, env, op)[expr.index]
        if isinstance(expr, tvm.ir.GenericConst):
            raise CodegenError(
                f"{self.kernel_name}: a constant inside an offloaded function; the partitioner "
                "must lift constants to ports (FuseOpsByPattern(bind_constants=False))"
            )
        if isinstance(expr, relax.Call):
            return self.call(expr, bound_var, env, op)
        raise CodegenError(f"{self.kernel_name}: Relax expression {type(expr).__name__} is not supported")

    def call(self, call: relax.Call, bound_var, env: dict, op: str):
        callee = call.op
        if isinstance(callee, relax.Var):
            callee = env[callee]
        if isinstance(callee, relax.Function):
            composite = callee.attrs.get("Composite") if callee.attrs else None
            inner_op = str(composite).split(".", 1)[-1] if composite else op
            args = [self.value(a, None, env, op) for a in call.args]
            inner_env = dict(zip(callee.params, args))
            if composite:
                self.ops.append(inner_op)
            return self.run(callee, inner_env, inner_op)
        if callee.same_as(_CALL_TIR):
            prim = call.args[0].name_hint
            inputs = [self.value(a, None, env, op) for a in call.args[1].fields]
            ty = bound_var.ty if bound_var is not None else call.ty
            if isinstance(ty, relax.TupleType):
                outputs = [
                    Slot(str(t.dtype), _static_shape(t, f"output {i} of {prim}"), f"{prim}_{i}")
                    for i, t in enumerate(ty.fields)
                ]
                result = outputs
            else:
                outputs = [Slot(str(ty.dtype), _static_shape(ty, f"output of {prim}"), prim)]
                result = outputs[0]
            self.stages.append(Stage(prim, [*inputs, *outputs], op))
            return result
        name = callee.name if isinstance(callee, tvm.ir.Op) else str(callee)
        raise CodegenError(
            f"{self.kernel_name}: operator {name} did not lower to TIR and cannot be printed as HLS"
        )


def _flatten(value) -> list[Slot]:
    if isinstance(value, Slot):
        return [value]
    return [s for v in value for s in _flatten(v)]


def _copy_stage(writer: CodeWriter, src: str, dst: str, shape: tuple[int, ...]) -> None:
    """Element-wise copy, for an output that is also an input or appears twice."""
    dims = shape or (1,)
    idx = [f"i{k}" for k in range(len(dims))]
    for k, d in enumerate(dims):
        writer.open(f"for (int {idx[k]} = 0; {idx[k]} < {d}; ++{idx[k]}) {{")
    access = "".join(f"[{i}]" for i in idx)
    writer.line(f"{dst}{access} = {src}{access};")
    for _ in dims:
        writer.close()


def kernel_name_for(func: relax.Function) -> str:
    return str(func.attrs["global_symbol"])


def build_kernel(func: relax.Function) -> tuple[Kernel, bool]:
    """Print one offloaded function. Returns the kernel and whether it uses ap types."""
    name = kernel_name_for(func)
    plain = func
    for attr in ("Codegen", "global_symbol"):
        plain = plain.without_attr(attr)
    legal = relax.transform.LegalizeOps()(tvm.IRModule({"main": plain}))
    main = legal["main"]

    interp = _Interpreter(name)
    params = []
    env = {}
    for p in main.params:
        slot = _slot_for(p, p.name)
        env[p] = slot
        params.append(slot)
    result = interp.run(main, env, "")
    results = _flatten(result)

    namer = Namer(reserved={name})
    ports: list[Port] = []
    copies: list[tuple[Slot, Slot]] = []
    for slot in params:
        slot.cname = namer.fresh(slot.hint)
        ports.append(Port(slot.cname, slot.dtype, slot.shape, "in", f"gmem{len(ports)}"))
    assigned = set(params)
    for i, slot in enumerate(results):
        port_name = namer.fresh("out" if len(results) == 1 else f"out{i}")
        if slot in assigned:
            # the value already has storage (an input, or an earlier output): copy it
            dst = Slot(slot.dtype, slot.shape, port_name, port_name)
            copies.append((slot, dst))
        else:
            slot.cname = port_name
            assigned.add(slot)
        ports.append(Port(port_name, slot.dtype, slot.shape, "out", f"gmem{len(ports)}"))

    w = CodeWriter()
    uses_ap = False
    ops = tuple(interp.ops)
    w.line(f"// Kernel {name}: {', '.join(ops) or 'copy'}")
    w.line("// Generated by tvm-spatial. This file is both the Vitis HLS source and the")
    w.line("// source of the emulation build.")
    w.line(f'#include "{Design.COMMON_HEADER_NAME}"')
    printed: dict[str, str] = {}
    for stage in interp.stages:
        if stage.prim_name in printed:
            continue
        stage_name = f"{name}__{stage.prim_name}"
        printer = FunctionPrinter(legal[stage.prim_name], stage_name)
        printed[stage.prim_name] = stage_name
        w.line()
        for line in printer.print().rstrip("\n").split("\n"):
            w.line(line)
        for param in legal[stage.prim_name].params:
            uses_ap |= needs_ap_types(str(param.ty.dtype))

    w.line()
    port_decls = []
    for port in ports:
        const = "const " if port.direction == "in" else ""
        port_decls.append(f"{const}{c_type(port.dtype)} {array_declarator(port.name, port.shape)}")
    with w.block(f'extern "C" void {name}({", ".join(port_decls)})'):
        for port in ports:
            depth = max(1, port.num_elements)
            w.line(
                f"#pragma HLS INTERFACE m_axi port={port.name} offset=slave "
                f"bundle={port.bundle} depth={depth}"
            )
        for port in ports:
            w.line(f"#pragma HLS INTERFACE s_axilite port={port.name}")
        w.line("#pragma HLS INTERFACE s_axilite port=return")
        for stage in interp.stages:
            for slot in stage.args:
                if not slot.cname:
                    slot.cname = namer.fresh(re.sub(r"\W", "_", slot.hint))
                    w.line(f"static {c_type(slot.dtype)} {array_declarator(slot.cname, slot.shape)};")
                uses_ap |= needs_ap_types(slot.dtype)
            args = ", ".join(slot.cname for slot in stage.args)
            w.line(f"{printed[stage.prim_name]}({args});  // {stage.op}")
        for src, dst in copies:
            _copy_stage(w, src.cname, dst.cname, src.shape)
    return Kernel(name=name, source=w.text(), ports=tuple(ports), ops=ops), uses_ap


def common_header(uses_ap: bool) -> str:
    """The shared header every kernel includes: includes and small helpers."""
    w = CodeWriter()
    w.line("// Shared definitions of the kernels of one tvm-spatial design.")
    w.line("#ifndef TVM_SPATIAL_HLS_H_")
    w.line("#define TVM_SPATIAL_HLS_H_")
    w.lines(["#include <cmath>", "#include <cstdint>"])
    if uses_ap:
        w.lines(["#include <ap_int.h>", "#include <ap_fixed.h>"])
    w.line()
    w.line("template <typename T>")
    w.line("static inline T tvs_min(T a, T b) { return a < b ? a : b; }")
    w.line("template <typename T>")
    w.line("static inline T tvs_max(T a, T b) { return a > b ? a : b; }")
    w.line("template <typename T>")
    with w.block("static inline T tvs_floordiv(T a, T b)"):
        w.line("T q = a / b;")
        w.line("return (q * b != a && ((a < 0) != (b < 0))) ? q - 1 : q;")
    w.line("template <typename T>")
    with w.block("static inline T tvs_floormod(T a, T b)"):
        w.line("T r = a % b;")
        w.line("return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;")
    w.line()
    w.line("#endif  // TVM_SPATIAL_HLS_H_")
    return w.text()


def build_design(funcs, device: str, host_ops=()) -> Design:
    """All offloaded functions of one build, in a stable (name-sorted) order."""
    kernels = []
    uses_ap = False
    for func in sorted(funcs, key=kernel_name_for):
        kernel, ap = build_kernel(func)
        kernels.append(kernel)
        uses_ap |= ap
    return Design(
        device=device,
        kernels=tuple(kernels),
        common_header=common_header(uses_ap),
        host_ops=tuple(host_ops),
    )
