"""SLR placement chosen with the model: where each kernel's chain of processes is cut.

The code generator splits every kernel's chain of processes into contiguous SLR segments
balanced by the TIR work of each process (``codegen_hls.kernel._slrs``). Work is not what
an SLR runs out of: a fp32 attention holds 1,024 DSPs for no MAC the split counts, and the
LM head's region shares the card with the layers' region. So the build lets the
allocation itself judge the cuts: :func:`search_placement` tries, kernel after kernel,
every contiguous split of its chain over the SLRs in order (segments may be empty, a
kernel may stay on one SLR), re-allocates the whole design for each with the model
(``score``), keeps the fastest, and goes round the kernels again until none moves.

GPT2-small as built (U280, seq 128): 151.2 -> 109.2 ms in fp32 (19.7 -> 27.3 % of the DSP
roofline). The layer's first layer norm, QKV linear and attention get SLR0, the rest of
the layer SLR2, and the LM head SLR1 to itself (before: its linear beside the layer's
first feed-forward linear, which got 8 x 16 MACs there).

A split is only taken for a gain of at least ``MIN_GAIN``: every stream that crosses a
cut is an AXI-stream link between two kernels over the scarce super long lines, which the
model does not price, so a move that wins nearly nothing is not worth its wires. Among
equally fast splits the one whose streams cross fewer SLR boundaries wins (a stream from
SLR0 to SLR2 crosses two), then the one nearest the work-balanced split.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

from ..errors import ResourceBudgetError
from .workload import DesignWork

# the least relative prefill gain for which a kernel's cuts move off the current split
MIN_GAIN = 0.01
# rounds over the kernels (each round re-splits every kernel with the others fixed)
MAX_ROUNDS = 3
# a chain with at most this many splits has them all tried; a longer one (an unrolled
# BERT's 33 processes on a U250's 4 SLRs: 7,140) moves one cut at a time over its range
EXHAUSTIVE_SPLITS = 120


def split_labels(cuts, length: int) -> tuple[int, ...]:
    """SLR of each of ``length`` processes when SLR ``j + 1`` begins at ``cuts[j]``
    (non-decreasing positions in ``0 .. length``; equal cuts leave an SLR empty)."""
    return tuple(sum(1 for c in cuts if i >= c) for i in range(length))


def chain_splits(length: int, slrs: int):
    """Every non-decreasing assignment of SLRs ``0 .. slrs-1`` to a chain of ``length``
    processes (contiguous segments in SLR order, empty ones allowed): ``C(length+slrs-1,
    slrs-1)`` of them."""
    for cuts in itertools.combinations_with_replacement(range(length + 1), slrs - 1):
        yield split_labels(cuts, length)


def crossings(work: DesignWork) -> int:
    """SLR boundaries crossed by streams: a stream between SLR0 and SLR2 is an AXI-stream
    link over the super long lines of both boundaries, so it counts twice."""
    slr = {p.name: p.slr for p in work.processes}
    return sum(abs(slr[s.producer] - slr[s.consumer]) for s in work.streams
               if s.producer in slr and s.consumer in slr)


def search_placement(work: DesignWork, slrs: int, score: Callable[[DesignWork], float]) -> dict[str, int]:
    """Process name -> SLR for the fastest design ``score`` finds (``score(work)``: its
    prefill cycles; raising :class:`ResourceBudgetError` when the placement does not fit),
    searched as the module says over SLRs ``0 .. slrs-1``. Processes keep their SLR when
    no split beats the current one by ``MIN_GAIN``."""
    placement = {p.name: p.slr for p in work.processes}
    if slrs < 2:
        return placement
    balanced = dict(placement)
    seen: dict = {}

    def cost(candidate: dict[str, int]):
        key = tuple(sorted(candidate.items()))
        if key not in seen:
            placed = work.with_placement(candidate)
            try:
                seen[key] = (score(placed), crossings(placed), sum(abs(candidate[n] - balanced[n]) for n in candidate))
            except ResourceBudgetError:
                seen[key] = None
        return seen[key]

    current = cost(placement)
    for _ in range(MAX_ROUNDS):
        changed = False
        for procs in work.kernel_processes().values():
            names = [p.name for p in procs]
            best, best_cost = _best_split(names, placement, slrs, cost)
            if best is not None and best != placement and (current is None or _better(best_cost, current)):
                placement, current, changed = best, best_cost, True
        if not changed:
            break
    return placement


def _best_split(names, placement, slrs: int, cost):
    """(placement, cost) of the cheapest split of the chain ``names``, the rest as in
    ``placement``: every split, or for a long chain one cut at a time from its current
    one (each over every position between its neighbours, until none moves)."""
    length = len(names)

    def place(labels):
        candidate = {**placement, **dict(zip(names, labels))}
        return candidate, cost(candidate)

    def cheaper(a, b):
        return a[1] is not None and (b[1] is None or a[1] < b[1])

    best = (None, None)
    if math.comb(length + slrs - 1, slrs - 1) <= EXHAUSTIVE_SPLITS:
        for labels in chain_splits(length, slrs):
            found = place(labels)
            best = found if cheaper(found, best) else best
        return best
    labels = [min(slrs - 1, max(0, placement[n])) for n in names]
    cuts = [sum(1 for slr in labels if slr < s) for s in range(1, slrs)]  # where each next SLR begins
    best = place(split_labels(cuts, length))
    moved = True
    while moved:
        moved = False
        for j in range(len(cuts)):
            low, high = (cuts[j - 1] if j else 0), (cuts[j + 1] if j + 1 < len(cuts) else length)
            for position in range(low, high + 1):
                trial = [*cuts[:j], position, *cuts[j + 1:]]
                found = place(split_labels(trial, length))
                if cheaper(found, best):
                    best, cuts, moved = found, trial, True
    return best


def _better(new, old) -> bool:
    """Faster by ``MIN_GAIN``, or no slower with fewer SLR boundaries crossed."""
    if new[0] < old[0] * (1 - MIN_GAIN):
        return True
    return math.isclose(new[0], old[0], rel_tol=MIN_GAIN) and new[0] <= old[0] and new[1] < old[1]


__all__ = ["EXHAUSTIVE_SPLITS", "MIN_GAIN", "chain_splits", "crossings", "search_placement", "split_labels"]
