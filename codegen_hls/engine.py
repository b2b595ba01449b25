"""One MAC array for the linears of a decode step's layer: consecutive processes merged.

Why: a decode step computes one token, so a layer's linears run one after another (the
output projection, then FFN1, then FFN2), each waiting on the one before. As processes of
their own each needs an array of its own, idle two thirds of the time: GPT2-small's three
held 3,200 DSPs, and none could grow to its weight's rate over the card's channels. Merged
into one process (an "engine"), the linears and the element-wise operators between them
(residual add, layer norm, GELU) run in order in one function, and the linears share one
array: its stage functions are inlined into the process and an ``ALLOCATION`` pragma caps
the multipliers and adders at the array's (UG1399, "pragma HLS allocation": "limits the
number of ... operations ... in the function"), so the scheduler binds every linear, and
the element-wise loops, to the same units. The model counts the linears in series, each
at the array's rate or its weight's, whichever is slower (``tvm_spatial.estimate.model``).

When: a kernel computing one token (a decode design); a run of consecutive processes that
are linears with an off-chip weight or element-wise operators, starting and ending with a
linear, with two linears or more. A prefill design keeps its processes: its linears work
on blocks of tokens at once and overlap one another in the dataflow pipeline.
"""

from __future__ import annotations

ENGINE_OP = "engine"
# the operators an engine may take between its linears: element-wise on one token's row,
# and the reshapes between them (merged before the kernel elides reshapes between
# processes, they are copies inside the engine: a pass over one token's row each)
ENGINE_ELEMENTWISE = frozenset({
    "residual_add", "layer_norm", "rms_norm", "gelu", "gelu_tanh", "silu", "relu", "add", "multiply",
    "reshape", "squeeze", "expand_dims",
})


def engine_runs(procs, is_offchip_linear) -> list[tuple[int, int]]:
    """``[start, end)`` index ranges of ``procs`` to merge: maximal runs of linears (those
    ``is_offchip_linear`` accepts) and ``ENGINE_ELEMENTWISE`` operators, trimmed to start
    and end with a linear, holding at least two linears."""
    runs, start = [], None
    for i, proc in enumerate([*procs, None]):
        member = proc is not None and (is_offchip_linear(proc) or proc.op in ENGINE_ELEMENTWISE)
        if member and start is None:
            start = i
        if not member and start is not None:
            linears = [j for j in range(start, i) if is_offchip_linear(procs[j])]
            if len(linears) >= 2:
                runs.append((linears[0], linears[-1] + 1))
            start = None
    return runs


def merge(run, later, results, proc_type, on_array=lambda p: p.op not in ENGINE_ELEMENTWISE):
    """One process doing the work of ``run`` (consecutive processes, in order): their
    stages in order; as inputs, what they read from outside the run; as outputs, what
    processes after it (``later``) or the region's results (``results``) read of theirs.
    The slots the run produces now name the engine as their producer. The stages of the
    processes ``on_array`` accepts (its linears) go on the array; the others' operators
    are its ``members``."""
    members = {id(p) for p in run}
    off_array = [p for p in run if not on_array(p)]
    engine = proc_type(op=ENGINE_OP, members=tuple(p.op for p in off_array),
                       linear_stages=frozenset(id(st) for p in run if on_array(p) for st in p.stages),
                       member_of={id(st): i for i, p in enumerate(off_array) for st in p.stages})
    produced = {}
    for proc in run:
        for slot in proc.inputs:
            if (slot.producer is None or id(slot.producer) not in members) and not any(slot is s for s in engine.inputs):
                engine.inputs.append(slot)
        engine.stages.extend(proc.stages)
        for slot in proc.outputs:
            produced[id(slot)] = slot
    read_later = {id(s) for p in later for s in p.inputs} | {id(s) for s in results}
    for slot in produced.values():
        names = [slot, *slot.views]
        if any(id(s) in read_later for s in names):
            engine.outputs.append(slot)
    for stage in engine.stages:
        for slot in stage.args:
            if slot.producer is not None and id(slot.producer) in members:
                slot.producer = engine
                for view in slot.views:
                    view.producer = engine
    return engine


def chunk_runs(procs, chunks: int) -> list[list]:
    """The processes of a token-split region (``relax_passes.token_split``) grouped by
    chunk, each group in its order: a chunk's slice of an input (the ``c``-th
    ``strided_slice`` of a region argument sliced once per chunk) starts it, and every
    other process belongs to the latest chunk among its inputs' producers (a later
    chunk's attention reads the earlier chunks' K and V). Empty when the region does not
    start so (nothing to group)."""
    slices: dict[int, list] = {}  # region argument -> the slices of it, in order
    for p in procs:
        if p.op == "strided_slice" and len(p.inputs) == 1 and p.inputs[0].producer is None:
            slices.setdefault(id(p.inputs[0]), []).append(p)
    seeds = [group for group in slices.values() if len(group) == chunks]
    if not seeds:
        return []
    chunk = {id(p): c for group in seeds for c, p in enumerate(group)}
    for proc in procs:
        if id(proc) not in chunk:
            found = [chunk.get(id(s.producer), -1) for s in proc.inputs if s.producer is not None]
            chunk[id(proc)] = max(found, default=0)
    groups: list[list] = [[] for _ in range(chunks)]
    for proc in procs:
        groups[max(0, chunk[id(proc)])].append(proc)
    return groups
