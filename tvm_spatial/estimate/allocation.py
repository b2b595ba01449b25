"""Resource allocation: how much parallelism each process gets, chosen with the model.

Greedy on marginal gain: start every process at its smallest hardware (a 1x1 MAC array,
one lane, one off-chip channel); if that already exceeds a per-SLR budget, raise
:class:`ResourceBudgetError` naming the process that needs most of the resource (its
attributes ``kernel``, ``process``, ``slr``, ``resource``, ``needed``, ``available`` say
the same for tools). Otherwise repeatedly take the step that saves the most prefill
cycles per share of an SLR budget it spends -- doubling off-chip channels when a process
is memory-bound, else growing output columns, then rows (tokens) of its MAC array, or lanes
of an element-wise process, by half or double (sizes 2^k or 3 x 2^k; realized: divisors of
the output) -- as long as every resource of its SLR stays within ``budget`` (85 % by
default); the loop ends when no step fits. Why steps of half as well: with doubling alone
a process whose next doubling does not fit its SLR stops at half of what the SLR could
give it (GPT2-small as built, fp32: 209 -> 174 ms; W8A8 50.3 -> 43.8 ms). The prefill objective is the model's:
per segment of the chain ``sum(tau) + (blocks - 1) * max(tau)``.

Why marginal gain rather than "grow the bottleneck" (Chen et al.'s balancing): with whole
tensors between processes (one block; and between the blocked segments of the codegen's
row-wise processes) processes run one after another and the latency is the *sum* of
their times, which equal times do not minimize (the sum
is least with hardware in proportion to the square root of each process's work). On
the fixtures the change took the BERT design from 78.8 to 74.0 us and the GPT2 design
from 115.2 to 90.5 us (U280, as built, whole tensors). This is repeated for each block size (tokens
flowing between processes) and the fastest prefill wins. Then decode: memory-bound
processes get more channels while the budget allows.

Every step calls :func:`model.process_estimate`, the same pure function the report uses.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, replace

from ..devices import RESOURCES, Device
from ..errors import ResourceBudgetError
from . import costs
from .model import (Estimate, ModelConfig, Parallelism, Resources, estimate_work, process_estimate,
                    shared_stripe_credit, weight_stripes)
from .workload import DesignWork

DEFAULT_BUDGET = 0.85
MAX_CHANNELS = 32
# output columns an engine's array may have (searched whole for token-parallel engines and
# the what-if): divisors of GPT2's and BERT's widths (768, 3072, 2304, 1024, 4096), the
# sizes the codegen's tiles fit without a ragged edge
ARRAY_COLUMNS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384)


@dataclass(frozen=True)
class Allocation:
    """The chosen parallelism per process, the block size, and the resulting estimate."""

    config: ModelConfig
    estimate: Estimate
    budget: float
    # some block's allocation wanted a step that would have saved cycles but did not fit (or
    # did not fit at all): more resources -- another SLR -- could make the design faster
    resource_bound: bool = True

    @property
    def factors(self) -> dict[str, Parallelism]:
        return dict(self.config.parallelism)

    @property
    def placement(self) -> dict[str, int]:
        """Process name -> the SLR it was allocated on (what ``build_design(placement=...)``
        takes to print the design this allocation estimates)."""
        return {p.name: p.slr for p in self.estimate.processes}

    def matmul_tilings(self) -> dict[str, tuple[int, ...]]:
        """Process name -> (rows, cols) of each matmul's MAC array, and its weight's channels
        when more than one: what the codegen realizes (``codegen_hls.library.MacArray``) and
        ``tvm_spatial.allocation(arrays=...)`` takes."""
        packed = {p.name: p.packed for p in self.estimate.processes if p.macs}
        # the codegen's array counts multipliers: a packed W4A8 one makes two outputs each
        return {n: (par.rows, max(1, par.cols // packed[n]), *((par.channels,) if par.channels > 1 else ()))
                for n, par in self.config.parallelism if n in packed}

    def codegen_table(self) -> dict:
        """Everything the codegen takes (``codegen_hls.kernel.build_design(arrays=...)``): the
        MAC array of each matmul process and the lanes of every other process."""
        return {**self.matmul_tilings(), **self.lanes()}

    def lanes(self) -> dict[str, int]:
        """Process name -> lanes of every other process (what ``codegen_hls.lanes`` realizes
        and ``tvm_spatial.allocation(lanes=...)`` takes)."""
        matmuls = {p.name for p in self.estimate.processes if p.macs}
        return {n: par.lanes for n, par in self.config.parallelism if n not in matmuls}


def over_budget(message: str, **culprit) -> ResourceBudgetError:
    """A :class:`ResourceBudgetError` carrying ``kernel``, ``process``, ``resource``,
    ``slr``, ``needed`` and ``available`` as attributes (for tools), besides the message."""
    err = ResourceBudgetError(message)
    for key, value in culprit.items():
        setattr(err, key, value)
    return err


def _stream_use(work: DesignWork, device: Device, block: int | None) -> list[Resources]:
    """SLR use of everything but processes (streams), from the model itself."""
    empty = replace(work, processes=())
    return list(estimate_work(empty, device, ModelConfig(block=block)).slr_use)


def _fits(use: Resources, cap: dict) -> bool:
    return (use.dsp <= cap["dsp"] and use.bram18k <= cap["bram18k"] and use.uram <= cap["uram"]
            and use.lut <= cap["lut"] and use.ff <= cap["ff"])


def _array_as_coded(mm, rows: int, cols: int, ragged_rows: bool = False):
    """(the ``codegen_hls.library.MacArray`` of ``rows x cols`` outputs as the codegen builds
    it, the output width it tiles): over packed columns for a packed W4A8 weight, two
    outputs each, with int8's accumulate latency (see Matmul.packed)."""
    from codegen_hls.library import MacArray

    latency = costs.MAC_COSTS["int8" if mm.packed > 1 else costs.mac_class(mm.a_dtype, mm.b_dtype)].latency
    return MacArray(rows, max(1, cols // mm.packed), latency, ragged_rows=ragged_rows), mm.n // mm.packed


def realizable_array(mm, rows: int, cols: int, ragged_rows: bool = False) -> tuple[int, int]:
    """The MAC array the codegen realizes for a requested one (``codegen_hls.library.MacArray``;
    ``ragged_rows``: a token-parallel engine's, whose rows need not divide its tokens)."""
    array, width = _array_as_coded(mm, rows, cols, ragged_rows)
    real = array.tile(mm.m, width)[1]
    return real.rows, real.cols * mm.packed


def realizable_lanes(p, lanes: int) -> int:
    """The lanes the codegen realizes for a requested number (``codegen_hls.lanes``): the
    largest divisor of the process's row (its output's last dimension) not above it."""
    from codegen_hls.lanes import largest_divisor

    return largest_divisor(p.width or p.elements or 1, max(1, lanes))


def _half_step(size: int) -> int:
    """The next size above ``size`` of the form 2^k or 3 x 2^k (8 -> 12 -> 16 -> 24 ...): a
    step of about half that stays a whole number of 8-wide vectors from 8 on (the output
    of a width without such divisors, GPT2's vocabulary, takes any width as it comes)."""
    power = 1
    while power * 2 <= size:
        power *= 2
    return 3 * power // 2 if size < 3 * power // 2 else 2 * power


def widest(p):
    """The matmul of a process that its array's columns are sized by: its own, or an
    engine's widest linear (``codegen_hls.engine``: each linear fits the array to its width)."""
    return max((p.matmul, *p.more), key=lambda mm: mm.n)


def realizable_channels(p, par: Parallelism, block: int | None = None) -> int:
    """The channels the codegen realizes for a process's weight
    (``codegen_hls.weight_stripes``): for a matmul whose weight is off-chip, ``par.channels``
    if they divide the width of the tile its realized array works in (a packed W4A8
    weight's: in packed columns, two weights per byte), else the largest
    power of two below that does; 1 for any other process (its ports are read through one
    channel each)."""
    if par.channels <= 1 or p.matmul is None or not p.matmul.b_offchip or p.matmul.batch != 1:
        return 1
    from codegen_hls.weight_stripes import stripes_fit

    channels = par.channels
    for mm in (p.matmul, *p.more):  # an engine's linears: channels every weight can be striped over
        if block and p.separable and block < mm.m:  # its stages see one block of rows
            mm = replace(mm, m=block)
        # a packed weight's array and stripes are over its packed columns
        ragged = p.interleaved  # a token-parallel engine's (MacArray.ragged_rows)
        array, width = _array_as_coded(mm, *realizable_array(mm, par.rows, par.cols, ragged), ragged)
        while channels > 1 and not stripes_fit(array, mm.m, width, channels):
            channels //= 2
    return channels


def _next_lanes(p, par: Parallelism, limit: int, realize_lanes, step: float = 2) -> Parallelism | None:
    """Grow the lanes by half (``step`` 1.5, :func:`_half_step`) or double, then double
    until the realized lanes grow (None: they cannot)."""
    want = _half_step(par.lanes) if step < 2 else par.lanes * 2
    if realize_lanes is None:
        return replace(par, lanes=min(want, limit))
    while True:
        got = realize_lanes(p, min(want, limit))
        if got > par.lanes:
            return replace(par, lanes=got)
        if want >= limit:
            return None
        want *= 2


def _next_array(mm, par: Parallelism, axis: str, limit: int, realize, step: float = 2) -> Parallelism | None:
    """Grow ``axis`` (rows or cols) of the array by half (``step`` 1.5, :func:`_half_step`)
    or double, then double until the realized array grows."""
    size = getattr(par, axis)
    want = _half_step(size) if step < 2 else size * 2
    while size < limit:
        want = min(limit, want)
        cand = replace(par, **{axis: want})
        if realize is not None:
            rows, cols = realize(mm, cand.rows, cand.cols)
            cand = replace(par, rows=rows, cols=cols)
        if getattr(cand, axis) > size:
            return cand
        if want >= limit:
            return None
        want *= 2
    return None


def _grow(p, par: Parallelism, est, max_channels: int, max_lanes: int | None = None,
          realize=None, realize_lanes=None, block: int | None = None) -> list[Parallelism]:
    """Candidate next steps for a process, best first."""
    out = []
    memory = est.block_bound == "memory"
    if memory and par.channels < max_channels:
        out.append(replace(par, channels=par.channels * 2))
    if p.matmul is not None:
        mm = widest(p)  # an engine's array is as wide as its widest linear uses
        if p.interleaved and realize is not None:  # a token-parallel engine's rows may be ragged
            realize = lambda mm, rows, cols, realize=realize: realize(mm, rows, cols, True)  # noqa: E731
        if block and p.separable and block < mm.m:  # one block of rows at a time: the array's rows divide it
            mm = replace(mm, m=block)
        for axis, limit in (("cols", mm.n), ("rows", min(mm.m, p.tokens))):
            for step in (1.5, 2):
                cand = _next_array(mm, par, axis, limit, realize, step)
                if cand is not None and cand not in out:
                    out.append(cand)
    elif par.lanes < min(p.elements, max_lanes or p.elements):
        for step in (1.5, 2):
            cand = _next_lanes(p, par, min(p.elements, max_lanes or p.elements), realize_lanes, step)
            if cand is not None and cand not in out:
                out.append(cand)
    if not memory and par.channels < max_channels and est.decode_bound == "memory":
        out.append(replace(par, channels=par.channels * 2))
    return out


def _whole_array_search(p, par: Parallelism, use_after, cap: dict, device: Device, clock: float, block,
                        max_channels: int, realize=None, realize_channels=None):
    """(parallelism, estimate, SLR use) of the fastest array that fits for an engine of a
    token-split region (``ProcessWork.interleaved``), every rows x cols tried, each with
    its weights over 1, 2, 4... channels up to ``max_channels``: the greedy
    growth's doubling stalled GPT2-small's engines at ``1 x 192`` (18.9 % of the DSP
    roofline) where ``3 x 96`` fits and runs twice as fast. One engine an SLR, each only
    as fast as its own array: nothing to share out between processes. None if none fits."""
    mm = widest(p)
    best, tried = None, set()
    for rows in range(1, min(mm.m, p.tokens) + 1):
        for cols in (c for c in ARRAY_COLUMNS if c <= mm.n):
            shape = realize(mm, rows, cols, True) if realize is not None else (rows, cols)
            if shape in tried:
                continue
            tried.add(shape)
            channels = 1
            while channels <= max_channels:
                cand = replace(par, rows=shape[0], cols=shape[1], channels=channels)
                if realize_channels is not None:
                    cand = replace(cand, channels=realize_channels(p, cand, block))
                est = process_estimate(p, cand, device, clock, block)
                use = use_after(cand, est)
                if _fits(use, cap) and (best is None or est.block_cycles < best[1].block_cycles):
                    best = (cand, est, use)
                channels *= 2
    return best


class _Chain:
    """The prefill objective the allocation lowers, kept up to date step by step: per
    segment of the chain (cut at barriers and around each process that holds whole
    tensors, as :func:`model.pipeline_cycles`), ``sum(tau) + (blocks - 1) * max(tau)``.
    With whole tensors everywhere (one block) it is the plain sum: processes run one
    after another."""

    def __init__(self, work: DesignWork, ests: dict, n_blocks: int) -> None:
        self.n_blocks = n_blocks
        self.segment: dict[str, int] = {}
        self.members: list[list[str]] = []
        self.whole: set[str] = set()  # processes that buffer whole tensors: a segment each
        alone = False  # the previous process is one of them
        kernel = None
        self.calls = {p.name: p.calls for p in work.processes}
        for p in work.processes:
            whole = not p.separable and n_blocks > 1
            # regions run one after another (model.estimate_work): each its own segments
            if p.barrier or whole or alone or not self.members or p.kernel != kernel:
                self.members.append([])
            kernel = p.kernel
            self.members[-1].append(p.name)
            self.segment[p.name] = len(self.members) - 1
            if whole:
                self.whole.add(p.name)
            alone = whole
        self.tau = {n: ests[n].block_cycles for n in self.segment}

    def saved(self, name: str, tau: float) -> float:
        """Cycles the objective loses if ``name``'s per-block time becomes ``tau``."""
        gain = self.tau[name] - tau
        if self.n_blocks > 1 and name not in self.whole:
            seg = self.members[self.segment[name]]
            before = max(self.tau[n] for n in seg)
            after = max([tau] + [self.tau[n] for n in seg if n != name])
            gain += (self.n_blocks - 1) * (before - after)
        return gain * self.calls[name]  # a reused layer's process saves it in every call

    def update(self, name: str, tau: float) -> None:
        self.tau[name] = tau


def _allocate_block(work: DesignWork, device: Device, block: int | None, budget: float, clock: float,
                    max_channels: int | None = None, max_lanes: int | None = None, realize=None,
                    realize_lanes=None, realize_channels=None, memo: dict | None = None):
    caps = [{r: device.slr(i).get(r) * budget for r in RESOURCES} for i in range(device.slrs)]
    use = _stream_use(work, device, block)
    # (process, its parallelism) -> [(next parallelism, its estimate)]; shared through
    # ``memo`` by allocations of the same processes on other SLRs (see allocate)
    steps: dict = {} if memo is None else memo.setdefault(block, {})
    pars: dict[str, Parallelism] = {}
    ests = {}
    stripes: dict[tuple[str, int], int] = {}  # (kernel, SLR) -> weight stripes (model.shared_stripe_credit)
    for p in work.processes:
        par = Parallelism(rows=1, cols=1) if p.matmul is not None else Parallelism()
        est = process_estimate(p, par, device, clock, block)
        pars[p.name], ests[p.name] = par, est
        slr = min(p.slr, device.slrs - 1)
        use[slr] = use[slr] + est.resources
        stripes[(p.kernel, slr)] = stripes.get((p.kernel, slr), 0) + weight_stripes(p, par)

    def stepped_use(p, slr: int, cand: Parallelism, est) -> Resources:
        """The SLR's use after process ``p`` takes ``cand``: its own resources, and what its
        kernel's weight stripes share as they change in number."""
        before = stripes[(p.kernel, slr)]
        after = before - weight_stripes(p, pars[p.name]) + weight_stripes(p, cand)
        credit = shared_stripe_credit(after, device) - shared_stripe_credit(before, device)
        return use[slr] + est.resources - ests[p.name].resources + credit

    def take(p, slr: int, cand: Parallelism, est, new_use: Resources) -> None:
        stripes[(p.kernel, slr)] += weight_stripes(p, cand) - weight_stripes(p, pars[p.name])
        use[slr], pars[p.name], ests[p.name] = new_use, cand, est
    for i, u in enumerate(use):
        for r in RESOURCES:
            if u.get(r) > caps[i][r]:
                worst = max((p for p in work.processes if min(p.slr, device.slrs - 1) == i),
                            key=lambda p: ests[p.name].resources.get(r), default=None)
                name = worst.name if worst else "(streams)"
                kernel = worst.kernel if worst else ""
                raise over_budget(
                    f"SLR {i} of {device.name} needs {u.get(r):.0f} {r} even at the smallest parallelism, "
                    f"over the {budget:.0%} budget of {caps[i][r]:.0f}; the largest user is process {name} "
                    f"of kernel {kernel} ({ests[name].resources.get(r):.0f} {r}) -- move layers to another "
                    "card, quantize, or raise the budget",
                    kernel=kernel, process=name, resource=r, slr=i, needed=u.get(r), available=caps[i][r],
                )
    by_name = {p.name: p for p in work.processes}
    # no more stripes than banks: a weight's stripes are read at once, each from its own
    channels = min(max_channels or MAX_CHANNELS, device.offchip.channels)
    n_blocks = math.ceil(max(1, work.tokens) / max(1, min(block or work.tokens, max(1, work.tokens))))
    for p in work.processes:
        if p.interleaved and p.matmul is not None:
            slr = min(p.slr, device.slrs - 1)
            found = _whole_array_search(p, pars[p.name], lambda cand, est, p=p, slr=slr: stepped_use(p, slr, cand, est),
                                        caps[slr], device, clock, block, channels, realize, realize_channels)
            if found is not None:
                take(p, slr, *found)
    chain = _Chain(work, ests, n_blocks)

    def grown(name):
        """The steps a process can take from where it is, with their estimates: they depend
        on nothing else, so each is worked out once however often the heap asks."""
        key = (name, pars[name])
        if key not in steps:
            p, out = by_name[name], []
            for cand in _grow(p, pars[name], ests[name], channels, max_lanes, realize, realize_lanes, block):
                if realize_channels is not None:  # the channels its (new) array can take
                    cand = replace(cand, channels=realize_channels(p, cand, block))
                    if cand == pars[name]:
                        continue
                out.append((cand, process_estimate(p, cand, device, clock, block)))
            steps[key] = out
        return steps[key]

    def saving_steps(name):
        """(cycles saved, candidate, estimate, new SLR use, whether that fits) of each step of
        ``name`` that would save cycles now."""
        p = by_name[name]
        slr = min(p.slr, device.slrs - 1)
        for cand, est in grown(name):
            saved = chain.saved(name, est.block_cycles)
            if saved > 0:
                new_use = stepped_use(p, slr, cand, est)
                yield saved, cand, est, new_use, _fits(new_use, caps[slr])

    def moves(name):
        """(merit, candidate, estimate, new SLR use) of each step that fits, best first."""
        slr = min(by_name[name].slr, device.slrs - 1)
        out = []
        for saved, cand, est, new_use, fits in saving_steps(name):
            if fits:
                # the price of a step: the largest share of an SLR budget it takes
                price = max((new_use.get(r) - use[slr].get(r)) / caps[slr][r] for r in RESOURCES if caps[slr][r])
                out.append((saved / max(price, 1e-9), cand, est, new_use))
        return sorted(out, key=lambda m: -m[0])

    heap = []
    for name in pars:
        found = moves(name)
        if found:
            heap.append((-found[0][0], name))
    heapq.heapify(heap)
    while heap:
        neg, name = heapq.heappop(heap)
        found = moves(name)
        if not found:
            continue  # frozen: nothing that fits saves cycles
        if found[0][0] < -neg * (1 - 1e-9):  # its merit fell since (another step, a new maximum)
            heapq.heappush(heap, (-found[0][0], name))
            continue
        _, cand, est, new_use = found[0]
        take(by_name[name], min(by_name[name].slr, device.slrs - 1), cand, est, new_use)
        chain.update(name, est.block_cycles)
        again = moves(name)
        if again:
            heapq.heappush(heap, (-again[0][0], name))

    # the budget stopped the growth if some step that would still save cycles does not fit
    # (more resources could speed the design up)
    budget_bound = any(not fits for name in pars for *_, fits in saving_steps(name))
    # decode: more channels for memory-bound processes, largest first, while it fits
    order = sorted(pars, key=lambda n: -ests[n].decode_cycles)
    for name in order:
        p = by_name[name]
        slr = min(p.slr, device.slrs - 1)
        while ests[name].decode_bound == "memory" and pars[name].channels < channels:
            cand = replace(pars[name], channels=pars[name].channels * 2)
            if realize_channels is not None and realize_channels(p, cand, block) != cand.channels:
                break
            est = process_estimate(p, cand, device, clock, block)
            new_use = stepped_use(p, slr, cand, est)
            if not _fits(new_use, caps[slr]):
                budget_bound = True
                break
            if est.block_cycles > ests[name].block_cycles:
                break
            take(p, slr, cand, est, new_use)
    return pars, budget_bound


def allocate(
    work: DesignWork, device: Device, *, budget: float = DEFAULT_BUDGET, blocks=None,
    clock_mhz: float | None = None, max_channels: int | None = None, max_lanes: int | None = None,
    realize=None, realize_lanes=None, realize_channels=None, memo: dict | None = None,
) -> Allocation:
    """Choose every process's parallelism (and the token block) for the fastest prefill
    within ``budget`` of each SLR resource. Raises :class:`ResourceBudgetError` if even the
    smallest design does not fit.

    ``blocks``, ``max_channels``, ``max_lanes``, ``realize`` (``(matmul, rows, cols) ->
    (rows, cols)`` actually built) and ``realize_lanes`` (``(process, lanes) -> lanes``
    actually built) restrict the choice to what a code generator realizes:
    :func:`allocate_for_codegen` is the allocation ``relax.build`` applies.

    ``memo``: a dict shared by allocations of the same processes (same design, device and
    limits) that differ only in the SLR each process is on -- what a process can grow to
    and its estimate there do not depend on its SLR (``placement.search_placement`` makes
    hundreds of such allocations)."""
    clock = clock_mhz or device.clock_mhz
    tokens = max(1, work.tokens)
    if blocks is None:
        blocks = sorted({b for b in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if b <= tokens} | {tokens})
    best = None
    failure = None
    bound = False
    for block in blocks:
        try:
            pars, budget_bound = _allocate_block(work, device, block, budget, clock, max_channels, max_lanes,
                                                 realize, realize_lanes, realize_channels, memo)
        except ResourceBudgetError as err:  # say the nearest miss (e.g. with the smallest blocks)
            if failure is None or err.needed / err.available < failure.needed / failure.available:
                failure = err
            bound = True
            continue
        bound = bound or budget_bound
        config = ModelConfig(block=block, clock_mhz=clock_mhz, kv_budget=budget).with_parallelism(pars)
        est = estimate_work(work, device, config)
        if best is None or est.prefill_cycles < best.estimate.prefill_cycles:
            best = Allocation(config, est, budget)
    if best is None:
        assert failure is not None
        raise failure
    return replace(best, resource_bound=bound)


# What today's codegen realizes of a Parallelism: the MAC array of each matmul process
# (tile loops unrolled, accumulator partitioned); token blocks of ``CODEGEN_MIN_ROWS`` or
# more tokens dividing the sequence, for its row-wise processes (the others buffer whole
# tensors), or whole tensors everywhere; one m_axi port per reader (one channel), but a
# matmul's off-chip weight striped over up to CODEGEN_MAX_CHANNELS ports (see
# realizable_channels); the lanes of every other process (codegen_hls.lanes: a divisor of
# its row, see realizable_lanes) up to CODEGEN_MAX_LANES.
# Why 8 channels: a layer's four linear layers, 8 stripes each, take the U280's 32 HBM
# pseudo-channels once (codegen_hls.vitis_files.place balances a region's ports over the
# banks by traffic; the model bounds each region by the whole card's bandwidth). Up to 32
# would read a decode step's weight at the card's rate (GPT2-small fp32, decode as if:
# 36.5 % of the memory roofline against 19.4 %) but were measured to slow the emulation
# from 1.47 to 2.39 s per run, and give the layer 4x the AXI masters, whose SLR
# crossings the model does not count.
# Why 32 in a decode design (one token: the linears run one after another, each bound by
# its weight's bytes): each reads its weight over every channel of the card in turn. The
# stripes of all its weights then share the card's 32 bundles and banks (codegen_hls.kernel
# stripe_weights), so the layer has 32 weight masters, not 4 x 32.
# Why a cap on lanes: past 64 fp32 lanes (a 2048-bit datapath, 64 memory banks per
# buffer) the unrolled loops and partitions grow HLS effort and routing, while the streams
# between processes carry at most 16 elements per cycle (codegen_hls.kernel.STREAM_PACKET). Why a floor on blocks: every
# block re-reads a linear layer's weights and calls each stage once more, and below 8
# rows the MAC array cannot use its rows (and the emulation slows down).
CODEGEN_MAX_LANES = 64
CODEGEN_MIN_ROWS = 8
CODEGEN_MAX_CHANNELS = 8
CODEGEN_DECODE_MAX_CHANNELS = 32
CODEGEN_LIMITS = dict(max_channels=CODEGEN_MAX_CHANNELS, max_lanes=CODEGEN_MAX_LANES)


def codegen_blocks(tokens: int) -> tuple:
    """The token blocks the codegen realizes for a sequence of ``tokens``: whole tensors
    (None) or a power of two from ``CODEGEN_MIN_ROWS`` that divides it."""
    rows, out = CODEGEN_MIN_ROWS, [None]
    while rows < tokens:
        if tokens % rows == 0:
            out.append(rows)
        rows *= 2
    return tuple(out)


def codegen_max_channels(work: DesignWork) -> int:
    """Most ports the codegen stripes a weight over: ``CODEGEN_DECODE_MAX_CHANNELS`` in a
    decode design (its linears see one token), else ``CODEGEN_MAX_CHANNELS``."""
    return CODEGEN_DECODE_MAX_CHANNELS if work.tokens <= 1 else CODEGEN_MAX_CHANNELS


def allocate_for_codegen(work: DesignWork, device: Device, *, budget: float = DEFAULT_BUDGET,
                         blocks=None, max_channels: int | None = None, memo: dict | None = None) -> Allocation:
    """The allocation ``relax.build(..., "vitis_spatial")`` applies: :func:`allocate`
    restricted to what the codegen realizes (``CODEGEN_LIMITS``, arrays as
    :func:`realizable_array`, weights striped as :func:`realizable_channels`), so the
    estimate of the built design equals this one.
    Blocks: ``blocks`` if given, else the design's own if it was built with token blocks
    (its loop nests are those of one block), else any of :func:`codegen_blocks`;
    ``max_channels``: fewer ports per weight than :func:`codegen_max_channels`; ``memo``: as
    :func:`allocate`'s."""
    blocks = blocks or ((work.block,) if work.block else codegen_blocks(work.tokens))
    cap = codegen_max_channels(work)
    limits = dict(CODEGEN_LIMITS, max_channels=min(max_channels or cap, cap))
    return allocate(work, device, budget=budget, realize=realizable_array, realize_lanes=realizable_lanes,
                    realize_channels=realizable_channels, blocks=blocks, memo=memo, **limits)


def realized_config(design) -> ModelConfig:
    """The ModelConfig a built Design realizes: each matmul process's recorded MAC array
    and its weight's channels (one per stripe, ``Process.weight_stripes``), every other
    process's recorded lanes, its recorded token blocks, one channel per other port
    (columns in outputs: a packed W4A8 array makes two per multiplier)."""
    from .workload import design_work

    work = design_work(design)
    packed = {p.name: p.matmul.packed for p in work.processes if p.matmul is not None}
    table = {}
    for kernel in design.kernels:
        for proc in kernel.processes:
            if proc.array:
                table[proc.name] = Parallelism(rows=proc.array[0], cols=proc.array[1] * packed.get(proc.name, 1),
                                               channels=max(1, len(proc.weight_stripes)))
            elif proc.lanes > 1:
                table[proc.name] = Parallelism(lanes=proc.lanes)
    return ModelConfig(block=work.block).with_parallelism(table)


def log2_steps(n: int) -> int:
    return int(math.log2(max(1, n)))


__all__ = ["Allocation", "allocate", "allocate_for_codegen", "codegen_blocks", "realizable_lanes", "realized_config",
           "DEFAULT_BUDGET",
           "costs"]
