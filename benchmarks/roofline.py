"""GPT2-small (seq 128) on the U280: how close the allocated design gets to the rooflines.

Exports GPT2-small with random weights (needs the ``export`` extra), builds its design
(partition + HLS print, no emulation compile), allocates each process's parallelism with
the analytical model within 85 % of every per-SLR resource -- as relax.build would, and in
a what-if where every operator streams token blocks -- and prints per number format:

* prefill latency / DSP roofline (all MACs at the whole U280's DSP rate) -- target >= 60 %
* decode latency per token / memory roofline (weights + KV cache at 460 GB/s) -- target >= 60 %
* the fullest SLR resource -- must be <= 85 %

The W8A8 and W4A8 rows are the fp32 build read in int8 (``DesignWork.with_precision``).
``--quantized`` adds the real quantized builds (``tvm_spatial.quantize`` with random-token
calibration, then the build's partition and allocation): about five minutes per format,
most of it the calibration run of TVM's llvm build.

Usage: python benchmarks/roofline.py [--onnx gpt2_small.onnx] [--device u280] [--seq 128] [--quantized]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--onnx", help="an exported GPT2-small (default: export one to a temporary directory)")
    parser.add_argument("--device", default="u280")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--quantized", action="store_true",
                        help="also build W8A8 and W4A8 for real (quantize, then partition and allocate)")
    args = parser.parse_args()

    from tvm_spatial.devices import get_device
    from tvm_spatial.errors import ResourceBudgetError
    from tvm_spatial.estimate import allocate, allocate_for_codegen, design_from_onnx, design_work

    # piped to a file, rich would wrap the 11 columns at 80 characters and cut the figures
    console = Console() if sys.stdout.isatty() else Console(width=200)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.onnx) if args.onnx else None
        if path is None:
            from contrib.hf_export import GPT2_SMALL, export_onnx

            with console.status("exporting GPT2-small (random weights)"):
                path = export_onnx(GPT2_SMALL, Path(tmp) / "gpt2_small.onnx")
        with console.status("partitioning and printing the design"):
            design = design_from_onnx(path, args.device, args.seq)
        quantized = {}
        for scheme in ("w8a8", "w4a8") if args.quantized else ():
            with console.status(f"quantizing ({scheme}, calibration on TVM's llvm build) and building"):
                quantized[scheme] = _quantized_design(path, scheme, args.device, args.seq)
    device = get_device(args.device)
    table = Table(title=f"GPT2-small, seq {args.seq}, {device.name}: allocated design vs rooflines")
    for col in ("precision", "design", "block", "prefill", "DSP roofline", "prefill/DSP roof", "decode/token",
                "memory roofline", "decode/mem roof", "fullest SLR resource", "acceptance"):
        table.add_column(col, justify="right")
    # "as built": what relax.build realizes (allocate_for_codegen: token blocks for the
    # row-wise processes and the fused attention's queries, K and V held, streams as deep
    # as the bounded-FIFO simulation needs, weights striped over up to 8 channels);
    # "all streaming": a what-if of the model -- every operator streams token blocks (as in
    # Allo's GPT2 design) and the allocator may stripe weights over channels
    rows = []
    for precision in ("fp32", "w8a8", "w4a8"):
        work = design_work(design).with_precision(None if precision == "fp32" else precision)
        for kind, allocate_kind in (("as built", lambda w: allocate_for_codegen(w, device)),
                                    ("all streaming", lambda w: allocate(w.streaming(), device))):
            try:
                rows.append((precision, kind, allocate_kind(work).estimate))
            except ResourceBudgetError as err:
                table.add_row(precision, kind, *[""] * 7, f"{err.resource} SLR{err.slr}: "
                              f"{err.needed:.0f} > {err.available:.0f}", "[red]does not fit[/red]")
        if precision in quantized:
            try:
                rows.append((precision, "quantized, as built",
                             allocate_for_codegen(design_work(quantized[precision]), device).estimate))
            except ResourceBudgetError as err:
                table.add_row(precision, "quantized, as built", *[""] * 7, f"{err.resource} SLR{err.slr}: "
                              f"{err.needed:.0f} > {err.available:.0f}", "[red]does not fit[/red]")
    for precision, kind, est in rows:
        frac, slr, res = est.max_slr_utilization
        ok = est.prefill_dsp_ratio >= 0.6 and est.decode_memory_ratio >= 0.6 and frac <= 0.85 + 1e-9
        table.add_row(
            precision, kind, str(est.block), f"{est.prefill_ms:.3f} ms",
            f"{est.seconds(est.prefill_roofline.dsp_cycles) * 1e3:.3f} ms", f"{est.prefill_dsp_ratio:.1%}",
            f"{est.decode_ms:.3f} ms", f"{est.seconds(est.decode_roofline.memory_cycles) * 1e3:.3f} ms",
            f"{est.decode_memory_ratio:.1%}", f"SLR{slr} {res} {frac:.1%}",
            "[green]met[/green]" if ok else "[red]not met[/red]",
        )
        if precision == "w4a8" and kind == "all streaming":
            last = est
    console.print(table)
    fill = last.prefill_fill_cycles / last.prefill_cycles
    console.print(
        f"w4a8: pipeline fill is {fill:.0%} of prefill ({len(last.processes)} processes in one chain); "
        f"prefill bottleneck {last.bottleneck} ({last.process(last.bottleneck).parallelism}); "
        f"decode: processes run one after another, each reads its weights over its own channels "
        f"(slowest {last.decode_bottleneck}, {last.process(last.decode_bottleneck).decode_bound}-bound)."
    )


def _quantized_design(path: Path, scheme: str, device: str, seq: int):
    """The design ``relax.build`` would print for the model quantized with ``scheme``."""
    import tvm_spatial
    from tvm_spatial.estimate import design_from_module, module_from_onnx

    return design_from_module(tvm_spatial.quantize(module_from_onnx(path, seq), scheme), device)


if __name__ == "__main__":
    main()
