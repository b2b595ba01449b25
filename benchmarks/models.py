"""GPT2-small and BERT-base (random weights, seq 128), exported on the fly, measured side by
side in one run:

(a) ``vitis_spatial`` build time, including compiling the emulation (cold compile cache),
    divided by TVM's untuned ``llvm`` build time of the same module;
(b) emulation latency divided by onnxruntime latency, one thread each (median of runs).

Needs the ``export`` extra. Usage: python benchmarks/models.py [--models gpt2,bert] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table


def _median_seconds(fn, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(kind: str, runs: int, workdir: Path) -> dict:
    os.environ["OMP_NUM_THREADS"] = "1"
    import onnxruntime as ort
    import tvm
    from tvm import relax

    import tvm_spatial
    from contrib.hf_export import BERT_BASE, GPT2_SMALL, example_inputs, export_onnx

    cfg = {"gpt2": GPT2_SMALL, "bert": BERT_BASE}[kind]
    path = export_onnx(cfg, workdir / f"{kind}.onnx")
    inputs = example_inputs(cfg)
    mod = tvm_spatial.frontend.from_onnx(path)

    os.environ["TVM_SPATIAL_CACHE_DIR"] = str(workdir / f"cache_{kind}")  # cold: really compile
    start = time.perf_counter()
    ex = relax.build(mod, target="vitis_spatial")
    spatial_build = time.perf_counter() - start
    start = time.perf_counter()
    ref = relax.build(mod, target="llvm")
    llvm_build = time.perf_counter() - start

    vm = relax.VirtualMachine(ex, tvm.cpu())
    args = [tvm.runtime.tensor(v) for v in inputs.values()]
    emulation = _median_seconds(lambda: vm["main"](*args), runs)

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    onnxruntime = _median_seconds(lambda: session.run(None, inputs), runs)

    out = vm["main"](*args)
    out = out.numpy() if isinstance(out, tvm.runtime.Tensor) else out[0].numpy()
    ort_out = session.run(None, inputs)[0]
    return {
        "model": f"{kind} ({cfg.layers} layers, hidden {cfg.hidden}, seq {cfg.seq})",
        "spatial_build": spatial_build,
        "llvm_build": llvm_build,
        "emulation": emulation,
        "onnxruntime": onnxruntime,
        "max_abs_diff": float(np.max(np.abs(out - ort_out))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="gpt2,bert")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="tvm_spatial_bench_") as tmp:
        for kind in args.models.split(","):
            rows.append(measure(kind.strip(), args.runs, Path(tmp)))
    table = Table(title="vitis_spatial vs llvm build, emulation vs onnxruntime (1 thread)")
    for col in ("model", "build s (spatial / llvm)", "build ratio", "run s (emulation / ort)", "run ratio", "max |diff|"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["model"],
            f"{r['spatial_build']:.1f} / {r['llvm_build']:.1f}",
            f"{r['spatial_build'] / r['llvm_build']:.2f}",
            f"{r['emulation']:.3f} / {r['onnxruntime']:.3f}",
            f"{r['emulation'] / r['onnxruntime']:.2f}",
            f"{r['max_abs_diff']:.2e}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
