"""How ``relax.build(..., "vitis_spatial")`` chooses each matmul process's MAC array and
every other process's lanes.

Why a context manager: TVM's build configuration for a Python plugin has no other home --
``PassContext`` rejects config keys that were not registered in C++, and our target is an
``llvm`` tag whose attributes are fixed. TVM's own meta-schedule uses the same convention
(``with database: relax.build(...)``), and that is honoured too:

* default: the analytical model's allocation for the target's device
  (:func:`tvm_spatial.estimate.allocate_for_codegen`, 85 % of every per-SLR resource);
* ``with tvm_spatial.allocation("default"):`` the library's default 8 x 32 array everywhere;
* ``with tvm_spatial.allocation(budget=0.5):`` the model's allocation at another budget;
* ``with tvm_spatial.allocation(arrays={"k0_..._p4_linear": (2, 16)}):`` explicit arrays for
  some processes (the others as the mode says; ``(2, 16, 4)``: and its weight striped over 4
  ports, ``codegen_hls.weight_stripes``); ``lanes={"k0_..._p17_gelu": 16}`` likewise
  the lanes (elements per cycle, ``codegen_hls.lanes``) of non-matmul processes;
* ``with database:`` (a ``tvm.s_tir.meta_schedule`` database holding records of
  :mod:`tvm_spatial.tuning`): the best tuned arrays and lanes of this design, if it was tuned;
* ``with tvm_spatial.allocation(slrs=2):`` spread the processes over exactly 2 SLRs;
* ``with tvm_spatial.allocation(channels=1):`` no weight read through more than one port
  (default: up to 8 stripes, 32 in a decode design, ``codegen_hls.weight_stripes``; one keeps the emulation at its
  fastest, a stripe loop per port being a short loop on the host); tuning under it
  (``tuner.tune_design``) keeps to it too;
* ``with tvm_spatial.allocation(rows=16):`` stream the row-wise processes in blocks of 16
  tokens (``codegen_hls.token_blocks``; the model's allocation chooses otherwise, and a
  ``rows`` at or above the sequence length means whole tensors);
* ``with tvm_spatial.allocation(layers="reuse"):`` one layer's hardware called once per
  layer (``relax_passes.layer_reuse``); ``"unroll"``: every layer its own processes; the
  default ``"auto"`` partitions both ways and keeps the faster by the model
  (:func:`partition_for_build`);
* ``with tvm_spatial.allocation(layers="token_parallel"):`` a causal prefill split by tokens
  into one chunk per SLR (``slrs``, default all), each computing every layer and the LM head
  for its rows as one engine (``relax_passes.token_split``, ``codegen_hls.engine``);
* ``with tvm_spatial.allocation(placement={"k0_..._p20_linear": 1}):`` put these processes
  on these SLRs (the others where the work-balanced split puts them). Tuned records carry
  a placement too: tuning moves the SLR cuts of each kernel's chain of processes.

SLRs, fit first: the model's allocation is tried on 1, 2, ... SLRs, and the design takes the
fewest whose estimated prefill is within ``SLR_SLACK`` of the fastest. Why: every stream
that crosses an SLR boundary becomes an AXI-stream link between two kernels over the
scarce super long lines, and a design split for no speed gain pays for it in routing and
timing. A count whose allocation the budget never held back (``Allocation.resource_bound``
false: every process grew as far as it saves cycles) ends the search: more SLRs add only
resources, so they cannot be faster, and their placement search was most of a small
design's build. The other modes (library arrays, explicit arrays, tuned records) keep the
processes spread over every SLR, as they were tuned or written for.

The SLR cuts are the model's: on each count of SLRs, each kernel's chain of processes is
cut where the allocation is fastest, not where the work balances
(:mod:`tvm_spatial.estimate.placement`; GPT2-small, fp32: 151.2 -> 109.2 ms), and fit first
compares those. Not when the SLRs or a placement are given (``allocation(slrs=N)``,
``allocation(placement=...)``): those are kept as asked, the rest split by work.

A design that does not fit the card even at the smallest arrays (GPT2-small in fp32 with
every layer unrolled: its held K and V, streams and buffers need 324 URAM on SLR0 of the
272 allowed; with one layer reused it fits, and "auto" takes that) is still built for emulation with whole tensors, the library's default arrays and a
:class:`DesignOverBudgetWarning` that names the kernel,
process and resource (and one lane per non-matmul process); ``allocation(strict=True)``
raises the ``ResourceBudgetError`` instead.

The choice travels to the codegen inside ``RunCodegen``'s options (as JSON), and every
process of the built design records the array or the lanes it realized (``Process.array``,
``Process.lanes``), which ``tvm_spatial.estimate`` reads back.
"""

from __future__ import annotations

import contextlib
import json
import threading
import warnings
from dataclasses import dataclass, field, replace

from ..errors import ResourceBudgetError
from ..estimate import DEFAULT_BUDGET

MODES = ("model", "default")
# "reuse": a run of identical layers is one layer's hardware called once per layer
# (relax_passes.layer_reuse); "unroll": every layer its own; "auto": the faster by the model;
# "token_parallel": unrolled, the tokens split into one chunk per SLR, each chunk an engine
# (relax_passes.token_split, codegen_hls.engine): causal prefills only
LAYER_CHOICES = ("auto", "reuse", "unroll", "token_parallel")
# Fit first: the fewest SLRs whose allocated design is at most this much slower than the best.
SLR_SLACK = 0.05


class DesignOverBudgetWarning(UserWarning):
    """The design does not fit the card even at the smallest arrays (``strict=False``), so
    ``relax.build`` keeps the library's default arrays and builds the emulation anyway."""


@dataclass(frozen=True)
class AllocationPolicy:
    mode: str = "model"  # "model": the analytical model's allocation; "default": the library's 8 x 32
    budget: float = DEFAULT_BUDGET
    arrays: tuple = field(default=())  # ((process name, (rows, cols[, channels])), ...) overrides
    lanes: tuple = field(default=())  # ((process name, lanes), ...) overrides
    use_database: bool = True  # apply tuned records of the current meta-schedule database
    strict: bool = False  # a design over budget even at the smallest arrays: raise, not warn
    slrs: int = 0  # SLRs to spread the processes over; 0: fit first ("model"), else all
    placement: tuple = field(default=())  # ((process name, SLR), ...) overrides
    rows: int = 0  # tokens per block of the row-wise processes; 0: the allocation's choice
    layers: str = "auto"  # one of LAYER_CHOICES
    channels: int = 0  # most ports a weight is striped over; 0: the codegen's (codegen_max_channels)

    def to_json(self) -> str:
        return json.dumps({"mode": self.mode, "budget": self.budget, "use_database": self.use_database,
                           "strict": self.strict, "arrays": [[n, list(rc)] for n, rc in self.arrays],
                           "lanes": [[n, int(lanes)] for n, lanes in self.lanes], "slrs": self.slrs,
                           "placement": [[n, int(slr)] for n, slr in self.placement], "rows": self.rows,
                           "layers": self.layers, "channels": self.channels},
                          sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> "AllocationPolicy":
        if not text:
            return cls()
        data = json.loads(str(text))
        arrays = tuple((str(n), tuple(int(x) for x in rc)) for n, rc in data.get("arrays", ()))
        lanes = tuple((str(n), int(lanes)) for n, lanes in data.get("lanes", ()))
        placement = tuple((str(n), int(slr)) for n, slr in data.get("placement", ()))
        return cls(str(data.get("mode", "model")), float(data.get("budget", DEFAULT_BUDGET)), arrays,
                   lanes, bool(data.get("use_database", True)), bool(data.get("strict", False)),
                   int(data.get("slrs", 0)), placement, int(data.get("rows", 0)), str(data.get("layers", "auto")),
                   int(data.get("channels", 0)))


_STACK = threading.local()


def current_policy() -> AllocationPolicy:
    stack = getattr(_STACK, "stack", None)
    return stack[-1] if stack else AllocationPolicy()


@contextlib.contextmanager
def allocation(mode: str = "model", *, budget: float = DEFAULT_BUDGET, arrays: dict | None = None,
               lanes: dict | None = None, use_database: bool = True, strict: bool = False, slrs: int = 0,
               placement: dict | None = None, rows: int = 0, layers: str = "auto", channels: int = 0):
    """Builds inside this block use this allocation (see the module docstring)."""
    from ..errors import UsageError

    if mode not in MODES:
        raise UsageError(f"allocation mode {mode!r} is not one of {', '.join(MODES)}")
    if layers not in LAYER_CHOICES:
        raise UsageError(f"allocation layers {layers!r} is not one of {', '.join(LAYER_CHOICES)}")
    if not 0 < budget <= 1:
        raise UsageError(f"allocation budget {budget} must be a fraction in (0, 1]")
    table = []
    for n, entry in (arrays or {}).items():
        if len(entry) not in (2, 3) or any(int(x) < 1 for x in entry):
            raise UsageError(f"arrays[{n!r}] must be (rows, cols) or (rows, cols, channels) of at least 1, not {entry!r}")
        table.append((str(n), tuple(int(x) for x in entry)))
    table = tuple(sorted(table))
    for n, width in (lanes or {}).items():
        if int(width) < 1:
            raise UsageError(f"lanes of {n} must be at least 1, not {width}")
    if not isinstance(slrs, int) or slrs < 0:
        raise UsageError(f"allocation slrs {slrs!r} must be a count of SLRs (0: fit first)")
    if not isinstance(rows, int) or rows < 0:
        raise UsageError(f"allocation rows {rows!r} must be a count of tokens per block (0: the model's choice)")
    if not isinstance(channels, int) or channels < 0:
        raise UsageError(f"allocation channels {channels!r} must be a count of ports per weight (0: up to 8, 32 in a decode design)")
    for n, slr in (placement or {}).items():
        if not isinstance(slr, int) or slr < 0:
            raise UsageError(f"placement of {n} must be an SLR index, not {slr!r}")
    lane_table = tuple(sorted((str(n), int(width)) for n, width in (lanes or {}).items()))
    places = tuple(sorted((str(n), int(slr)) for n, slr in (placement or {}).items()))
    policy = AllocationPolicy(mode, float(budget), table, lane_table, use_database, strict, slrs, places, rows,
                              layers, channels)
    stack = getattr(_STACK, "stack", None)
    if stack is None:
        stack = _STACK.stack = []
    stack.append(policy)
    try:
        yield policy
    finally:
        stack.pop()


@dataclass(frozen=True)
class Layout:
    """What the codegen is told: each matmul's MAC array and every other process's lanes
    (None: the library's), how many SLRs the processes are spread over (None: all), and
    the SLR of processes the codegen must not place by its work-balanced split (the
    model's cuts, tuned cuts, or a user's placement)."""

    arrays: dict | None
    slrs: int | None
    placement: dict = field(default_factory=dict)
    rows: int | None = None  # tokens per block of the row-wise processes (None: whole tensors)
    estimate: object = field(default=None, compare=False)  # the model's allocation's, if it made one


# (regions' structural hashes, device, host ops, policy) -> [(regions, layout, warning, whether a
# split that fits was searched for when the balanced one did not)]
_LAYOUTS: dict = {}
_LAYOUTS_KEPT = 64  # the least recently used goes first (a test session builds a few dozen designs)


def choose_layout(funcs, device: str, host_ops, policy: AllocationPolicy, rescue: bool = True) -> Layout:
    """The arrays, lanes and SLR count for the codegen, per ``policy`` (module docstring).

    Remembered per regions (structurally), device, host operators and policy: with
    ``layers="auto"`` a build allocates both partitions to choose one, and the codegen
    then asks again for the one kept (GPT2-small: 0.7 s of a 4 s build). A design that
    does not fit warns each time it is asked for. Not under a tuning database, whose
    records may change between calls. ``rescue=False``: when no work-balanced SLR split
    fits, do not search for another that does (an alternative layout, when one that fits
    is already in hand: the search is the slowest part of a decode step's build)."""
    import tvm_ffi

    if policy.use_database and _current_database() is not None:
        layout, warning = _choose_layout(funcs, device, host_ops, policy, rescue)
    else:
        funcs = list(funcs)
        key = (tuple(tvm_ffi.structural_hash(f) for f in funcs), device, tuple(host_ops), policy)
        for known, layout, warning, searched in _LAYOUTS.get(key, ()):
            # made without the search, a layout that fits is the one the search would give
            if (searched or not rescue or layout.estimate is not None) and len(known) == len(funcs) and all(
                    tvm_ffi.structural_equal(a, b) for a, b in zip(known, funcs)):
                break
        else:
            layout, warning = _choose_layout(funcs, device, host_ops, policy, rescue)
            _LAYOUTS.setdefault(key, []).append((funcs, layout, warning, rescue))
        _LAYOUTS[key] = _LAYOUTS.pop(key)  # the most recently used now
        while len(_LAYOUTS) > _LAYOUTS_KEPT:
            del _LAYOUTS[next(iter(_LAYOUTS))]
    if warning:
        warnings.warn(warning, DesignOverBudgetWarning, stacklevel=2)
    # the caller's own copies of the tables (a cached layout is shared)
    return replace(layout, arrays=None if layout.arrays is None else dict(layout.arrays),
                   placement=dict(layout.placement))


def tuning_plan(funcs, device: str, host_ops, policy: AllocationPolicy, *, blocked: bool = False):
    """The design tuning tunes (``tuner.plan_module``), which a build under a tuning
    database looks its records up on: the SLR cuts of the model's allocation within
    ``policy``'s SLRs, budget and channels whatever its mode (SLRs asked for kept as
    asked, as the build keeps them), the policy's placement on top; in that allocation's
    token blocks if ``blocked`` (a record's workload does not depend on them). If nothing
    fits: the work-balanced split, whole tensors."""
    from codegen_hls.kernel import plan_design

    try:
        alloc = allocate_planned(funcs, device, host_ops, policy.slrs or None, dict(policy.placement) or None,
                                 policy.budget, channels=policy.channels or None, search=not policy.slrs)
    except ResourceBudgetError:
        alloc = None
    placement = {**(alloc.placement if alloc else {}), **dict(policy.placement)}
    rows = alloc.config.block if blocked and alloc else None
    return plan_design(funcs, device, host_ops, slrs=policy.slrs or None, placement=placement, rows=rows)


def _choose_layout(funcs, device: str, host_ops, policy: AllocationPolicy,
                   rescue: bool = True) -> tuple[Layout, str | None]:
    """:func:`choose_layout`, uncached: (the layout, the over-budget warning to give, if any)."""
    from ..devices import get_device

    dev = get_device(device)
    if policy.slrs > dev.slrs:
        from ..errors import UsageError

        raise UsageError(f"allocation slrs={policy.slrs}: {dev.name} has {dev.slrs} SLRs")
    forced = policy.slrs or None
    overrides = {**dict(policy.arrays), **dict(policy.lanes)}
    placed = dict(policy.placement)
    rows = policy.rows or None
    database = _current_database() if policy.use_database else None
    if policy.mode == "default" and not overrides and database is None:
        return Layout(None, forced, placed, rows), None
    if database is not None:
        from .tuner import tuned_layout

        planned = tuning_plan(funcs, device, host_ops, policy)
        tuned = tuned_layout(database, planned)
        if tuned is not None:
            table, placement, tuned_rows = tuned
            default = {p.name: p.slr for kernel in planned.kernels for p in kernel.processes}
            return Layout({**table, **overrides}, forced, {**default, **placement, **placed}, rows or tuned_rows), None
    if policy.mode != "model":
        return Layout(overrides, forced, placed, rows), None
    fitted, failure = {}, None
    for count in [forced] if forced else range(1, dev.slrs + 1):
        try:
            # the SLR cuts searched on each count before fit first compares them (BERT-base:
            # 114.0 / 110.6 ms on 2 / 3 SLRs work-balanced; 110.9 / 91.2 ms searched)
            fitted[count] = allocate_planned(funcs, device, host_ops, count, placed or None, policy.budget, rows,
                                             policy.channels or None, search=not forced)
        except ResourceBudgetError as err:
            failure = err  # the last (most SLRs) failure names the tightest resource
            continue
        if not fitted[count].resource_bound:
            break  # nothing wanted more than this SLR count gave: more SLRs cannot speed it up
    if not fitted and not forced and not placed and rescue:  # no balanced split fits: search for one that does
        for count in range(2, dev.slrs + 1):
            try:
                fitted[count] = allocate_planned(funcs, device, host_ops, count, None, policy.budget, rows,
                                                 policy.channels or None, rescue=True)
            except ResourceBudgetError:
                pass
    if not fitted:
        if policy.strict:
            raise failure
        # the emulation is still worth building: say so, keep the library's arrays
        return Layout(overrides or None, forced, placed, rows), (
            f"vitis_spatial: the design does not fit, so the allocation is not applied "
            f"(the library's default arrays are used): {failure}")
    fastest = min(a.estimate.prefill_cycles for a in fitted.values())
    count = min(n for n, a in fitted.items() if a.estimate.prefill_cycles <= fastest * (1 + SLR_SLACK))
    chosen = fitted[count]
    return Layout({**chosen.codegen_table(), **overrides}, count, {**chosen.placement, **placed}, chosen.config.block,
                  chosen.estimate), None


def partition_for_build(mod, device: str, policy: AllocationPolicy | None = None):
    """``relax_passes.partition_for_vitis_spatial`` with the layers reused or unrolled as
    ``policy.layers`` says. "auto" partitions both ways and keeps the one whose model
    allocation has the faster prefill (one that fits the card before one that does not;
    if neither fits, reuse, which needs less hardware; the unrolled one is searched for a
    split that fits only when the reused one does not fit). Under a tuning database, the one
    whose design has records (tuning tunes what "auto" chose). Without a model allocation
    to compare (library or explicit arrays) it unrolls, as those name the processes of
    the unrolled design."""
    from relax_passes import host_operators, offloaded_regions, partition_for_vitis_spatial
    from relax_passes.layer_reuse import reuses_layers

    policy = policy or current_policy()
    if policy.layers == "token_parallel":  # a chunk per SLR the design may use
        from ..devices import get_device

        return partition_for_vitis_spatial(mod, layers="token_parallel", chunks=policy.slrs or get_device(device).slrs)
    if policy.layers != "auto":
        return partition_for_vitis_spatial(mod, layers=policy.layers)
    reused = partition_for_vitis_spatial(mod, layers="reuse")
    if not reuses_layers(reused):
        return reused
    unrolled = partition_for_vitis_spatial(mod, layers="unroll")
    regions = {id(part): offloaded_regions(part) for part in (reused, unrolled)}
    database = _current_database() if policy.use_database else None
    if database is not None:  # the one that was tuned (tuning tunes what auto chose)
        from .tuner import tuned_layout

        for part in (reused, unrolled):
            if tuned_layout(database, tuning_plan(regions[id(part)], device, host_operators(part), policy)) is not None:
                return part
    if policy.mode != "model" or policy.arrays or policy.lanes or policy.placement:
        return unrolled
    estimates = []
    for part in (reused, unrolled):
        with warnings.catch_warnings():  # the one kept warns again when it is built
            warnings.simplefilter("ignore", DesignOverBudgetWarning)
            # the unrolled layout searches for a split that fits only if the reused one
            # does not fit (GPT2-small's decode step: 75 s of search for a layout 8x slower)
            rescue = part is reused or estimates[0] is None
            estimates.append(choose_layout(regions[id(part)], device, host_operators(part), policy, rescue).estimate)
    fits = [e is not None for e in estimates]
    if fits == [True, True]:
        return reused if estimates[0].prefill_cycles <= estimates[1].prefill_cycles else unrolled
    return unrolled if fits == [False, True] else reused


BLOCKS_PLANNED = 2  # token blocks planned and allocated in their blocks (the best on the whole plan)


def allocate_planned(funcs, device: str, host_ops=(), slrs: int | None = None, placement=None,
                     budget: float = DEFAULT_BUDGET, rows: int | None = None, channels: int | None = None,
                     search: bool = True, rescue: bool = False):
    """The allocation for a build, on the plan the build will print: the token blocks are
    ranked on the whole-tensor plan (or the block is ``rows``), then the design is planned
    in the best ``BLOCKS_PLANNED`` of them -- a blocked stage's loop nests are not quite a
    slice of the whole one's (a 16-token epilogue becomes two 8-token ones) -- and
    allocated again for them; the faster wins, so the built design's estimate equals this
    allocation's. (With weights striped over channels, blocks of 16 and 32 came within a
    few per cent on GPT2-small's whole plan, and the first was 8 % slower in its blocks.)
    Then, unless ``placement`` is given or ``search`` is off, the SLR cuts of every kernel
    (over ``slrs`` SLRs, default all) are chosen with the model
    (:mod:`tvm_spatial.estimate.placement`); ``Allocation.placement`` says where each
    process went, for the codegen to print. With ``rescue``, when the work-balanced split
    does not fit, the same search looks for one that does before giving up (the layout
    asks for it only when no count of SLRs fits balanced: it costs a search)."""
    try:
        alloc, work = _allocate_split(funcs, device, host_ops, slrs, placement, budget, rows, channels)
    except ResourceBudgetError:
        # the work-balanced split is over budget: another split of the same SLRs may not be
        rescued = None if placement or not rescue else _fitting_split(funcs, device, host_ops, slrs, budget, channels)
        if rescued is None:
            raise
        alloc, work = _allocate_split(funcs, device, host_ops, slrs, rescued, budget, rows, channels)
    if placement or not search:
        return alloc
    return _with_searched_placement(alloc, work, device, slrs, budget, channels)


def _fitting_split(funcs, device: str, host_ops, slrs, budget, channels) -> dict | None:
    """Process name -> SLR of a split whose allocation fits, searched with the model
    (:func:`search_placement`) from the work-balanced split that does not; None when none
    is found (or on one SLR). Only a build that would otherwise not fit pays for it."""
    from codegen_hls.kernel import plan_design

    from ..devices import get_device
    from ..estimate import allocate_for_codegen, design_work
    from ..estimate.placement import search_placement

    dev = get_device(device)
    count = slrs or dev.slrs
    if count < 2:
        return None
    work = design_work(plan_design(funcs, device, host_ops, slrs=slrs))
    memo: dict = {}

    def score(candidate):
        return allocate_for_codegen(candidate, dev, budget=budget, max_channels=channels, memo=memo).estimate.prefill_cycles

    chosen = search_placement(work, count, score)
    try:
        score(work.with_placement(chosen))
    except ResourceBudgetError:
        return None
    return chosen


def _with_searched_placement(alloc, work, device: str, slrs, budget, channels):
    """``alloc`` (made on the planned ``work``) with its SLR cuts chosen by the model, if
    :func:`search_placement` finds a faster placement. No new plan is needed: a plan on
    another placement differs only in each process's SLR, which ``work.with_placement``
    sets (``tests/test_placement.py`` builds the design and compares its estimate)."""
    from ..devices import get_device
    from ..estimate import allocate_for_codegen
    from ..estimate.placement import search_placement

    dev = get_device(device)
    count = slrs or dev.slrs
    if count < 2:
        return alloc
    block = alloc.config.block
    memo: dict = {}  # the candidates are the same processes on other SLRs

    def allocated(candidate):
        return allocate_for_codegen(candidate, dev, budget=budget, blocks=(block,), max_channels=channels, memo=memo)

    chosen = search_placement(work, count, lambda candidate: allocated(candidate).estimate.prefill_cycles)
    if chosen == {p.name: p.slr for p in work.processes}:
        return alloc
    moved = allocated(work.with_placement(chosen))
    return moved if moved.estimate.prefill_cycles < alloc.estimate.prefill_cycles else alloc


def _allocate_split(funcs, device: str, host_ops, slrs, placement, budget, rows, channels):
    """:func:`allocate_planned` on the work-balanced SLR split (or ``placement``): (the
    allocation, the planned work it was made on)."""
    from codegen_hls.kernel import plan_design

    from ..devices import get_device
    from ..estimate import allocate_for_codegen, design_work
    from ..estimate.allocation import codegen_blocks

    dev = get_device(device)
    work = design_work(plan_design(funcs, device, host_ops, slrs=slrs, placement=placement))
    if rows and rows >= work.tokens:  # asked for blocks as long as the sequence: whole tensors
        return allocate_for_codegen(work, dev, budget=budget, blocks=(None,), max_channels=channels), work
    if rows:
        blocked = design_work(plan_design(funcs, device, host_ops, slrs=slrs, placement=placement, rows=rows))
        return allocate_for_codegen(blocked, dev, budget=budget, max_channels=channels), blocked
    # rank the blocks on the whole-tensor plan, then plan the best two in their blocks: the
    # whole plan's nests only approximate a blocked one's, and two blocks can be close
    ranked, failure = [], None
    for block in codegen_blocks(work.tokens):
        try:
            ranked.append(allocate_for_codegen(work, dev, budget=budget, blocks=(block,), max_channels=channels))
        except ResourceBudgetError as err:
            failure = failure or err
    if not ranked:
        raise failure
    ranked.sort(key=lambda a: a.estimate.prefill_cycles)
    # whether the budget held any block back (Allocation.resource_bound), over all of them
    bound = failure is not None or any(a.resource_bound for a in ranked)
    best = None
    for candidate in ranked[:BLOCKS_PLANNED]:
        if candidate.config.block is None:
            found, planned = candidate, work
        else:
            planned = design_work(plan_design(funcs, device, host_ops, slrs=slrs, placement=placement,
                                              rows=candidate.config.block))
            try:
                found = allocate_for_codegen(planned, dev, budget=budget, max_channels=channels)
            except ResourceBudgetError:
                bound = True
                continue  # the blocked plan splits the SLRs a little otherwise, and no longer fits
        bound = bound or found.resource_bound
        if best is None or found.estimate.prefill_cycles < best[0].estimate.prefill_cycles:
            best = found, planned
    if best is None:  # none of them fits in its blocks: whole tensors do
        return allocate_for_codegen(work, dev, budget=budget, blocks=(None,), max_channels=channels), work
    return replace(best[0], resource_bound=bound), best[1]


def choose_arrays(funcs, device: str, host_ops, policy: AllocationPolicy) -> dict | None:
    """Process name -> (rows, cols) of each matmul's MAC array and lanes (an int) of each
    other process, for the codegen, per ``policy`` (None: the library's defaults)."""
    return choose_layout(funcs, device, host_ops, policy).arrays


def _current_database():
    """The meta-schedule database of an enclosing ``with database:``, if any (without
    importing meta-schedule when no one has)."""
    import sys

    module = sys.modules.get("tvm.s_tir.meta_schedule.database.database")
    if module is None:
        return None
    return module.Database.current()
