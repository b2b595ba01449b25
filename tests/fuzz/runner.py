"""Run many fuzz cases fast: several cases per build, several worker processes.

Why batches: a ``vitis_spatial`` build costs about one ``g++ -O2`` of the design (~1 s,
mostly fixed), whatever the design's size, so ``batch`` independent cases share one
module (their subgraphs never touch, so they become separate kernels). A batch that does
not pass is re-run case by case, so every outcome belongs to one case.

Why processes: a segfault or a hang in generated code must not take the whole run down.
Each worker is a spawned Python; a worker that dies or exceeds ``timeout`` seconds is
replaced, and the cases it held are re-run alone (a second death is that case's crash).
"""

from __future__ import annotations

import multiprocessing as mp
from multiprocessing.connection import wait as mp_wait
import os
import sys
import time
from dataclasses import dataclass

from .differential import Outcome, run_case
from .generator import data_seed, generate

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Case:
    frontend: str
    seed: int
    max_nodes: int = 7  # per subgraph; benchmarks/fuzz.py --max-nodes for bigger graphs

    def __str__(self) -> str:
        size = "" if self.max_nodes == 7 else f"/{self.max_nodes}"
        return f"{self.frontend}:{self.seed}{size}"

    @classmethod
    def parse(cls, text: str) -> "Case":
        """``relax:17`` or ``onnx:5/20`` (the form ``str`` gives)."""
        frontend, _, rest = text.partition(":")
        seed, _, nodes = rest.partition("/")
        return cls(frontend, int(seed), int(nodes) if nodes else 7)

    def spec(self) -> dict:
        return generate(self.seed, self.frontend, max_nodes=self.max_nodes)


def merge(specs: list[dict]) -> dict:
    """One spec holding every spec's graph, names prefixed ``c<k>_``, data unchanged."""
    inputs, nodes, outputs, groups = [], [], [], {}
    for k, spec in enumerate(specs):
        pre = f"c{k}_"
        for inp in spec["inputs"]:
            inputs.append({**inp, "name": pre + inp["name"], "data_seed": data_seed(spec, inp)})
        for node in spec["nodes"]:
            nodes.append({**node, "args": [pre + a for a in node["args"]], "outs": [pre + o for o in node["outs"]]})
        for out in spec["outputs"]:
            outputs.append(pre + out)
            groups[pre + out] = k
    return {"frontend": specs[0]["frontend"], "seed": 0, "inputs": inputs, "nodes": nodes,
            "outputs": outputs, "groups": groups}


def host_ops_of(spec) -> tuple[str, ...]:
    """What the partitioner leaves on the host for this spec (no compile needed)."""
    from relax_passes import host_operators, partition_for_vitis_spatial

    from .generator import to_module

    try:
        return tuple(host_operators(partition_for_vitis_spatial(to_module(spec))))
    except Exception:  # noqa: BLE001 - the build itself reports the real error
        return ()


def run_batch(specs: list[dict], target: str = "vitis_spatial") -> list[Outcome]:
    """Outcomes of each spec, building them together when they all pass."""
    if len(specs) == 1:
        return [run_case(specs[0], target)]
    together = run_case(merge(specs), target)
    if together.kind != "pass":
        return [run_case(spec, target) for spec in specs]
    return [Outcome("pass", host_ops=host_ops_of(spec)) for spec in specs]


# ----------------------------------------------------------------------------------------
# worker processes

def _worker_main(conn, target: str) -> None:
    sys.path.insert(0, TESTS_DIR)
    import warnings

    warnings.simplefilter("ignore")
    import tvm_spatial  # noqa: F401 - registers the target before the first task

    while True:
        task = conn.recv()
        if task is None:
            return
        kind, payload = task
        if kind == "batch":
            conn.send(run_batch(payload, target))
        else:  # a single spec (the minimizer)
            conn.send([run_case(payload, target)])


class _Worker:
    def __init__(self, ctx, target: str) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, target), daemon=True)
        self.proc.start()
        child.close()
        self.task = None
        self.started = 0.0

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()


class Pool:
    """``workers`` spawned processes running batches; survives crashes and hangs."""

    def __init__(self, workers: int = 2, target: str = "vitis_spatial", timeout: float = 300.0) -> None:
        self.ctx = mp.get_context("spawn")
        self.target = target
        self.timeout = timeout
        self.workers = [_Worker(self.ctx, target) for _ in range(max(1, workers))]

    def close(self) -> None:
        for w in self.workers:
            try:
                w.conn.send(None)
            except (OSError, BrokenPipeError):
                pass
            w.proc.join(10)
            w.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def map(self, tasks: list, progress=None) -> list[list[Outcome]]:
        """Run ``tasks`` (each ``("batch", [specs])`` or ``("one", spec)``); results in order."""
        results: list = [None] * len(tasks)
        queue = list(range(len(tasks)))
        retry: dict[int, list] = {}  # task index -> per-spec results of its solo re-runs
        pending: list[tuple[int, int | None]] = [(i, None) for i in queue]  # (task, spec index or None)
        while pending or any(w.task is not None for w in self.workers):
            for w in self.workers:
                if w.task is None and pending:
                    w.task = pending.pop(0)
                    i, j = w.task
                    kind, payload = tasks[i]
                    msg = (kind, payload) if j is None else ("one", payload[j])
                    w.conn.send(msg)
                    w.started = time.monotonic()
            busy = [w for w in self.workers if w.task is not None]
            ready = mp_wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=1.0)
            for idx, w in enumerate(self.workers):
                if w.task is None:
                    continue
                i, j = w.task
                died = w.proc.sentinel in ready and not w.conn.poll()
                hung = time.monotonic() - w.started > self.timeout
                if w.conn in ready and w.conn.poll():
                    try:
                        out = w.conn.recv()
                    except (EOFError, OSError):
                        died, out = True, None
                    if out is not None:
                        self._finish(tasks, results, retry, i, j, out, progress)
                        w.task = None
                        continue
                if died or hung:
                    why = "timed out" if hung else f"died (exit code {w.proc.exitcode})"
                    w.kill()
                    self.workers[idx] = _Worker(self.ctx, self.target)
                    kind, payload = tasks[i]
                    if j is None and kind == "batch" and len(payload) > 1:
                        retry[i] = [None] * len(payload)
                        pending[:0] = [(i, k) for k in range(len(payload))]
                    else:
                        crash = [Outcome("crash", f"worker process {why} running this case")]
                        self._finish(tasks, results, retry, i, j, crash, progress)
        return results

    def _finish(self, tasks, results, retry, i, j, out, progress) -> None:
        if j is None:
            results[i] = out
        else:
            if i not in retry:
                retry[i] = [None] * (len(tasks[i][1]) if tasks[i][0] == "batch" else 1)
            retry[i][j] = out[0]
            if all(r is not None for r in retry[i]):
                results[i] = retry.pop(i)
            else:
                return
        if progress:
            progress(i, results[i])

    def run_one(self, spec) -> Outcome:
        return self.map([("one", spec)])[0][0]


def run_cases(cases: list[Case], workers: int = 2, batch: int = 5, target: str = "vitis_spatial",
              progress=None) -> dict[Case, Outcome]:
    """Outcome of every case; cases of one frontend are batched ``batch`` at a time."""
    tasks, owners = [], []
    for frontend in sorted({c.frontend for c in cases}):
        group = [c for c in cases if c.frontend == frontend]
        for k in range(0, len(group), batch):
            chunk = group[k:k + batch]
            tasks.append(("batch", [c.spec() for c in chunk]))
            owners.append(chunk)

    def report(i, outs):
        if progress:
            for case, outcome in zip(owners[i], outs):
                progress(case, outcome)

    with Pool(workers, target) as pool:
        results = pool.map(tasks, report)
    return {case: outcome for chunk, outs in zip(owners, results) for case, outcome in zip(chunk, outs)}
