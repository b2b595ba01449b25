"""fp32-vs-quantized agreement of the BERT and GPT2 test fixtures (random weights).

For each fixture and scheme (W8A8, W4A8) the model is quantized with
``tvm_spatial.quantize`` (calibrated on random-token inputs, as the CLI does without a
calibration file), built for ``vitis_spatial`` and run in emulation on the fixture's
stored input; its output is compared with the fp32 output onnxruntime stored with the
fixture: cosine similarity per token (mean and min) and, for GPT2's logits, top-1
(argmax) agreement. BERT is compared on ``last_hidden_state`` (it has no logits; its
top-1 column is left empty).

Usage:

    python benchmarks/quant_accuracy.py [--fixtures gpt2_tiny,bert_tiny] [--schemes w8a8,w4a8]
                                        [--samples 4]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


def load_fixture(name: str):
    data = np.load(FIXTURES / f"{name}.npz")
    inputs = {k[3:]: data[k] for k in data.files if k.startswith("in:")}
    outputs = {k[4:]: data[k] for k in data.files if k.startswith("out:")}
    return FIXTURES / f"{name}.onnx", inputs, outputs


def measure(fixture: str, scheme: str, samples: int = 4) -> dict:
    """Quantize, build and run one fixture; its agreement with the fp32 reference output."""
    import tvm
    from tvm import relax

    import tvm_spatial
    from tvm_spatial.quantization import agreement, random_token_calibration

    path, inputs, outputs = load_fixture(fixture)
    mod = tvm_spatial.frontend.from_onnx(path)
    start = time.perf_counter()
    qmod = tvm_spatial.quantize(mod, scheme, random_token_calibration(mod, samples))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ex = relax.build(qmod, target="vitis_spatial")
    seconds = time.perf_counter() - start
    vm = relax.VirtualMachine(ex, tvm.cpu())
    got = vm["main"](*[tvm.runtime.tensor(v) for v in inputs.values()])
    got = got if isinstance(got, tvm.runtime.Tensor) else got[0]
    name, want = next(iter(outputs.items()))  # logits (GPT2) / last_hidden_state (BERT)
    result = agreement(want, got.numpy())
    result.update(fixture=fixture, scheme=scheme, output=name, seconds=seconds,
                  host_ops=len(tvm_spatial.build_report(ex).host_ops), has_top1=name == "logits")
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fixtures", default="gpt2_tiny,bert_tiny")
    parser.add_argument("--schemes", default="w8a8,w4a8")
    parser.add_argument("--samples", type=int, default=4, help="random-token calibration samples")
    args = parser.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 130)
    table = Table(title="fp32 vs quantized (vitis_spatial emulation, fixture input)")
    for col in ("model", "scheme", "compared", "cosine mean", "cosine min", "top-1", "host ops", "quantize+build"):
        table.add_column(col, justify="left" if col in ("model", "scheme", "compared") else "right")
    for fixture in args.fixtures.split(","):
        for scheme in args.schemes.split(","):
            r = measure(fixture, scheme, args.samples)
            table.add_row(fixture, scheme, r["output"], f"{r['cosine_mean']:.5f}", f"{r['cosine_min']:.5f}",
                          f"{r['top1']:.3f}" if r["has_top1"] else "-", str(r["host_ops"]), f"{r['seconds']:.1f} s")
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
