"""vitis_spatial build time (including compiling the emulation C++) / TVM's llvm build time
of the same module, measured side by side in one run.

Each vitis_spatial build uses an empty compile cache, so the host compiler really runs;
both sides include `jit()` (linking into a loadable library), i.e. ready to run.
Usage: python benchmarks/compile_time.py [--example encoder_block] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from rich.console import Console
from rich.table import Table
from tvm import relax

import tvm_spatial  # noqa: F401 - registers the target
from tvm_spatial.examples import EXAMPLES


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--example", default="encoder_block", choices=sorted(EXAMPLES))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    mod = EXAMPLES[args.example]().mod

    spatial, llvm = [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as cache:
            os.environ["TVM_SPATIAL_CACHE_DIR"] = cache
            spatial.append(timed(lambda: relax.build(mod, target="vitis_spatial").jit()))
        llvm.append(timed(lambda: relax.build(mod, target="llvm").jit()))

    table = Table(title=f"build time, {args.example} ({args.repeat} runs, median)")
    table.add_column("target")
    table.add_column("seconds", justify="right")
    table.add_row("vitis_spatial (cold compile cache)", f"{statistics.median(spatial):.3f}")
    table.add_row("llvm", f"{statistics.median(llvm):.3f}")
    Console().print(table)
    print(f"ratio vitis_spatial / llvm = {statistics.median(spatial) / statistics.median(llvm):.2f}")


if __name__ == "__main__":
    main()
