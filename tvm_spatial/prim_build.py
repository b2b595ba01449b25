"""``tvm_spatial.build(s)``: a customized TensorIR module -> one Vitis kernel you can call.

The customized module (``tvm_spatial.customize(...)``) becomes a :class:`Design` with one
kernel: every PrimFunc reachable from the top function is printed once, callees first, as a
``static`` function by ``codegen_hls.printer`` (which turns the schedule's annotations into
pragmas and structures); an ``extern "C"`` top function owns the AXI ports. The design is
then what a ``relax.build`` design is: ``codegen_hls.emulation`` compiles the same C++ for
the callable module, and ``codegen_hls.project`` writes it as a Vitis project.

Partitioned top-level parameters: an ``m_axi`` port cannot be partitioned, so the top
function copies such a port into an on-chip array with the parameter's partition (and back
out if the kernel writes it) -- the interface the customized function declared. Likewise a
streamed parameter (``to`` on it): the top function feeds it from the port (or drains it
into the port) as one more stage of a dataflow region.
"""

from __future__ import annotations

import re

import numpy as np
import tvm
from tvm import tirx

import tvm_spatial.annotations as ann  # not "from . import": see schedule.py

from .errors import EmulationError, SpatialError
from .schedule import Schedule, customize

__all__ = ["SpatialModule", "build", "build_many", "kernel_of"]


def _order(mod: tvm.IRModule, top: str) -> list[str]:
    """Functions reachable from ``top``, callees before callers."""
    from .schedule import _global_calls

    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise SpatialError(f"function {name} calls itself (recursion cannot become hardware)")
        visiting.add(name)
        for call in _global_calls(mod[name].body):
            visit(call.op.name_hint)
        visiting.discard(name)
        order.append(name)

    visit(top)
    return order


def _buffers_of(func) -> list:
    found = list(p for p in func.params if hasattr(p.ty, "shape"))

    def visit(node):
        if isinstance(node, tvm.s_tir.SBlock):
            found.extend(node.alloc_buffers)
        elif isinstance(node, tirx.AllocBuffer):
            found.append(node.buffer)

    import tvm_ffi

    tvm_ffi.structural_walk(func.body, visit)
    return found


def kernel_of(s, name: str | None = None):
    """(Kernel, uses_ap_types) of a customized module; the kernel is named ``name``
    (default: the top function's name)."""
    from codegen_hls.c_types import c_type, needs_ap_types
    from codegen_hls.code_writer import CodeWriter
    from codegen_hls.design import Kernel, Port
    from codegen_hls.printer import FunctionPrinter, Namer, array_declarator, buffer_shape
    from codegen_hls.kernel import top_declaration, write_port_interfaces, write_preamble

    s = s if isinstance(s, Schedule) else customize(s)
    s.check_interfaces()
    mod, top = s.module, s.top
    kernel_name = name or top
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", kernel_name):
        raise SpatialError(f"kernel name {kernel_name!r} is not a C identifier; pass name=...")
    order = _order(mod, top)
    cnames = {f: f"{kernel_name}__{f}" for f in order}
    callees: dict = {}
    texts = []
    uses_ap = uses_stream = False
    for fname in order:
        func = mod[fname]
        printer = FunctionPrinter(func, cnames[fname], callees=dict(callees))
        texts.append(printer.print())
        written = printer.written_buffers()
        callees[fname] = (cnames[fname], frozenset(i for i, p in enumerate(func.params) if p in written))
        uses_ap |= any(needs_ap_types(str(b.ty.dtype)) for b in _buffers_of(func))
        uses_ap |= bool(ann.fixed_types(func))
        uses_stream |= bool(ann.streams(func))

    top_func = mod[top]
    top_writes = callees[top][1]
    namer = Namer(reserved={kernel_name, *cnames.values()})
    ports = []
    for i, param in enumerate(top_func.params):
        pname = namer.fresh(param.name)
        direction = "out" if i in top_writes else "in"
        ports.append(Port(pname, str(param.ty.dtype), buffer_shape(param), direction, f"gmem{i}"))

    w = CodeWriter()
    write_preamble(w, kernel_name, f"customized TensorIR ({', '.join(order)})")
    if uses_stream:
        w.line("#include <hls_stream.h>")
    for text in texts:
        w.line()
        for line in text.rstrip("\n").split("\n"):
            w.line(line)
    w.line()
    parts = ann.partitions(top_func)
    port_streams = {n: st for n, st in ann.streams(top_func).items() if any(q.name == n for q in top_func.params)}
    with w.block(top_declaration(kernel_name, ports)):
        write_port_interfaces(w, ports)
        if port_streams:
            w.line("#pragma HLS DATAFLOW")
        args = []
        copies_out = []
        stream_outs = []
        for param, p in zip(top_func.params, ports):
            stream = port_streams.get(param.name)
            if stream is not None:
                local = namer.fresh(f"{p.name}_stream")
                w.line(f"static hls::stream<{c_type(p.dtype)}> {local};")
                w.line(f"#pragma HLS STREAM variable={local} depth={stream.depth}")
                if p.direction == "in":
                    _copy(w, p.name, local, p.shape, into_stream=True)
                else:
                    stream_outs.append((local, p.name, p.shape))
                args.append(local)
                continue
            layout = parts.get(param.name, ())
            if not layout:
                args.append(p.name)
                continue
            local = namer.fresh(f"{p.name}_onchip")
            w.line(f"static {c_type(p.dtype)} {array_declarator(local, p.shape)};")
            for part in layout:
                w.line(part.pragma(local))
            _copy(w, p.name, local, p.shape)
            if p.direction == "out":
                copies_out.append((local, p.name, p.shape))
            args.append(local)
        w.line(f"{cnames[top]}({', '.join(args)});")
        for src, dst, shape in copies_out:
            _copy(w, src, dst, shape)
        for src, dst, shape in stream_outs:
            _copy(w, src, dst, shape, from_stream=True)
    kernel = Kernel(name=kernel_name, source=w.text(), ports=tuple(ports), ops=tuple(order))
    return kernel, uses_ap


def _copy(w, src: str, dst: str, shape, *, into_stream=False, from_stream=False) -> None:
    """Copy an array element by element (into or out of a stream: in row-major order)."""
    dims = shape or (1,)
    idx = [f"i{k}" for k in range(len(dims))]
    for k, d in enumerate(dims):
        w.open(f"for (int {idx[k]} = 0; {idx[k]} < {d}; ++{idx[k]}) {{")
    if len(dims) == len(idx):
        w.line("#pragma HLS PIPELINE II=1")
    access = "".join(f"[{i}]" for i in idx)
    if into_stream:
        w.line(f"{dst}.write({src}{access});")
    elif from_stream:
        w.line(f"{dst}{access} = {src}.read();")
    else:
        w.line(f"{dst}{access} = {src}{access};")
    for _ in dims:
        w.close()


def _device_key(target) -> str:
    from .target import device_of, is_spatial_target

    tgt = tvm.target.Target(target) if not isinstance(target, tvm.target.Target) else target
    if not is_spatial_target(tgt):
        raise SpatialError(f"tvm_spatial.build targets vitis_spatial (or vitis_spatial/<card>), not {target}")
    return device_of(tgt).key


def _design(kernels_and_ap, device: str):
    from codegen_hls.design import Design
    from codegen_hls.kernel import common_header

    kernels = tuple(k for k, _ in kernels_and_ap)
    names = [k.name for k in kernels]
    if len(set(names)) != len(names):
        raise SpatialError(f"kernel names must be unique in one design: {names}")
    return Design(
        device=device,
        kernels=kernels,
        common_header=common_header(any(ap for _, ap in kernels_and_ap)),
        host_ops=(),
    )


class SpatialModule:
    """One kernel of a built design: call it with numpy arrays (emulation), read its HLS
    text, write its Vitis project.

    Call with every parameter (outputs are written in place, as in Allo, and returned) or
    with the inputs only (outputs are allocated and returned)."""

    def __init__(self, design, kernel_name: str, shared: dict | None = None) -> None:
        self.design = design
        self.kernel = next(k for k in design.kernels if k.name == kernel_name)
        self._shared = shared if shared is not None else {}

    @property
    def hls_code(self) -> str:
        return self.kernel.source

    def __repr__(self) -> str:
        return f"<SpatialModule {self.kernel.name}: {', '.join(f'{p.direction} {p.name}' for p in self.kernel.ports)}>"

    def _library(self):
        """The compiled design, linked into a shared library and loaded (once per design)."""
        if "lib" not in self._shared:
            import os
            import tempfile

            from codegen_hls.emulation import emulation_module

            path = os.path.join(tempfile.mkdtemp(prefix="tvm_spatial_build_"), "design.so")
            emulation_module(self.design).export_library(path)
            self._shared["lib"] = tvm.runtime.load_module(path)
        return self._shared["lib"]

    def __call__(self, *args):
        ports = self.kernel.ports
        inputs = [p for p in ports if p.direction == "in"]
        if len(args) == len(ports):
            given = dict(zip((p.name for p in ports), args))
        elif len(args) == len(inputs):
            given = dict(zip((p.name for p in inputs), args))
        else:
            raise EmulationError(
                f"kernel {self.kernel.name} takes all its parameters ({', '.join(p.name for p in ports)}) "
                f"or its inputs ({', '.join(p.name for p in inputs)}); got {len(args)} arrays"
            )
        tensors = []
        for p in ports:
            value = given.get(p.name)
            if value is None:
                array = np.zeros(p.shape, dtype=p.dtype)
            else:
                array = np.asarray(value)
                if array.shape != tuple(p.shape) or array.dtype != np.dtype(p.dtype):
                    raise EmulationError(
                        f"kernel {self.kernel.name}: {p.name} expects {p.dtype}{list(p.shape)}, "
                        f"got {array.dtype}{list(array.shape)}"
                    )
            tensors.append(tvm.runtime.tensor(np.ascontiguousarray(array)))
        self._library()[self.kernel.name](*tensors)
        outs = []
        for p, t in zip(ports, tensors):
            if p.direction != "out":
                continue
            result = t.numpy()
            target = given.get(p.name)
            if isinstance(target, np.ndarray) and target.flags.writeable:
                np.copyto(target, result)
            outs.append(result)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def export_project(self, out_dir, *, force: bool = False):
        """Write the Vitis project of this design (see ``codegen_hls.project``)."""
        from codegen_hls.project import write_project

        return write_project(self.design, out_dir, force=force)


def build(s, target="vitis_spatial", *, name: str | None = None) -> SpatialModule:
    """Build a customized module (a :class:`Schedule`, or a plain PrimFunc/IRModule) into a
    callable :class:`SpatialModule` whose kernel is ``name`` (default: the top function)."""
    kernel, ap = kernel_of(s, name)
    design = _design([(kernel, ap)], _device_key(target))
    return SpatialModule(design, kernel.name)


def build_many(schedules: dict, target="vitis_spatial") -> dict[str, SpatialModule]:
    """Several kernels (name -> schedule) in one design, compiled once for emulation."""
    built = [kernel_of(s, name) for name, s in schedules.items()]
    design = _design(built, _device_key(target))
    shared: dict = {}
    return {k.name: SpatialModule(design, k.name, shared) for k, _ in built}
