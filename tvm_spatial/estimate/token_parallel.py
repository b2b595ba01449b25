"""A what-if of the model: a causal prefill split by tokens over the SLRs, one engine each.

Why: the prefill the codegen builds is a pipeline of token blocks through one layer's
processes (called once per layer) followed by the LM head's region, each region on DSPs
of its own. With two regions of fixed hardware that run in turn, the card reaches at most
about half of its DSP rate (docs/model_validation.md, "Why not 60 % yet"), however well
each pipeline is balanced: the LM head's array idles for the twelve layers and the
layers' arrays idle for the head. Past that, one set of MAC units must serve every
linear, the head included.

The architecture this module estimates, before anyone builds it:

* SLR ``s`` takes a contiguous range of the sequence's tokens and computes the whole
  model for them -- every layer, then its rows of the logits -- as one process: an
  *engine* (``codegen_hls.engine``), a ``rows x cols`` MAC array that every linear takes
  in turn, and whose multipliers and adders the attention's ``QK^T`` and ``AV`` (as
  matmuls, ``heads`` of them) and every element-wise stage share.
* Token rows are independent in every operator but the attention, and a causal attention
  reads only earlier tokens' K and V: SLR ``s`` streams its K and V rows to the SLRs after
  it and reads the ones before it. The streams all run forwards, as a dataflow region
  needs (a bidirectional attention would need them both ways: not this design).
* Each engine reads every weight (a third of the card's memory channels each), once per
  layer: with tens of token rows per array, far less than the card's bandwidth.

The build (``tvm_spatial.allocation(layers="token_parallel")``: ``relax_passes.token_split``
and the codegen's chunk engines) realizes the split, the engines, the forward K/V streams,
the wide attention MACs and the reuse of arrays; not yet the loop over the layers nor the
logits written in place (docs/model_validation.md), so a built design is priced by
``model.estimate_work`` like any other, and this what-if says where it is going.

What is assumed beyond the model's own rules (``model.process_estimate`` prices each
engine, with the codegen's tile rules): the element-wise stages of a layer exist once
(the engine loops over the layers), so an operator that is not a multiply or an add
(``exp``, ``tanh``, ``div``) is hardware once per kind; the SLRs' engines run side by side
and the slowest one sets the prefill; the K and V of earlier SLRs arrive before they are
needed (their producers are ahead: fewer keys to attend to).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

from ..devices import RESOURCES, Device
from ..errors import ResourceBudgetError
from . import costs
from .allocation import ARRAY_COLUMNS, _fits, realizable_array, widest
from .model import Parallelism, ProcessEstimate, Roofline, estimate_work, process_estimate
from .workload import DesignWork, Matmul, ProcessWork

TRANSFER = 16  # elements per stream transfer (one 512-bit word of fp32)


@dataclass(frozen=True)
class TokenParallel:
    """The what-if's estimate: one engine per SLR."""

    rows: tuple[tuple[int, int], ...]  # each SLR's token range [start, end)
    engines: tuple[ProcessEstimate, ...]
    clock_mhz: float
    prefill_roofline: Roofline

    @property
    def prefill_cycles(self) -> float:
        return max(e.block_cycles for e in self.engines)

    @property
    def prefill_ms(self) -> float:
        return self.prefill_cycles / (self.clock_mhz * 1e3)

    @property
    def prefill_dsp_ratio(self) -> float:
        return self.prefill_roofline.dsp_cycles / self.prefill_cycles

    def utilization(self, device: Device) -> tuple[float, int, str]:
        """(fraction, slr, resource) of the fullest resource of any SLR."""
        return max((e.resources.get(r) / device.slr(e.slr).get(r), e.slr, r)
                   for e in self.engines for r in RESOURCES)


def token_ranges(tokens: int, device: Device) -> tuple[tuple[int, int], ...]:
    """Contiguous token ranges, one per SLR, in proportion to each SLR's DSPs."""
    total = sum(device.slr(s).dsp for s in range(device.slrs))
    ends, start = [], 0
    for s in range(device.slrs):
        upto = sum(device.slr(i).dsp for i in range(s + 1))
        end = tokens if s == device.slrs - 1 else round(tokens * upto / total)
        ends.append((start, end))
        start = end
    return tuple(ends)


def engine_work(work: DesignWork, start: int, end: int, slr: int, slrs: int, head_dim: int,
                shared_stages: bool = True) -> ProcessWork:
    """The engine of tokens ``[start, end)`` on SLR ``slr``: every linear of the design
    (once per call of its layer) as a linear of ``end - start`` rows, the fused attention as
    its two matmuls over the keys up to ``end``, and every other loop nest scaled to its
    rows. Raises ValueError for a bidirectional model (see the module)."""
    if not work.causal:
        raise ValueError("token-parallel engines need a causal attention: a bidirectional one reads every "
                         "token's K and V, so the SLRs' streams would run both ways")
    rows = end - start
    share = rows / max(1, work.tokens)
    linears: list[Matmul] = []
    modes: list[str] = []
    nests: list[tuple[int, ...]] = []
    ops: dict[str, None] = {}
    layers = 0
    port_bytes = 0.0
    for p in work.processes:
        port_bytes += p.port_bytes * p.calls * share  # a layer's input and output too: conservative
        mine = list(p.nests)
        if p.matmul is not None:  # a layer's linear once, over every layer's weight (batch)
            for mm in (p.matmul, *p.more):
                linears.append(replace(mm, m=max(1, round(mm.m * share)), batch=mm.batch * p.calls))
            # the logits (a region's linear called once, whose result no process reads) go
            # out through their port a 512-bit beat a cycle: no buffer
            logits = p.calls == 1 and not any(s.producer == p.name for s in work.streams)
            modes += ["port" if logits else "array"] * (1 + len(p.more))
        elif p.macs:  # the fused attention: its QK^T and AV nests become matmuls on the array
            layers += p.calls
            heads = max(1, p.width // head_dim)
            mine = [n for n in mine if n[0] * n[1] != p.macs // 2]
            if len(mine) != len(p.nests) - 2:
                raise ValueError(f"{p.name}: its QK^T and AV loop nests ({p.macs // 2} MACs each) are not "
                                 "among its nests: not the fused attention this what-if reads")
            linears.append(Matmul(heads * p.calls, rows, end, head_dim, p.dtype, p.dtype, False))
            linears.append(Matmul(heads * p.calls, rows, head_dim, end, p.dtype, p.dtype, False))
            modes += ["array", "array"]
            ops["masked_softmax"] = None  # what is left of it: scale, mask, max, exp, sum, divide
        elif p.op in costs.ELEMENT_OPS:  # a split or a reshape moves data: no operator
            ops[p.op] = None
        for trips, extent, ii, *rest in mine:
            nests.append((max(1, math.ceil(trips * share)) * p.calls, extent, ii, *rest))
    hidden = max((p.width for p in work.processes if p.macs), default=0)
    kv_row = 2 * hidden
    # K and V rows read from the SLRs before it, and its own written to each SLR after it
    stream_io = math.ceil(layers * kv_row * (start + rows * (slrs - 1 - slr)) / TRANSFER)
    # the first linear sizes the array's buffers (model.process_estimate): one of a single
    # layer, the logits; the other layers' and stages' intermediates are ``scratch``
    order = sorted(range(len(linears)), key=lambda i: (linears[i].batch, modes[i] != "port"))
    linears, modes = [linears[i] for i in order], [modes[i] for i in order]
    if not linears:
        raise ValueError("token-parallel engines need a design with linears: this one has no matmul")
    first, *rest = linears
    return ProcessWork(
        kernel="token_parallel", name=f"engine_slr{slr}", op="engine", layer=0, slr=slr, work=0,
        tokens=rows, elements=0, dtype=first.a_dtype, matmul=first, port_bytes=int(port_bytes),
        nests=tuple(nests), separable=False, stream_io=stream_io, writeback=modes[0],
        more=tuple(rest), more_writeback=tuple(modes[1:]), engine_ops=tuple(ops),
        # one layer's intermediates (its input, residual, attention output, QKV and FFN rows),
        # the K and V of every key up to its last
        scratch=(rows * (3 * hidden + 3 * hidden + 4 * hidden), end * kv_row), ports=("weights", "logits"),
        shared_stages=shared_stages,
    )


def fastest_engine(work: DesignWork, device: Device, start: int, end: int, slr: int, budget: float,
                   head_dim: int, clock: float) -> ProcessEstimate | None:
    """The fastest engine of tokens ``[start, end)`` that fits SLR ``slr``: every array of
    ``rows x cols`` (rows up to its tokens, cols in :data:`ARRAY_COLUMNS`) with at least
    half the MAC units its DSP budget allows, its element-wise stages sharing the array's
    units or not. None when none fits."""
    channels = max(1, device.offchip.channels // device.slrs)
    caps = {r: budget * device.slr(slr).get(r) for r in RESOURCES}  # the allocation's own test
    best = None
    for shared in (True, False):
        p = engine_work(work, start, end, slr, device.slrs, head_dim, shared)
        per_mac = costs.MAC_COSTS[costs.mac_class(p.matmul.a_dtype, p.matmul.b_dtype)].dsp
        most = budget * device.slr(slr).dsp / per_mac
        tried = set()
        for rows in range(1, end - start + 1):
            for cols in ARRAY_COLUMNS:
                # as the codegen realizes it (an engine's rows may leave a last row tile short)
                shape = realizable_array(widest(p), rows, cols, ragged_rows=True)
                if shape in tried or not most / 2 <= shape[0] * shape[1] <= most:
                    continue
                tried.add(shape)
                est = process_estimate(p, Parallelism(rows=shape[0], cols=shape[1], channels=channels), device,
                                       clock, None)
                if _fits(est.resources, caps) and (best is None or est.block_cycles < best.block_cycles):
                    best = est
    return best


def token_parallel(work: DesignWork, device: Device, *, budget: float = 0.85, head_dim: int = 64,
                   clock_mhz: float | None = None, search: int = 2) -> TokenParallel:
    """The fastest engines (:func:`fastest_engine`) for the token ranges of
    :func:`token_ranges` with each boundary moved by up to ``search`` tokens."""
    clock = clock_mhz or device.clock_mhz
    tokens = max(1, work.tokens)
    base = token_ranges(tokens, device)
    cache: dict = {}

    def engine(start, end, slr):
        if (start, end, slr) not in cache:
            cache[start, end, slr] = fastest_engine(work, device, start, end, slr, budget, head_dim, clock)
        return cache[start, end, slr]

    best = None
    shifts = range(-search, search + 1)
    for moves in itertools.product(shifts, repeat=len(base) - 1):
        bounds = [0] + [b[1] + d for b, d in zip(base[:-1], moves)] + [tokens]
        if any(a >= b for a, b in zip(bounds, bounds[1:])):
            continue
        ranges = tuple(zip(bounds, bounds[1:]))
        engines = [engine(a, b, slr) for slr, (a, b) in enumerate(ranges)]
        if any(e is None for e in engines):
            continue
        slowest = max(e.block_cycles for e in engines)
        if best is None or slowest < best[0]:
            best = (slowest, ranges, tuple(engines))
    if best is None:
        raise ResourceBudgetError(f"no token-parallel engine fits an SLR within {budget:.0%} of its resources")
    return TokenParallel(best[1], best[2], clock, estimate_work(work, device).prefill_roofline)
