"""One copy of a layer's steps, looped, in a token-parallel engine.

Why: a token-split region's engine (``_KernelWriter.merge_chunks``) computes every layer of
the model for its rows. Printed one layer after another, each layer's stages are call
sites of their own: inlined, every call site is hardware of its own -- its ``exp``, ``tanh``
and dividers, its partitioned arrays, and one more source on the multiplexers in front of
the shared MAC units. GPT2-small's engines needed 4.9 M LUTs and 5,232 DSPs an SLR that
way. Looped, one layer's call sites serve every layer, as in the token-parallel what-if
(``tvm_spatial.estimate.token_parallel``), which prices one layer's hardware.

What: :func:`find_loop` looks in an engine's steps (``_KernelWriter.io_schedule``: stream
reads, stages, stream writes, in order) for the longest run of ``count`` repeats of
``period`` steps that do the same thing (the caller's step signatures) and whose dataflow
a loop can carry:

* a value a repeat defines is read in that repeat, or in the next one at the same place
  (*carried*: the residual stream; the value before the loop takes the same array, so a
  repeat's body reads it wherever it was first read), and after the loop only the last
  repeat's;
* a value from before the loop read in every repeat is *shared*;
* region arguments read at one place of the body, a different one per repeat (a layer's
  weights, biases, mask) are *stacked*: one port holds them along a leading axis, read
  at ``[layer]`` (``design.Port.layers``).

Anything else and there is no loop: the engine stays unrolled, as correct as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MIN_COUNT = 2  # repeats: one layer needs no loop
MAX_TRIES = 64  # candidate loops validated, longest first


@dataclass
class LayerLoop:
    start: int  # first step of the body (an index into the engine's steps)
    period: int  # steps per repeat
    count: int  # repeats (layers)
    # region arguments read at one place of the body, one per repeat, in order
    stacked: list[tuple] = field(default_factory=list)
    # (the value before the loop, the body's value that replaces it each repeat)
    carried: list[tuple] = field(default_factory=list)
    # values read in every repeat, defined before the loop
    shared: list = field(default_factory=list)
    # id(a value a repeat defines) -> the first repeat's value at its place
    alias: dict = field(default_factory=dict)

    @property
    def end(self) -> int:
        """The first step after the loop."""
        return self.start + self.period * self.count

    @property
    def body_end(self) -> int:
        """The first step after the first repeat (the body as printed)."""
        return self.start + self.period

    def repeated(self, t: int) -> bool:
        """Whether step ``t`` is in a later repeat: not printed, the body's loop runs it."""
        return self.body_end <= t < self.end

    def folded(self, steps: list) -> list:
        """The steps as printed: before the loop, one repeat (the first), after it."""
        return [*steps[:self.body_end], *steps[self.end:]]

    def first_of(self, slot):
        """The first repeat's value at the place of ``slot`` (itself if the loop defines none)."""
        return self.alias.get(id(slot), slot)


def _runs(sigs: list, period: int) -> list[int]:
    """For each step i: how many steps from i on equal the step ``period`` later."""
    n = len(sigs)
    runs = [0] * (n + 1)
    for i in range(n - period - 1, -1, -1):
        runs[i] = runs[i + 1] + 1 if sigs[i] == sigs[i + period] else 0
    return runs


def _candidates(sigs: list) -> list[tuple[int, int, int]]:
    """(start, period, count) of every run of at least MIN_COUNT equal repeats, the ones
    covering the most steps first, then the shorter period, then the earlier start."""
    found = []
    for period in range(1, len(sigs) // MIN_COUNT + 1):
        runs = _runs(sigs, period)
        for start in range(len(sigs) - period * MIN_COUNT + 1):
            count = 1 + runs[start] // period
            if count >= MIN_COUNT:
                found.append((start, period, count))
    found.sort(key=lambda c: (-c[1] * c[2], c[1], c[0]))
    return found


def find_loop(sigs: list, uses: list[list], defines: list[set], is_argument) -> LayerLoop | None:
    """The loop over an engine's steps (see the module), or None. Per step: ``sigs``, what
    it does, hashable, equal for the same work on values of the same kinds (not naming
    which values); ``uses``, the values it touches in a fixed order; ``defines``, the ids
    of those it defines. ``is_argument(slot)``: whether it is a region argument (a port)."""
    defined_at: dict[int, int] = {}
    used_at: dict[int, list[int]] = {}
    for t, (slots, keys) in enumerate(zip(uses, defines)):
        for slot in slots:
            used_at.setdefault(id(slot), []).append(t)
        for key in keys:
            defined_at.setdefault(key, t)
    for start, period, count in _candidates(sigs)[:MAX_TRIES]:
        loop = _validate(LayerLoop(start, period, count), uses, defines, is_argument, defined_at, used_at)
        if loop is not None:
            return loop
    return None


def _validate(loop: LayerLoop, uses, defines, is_argument, defined_at, used_at) -> LayerLoop | None:
    start, period, count = loop.start, loop.period, loop.count
    end = loop.end

    def repeat_of(t: int) -> int:
        return (t - start) // period if start <= t < end else -1

    stacked: dict[tuple, None] = {}
    member: dict[int, tuple] = {}
    carried: dict[int, tuple] = {}  # id(init) -> (init, body value)
    shared: dict[int, object] = {}
    for j in range(period):
        at = [start + r * period + j for r in range(count)]
        columns = [uses[t] for t in at]
        if len({len(c) for c in columns}) != 1:
            return None
        for a in range(len(columns[0])):
            slots = [c[a] for c in columns]
            if all(id(s) in defines[t] for s, t in zip(slots, at)):
                for s in slots[1:]:
                    loop.alias[id(s)] = slots[0]
                continue
            if all(s is slots[0] for s in slots):
                if not is_argument(slots[0]) and not defined_at.get(id(slots[0]), end) < start:
                    return None
                shared[id(slots[0])] = slots[0]
                continue
            if all(is_argument(s) for s in slots):
                group = tuple(slots)
                if len({id(s) for s in group}) != count:
                    return None
                for r, s in enumerate(group):
                    if member.setdefault(id(s), group) != group:
                        return None  # one argument in two stacks
                    if any(repeat_of(t) != r for t in used_at[id(s)]):
                        return None  # a layer's argument read elsewhere too: not one port's [layer]
                stacked[group] = None
                continue
            defs = [defined_at.get(id(s), -1) for s in slots]
            inside = [d - start - r * period for r, d in enumerate(defs)]
            if len(set(inside)) == 1 and 0 <= inside[0] < j:
                continue  # defined earlier in the same repeat
            before = [d - start - (r - 1) * period for r, d in enumerate(defs) if r >= 1]
            if len(set(before)) != 1 or not j < before[0] < period or not 0 <= defs[0] < start:
                return None
            init = slots[0]
            if any(start <= t < end and repeat_of(t) != 0 for t in used_at[id(init)]):
                return None
            if any(t >= end for t in used_at[id(init)]):
                return None  # read after the loop: its array holds the last repeat's value then
            body = slots[1]  # the first repeat's value (count >= MIN_COUNT)
            if carried.setdefault(id(init), (init, body))[1] is not body:
                return None
    # only the last repeat's values are read after the loop, and no value outlives the next repeat
    for t in range(end, len(uses)):
        for slot in uses[t]:
            d = defined_at.get(id(slot), -1)
            if start <= d < end and repeat_of(d) != count - 1:
                return None
    for init, body in carried.values():
        # every read of the carried value in the body comes before the body writes it again
        reads = [t - start for t in used_at[id(init)] if start <= t < end]
        if max(reads) >= defined_at[id(body)] - start:
            return None
    loop.stacked = list(stacked)
    loop.carried = list(carried.values())
    loop.shared = list(shared.values())
    return loop
