"""Differential fuzzing of ``vitis_spatial`` against ``llvm``, beyond the CI set.

    .venv/bin/python benchmarks/fuzz.py --cases 1000 [--seed S] [--workers 2]
    .venv/bin/python benchmarks/fuzz.py --replay relax:17       # one case, in this process

Prints the counts (cases, passed, mismatches, crashes, host fallbacks, invalid) and, for
every kind of failure, shrinks one case (drop nodes and outputs, cut the graph, shrink
shapes, while it still fails the same way) and writes it to ``tests/regressions/`` as a
pytest file marked ``xfail(strict=True)``: it turns into a failure the day the bug is
fixed, so whoever fixes it removes the mark. Every fifth case is an ONNX graph (imported
with ``tvm.relax.frontend.onnx.from_onnx``); the others are Relax graphs.

``invalid`` cases are graphs TVM's own llvm build rejects (a generator or TVM issue, not
a finding about tvm-spatial); ``host fallbacks`` are cases with operators left on the CPU.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the fuzz package lives with the tests

from fuzz.differential import describe, minimize, write_regression  # noqa: E402
from fuzz.runner import Case, Pool, run_cases  # noqa: E402


def _cases(n: int, seed: int, onnx_every: int, max_nodes: int) -> list[Case]:
    return [
        Case("onnx" if onnx_every and k % onnx_every == onnx_every - 1 else "relax", seed + k, max_nodes)
        for k in range(n)
    ]


def _replay(text: str) -> int:
    import warnings

    from fuzz.differential import run_case
    from fuzz.generator import to_module

    spec = Case.parse(text).spec()
    print(json.dumps(spec, indent=1))
    print(to_module(spec).script(show_meta=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outcome = run_case(spec)
    print(f"{text}: {outcome.kind} {outcome.detail}")
    if outcome.failed:
        shrunk, shrunk_outcome = minimize(spec, outcome, log=print)
        print("shrunk to:", describe(shrunk))
        print(json.dumps(shrunk))
        print(shrunk_outcome.detail)
    return 0 if outcome.kind == "pass" else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--seed", type=int, default=100_000, help="first seed (CI uses 0..239)")
    parser.add_argument("--workers", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    parser.add_argument("--batch", type=int, default=6, help="cases per build")
    parser.add_argument("--onnx-every", type=int, default=5, help="every Nth case is ONNX (0: none)")
    parser.add_argument("--max-nodes", type=int, default=7, help="operators per subgraph (CI: 7)")
    parser.add_argument("--shrink", type=int, default=3, help="failures shrunk per kind of failure")
    parser.add_argument("--out", default=str(ROOT / "tests" / "regressions"), help="where shrunk cases go")
    parser.add_argument("--replay", metavar="FRONTEND:SEED[/NODES]", help="run one case here, verbosely")
    parser.add_argument("--json", action="store_true", help="print the counts as JSON too")
    args = parser.parse_args(argv)
    if args.replay:
        return _replay(args.replay)

    cases = _cases(args.cases, args.seed, args.onnx_every, args.max_nodes)
    counts = collections.Counter()
    host_ops = collections.Counter()
    failures: dict[str, list] = collections.defaultdict(list)
    start = time.perf_counter()

    def progress(case, outcome):
        counts[outcome.kind] += 1
        done = sum(counts[k] for k in ("pass", "mismatch", "crash", "invalid"))
        if outcome.host_ops:
            counts["host_fallback"] += 1
            host_ops.update(h.split(" ", 1)[0] for h in outcome.host_ops)
        if outcome.failed:
            failures[outcome.signature()].append((case, outcome))
            print(f"  {case}: {outcome.kind}: {outcome.detail.splitlines()[0][:160]}", flush=True)
        if done % 50 == 0:
            print(f"  ... {done}/{len(cases)} cases, {time.perf_counter() - start:.0f} s", flush=True)

    run_cases(cases, workers=args.workers, batch=args.batch, progress=progress)
    elapsed = time.perf_counter() - start

    written = []
    if failures and args.shrink:
        with Pool(args.workers) as pool:
            for signature, found in sorted(failures.items()):
                for case, outcome in found[: args.shrink]:
                    again = pool.run_one(case.spec())
                    if again.signature() != signature:
                        print(f"{case}: not reproducible alone ({again.kind}); not shrunk")
                        continue
                    spec, shrunk = minimize(case.spec(), again, run=pool.run_one)
                    path = write_regression(spec, shrunk, Path(args.out), origin=f"benchmarks/fuzz.py, case {case}")
                    written.append((case, path, describe(spec)))

    summary = {
        "cases": len(cases),
        "relax": sum(c.frontend == "relax" for c in cases),
        "onnx": sum(c.frontend == "onnx" for c in cases),
        "passed": counts["pass"],
        "mismatches": counts["mismatch"],
        "crashes": counts["crash"],
        "host_fallbacks": counts["host_fallback"],
        "invalid": counts["invalid"],
        "seconds": round(elapsed, 1),
    }
    print()
    print(f"seeds {args.seed}..{args.seed + args.cases - 1}: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
    if host_ops:
        print("operators left on the host:", ", ".join(f"{op} ({n})" for op, n in host_ops.most_common()))
    for signature, found in sorted(failures.items()):
        print(f"{len(found)} x {signature}: {', '.join(str(c) for c, _ in found[:10])}")
    for case, path, graph in written:
        print(f"shrunk {case} -> {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {graph}")
    if args.json:
        print(json.dumps(summary))
    return 1 if counts["mismatch"] or counts["crash"] else 0


if __name__ == "__main__":
    sys.exit(main())
