"""What the analytical model reads: the work of each dataflow process, taken from the IR.

Why a separate record: the model (``model.py``) must be a pure function, cheap enough to
call thousands of times from the allocator and the tuner. This module does the reading
once: from a :class:`codegen_hls.design.Design` (its processes, ports and streams, plus the
stage signatures of its HLS text, which carry every tensor's static shape) it builds a
:class:`DesignWork` of plain frozen records.

What it infers, and how (the Design does not carry these yet; see the report's
interface requests): a process's matmul shape from the one stage whose three array
parameters have the shapes ``[..., M, K] x [..., K, N] -> [..., M, N]``; whether the
second operand is a weight (an ``m_axi`` port) or an activation (a stream); the token
count from the linear layers' ``M``; causal attention from a ``[.., S, S]`` mask port.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from .costs import dtype_bits
from .kvcache import KVCacheWork

_CTYPES = {
    "float": "float32", "double": "float64", "int64_t": "int64", "int32_t": "int32", "int16_t": "int16",
    "int8_t": "int8", "uint8_t": "uint8", "bool": "bool",
}
MATMUL_OPS = ("linear", "attention_scores", "attention_context", "matmul")


@dataclass(frozen=True)
class Matmul:
    batch: int
    m: int  # rows: tokens
    n: int
    k: int
    a_dtype: str
    b_dtype: str
    b_offchip: bool  # the second operand is a weight read through an m_axi port
    # outputs per multiply: 2 for W4A8, whose weight port holds two 4-bit weights per byte
    # ([K, N/2] int8) and whose DSP multiplies a packed pair (codegen_hls/quant_kernels.py);
    # ``n`` always counts outputs and Parallelism.cols outputs per cycle
    packed: int = 1

    @property
    def macs(self) -> int:
        return self.batch * self.m * self.n * self.k


@dataclass(frozen=True)
class ProcessWork:
    kernel: str
    name: str
    op: str
    layer: int
    slr: int
    work: int  # iterations of all its TIR blocks (Process.work)
    tokens: int  # rows of its token dimension
    elements: int  # elements it produces
    dtype: str  # its element type
    matmul: Matmul | None = None
    ports: tuple[str, ...] = ()  # m_axi ports it reads or writes
    port_bytes: int = 0  # bytes through its ports per inference, matmul weight excluded
    in_stream_elements: int = 0  # elements it buffers from its input streams
    barrier: bool = False  # needs the whole sequence before its first output
    # decode designs: ((cache layer, elements), ...) it reads from or appends to the KV cache
    # per token, wherever the cache lives (see kvcache.py); cache_dtype is their type
    cache_traffic: tuple[tuple[int, int], ...] = ()
    cache_dtype: str = ""
    width: int = 0  # last dimension of what it computes: the codegen's lanes divide it (0: unknown)
    nests: tuple[tuple[int, ...], ...] = ()  # its loop nests as built (codegen_hls.design.Process)
    # row-wise: the codegen can stream it in token blocks (codegen_hls.token_blocks); the
    # others buffer whole tensors whatever the block. ``rows``: its tokens per block as built.
    separable: bool = False
    rows: int = 0
    # on-chip memory beyond the input buffers (codegen_hls.design.Process): stream inputs
    # held whole while the others arrive in blocks, and intermediate arrays of one call
    held: int = 0
    scratch: tuple[int, ...] = ()
    # cycles of its copy loops per call as built: stream reads and writes (a transfer of up
    # to 16 elements each), a port's rows per block (as many per cycle), before and after its
    # stages (0: a design described by its sizes, as Allo's and Chen et al.'s)
    stream_io: int = 0
    macs: int = 0  # multiply-accumulates of its lanes (the fused attention), for the DSP roofline
    # its prologue (codegen_hls.design.Process): the first ``prologue_nests`` nests run before
    # its stream reads, reading ``prologue_bytes`` through ports and ``prologue_cache``
    # elements of the KV cache (a kv_update's slice)
    prologue_nests: int = 0
    prologue_bytes: int = 0
    prologue_cache: int = 0
    prologue_io: int = 0  # and its copy-loop transfers there (a kv_append streaming its slice)
    calls: int = 1  # times one inference calls its kernel (an outlined layer: once per layer)
    # a matmul built by the codegen: how its accumulator tiles are copied out ("array" or
    # "port", codegen_hls.design.Process.writeback); "" for a design described by its sizes,
    # whose schedule's own copy is not ours. Its other stages are ``nests`` at the lanes
    # that keep pace with its array (codegen_hls.kernel stage_hardware).
    writeback: str = ""
    more: tuple[Matmul, ...] = ()  # an engine's other linears, on the same array, in order
    more_writeback: tuple[str, ...] = ()  # and how each copies its tiles out (as ``writeback``)
    engine_ops: tuple[str, ...] = ()  # and its element-wise operators (costs.ELEMENT_OPS keys)
    # an engine's element-wise stages share its array's multipliers and adders (one ALLOCATION
    # over the inlined stages: codegen_hls.engine); False: they keep units of their own
    shared_stages: bool = True
    # an engine of a token-split region: reads and writes its streams between its stages, so
    # it runs beside the engines it exchanges K and V with (model.interleaved_cycles)
    interleaved: bool = False


@dataclass(frozen=True)
class StreamWork:
    name: str
    bits: int
    depth: int
    elements: int
    slr: int
    producer: str = ""  # the process writing it (its SLR is the stream's)
    consumer: str = ""  # the process reading it (on another SLR: an AXI-stream link)
    per_block: bool = False  # a what-if (DesignWork.streaming): as deep as one token block of it
    width: int = 1  # elements per transfer
    early: bool = False  # written in the producer's prologue (codegen_hls.design.Stream)
    after: int = 0  # transfers the consumer reads from other streams before this one
    # between interleaved processes: the share of the producer's work done when it writes
    # it, and of the consumer's when it reads it (1.0, 0.0: after the one, before the other)
    written_at: float = 1.0
    read_at: float = 0.0

    @property
    def transfers(self) -> int:
        """FIFO words moved: the iterations of its producer's write loop and its consumer's read loop."""
        return math.ceil(self.elements / max(1, self.width))


@dataclass(frozen=True)
class DesignWork:
    device: str
    tokens: int
    causal: bool
    processes: tuple[ProcessWork, ...]
    streams: tuple[StreamWork, ...]
    host_ops: tuple[str, ...] = ()
    kv_cache: tuple[KVCacheWork, ...] = ()  # decode designs: each layer's K and V cache

    def with_precision(self, precision: str | None) -> "DesignWork":
        """The same design in another number format: ``"w8a8"`` (int8 weights and
        activations of every matmul) or ``"w4a8"`` (4-bit weights of linear layers,
        int8 activations and attention), as Allo's GPT2; element-wise stays as it is."""
        if not precision:
            return self
        formats = {"w8a8": ("int8", "int8"), "w4a8": ("int4", "int8"), "fp32": ("float32", "float32")}
        if precision not in formats:
            raise ValueError(f"precision {precision!r} is not one of {', '.join(formats)}")
        w, a = formats[precision]
        procs = []
        for p in self.processes:
            if p.matmul is not None:
                b = w if p.matmul.b_offchip else a
                p = replace(p, matmul=replace(p.matmul, a_dtype=a, b_dtype=b), dtype=a,
                            more=tuple(replace(mm, a_dtype=a, b_dtype=w) for mm in p.more))
            if p.cache_traffic:  # K and V are the attention matmuls' operands: int8 when they are
                p = replace(p, cache_dtype=a)
            if p.op == "attention":  # the fused attention's operands are activations
                p = replace(p, dtype=a)
            procs.append(p)
        kv = tuple(replace(c, dtype=a) for c in self.kv_cache)
        return replace(self, processes=tuple(procs), kv_cache=kv)

    def streaming(self) -> "DesignWork":
        """A what-if: every operator streams token blocks (attention too, as in Allo's GPT2
        design), and every stream holds one block -- what the architecture allows, beyond
        what the codegen builds today (``codegen_hls.token_blocks``)."""
        return replace(self, processes=tuple(replace(p, separable=True) for p in self.processes),
                       streams=tuple(replace(s, per_block=True) for s in self.streams))

    @property
    def block(self) -> int | None:
        """Tokens per block of the row-wise processes as built (None: whole tensors)."""
        return max((p.rows for p in self.processes), default=0) or None

    def with_placement(self, placement: dict) -> "DesignWork":
        """The same design with some processes on other SLRs (process name -> SLR; the
        others stay): what tuning the SLR cuts scores. A stream lives on its producer's SLR."""
        if not placement:
            return self
        procs = tuple(replace(p, slr=placement.get(p.name, p.slr)) for p in self.processes)
        slr_of = {p.name: p.slr for p in procs}
        streams = tuple(replace(s, slr=slr_of.get(s.producer, s.slr)) for s in self.streams)
        return replace(self, processes=procs, streams=streams)

    def cuts(self) -> dict[str, tuple[int, ...]]:
        """Kernel -> the indices (in its process order) where the next SLR begins, for
        every kernel spread over more than one SLR (the codegen splits each kernel's chain
        of processes into contiguous SLR segments)."""
        out: dict[str, list[int]] = {}
        for kernel, procs in self.kernel_processes().items():
            out[kernel] = [i for i in range(1, len(procs)) if procs[i].slr != procs[i - 1].slr]
        return {k: tuple(v) for k, v in out.items() if v}

    def kernel_processes(self) -> dict[str, list[ProcessWork]]:
        """Kernel -> its processes in chain order."""
        out: dict[str, list[ProcessWork]] = {}
        for p in self.processes:
            out.setdefault(p.kernel, []).append(p)
        return out

    def placement_for_cuts(self, cuts: dict) -> dict[str, int]:
        """Process name -> SLR when each kernel's chain is cut at ``cuts[kernel]`` (strictly
        increasing indices inside the chain; segment ``j`` goes on the SLR the kernel's
        ``j``-th segment occupies now)."""
        placement = {}
        chains, current = self.kernel_processes(), self.cuts()
        for kernel, positions in cuts.items():
            procs = chains.get(kernel, [])
            if list(positions) != sorted(set(positions)) or not all(0 < c < len(procs) for c in positions):
                raise ValueError(f"cuts {tuple(positions)} of kernel {kernel} are not increasing positions "
                                 f"inside its {len(procs)} processes")
            now = current.get(kernel, ())
            labels = [procs[0].slr] + [procs[c].slr for c in now] if procs else []
            if len(positions) != len(now):
                raise ValueError(f"kernel {kernel} has {len(now)} SLR cut(s), not {len(positions)}")
            for i, p in enumerate(procs):
                placement[p.name] = labels[sum(1 for c in positions if i >= c)]
        return placement


# ---- reading a Design ---------------------------------------------------------------
_SIG = re.compile(r"static void (\w+)\(([^)]*)\)\s*\{")
_PARAM = re.compile(r"(?:const\s+)?(.+?)\s+(\w+)((?:\[\d+\])*)\s*$")


def _ctype_dtype(ctype: str) -> str:
    ctype = ctype.strip()
    if ctype in _CTYPES:
        return _CTYPES[ctype]
    m = re.match(r"ap_(u?)int<(\d+)>", ctype)
    if m:
        return f"{'u' if m.group(1) else ''}int{m.group(2)}"
    m = re.match(r"ap_fixed<(\d+)", ctype)
    if m:
        return f"int{m.group(1)}"
    return "float32"


def _signatures(source: str) -> dict[str, list[tuple[str, str, tuple[int, ...]]]]:
    """C function name -> [(param name, dtype, shape)] of array parameters."""
    table = {}
    for m in _SIG.finditer(source):
        params = []
        for text in m.group(2).split(","):
            text = text.strip()
            if not text or "hls::stream" in text:
                continue
            pm = _PARAM.match(text)
            if pm is None:
                continue
            shape = tuple(int(d) for d in re.findall(r"\[(\d+)\]", pm.group(3)))
            params.append((pm.group(2), _ctype_dtype(pm.group(1).replace("const", "")), shape))
        table[m.group(1)] = params
    return table


def _bodies(source: str) -> dict[str, str]:
    """C function name -> its body text (functions end at a closing brace in column 0)."""
    out = {}
    for m in _SIG.finditer(source):
        end = source.find("\n}\n", m.end())
        out[m.group(1)] = source[m.end(): end if end >= 0 else len(source)]
    return out


def _matmul_of(params) -> tuple | None:
    if len(params) != 3:
        return None
    (_, ad, a), (_, bd, b), (_, _, c) = params
    if min(len(a), len(b), len(c)) < 2:
        return None
    m, k = a[-2], a[-1]
    k2, n = b[-2], b[-1]
    if k != k2 or c[-2:] != (m, n):
        return None
    batch = 1
    for d in c[:-2]:
        batch *= d
    return batch, m, n, k, ad, bd


def _packing(proc, calls, sigs) -> int:
    """Outputs per multiply of a recorded matmul process: 2 when its matmul stage takes
    ``[.., M, K] x [K, N/2]`` int8 and writes ``[.., M, N]`` (the packed W4A8 kernel), else 1."""
    batch, m, n, k = proc.matmul
    for func, _ in calls:
        params = sigs.get(func, [])
        if len(params) != 3:
            continue
        (_, _, a), (_, bd, b), (_, _, c) = params
        if len(a) >= 2 and len(b) == 2 and len(c) >= 2 and a[-2:] == (m, k) and b == (k, n) and bd == "int8" \
                and c[-2] == m and c[-1] == 2 * n:
            return 2
    return 1


def _cache_ports(design) -> tuple[tuple[int, ...] | None, str, set[str], set[str]]:
    """A decode design's KV cache (generate.py's interface): its shape ``[layers, 1,
    heads, context, head_dim]`` and type, the ports it comes in through (``past_key``,
    ``past_value``, with the codegen's ``_N`` suffixes) and the outputs that return it
    updated (``present_*``: ports of the same shape that processes write)."""
    from ..generate import CACHE_INPUTS

    shape, dtype, inputs, outputs = None, "", set(), set()
    for kernel in design.kernels:
        for port in kernel.ports:
            if re.sub(r"_\d+$", "", port.name) in CACHE_INPUTS and len(port.shape) == 5 and port.shape[1] == 1:
                shape, dtype = tuple(port.shape), port.dtype
                inputs.add(port.name)
    if shape is None:
        return None, "", inputs, outputs
    for kernel in design.kernels:
        written = {n for proc in kernel.processes for n in proc.outputs}
        outputs |= {p.name for p in kernel.ports if tuple(p.shape) == shape and p.name in written
                    and p.name not in inputs}
        # updated in place (relax_passes.kv_inplace): read and written through the same port
        outputs |= {p.name for p in kernel.ports if p.name in inputs and p.direction == "inout"}
    return shape, dtype, inputs, outputs


def _with_kv_cache(processes: list[ProcessWork], shape, dtype: str, appenders: dict[str, str],
                   early: frozenset | set = frozenset()):
    """The KV cache's traffic per token, on the processes that move it through a port.

    An in-place ``kv_update`` (``appenders[name]`` naming its cache) reads its layer's K
    (or V) slice through the cache port -- the ``take`` whose result it streams on to the
    attention -- and writes one row of it; the attention (the scores and context
    processes, or the fused attention, which reads both) then moves no cache bytes, but is
    marked as reading the cache (zero elements), not as a prefill design decoding. Without
    in-place updates (a process that writes the whole cache, ``appenders[name]`` empty: a
    row per layer) the attention reads its layer's K and V. The readers and updates of one
    cache serve its layers in program order; a process of a reused layer (``calls`` > 1)
    serves ``calls`` layers in turn, one per call: its traffic is one layer's, recorded
    under the first of them (every layer of a built design's cache is off-chip alike).
    One :class:`KVCacheWork` per layer, on the SLR of its attention, off-chip since the
    design keeps it behind a port. An update named in ``early`` reads its slice in its
    prologue (``ProcessWork.prologue_cache``)."""
    layers, _, heads, context, head_dim = shape
    slice_elements, row_elements = heads * context * head_dim, heads * head_dim
    in_place = any(appenders.values())
    out = list(processes)
    first_layer: dict[int, int] = {}  # process index -> the first cache layer it serves
    traffic: dict[int, list] = {}
    for reads in ("attention_scores", "attention_context"):  # K, then V; a fused attention reads both
        layer = 0
        for i, p in enumerate(processes):
            if p.op in (reads, "attention") and layer < layers:
                first_layer[i] = layer
                traffic.setdefault(i, []).append((layer, 0 if in_place else slice_elements))
                layer += max(1, p.calls)
    for i, reads in traffic.items():
        out[i] = replace(out[i], cache_traffic=tuple(reads), cache_dtype=dtype)
    rows: dict[str, int] = {}  # in-place updates seen per cache: the next one's layer
    for i, p in enumerate(out):
        cache = appenders.get(p.name)
        if cache is None:
            continue
        read_early = 0
        if cache:  # kv_update: its layer's slice read, one row written (per call)
            layer = rows.get(cache, 0)
            rows[cache] = layer + max(1, p.calls)
            layer = min(layer, layers - 1)
            moved = ((layer, slice_elements), (layer, row_elements))
            read_early = slice_elements if p.name in early else 0  # its take, in the prologue
        else:  # one updated cache (K or V): a row per layer
            moved = tuple((layer, row_elements) for layer in range(layers))
        out[i] = replace(p, cache_traffic=moved, cache_dtype=dtype, prologue_cache=read_early)
    slr_of_layer = {}
    for i, layer in first_layer.items():
        if processes[i].op in ("attention_scores", "attention"):
            for served in range(layer, min(layers, layer + max(1, processes[i].calls))):
                slr_of_layer[served] = processes[i].slr
    caches = tuple(
        KVCacheWork(layer, slr_of_layer.get(layer, 0), heads, context, head_dim, dtype, in_design="offchip")
        for layer in range(layers)
    )
    return out, caches


def design_work(design) -> DesignWork:
    """Read a Design (``tvm_spatial.design_of(...)``) into the model's input."""
    processes: list[ProcessWork] = []
    streams: list[StreamWork] = []
    causal = False
    cache_shape, cache_dtype, cache_in, cache_out = _cache_ports(design)
    appenders: dict[str, str] = {}  # process -> the cache it updates in place ("" : rewrites it all)
    early_cache: set[str] = set()  # processes whose prologue reads the cache
    for kernel in design.kernels:
        sigs = _signatures(kernel.source)
        bodies = _bodies(kernel.source)
        ports = {p.name: p for p in kernel.ports}
        stream_of = {s.name: s for s in kernel.streams}
        slr_of = {p.name: p.slr for p in kernel.processes}
        for proc in kernel.processes:
            body = bodies.get(proc.name, "")
            calls = re.findall(rf"\b({re.escape(kernel.name)}__\w+)\(([^;]*)\);", body)
            matmul = None
            more, more_writeback = (), ()
            elements = proc.elements
            width = proc.width
            dtype = proc.dtype or "float32"
            if proc.matmul:  # the codegen recorded it (designs since the allocation was applied)
                batch, m, n, k = proc.matmul
                # recorded by the codegen (a planned design has no source to read it from)
                packed = proc.packed if proc.packed > 1 else _packing(proc, calls, sigs)
                a_dtype, b_dtype = proc.dtypes
                if packed > 1:  # the record counts packed weight columns; the model counts MACs
                    n, b_dtype = n * packed, "int4"
                matmul = Matmul(batch, m, n, k, a_dtype, b_dtype, bool(proc.weight_port or proc.weight_stripes), packed)
                more = tuple(Matmul(*shape[:4], a_dtype, b_dtype, True, packed) for shape in proc.engine)
                more_writeback = tuple("port" if shape[4:5] == (1,) else "array" for shape in proc.engine)
                calls = ()
            for func, args in calls:
                params = sigs.get(func, [])
                if params:
                    elements = math.prod(params[-1][2])
                    dtype = params[-1][1]
                    width = proc.width or (params[-1][2][-1] if params[-1][2] else 1)
                found = _matmul_of(params) if proc.op in MATMUL_OPS else None
                if found is not None and matmul is None:
                    batch, m, n, k, ad, bd = found
                    arg_names = [a.strip() for a in args.split(",")]
                    b_port = len(arg_names) > 1 and arg_names[1] in ports
                    matmul = Matmul(batch, m, n, k, ad, bd, b_port)
            weight_port = proc.weight_port or None
            if weight_port is None and matmul is not None and matmul.b_offchip:
                weight_port = next(
                    (n for n in proc.inputs if n in ports and math.prod(ports[n].shape) == matmul.k * matmul.n), None
                )
            # a striped weight once: the model adds its stripes' ports from its channels
            used_ports = tuple(n for n in (*proc.inputs, *proc.outputs) if n in ports and n not in proc.weight_stripes[1:]
                               and n not in proc.engine_weights)
            # the KV cache's traffic is the attention's and the appenders' (kvcache.py), wherever it lives
            if any(n in cache_out for n in proc.outputs):
                appenders[proc.name] = ""
            in_place = [n for n in proc.inputs if n in cache_out and ports[n].direction == "inout"]
            if in_place:
                appenders[proc.name] = re.sub(r"_\d+$", "", in_place[0])
            port_bytes = sum(
                math.prod(ports[n].shape) * dtype_bits(ports[n].dtype) // 8 for n in used_ports
                if n != weight_port and n not in proc.weight_stripes and n not in cache_in and n not in cache_out
            )
            if proc.op == "embedding":  # a gather reads one row per token, not the table
                table = max((ports[n] for n in used_ports), key=lambda p: math.prod(p.shape), default=None)
                if table is not None and len(table.shape) == 2:
                    port_bytes -= math.prod(table.shape) * dtype_bits(table.dtype) // 8
                    port_bytes += elements * dtype_bits(table.dtype) // 8
            early = [n for n in proc.prologue_ports if n in ports]
            prologue_bytes = sum(math.prod(ports[n].shape) * dtype_bits(ports[n].dtype) // 8 for n in early
                                 if n not in cache_in and n not in cache_out)
            if any(n in cache_in or n in cache_out for n in early):
                early_cache.add(proc.name)
            in_elems = sum(stream_of[n].elements for n in proc.inputs if n in stream_of)
            causal |= proc.causal  # a fused attention knows (its mask may arrive through a port)
            if proc.op == "masked_softmax":
                for n in proc.inputs:
                    if n in ports and len(ports[n].shape) >= 2 and ports[n].shape[-1] == ports[n].shape[-2] > 1:
                        causal = True
            if not elements:
                outs = [stream_of[n].elements for n in proc.outputs if n in stream_of]
                outs += [math.prod(ports[n].shape) for n in proc.outputs if n in ports]
                elements = max(outs, default=proc.work)
            processes.append(
                ProcessWork(
                    kernel=kernel.name, name=proc.name, op=proc.op, layer=proc.layer, slr=proc.slr,
                    work=proc.work, tokens=0, elements=elements, dtype=dtype, matmul=matmul,
                    ports=used_ports, port_bytes=port_bytes, in_stream_elements=in_elems, width=width,
                    nests=tuple(proc.nests), separable=proc.separable, rows=proc.rows, held=proc.held,
                    scratch=tuple(proc.scratch), stream_io=proc.stream_io, barrier=proc.barrier,
                    macs=proc.macs, calls=kernel.calls, prologue_nests=proc.prologue_nests,
                    prologue_bytes=prologue_bytes, prologue_io=proc.prologue_io, writeback=proc.writeback, more=more,
                    more_writeback=more_writeback,
                    engine_ops=proc.engine_ops, interleaved=proc.interleaved,
                )
            )
        for s in kernel.streams:
            # a transfer of ``width`` elements per FIFO word; depth in transfers
            streams.append(StreamWork(s.name, dtype_bits(s.dtype) * s.width, s.depth, s.elements,
                                      slr_of.get(s.producer, 0), s.producer, s.consumer, width=s.width,
                                      early=s.early, after=s.after, written_at=s.written_at, read_at=s.read_at))
    linears = [p.matmul.m for p in processes if p.matmul is not None and p.matmul.b_offchip]
    tokens = max(linears, default=1)
    procs = []
    for p in processes:
        # every query needs every key: a bidirectional attention waits for all of K and V
        barrier = p.barrier or ((not causal) and p.op == "attention_scores")
        procs.append(replace(p, tokens=tokens, barrier=barrier))
    kv_cache: tuple = ()
    if cache_shape is not None:
        procs, kv_cache = _with_kv_cache(procs, cache_shape, cache_dtype, appenders, early_cache)
    return DesignWork(design.device, tokens, causal, tuple(procs), tuple(streams), tuple(design.host_ops),
                      kv_cache)


# ---- a transformer layer by its sizes (published designs, when there is no Design) ----
def transformer_layers(
    *, layers: int, hidden: int, heads: int, ffn: int, seq: int, causal: bool = True,
    weight_dtype: str = "float32", act_dtype: str = "float32", vocab: int = 0, device: str = "u280",
    separate_qkv: bool = False,
) -> DesignWork:
    """The processes a GPT2/BERT layer stack becomes (the same operator instances the
    codegen makes one process each: qkv, scores, softmax, context, projection, residual,
    layer norms, fc1, gelu, fc2), for validating against designs published by size."""
    dh = hidden // heads
    procs: list[ProcessWork] = []

    def add(op, layer, matmul=None, elements=0, ports=(), port_bytes=0, barrier=False):
        name = f"l{layer}_p{len(procs)}_{op}"
        el = elements or (matmul.batch * matmul.m * matmul.n if matmul else 0)
        # Allo's design streams every operator (attention too): all of them take token blocks
        procs.append(ProcessWork("model", name, op, layer, 0, el, seq, el, act_dtype if matmul else "float32",
                                 matmul, ports, port_bytes, el, barrier, separable=True))

    quantized = not act_dtype.startswith("float")

    def lin(layer, k, n):
        if quantized:  # fp32 activations -> int8 before, int32 accumulators -> fp32 after
            add("quantize", layer, elements=seq * k)
        add("linear", layer, Matmul(1, seq, n, k, act_dtype, weight_dtype, True), ports=("w", "b"),
            port_bytes=n * 4)
        if quantized:
            add("dequantize", layer, elements=seq * n)

    for layer in range(layers):
        add("layer_norm", layer, elements=seq * hidden, ports=("g", "b"), port_bytes=hidden * 8)
        for _ in range(3 if separate_qkv else 1):
            lin(layer, hidden, hidden if separate_qkv else 3 * hidden)
        add("attention_scores", layer, Matmul(heads, seq, seq, dh, act_dtype, act_dtype, False),
            barrier=not causal)
        add("masked_softmax", layer, elements=heads * seq * seq)
        add("attention_context", layer, Matmul(heads, seq, dh, seq, act_dtype, act_dtype, False))
        lin(layer, hidden, hidden)
        add("residual_add", layer, elements=seq * hidden)
        add("layer_norm", layer, elements=seq * hidden, ports=("g", "b"), port_bytes=hidden * 8)
        lin(layer, hidden, ffn)
        add("gelu", layer, elements=seq * ffn)
        lin(layer, ffn, hidden)
        add("residual_add", layer, elements=seq * hidden)
    if vocab:
        lin(layers, hidden, vocab)
    return DesignWork(device, seq, causal, tuple(procs), ())
