"""One offloaded Relax function -> one Vitis kernel: a spatial dataflow design.

Why this shape: every operator instance the partitioner matched (a composite function)
becomes its own *process* — an HLS function with its own hardware — and the kernel's
``extern "C"`` top function is a ``#pragma HLS DATAFLOW`` region calling them all.
Activations flow between processes through ``hls::stream`` FIFOs in row-major order, a
packet of up to ``STREAM_PACKET`` elements per transfer, never through off-chip memory. Every tensor the caller passes
(weights, model inputs) is an AXI master port; a tensor read by several processes gets
one port (and bundle, hence memory bank) per reader, since a dataflow process must own
its interfaces. Model outputs are written to AXI master ports.

A process reads each input stream completely into an on-chip buffer (or a token block at
a time: ``codegen_hls.token_blocks``), runs the operator's TIR stages (printed by
:mod:`codegen_hls.printer`), and writes each output to all its consumers at once. A
process with several stream inputs reads them in turn, so some streams must hold what
arrives before their reader gets to them: each stream's depth is found by simulating the
region with bounded FIFOs (``codegen_hls.fifo_depths``), which also proves it free of
deadlock.

SLRs: each process gets an SLR from a contiguous, work-balanced split of the chain
(``_slrs``, cuts moved to where few streams cross). A region spanning several SLRs is
printed as one ``extern "C"`` DATAFLOW top per SLR segment (``<region>_slr<n>``), each
with the m_axi ports its processes use and an ``axis`` argument per stream crossing its
boundary, plus, outside synthesis (``#ifndef __SYNTHESIS__``), the region's entry point
calling the segments in order with the crossing streams as locals (``hls::stream`` is
unbounded in C simulation, so each segment can run to completion before the next). A
region on one SLR is printed exactly as before: one top, no wrapper.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

import tvm
import tvm_ffi
from tvm import relax, s_tir

from relax_passes.layer_reuse import CALLS_ATTR
from relax_passes.token_split import CHUNKS_ATTR
from tvm_spatial.devices import get_device
from tvm_spatial.errors import CodegenError, DynamicShapeError

from .c_types import PACKET, c_type, needs_ap_types, stream_element
from .code_writer import CodeWriter
from . import kv_update
from .design import AxisPort, Design, Kernel, Port, Process, Segment, Stream
from .fifo_depths import Read, ReadEach, Write, size_fifos
from .kv_update import KV_APPEND_OP, cache_slot
from .layer_loop import LayerLoop, find_loop
from .engine import ENGINE_OP, chunk_runs, engine_runs, merge
from .library import MacArray, keep_pace_lanes, matmul_info, prepare_for_hls
from .weight_stripes import stripe_shape, weight_stripes
from .printer import FunctionPrinter, Namer, array_declarator, shared_storage

_CALL_TIR = tvm.ir.Op.get("relax.call_tir")
# Operators that keep the row-major element order: free on a stream.
_STREAM_VIEWS = frozenset({"reshape", "squeeze", "expand_dims"})
# Operators whose matmul stage gets a MAC array (the analytical model's matmul processes).
MATMUL_OPS = ("linear", "attention_scores", "attention_context", "matmul")
SHALLOW_STREAM_DEPTH = 2
# Elements per stream transfer at most: a packet of 16 keeps up with 16 lanes (512 bits of fp32).
STREAM_PACKET = 16
STRIPE_BUNDLE = "wstripe"  # the m_axi bundles weight stripes share (_KernelWriter.stripe_weights)
LAYER_VAR = "layer"  # a layer loop's counter (_KernelWriter.print_interleaved)


def port_width(shape) -> int:
    """Elements a copy loop moves per cycle between a buffer and an m_axi port: up to
    ``STREAM_PACKET`` (16 floats: one 512-bit beat) of the last dimension; a row whose length
    it does not divide ends with a tail of single elements (``_copy_rows``)."""
    return min(STREAM_PACKET, shape[-1]) if shape else 1


def port_copy_cycles(shape) -> int:
    """Cycles of ``_copy_rows`` over ``shape``: per row, its packets and then its tail."""
    if not shape:
        return 1
    width = port_width(shape)
    rows = math.prod(shape[:-1])
    return rows * (shape[-1] // width + shape[-1] % width)


def _copy_rows(w: CodeWriter, shape, statements) -> None:
    """Row-major loops over ``shape`` running ``statements(index expressions)``, the last
    dimension ``port_width`` elements per pipelined iteration, then its tail one at a time."""
    dims = tuple(shape or (1,))
    width = port_width(dims)
    if width == 1:
        _loop_nest(w, dims, statements([f"i{k}" for k in range(len(dims))]))
        return
    full, tail = dims[-1] // width, dims[-1] % width
    outer = [f"i{k}" for k in range(len(dims) - 1)]
    for k, d in enumerate(dims[:-1]):
        w.open(f"for (int i{k} = 0; i{k} < {d}; ++i{k}) {{")
    w.open(f"for (int j = 0; j < {full}; ++j) {{")
    w.line("#pragma HLS PIPELINE II=1")
    w.open(f"for (int e = 0; e < {width}; ++e) {{")
    w.line("#pragma HLS UNROLL")
    w.lines(statements([*outer, f"j * {width} + e"]))
    w.close()
    w.close()
    if tail:
        w.open(f"for (int t = 0; t < {tail}; ++t) {{")
        w.line("#pragma HLS PIPELINE II=1")
        w.lines(statements([*outer, f"{full * width} + t"]))
        w.close()
    for _ in dims[:-1]:
        w.close()


@dataclass(eq=False)
class Slot:
    """A tensor value of the region: a caller argument, or produced by a process stage."""

    dtype: str
    shape: tuple[int, ...]
    hint: str
    producer: "Proc | None" = None
    arg: int = -1  # caller argument index, for region parameters
    cname: str = ""
    views: list = field(default_factory=list)  # reshaped aliases read from this slot's stream
    view_of: "Slot | None" = None  # for such an alias: the slot whose stream it reads

    @property
    def elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class Stage:
    prim_name: str  # name of the legalized PrimFunc
    args: list[Slot]  # inputs then outputs (destination-passing style)


@dataclass(eq=False)
class Proc:
    op: str
    inputs: list[Slot] = field(default_factory=list)
    outputs: list[Slot] = field(default_factory=list)
    stages: list[Stage] = field(default_factory=list)
    name: str = ""
    args: list = field(default_factory=list)  # the operator's arguments, one per parameter
    source: "relax.Function | None" = None  # the operator's Relax function before legalization
    separable: bool = False  # row-wise: may run in token blocks (codegen_hls.token_blocks)
    rows: int = 0  # tokens per block as built (0: whole tensors)
    blocks: int = 1  # blocks per call
    block_slot: dict = field(default_factory=dict)  # id(input/output slot) -> its block-sized slot
    causal: bool = False  # a blocked causal attention: block b needs K and V blocks 0..b only
    prologue: int = 0  # its first stages, which read no stream: printed before the stream reads
    members: tuple = ()  # an engine's element-wise operators, in order (codegen_hls.engine)
    linear_stages: frozenset = frozenset()  # and id() of its linears' stages: the ones on its array
    member_of: dict = field(default_factory=dict)  # and id() of its members' stages -> index in members
    macs: int = 0  # an engine's multiply-accumulates done by lanes (its attentions' QK^T and AV)


def _attention_macs(proc: Proc) -> int:
    """Multiply-accumulates of a fused attention's QK^T and AV over every head."""
    if len(proc.args) < 3:
        return 0
    q, k = proc.args[0].shape, proc.args[1].shape
    return 2 * q[-2] * k[-2] * q[-1]


def _static_shape(ty, what: str) -> tuple[int, ...]:
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        raise CodegenError(f"{what} is not a tensor of known shape ({ty})")
    dims = []
    for i, dim in enumerate(ty.shape.values):
        if not isinstance(dim, tvm.tirx.IntImm):
            raise DynamicShapeError(
                f"{what} has symbolic dimension {i} ({dim}); spatial designs need static "
                "shapes: bind it (e.g. shape_dict / --shape) before building"
            )
        dims.append(int(dim.value))
    return tuple(dims)


def _flatten(value) -> list[Slot]:
    if isinstance(value, Slot):
        return [value]
    return [s for v in value for s in _flatten(v)]


class _Interpreter:
    """Walks the legalized region: composite calls become processes, TIR calls stages."""

    def __init__(self, kernel_name: str) -> None:
        self.kernel_name = kernel_name
        self.procs: list[Proc] = []

    def run(self, func: relax.Function, env: dict, proc: Proc | None):
        body = func.body
        for block in body.blocks:
            for binding in block.bindings:
                if not isinstance(binding, relax.VarBinding):
                    raise CodegenError(f"{self.kernel_name}: {type(binding).__name__} is not supported")
                env[binding.var] = self.value(binding.value, binding.var, env, proc)
        return self.value(body.body, None, env, proc)

    def value(self, expr, bound_var, env: dict, proc: Proc | None):
        if isinstance(expr, relax.Function):
            return expr
        if isinstance(expr, relax.Var):
            return env[expr]
        if isinstance(expr, relax.Tuple):
            return [self.value(e, None, env, proc) for e in expr.fields]
        if isinstance(expr, relax.TupleGetItem):
            return self.value(expr.tuple_value, None, env, proc)[expr.index]
        if isinstance(expr, tvm.ir.GenericConst):
            raise CodegenError(
                f"{self.kernel_name}: a constant inside an offloaded function; the partitioner "
                "must lift constants to ports (FuseOpsByPattern(bind_constants=False))"
            )
        if isinstance(expr, relax.Call):
            return self.call(expr, bound_var, env, proc)
        raise CodegenError(f"{self.kernel_name}: Relax expression {type(expr).__name__} is not supported")

    def call(self, call: relax.Call, bound_var, env: dict, proc: Proc | None):
        callee = env[call.op] if isinstance(call.op, relax.Var) else call.op
        args = None
        if isinstance(callee, relax.Function):
            args = [self.value(a, None, env, proc) for a in call.args]
            composite = callee.attrs.get("Composite") if callee.attrs else None
            if proc is None:
                # a matched operator instance: a process of its own
                op = str(composite).split(".", 1)[-1] if composite else "region"
                proc = Proc(op=op, inputs=_unique(_flatten(args)), args=args)
                self.procs.append(proc)
                result = self.run(callee, dict(zip(callee.params, args)), proc)
                proc.outputs = _unique(_flatten(result))
                return result
            return self.run(callee, dict(zip(callee.params, args)), proc)
        if callee.same_as(_CALL_TIR):
            if proc is None:
                raise CodegenError(f"{self.kernel_name}: TIR call outside a matched operator")
            prim = call.args[0].name_hint
            inputs = [self.value(a, None, env, proc) for a in call.args[1].fields]
            ty = bound_var.ty if bound_var is not None else call.ty
            types = list(ty.fields) if isinstance(ty, relax.TupleType) else [ty]
            outputs = [
                Slot(str(t.dtype), _static_shape(t, f"output {i} of {prim}"), prim, producer=proc)
                for i, t in enumerate(types)
            ]
            proc.stages.append(Stage(prim, [*inputs, *outputs]))
            return outputs if isinstance(ty, relax.TupleType) else outputs[0]
        name = callee.name if isinstance(callee, tvm.ir.Op) else str(callee)
        raise CodegenError(f"{self.kernel_name}: operator {name} did not lower to TIR and cannot be printed as HLS")


def _unique(slots: list[Slot]) -> list[Slot]:
    seen: list[Slot] = []
    for slot in slots:
        if not any(slot is s for s in seen):
            seen.append(slot)
    return seen


def kernel_name_for(func: relax.Function) -> str:
    return str(func.attrs["global_symbol"])


def _work(prim: tvm.tirx.PrimFunc) -> int:
    """Total iterations of all sblocks: the operator's amount of arithmetic, roughly."""
    total = [0]

    def visit(node):
        if isinstance(node, s_tir.SBlock) and len(node.iter_vars):
            n = 1
            for iv in node.iter_vars:
                n *= int(iv.dom.extent) if isinstance(iv.dom.extent, tvm.tirx.IntImm) else 1
            total[0] += n

    tvm_ffi.structural_walk(prim.body, visit)
    return total[0]


def _layers(procs: list[Proc]) -> list[int]:
    """Layer of each process: two residual additions close a transformer layer."""
    layers, residuals = [], 0
    for proc in procs:
        layers.append(residuals // 2)
        residuals += (proc.op == "residual_add") + proc.members.count("residual_add")  # an engine's too
    return layers


# How far (a fraction of one SLR's share of the work) a cut may move from the balanced
# position to find a place where fewer streams cross between SLRs.
CUT_SLACK = 0.15


def _slrs(works: list[int], slrs: int, links=()) -> list[int]:
    """Contiguous, work-balanced split of the process chain over the device's SLRs.

    ``links``: (producer index, consumer index) of every stream. Each stream crossing a cut
    becomes an AXI-stream link between two kernels (and SLL wires), so each cut moves, within
    ``CUT_SLACK`` of its balanced place, to where the fewest streams cross (e.g. between
    layers rather than inside attention), nearest the balanced place on a tie."""
    total = sum(works) or 1
    result, acc = [], 0
    for w in works:
        result.append(min(slrs - 1, (acc + w / 2) * slrs // total))
        acc += w
    result = [int(r) for r in result]
    bounds = [i for i in range(1, len(result)) if result[i] != result[i - 1]]  # balanced cuts
    if not links or not bounds:
        return result
    prefix = [0]
    for w in works:
        prefix.append(prefix[-1] + w)
    share = total / slrs
    cuts, prev = [], 0
    for k, balanced in enumerate(bounds):
        target = result[balanced] * share  # where this SLR's share of the work begins
        limit = bounds[k + 1] if k + 1 < len(bounds) else len(works)

        def cost(c, target=target, balanced=balanced):
            crossing = sum(1 for a, b in links if a < c <= b)
            return crossing, abs(prefix[c] - target), abs(c - balanced)

        candidates = [c for c in range(prev + 1, limit)
                      if abs(prefix[c] - target) <= CUT_SLACK * share or c == balanced]
        prev = min(candidates or [balanced], key=cost)
        cuts.append(prev)
    labels = [result[0]] + [result[b] for b in bounds]
    return [labels[sum(1 for c in cuts if i >= c)] for i in range(len(works))]


def _loop_nest(w: CodeWriter, shape: tuple[int, ...], body: list[str], pipeline: bool = True) -> None:
    """Row-major loops over ``shape`` around ``body`` (which indexes with ``[i0][i1]...``)."""
    dims = shape or (1,)
    for k, d in enumerate(dims):
        w.open(f"for (int i{k} = 0; i{k} < {d}; ++i{k}) {{")
    if pipeline:
        w.line("#pragma HLS PIPELINE II=1")
    w.lines(body)
    for _ in dims:
        w.close()


def _indexed(name: str):
    """Index expressions -> ``name[e0][e1]..``: how the copy loops address a buffer or port."""
    return lambda idx: name + "".join(f"[{i}]" for i in idx)


def _packets(shape, width: int) -> tuple[tuple[int, ...], list[str]]:
    """(loop shape, element index expressions) of a copy moving ``width`` elements of the
    last dimension per iteration, the element being ``e`` of an unrolled inner loop."""
    rank = len(shape)
    return (*shape[:-1], shape[-1] // width), [f"i{k}" for k in range(rank - 1)] + [f"i{rank - 1} * {width} + e"]


def _index(shape: tuple[int, ...]) -> str:
    return "".join(f"[i{k}]" for k in range(len(shape or (1,))))


class _KernelWriter:
    """Decides every tensor's storage (port, stream, buffer) and prints the kernel."""

    def __init__(self, name: str, legal: tvm.IRModule, interp: _Interpreter, params, results, device,
                 arrays=None, slrs: int | None = None, placement=None, rows: int | None = None,
                 chunks: int = 0) -> None:
        self.name = name
        self.chunks = chunks  # a token-split region's chunks, each one engine (0: not split)
        if slrs is not None and not 1 <= slrs <= device.slrs:
            raise CodegenError(f"{name}: {slrs} SLRs requested; {device.name} has {device.slrs}")
        self.slr_count = slrs or device.slrs  # how many SLRs the processes are spread over
        # process name -> SLR, overriding the work-balanced split (tuned SLR cuts, or the user's)
        self.placement = dict(placement or {})
        self.rows = rows  # tokens per block of row-wise processes (None: whole tensors)
        self.block_prims: dict[str, tvm.tirx.PrimFunc] = {}  # stage functions of blocked processes
        # process name -> (rows, cols) of a matmul process's MAC array, or the lanes (an
        # int: elements per cycle) of any other process (``tvm_spatial.estimate.Allocation``)
        self.arrays = dict(arrays or {})
        self.nests: dict[tuple, tuple] = {}  # (stage PrimFunc name, MAC lanes) -> its loop nests (codegen_hls.lanes)
        self.matmuls: dict = {}  # stage PrimFunc name -> matmul_info (None: not a matmul)
        self.legal = legal
        self.procs = interp.procs
        self.params = params
        self.results = results
        self.device = device
        self.namer = Namer(reserved={name})
        self.ports: list[Port] = []
        self.port_of: dict = {}  # (slot id, proc id) -> port name, for reading region arguments
        self.out_ports: dict = {}  # slot id -> [port names] it must be written to
        self.streams: list[Stream] = []
        self.stream_of: dict = {}  # (slot id, consumer proc id) -> stream name
        self.stripes: dict = {}  # (weight slot id, proc id) -> the Ports of its stripes (stripe_weights)
        self.loops: dict[int, LayerLoop] = {}  # id(engine) -> its layer loop (loop_layers)
        self.stacked: set = set()  # (slot id, proc id) of arguments read from a stacked port at [layer]
        self.alias: dict = {}  # id(slot) -> the slot whose array it views (view_reshapes)
        self.uses_ap = False
        self.printed: dict[str, str] = {}

    # ---- storage planning ---------------------------------------------
    def elide_reshapes(self) -> None:
        """A reshape does not reorder a row-major stream: its consumers read the producer's
        stream into a buffer of the new shape, and the reshape process disappears."""
        results = {id(r) for r in self.results}
        for proc in list(self.procs):
            if proc.op not in _STREAM_VIEWS or len(proc.stages) != 1:
                continue
            if len(proc.inputs) != 1 or len(proc.outputs) != 1:
                continue
            source, view = proc.inputs[0], proc.outputs[0]
            if source.producer is None or id(view) in results or source.elements != view.elements:
                continue
            base = source
            while base.view_of is not None:
                base = base.view_of
            view.view_of = base
            view.producer = base.producer
            base.views.append(view)
            self.procs.remove(proc)

    def plan(self) -> None:
        if self.chunks:  # token-parallel: each chunk's processes one engine (codegen_hls.engine)
            self.merge_chunks()
        elif self.tokens() == 1:  # a decode step: a layer's linears share one array (codegen_hls.engine)
            self.merge_engines()
        self.elide_reshapes()
        copy_results = [s for s in self.results if s.producer is None]
        for slot in _unique(copy_results):
            proc = Proc(op="copy", inputs=[slot])
            out = Slot(slot.dtype, slot.shape, f"{slot.hint}_copy", producer=proc)
            proc.outputs = [out]
            self.procs.append(proc)
            self.results = [out if r is slot else r for r in self.results]
        for i, proc in enumerate(self.procs):
            proc.name = self.namer.fresh(f"{self.name}_p{i}_{proc.op}")
        bundle = 0
        for slot in self.params:
            readers = [p for p in self.procs if any(slot is s for s in p.inputs)]
            for k, proc in enumerate(readers):
                port = self.namer.fresh(slot.hint if k == 0 else f"{slot.hint}_{k}")
                direction = "inout" if cache_slot(proc) is slot else "in"  # a KV cache updated in place
                self.ports.append(Port(port, slot.dtype, slot.shape, direction, f"gmem{bundle}", arg=slot.arg))
                bundle += 1
                self.port_of[(id(slot), id(proc))] = port
        for i, slot in enumerate(self.results):
            port = self.namer.fresh("out" if len(self.results) == 1 else f"out{i}")
            self.ports.append(Port(port, slot.dtype, slot.shape, "out", f"gmem{bundle}", arg=len(self.params) + i))
            bundle += 1
            self.out_ports.setdefault(id(slot), []).append(port)
        for producer in self.procs:
            for base in producer.outputs:
                for slot in [base, *base.views]:
                    for consumer in self.procs:
                        if consumer is producer or not any(slot is s for s in consumer.inputs):
                            continue
                        src, dst = self.procs.index(producer), self.procs.index(consumer)
                        name = self.namer.fresh(f"s_{src}_{producer.op}_to_p{dst}")
                        self.streams.append(Stream(name, slot.dtype, slot.elements, SHALLOW_STREAM_DEPTH,
                                                   producer.name, consumer.name))
                        self.stream_of[(id(slot), id(consumer))] = name
        self.coalesce_streams()
        check_stream_balance(self.name, self.streams, self.procs)
        self.block_processes()
        for proc in self.procs:
            if proc.op == KV_APPEND_OP:  # its take is fused with the loop streaming the slice
                proc.stages = []
            self.hoist_prologue(proc)
        self.stripe_weights()
        self.view_reshapes()
        self.loop_layers()
        self.streams = [replace(st, width=self.packet_width(st)) for st in self.streams]
        self.width_of = {st.name: st.width for st in self.streams}
        self.stream_dtype = {st.name: st.dtype for st in self.streams}
        programs = self.stream_programs()
        self.streams = [replace(st, early=st.producer in self.early_writers(), after=_reads_before(programs, st))
                        for st in self.streams]
        at = self.io_positions()
        self.streams = [replace(st, written_at=at[st.name][0], read_at=at[st.name][1]) if st.name in at else st
                        for st in self.streams]
        depths = size_fifos(self.name, programs, {st.name: st.depth for st in self.streams})
        for name, depth in self.skip_depths(programs).items():
            depths[name] = max(depths[name], depth)
        self.streams = [replace(st, depth=depths[st.name]) for st in self.streams]

    def merge_engines(self) -> None:
        """Merge each run of linears and the element-wise operators between them into one
        process (``codegen_hls.engine``)."""
        def offchip_linear(proc: Proc) -> bool:
            for stage in proc.stages if proc.op == "linear" else ():
                info = matmul_info(self.prim(stage.prim_name))
                if info is not None:  # its weight a region argument, read through a port
                    return info[0][0] == 1 and len(stage.args) > 1 and stage.args[1].producer is None
            return False

        for start, end in reversed(engine_runs(self.procs, offchip_linear)):
            self.fuse_members(self.procs[start:end])
            self.procs[start:end] = [merge(self.procs[start:end], self.procs[end:], self.results, Proc)]

    def fuse_members(self, procs: list[Proc]) -> None:
        """Before processes merge into an engine: each operator's element-wise stages fused
        into one (``fuse_whole``), its linears left as they are."""
        for proc in procs:
            if proc.source is not None and proc.op != "linear" and all(isinstance(a, Slot) for a in proc.args):
                self.fuse_whole(proc, 1)

    def merge_chunks(self) -> None:
        """Each chunk of a token-split region becomes one engine: every linear of every layer
        and the LM head for its rows on one array (``codegen_hls.engine.chunk_runs``)."""
        groups = chunk_runs(self.procs, self.chunks)
        if not groups:
            return
        self.procs[:] = [p for group in groups for p in group]  # chunk after chunk (each reads only earlier ones)
        start = 0
        merged = []
        for group in groups:
            end = start + len(group)
            self.fuse_members(group)
            if len(group) > 1:  # its linears on the array; its attentions' MACs by lanes
                engine = merge(group, self.procs[end:], self.results, Proc, on_array=lambda p: p.op == "linear")
                engine.macs = sum(_attention_macs(p) for p in group if p.op == "attention")
                group = [engine]
            merged.append(group[0])
            start = end
        self.procs[:] = merged

    def early_writers(self) -> set[str]:
        """Processes that write their output streams in their prologue, before reading any
        stream: the kv_appends, which stream the slice as it was (``print_append``)."""
        return {p.name for p in self.procs if p.op == KV_APPEND_OP}

    def read_order(self, proc: Proc) -> list[Slot]:
        """``proc``'s inputs in the order its copy loops read them: streams written early
        (``early_writers``) first -- the attention takes its old K and V slices while the
        new rows and its query are still being computed -- then the rest as listed."""
        early = self.early_writers()
        first = [s for s in proc.inputs if (id(s), id(proc)) in self.stream_of
                 and next(st.producer for st in self.streams if st.name == self.stream_of[(id(s), id(proc))]) in early]
        return first + [s for s in proc.inputs if not any(s is f for f in first)]

    def hoist_prologue(self, proc: Proc) -> None:
        """Move the stages of ``proc`` that depend on no stream input to the front, as its
        prologue (``Proc.prologue``), which ``print_process`` prints before the stream reads.

        Why: a process reads all its input streams before its stages run, so a stage that
        needs only ports and constants -- a decode step's KV-cache update reading its layer's
        slice (``take``) -- would otherwise wait for its producers: the slice read sat on
        the token's chain after the QKV linear. Moved up, it runs while the producers
        compute. The stages keep their relative order and a moved stage reads nothing a
        later one writes, so every value is as before. Blocked processes read per block and
        are left as they are."""
        if proc.rows or not proc.stages:
            return
        streamed = {id(s) for s in proc.inputs if (id(s), id(proc)) in self.stream_of}
        if not streamed:
            return
        tainted, defined = set(streamed), set()
        early, late = [], []
        for stage in proc.stages:
            outputs = [s for s in stage.args if s.producer is proc and id(s) not in defined]
            inputs = [s for s in stage.args if not any(s is o for o in outputs)]
            defined |= {id(s) for s in outputs}
            if any(id(s) in tainted for s in inputs):
                tainted |= {id(s) for s in outputs}
                late.append(stage)
            else:
                early.append(stage)
        if early and late:
            proc.stages, proc.prologue = early + late, len(early)

    def stripe_weights(self) -> None:
        """A matmul whose array reads its weight through several channels gets one port
        per stripe in place of the weight's port (``codegen_hls.weight_stripes``;
        ``Port.stripe`` says which columns); :meth:`bundle_stripes` names their bundles."""
        for proc in self.procs:
            for stage in proc.stages:
                array = self.stage_hardware(proc, stage)
                if not isinstance(array, MacArray) or array.channels <= 1:
                    continue
                key = (id(stage.args[1]), id(proc))
                name = self.port_of[key]
                at = next(i for i, port in enumerate(self.ports) if port.name == name)
                whole = self.ports[at]
                (_, m, n, _), _ = matmul_info(self.prim(stage.prim_name))
                tile, _ = array.tile(m, n)
                shape = stripe_shape(whole.shape[0], n, tile.cols, array.channels)
                stripes = [replace(whole, name=self.namer.fresh(f"{name}_s{c}"), shape=shape,
                                   stripe=(c, array.channels, shape[-1], n))
                           for c in range(array.channels)]
                self.ports[at:at + 1] = stripes
                self.stripes[key] = stripes

    def bundle_stripes(self, records: tuple[Process, ...]) -> None:
        """The m_axi bundles of the weight stripes, once the processes have their SLRs:
        on each SLR (one Vitis kernel per SLR segment), the stripes of its weights in
        program order take ``wstripe<i>``, ``wstripe<i+1>``... in turn, wrapping at the
        card's memory channels. While a kernel's stripes are no more than the channels each has an
        AXI master (and bank) of its own, as every other port does; past that, the stripes
        of several weights share one master and its bank (``vitis_files.place``) instead
        of adding masters the card has no channels for: in a decode design (up to 32
        stripes per weight) the linears read their weights one after another, each over
        every channel. The model counts the masters the same way
        (``tvm_spatial.estimate.model.shared_stripe_credit``)."""
        slr_of = {p.name: p.slr for p in records}
        banks = max(1, self.device.offchip.channels)
        ordered = [(slr_of[proc.name], stripes) for proc in self.procs
                   for stripes in {id(v): v for k, v in self.stripes.items() if k[1] == id(proc)}.values()]
        # each SLR continues where the SLRs before it stopped: while the region's stripes are
        # no more than the channels every bundle name is the region's own
        start: dict[int, int] = {}
        for slr in sorted({slr for slr, _ in ordered}):
            start[slr] = sum(len(stripes) for s, stripes in ordered if s < slr) % banks
        bundle_of = {}
        for slr, stripes in ordered:
            for c, port in enumerate(stripes):
                bundle_of[port.name] = f"{STRIPE_BUNDLE}{(start[slr] + c) % banks}"
            start[slr] = (start[slr] + len(stripes)) % banks
        self.ports = [replace(p, bundle=bundle_of.get(p.name, p.bundle)) for p in self.ports]
        self.stripes = {k: [replace(p, bundle=bundle_of[p.name]) for p in v] for k, v in self.stripes.items()}

    def skip_depths(self, programs: dict[str, list]) -> dict[str, int]:
        """Depths for throughput, beyond deadlock freedom: a stream into a blocked process
        that also waits on a longer path from the same producer (a residual skip around an
        MLP) holds a block per process on that path, so its producer keeps streaming
        blocks into the path instead of waiting for each block to come out of it."""
        succ: dict[str, set] = {}
        for st in self.streams:
            succ.setdefault(st.producer, set()).add(st.consumer)
        blocked = {p.name for p in self.procs if p.rows}
        depths = {}
        for consumer in blocked:
            inputs = [st for st in self.streams if st.consumer == consumer]
            if len(inputs) < 2:
                continue
            memo: dict[str, float] = {consumer: 0}

            def longest(node: str) -> float:  # edges on the longest path from node to the consumer
                if node not in memo:
                    memo[node] = float("-inf")
                    memo[node] = max((1 + longest(n) for n in succ.get(node, ())), default=float("-inf"))
                return memo[node]

            for st in inputs:
                between = max((longest(n) for n in succ.get(st.producer, ()) if n != consumer), default=float("-inf"))
                chunk = next((op.count for op in programs[consumer] if isinstance(op, Read) and op.stream == st.name), 0)
                if between >= 1 and chunk:
                    depths[st.name] = int(min(st.elements // st.width, (between + 1) * chunk))
        return depths

    def packet_width(self, stream: Stream) -> int:
        """Elements per transfer of ``stream``: the largest divisor of every last dimension
        its producer writes it from and its consumer reads it into (the tensors, their
        blocks, a held tensor's blocks) up to ``STREAM_PACKET``, the same for all streams
        of one tensor (its producer writes them in one loop)."""
        from math import gcd

        by_name = {p.name: p for p in self.procs}
        producer = by_name[stream.producer]
        base = next(slot for slot in producer.outputs if any(
            self.stream_of.get((id(v), id(c))) == stream.name for v in [slot, *slot.views] for c in self.procs))
        dims = [base.shape[-1] if base.shape else 1]  # the producer writes from its own buffer
        for view in [base, *base.views]:
            for consumer in self.procs:
                if (id(view), id(consumer)) not in self.stream_of:
                    continue
                dims += [view.shape[-1] if view.shape else 1]
                part = consumer.block_slot.get(id(view))
                if part is not None:
                    dims.append(part.shape[-1] if part.shape else 1)
                elif consumer.rows and self.held_in_blocks(consumer, view):
                    dims.append(self.held_block_shape(consumer, view)[-1] if view.shape else 1)
        part = producer.block_slot.get(id(base))
        if part is not None:
            dims.append(part.shape[-1] if part.shape else 1)
        common = 0
        for d in dims:
            common = gcd(common, int(d))
        if common <= 1:
            return 1
        from .lanes import largest_divisor

        return largest_divisor(common, STREAM_PACKET)

    def held_block_shape(self, proc: Proc, slot: Slot) -> tuple[int, ...]:
        """The shape of one block of a stream input ``proc`` holds whole."""
        from .token_blocks import token_axis

        axis = token_axis(slot.shape, self.token_count)
        return tuple(proc.rows if k == axis else d for k, d in enumerate(slot.shape))

    def held_in_blocks(self, proc: Proc, slot: Slot) -> bool:
        """A stream input that a blocked process holds whole, read a block at a time
        interleaved with the others it holds (K and V from one producer arrive so)."""
        from .token_blocks import token_axis

        return token_axis(slot.shape, self.token_count) is not None

    def stream_programs(self) -> dict[str, list]:
        """Each process's stream reads and writes in the order its printed code does them
        (``print_process``, ``print_blocked_process``), for ``fifo_depths``."""
        programs = {}

        def read(stream: str, elements: int) -> Read:
            return Read(stream, elements // self.width_of[stream])

        def write(streams: tuple, elements: int) -> Write:
            return Write(streams, elements // self.width_of[streams[0]])

        for proc in self.procs:
            ins = [(slot, self.stream_of[(id(slot), id(proc))]) for slot in proc.inputs
                   if (id(slot), id(proc)) in self.stream_of]
            outs = [(slot, tuple(self.output_streams(slot, proc))) for slot in proc.outputs]
            ops = []
            if proc.op == KV_APPEND_OP:  # the slice first (its prologue), then the new row
                ops += [write(streams, slot.elements) for slot, streams in outs if streams]
                ops += [read(stream, slot.elements) for slot, stream in ins]
            elif self.interleaved(proc):
                streams_of = {id(slot): streams for slot, streams in outs}
                for kind, slot in self.io_schedule(proc):
                    if kind == "read":
                        ops.append(read(self.stream_of[(id(slot), id(proc))], slot.elements))
                    elif kind == "write" and streams_of.get(id(slot)):
                        ops.append(write(streams_of[id(slot)], slot.elements))
            elif not proc.rows:
                together = self.read_together(proc)
                ins = [(slot, self.stream_of[(id(slot), id(proc))]) for slot in self.read_order(proc)
                       if (id(slot), id(proc)) in self.stream_of]
                for slot, stream in ins:
                    if together and slot is together[0]:  # one loop, a transfer of each per cycle
                        ops.append(ReadEach(tuple(self.stream_of[(id(t), id(proc))] for t in together),
                                            slot.elements // self.width_of[stream]))
                    elif not any(slot is t for t in together):
                        ops.append(read(stream, slot.elements))
                ops += [write(streams, slot.elements) for slot, streams in outs if streams]
            else:
                held = [(slot, stream) for slot, stream in ins if id(slot) not in proc.block_slot]
                ops += [read(stream, slot.elements) for slot, stream in held if not self.held_in_blocks(proc, slot)]
                held_blocks = [read(stream, slot.elements // proc.blocks) for slot, stream in held
                               if self.held_in_blocks(proc, slot)]
                if not proc.causal:
                    ops += held_blocks * proc.blocks
                for _ in range(proc.blocks):
                    if proc.causal:
                        ops += held_blocks
                    ops += [read(stream, proc.block_slot[id(slot)].elements) for slot, stream in ins
                            if id(slot) in proc.block_slot]
                    ops += [write(streams, proc.block_slot[id(slot)].elements) for slot, streams in outs if streams]
            programs[proc.name] = ops
        return programs

    def prim(self, name: str) -> tvm.tirx.PrimFunc:
        """A stage's PrimFunc: the region's legalized one, or a blocked process's."""
        return self.block_prims[name] if name in self.block_prims else self.legal[name]

    def tokens(self) -> int:
        """The design's token count: the rows of its largest linear layer (1: none), as
        the analytical model counts them (``estimate.workload``); read before blocking."""
        rows = [matmul_info(self.prim(st.prim_name)) for p in self.procs if p.op == "linear" for st in p.stages]
        return max((info[0][1] for info in rows if info is not None), default=1)

    def block_processes(self) -> None:
        """Mark the processes that may run in token blocks (``codegen_hls.token_blocks``)
        and, when ``rows`` is set and divides the token count, give each its stages for one
        block of ``rows`` tokens: the block-sized slots they read and write (the inputs it
        cuts into blocks; the others, attention's K and V, stay whole), and their own
        PrimFuncs."""
        from .attention_kernel import is_causal
        from .token_blocks import block_cut, legal_block, token_axis

        tokens = self.token_count = self.tokens()
        if self.rows and self.rows < tokens and tokens % self.rows:
            raise CodegenError(f"{self.name}: token blocks of {self.rows} do not divide its {tokens} tokens")
        for proc in self.procs:
            if proc.source is None or cache_slot(proc) is not None or not all(isinstance(a, Slot) for a in proc.args):
                continue
            streamed = {i for i, a in enumerate(proc.args) if (id(a), id(proc)) in self.stream_of}
            # ports with a row per token (a reused layer's input, its residual) are cut too
            # where the operator is row-wise in them: each block reads its rows of the port
            rowed = {i for i, a in enumerate(proc.args)
                     if (id(a), id(proc)) in self.port_of and token_axis(a.shape, tokens) is not None}
            cut = block_cut(proc.source, streamed | rowed, tokens) if rowed else None
            if cut is None:
                cut = block_cut(proc.source, streamed, tokens)
            proc.separable = cut is not None
            rows = self.rows
            if not proc.separable or not rows or rows >= tokens or tokens % rows:
                self.fuse_whole(proc, tokens)
                continue
            main = legal_block(proc.source, set(cut), tokens, rows)
            env = {}
            for i, (param, slot) in enumerate(zip(main["main"].params, proc.args)):
                if i in cut:  # one block buffer per input, however many parameters it binds
                    if id(slot) not in proc.block_slot:
                        proc.block_slot[id(slot)] = Slot(slot.dtype, _static_shape(param.ty, "a block"), f"{slot.hint}_blk")
                    env[param] = proc.block_slot[id(slot)]
                else:
                    env[param] = slot
            stages, result = self.restage(proc, main, env, f"r{rows}")
            for whole, part in zip(proc.outputs, result):
                proc.block_slot[id(whole)] = part
            proc.stages, proc.rows, proc.blocks = stages, rows, tokens // rows
            proc.causal = is_causal(proc.source)

    def fuse_whole(self, proc: Proc, tokens: int) -> None:
        """Give ``proc`` its element-wise stages fused into one loop nest, on whole tensors
        (``codegen_hls.stage_fusion``), where its operator allows."""
        from .token_blocks import legal_whole

        fused = legal_whole(proc.source, tokens)
        if fused is not None:
            stages, result = self.restage(proc, fused, dict(zip(fused["main"].params, proc.args)), "whole")
            swap = {id(new): old for new, old in zip(result, proc.outputs)}
            for stage in stages:
                stage.args = [swap.get(id(slot), slot) for slot in stage.args]
            proc.stages = stages

    def restage(self, proc: Proc, legal: tvm.IRModule, env: dict, tag: str) -> tuple[list[Stage], list[Slot]]:
        """``proc``'s stages from its operator legalized on its own (``legal``: blocked, or
        with fused stages), with ``env`` binding its parameters: (stages, output slots)."""
        rebuilt = Proc(op=proc.op)
        result = _flatten(_Interpreter(self.name).run(legal["main"], env, rebuilt))
        if len(result) != len(proc.outputs):
            raise CodegenError(f"{proc.name}: its {tag} form has other outputs than the region's")
        for stage in rebuilt.stages:
            for slot in stage.args:
                if slot.producer is rebuilt:
                    slot.producer = proc
            stage.prim_name = self.block_prim(legal[stage.prim_name], f"{stage.prim_name}_{tag}")
        return rebuilt.stages, result

    def block_prim(self, func: tvm.tirx.PrimFunc, base: str) -> str:
        """The name of a blocked stage function: one per distinct function (processes of
        different layers share it), numbered in order of appearance."""
        for name, known in self.block_prims.items():
            if name.rsplit("__", 1)[0] == base and tvm_ffi.structural_equal(known, func):
                return name
        name = f"{base}__{sum(1 for n in self.block_prims if n.rsplit('__', 1)[0] == base)}"
        self.block_prims[name] = func
        return name

    # ---- printing -------------------------------------------------------
    def stage_hardware(self, proc: Proc, stage: Stage):
        """The hardware of one stage, as realized: a matmul process's matmul stage gets its
        MAC array (``MacArray``); every other stage gets ``Lanes`` (``codegen_hls.lanes``):
        the process's lanes (default 1), fitted to a divisor of its output row; the other
        stages of a matmul process (bias add, quantization) get the lanes that keep pace
        with its array (``library.keep_pace_lanes``)."""
        from .lanes import Lanes, is_mac, largest_divisor, sblocks

        def info_of(prim_name):
            if prim_name not in self.matmuls:
                self.matmuls[prim_name] = matmul_info(self.prim(prim_name))
            return self.matmuls[prim_name]

        def on_array(st: Stage) -> bool:  # an engine's: its linears' (not a layer norm's sum of squares)
            return proc.op in MATMUL_OPS or id(st) in proc.linear_stages

        info = info_of(stage.prim_name) if on_array(stage) else None
        if info is not None:
            (_, m, n, _), dtypes = info
            latency = accumulate_latency(*dtypes)
            # default: the array whose tile is the library's default tile (8 x 32 updates per
            # k step, ``latency`` cycles apart): fast on the host, no accumulate stall in HLS
            entry = self.arrays.get(proc.name)
            default = (max(1, MacArray.rows // latency), MacArray.cols)
            rows, cols, *rest = tuple(entry) if isinstance(entry, (tuple, list)) else default
            out_port = self.written_in_place(stage.args[-1], proc)  # then not partitioned (see MacArray)
            # a token-parallel engine's rows need not divide its chunk's tokens (MacArray.ragged_rows)
            real = MacArray(rows, cols, latency, out_port=out_port, ragged_rows=self.interleaved(proc)).tile(m, n)[1]
            channels = int(rest[0]) if rest else 1
            if channels > 1 and len(stage.args) > 1 and (id(stage.args[1]), id(proc)) in self.port_of:
                # its weight through several ports, where the layout allows (weight_stripes)
                real = replace(real, channels=weight_stripes(self.prim(stage.prim_name), replace(real, channels=channels)))
            return real
        matmuls = [(self.stage_hardware(proc, s), info_of(s.prim_name)[0][3]) for s in proc.stages
                   if on_array(s) and info_of(s.prim_name) is not None]
        entry = self.arrays.get(proc.name)
        wanted = int(entry) if isinstance(entry, int) else 1
        if matmuls:  # keep pace with the array (rows x cols results per k steps)
            array, k = matmuls[0]
            wanted = keep_pace_lanes(array.rows, array.cols, k)
        # the width its lanes divide: the process's result's; an engine's stages each their own
        last = (stage if proc.op == ENGINE_OP else proc.stages[-1]).args[-1] if proc.stages else None
        width = last.shape[-1] if last is not None and last.shape else 1
        lanes = largest_divisor(width, max(1, wanted))
        # a token-parallel engine's attention: its QK^T and AV as wide as the engine's array,
        # on its shared multipliers and adders (the ALLOCATION pragmas of share_array)
        mac = max((a.rows * a.cols for a, _ in matmuls), default=0) if self.interleaved(proc) else 0
        if mac and not any(is_mac(b) for b in sblocks(self.prim(stage.prim_name))):
            mac = 0
        if lanes == 1 and not mac:
            return Lanes(1)
        ports = []  # m_axi ports among the stage's arguments (read in place, or written in place)
        for i, slot in enumerate(stage.args):
            in_place = (slot.producer is proc and len(self.out_ports.get(id(slot), [])) == 1
                        and not self.output_streams(slot, proc))
            if (id(slot), id(proc)) in self.port_of or in_place:
                ports.append(i)
        return Lanes(lanes, tuple(ports), mac)

    def stage_function(self, prim_name: str, array=None) -> str:
        """The C name of a stage function under its schedule (``stage_hardware``)."""
        key = (prim_name, array)
        if key not in self.printed:
            if isinstance(array, MacArray):
                suffix = (f"_a{array.rows}x{array.cols}" + (f"_c{array.channels}" if array.channels > 1 else "")
                          + ("_o" if array.out_port else ""))
            elif array is not None and (array.lanes > 1 or array.mac):  # Lanes: its width and unpartitioned ports
                suffix = (f"_l{array.lanes}" + (f"_x{array.mac}" if array.mac else "")
                          + "".join(f"_m{i}" for i in array.ports))
            else:
                suffix = ""
            self.printed[key] = f"{self.name}__{prim_name}{suffix}"
        return self.printed[key]

    def print_stage_functions(self, w: CodeWriter) -> None:
        # an engine's stages are inlined into it, where its ALLOCATION pragmas share one array
        inlined = {(stage.prim_name, self.stage_hardware(proc, stage))
                   for proc in self.procs if proc.op == ENGINE_OP for stage in proc.stages}
        for proc in self.procs:
            for stage in proc.stages:
                array = self.stage_hardware(proc, stage)
                if (stage.prim_name, array) in self.printed:
                    continue
                func = prepare_for_hls(self.prim(stage.prim_name), array)
                text = FunctionPrinter(func, self.stage_function(stage.prim_name, array)).print()
                if (stage.prim_name, array) in inlined:
                    head, _, body = text.partition("\n")
                    text = f"{head}\n  #pragma HLS INLINE\n{body}"
                # arbitrary-precision types may appear only inside a stage (a cast, a local buffer)
                self.uses_ap |= any(f"{t}<" in text for t in ("ap_int", "ap_uint", "ap_fixed", "ap_ufixed"))
                w.line()
                w.lines(text.rstrip("\n").split("\n"))
                for param in func.params:
                    self.uses_ap |= needs_ap_types(str(param.ty.dtype))

    def output_streams(self, slot: Slot, producer: Proc) -> list[str]:
        """Streams carrying ``slot`` (or a reshaped view of it) to other processes."""
        names = []
        for source in [slot, *slot.views]:
            for consumer in self.procs:
                stream = self.stream_of.get((id(source), id(consumer)))
                if stream and consumer is not producer:
                    names.append(stream)
        return names

    def input_count(self, proc: Proc) -> int:
        """How many of ``proc``'s call arguments are its inputs (the first ones)."""
        return len(self.process_signature(proc, inputs_only=True)[1])

    def process_signature(self, proc: Proc, inputs_only: bool = False) -> tuple[str, list[str]]:
        """(its C signature, its call's arguments): ports, stripes and streams, inputs first;
        a stream that carries several of its values (``coalesce_streams``) is one argument."""
        params, args = [], []
        for slot in proc.inputs:
            key = (id(slot), id(proc))
            if key in self.stripes:  # a weight read through several ports
                for port in self.stripes[key]:
                    if port.name not in args:  # a stacked port serves several layers' (stack_ports)
                        params.append(f"const {c_type(slot.dtype)} {array_declarator(port.name, port.shape)}")
                        args.append(port.name)
            elif key in self.port_of and self.port_of[key] not in args:
                port = self.port_of[key]
                const = "" if cache_slot(proc) is slot else "const "  # written in place: inout
                shape = next(p.shape for p in self.ports if p.name == port) if key in self.stacked else slot.shape
                params.append(f"{const}{c_type(slot.dtype)} {array_declarator(port, shape)}")
                args.append(port)
            elif key in self.stream_of and self.stream_of[key] not in args:
                stream = self.stream_of[key]
                params.append(f"hls::stream<{stream_element(slot.dtype, self.width_of[stream])}>& {stream}")
                args.append(stream)
        if inputs_only:
            return "", args
        for slot in proc.outputs:
            for port in self.out_ports.get(id(slot), []):
                params.append(f"{c_type(slot.dtype)} {array_declarator(port, slot.shape)}")
                args.append(port)
            for stream in self.output_streams(slot, proc):
                if stream in args:
                    continue
                params.append(f"hls::stream<{stream_element(slot.dtype, self.width_of[stream])}>& {stream}")
                args.append(stream)
        return f"static void {proc.name}({', '.join(params)})", args

    def read_stream(self, w: CodeWriter, local: Namer, into: Slot, hint: str, stream: str) -> None:
        """Declare ``into``'s buffer and fill it from ``stream`` in row-major order."""
        into.cname = local.fresh("in_" + re.sub(r"\W", "_", hint))
        self.declare(w, into.cname, into.dtype, into.shape, self.width_of[stream])
        self.read_packets(w, [(stream, _indexed(into.cname))], into.shape)

    def read_together(self, proc: Proc) -> list[Slot]:
        """The inputs an attention reads in one copy loop, a packet of each per cycle: its K
        and V, held whole, when two different processes write them (a decode step's cache
        updates, which run side by side: ``estimate.model.decode_path``). Read one after the
        other, the attention's copy took twice as long. Not when one process writes both
        (a prefill's split writes K, then V): it would wait on V while K fills its FIFO.
        Empty for every other process, and for a blocked one (``print_blocked_process``)."""
        if proc.rows or proc.op != "attention" or len(proc.inputs) < 3:
            return []
        pair = proc.inputs[1:3]
        keys = [(id(s), id(proc)) for s in pair]
        if not all(k in self.stream_of for k in keys):
            return []
        streams = [self.stream_of[k] for k in keys]
        producers = {next(st.producer for st in self.streams if st.name == name) for name in streams}
        same = pair[0].shape == pair[1].shape and pair[0].dtype == pair[1].dtype
        if not same or len(producers) != 2 or self.width_of[streams[0]] != self.width_of[streams[1]]:
            return []
        return list(pair)

    def read_streams_together(self, w: CodeWriter, local: Namer, proc: Proc, slots: list[Slot]) -> None:
        """Declare each slot's buffer and fill them all from their streams in one loop, a
        transfer of each per cycle (:meth:`read_together`: one shape, one packet width)."""
        streams = [self.stream_of[(id(s), id(proc))] for s in slots]
        for slot, stream in zip(slots, streams):
            slot.cname = local.fresh("in_" + re.sub(r"\W", "_", slot.hint))
            self.declare(w, slot.cname, slot.dtype, slot.shape, self.width_of[stream])
        self.read_packets(w, [(stream, _indexed(slot.cname)) for slot, stream in zip(slots, streams)], slots[0].shape)

    @staticmethod
    def declare(w: CodeWriter, name: str, dtype: str, shape, width: int) -> None:
        """A process's static buffer; one a stream fills or empties ``width`` elements at a time
        is partitioned cyclically by ``width`` along its last dimension."""
        w.line(f"static {c_type(dtype)} {array_declarator(name, shape)};")
        if width > 1:
            w.line(f"#pragma HLS ARRAY_PARTITION variable={name} cyclic factor={width} dim={len(shape)}")

    def read_packets(self, w: CodeWriter, reads, shape) -> None:
        """For each ``(stream, dest)`` of ``reads``, ``dest(index expressions) = <next element
        of stream>`` over ``shape`` in row-major order, all in one loop: a transfer (``width``
        elements of the last dimension, the same for every stream) of each per cycle."""
        width = self.width_of[reads[0][0]]
        rank = len(shape or (1,))
        if width == 1:
            idx = [f"i{k}" for k in range(rank)]
            _loop_nest(w, shape, [f"{dest(idx)} = {stream}.read();" for stream, dest in reads])
            return
        element = stream_element(self.stream_dtype[reads[0][0]], width)
        packets, idx = _packets(shape, width)
        names = ["p"] if len(reads) == 1 else [f"p{k}" for k in range(len(reads))]
        _loop_nest(w, packets, [*(f"const {element} {p} = {stream}.read();" for p, (stream, _) in zip(names, reads)),
                                f"for (int e = 0; e < {width}; ++e) {{", "#pragma HLS UNROLL",
                                *(f"  {dest(idx)} = {p}.data[e];" for p, (_, dest) in zip(names, reads)), "}"])

    def write_packets(self, w: CodeWriter, slot: Slot, shape, source, ports, streams) -> None:
        """Send ``source(index expressions)`` over ``shape`` to every port (``ports``: their
        index functions) and stream, a transfer per cycle."""
        ctype = c_type(slot.dtype)
        if not streams:  # to ports only: wide copies, a row's tail one at a time
            _copy_rows(w, shape, lambda idx: [f"{port(idx)} = {source(idx)};" for port in ports])
            return
        width = self.width_of[streams[0]]
        rank = len(shape or (1,))
        if width == 1:
            idx = [f"i{k}" for k in range(rank)]
            body = [f"const {ctype} v = {source(idx)};"]
            body += [f"{port(idx)} = v;" for port in ports]
            body += [f"{stream}.write(v);" for stream in streams]
            _loop_nest(w, shape, body)
            return
        packets, idx = _packets(shape, width)
        body = [f"{stream_element(slot.dtype, width)} p;", f"for (int e = 0; e < {width}; ++e) {{",
                "#pragma HLS UNROLL", f"  p.data[e] = {source(idx)};"]
        body += [f"  {port(idx)} = p.data[e];" for port in ports]
        body += ["}"] + [f"{stream}.write(p);" for stream in streams]
        _loop_nest(w, packets, body)

    def call_stage(self, w: CodeWriter, proc: Proc, stage: Stage) -> None:
        def name(slot: Slot) -> str:
            key = (id(slot), id(proc))
            at = f"[{LAYER_VAR}]" if key in self.stacked else ""  # this layer's of a stacked port
            if key in self.stripes:
                return ", ".join(p.name + at for p in self.stripes[key])
            return self.arg_name(slot) + at

        names = ", ".join(name(slot) for slot in stage.args)
        w.line(f"{self.stage_function(stage.prim_name, self.stage_hardware(proc, stage))}({names});")

    def out_width(self, slot: Slot, proc: Proc) -> int:
        """Elements per transfer of the streams carrying ``slot`` from ``proc`` (none: of
        the copy to its ports)."""
        streams = self.output_streams(slot, proc)
        return self.width_of[streams[0]] if streams else port_width(slot.shape)

    def print_blocked_process(self, w: CodeWriter, proc: Proc) -> list[str]:
        """A process in token blocks: first read the streams it holds whole (attention's K
        and V, a block of each in turn; a causal attention reads block ``b`` of them just
        before its block ``b`` instead, and zeroes them after its last block); then per
        block, read ``rows`` tokens of each input it cuts (from its stream, or its rows of
        a port) into a block buffer, run the blocked stages, and write the block on (to an
        output port at the block's offset along the token axis)."""
        from .token_blocks import token_axis

        def at_block(name: str, slot: Slot):
            """Index expressions of a block's element -> that element of ``slot`` (``name``):
            the block's rows along the token axis."""
            axis = token_axis(slot.shape, self.token_count)
            return lambda idx: name + "".join(f"[blk * {proc.rows} + {i}]" if k == axis else f"[{i}]"
                                              for k, i in enumerate(idx))

        def read_held_blocks() -> None:
            for slot in held:
                stream = self.stream_of[(id(slot), id(proc))]
                self.read_packets(w, [(stream, at_block(slot.cname, slot))], self.held_block_shape(proc, slot))

        signature, args = self.process_signature(proc)
        local = Namer()
        w.line()
        with w.block(signature):
            held = []  # read whole: every block reads all of it
            for slot in proc.inputs:
                key = (id(slot), id(proc))
                if id(slot) not in proc.block_slot:
                    if key in self.port_of:
                        slot.cname = self.port_of[key]
                    elif self.held_in_blocks(proc, slot):
                        held.append(slot)
                    else:
                        self.read_stream(w, local, slot, slot.hint, self.stream_of[key])
            for slot in held:
                slot.cname = local.fresh("in_" + re.sub(r"\W", "_", slot.hint))
                self.declare(w, slot.cname, slot.dtype, slot.shape, self.width_of[self.stream_of[(id(slot), id(proc))]])
            if held and not proc.causal:  # a block of each in turn, as their producers write them
                with w.block(f"for (int blk = 0; blk < {proc.blocks}; ++blk)"):
                    read_held_blocks()
            w.line(f"// {proc.blocks} blocks of {proc.rows} tokens")
            with w.block(f"for (int blk = 0; blk < {proc.blocks}; ++blk)"):
                if proc.causal:  # the keys up to this block's last query: later rows stay zero
                    read_held_blocks()
                for slot in proc.inputs:
                    key = (id(slot), id(proc))
                    if id(slot) not in proc.block_slot:
                        continue
                    part = proc.block_slot[id(slot)]
                    if key in self.stream_of:
                        self.read_stream(w, local, part, slot.hint, self.stream_of[key])
                    else:  # a port with a row per token (an input, a mask): this block's rows
                        part.cname = local.fresh("in_" + re.sub(r"\W", "_", slot.hint))
                        self.declare(w, part.cname, part.dtype, part.shape, port_width(part.shape))
                        dest, port = _indexed(part.cname), at_block(self.port_of[key], slot)
                        _copy_rows(w, part.shape, lambda idx: [f"{dest(idx)} = {port(idx)};"])
                outputs = {id(proc.block_slot[id(slot)]): self.out_width(slot, proc) for slot in proc.outputs}
                for stage in proc.stages:
                    for slot in stage.args:
                        if slot.producer is proc and not slot.cname:
                            slot.cname = local.fresh(re.sub(r"\W", "_", slot.hint))
                            self.declare(w, slot.cname, slot.dtype, slot.shape, outputs.get(id(slot), 1))
                        self.uses_ap |= needs_ap_types(slot.dtype)
                    self.call_stage(w, proc, stage)
                for slot in proc.outputs:
                    part = proc.block_slot[id(slot)]
                    ports = [at_block(port, slot) for port in self.out_ports.get(id(slot), [])]
                    self.write_packets(w, slot, part.shape, _indexed(part.cname), ports, self.output_streams(slot, proc))
            if held and proc.causal:  # the next call's blocks find zero keys and values ahead
                w.line("// zero K and V: the next call's early blocks must not see this call's later keys")
                width = self.held_width(proc)
                if width == 1:
                    _loop_nest(w, held[0].shape, [f"{slot.cname}{_index(slot.shape)} = 0;" for slot in held])
                else:  # as many elements per cycle as their streams fill them with
                    packets, idx = _packets(held[0].shape, width)
                    _loop_nest(w, packets, [f"for (int e = 0; e < {width}; ++e) {{", "#pragma HLS UNROLL",
                                            *(f"  {_indexed(slot.cname)(idx)} = 0;" for slot in held), "}"])
        return args

    def print_process(self, w: CodeWriter, proc: Proc) -> list[str]:
        if proc.rows:
            return self.print_blocked_process(w, proc)
        signature, args = self.process_signature(proc)
        local = Namer()
        w.line()
        with w.block(signature):
            if proc.op == ENGINE_OP:
                self.share_array(w, proc)
            together = self.read_together(proc)
            for slot in proc.inputs:
                key = (id(slot), id(proc))
                if key in self.port_of:
                    slot.cname = self.port_of[key]
            if proc.op == KV_APPEND_OP:
                self.print_append(w, local, proc)
                return args
            if self.interleaved(proc):
                self.print_interleaved(w, local, proc)
                return args
            if proc.prologue:
                w.line("// Prologue: stages that read no stream, run before the stream reads (hoist_prologue).")
            self.print_stages(w, local, proc, proc.stages[:proc.prologue])
            for slot in self.read_order(proc):
                key = (id(slot), id(proc))
                if key in self.port_of:
                    continue
                if together and slot is together[0]:
                    self.read_streams_together(w, local, proc, together)
                elif not any(slot is t for t in together):
                    self.read_stream(w, local, slot, slot.hint, self.stream_of[key])
            self.print_stages(w, local, proc, proc.stages[proc.prologue:])
            if proc.op == "copy":
                proc.outputs[0].cname = proc.inputs[0].cname
            for slot in proc.outputs:
                targets = [p for p in self.out_ports.get(id(slot), []) if p != slot.cname]
                streams = self.output_streams(slot, proc)
                if not targets and not streams:
                    continue
                self.write_packets(w, slot, slot.shape, _indexed(slot.cname), [_indexed(p) for p in targets], streams)
            if cache_slot(proc) is not None:
                kv_update.write_row(w, self.name, proc)
        return args

    def interleaved(self, proc: Proc) -> bool:
        """Whether ``proc`` reads and writes its streams between its stages
        (:meth:`io_schedule`): a token-split region's engines, each of which must hand its
        K and V rows of a layer to the later chunks while it goes on with that layer."""
        return bool(self.chunks) and proc.op == ENGINE_OP

    def io_schedule(self, proc: Proc) -> list[tuple[str, object]]:
        """An interleaved process's steps in order: ``("read", slot)`` just before the first
        stage that uses the slot, ``("stage", stage)``, and ``("write", slot)`` just after
        the last stage that uses it -- so a chunk's engine streams a layer's K and V on as
        soon as the layer's attention is done with them, and reads an earlier chunk's just
        before its own attention needs them, and the engines of a region run side by side
        (in hardware; the C simulation runs them one after another, its streams unbounded).
        An input no stage uses is read first, an output no stage writes is written last."""
        def root(slot):
            slot = self.root_of(slot)
            while slot.view_of is not None:
                slot = slot.view_of
            return id(slot)

        uses = [{root(a) for a in st.args} for st in proc.stages]
        reads = [slot for slot in proc.inputs if (id(slot), id(proc)) in self.stream_of]
        first = {id(slot): next((i for i, u in enumerate(uses) if root(slot) in u), -1) for slot in reads}
        last = {id(slot): max((i for i, u in enumerate(uses) if root(slot) in u), default=len(uses))
                for slot in proc.outputs}
        steps: list[tuple[str, object]] = [("read", slot) for slot in reads if first[id(slot)] < 0]
        for i, stage in enumerate(proc.stages):
            steps += [("read", slot) for slot in reads if first[id(slot)] == i]
            steps.append(("stage", stage))
            steps += [("write", slot) for slot in proc.outputs if last[id(slot)] == i]
        steps += [("write", slot) for slot in proc.outputs if last[id(slot)] == len(uses)]
        return steps

    # ---- reshapes as views, in engines ----------------------------------
    def view_reshapes(self) -> None:
        """In an interleaved engine, a reshape that only drops or adds leading 1s (``[1, T,
        H]`` <-> ``[T, H]``, around every linear) is no copy: its consumers read its input's
        array as ``x[0]`` or ``&x`` (:meth:`arg_name`). GPT2-small's engines copied every
        layer's activations seven times so (about 8 % of their cycles), each copy an array
        and a loop nest of its own. Only of an array the engine's own stages write and keep
        to themselves (not streamed on, not written to a port); at most one leading 1 on the
        view's side."""
        for proc in self.procs:
            if not self.interleaved(proc):
                continue
            kept = []
            for stage in proc.stages:
                member = proc.member_of.get(id(stage))
                source, view = stage.args if len(stage.args) == 2 else (None, None)
                if (member is not None and proc.members[member] in _STREAM_VIEWS and source is not None
                        and self.views_of(source.shape, view.shape) and source.producer is proc
                        and (id(source), id(proc)) not in self.stream_of
                        and not any(source is o or view is o for o in proc.outputs)):
                    self.alias[id(view)] = source
                    continue
                kept.append(stage)
            proc.stages = kept

    @staticmethod
    def views_of(source: tuple, view: tuple) -> bool:
        """Whether ``view`` is ``source`` with leading 1s dropped or added (at most one on
        ``view``'s side): C can name it from ``source``'s array without a copy."""
        def core(shape):
            shape = tuple(shape)
            while shape and shape[0] == 1:
                shape = shape[1:]
            return shape

        ones = len(view) - len(core(view))
        return core(source) == core(view) and ones <= 1 and len(core(view)) > 0

    def root_of(self, slot: Slot) -> Slot:
        """The slot whose array ``slot`` views (:meth:`view_reshapes`), else itself."""
        while id(slot) in self.alias:
            slot = self.alias[id(slot)]
        return slot

    def arg_name(self, slot: Slot) -> str:
        """How a stage names ``slot``: its array, or a view's expression of its root's array
        (``x[0]``: one leading 1 fewer; ``&x[0]``...: one more)."""
        root = self.root_of(slot)
        if root is slot:
            return slot.cname
        ones = next((i for i, d in enumerate(root.shape) if d != 1), len(root.shape))
        expr = root.cname + "[0]" * ones
        extra = next((i for i, d in enumerate(slot.shape) if d != 1), len(slot.shape))
        return f"&{expr}" if extra else expr

    # ---- layer loops (codegen_hls.layer_loop) --------------------------
    def step_signature(self, proc: Proc, step) -> tuple:
        """What one step of :meth:`io_schedule` does, without naming its values: its stage
        function and hardware, or its stream; and of each value, its type and shape, whether
        it is a region argument, and where it goes (ports, streams) besides."""
        kind, item = step

        def kind_of(slot: Slot) -> tuple:
            if (id(slot), id(proc)) in self.port_of:
                return ("argument", slot.dtype, slot.shape)
            return ("value", slot.dtype, slot.shape, tuple(self.out_ports.get(id(slot), ())),
                    tuple(self.output_streams(slot, proc)))

        if kind == "stage":
            return (kind, item.prim_name, self.stage_hardware(proc, item), tuple(kind_of(s) for s in item.args))
        if kind == "read":
            return (kind, self.stream_of[(id(item), id(proc))], item.dtype, item.shape)
        return (kind, kind_of(item))

    def loop_layers(self) -> None:
        """Each interleaved engine's repeated layers printed once, in a loop
        (``codegen_hls.layer_loop``); the arguments the loop reads a different one of per
        layer stacked into one port each (:meth:`stack_ports`)."""
        for proc in self.procs:
            if not self.interleaved(proc):
                continue
            steps = self.io_schedule(proc)
            uses = [[self.root_of(s) for s in item.args] if kind == "stage" else [item] for kind, item in steps]
            defines, seen = [], set()
            for (kind, item), slots in zip(steps, uses):
                new = ({id(item)} if kind == "read" else
                       {id(s) for s in slots if s.producer is proc and id(s) not in seen} if kind == "stage"
                       else set())
                seen |= new
                defines.append(new)
            loop = find_loop([self.step_signature(proc, step) for step in steps], uses, defines,
                             lambda slot: (id(slot), id(proc)) in self.port_of)
            if loop is None:
                continue
            self.loops[id(proc)] = loop
            for group in loop.stacked:
                self.stack_ports(proc, group)

    def stack_ports(self, proc: Proc, group: tuple) -> None:
        """One port in place of the ports ``proc`` reads ``group`` through (region arguments
        of the same type and shape, one per layer of its loop), each layer's after the other
        (``Port.layers``); a striped weight's, one such port per stripe."""
        keys = [(id(slot), id(proc)) for slot in group]
        layers = tuple(slot.arg for slot in group)

        def stacked(port: Port) -> Port:
            return replace(port, name=self.namer.fresh(f"{port.name}_layers"), shape=(len(group), *port.shape),
                           layers=layers)

        if keys[0] in self.stripes:
            gone = {port.name for key in keys for port in self.stripes[key]}
            new = [stacked(port) for port in self.stripes[keys[0]]]
            for key in keys:
                self.stripes[key] = new
        else:
            gone = {self.port_of[key] for key in keys}
            new = [stacked(next(p for p in self.ports if p.name == self.port_of[keys[0]]))]
            for key in keys:
                self.port_of[key] = new[0].name
        at = next(i for i, port in enumerate(self.ports) if port.name in gone)
        self.ports = [port for port in self.ports if port.name not in gone]
        self.ports[at:at] = new
        self.stacked.update(keys)

    def coalesce_streams(self) -> None:
        """Between two interleaved processes (a token-split region's engines), one FIFO
        carrying every value the one hands the other -- each layer's K and V rows in turn --
        instead of a FIFO per value: GPT2-small had 72 streams between its three engines,
        each an AXI-stream link over the SLR boundaries. Only where the producer writes
        them in the order the consumer reads them (``io_schedule``), and of one type."""
        if not self.chunks:
            return
        by_name = {p.name: p for p in self.procs}
        pairs: dict[tuple[str, str], list[Stream]] = {}
        for st in self.streams:
            pairs.setdefault((st.producer, st.consumer), []).append(st)
        for (producer, consumer), streams in pairs.items():
            prod, cons = by_name[producer], by_name[consumer]
            if len(streams) < 2 or not (self.interleaved(prod) and self.interleaved(cons)):
                continue
            names = {st.name for st in streams}
            written = [n for kind, slot in self.io_schedule(prod) if kind == "write"
                       for n in self.output_streams(slot, prod) if n in names]
            read = [self.stream_of[(id(slot), id(cons))] for kind, slot in self.io_schedule(cons) if kind == "read"
                    and self.stream_of.get((id(slot), id(cons))) in names]
            if written != read or len({st.dtype for st in streams}) != 1:
                continue
            first = streams[0]
            for key, name in list(self.stream_of.items()):
                if name in names:
                    self.stream_of[key] = first.name
            merged = replace(first, elements=sum(st.elements for st in streams))
            self.streams = [merged if st is first else st for st in self.streams if st is first or st.name not in names]

    def io_positions(self) -> dict[str, tuple[float, float]]:
        """Stream name -> (share of its producer's MACs done when it writes it, share of its
        consumer's done when it reads it), for streams between interleaved processes
        (:meth:`io_schedule`): where the analytical model lets a later chunk's engine wait on
        an earlier one's K and V. A stage's MACs are its matmul's (an attention's, its
        QK^T's); the element-wise stages count none."""
        def macs(stage):
            info = matmul_info(self.prim(stage.prim_name))
            return 0 if info is None else math.prod(info[0])

        written: dict[str, list[float]] = {}
        read: dict[str, list[float]] = {}
        for proc in self.procs:
            if not self.interleaved(proc):
                continue
            total = max(1, sum(macs(st) for st in proc.stages))
            done = 0
            for kind, item in self.io_schedule(proc):
                if kind == "stage":
                    done += macs(item)
                elif kind == "read":
                    read.setdefault(self.stream_of[(id(item), id(proc))], []).append(done / total)
                else:
                    for name in self.output_streams(item, proc):
                        written.setdefault(name, []).append(done / total)
        # a stream carrying several values (coalesce_streams) hands each over in turn: the
        # one its consumer waits on longest (written late, read early) is the one to count
        out = {}
        for name in {*written, *read}:
            pairs = list(zip(written.get(name, [1.0]), read.get(name, [0.0])))
            out[name] = max(pairs, key=lambda wr: wr[0] - wr[1])
        return out

    def buffer_plan(self, proc: Proc) -> tuple[dict[int, int], list[tuple[str, tuple, int]]]:
        """The arrays an interleaved process (a token-split region's engine) holds: (slot id
        -> buffer index, each buffer's (dtype, shape, partition width)).

        Why: an engine runs a whole model; an array per intermediate value held every
        layer's (GPT2-small: some 2,700 URAM an engine). A value's array is free once the
        last step of :meth:`io_schedule` using it is done, and the next value of the same
        type, shape and partition -- most often the next layer's same value -- takes it. A
        stage never writes into an array it reads (its outputs are placed before its inputs
        are freed). Values written in place through a port hold none.

        With a layer loop (``codegen_hls.layer_loop``) the steps are planned as printed, one
        repeat of the body (later repeats' values are the first's): a value read in every
        repeat keeps its array to the body's end, and a carried value takes the array of the
        value before the loop that it replaces, held to the body's end too."""
        def defined_by(kind, item):
            if kind == "read":
                return [item]
            if kind == "stage":
                return [slot for slot in item.args if slot.producer is proc]
            return []

        loop = self.loops.get(id(proc))
        every = self.io_schedule(proc)
        steps = loop.folded(every) if loop else every
        def canon(slot):  # the array it is in: a view's root's, a later layer's the first's
            slot = self.root_of(slot)
            return loop.first_of(slot) if loop else slot

        last: dict[int, int] = {}
        for t, (kind, item) in enumerate(steps):
            for slot in (item.args if kind == "stage" else [item]):
                last[id(canon(slot))] = t
        takes: dict[int, int] = {}  # id(carried body value) -> id(the value before the loop)
        if loop:
            body_last = loop.body_end - 1  # the body's last step, as planned (folded)
            for slot in loop.shared:
                last[id(slot)] = max(last.get(id(slot), 0), body_last)
            for init, body in loop.carried:
                last[id(init)] = max(last[id(init)], last.get(id(body), 0), body_last)
                takes[id(body)] = id(init)
        plan: dict[int, int] = {}
        buffers: list[tuple[str, tuple, int]] = []
        free: dict[tuple, list[int]] = {}
        holders: dict[int, list[int]] = {}  # step -> buffers freed after it
        for t, (kind, item) in enumerate(steps):
            for slot in map(canon, defined_by(kind, item)):
                if id(slot) in plan or (kind == "stage" and self.written_in_place(slot, proc)):
                    continue
                if id(slot) in takes:
                    plan[id(slot)] = plan[takes[id(slot)]]
                    continue
                if kind == "read":
                    width = self.width_of[self.stream_of[(id(slot), id(proc))]]
                else:
                    width = self.out_width(slot, proc) if any(slot is o for o in proc.outputs) else 1
                key = (slot.dtype, tuple(slot.shape), width)
                if free.get(key):
                    plan[id(slot)] = free[key].pop()
                else:
                    plan[id(slot)] = len(buffers)
                    buffers.append(key)
                holders.setdefault(last.get(id(slot), t), []).append(plan[id(slot)])
            for b in holders.pop(t, []):
                free.setdefault(buffers[b], []).append(b)
        return plan, buffers

    def print_interleaved(self, w: CodeWriter, local: Namer, proc: Proc) -> None:
        """``proc``'s stream reads, stages and writes in :meth:`io_schedule`'s order, its
        values in the arrays of :meth:`buffer_plan`; its layer loop's body once, in a loop."""
        w.line("// Streams read just before their first use and written just after their last (io_schedule);")
        w.line("// an array holds one value after another (buffer_plan).")
        plan, buffers = self.buffer_plan(proc)
        names: dict[int, str] = {}
        loop = self.loops.get(id(proc))
        steps = self.io_schedule(proc)

        def place(slot, hint):
            b = plan[id(slot)]
            if b not in names:
                dtype, shape, width = buffers[b]
                names[b] = local.fresh(hint + re.sub(r"\W", "_", slot.hint))
                self.declare(w, names[b], dtype, shape, width)
            slot.cname = names[b]

        for t, (kind, item) in enumerate(steps):
            if loop and t == loop.start:
                w.line(f"// {loop.count} layers, one copy of their hardware (codegen_hls.layer_loop); "
                       f"stacked ports read at [{LAYER_VAR}].")
                w.open(f"for (int {LAYER_VAR} = 0; {LAYER_VAR} < {loop.count}; ++{LAYER_VAR}) {{")
            if loop and loop.repeated(t):
                continue
            if loop and t == loop.end:  # after the loop: the last layer's values, in the body's arrays
                for later_kind, later in steps[loop.body_end:loop.end]:
                    for slot in (later.args if later_kind == "stage" else [later]):
                        slot.cname = loop.first_of(slot).cname or slot.cname
            if kind == "read":
                place(item, "in_")
                self.read_packets(w, [(self.stream_of[(id(item), id(proc))], _indexed(item.cname))], item.shape)
            elif kind == "stage":
                for slot in item.args:
                    if slot.producer is proc and not slot.cname and id(slot) not in self.alias:
                        if id(slot) in plan:
                            place(slot, "")
                        else:  # written in place through its one port
                            slot.cname = self.out_ports[id(slot)][0]
                    self.uses_ap |= needs_ap_types(slot.dtype)
                self.call_stage(w, proc, item)
            else:
                targets = [p for p in self.out_ports.get(id(item), []) if p != item.cname]
                streams = self.output_streams(item, proc)
                if targets or streams:
                    self.write_packets(w, item, item.shape, _indexed(item.cname), [_indexed(p) for p in targets], streams)
            if loop and t == loop.body_end - 1:
                w.close()

    def share_array(self, w: CodeWriter, proc: Proc) -> None:
        """An engine's cap on multipliers and adders: its array's, which every linear (and
        element-wise loop) of its inlined stages then shares (``codegen_hls.engine``)."""
        arrays = [a for a in (self.stage_hardware(proc, st) for st in proc.stages) if isinstance(a, MacArray)]
        units = max(a.rows * a.cols for a in arrays)
        floats = any(c_type(st.args[0].dtype) in ("float", "double") for st in proc.stages if st.args)
        w.line("// One MAC array for every linear below, one after another (codegen_hls.engine).")
        for op in (("fmul", "fadd") if floats else ("mul", "add")):
            w.line(f"#pragma HLS ALLOCATION operation instances={op} limit={units}")

    def print(self) -> Kernel:
        self.plan()
        w = CodeWriter()
        ops = tuple(p.op for p in self.procs if p.op != "copy")
        write_preamble(w, self.name, f"a dataflow design of {len(self.procs)} processes")
        self.print_stage_functions(w)
        calls = []
        for proc in self.procs:
            calls.append((proc, self.print_process(w, proc)))
        records = self.records([args for _, args in calls])
        self.bundle_stripes(records)
        segments = self.segments(records)
        w.line()
        if not segments:
            with w.block(top_declaration(self.name, self.ports)):
                write_port_interfaces(w, self.ports)
                w.line("#pragma HLS DATAFLOW")
                for stream in self.streams:
                    w.line(f'hls::stream<{stream_element(stream.dtype, stream.width)}> {stream.name}("{stream.name}");')
                    w.line(f"#pragma HLS STREAM variable={stream.name} depth={stream.depth}")
                for proc, args in calls:
                    w.line(f"{proc.name}({', '.join(args)});")
        else:
            self.print_segments(w, calls, segments)
        return Kernel(
            name=self.name,
            source=w.text(),
            ports=tuple(self.ports),
            ops=ops,
            processes=records,
            streams=tuple(self.streams),
            segments=segments,
        )

    def region_slrs(self) -> int:
        """How many SLRs this region's processes are spread over: the design's count, but
        one for a region without a MAC array or attention (BERT's mask, an embedding
        lookup). Its processes gain little from the other SLRs' DSPs, and each cut of
        its chain would be an AXI-stream link between two kernels for nothing."""
        if any(p.op in MATMUL_OPS or p.op in ("attention", ENGINE_OP) for p in self.procs):
            return self.slr_count
        return 1

    def segments(self, records: tuple[Process, ...]) -> tuple[Segment, ...]:
        """One segment per SLR the processes occupy (none when they fit one SLR): its
        processes, the m_axi ports they use, and an AXI-stream port per crossing stream."""
        slrs = sorted({p.slr for p in records})
        if len(slrs) < 2:
            return ()
        seg_name = {s: self.namer.fresh(f"{self.name}_slr{s}") for s in slrs}
        slr_of = {p.name: p.slr for p in records}
        port_names = {p.name for p in self.ports}
        result = []
        for s in slrs:
            procs = [p for p in records if p.slr == s]
            used = {a for p in procs for a in (*p.inputs, *p.outputs) if a in port_names}
            axis = []
            for st in self.streams:
                src, dst = slr_of[st.producer], slr_of[st.consumer]
                if src != dst and s in (src, dst):
                    out = src == s
                    axis.append(AxisPort(st.name, st.dtype, st.elements, st.depth, "out" if out else "in",
                                         seg_name[dst if out else src], st.width))
            ports = tuple(p.name for p in self.ports if p.name in used)
            result.append(Segment(seg_name[s], s, ports, tuple(axis), tuple(p.name for p in procs)))
        return tuple(result)

    def print_segments(self, w: CodeWriter, calls, segments: tuple[Segment, ...]) -> None:
        """One ``extern "C"`` DATAFLOW top per segment; then, for C simulation only, the
        region's entry point calling them in order (hls::stream is unbounded there, so a
        segment may run to completion before the next starts; on the card the host starts
        them all and the AXI-stream links carry the crossings)."""
        port_of = {p.name: p for p in self.ports}
        home = {name: seg.name for seg in segments for name in seg.processes}
        for seg in segments:
            ports = [port_of[n] for n in seg.ports]
            w.line(f"// SLR{seg.slr} segment of {self.name}: {len(seg.processes)} processes, "
                   f"{len(seg.axis)} AXI-stream link(s).")
            with w.block(top_declaration(seg.name, ports, seg.axis)):
                write_port_interfaces(w, ports, seg.axis)
                w.line("#pragma HLS DATAFLOW")
                for stream in self.streams:
                    if home[stream.producer] == home[stream.consumer] == seg.name:
                        w.line(f'hls::stream<{stream_element(stream.dtype, stream.width)}> {stream.name}("{stream.name}");')
                        w.line(f"#pragma HLS STREAM variable={stream.name} depth={stream.depth}")
                for proc, args in calls:
                    if home[proc.name] == seg.name:
                        w.line(f"{proc.name}({', '.join(args)});")
            w.line()
        w.line("#ifndef __SYNTHESIS__")
        w.line(f"// C simulation / emulation entry point of {self.name}: runs the SLR segments in order.")
        with w.block(f"void {self.name}({', '.join(_top_params(self.ports))})"):
            for stream in self.streams:
                if home[stream.producer] != home[stream.consumer]:
                    w.line(f'hls::stream<{stream_element(stream.dtype, stream.width)}> {stream.name}("{stream.name}");')
                    w.line(f"#pragma HLS STREAM variable={stream.name} depth={stream.depth}")
            for seg in segments:
                w.line(f"{seg.name}({', '.join([*seg.ports, *(a.name for a in seg.axis)])});")
        w.line("#endif  // __SYNTHESIS__")

    def print_append(self, w: CodeWriter, local: Namer, proc: Proc) -> None:
        """A kv_append: its prologue streams the layer's slice as it was, straight from the
        cache port (one packet a cycle); then it reads the new row and writes it in place."""
        out = proc.outputs[0]
        ports = [p for p in self.out_ports.get(id(out), [])]
        before, source = kv_update.slice_source(self.name, proc)
        w.line("// Prologue: this layer's slice as it was, streamed on before the new row arrives")
        w.line("// (the attention merges the row: codegen_hls.attention_kernel merge_row).")
        w.open("{")
        w.lines(before)
        self.write_packets(w, out, out.shape, source, [_indexed(p) for p in ports], self.output_streams(out, proc))
        w.close()
        row = kv_update.roles(self.name, proc)["new_row"]
        key = (id(row), id(proc))
        if key in self.stream_of:
            self.read_stream(w, local, row, row.hint, self.stream_of[key])
        kv_update.write_row(w, self.name, proc)

    def print_stages(self, w: CodeWriter, local: Namer, proc: Proc, stages: list[Stage]) -> None:
        """Call ``stages`` of ``proc``, declaring each array they write on first use."""
        for stage in stages:
            for slot in stage.args:
                if slot.producer is proc and not slot.cname:
                    ports = self.out_ports.get(id(slot), [])
                    if self.written_in_place(slot, proc):
                        slot.cname = ports[0]  # the only destination: write it in place
                    else:
                        slot.cname = local.fresh(re.sub(r"\W", "_", slot.hint))
                        width = self.out_width(slot, proc) if any(slot is o for o in proc.outputs) else 1
                        self.declare(w, slot.cname, slot.dtype, slot.shape, width)
                self.uses_ap |= needs_ap_types(slot.dtype)
            self.call_stage(w, proc, stage)

    def written_in_place(self, slot: Slot, proc: Proc) -> bool:
        """Whether a stage of ``proc`` writes ``slot`` straight into its one port: nothing
        streams it on and no later stage of ``proc`` reads it (an engine's residual sum,
        read by its layer norm, goes to a buffer and is copied to its port after)."""
        if slot.producer is not proc or len(self.out_ports.get(id(slot), [])) != 1 or self.output_streams(slot, proc):
            return False
        writer = next((i for i, st in enumerate(proc.stages) if any(s is slot for s in st.args)), None)
        return writer is None or not any(s is slot for st in proc.stages[writer + 1:] for s in st.args[:-1])

    def copy_cycles(self, proc: Proc) -> int:
        """Iterations of the copy loops ``print_process`` / ``print_blocked_process`` put
        around its stages (pipelined, one stream transfer or port packet each), over one call."""
        together = self.read_together(proc)  # one loop for these: counted once
        reads = sum(s.elements // self.width_of[self.stream_of[(id(s), id(proc))]] for s in proc.inputs
                    if (id(s), id(proc)) in self.stream_of and not any(s is t for t in together[1:]))
        reads += sum(port_copy_cycles(s.shape) for s in proc.inputs
                     if (id(s), id(proc)) in self.port_of and id(s) in proc.block_slot)
        writes = 0
        for slot in proc.outputs if proc.op != KV_APPEND_OP else ():  # a kv_append's: its prologue_io
            ports = self.out_ports.get(id(slot), [])
            if self.output_streams(slot, proc):
                writes += slot.elements // self.out_width(slot, proc)
            elif len(ports) > 1 or (ports and (proc.rows or not self.written_in_place(slot, proc))):
                writes += port_copy_cycles(slot.shape)
        if cache_slot(proc) is not None:  # the new row into the cache, an element a cycle
            writes += kv_update.row_elements(self.name, proc)
        zeroing = max((s.elements for s in proc.inputs if proc.causal and id(s) not in proc.block_slot
                       and (id(s), id(proc)) in self.stream_of), default=0)
        return reads + writes + zeroing // self.held_width(proc)

    def stage_nests(self, proc: Proc, stages: list[Stage], times=None) -> tuple:
        """The loop nests of ``stages`` of ``proc`` (``codegen_hls.lanes.loop_nests``), each
        stage's read once; a blocked process runs them once per block, a layer loop's body
        stage once per layer (``times``: id(stage) -> its calls, :meth:`stage_sites`)."""
        from .lanes import loop_nests

        keys = []
        for stage in stages:
            hardware = self.stage_hardware(proc, stage)
            key = (stage.prim_name, getattr(hardware, "mac", 0))  # an engine's attention: its MAC lanes
            if key not in self.nests:
                self.nests[key] = loop_nests(self.prim(stage.prim_name), key[1])
            keys.append((key, (times or {}).get(id(stage), 1)))
        return tuple((trips * proc.blocks * n, *rest) for key, n in keys for trips, *rest in self.nests[key])

    def stage_sites(self, proc: Proc) -> dict[int, int]:
        """id(stage) -> how many times it runs, for the stages printed (its call sites):
        every stage once, but a layer loop's (``codegen_hls.layer_loop``) body once per
        layer and the later layers' not at all -- the model times every call and counts
        each call site's hardware once."""
        loop = self.loops.get(id(proc))
        if loop is None:
            return {id(stage): 1 for stage in proc.stages}
        sites = {}
        for t, (kind, item) in enumerate(self.io_schedule(proc)):
            if kind == "stage" and not loop.repeated(t):
                sites[id(item)] = loop.count if loop.start <= t < loop.end else 1
        return sites

    def held_width(self, proc: Proc) -> int:
        """Elements per cycle of the loop that zeroes a causal attention's K and V after
        its last block: the width their streams fill them with (their buffers are
        partitioned by it, ``declare``)."""
        widths = [self.width_of[self.stream_of[(id(s), id(proc))]] for s in proc.inputs
                  if id(s) not in proc.block_slot and (id(s), id(proc)) in self.stream_of]
        return math.gcd(*widths) if widths else 1

    def scratch(self, proc: Proc) -> tuple[int, ...]:
        """Elements of each intermediate array of one call of ``proc``: the slots between its
        stages, the buffers its stage functions allocate (attention's scores), and the block
        buffers of the ports it reads in blocks."""
        if self.interleaved(proc):  # its arrays hold one value after another (buffer_plan)
            between = {b: math.prod(shape) for b, (_, shape, _) in enumerate(self.buffer_plan(proc)[1])}
        else:
            outputs = {id(s) for s in proc.outputs} | {id(s) for s in proc.block_slot.values()}
            between = {id(s): s.elements for st in proc.stages for s in st.args[-1:]
                       if s.producer is proc and id(s) not in outputs}
        inside = []
        shared: dict = {}

        def visit(node):
            if isinstance(node, s_tir.SBlock):  # a buffer in place over another holds none of its own
                inside.extend(math.prod(int(d) for d in buf.shape) for buf in node.alloc_buffers
                              if buf.name not in shared)

        sites = self.stage_sites(proc)  # a layer loop's body: one copy of its stages' buffers
        for stage in proc.stages:
            if id(stage) in sites:
                shared = shared_storage(self.prim(stage.prim_name))
                tvm_ffi.structural_walk(self.prim(stage.prim_name).body, visit)
        # a port cut into blocks is copied, a block at a time, into a buffer of its own
        from_ports = [proc.block_slot[id(s)].elements for s in proc.inputs
                      if id(s) in proc.block_slot and (id(s), id(proc)) in self.port_of]
        return tuple(between.values()) + tuple(inside) + tuple(from_ports)

    def records(self, calls=None) -> tuple[Process, ...]:
        """The Process records (after ``plan``; ``calls``: each process's call arguments,
        else taken from its signature): what the design JSON and the analytical model read."""
        works = [sum(_work(self.prim(s.prim_name)) for s in p.stages) * p.blocks for p in self.procs]
        index = {p.name: i for i, p in enumerate(self.procs)}
        links = [(index[st.producer], index[st.consumer]) for st in self.streams]
        slrs = _slrs(works, self.region_slrs(), links)
        for i, proc in enumerate(self.procs):
            slr = self.placement.get(proc.name, slrs[i])
            if not isinstance(slr, int) or not 0 <= slr < self.device.slrs:
                raise CodegenError(f"{proc.name}: placed on SLR {slr!r}; {self.device.name} has SLRs "
                                   f"0..{self.device.slrs - 1}")
            slrs[i] = slr
        layers = _layers(self.procs)
        calls = calls or [self.process_signature(p)[1] for p in self.procs]
        processes = []
        for proc, work, slr, layer, args in zip(self.procs, works, slrs, layers, calls):
            n_in = self.input_count(proc)
            extra = {}
            last = proc.stages[-1].args[-1] if proc.stages else (proc.outputs[0] if proc.outputs else None)
            if last is not None:
                extra.update(elements=last.elements * proc.blocks, dtype=last.dtype)
            extra.update(separable=proc.separable, rows=proc.rows, scratch=self.scratch(proc),
                         stream_io=self.copy_cycles(proc))
            if proc.op == "attention" and len(proc.args) >= 3:  # QK^T and AV over every head
                from .attention_kernel import is_causal

                extra.update(macs=_attention_macs(proc), causal=proc.source is not None and is_causal(proc.source))
            sites = self.stage_sites(proc)
            if proc.op == ENGINE_OP:
                # the operators of its element-wise stages as printed: a layer loop's body once
                ops = (proc.members if id(proc) not in self.loops else tuple(
                    proc.members[i] for i in sorted({proc.member_of[k] for k in sites if k in proc.member_of})))
                extra.update(macs=proc.macs, interleaved=self.interleaved(proc), engine_ops=ops)
            if proc.rows:
                held = sum(s.elements for s in proc.inputs
                           if id(s) not in proc.block_slot and (id(s), id(proc)) in self.stream_of)
                extra.update(held=held, barrier=bool(held) and not proc.causal)
            if proc.stages and proc.op not in MATMUL_OPS and proc.op != ENGINE_OP:
                lanes = self.stage_hardware(proc, proc.stages[-1]).lanes
                extra.update(lanes=lanes, width=last.shape[-1] if last.shape else 1,
                             nests=self.stage_nests(proc, proc.stages))
                if proc.prologue:
                    early = proc.stages[:proc.prologue]
                    read = [self.port_of[(id(s), id(proc))] for stage in early for s in stage.args
                            if (id(s), id(proc)) in self.port_of]
                    extra.update(prologue_nests=len(self.stage_nests(proc, early)),
                                 prologue_ports=tuple(dict.fromkeys(read)))
            elif proc.stages:  # a matmul process: the nests of its other stages (bias, quantization)
                others = [stage for stage in proc.stages if id(stage) in sites
                          and not isinstance(self.stage_hardware(proc, stage), MacArray)]
                nests = self.stage_nests(proc, others, sites)
                if nests:  # at the lanes that keep pace with its array: the model's epilogue_lanes
                    extra.update(width=last.shape[-1] if last.shape else 1, nests=nests)
            if proc.op == KV_APPEND_OP:  # its prologue: the slice, a packet a cycle from the port
                r = kv_update.roles(self.name, proc)
                out = proc.outputs[0]
                extra.update(prologue_io=out.elements // self.out_width(out, proc),
                             prologue_ports=tuple(self.port_of[(id(r[k]), id(proc))] for k in ("cache", "layer")))
            linears = [stage for stage in proc.stages if id(stage) in sites
                       and isinstance(self.stage_hardware(proc, stage), MacArray)]
            if id(proc) in self.loops:  # the first sizes the array's buffers (model): not a loop's body's
                linears.sort(key=lambda st: (sites[id(st)], not self.stage_hardware(proc, st).out_port))
            for stage in linears:
                array = self.stage_hardware(proc, stage)
                (batch, m, n, k), dtypes = matmul_info(self.prim(stage.prim_name))
                batch *= sites[id(stage)]  # a layer loop's linear: once per layer, each its layer's weight
                tile, _ = MacArray(array.rows, array.cols, array.latency).tile(m, n)
                if proc.blocks > 1 and batch != 1:
                    raise CodegenError(f"{proc.name}: a blocked matmul over {batch} batches")
                weight = self.port_of.get((id(stage.args[1]), id(proc)), "") if len(stage.args) > 1 else ""
                striped = self.stripes.get((id(stage.args[1]), id(proc)), ()) if len(stage.args) > 1 else ()
                stripes = tuple(p.name for p in striped)
                if stripes:
                    weight = ""
                # the packed W4A8 kernel: [.., M, K] x [K, N/2] bytes -> [.., M, N] (quant_kernels)
                out = stage.args[-1].shape
                packed = 2 if (len(stage.args) == 3 and stage.args[1].dtype == "int8" and len(out) >= 2
                               and out[-2] == m and out[-1] == 2 * n) else 1
                if "matmul" in extra:  # an engine's next linear, on the same array
                    extra["engine"] += ((batch, m * proc.blocks, n, k, int(array.out_port)),)
                    extra["engine_weights"] += stripes or (weight,)
                    if array.rows * array.cols > math.prod(extra["array"]):  # the array: its widest use
                        extra["array"] = (array.rows, array.cols)
                    continue
                extra.update(matmul=(batch, m * proc.blocks, n, k), dtypes=dtypes, weight_port=weight,
                             weight_stripes=stripes, writeback="port" if array.out_port else "array",
                             array=(array.rows, array.cols), tile=(tile.rows, tile.cols), packed=packed,
                             engine=(), engine_weights=())
            processes.append(Process(proc.name, proc.op, layer, slr, work, tuple(args[:n_in]), tuple(args[n_in:]), **extra))
        return tuple(processes)


def write_preamble(w: CodeWriter, name: str, summary: str) -> None:
    """The first lines of every kernel file."""
    w.line(f"// Kernel {name}: {summary}")
    w.line("// Generated by tvm-spatial. This file is both the Vitis HLS source and the")
    w.line("// source of the emulation build.")
    w.line(f'#include "{Design.COMMON_HEADER_NAME}"')


def _top_params(ports, axis=()) -> list[str]:
    decls = [
        f"{'const ' if p.direction == 'in' else ''}{c_type(p.dtype)} {array_declarator(p.name, p.shape)}"
        for p in ports
    ]
    return decls + [f"hls::stream<{stream_element(a.dtype, a.width)}>& {a.name}" for a in axis]


def top_declaration(name: str, ports, axis=()) -> str:
    """``extern "C" void name(<one array per port>, <one stream per AXI-stream port>)``:
    inputs ``const``."""
    return f'extern "C" void {name}({", ".join(_top_params(ports, axis))})'


def write_port_interfaces(w: CodeWriter, ports, axis=()) -> None:
    """One AXI master bundle per port, an AXI4-Stream interface per stream argument,
    AXI-lite control for the offsets and the start/done."""
    for port in ports:
        w.line(
            f"#pragma HLS INTERFACE m_axi port={port.name} offset=slave "
            f"bundle={port.bundle} depth={max(1, port.num_elements)}"
        )
    for a in axis:
        w.line(f"#pragma HLS INTERFACE axis port={a.name}")
    for port in ports:
        w.line(f"#pragma HLS INTERFACE s_axilite port={port.name}")
    w.line("#pragma HLS INTERFACE s_axilite port=return")


def _reads_before(programs: dict[str, list], stream: Stream) -> int:
    """Transfers the stream's consumer reads from other streams before its first read of
    this one, in its program (``stream_programs``)."""
    done = 0
    for op in programs.get(stream.consumer, ()):
        if isinstance(op, Read) and op.stream == stream.name or isinstance(op, ReadEach) and stream.name in op.streams:
            return done
        if isinstance(op, (Read, ReadEach)):
            done += op.count
    return 0


def check_stream_balance(kernel: str, streams: list[Stream], procs: list[Proc]) -> None:
    """Every stream has one producer and one consumer, and the consumer reads exactly the
    elements the producer writes: the producer's output tensor and the consumer's input
    buffer are the same value, so both loops cover ``elements``. A violation would hang
    the hardware, so it is a codegen error, not a warning."""
    names = {p.name for p in procs}
    seen = set()
    for stream in streams:
        if stream.name in seen:
            raise CodegenError(f"{kernel}: stream {stream.name} is declared twice")
        seen.add(stream.name)
        if stream.producer not in names or stream.consumer not in names or stream.producer == stream.consumer:
            raise CodegenError(f"{kernel}: stream {stream.name} needs distinct producer and consumer processes")
        if stream.elements < 0 or stream.depth < 1:
            raise CodegenError(f"{kernel}: stream {stream.name} carries {stream.elements} elements at depth {stream.depth}")


def accumulate_latency(a_dtype: str, b_dtype: str) -> int:
    """Cycles of a MAC's accumulate recurrence for these operand types (the model's costs)."""
    from tvm_spatial.estimate import costs

    return costs.MAC_COSTS[costs.mac_class(a_dtype, b_dtype)].latency


_LEGALIZED: list = []  # (region function, its legalized module), the latest few


def _legalized(plain: relax.Function) -> tvm.IRModule:
    """The region legalized. Cached: one build plans each region several times (per SLR
    count and token block, ``tuning.policy``) and legalizing it is most of a plan's time."""
    for known, legal in _LEGALIZED:
        if tvm_ffi.structural_equal(known, plain):
            return legal
    legal = relax.transform.LegalizeOps()(tvm.IRModule({"main": plain}))
    _LEGALIZED.insert(0, (plain, legal))
    del _LEGALIZED[8:]
    return legal


def _composites(func: relax.Function) -> list[relax.Function]:
    """The operator (composite) functions ``func`` calls, in call order: the interpreter
    makes one process per call, in the same order."""
    local, calls = {}, []
    for block in func.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Function):
                local[binding.var] = value
            elif isinstance(value, relax.Call) and isinstance(value.op, relax.Var) and value.op in local:
                calls.append(local[value.op])
    return calls


def _planned_writer(func: relax.Function, device_key: str, arrays=None, slrs: int | None = None,
                    placement=None, rows: int | None = None) -> "_KernelWriter":
    name = kernel_name_for(func)
    chunks = int(func.attrs.get(CHUNKS_ATTR, 0)) if func.attrs else 0
    plain = func
    for attr in ("Codegen", "global_symbol", CALLS_ATTR, CHUNKS_ATTR):
        plain = plain.without_attr(attr)
    legal = _legalized(plain)
    main = legal["main"]

    interp = _Interpreter(name)
    params, env = [], {}
    for index, p in enumerate(main.params):
        slot = Slot(str(p.ty.dtype), _static_shape(p.ty, f"tensor {p.name}"), p.name, arg=index)
        env[p] = slot
        params.append(slot)
    results = _flatten(interp.run(main, env, None))
    sources = _composites(plain)
    if len(sources) == len(interp.procs):
        for proc, source in zip(interp.procs, sources):
            proc.source = source
    return _KernelWriter(name, legal, interp, params, results, get_device(device_key), arrays, slrs, placement,
                         rows, chunks)


def calls_of(func: relax.Function) -> int:
    """How many times one inference calls this region (an outlined layer: once per layer)."""
    return int(func.attrs.get(CALLS_ATTR, 1)) if func.attrs else 1


def plan_design(funcs, device: str, host_ops=(), slrs: int | None = None, placement=None,
                rows: int | None = None) -> Design:
    """The design's processes, ports and streams without printing any C++ (kernel sources
    are empty): what the allocation reads, in a fraction of the printing time. ``slrs``:
    how many SLRs the processes are spread over (default: all the device has);
    ``placement``: process name -> SLR for processes placed otherwise; ``rows``: tokens
    per block of the row-wise processes (None: whole tensors)."""
    kernels = []
    for func in sorted(funcs, key=kernel_name_for):
        writer = _planned_writer(func, device, slrs=slrs, placement=placement, rows=rows)
        writer.plan()
        ops = tuple(p.op for p in writer.procs if p.op != "copy")
        records = writer.records()
        writer.bundle_stripes(records)
        kernels.append(Kernel(writer.name, "", tuple(writer.ports), ops, records, tuple(writer.streams),
                              writer.segments(records), calls=calls_of(func)))
    _check_placement(kernels, placement)
    return Design(device=device, kernels=tuple(kernels), common_header="", host_ops=tuple(host_ops))


def _check_placement(kernels, placement) -> None:
    """A placement naming no process of the design is a mistake (a typo, or a table for
    another design): say so rather than build something else than asked."""
    names = {p.name for k in kernels for p in k.processes}
    unknown = sorted(set(placement or ()) - names)
    if unknown:
        raise CodegenError(f"placement names no process of this design: {', '.join(unknown[:5])}"
                           + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""))


def build_kernel(func: relax.Function, device_key: str = "u280", arrays=None,
                 slrs: int | None = None, placement=None, rows: int | None = None) -> tuple[Kernel, bool, bool]:
    """Print one offloaded function. Returns the kernel, and whether it needs ap types /
    streams (so the common header includes only what is used). ``arrays``: process name
    -> (rows, cols) of its matmul's MAC array (default: the library's 8 x 32 tile)."""
    writer = _planned_writer(func, device_key, arrays, slrs, placement, rows)
    kernel = writer.print()
    return kernel, writer.uses_ap, bool(kernel.streams)


# Odd functions bounded by 1, as f(x) = x P(x^2) / Q(x^2) on [-clamp, clamp] and +-1 beyond
# ``saturate`` (where float32 rounds them to +-1). Coefficients fitted for this project
# (iteratively reweighted least squares on the relative error); in float32 arithmetic the
# largest relative error over float32 inputs is 5.1e-7 (erf) and 5.5e-7 (tanh).
@dataclass(frozen=True)
class _Rational:
    name: str
    clamp: str
    saturate: str
    numerator: tuple[str, ...]
    denominator: tuple[str, ...]


RATIONAL_FUNCTIONS = (
    _Rational("erf", "3.92f", "3.92f",
              ("1.12837911f", "0.192662641f", "0.0496092811f", "0.00340547552f", "0.000135884082f",
               "-1.96352084e-06f", "2.06032489e-08f"),
              ("1.0f", "0.50407511f", "0.111996174f", "0.0137386136f", "0.000888026087f")),
    _Rational("tanh", "7.9f", "9.01f",
              ("0.99999994f", "-0.15893361f", "0.0316542052f", "0.00752275484f", "0.000172545013f",
               "4.60495528e-07f", "-3.89204224e-10f"),
              ("1.0f", "0.174398765f", "-0.043543864f", "0.023720853f", "0.00142929482f", "1.26742334e-05f")),
)


def _horner(coefficients, var: str) -> str:
    """``c0 + var * (c1 + var * (...))`` as C, innermost first (lowest degree first in)."""
    text = coefficients[-1]
    for c in reversed(coefficients[:-1]):
        sign, magnitude = ("-", c[1:]) if c.startswith("-") else ("+", c)
        text = f"({text}) * {var} {sign} {magnitude}"
    return text


def _write_rational_functions(w: CodeWriter) -> None:
    """``tvs_erf``, ``tvs_tanh``: float erf and tanh as straight-line arithmetic. Why not
    <cmath>: a libm call per element does not vectorize (GELU spent 5 % of BERT-base's and
    9 % of GPT2-small's emulation in ``erff``/``tanhf``), and in HLS a rational function is a
    few multipliers and one divider. Other types keep <cmath>."""
    for f in RATIONAL_FUNCTIONS:
        w.line("template <typename T>")
        w.line(f"static inline T tvs_{f.name}(T x) {{ return std::{f.name}(x); }}")
        with w.block(f"static inline float tvs_{f.name}(float x)"):
            w.line(f"const float c = x < -{f.clamp} ? -{f.clamp} : (x > {f.clamp} ? {f.clamp} : x);  // NaN stays NaN")
            w.line("const float t = c * c;")
            w.line(f"const float r = c * ({_horner(f.numerator, 't')}) / ({_horner(f.denominator, 't')});")
            w.line(f"return (x > {f.saturate} || r > 1.0f) ? 1.0f : ((x < -{f.saturate} || r < -1.0f) ? -1.0f : r);")


# The emulation's own hls::stream (codegen_hls/include; see that header for why).
EMULATION_STREAMS_MACRO = "TVM_SPATIAL_EMULATION_STREAMS"
EMULATION_STREAM_HEADER = "tvm_spatial_emulation_stream.h"


def common_header(uses_ap: bool, uses_streams: bool = False) -> str:
    """The shared header every kernel includes: includes and small helpers."""
    w = CodeWriter()
    w.line("// Shared definitions of the kernels of one tvm-spatial design.")
    w.line("#ifndef TVM_SPATIAL_HLS_H_")
    w.line("#define TVM_SPATIAL_HLS_H_")
    w.lines(["#include <cmath>", "#include <cstdint>"])
    if uses_ap:
        w.lines(["#include <ap_int.h>", "#include <ap_fixed.h>"])
    if uses_streams:
        # the emulation build defines the macro: a faster stream with the same behaviour
        w.line(f"#if defined({EMULATION_STREAMS_MACRO}) && !defined(__SYNTHESIS__)")
        w.line(f'#include "{EMULATION_STREAM_HEADER}"')
        w.line("#else")
        w.line("#include <hls_stream.h>")
        w.line("#endif")
    w.line()
    w.line("// ``N`` elements moved through a stream in one transfer (wide streams keep pace with lanes)")
    w.line("template <typename T, int N>")
    w.line(f"struct {PACKET} {{ T data[N]; }};")
    w.line("template <typename T>")
    w.line("static inline T tvs_min(T a, T b) { return a < b ? a : b; }")
    w.line("template <typename T>")
    w.line("static inline T tvs_max(T a, T b) { return a > b ? a : b; }")
    _write_rational_functions(w)
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


def build_design(funcs, device: str, host_ops=(), arrays=None, slrs: int | None = None,
                 placement=None, rows: int | None = None) -> Design:
    """All offloaded functions of one build, in a stable (name-sorted) order. ``arrays``:
    process name -> (rows, cols) of its MAC array (``tvm_spatial.estimate.Allocation``); ``slrs``:
    how many SLRs the processes are spread over (default: all the device has); ``placement``:
    process name -> SLR of processes placed otherwise (tuned SLR cuts); ``rows``: tokens per
    block of the row-wise processes (``codegen_hls.token_blocks``; None: whole tensors)."""
    kernels = []
    uses_ap = uses_streams = False
    for func in sorted(funcs, key=kernel_name_for):
        kernel, ap, streams = build_kernel(func, device, arrays, slrs, placement, rows)
        kernels.append(replace(kernel, calls=calls_of(func)))
        uses_ap |= ap
        uses_streams |= streams
    _check_placement(kernels, placement)
    return Design(
        device=device,
        kernels=tuple(kernels),
        common_header=common_header(uses_ap, uses_streams),
        host_ops=tuple(host_ops),
    )
