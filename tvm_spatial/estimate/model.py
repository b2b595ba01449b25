"""The analytical model: (design work, parallelism, device) -> latency and resources.

Pure functions only (DESIGN.md rule 3): the same inputs give the same :class:`Estimate`,
nothing is read from files or globals, so the report, the allocator and the tuner all call
:func:`estimate_work` (or :func:`process_estimate` for one process) and agree.

The architecture it models (Chen et al., TRETS'24, Sec. 4; Allo's GPT2 design):

* every process is hardware of its own; a matmul process is a ``rows x cols`` array of
  multiply-accumulate units (``codegen_hls.library.MatmulTiling``) consuming one ``k`` step
  per cycle (II=1), so a tile pass takes ``K`` cycles; weights stream from off-chip memory
  one column tile at a time, over ``channels`` HBM pseudo-channels;
* element-wise processes handle ``lanes`` elements per cycle (II=1), and ``passes`` times
  over a row for normalizations; a built design records its loop nests, each of which
  takes ``extent / l`` cycles per trip (``l`` the largest divisor of the extent not above
  ``lanes``, reductions too: ``codegen_hls.lanes``), and the model sums exactly those;
* **prefill**: tokens flow between row-wise processes (``ProcessWork.separable``, what
  ``codegen_hls.token_blocks`` streams) in blocks of ``block`` tokens. Process ``i``
  takes ``tau_i = max(compute, weight traffic)`` per block; a chain of processes takes
  ``sum(tau_i) + (blocks - 1) * max(tau_i)`` (fill, then the bottleneck once per block).
  A process that buffers whole tensors (a transpose, a gather) and a bidirectional
  attention, which must see every key first (``ProcessWork.barrier``), cut the chain into
  segments that run one after the other. ``block=None``: every process buffers whole tensors, so processes run one
  after another;
* **decode** (one new token, context ``seq``): a process computes once it has read its
  producers' whole vectors, reading each while its producer writes it
  (:func:`stream_handoffs`), so a region takes its longest chain of processes
  (:func:`decode_path`; the K and V cache updates run side by side); each is compute- or
  memory-bound, its copy loops beside its off-chip traffic, not over it:
  ``copy loops + max(MACs / (rows*cols), bytes / bandwidth)``; the attention reads the KV cache;
* rooflines: DSP-bound = all MACs at the whole device's DSP rate for their data type;
  bandwidth-bound = the unavoidable off-chip bytes (weights once, KV cache) at the card's
  peak bandwidth.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, fields, replace

from ..devices import RESOURCES, Device
from . import costs
from .kvcache import KVPlacement, place_kv_cache
from .workload import DesignWork, ProcessWork


@dataclass(frozen=True)
class Parallelism:
    """How much hardware one process gets (what the allocator chooses)."""

    rows: int = 1  # matmul: tokens (output rows) per cycle
    cols: int = 1  # matmul: output columns per cycle
    lanes: int = 1  # element-wise: elements per cycle
    channels: int = 1  # off-chip pseudo-channels its weight is striped over

    def __str__(self) -> str:
        parts = []
        if self.rows > 1 or self.cols > 1:
            parts.append(f"{self.rows}x{self.cols}")
        if self.lanes > 1:
            parts.append(f"{self.lanes} lanes")
        if self.channels > 1:
            parts.append(f"{self.channels} ch")
        return ", ".join(parts) or "1"


@dataclass(frozen=True)
class ModelConfig:
    """Everything about the design that is a choice rather than the model's IR."""

    block: int | None = None  # tokens per block between row-wise processes; None: whole tensors everywhere
    parallelism: tuple = ()  # ((process name, Parallelism), ...)
    default: Parallelism = Parallelism(rows=8, cols=32)  # library default tiling (MatmulTiling())
    clock_mhz: float | None = None  # None: the card's default clock
    uram_threshold_bram18: int = 8  # a buffer bank needing more BRAM18s than this goes to URAM
    # decode designs: where each layer's KV cache lives (kvcache.place_kv_cache): "auto" is where
    # the design keeps it (a built design: off-chip, behind its inout port), else on-chip while it
    # fits within ``kv_budget`` of its SLR's memory left after the processes; "onchip"/"offchip"
    # are what-ifs
    kv_cache: str = "auto"
    kv_budget: float = 0.85

    def of(self, name: str, op_is_matmul: bool) -> Parallelism:
        for key, par in self.parallelism:
            if key == name:
                return par
        return self.default if op_is_matmul else Parallelism()

    def with_parallelism(self, table: dict) -> "ModelConfig":
        return replace(self, parallelism=tuple(sorted(table.items())))


@dataclass(frozen=True)
class Resources:
    dsp: float = 0
    bram18k: float = 0
    uram: float = 0
    lut: float = 0
    ff: float = 0

    # spelled out, not looped over RESOURCES: the allocator adds these a few hundred
    # thousand times per build (a third of a small design's allocation time)
    def __add__(self, other: "Resources") -> "Resources":
        return Resources(self.dsp + other.dsp, self.bram18k + other.bram18k, self.uram + other.uram,
                         self.lut + other.lut, self.ff + other.ff)

    def __sub__(self, other: "Resources") -> "Resources":
        return Resources(self.dsp - other.dsp, self.bram18k - other.bram18k, self.uram - other.uram,
                         self.lut - other.lut, self.ff - other.ff)

    def get(self, resource: str) -> float:
        return getattr(self, resource)


assert tuple(f.name for f in fields(Resources)) == RESOURCES, "Resources.__add__ spells out RESOURCES"


@dataclass(frozen=True)
class ProcessEstimate:
    kernel: str
    name: str
    op: str
    layer: int
    slr: int
    parallelism: Parallelism
    trip_counts: tuple[int, ...]  # loop extents of its main (pipelined) nest
    ii: int
    macs: int
    prefill_cycles: float  # compute of the whole sequence
    block_cycles: float  # tau: one block, max(compute, off-chip)
    block_bound: str  # "compute" or "memory"
    decode_cycles: float  # one token
    decode_bound: str
    prefill_bytes: int  # off-chip traffic of one prefill
    decode_bytes: int  # off-chip traffic of one decoded token
    resources: Resources
    barrier: bool = False
    packed: int = 1  # outputs per multiply of its MAC array (2: packed W4A8)
    calls: int = 1  # per inference (a reused layer's: once per layer); the fields above are per call
    # of decode_cycles, the prologue: before its stream reads, so from its region's start
    decode_prologue: float = 0.0


@dataclass(frozen=True)
class Roofline:
    dsp_cycles: float  # all MACs at the device's full DSP rate
    memory_cycles: float  # unavoidable off-chip bytes at peak bandwidth

    @property
    def bound_cycles(self) -> float:
        return max(self.dsp_cycles, self.memory_cycles)

    @property
    def bound(self) -> str:
        return "compute" if self.dsp_cycles >= self.memory_cycles else "memory"


@dataclass(frozen=True)
class Estimate:
    device: Device
    clock_mhz: float
    tokens: int
    block: int | None
    processes: tuple[ProcessEstimate, ...]
    prefill_cycles: float
    prefill_fill_cycles: float
    decode_cycles: float
    bottleneck: str  # process name with the largest tau
    decode_bottleneck: str
    slr_use: tuple[Resources, ...]  # per SLR (streams and processes)
    prefill_roofline: Roofline
    decode_roofline: Roofline
    prefill_bytes: int
    decode_bytes: int
    host_ops: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())
    kv_cache: tuple[KVPlacement, ...] = ()  # decode designs: each layer's cache, where it lives
    # the processes a decoded token waits on (each region's longest chain, model.decode_path)
    decode_chain: tuple[str, ...] = ()

    # ---- derived figures ----
    @property
    def total(self) -> Resources:
        out = Resources()
        for r in self.slr_use:
            out = out + r
        return out

    def seconds(self, cycles: float) -> float:
        return cycles / (self.clock_mhz * 1e6)

    @property
    def prefill_ms(self) -> float:
        return self.seconds(self.prefill_cycles) * 1e3

    @property
    def decode_ms(self) -> float:
        return self.seconds(self.decode_cycles) * 1e3

    def utilization(self) -> dict[str, float]:
        """Fraction of the whole device per resource."""
        return {r: self.total.get(r) / getattr(self.device, r) for r in RESOURCES}

    def slr_utilization(self) -> list[dict[str, float]]:
        return [
            {r: use.get(r) / self.device.slr(i).get(r) for r in RESOURCES}
            for i, use in enumerate(self.slr_use)
        ]

    @property
    def max_slr_utilization(self) -> tuple[float, int, str]:
        """(fraction, slr, resource) of the fullest resource of any SLR."""
        best = (0.0, 0, "dsp")
        for i, util in enumerate(self.slr_utilization()):
            for r, v in util.items():
                if v > best[0]:
                    best = (v, i, r)
        return best

    @property
    def prefill_dsp_ratio(self) -> float:
        """Share of the DSP roofline the design reaches in prefill."""
        return self.prefill_roofline.dsp_cycles / self.prefill_cycles if self.prefill_cycles else 0.0

    @property
    def decode_memory_ratio(self) -> float:
        """Share of the bandwidth roofline the design reaches in decode."""
        return self.decode_roofline.memory_cycles / self.decode_cycles if self.decode_cycles else 0.0

    def process(self, name: str) -> ProcessEstimate:
        return next(p for p in self.processes if p.name == name)

    # ---- for people (tvm_spatial.estimate.report) ----
    def print(self, console=None, limit: int | None = 40) -> None:
        from .report import print_estimate

        print_estimate(self, console, limit)

    def to_html(self, title: str = "tvm-spatial estimate") -> str:
        from .report import estimate_html

        return estimate_html(self, title)

    def __str__(self) -> str:
        from .report import estimate_text

        return estimate_text(self)


# ---- one process ---------------------------------------------------------------------
def nests_cycles(nests, lanes: int) -> int:
    """Cycles of loop nests ``(trips, extent, fixed II[, rows[, own lanes]])`` at ``lanes``
    (``codegen_hls.lanes``): ``l``, the largest divisor of the extent not above ``lanes``,
    elements per cycle -- and with lanes beyond a whole extent, ``r`` rows of the loop
    around it per cycle -- or the fixed II per element of a reduction its own loop carries."""
    from codegen_hls.lanes import largest_divisor, rows_unrolled  # the codegen's own rules (late: no cycle)

    total = 0
    for trips, extent, ii, *rest in nests:
        own = rest[1] if len(rest) > 1 and rest[1] else lanes  # a MAC nest's own lanes (Lanes.mac)
        rows = rows_unrolled(extent, rest[0], own) if rest else 1
        if ii:
            total += trips * extent * ii
        elif rows > 1:
            total += trips // rows
        else:
            total += trips * (extent // largest_divisor(extent, own))
    return total


def _bank_memory(depth: int, width: int, banks: int, uram_threshold: int) -> tuple[float, float]:
    """(BRAM18, URAM) for ``banks`` banks of ``depth`` x ``width`` bits."""
    if depth <= 0 or banks <= 0:
        return 0.0, 0.0
    bram = costs.bram18_for(depth, width)
    if bram > uram_threshold:
        return 0.0, float(banks * costs.uram_for(depth, width))
    return float(banks * bram), 0.0


def weight_stripes(p: ProcessWork, par: Parallelism) -> int:
    """The m_axi ports a process reads its weight through as stripes (0: one port of its
    own, unstriped): what shares the bundles of its kernel (:func:`shared_stripe_credit`)."""
    return par.channels if p.matmul is not None and p.matmul.b_offchip and par.channels > 1 else 0


def shared_stripe_credit(stripes: int, device: Device) -> Resources:
    """What a Vitis kernel saves when its weight stripes outnumber the card's memory
    channels: they wrap around the bundles ``wstripe0``... and share their AXI masters
    (``codegen_hls.kernel``), while :func:`process_estimate` counts an adapter per stripe.
    Per kernel and SLR (each SLR segment is a Vitis kernel of its own)."""
    shared = max(0, stripes - device.offchip.channels)
    return Resources(0, -costs.PORT_BRAM18 * shared, 0, -costs.PORT_LUT * shared, -costs.PORT_FF * shared)


def _channel_bytes_per_cycle(device: Device, clock_mhz: float) -> float:
    mem = device.offchip
    per_channel = mem.bandwidth_gbs * 1e9 / mem.channels / (clock_mhz * 1e6)
    return min(per_channel * costs.HBM_EFFICIENCY, costs.AXI_PORT_BYTES)


def matmul_epilogue(p: ProcessWork, rows: int, cols: int, latency: int) -> float:
    """Cycles per call a codegen-built matmul process spends besides its ``k`` loops, on a
    ``rows x cols`` array: each accumulator tile copied out (a row of the array's columns a
    cycle, or a 512-bit beat into a port it writes in place: ``codegen_hls.library``
    schedule_array), a pipeline fill per tile, and its other stages (bias add,
    quantization) at the lanes that keep pace with the array (:func:`epilogue_lanes`).
    None for a design described by its sizes (``ProcessWork.writeback`` empty): its own
    schedule's copy is not ours."""
    if p.matmul is None or not p.writeback:
        return 0.0
    cycles = 0
    modes = (p.writeback, *(p.more_writeback or ("array",) * len(p.more)))
    for mm, mode in zip((p.matmul, *p.more), modes):  # an engine's linears: one after another
        t_rows, t_cols, width = _codegen_tile(mm.m, max(1, mm.n // mm.packed), rows, max(1, cols // mm.packed),
                                              latency, mode == "port")
        tiles = mm.batch * math.ceil(mm.m / t_rows) * math.ceil(mm.n // mm.packed / t_cols)
        cycles += tiles * (t_rows * math.ceil(t_cols / width) + costs.PIPELINE_DEPTH)
    if p.nests:
        cycles += nests_cycles(p.nests, epilogue_lanes(p, rows, cols))
    return float(cycles)


@functools.lru_cache(maxsize=4096)
def _codegen_tile(m: int, n: int, rows: int, cols: int, latency: int, out_port: bool) -> tuple[int, int, int]:
    """(tile rows, tile columns, elements copied out a cycle) of the codegen's MAC array
    schedule for an ``m x n`` result (``codegen_hls.library.MacArray.tile``)."""
    from codegen_hls.library import MacArray  # the codegen's own rule (late: no cycle)

    tile, real = MacArray(rows, cols, latency, out_port=out_port).tile(m, n)
    return tile.rows, tile.cols, real.writeback_width(tile.cols)


def epilogue_lanes(p: ProcessWork, rows: int, cols: int) -> int:
    """Lanes of a matmul process's other stages (``codegen_hls.kernel`` stage_hardware): the
    largest divisor of the output's width not above ``library.keep_pace_lanes`` (its array's
    columns in packed outputs for W4A8), 0 when it has none."""
    from codegen_hls.lanes import largest_divisor
    from codegen_hls.library import keep_pace_lanes

    mm = p.matmul
    if mm is None or not p.nests:
        return 0
    wanted = keep_pace_lanes(rows, max(1, min(cols, mm.n) // mm.packed), mm.k)  # its first linear's array
    # an engine's stages each take the largest divisor of their own width (nests_cycles)
    return wanted if p.more else largest_divisor(p.width or mm.n, wanted)


def accumulate_stall(positions: int, latency: int, k: int) -> float:
    """Cycles per array position of a ``k`` step: 1, or ``latency / positions`` when each
    accumulator is updated more often than its add's latency allows -- unless the codegen
    keeps partial sums for it (``codegen_hls.library.partial_sums``)."""
    from codegen_hls.library import partial_sums  # the codegen's own rule (late: no cycle)

    updates = positions * partial_sums(positions, latency, k)
    return latency / min(latency, updates)


@dataclass(frozen=True)
class _EngineTimes:
    compute: float  # cycles of its arrays' k loops, all linears
    serial: float  # one token: each linear at its array's rate or its weight's, one after another
    weight_bytes: float
    memory_bound: float  # of ``serial``: the linears that wait on their weights

    @property
    def bound(self) -> str:
        return "memory" if self.memory_bound > self.serial - self.memory_bound else "compute"


def _engine_times(matmuls, rows: int, cols: int, latency: int, bw: float) -> _EngineTimes:
    """The linears of an engine (``codegen_hls.engine``) on one ``rows x cols`` array."""
    compute = memory_bound = serial = weight_bytes = 0.0
    for mm in matmuls:
        c = max(1, min(cols, mm.n))
        positions = math.ceil(mm.m / rows) * math.ceil(mm.n / c)
        k_loop = mm.batch * positions * mm.k * accumulate_stall(positions, latency, mm.k)
        # a weight per batch (a token-parallel engine's layers, token_parallel.py); an
        # activation operand (the attention's K or V) is on chip
        moved = mm.batch * mm.k * mm.n * costs.dtype_bits(mm.b_dtype) / 8 if mm.b_offchip else 0.0
        compute += k_loop
        weight_bytes += moved
        serial += max(k_loop, moved / bw)
        memory_bound += moved / bw if moved / bw > k_loop else 0.0
    return _EngineTimes(compute, serial, weight_bytes, memory_bound)


def _engine_resources(p: ProcessWork, units: int, lanes: int, operand_bits: int, uram_threshold: int) -> Resources:
    """What an engine adds to its array: the operators of its element-wise stages at
    ``lanes`` other than multiplies and adds (those share the array's units: its ALLOCATION
    caps them; all of them when ``ProcessWork.shared_stages`` is off), the multiplexers in
    front of its units (a LUT per operand bit for each three sources beyond the first: a
    LUT6 is a 4:1 multiplexer; every linear is a source of every unit, and every shared
    element-wise loop nest one of the units its lanes need), and its intermediate arrays."""
    dsp = lut = ff = 0.0
    for op in p.engine_ops:
        for kind, count in costs.ELEMENT_OPS.get(op, {"add": 1}).items():
            c = costs.op_cost(kind, p.dtype)
            shared = kind in ("add", "mul") and p.shared_stages
            n = max(0, lanes * count - units) if shared else lanes * count
            dsp, lut, ff = dsp + n * c.dsp, lut + n * c.lut, ff + n * c.ff
    # the linears feed every unit, and so do the MAC nests as wide as the array (Lanes.mac: an
    # attention's QK^T and AV); any other element-wise nest only the units its lanes use: its
    # elements per cycle times its adds and multiplies per element (the nest's sixth field,
    # codegen_hls.lanes.arith_ops: none for a copy; without it, its operator's most), and
    # each unit then selects among every source it has
    from codegen_hls.lanes import largest_divisor, rows_unrolled

    linears = 1 + len(p.more)
    shared = p.nests if p.shared_stages else ()
    wide = sum(1 for n in shared if len(n) > 4 and n[4])
    per_lane = max((sum(n for kind, n in costs.ELEMENT_OPS.get(op, {"add": 1}).items() if kind in ("add", "mul"))
                    for op in p.engine_ops), default=0)
    busy = []  # units each narrow nest drives
    for trips, extent, ii, *rest in shared:
        if len(rest) > 1 and rest[1]:
            continue
        ops = rest[2] if len(rest) > 2 else per_lane
        width = 1 if ii else largest_divisor(extent, lanes) * rows_unrolled(extent, rest[0] if rest else 1, lanes)
        if ops:
            busy.append(min(units, width * ops))
    busy.sort(reverse=True)
    for i, driven in enumerate([units, *busy]):  # units driven by the i narrow nests before, and more
        after = busy[i] if i < len(busy) else 0
        lut += (driven - after) * operand_bits * math.ceil((linears + wide + i - 1) / 3)
    bram = uram = 0.0
    for elements in p.scratch:
        b, u = _bank_memory(math.ceil(elements / max(1, lanes)), costs.dtype_bits(p.dtype), max(1, lanes), uram_threshold)
        bram, uram = bram + b, uram + u
    return Resources(dsp, bram, uram, lut, ff)


def process_estimate(
    p: ProcessWork, par: Parallelism, device: Device, clock_mhz: float, block: int | None,
    uram_threshold: int = 8, offchip_cache_layers: frozenset | None = None,
) -> ProcessEstimate:
    """Latency, traffic and resources of one process (pure). ``offchip_cache_layers``: the
    KV cache layers kept off-chip (None: all); its traffic to on-chip layers costs no bytes."""
    tokens = max(1, p.tokens)
    cache_bytes = sum(
        elements * costs.dtype_bits(p.cache_dtype) / 8 for layer, elements in p.cache_traffic
        if offchip_cache_layers is None or layer in offchip_cache_layers
    )
    blk = tokens if block is None or not p.separable else max(1, min(block, tokens))
    n_blocks = math.ceil(tokens / blk)
    bw = _channel_bytes_per_cycle(device, clock_mhz) * max(1, par.channels)
    port_res = Resources(
        0, costs.PORT_BRAM18 * (len(p.ports) + max(0, par.channels - 1)), 0,
        costs.PORT_LUT * (len(p.ports) + par.channels - 1), costs.PORT_FF * (len(p.ports) + par.channels - 1),
    )
    control = Resources(0, 0, 0, costs.PROCESS_LUT, costs.PROCESS_FF)
    pro_block = pro_token = 0.0  # a prologue's cycles (element-wise processes: below)
    epilogue = 0.0  # a matmul's tile copies and other stages, after its k loops: beside no traffic
    engine_bound = None  # an engine's decode bound, by the time of its bound linears
    mm = p.matmul
    if mm is not None:
        # an engine's array is as wide as its widest linear uses (each fits it to its width)
        widest = max(m.n for m in (mm, *p.more))
        rows, cols = max(1, min(par.rows, blk, mm.m)), max(1, min(par.cols, widest))
        mac = costs.MAC_COSTS[costs.mac_class(mm.a_dtype, mm.b_dtype)]
        units = rows * cols
        trips = (mm.batch, math.ceil(mm.m / rows), math.ceil(mm.n / cols), mm.k)
        # the accumulate recurrence: one accumulator is updated every ``positions`` cycles
        # (arrays in the codegen's tile, at most the output's); fewer than ``latency`` stall
        positions = math.ceil(mm.m / rows) * math.ceil(mm.n / cols)
        stall = accumulate_stall(positions, mac.latency, mm.k)
        # plus its own copy loops (stream reads and writes, one transfer per cycle, before
        # and after the array's work on a block, not beside it: codegen_hls.kernel)
        epilogue = matmul_epilogue(p, rows, cols, mac.latency)
        prefill = float(mm.batch * positions * mm.k) * stall + epilogue + p.stream_io
        wbytes = mm.batch * mm.k * mm.n * costs.dtype_bits(mm.b_dtype) / 8 if mm.b_offchip else 0.0
        compute_block = prefill / n_blocks
        mem_block = (wbytes + (p.port_bytes + cache_bytes) / n_blocks) / bw
        # decode: one token; the array serves k in parallel along its rows, each row's
        # accumulators updated once per column tile (the recurrence stalls as in prefill)
        if p.more:  # an engine: its linears one after another, each at its array's or its weight's rate
            engine = _engine_times((mm, *p.more), rows, par.cols, mac.latency, bw)
            prefill = engine.compute + epilogue + p.stream_io
            wbytes = engine.weight_bytes
            compute_block, mem_block = prefill / n_blocks, (wbytes + p.port_bytes / n_blocks) / bw
            d_compute = engine.serial + (epilogue + p.stream_io) / tokens
            d_bytes = wbytes + p.port_bytes / tokens
            engine_bound = engine.bound
        elif mm.b_offchip:
            tiles = math.ceil(mm.n / cols)
            d_compute = (mm.batch * math.ceil(mm.k / rows) * tiles * accumulate_stall(tiles, mac.latency, mm.k)
                         + (epilogue + p.stream_io) / tokens)
            d_bytes = wbytes + p.port_bytes / tokens
        else:  # attention: one query row against the KV cache of ``tokens`` positions
            d_macs = mm.batch * mm.n * mm.k
            d_compute = math.ceil(d_macs / units) + (epilogue + p.stream_io) / tokens
            if p.cache_traffic:  # a decode design: its layer's K (or V) where the placement put it
                d_bytes = p.port_bytes / tokens + cache_bytes
            else:  # a prefill design read as if decoding: the K (or V) cache, once, off-chip
                d_bytes = d_macs * costs.dtype_bits(mm.b_dtype) / 8
        d_mem = d_bytes / bw
        a_bits, b_bits = costs.dtype_bits(mm.a_dtype), costs.dtype_bits(mm.b_dtype)
        # on-chip buffers: the block's input rows (rows banks), the whole second operand
        # when it is an activation (K or V of every position), the block's output
        bram = uram = 0.0
        # the result, banked as the array's columns (none when the codegen writes it in place
        # through a port)
        out_depth = 0 if p.writeback == "port" else math.ceil(mm.batch * blk * mm.n / cols)
        for depth, width, banks in (
            (math.ceil(mm.batch * blk * mm.k / rows), a_bits, rows),
            # a streamed weight flows through the array (a FIFO, no buffer): it is re-read per block
            ((0, b_bits, 0) if mm.b_offchip else (math.ceil(mm.batch * mm.k * mm.n / cols), b_bits, cols)),
            (out_depth, 32 if costs.is_float(mm.a_dtype) else a_bits, cols),
        ):
            b, u = _bank_memory(depth, width, banks, uram_threshold)
            bram, uram = bram + b, uram + u
        res = Resources(units * mac.dsp, bram, uram, units * mac.lut, units * mac.ff) + port_res + control
        extra = epilogue_lanes(p, rows, cols)  # its bias add's adders (one a lane)
        if p.more:  # an engine: its element-wise operators and the array's shared inputs
            res = res + _engine_resources(p, units, extra, a_bits + b_bits, uram_threshold)
        elif extra:
            add = costs.op_cost("add", p.dtype)
            res = res + Resources(extra * add.dsp, 0, 0, extra * add.lut, extra * add.ff)
        macs = mm.macs
        ii = math.ceil(stall)
    else:
        lanes = max(1, par.lanes)
        early = early_bytes = 0.0  # its prologue (ProcessWork.prologue_nests): compute, bytes
        passes = costs.ELEMENT_PASSES.get(p.op, 1)
        mix = costs.ELEMENT_OPS.get(p.op, {})
        if p.nests or p.prologue_io:  # a built design: its loop nests as the lanes schedule realizes them
            prefill = float(nests_cycles(p.nests, lanes)) + p.prologue_io
            if p.prologue_nests or p.prologue_io:  # what runs before its stream reads, beside its producers
                early = float(nests_cycles(p.nests[:p.prologue_nests], lanes)) + p.prologue_io
                early_bytes = p.prologue_bytes + sum(
                    p.prologue_cache * costs.dtype_bits(p.cache_dtype) / 8 for layer, _ in p.cache_traffic[:1]
                    if offchip_cache_layers is None or layer in offchip_cache_layers)
        else:  # by size: ``passes`` over the data (or as many as its TIR's iterations say)
            per_element = max(passes if mix else 1, p.work // max(1, p.elements))
            prefill = float(math.ceil(p.elements * per_element / lanes))
        prefill += p.stream_io  # its copy loops, one transfer per cycle (as for a matmul above)
        trips = (int(prefill),)
        compute_block = prefill / n_blocks
        mem_block = ((p.port_bytes + cache_bytes) / n_blocks) / bw
        d_compute = math.ceil(prefill / tokens)
        d_bytes = (p.port_bytes + cache_bytes) / tokens
        if p.macs and not p.cache_traffic:  # attention read as if decoding: K and V of every
            d_bytes += p.macs / tokens * costs.dtype_bits(p.dtype) / 8  # position, once, off-chip
        d_mem = d_bytes / bw
        # the prologue runs first, on its own compute and traffic; the rest overlaps only its own
        pro_block = max(early / n_blocks, early_bytes / n_blocks / bw)
        pro_token = max(math.ceil(early / tokens), early_bytes / tokens / bw)
        compute_block -= early / n_blocks
        mem_block -= early_bytes / n_blocks / bw
        d_compute -= math.ceil(early / tokens)
        d_mem -= early_bytes / tokens / bw
        dsp = lut = ff = 0.0
        for op, count in mix.items():
            c = costs.op_cost(op, p.dtype)
            dsp += lanes * count * c.dsp
            lut += lanes * count * c.lut
            ff += lanes * count * c.ff
        # buffers, banked by lanes: a block of its stream inputs (whole tensors unless it runs
        # in blocks), those it holds whole (attention's K and V), and its intermediate arrays
        # (recorded per call as built: ``rows`` tokens, or all of them)
        bits = costs.dtype_bits(p.dtype)
        streamed = p.in_stream_elements - p.held
        depth = math.ceil((streamed * blk / tokens + p.held) / lanes) if p.in_stream_elements else 0
        bram, uram = _bank_memory(depth, bits, lanes, uram_threshold)
        for elements in p.scratch:
            b, u = _bank_memory(math.ceil(elements * blk / (p.rows or tokens) / lanes), bits, lanes, uram_threshold)
            bram, uram = bram + b, uram + u
        res = Resources(dsp, bram, uram, lut, ff) + port_res + control
        macs = 0
        ii = 1
        wbytes = 0.0
    # the copy loops run before and after the work that moves the off-chip bytes, not beside
    # it, and so do a matmul's tile copies and bias add: only the rest of the compute hides
    # the memory traffic (or hides behind it)
    io_block, io_token = (p.stream_io + epilogue) / n_blocks, (p.stream_io + epilogue) / tokens
    block_cycles = pro_block + io_block + max(compute_block - io_block, mem_block) + costs.PIPELINE_DEPTH
    decode_cycles = pro_token + io_token + max(d_compute - io_token, d_mem) + costs.PIPELINE_DEPTH
    return ProcessEstimate(
        kernel=p.kernel, name=p.name, op=p.op, layer=p.layer, slr=p.slr, parallelism=par,
        trip_counts=trips, ii=ii, macs=macs, prefill_cycles=prefill, block_cycles=block_cycles,
        block_bound="memory" if mem_block > compute_block - io_block else "compute",
        decode_cycles=decode_cycles,
        decode_bound=engine_bound or ("memory" if d_mem > d_compute - io_token else "compute"),
        decode_prologue=pro_token,
        prefill_bytes=int(wbytes * n_blocks + p.port_bytes + cache_bytes), decode_bytes=int(d_bytes),
        resources=res, barrier=p.barrier, packed=mm.packed if mm is not None else 1, calls=p.calls,
    )


# ---- the whole design ----------------------------------------------------------------
def pipeline_cycles(taus: list[float], barriers: list[bool], n_blocks: int,
                    whole: list[bool] | None = None) -> tuple[float, float]:
    """(latency, fill) of a chain of processes with per-block times ``taus``; a ``whole``
    process (whole tensors: its tau is its whole call) is a segment of its own."""
    total = fill = 0.0
    segment: list[float] = []

    def close():
        nonlocal total, fill
        if segment:
            total += sum(segment) + (n_blocks - 1) * max(segment)
            fill += sum(segment)

    for tau, barrier, alone in zip(taus, barriers, whole or [False] * len(taus)):
        if alone and n_blocks > 1:
            close()
            segment = []
            total += tau
            fill += tau
            continue
        if barrier:
            close()
            segment = []
        segment.append(tau)
    close()
    return total, fill


def interleaved_cycles(cycles: dict[str, float], streams) -> float:
    """A region of processes that read and write their streams between their stages (a
    token-split region's engines, ``codegen_hls.kernel`` io_schedule), ``cycles`` each
    (name -> cycles, in the region's order, streams running forwards): they start together
    and each finishes after its own cycles, unless a producer's stream holds it back -- a
    consumer that reads at share ``r`` of its work what its producer writes at share ``w``
    of its own finishes no sooner than ``finish(producer) - (1 - w) cycles(producer) + (1 -
    r) cycles(consumer)``. (In lockstep, a chunk's K and V arrive as the next chunk's
    attention needs them, and the slowest engine sets the time.)"""
    finish: dict[str, float] = {}
    for name, own in cycles.items():
        done = own
        for s in streams:
            if s.consumer == name and s.producer in finish:
                done = max(done, finish[s.producer] - (1 - s.written_at) * cycles[s.producer] + (1 - s.read_at) * own)
        finish[name] = done
    return max(finish.values(), default=0.0)


def decode_path(cycles: dict[str, float], streams, handoff: dict | None = None,
                prologue: dict | None = None, tokens: int = 1) -> float:
    """One decoded token through a region: its longest chain of processes, ``cycles`` per
    process (name -> decode cycles), linked by the ``streams`` between them.

    Why not the sum: a dataflow region starts each process when its streams deliver, so
    processes on no common chain -- the K and V cache updates of a decode step, each on
    its own buffer and bank -- run side by side. A region whose processes no stream links
    (a workload by size, without a design) is taken as one chain, as printed: the sum.

    ``handoff[(producer, consumer)]``: cycles of the consumer's read loop that run during
    its producer's write loop (:func:`stream_handoffs`); a consumer then finishes that much
    sooner after its producer, never before it.

    ``prologue[name]``: the part of a process's cycles that reads no stream
    (``ProcessEstimate.decode_prologue``): it runs from the region's start, so the process
    takes the rest after the later of its prologue and its producers. A stream written in
    its producer's prologue (``StreamWork.early``) is there when that prologue ends. With
    ``handoff``, a consumer that reads ``after`` transfers of other streams first (per
    call; ``tokens`` per call) has done that much of its work before it needs this one."""
    return longest_chain(cycles, streams, handoff, prologue, tokens)[0]


def stream_handoffs(streams, tokens: int = 1) -> dict[tuple[str, str], float]:
    """(producer, consumer) -> the cycles per token in which the consumer's read loop of a
    stream runs beside its producer's write loop (the most of the streams between them).

    Why: every process reads its input streams first and writes its output streams last
    (``codegen_hls.kernel``), one FIFO word per cycle each, and a dataflow FIFO lets the
    consumer start before its producer has finished (Vitis HLS, UG1399 "pragma HLS
    dataflow"). So a handoff costs its transfers once, not once in each loop. When the
    consumer reads another stream before this one, or its producer writes another after
    it, the hardware overlaps more than this counts: the chain stays on the slow side."""
    out: dict[tuple[str, str], float] = {}
    for s in streams:
        if s.producer and s.consumer and s.producer != s.consumer:
            key = (s.producer, s.consumer)
            out[key] = max(out.get(key, 0.0), s.transfers / max(1, tokens))
    return out


def longest_chain(cycles: dict[str, float], streams, handoff: dict | None = None,
                  prologue: dict | None = None, tokens: int = 1) -> tuple[float, tuple[str, ...]]:
    """(:func:`decode_path`, the processes on that chain in order; every process when no
    stream links them)."""
    overlap = handoff is not None
    handoff = handoff or {}
    early = {name: min(cycles[name], (prologue or {}).get(name, 0.0)) for name in cycles}
    preds: dict[str, list[str]] = {name: [] for name in cycles}
    inputs: dict[str, list] = {name: [] for name in cycles}  # the streams into each process
    linked = False
    for s in streams:
        if s.producer in cycles and s.consumer in cycles and s.producer != s.consumer:
            preds[s.consumer].append(s.producer)
            inputs[s.consumer].append(s)
            linked = True
    if not linked:
        return sum(cycles.values()), tuple(cycles)
    # in topological order (Kahn), without recursion: an unrolled stack has long chains
    succs: dict[str, list[str]] = {name: [] for name in cycles}
    waiting = {name: len(set(ps)) for name, ps in preds.items()}
    for name, ps in preds.items():
        for p in set(ps):
            succs[p].append(name)
    ready = [name for name in cycles if not waiting[name]]
    done: dict[str, tuple[float, str | None]] = {}  # name -> (finish, the predecessor it waits on)
    while ready:
        name = ready.pop()
        rest = cycles[name] - early[name]
        before = (0.0, None)
        for s in inputs[name]:
            p = s.producer
            # the stream is complete at the end of the producer's prologue (written there) or
            # of the producer; the consumer's read of it runs beside the producer's writes
            # (a handoff, within the loop that writes it), after reading ``after`` others
            there, window = (early[p], early[p]) if s.early else (done[p][0], cycles[p] - early[p])
            ahead = min(handoff.get((p, name), 0.0), window, rest)
            if overlap:
                ahead = min(rest, ahead + s.after / max(1, tokens))
            if before[1] is None or there - ahead > before[0]:
                before = (there - ahead, p)
        if early[name] >= before[0]:  # its prologue outlasts its producers: it waits on no one
            before = (early[name], None)
        done[name] = (rest + before[0], before[1])
        for nxt in succs[name]:
            waiting[nxt] -= 1
            if not waiting[nxt]:
                ready.append(nxt)
    if len(done) < len(cycles):
        stuck = sorted(set(cycles) - set(done))
        raise ValueError(f"the streams into process {stuck[0]} form a cycle")
    last = max(cycles, key=lambda n: done[n][0])
    chain = [last]
    while done[chain[-1]][1] is not None:
        chain.append(done[chain[-1]][1])
    return done[last][0], tuple(reversed(chain))


def estimate_work(work: DesignWork, device: Device, config: ModelConfig = ModelConfig()) -> Estimate:
    """The model. Pure: (design work, device, config) -> Estimate."""
    clock = config.clock_mhz or device.clock_mhz
    procs = tuple(
        process_estimate(
            p, config.of(p.name, p.matmul is not None), device, clock, config.block, config.uram_threshold_bram18
        )
        for p in work.processes
    )
    tokens = max(1, work.tokens)
    blk = tokens if config.block is None else max(1, min(config.block, tokens))
    n_blocks = math.ceil(tokens / blk)
    slr_use = [Resources() for _ in range(device.slrs)]
    stripes: dict[tuple[str, int], int] = {}
    for p, w in zip(procs, work.processes):
        slr = min(p.slr, device.slrs - 1)
        slr_use[slr] += p.resources
        stripes[(w.kernel, slr)] = stripes.get((w.kernel, slr), 0) + weight_stripes(w, p.parallelism)
    for (_, slr), count in stripes.items():
        slr_use[slr] += shared_stripe_credit(count, device)
    for s in work.streams:
        if s.depth * s.bits <= costs.REGISTER_ARRAY_BITS * 2:
            r = Resources(0, 0, 0, costs.STREAM_LUT_PER_32BIT * math.ceil(s.bits / 32) * math.ceil(s.depth / 32) + 20, 40)
        else:  # as deep as built (a skip path's stream holds what is in flight beside it)
            depth = max(1, math.ceil(s.depth * blk / tokens)) if s.per_block else s.depth
            b, u = _bank_memory(depth, s.bits, 1, config.uram_threshold_bram18)
            r = Resources(0, b, u, 60, 80)
        slr_use[min(s.slr, device.slrs - 1)] += r

    # decode designs: each layer's KV cache on-chip while the memory left in its SLR allows
    kv: tuple[KVPlacement, ...] = ()
    if work.kv_cache:
        free = [{r: device.slr(i).get(r) * config.kv_budget - slr_use[i].get(r) for r in ("uram", "bram18k")}
                for i in range(device.slrs)]
        kv = place_kv_cache(work.kv_cache, free, "hbm" if device.hbm is not None else "ddr", config.kv_cache)
        for placed in kv:
            slr_use[placed.slr] += Resources(0, placed.bram18k, placed.uram, 0, 0)
        offchip = frozenset(k.layer for k in kv if not k.on_chip)
        procs = tuple(
            process_estimate(p, config.of(p.name, p.matmul is not None), device, clock, config.block,
                             config.uram_threshold_bram18, offchip) if p.cache_traffic else pe
            for p, pe in zip(work.processes, procs)
        )
    # regions run one after another (the host calls them in turn), each as often as it is
    # called per inference (an outlined layer: once per layer); inside one, a pipeline, no
    # faster than the whole card's banks move what its ports move per call: its processes
    # share the banks, balanced by that traffic (codegen_hls.vitis_files.place)
    peak_bytes = device.offchip.bandwidth_gbs * 1e9 / (clock * 1e6)  # per cycle, whole card
    latency = fill = 0.0
    for kernel in dict.fromkeys(w.kernel for w in work.processes):
        mine = [i for i, w in enumerate(work.processes) if w.kernel == kernel]
        calls = work.processes[mine[0]].calls
        if any(work.processes[i].interleaved for i in mine):  # token-parallel engines, side by side
            lat = interleaved_cycles({procs[i].name: procs[i].block_cycles for i in mine}, work.streams)
            fil = 0.0
        else:
            lat, fil = pipeline_cycles([procs[i].block_cycles for i in mine], [procs[i].barrier for i in mine],
                                       n_blocks, [not work.processes[i].separable for i in mine])
        moved = sum(procs[i].prefill_bytes for i in mine)
        latency += calls * max(lat, moved / (peak_bytes * costs.HBM_EFFICIENCY))
        fill += calls * fil
    prefill_bytes = sum(p.prefill_bytes * w.calls for p, w in zip(procs, work.processes))
    decode = 0.0
    chain: list[str] = []  # the processes a token waits on, region after region
    handoff = stream_handoffs(work.streams, tokens)
    for kernel in dict.fromkeys(w.kernel for w in work.processes):
        mine = {w.name: p.decode_cycles for p, w in zip(procs, work.processes) if w.kernel == kernel}
        early = {w.name: p.decode_prologue for p, w in zip(procs, work.processes) if w.kernel == kernel}
        calls = next(w.calls for w in work.processes if w.kernel == kernel)
        length, names = longest_chain(mine, work.streams, handoff, early, tokens)
        decode += calls * length
        chain += names
    decode_bytes = sum(p.decode_bytes * w.calls for p, w in zip(procs, work.processes))

    # rooflines: the whole card's DSPs on the MACs; weights read once, KV cache per token
    dsp_work = 0.0
    dsp_work_decode = 0.0
    for p, w in zip(procs, work.processes):
        for mm in (w.matmul, *w.more) if w.matmul is not None else ():  # an engine's linears, all
            per = costs.MAC_COSTS[costs.mac_class(mm.a_dtype, mm.b_dtype)].dsp
            dsp_work += mm.macs * per * w.calls
            dsp_work_decode += mm.macs * per * w.calls / tokens
        if w.macs:  # MACs of lanes (the fused attention)
            per = costs.MAC_COSTS[costs.mac_class(w.dtype, w.dtype)].dsp
            dsp_work += w.macs * per * w.calls
            dsp_work_decode += w.macs * per * w.calls / tokens
    weights = sum(  # each call of a reused layer reads its own layer's weights
        mm.batch * mm.k * mm.n * costs.dtype_bits(mm.b_dtype) / 8 * w.calls
        for w in work.processes if w.matmul is not None for mm in (w.matmul, *w.more) if mm.b_offchip
    )
    others = sum(w.port_bytes * w.calls for w in work.processes)
    prefill_roof = Roofline(dsp_work / device.dsp, (weights + others) / peak_bytes)
    decode_roof = Roofline(dsp_work_decode / device.dsp, decode_bytes / peak_bytes)
    bottleneck = max(procs, key=lambda p: p.block_cycles).name if procs else ""
    decode_bottleneck = max(procs, key=lambda p: p.decode_cycles).name if procs else ""
    return Estimate(
        device=device, clock_mhz=clock, tokens=tokens, block=config.block, processes=procs,
        prefill_cycles=latency, prefill_fill_cycles=fill, decode_cycles=decode,
        bottleneck=bottleneck, decode_bottleneck=decode_bottleneck, slr_use=tuple(slr_use),
        prefill_roofline=prefill_roof, decode_roofline=decode_roof,
        prefill_bytes=int(prefill_bytes), decode_bytes=int(decode_bytes), host_ops=work.host_ops,
        kv_cache=kv, decode_chain=tuple(chain),
    )
