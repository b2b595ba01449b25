"""The description of a generated design: what the project writer, the emulation
runtime and the reports all read.

Why a plain data object: the codegen produces it once from the IR; it is embedded
(as JSON) in the compiled module so that an exported library can still write its Vitis
project, and everything downstream works from this one record rather than from globals.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Port:
    """One argument of a kernel's top function: an AXI master port onto off-chip memory."""

    name: str
    dtype: str  # TVM dtype string, e.g. "float32", "int64"
    shape: tuple[int, ...]
    # "in", "out", or "inout": read and written through one buffer that outlives the call
    # (a decode design's KV cache, updated in place: relax_passes.kv_inplace)
    direction: str
    bundle: str  # m_axi bundle name, one per port so each gets its own memory bank
    # Which argument of the kernel's caller feeds this port. Several ports may share one
    # argument: a tensor read by two dataflow processes gets a port (and bundle) each.
    arg: int = -1
    # One stripe of a weight read through several ports (codegen_hls.weight_stripes):
    # (index c, count C, group g, the argument's columns N). It holds, of the argument's
    # [K, N], the columns t * C * g + c * g + i of every tile t of C * g columns, tile
    # after tile (zeros past N in a last tile that N cuts short): shape [tiles, K, g].
    # Empty: the whole argument.
    stripe: tuple[int, ...] = ()
    # A stacked port (a token-parallel engine's layer loop, codegen_hls.layer_loop): the
    # arguments of every layer, in order, each one's data (or stripe) after the other along
    # a leading axis, layer l's at [l]; ``arg`` is the first. Empty: one argument.
    layers: tuple[int, ...] = ()

    @property
    def num_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def args(self) -> tuple[int, ...]:
        """The caller's arguments that feed it."""
        return self.layers or (self.arg,)

    @property
    def layer_shape(self) -> tuple[int, ...]:
        """The shape of one argument's data in it (all of it unless stacked)."""
        return self.shape[1:] if self.layers else self.shape

    @property
    def arg_shape(self) -> tuple[int, ...]:
        """The shape of an argument that feeds it (a stripe's: ``[K, N]``)."""
        shape = self.layer_shape
        return (shape[1], self.stripe[3]) if self.stripe else shape

    def from_arguments(self, arrays):
        """What the host writes to this port from its arguments (numpy arrays, one per
        entry of :attr:`args`): :meth:`from_argument` of each, stacked when it is stacked."""
        if not self.layers:
            return self.from_argument(arrays[0])
        import numpy as np

        one = replace(self, shape=self.layer_shape, layers=())
        return np.stack([one.from_argument(a) for a in arrays])

    def from_argument(self, array):
        """What the host writes to this port from its argument (a numpy array): the array,
        or the stripe of it, tile-major."""
        if not self.stripe:
            return array
        import numpy as np

        index, count, group, cols = self.stripe
        tiles, rows, _ = self.shape
        padded = np.zeros((rows, tiles * count * group), array.dtype)
        padded[:, :cols] = array
        stripe = padded.reshape(rows, tiles, count, group)[:, :, index, :]
        return np.ascontiguousarray(stripe.transpose(1, 0, 2))


@dataclass(frozen=True)
class Process:
    """One dataflow process inside a kernel: one operator instance of the model."""

    name: str  # the C function name
    op: str  # the matched operator (composite name), e.g. "linear", "masked_softmax"
    layer: int  # transformer layer it belongs to (by residual connections seen before it)
    slr: int  # super logic region it is assigned to
    work: int  # iteration-space size of its TIR (a cost proxy for balancing)
    inputs: tuple[str, ...]  # ports and streams it reads
    outputs: tuple[str, ...]  # ports and streams it writes
    elements: int = 0  # elements of the tensor it computes last
    dtype: str = ""  # and their type
    # A matmul process (linear, attention): what the analytical model reads, as realized.
    matmul: tuple[int, ...] = ()  # (batch, m, n, k)
    dtypes: tuple[str, ...] = ()  # (A, B) operand types
    weight_port: str = ""  # the m_axi port B is read from ("" when B is a stream)
    weight_stripes: tuple[str, ...] = ()  # or the ports of its stripes (Port.stripe), in order
    array: tuple[int, ...] = ()  # (rows, cols) of its MAC array (the HLS pragmas' parallelism)
    tile: tuple[int, ...] = ()  # (rows, cols) of the loop tile the array works through
    packed: int = 1  # outputs per multiply: 2 for the packed W4A8 kernel ([K, N/2] bytes in, [M, N] out)
    # how each accumulator tile is copied out (codegen_hls.library.schedule_array): "array",
    # a row of the array's columns a cycle into a result partitioned like its accumulator;
    # "port", a 512-bit beat a cycle into the m_axi port it writes in place. Its other
    # stages' loop nests are ``nests`` (at the lanes that keep pace with its array).
    writeback: str = ""
    # An engine (codegen_hls.engine): its other linears on the same array, in order, as
    # ``matmul`` (same operand types) and whether each writes its result in place through a
    # port (1: ``writeback`` "port"), and the ports (or stripes) of their weights.
    engine: tuple[tuple[int, ...], ...] = ()
    engine_weights: tuple[str, ...] = ()
    engine_ops: tuple[str, ...] = ()  # and its element-wise operators, in order
    # Any other process: elements per cycle its loops handle as realized (codegen_hls.lanes),
    # a divisor of ``width``, the last dimension of the tensor it computes last.
    lanes: int = 0
    width: int = 0
    # ... and its loop nests as the lanes schedule builds them, (trips, extent, fixed II,
    # rows): ``trips * extent / l`` cycles each (``l`` the largest divisor of ``extent`` <=
    # lanes; with lanes beyond ``extent``, ``trips / r``: ``r`` of the ``rows`` around it per
    # cycle, codegen_hls.lanes), or ``trips * extent * II`` when the II is fixed (a
    # reduction carried by its loop).
    nests: tuple[tuple[int, ...], ...] = ()
    # Token blocks (codegen_hls.token_blocks): whether it is row-wise, and the tokens it
    # computes at a time as built (0: whole tensors). Its records above count a whole call.
    separable: bool = False
    rows: int = 0
    # On-chip memory beyond its input buffers: elements of the stream inputs it holds whole
    # while the others arrive in blocks (attention's K and V), and of each intermediate
    # array of one call (one block, when blocked): between its stages and inside them.
    held: int = 0
    scratch: tuple[int, ...] = ()
    # Blocked, but its first block waits for the whole of the inputs it holds (a
    # bidirectional attention's K and V): the pipeline of blocks restarts after it.
    barrier: bool = False
    # Multiply-accumulates per call done by its lanes, not a MAC array (the fused attention's
    # QK^T and AV): work the DSP roofline counts.
    macs: int = 0
    causal: bool = False  # a fused attention under a causal mask (query i sees keys 0..i)
    # Cycles of its own copy loops per call (around its stages, pipelined at II=1): the
    # stream reads and writes (a transfer each), the rows of a port it reads or writes per
    # block (a packet of up to 16 elements each, as a stream's) and the zeroing of held
    # buffers (as many elements as their streams carry).
    stream_io: int = 0
    # Its prologue (codegen_hls.kernel hoist_prologue): the first ``prologue_nests`` of its
    # ``nests`` belong to stages that read no stream and run before its stream reads, while
    # its producers compute; ``prologue_ports`` are the ports those stages read.
    prologue_nests: int = 0
    prologue_ports: tuple[str, ...] = ()
    prologue_io: int = 0  # copy-loop transfers in its prologue (a kv_append's slice, streamed on)
    # An engine of a token-split region: it reads and writes its streams between its stages
    # (codegen_hls.kernel io_schedule), so it runs beside the engines it hands K and V to.
    interleaved: bool = False

    @property
    def realized(self) -> tuple[int, ...]:
        """Its MAC array as an allocation table writes it: ``(rows, cols)``, and the
        weight's channels when it is striped (``tvm_spatial.allocation(arrays=...)``)."""
        return (*self.array, *((len(self.weight_stripes),) if self.weight_stripes else ()))


_TUPLE_FIELDS = ("inputs", "outputs", "matmul", "dtypes", "array", "tile", "scratch", "weight_stripes",
                 "prologue_ports", "engine_weights", "engine_ops")


@dataclass(frozen=True)
class Stream:
    """An on-chip FIFO between two processes, carrying one tensor element by element."""

    name: str
    dtype: str
    elements: int  # elements written once by the producer and read once by the consumer
    depth: int  # in transfers
    producer: str
    consumer: str
    width: int = 1  # elements per transfer (a packet of them when > 1: codegen_hls.c_types)
    # when it flows: ``early``, the producer writes it in its prologue, before it reads any
    # stream (a kv_append's slice); ``after``, the transfers its consumer reads from other
    # streams first (an unblocked consumer's copy loops, in order)
    early: bool = False
    after: int = 0
    # between interleaved processes (a token-split region's engines, kernel io_schedule): the
    # share of its producer's MACs done when it is written, and of its consumer's when read
    written_at: float = 1.0
    read_at: float = 0.0


@dataclass(frozen=True)
class AxisPort:
    """An AXI4-Stream argument of a segment kernel: one stream crossing an SLR boundary.

    Both ends use the stream's name as the argument name; ``connectivity.cfg`` links them
    with ``stream_connect=<producer cu>.<name>:<consumer cu>.<name>:<depth>``."""

    name: str
    dtype: str
    elements: int  # elements the producer writes and the consumer reads per call
    depth: int  # FIFO depth the link needs (the stream's depth in the dataflow plan)
    direction: str  # "out": this kernel writes it; "in": it reads it
    peer: str  # the segment kernel on the other side
    width: int = 1  # elements per transfer


@dataclass(frozen=True)
class Segment:
    """The part of a region placed on one SLR: its own Vitis kernel (``extern "C"`` top).

    Its arguments are its m_axi ports (``ports``: names of the region's ports, in the
    region's order) followed by its AXI-stream ports (``axis``)."""

    name: str  # e.g. "k0_slr1"
    slr: int
    ports: tuple[str, ...]
    axis: tuple[AxisPort, ...]
    processes: tuple[str, ...]  # names of the Process records it runs


@dataclass(frozen=True)
class VitisKernel:
    """What ``v++ -c -k <name>`` compiles: a region's top, or one SLR segment of it."""

    name: str
    region: str  # the Kernel (source file, Relax entry point) it belongs to
    filename: str
    ports: tuple[Port, ...]  # m_axi ports, argument order
    axis: tuple[AxisPort, ...] = ()  # AXI-stream ports, after the m_axi ones
    slr: int | None = None  # fixed by the SLR split; None: placement chooses


@dataclass(frozen=True)
class Kernel:
    """One offloaded region: its HLS source file and its Relax entry point ``name``.

    Unsplit (``segments`` empty), ``name`` is also its one ``extern "C"`` Vitis kernel.
    A region spanning several SLRs has one Vitis kernel per SLR segment, linked by AXI
    streams; ``name`` is then a C-simulation wrapper calling the segment tops in order."""

    name: str
    source: str  # the complete HLS C++ file, byte-identical to what emulation compiles
    ports: tuple[Port, ...]
    ops: tuple[str, ...]  # Relax operators implemented inside, in program order
    processes: tuple[Process, ...] = ()
    streams: tuple[Stream, ...] = ()
    segments: tuple[Segment, ...] = ()
    calls: int = 1  # times one inference calls it (an outlined layer's region: once per layer)

    @property
    def num_args(self) -> int:
        """Arguments the caller passes (ports sharing an argument count once)."""
        return 1 + max((a for p in self.ports for a in p.args), default=-1)

    @property
    def filename(self) -> str:
        return f"{self.name}.cpp"

    def vitis_kernels(self) -> tuple[VitisKernel, ...]:
        if not self.segments:
            return (VitisKernel(self.name, self.name, self.filename, self.ports),)
        by_name = {p.name: p for p in self.ports}
        return tuple(
            VitisKernel(s.name, self.name, self.filename, tuple(by_name[n] for n in s.ports), s.axis, s.slr)
            for s in self.segments
        )


@dataclass(frozen=True)
class Design:
    """All kernels one ``relax.build`` offloaded, plus what stayed on the host."""

    device: str  # key into tvm_spatial/data/devices.json
    kernels: tuple[Kernel, ...]
    common_header: str  # text of the shared header every kernel includes
    host_ops: tuple[str, ...] = field(default=())  # operators left on the host CPU

    COMMON_HEADER_NAME = "tvm_spatial_hls.h"

    def operator_calls(self) -> dict[str, int]:
        """Operator -> how many times one inference runs it: a process of a region the host
        calls once per layer (an outlined layer) counts once per call."""
        counts: dict[str, int] = {}
        for kernel in self.kernels:
            for proc in kernel.processes:
                counts[proc.op] = counts.get(proc.op, 0) + kernel.calls
        return counts

    def vitis_kernels(self) -> tuple[VitisKernel, ...]:
        """Every Vitis kernel of the design, region by region, segments in SLR order."""
        return tuple(v for k in self.kernels for v in k.vitis_kernels())

    def to_json(self) -> str:
        data = asdict(self)
        data["version"] = MANIFEST_VERSION
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Design":
        data = json.loads(text)
        version = data.pop("version", None)
        if version != MANIFEST_VERSION:
            raise ValueError(f"design manifest version {version} is not {MANIFEST_VERSION}")
        kernels = tuple(
            Kernel(
                name=k["name"],
                source=k["source"],
                ports=tuple(Port(**{**p, "shape": tuple(p["shape"]), "stripe": tuple(p.get("stripe", ())),
                                     "layers": tuple(p.get("layers", ()))})
                            for p in k["ports"]),
                ops=tuple(k["ops"]),
                processes=tuple(
                    Process(**{**p, **{key: tuple(p[key]) for key in _TUPLE_FIELDS if key in p},
                               "nests": tuple(tuple(n) for n in p.get("nests", ())),
                               "engine": tuple(tuple(m) for m in p.get("engine", ()))})
                    for p in k.get("processes", ())
                ),
                streams=tuple(Stream(**st) for st in k.get("streams", ())),
                segments=tuple(
                    Segment(
                        name=sg["name"], slr=sg["slr"], ports=tuple(sg["ports"]),
                        axis=tuple(AxisPort(**a) for a in sg["axis"]), processes=tuple(sg["processes"]),
                    )
                    for sg in k.get("segments", ())
                ),
                calls=k.get("calls", 1),
            )
            for k in data["kernels"]
        )
        return cls(
            device=data["device"],
            kernels=kernels,
            common_header=data["common_header"],
            host_ops=tuple(data["host_ops"]),
        )
