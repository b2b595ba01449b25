"""Stream depths by simulating the dataflow region with bounded FIFOs.

Why: a dataflow process reads its inputs and writes its outputs in a fixed order, so a
FIFO that is too shallow deadlocks the hardware -- a producer waits for room in a stream
that its consumer will only read after another stream, which needs that producer to go
on. The emulation cannot show this (C simulation runs each process to completion, its
streams unbounded), and making every joining stream as deep as a whole tensor costs
URAM that the design needs elsewhere (GPT2-small: 84 such streams, 264 Mbit).

What it does: each process is a program of stream operations in the order its printed
code performs them -- ``Read(stream, n)``, ``Write(streams, n)`` (every element goes to
all of the streams at once, as the printed loop writes it) -- and the region runs with
every FIFO at the shallow depth. Whenever it cannot go on and some writer waits on a
full FIFO whose reader waits on another stream, the one of those FIFOs that needs the
least room to let its writer finish grows by that much (Parks' bounded scheduling of
Kahn process networks: grow a full channel on an artificial deadlock; a full FIFO whose
reader itself waits to write only passes back-pressure on, and growing it would not help). A region whose processes wait only on empty FIFOs has a
real deadlock: a bug of the codegen, reported as such.

Why the result is safe: a FIFO of depth ``d`` is a Kahn channel plus a channel of ``d``
credits, so the region stays a Kahn process network, whose completion does not depend on
the schedule. The sizes found by this schedule let every schedule of the hardware
finish. A writer whose reader is waiting on the same stream hands elements over as they
come (the two run in lockstep), so the simulation moves whole operations at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm_spatial.errors import CodegenError


class Deadlock(CodegenError):
    """The region cannot finish: ``waits`` says which process waits on which stream;
    ``full``: the full streams a writer waits on (deepening one of them may help)."""

    def __init__(self, kernel: str, waits: str, full: tuple[str, ...] = ()) -> None:
        super().__init__(f"{kernel}: the dataflow region deadlocks: {waits}")
        self.waits = waits
        self.full = full


@dataclass(frozen=True)
class Read:
    stream: str
    count: int


@dataclass(frozen=True)
class ReadEach:
    """``count`` iterations of one loop that reads a transfer of each stream (in lockstep).
    An iteration takes its transfers together, where the printed loop reads them one after
    the other: the first stream may really run one transfer ahead. So the simulation may
    ask one transfer more of a FIFO than the hardware needs, never less: safe for sizing,
    and a lint finding at a depth one short of that is worth a second look."""

    streams: tuple[str, ...]
    count: int


@dataclass(frozen=True)
class Write:
    streams: tuple[str, ...]
    count: int


def size_fifos(kernel: str, programs: dict[str, list], depths: dict[str, int]) -> dict[str, int]:
    """Depths, from ``depths`` up, that let every program finish, each grown only when a
    deadlock of the simulation needs it (small, not always the smallest: the growth is
    greedy); ``programs``: process name -> its stream operations in order."""
    return _run(kernel, programs, dict(depths), grow=True)


def deadlock(programs: dict[str, list], depths: dict[str, int]) -> Deadlock | None:
    """Whether the programs with these depths deadlock: None, or the deadlock."""
    try:
        _run("region", programs, dict(depths), grow=False)
    except Deadlock as err:
        return err
    return None


def _run(kernel: str, programs: dict[str, list], cap: dict[str, int], grow: bool) -> dict[str, int]:
    fill = {s: 0 for s in cap}
    reader = {}
    for name, ops in programs.items():
        for op in ops:
            for s in _streams(op):
                if s not in cap:
                    raise CodegenError(f"{kernel}: process {name} uses stream {s}, which has no depth")
                if not isinstance(op, Write):
                    reader[s] = name
    pc = {name: 0 for name in programs}
    left = {name: ops[0].count if ops else 0 for name, ops in programs.items()}

    def current(name):
        ops = programs[name]
        return ops[pc[name]] if pc[name] < len(ops) else None

    def waiting_on(name, stream) -> int:
        """How many elements ``name`` reads from ``stream`` right now (0: not reading it)."""
        op = current(name) if name is not None else None
        if isinstance(op, ReadEach) and stream in op.streams:  # as fast as the others deliver
            return min([left[name]] + [fill[s] for s in op.streams if s != stream])
        return left[name] if isinstance(op, Read) and op.stream == stream else 0

    def room(stream) -> int:
        return cap[stream] - fill[stream] + waiting_on(reader.get(stream), stream)

    def step(name) -> bool:
        op = current(name)
        if op is None:
            return False
        if isinstance(op, Read):
            moved = min(left[name], fill[op.stream])
            fill[op.stream] -= moved
        elif isinstance(op, ReadEach):
            moved = min([left[name]] + [fill[s] for s in op.streams])
            for s in op.streams:
                fill[s] -= moved
        else:
            moved = min([left[name]] + [room(s) for s in op.streams])
            for s in op.streams:
                fill[s] += moved
        left[name] -= moved
        if left[name] == 0:
            pc[name] += 1
            nxt = current(name)
            left[name] = nxt.count if nxt is not None else 0
            return True
        return moved > 0

    while True:
        progress = True
        while progress:
            progress = False
            for name in programs:
                while step(name):
                    progress = True
        blocked = [name for name in programs if current(name) is not None]
        if not blocked:
            return cap
        # writers waiting for room in a FIFO whose reader waits on another stream (the
        # others only pass that back-pressure on): the one needing the least room
        needs, behind = [], []
        for name in blocked:
            op = current(name)
            if isinstance(op, Write):
                for s in op.streams:
                    if room(s) < left[name]:
                        root = isinstance(current(reader.get(s)), (Read, ReadEach)) if reader.get(s) else False
                        (needs if root else behind).append((left[name] - room(s), s))
        needs = needs or behind
        if not grow or not needs:
            waits = ", ".join(
                f"{name} {'writes' if isinstance(current(name), Write) else 'reads'} {'/'.join(_streams(current(name)))}"
                for name in blocked
            )
            raise Deadlock(kernel, waits, tuple(stream for _, stream in sorted(needs)))
        need, stream = min(needs)
        cap[stream] += need


def _streams(op) -> tuple[str, ...]:
    return (op.stream,) if isinstance(op, Read) else op.streams
