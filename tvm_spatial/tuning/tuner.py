"""Tuning a design's MAC arrays and lanes with ``tvm.s_tir.meta_schedule``, scored by the analytical model.

How it maps onto meta-schedule:

* **workload** -- one TIR PrimFunc per design (:func:`design_workload`): one sblock per
  matmul process, named after the process, with its ``batch x m x n x k`` iteration
  space and operand types, and one per other process whose lanes can grow (its elements);
  the device is a function attribute. Its structural hash is the
  database key, so ``relax.build`` under ``with database:`` finds the records of exactly
  this design on this device.
* **search space** -- a ``ScheduleFn`` (:class:`ArraySpace`): for every process,
  ``sample_categorical`` over the array sides the codegen realizes
  (``tvm_spatial.estimate.allocation.realizable_array``) picks rows and cols, or over the
  lanes it realizes (``realizable_lanes``), which are annotated on the process's sblock.
  A kernel spread over several SLRs also has an sblock whose annotations are its SLR cuts
  (where in its chain of processes the next SLR begins): the default split is the
  build's (``tvm_spatial.estimate.placement``: where the greedy allocation is fastest),
  and moving a cut (then re-running the greedy allocation on the new placement) is the
  other kind of move. One more sblock records the token block the
  row-wise processes stream in, fixed within one tuning session (its plan's loop nests
  are those of that block): the greedy allocation's, and with ``block_plans`` one more
  session per token block below the build's floor of 8 (:func:`tuning_blocks`), the
  trials shared; the workload does not depend on the block, so all records meet in one
  database and the best wins (a short sequence's pipeline is mostly fill, which smaller
  blocks shorten: the BERT fixture). The distribution is centred on the best design
  found so far (first: the model's greedy allocation), so ``ReplayFunc`` performs a local
  random search around it; each record's trace replays its exact decisions.
* **builder** -- nothing to compile: :class:`ArrayBuilder` reads the sampled arrays, lanes and
  cuts from the scheduled workload and hands them on as the artifact (JSON text, not a path).
* **runner** -- :class:`ModelRunner` scores the arrays and lanes with the analytical model
  (:func:`tvm_spatial.estimate.estimate_work`, the same pure function as the allocation):
  ``run_secs`` is the estimated prefill latency; a design over the per-SLR budget fails
  with a message naming the resource.
* **database** -- a ``JSONDatabase`` in the work directory. ``relax.build`` applies its best
  record (arrays, lanes and placement) when built inside ``with database:`` (:func:`tuned_layout`).

The correctness of the best design in emulation is checked by the scripts
(``contrib/tune_bert.py``) and tests: the tuned build runs against onnxruntime.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from dataclasses import dataclass, field, replace

import tvm
from tvm import te
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.builder import BuilderInput, BuilderResult, PyBuilder
from tvm.s_tir.meta_schedule.runner import PyRunner, PyRunnerFuture, RunnerFuture, RunnerInput, RunnerResult

from ..devices import RESOURCES, get_device
from ..estimate import DEFAULT_BUDGET, ModelConfig, Parallelism, allocate_for_codegen, design_work, estimate_work
from ..estimate.allocation import CODEGEN_MAX_LANES, realizable_array, realizable_lanes
from ..target import tag_name

ROWS_KEY = "tvm_spatial.array_rows"
COLS_KEY = "tvm_spatial.array_cols"
LANES_KEY = "tvm_spatial.lanes"
# HBM channels a matmul's weight is striped over: not searched; the greedy allocation's, as
# many as the sampled array realizes (realizable_channels), recorded so a record replays
CHANNELS_KEY = "tvm_spatial.weight_channels"
BLOCK_KEY = "tvm_spatial.token_block"  # tokens per block of the row-wise processes (0: whole tensors)
BLOCK_SBLOCK = "design__token_block"
CUT_KEY = "tvm_spatial.slr_cut"  # + the cut's index: where the kernel's next SLR segment begins
CUTS_SUFFIX = "__slr_cuts"  # the sblock of a kernel's SLR cuts is named after the kernel
MAX_CUT_SHIFT = 4  # processes a cut moves at most in one candidate
MAX_SHRINKS = 6  # sides a grow move may shrink on its SLR to fit again
DEVICE_ATTR = "tvm_spatial.device"


# ---- the workload ---------------------------------------------------------------------
def _matmul_processes(work):
    return sorted((p for p in work.processes if p.matmul is not None), key=lambda p: p.name)


def _lane_choices(p) -> list[int]:
    """The lanes the codegen realizes for a non-matmul process (requests 1, 2, 4, ...)."""
    limit = max(1, min(p.elements, CODEGEN_MAX_LANES))
    found, want = set(), 1
    while True:
        found.add(realizable_lanes(p, min(want, limit)))
        if want >= limit:
            return sorted(found)
        want *= 2


def _lane_processes(work):
    """The other processes whose lanes can grow."""
    return sorted((p for p in work.processes if p.matmul is None and len(_lane_choices(p)) > 1),
                  key=lambda p: p.name)


def design_workload(design) -> tvm.IRModule:
    """The meta-schedule workload of a design: one sblock per matmul process and per other
    process whose lanes can grow (see module doc)."""
    work = design_work(design)
    tensors = []
    for p in _matmul_processes(work):
        mm = p.matmul
        acc = "float32" if mm.a_dtype.startswith("float") or mm.b_dtype.startswith("float") else "int32"
        a = te.placeholder((mm.batch, mm.m, mm.k), mm.a_dtype, name=f"{p.name}_a")
        b = te.placeholder((mm.batch, mm.k, mm.n), mm.b_dtype, name=f"{p.name}_b")
        tensors += [a, b, _matmul(a, b, mm.k, acc, p.name)]
    for p in _lane_processes(work):
        x = te.placeholder((p.elements,), p.dtype or "float32", name=f"{p.name}_x")
        tensors += [x, _copy(x, p.name)]
    x = te.placeholder((1,), "int32", name="design_tokens")
    tensors += [x, _copy(x, BLOCK_SBLOCK)]
    chains = work.kernel_processes()
    for kernel in sorted(work.cuts()):
        x = te.placeholder((len(chains[kernel]),), "int32", name=f"{kernel}_chain")
        tensors += [x, _copy(x, kernel + CUTS_SUFFIX)]
    func = te.create_prim_func(tensors).with_attr(DEVICE_ATTR, design.device).with_attr("global_symbol", "main")
    return tvm.IRModule({"main": func})


def _copy(x, name: str):
    return te.compute(x.shape, lambda i: x[i], name=name)


def _matmul(a, b, k: int, acc: str, name: str):
    r = te.reduce_axis((0, k), name="k")
    return te.compute(
        (a.shape[0], a.shape[1], b.shape[2]),
        lambda x, i, j: te.sum(a[x, i, r].astype(acc) * b[x, r, j].astype(acc), axis=r),
        name=name,
    )


def arrays_of(mod: tvm.IRModule) -> dict[str, tuple[int, int]]:
    """Process name -> (rows, cols) annotated on a scheduled workload's sblocks."""
    return {n: v for n, v in table_of(mod).items() if isinstance(v, tuple)}


def table_of(mod: tvm.IRModule) -> dict:
    """Process name -> (rows, cols[, channels]), or lanes (int), annotated on a scheduled
    workload's sblocks: what ``codegen_hls.kernel.build_design(arrays=...)`` takes."""
    from tvm import s_tir

    found = {}

    def visit(node):
        if isinstance(node, s_tir.SBlock) and ROWS_KEY in node.annotations:
            found[node.name_hint] = (int(node.annotations[ROWS_KEY]), int(node.annotations[COLS_KEY]))
            channels = int(node.annotations.get(CHANNELS_KEY, 1))
            if channels > 1:
                found[node.name_hint] += (channels,)
        elif isinstance(node, s_tir.SBlock) and LANES_KEY in node.annotations:
            found[node.name_hint] = int(node.annotations[LANES_KEY])

    import tvm_ffi

    tvm_ffi.structural_walk(mod["main"].body, visit)
    return found


def rows_of(mod: tvm.IRModule) -> int | None:
    """The token block annotated on a scheduled workload (None: whole tensors)."""
    import tvm_ffi
    from tvm import s_tir

    found = []

    def visit(node):
        if isinstance(node, s_tir.SBlock) and node.name_hint == BLOCK_SBLOCK and BLOCK_KEY in node.annotations:
            found.append(int(node.annotations[BLOCK_KEY]))

    tvm_ffi.structural_walk(mod["main"].body, visit)
    return (found[0] if found else 0) or None


def cuts_of(mod: tvm.IRModule) -> dict[str, tuple[int, ...]]:
    """Kernel -> its SLR cuts annotated on a scheduled workload (kernels spread over one
    SLR have none)."""
    import tvm_ffi
    from tvm import s_tir

    found = {}

    def visit(node):
        if isinstance(node, s_tir.SBlock) and node.name_hint.endswith(CUTS_SUFFIX):
            keys = sorted((k for k in node.annotations if str(k).startswith(CUT_KEY)), key=lambda k: int(k[len(CUT_KEY):]))
            if keys:
                found[node.name_hint[: -len(CUTS_SUFFIX)]] = tuple(int(node.annotations[k]) for k in keys)

    tvm_ffi.structural_walk(mod["main"].body, visit)
    return found


# ---- the search space -----------------------------------------------------------------
def _sides(mm, axis: str, limit: int) -> list[int]:
    """The array sides along ``axis`` the codegen realizes (requests 1, 2, 4, ... and ``limit``)."""
    sides = set()
    want = 1
    while True:
        req = min(want, limit)
        rows, cols = realizable_array(mm, req if axis == "rows" else 1, req if axis == "cols" else 1)
        sides.add(rows if axis == "rows" else cols)
        if req >= limit:
            break
        want *= 2
    return sorted(sides)


@dataclass
class ArraySpace:
    """The space: every matmul process's array rows x cols (the sides the codegen realizes)
    and every other process's lanes (one side, the lanes it realizes).

    A candidate is the ``centre`` (the best design so far) moved one of two ways, chosen
    by a sampled coin (``cut_share`` for the second) when the design has SLR cuts:

    * one side grown by a step, then sides of processes on the same SLR shrunk by a step
      each (up to ``MAX_SHRINKS``) until the SLR's DSPs fit its budget again: a doubled
      attention's lanes cost what several linear layers' halved arrays free. Which sides
      move is sampled with probabilities from the model: growing in proportion to the
      cycles a DSP saves, shrinking in proportion to the DSPs a lost cycle frees (plus a
      floor, so that every move stays possible);
    * one SLR cut of one kernel moved by up to ``MAX_CUT_SHIFT`` processes, the kernel's
      other cuts each then moved to their best place within as many processes, and every
      side re-chosen by the greedy allocation for the new placement (why: the work-balanced
      split weighs a GELU's iterations like a matmul's, while the SLRs' budgets and the
      arrays' discrete sizes decide what a process can get; and the room a process leaves
      on one SLR is often used only by moving the next cut too).

    Every decision is a ``sample_categorical`` in the trace, so a record replays exactly."""

    work: object  # DesignWork
    device: object
    centre: dict  # process name -> (rows, cols) or lanes, updated by the runner
    exact: bool = False  # take the centre itself (decisions fixed), for the baseline record
    floor: float = 0.05  # share of the proposal spread uniformly over all moves
    cuts: dict = field(default_factory=dict)  # kernel -> its SLR cuts at the centre (runner updates)
    budget: float = DEFAULT_BUDGET
    rows: int | None = None  # the token block (the greedy allocation's; fixed while tuning)
    cut_share: float = 0.5  # probability of a cut move, when there are cuts
    max_channels: int | None = None  # most ports a weight is striped over (allocation(channels=N))

    def __post_init__(self):
        self.cuts = dict(self.cuts or self.work.cuts())
        self.chain_length = {k: len(v) for k, v in self.work.kernel_processes().items()}
        self._greedy: dict = {}  # cuts -> the greedy allocation's table for them (or None)
        self.choices = {}
        self.procs = {p.name: p for p in _matmul_processes(self.work)}
        self.centre_channels = {n: v[2] for n, v in self.centre.items() if isinstance(v, tuple) and len(v) > 2}
        for p in self.procs.values():
            mm = p.matmul
            if self.rows and p.separable and self.rows < mm.m:  # one block of rows at a time
                mm = replace(mm, m=self.rows)
            self.choices[p.name] = (_sides(mm, "rows", min(mm.m, p.tokens)), _sides(mm, "cols", mm.n))
        for p in _lane_processes(self.work):
            self.procs[p.name] = p
            self.choices[p.name] = (_lane_choices(p),)

    def _index(self, name: str, axis: int) -> int:
        sides = self.choices[name][axis]
        value = self.centre.get(name, sides[0])
        value = value if isinstance(value, int) else value[axis]
        return min(range(len(sides)), key=lambda i: abs(sides[i] - value))

    def _par(self, values, name: str) -> Parallelism:
        if len(values) != 2:
            return Parallelism(lanes=values[0])
        return Parallelism(rows=values[0], cols=values[1], channels=self._channels(name, values))

    def _channels(self, name: str, sides) -> int:
        """The weight channels of ``name`` at array ``sides``: the centre's, as realized."""
        from ..estimate.allocation import realizable_channels

        wanted = self.centre_channels.get(name, 1)
        return realizable_channels(self.procs[name], Parallelism(rows=sides[0], cols=sides[1], channels=wanted),
                                   self.rows) if wanted > 1 else 1

    def _moves(self, step: int, target: dict | None = None) -> list[tuple[str, int, float]]:
        """(process, axis, merit) of moving each side by ``step`` (+1 grow, -1 shrink) from
        the centre, or from ``target`` (process -> side indices)."""
        from ..estimate.model import process_estimate

        clock = self.device.clock_mhz
        out = []
        for name, p in self.procs.items():
            axes = range(len(self.choices[name]))
            index = (lambda a, name=name: target[name][a]) if target else (lambda a, name=name: self._index(name, a))
            here = [self.choices[name][a][index(a)] for a in axes]
            cur = process_estimate(p, self._par(here, name), self.device, clock, self.rows)
            for axis in axes:
                i = index(axis) + step
                if not 0 <= i < len(self.choices[name][axis]):
                    continue  # no such move
                there = list(here)
                there[axis] = self.choices[name][axis][i]
                new = process_estimate(p, self._par(there, name), self.device, clock, self.rows)
                cycles = cur.block_cycles - new.block_cycles  # saved (grow) or lost (shrink, < 0)
                dsp = new.resources.dsp - cur.resources.dsp  # added (grow) or freed (shrink, < 0)
                merit = max(0.0, cycles) / max(1.0, dsp) if step > 0 else -dsp / max(1.0, -cycles)
                out.append((name, axis, merit))
        return out

    def _slr_dsp(self, target: dict, slr_of: dict, slr: int) -> float:
        """DSPs of the tuned processes on ``slr`` at the ``target`` sides."""
        from ..estimate.model import process_estimate

        total = 0.0
        for name, p in self.procs.items():
            if slr_of[name] == slr:
                par = self._par([self.choices[name][a][target[name][a]] for a in range(len(self.choices[name]))], name)
                total += process_estimate(p, par, self.device, self.device.clock_mhz, self.rows).resources.dsp
        return total

    def _dsp_cap(self, slr: int) -> float:
        return self.device.slr(slr).dsp * self.budget

    def _sample(self, sch, moves) -> tuple[str, int] | None:
        possible = [m for m in moves if m[2] > 0 or self.floor > 0]
        if not possible or not sum(m[2] for m in possible) + self.floor:
            return None
        total = sum(m[2] for m in possible) or 1.0
        probs = [(1 - self.floor) * m[2] / total + self.floor / len(possible) for m in possible]
        probs = [p / sum(probs) for p in probs]
        pick = int(sch.get(sch.sample_categorical(list(range(len(possible))), probs)))
        return possible[pick][0], possible[pick][1]

    def _greedy_table(self, cuts: dict) -> dict | None:
        """The greedy allocation's arrays and lanes with the processes placed by ``cuts``
        (None: even the smallest design does not fit that placement)."""
        return self._greedy_allocation(cuts)[0]

    def _greedy_allocation(self, cuts: dict) -> tuple[dict | None, float]:
        """(the greedy allocation's table, its estimated prefill cycles) for ``cuts``
        ((None, inf): no fit)."""
        from ..errors import ResourceBudgetError

        key = tuple(sorted(cuts.items()))
        if key not in self._greedy:
            work = self.work.with_placement(self.work.placement_for_cuts(cuts))
            try:
                alloc = allocate_for_codegen(work, self.device, budget=self.budget, blocks=(self.rows,),
                                             max_channels=self.max_channels)
                self._greedy[key] = (alloc.codegen_table(), alloc.estimate.prefill_cycles)
            except ResourceBudgetError:
                self._greedy[key] = (None, float("inf"))
        return self._greedy[key]

    def _cut_move(self, sch) -> dict | None:
        """The centre's cuts with one cut moved (sampled), or None if the move leaves the chain."""
        slots = [(k, j) for k in sorted(self.cuts) for j in range(len(self.cuts[k]))]
        kernel, j = slots[int(sch.get(sch.sample_categorical(list(range(len(slots))), [1 / len(slots)] * len(slots))))]
        shifts = [d for d in range(-MAX_CUT_SHIFT, MAX_CUT_SHIFT + 1) if d]
        shift = shifts[int(sch.get(sch.sample_categorical(list(range(len(shifts))), [1 / len(shifts)] * len(shifts))))]
        moved = list(self.cuts[kernel])
        moved[j] += shift
        if not self._valid(kernel, moved):
            return None
        # the kernel's other cuts follow, each to its best place nearby (one at a time): a
        # process moving to the next SLR can make room there that only a second cut uses
        for i in range(len(moved)):
            if i == j:
                continue
            options = []
            for d in range(-MAX_CUT_SHIFT, MAX_CUT_SHIFT + 1):
                trial = list(moved)
                trial[i] += d
                if self._valid(kernel, trial):
                    options.append((self._greedy_allocation({**self.cuts, kernel: tuple(trial)})[1], abs(d), trial))
            if options:
                moved = min(options)[2]
        return {**self.cuts, kernel: tuple(moved)}

    def _valid(self, kernel: str, cuts: list) -> bool:
        return cuts == sorted(set(cuts)) and all(0 < c < self.chain_length[kernel] for c in cuts)

    def __call__(self, sch) -> None:
        target = {name: [self._index(name, a) for a in range(len(sides))] for name, sides in self.choices.items()}
        cuts = dict(self.cuts)
        moved = None
        if not self.exact and self.cuts and int(sch.get(sch.sample_categorical([0, 1], [1 - self.cut_share,
                                                                                      self.cut_share]))):
            moved = self._cut_move(sch)
            table = self._greedy_table(moved) if moved is not None else None
            if table is None:
                moved = None  # off the chain, or no fit there: an array move instead
            else:
                cuts = moved
                for name, sides in self.choices.items():
                    value = table.get(name, sides[0][0])
                    values = value if isinstance(value, tuple) else (value,)
                    target[name] = [min(range(len(sides[a])), key=lambda i, a=a: abs(sides[a][i] - values[a]))
                                    for a in range(len(sides))]
        if moved is None and not self.exact and self.choices:
            grow = self._sample(sch, self._moves(+1))
            if grow is not None:
                name, axis = grow
                target[name][axis] = min(len(self.choices[name][axis]) - 1, target[name][axis] + 1)
                placed = self.work.placement_for_cuts(self.cuts) if self.cuts else {}
                slr_of = {n: placed.get(n, p.slr) for n, p in self.procs.items()}
                # then shrink sides on the same SLR (sampled, best merit first in expectation)
                # until it fits again: one grown array can cost what several small ones free
                for _ in range(MAX_SHRINKS):
                    shrink = self._sample(sch, [m for m in self._moves(-1, target)
                                                if slr_of[m[0]] == slr_of[name] and m[0] != name])
                    if shrink is None:
                        break
                    other, axis2 = shrink
                    target[other][axis2] -= 1
                    if self._slr_dsp(target, slr_of, slr_of[name]) <= self._dsp_cap(slr_of[name]):
                        break
        for name, choices in self.choices.items():
            block = sch.get_sblock(name)
            keys = (ROWS_KEY, COLS_KEY) if len(choices) == 2 else (LANES_KEY,)
            for axis, (key, sides) in enumerate(zip(keys, choices)):
                probs = [0.0] * len(sides)
                probs[target[name][axis]] = 1.0
                rv = sch.sample_categorical(sides, probs, decision=target[name][axis])
                sch.annotate(block, key, rv)
            if len(choices) == 2 and self.centre_channels.get(name, 1) > 1:
                channels = self._channels(name, [choices[a][target[name][a]] for a in range(2)])
                sch.annotate(block, CHANNELS_KEY, sch.sample_categorical([channels], [1.0], decision=0))
        sch.annotate(sch.get_sblock(BLOCK_SBLOCK), BLOCK_KEY, sch.sample_categorical([self.rows or 0], [1.0], decision=0))
        for kernel in sorted(cuts):
            block = sch.get_sblock(kernel + CUTS_SUFFIX)
            positions = list(range(1, self.chain_length[kernel]))
            for j, cut in enumerate(cuts[kernel]):
                probs = [0.0] * len(positions)
                probs[cut - 1] = 1.0
                sch.annotate(block, f"{CUT_KEY}{j}", sch.sample_categorical(positions, probs, decision=cut - 1))


# ---- builder and runner ---------------------------------------------------------------
@derived_object
class ArrayBuilder(PyBuilder):
    """Nothing is compiled: the artifact is the sampled arrays, lanes and cuts as JSON text."""

    def build(self, build_inputs: list[BuilderInput]) -> list[BuilderResult]:
        out = []
        for item in build_inputs:
            artifact = {"table": sorted(table_of(item.mod).items()), "cuts": sorted(cuts_of(item.mod).items()),
                        "rows": rows_of(item.mod)}
            out.append(BuilderResult(json.dumps(artifact), None))
        return out


@derived_object
class _Done(PyRunnerFuture):
    def __init__(self, result: RunnerResult) -> None:
        self._result = result

    def done(self) -> bool:
        return True

    def result(self) -> RunnerResult:
        return self._result


def score(work, device, arrays: dict, budget: float = DEFAULT_BUDGET, clock_mhz=None, cuts: dict | None = None,
          rows: int | None = None):
    """(estimate, error message or None) of a design with these arrays -- process name ->
    (rows, cols[, weight channels]), or lanes (an int) of a non-matmul process (default one) -- these SLR
    cuts (kernel -> cut positions; default: the design's own) and this token block
    (None: whole tensors): what the runner does."""
    if cuts:
        work = work.with_placement(work.placement_for_cuts(cuts))
    table = {n: Parallelism(lanes=v) if isinstance(v, int)
             else Parallelism(rows=v[0], cols=v[1], channels=v[2] if len(v) > 2 else 1)
             for n, v in arrays.items()}
    est = estimate_work(work, device, ModelConfig(block=rows, clock_mhz=clock_mhz).with_parallelism(table))
    for i, util in enumerate(est.slr_utilization()):
        for r in RESOURCES:
            if util[r] > budget + 1e-9:
                return est, f"SLR {i} {r} at {util[r]:.0%} is over the {budget:.0%} budget"
    return est, None


@derived_object
class ModelRunner(PyRunner):
    """Scores each candidate with the analytical model: run_secs = estimated prefill latency."""

    def __init__(self, work, device, space: ArraySpace, budget: float = DEFAULT_BUDGET, progress=None) -> None:
        super().__init__()
        self.work, self.device, self.space, self.budget = work, device, space, budget
        self.progress = progress
        self.best = math.inf
        self.centre_key = (math.inf, math.inf)
        self.slack = 0.01
        self.trials = self.failed = 0

    def run(self, runner_inputs: list[RunnerInput]) -> list[RunnerFuture]:
        futures = []
        for item in runner_inputs:
            artifact = json.loads(item.artifact_path)
            arrays = {n: tuple(v) if isinstance(v, list) else int(v) for n, v in artifact["table"]}
            cuts = {k: tuple(v) for k, v in artifact["cuts"]}
            est, error = score(self.work, self.device, arrays, self.budget, cuts=cuts, rows=artifact["rows"])
            self.trials += 1
            if error is not None:
                self.failed += 1
                futures.append(_Done(RunnerResult(None, error)))
            else:
                secs = est.seconds(est.prefill_cycles)
                # move the search's centre to a faster design, or to one almost as fast as
                # the best (within ``slack``) that uses fewer DSPs: that frees room for the
                # next moves (the database keeps the fastest; this is only where to look)
                c_secs, c_dsp = self.centre_key
                self.best = min(self.best, secs)
                if secs < c_secs or (secs <= self.best * (1 + self.slack) and est.total.dsp < c_dsp):
                    self.centre_key = (secs, est.total.dsp)
                    self.space.centre.clear()
                    self.space.centre.update(arrays)
                    self.space.cuts = cuts or self.space.cuts
                futures.append(_Done(RunnerResult([secs], None)))
            if self.progress is not None:
                self.progress(self.best, self.trials, self.failed)
        return futures


# ---- tuning and applying --------------------------------------------------------------
def _target(device_key: str) -> tvm.target.Target:
    config = dict(tvm.target.Target(tag_name(device_key)).export())
    config["num-cores"] = 1
    return tvm.target.Target(config)


@dataclass(frozen=True)
class TuneResult:
    database: object  # ms.database.JSONDatabase
    workload: tvm.IRModule
    baseline_seconds: float  # the model's greedy allocation (what relax.build does untuned)
    best_seconds: float
    best_arrays: dict  # process name -> (rows, cols) of each matmul's array
    trials: int
    failed: int
    best_lanes: dict = field(default_factory=dict)  # process name -> lanes of the others
    best_cuts: dict = field(default_factory=dict)  # kernel -> its SLR cuts (kernels over several SLRs)
    baseline_cuts: dict = field(default_factory=dict)  # the plan's (the build's split)
    rows: int | None = None  # tokens per block of the row-wise processes (the best record's)


def tune_design(design, work_dir: str, *, max_trials: int = 64, trials_per_iter: int = 16,
                budget: float = DEFAULT_BUDGET, seed: int = 1, progress=None,
                max_channels: int | None = None, block_plans: dict | None = None) -> TuneResult:
    """Tune the MAC arrays, lanes and SLR cuts of ``design`` (``codegen_hls.kernel.plan_design``
    or a built design) within ``budget`` of every per-SLR resource; records go to a JSON
    database in ``work_dir``. The greedy allocation is committed first, so tuning never ends worse.
    ``max_channels``: the most ports a weight is striped over (default: the allocation
    policy's, ``tvm_spatial.allocation(channels=N)``, else the codegen's cap).
    ``block_plans``: token block -> the same design planned in that block
    (:func:`block_plans`); each is tuned too, the trials shared evenly, its records in the
    same database (the workload does not depend on the block), so the best of all wins."""
    from .policy import current_policy

    if max_channels is None:
        max_channels = current_policy().channels or None
    device = get_device(design.device)
    workload = design_workload(design)
    database = ms.database.JSONDatabase(work_dir=work_dir, module_equality="structural")
    # the design in its own block (the greedy allocation's choice), then each other block
    sessions = [(None, design), *sorted((block_plans or {}).items(), key=lambda kv: -kv[0])]
    works = {}
    trials = failed = 0
    baseline_secs = None
    for index, (block, plan) in enumerate(sessions):
        share = max_trials // len(sessions) + (max_trials % len(sessions) if index == 0 else 0)

        def reported(best, done, over, before=(trials, failed)):
            if progress is not None:
                progress(best, before[0] + done, before[1] + over)

        work, secs, runner = _tune_block(plan, workload, database, device, work_dir, share, trials_per_iter,
                                         budget, seed + 2 * index, reported, max_channels,
                                         None if block is None else (block,))
        works[runner.space.rows] = work
        trials, failed = trials + runner.trials, failed + runner.failed
        baseline_secs = secs if baseline_secs is None else baseline_secs
    best, best_cuts, best_rows = _best_decisions(database, workload)
    first = next(iter(works.values()))
    best_est, _ = score(works.get(best_rows, first), device, best, budget, cuts=best_cuts, rows=best_rows)
    arrays = {n: v for n, v in best.items() if isinstance(v, tuple)}
    lanes = {n: v for n, v in best.items() if isinstance(v, int)}
    return TuneResult(database, workload, baseline_secs, best_est.seconds(best_est.prefill_cycles), arrays,
                      trials, failed, lanes, best_cuts, first.cuts(), best_rows)


def _tune_block(plan, workload, database, device, work_dir: str, max_trials: int, trials_per_iter: int,
                budget: float, seed: int, progress, max_channels, blocks):
    """One tuning session on ``plan``: its greedy allocation (in ``blocks``, None: the
    build's choice) committed as the baseline record, then the search. (the plan's work,
    baseline seconds, the runner)."""
    work = design_work(plan)
    target = _target(device.key)
    baseline = allocate_for_codegen(work, device, budget=budget, max_channels=max_channels, blocks=blocks)
    centre, rows = baseline.codegen_table(), baseline.config.block

    # the baseline record: the greedy allocation's decisions, exactly
    sch = tvm.s_tir.Schedule(workload, seed=seed + 1)
    ArraySpace(work, device, dict(centre), exact=True, budget=budget, rows=rows, max_channels=max_channels)(sch)
    base_est, error = score(work, device, table_of(sch.mod), budget, cuts=cuts_of(sch.mod), rows=rows_of(sch.mod))
    if error is not None:  # cannot happen for the allocation itself; refuse loudly if it does
        raise AssertionError(f"the allocation does not fit: {error}")
    base_secs = base_est.seconds(base_est.prefill_cycles)
    entry = database.commit_workload(workload)
    database.commit_tuning_record(ms.database.TuningRecord(
        sch.trace, entry, [base_secs], target, ms.arg_info.ArgInfo.from_prim_func(workload["main"])))

    space = ArraySpace(work, device, dict(centre), budget=budget, rows=rows, max_channels=max_channels)
    runner = ModelRunner(work, device, space, budget, progress)
    runner.best, runner.centre_key = base_secs, (base_secs, base_est.total.dsp)
    with _unnamed_log_handlers_detached():
        ms.tir_integration.tune_tir(
            workload, target, work_dir, max_trials,
            max_trials_per_task=max_trials, num_trials_per_iter=trials_per_iter,
            builder=ArrayBuilder(), runner=runner, database=database, cost_model="random",
            measure_callbacks=[ms.measure_callback.AddToDatabase()],
            task_scheduler="round-robin",
            space=ms.space_generator.ScheduleFn(space, sch_rules=[], postprocs=[], mutator_probs={}),
            strategy=ms.search_strategy.ReplayFunc(), seed=seed, num_tuning_cores=1,
        )
    return work, base_secs, runner


@contextlib.contextmanager
def _unnamed_log_handlers_detached():
    """Meta-schedule's logger without its unnamed handlers while tuning. Why: TVM 0.27's
    ``meta_schedule.logging.create_loggers`` lists that logger's handlers by name and
    formats each name, so an unnamed one (pytest's log capture, a user's own) makes a
    second tuning run in the process fail with an AttributeError."""
    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    unnamed = [h for h in logger.handlers if h.get_name() is None]
    for handler in unnamed:
        logger.removeHandler(handler)
    try:
        yield
    finally:
        for handler in unnamed:
            logger.addHandler(handler)


def _best_decisions(database, workload):
    """(arrays and lanes, SLR cuts, token block) of the best record of ``workload`` in
    ``database`` (all None without one)."""
    if not database.has_workload(workload):
        return None, None, None
    records = database.get_top_k(database.commit_workload(workload), 1)
    if not records:
        return None, None, None
    sch = tvm.s_tir.Schedule(workload)
    records[0].trace.apply_to_schedule(sch, remove_postproc=False)
    return table_of(sch.mod), cuts_of(sch.mod), rows_of(sch.mod)


def tuned_arrays(database, design) -> dict | None:
    """The arrays of the best record of ``design``'s workload in ``database``, else None."""
    table = tuned_table(database, design)
    return None if table is None else {n: v for n, v in table.items() if isinstance(v, tuple)}


def tuned_table(database, design) -> dict | None:
    """The arrays and lanes of the best record of ``design``'s workload in ``database``
    (what ``build_design(arrays=...)`` takes), else None."""
    return _best_decisions(database, design_workload(design))[0]


def tuned_layout(database, design) -> tuple[dict, dict, int | None] | None:
    """(arrays and lanes, placement: process name -> SLR, token block) of the best record
    of ``design``'s workload in ``database`` (what ``build_design(arrays=..., placement=...,
    rows=...)`` takes), else None."""
    table, cuts, rows = _best_decisions(database, design_workload(design))
    if table is None:
        return None
    return table, design_work(design).placement_for_cuts(cuts) if cuts else {}, rows


__all__ = ["ArrayBuilder", "ArraySpace", "ModelRunner", "TUNING_MIN_ROWS", "TuneResult", "block_plans", "cuts_of",
           "design_workload", "plan_module", "rows_of", "score", "table_of", "tune_design", "tuned_arrays",
           "tuned_layout", "tuned_table", "tuning_blocks"]


def plan_module(mod: tvm.IRModule, device: str = "u280"):
    """(partitioned module, planned design) of a Relax module for ``vitis_spatial``: what
    :func:`tune_design` tunes, without printing or compiling anything -- spread over every
    SLR, in the token blocks the greedy allocation chooses (so its loop nests are those
    the build prints)."""
    from relax_passes import host_operators, offloaded_regions

    from ..pipeline import check_static_shapes
    from .policy import current_policy, partition_for_build, tuning_plan

    check_static_shapes(mod)
    # the partition relax.build would choose without tuned records (layers reused or not)
    policy = replace(current_policy(), use_database=False)
    key = get_device(device).key
    part = partition_for_build(mod, key, policy)
    return part, tuning_plan(offloaded_regions(part), key, host_operators(part), policy, blocked=True)


# Token blocks below the build's floor (``estimate.allocation.CODEGEN_MIN_ROWS``) that
# tuning tries: the build keeps blocks of 8 or more so that emulation stays fast and a MAC
# array has rows to fill; a short sequence's pipeline is mostly fill, which smaller blocks
# shorten, so tuning measures them with the model (the BERT fixture: 8 -> 2 tokens per block).
TUNING_MIN_ROWS = 2


def tuning_blocks(tokens: int, block: int | None) -> tuple[int, ...]:
    """The token blocks :func:`block_plans` plans besides ``block`` (the greedy
    allocation's): powers of two from ``TUNING_MIN_ROWS`` below the build's floor that
    divide ``tokens``; none when the design runs whole tensors or decodes one token."""
    from ..estimate.allocation import CODEGEN_MIN_ROWS

    if block is None or tokens <= 1:
        return ()
    out, rows = [], TUNING_MIN_ROWS
    while rows < min(block, CODEGEN_MIN_ROWS):
        if tokens % rows == 0:
            out.append(rows)
        rows *= 2
    return tuple(out)


def block_plans(part: tvm.IRModule, plan, device: str = "u280") -> dict:
    """Token block -> ``plan``'s design planned in that block (same regions and SLR
    placement), for each of :func:`tuning_blocks`: what ``tune_design(block_plans=...)``
    tunes besides ``plan``."""
    from codegen_hls.kernel import plan_design
    from relax_passes import host_operators, offloaded_regions

    from .policy import current_policy

    work = design_work(plan)
    placement = {p.name: p.slr for k in plan.kernels for p in k.processes}
    key = get_device(device).key
    funcs, host = offloaded_regions(part), host_operators(part)
    slrs = current_policy().slrs or None
    return {b: plan_design(funcs, key, host, slrs=slrs, placement=placement, rows=b)
            for b in tuning_blocks(work.tokens, work.block)}
