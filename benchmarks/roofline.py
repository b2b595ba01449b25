"""GPT2-small (seq 128) on the U280: how close the allocated design gets to the rooflines.

Exports GPT2-small with random weights (needs the ``export`` extra), builds its design
(partition + HLS print, no emulation compile), allocates each process's parallelism with
the analytical model within 85 % of every per-SLR resource -- as relax.build would, and in
a what-if where every operator streams token blocks -- and prints per number format:

* prefill latency / DSP roofline (all MACs at the whole U280's DSP rate) -- target >= 60 %
* decode latency per token / memory roofline (weights + KV cache at 460 GB/s) -- target >= 60 %
* the fullest SLR resource -- must be <= 85 %

The decode target is read off the KV-cache decode design (GPT2-small's decode graph, one
token against a ``seq``-position cache: what ``tvm-spatial generate`` builds), its rows
marked "decode design"; the prefill design's own decode column reads it as if it decoded
one token (weights and K/V re-read by the prefill hardware), for comparison.

The "token-parallel" rows are the prefill built with ``tvm_spatial.allocation(layers=
"token_parallel")``: split by tokens over the SLRs, each SLR one engine that every linear
(the LM head too) takes in turn, its layers looped (``codegen_hls.layer_loop``). The
acceptance reads the faster of the two prefill builds. A second table is the model's
what-if of that architecture (``tvm_spatial.estimate.token_parallel``), searched without
building it.

The W8A8 and W4A8 rows are the fp32 build read in int8 (``DesignWork.with_precision``).
``--quantized`` adds the real quantized builds (``tvm_spatial.quantize`` with random-token
calibration, then the build's partition and allocation): about five minutes per format,
most of it the calibration run of TVM's llvm build.

Usage: python benchmarks/roofline.py [--onnx gpt2_small.onnx] [--decode-onnx gpt2_small_decode.onnx]
                                    [--device u280] [--seq 128] [--quantized]
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
    parser.add_argument("--decode-onnx", help="its KV-cache decode graph with a --seq position cache "
                        "(contrib.hf_export.export_gpt2_decode; default: export one)")
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
        decode_path = Path(args.decode_onnx) if args.decode_onnx else None
        if decode_path is None:
            from contrib.hf_export import GPT2_SMALL, export_gpt2_decode

            with console.status("exporting GPT2-small's decode step (random weights)"):
                decode_path = export_gpt2_decode(GPT2_SMALL, Path(tmp) / "gpt2_small_decode.onnx", args.seq)
        with console.status("partitioning and printing the design"):
            design = design_from_onnx(path, args.device, args.seq)
        with console.status("partitioning and printing the token-parallel design"):
            import tvm_spatial

            with tvm_spatial.allocation(layers="token_parallel"):
                token_design = design_from_onnx(path, args.device, args.seq)
        with console.status("partitioning and printing the decode design"):
            decode_design = design_from_onnx(decode_path, args.device)
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
        token_work = design_work(token_design).with_precision(None if precision == "fp32" else precision)
        decode_work = design_work(decode_design).with_precision(None if precision == "fp32" else precision)
        for kind, allocate_kind, of in (("as built", lambda w: allocate_for_codegen(w, device), work),
                                        ("token-parallel", lambda w: allocate_for_codegen(w, device), token_work),
                                        ("all streaming", lambda w: allocate(w.streaming(), device), work),
                                        ("decode design", lambda w: allocate_for_codegen(w, device), decode_work)):
            try:
                rows.append((precision, kind, allocate_kind(of).estimate))
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
    # the acceptance: the faster prefill build in prefill (the default one or the token-
    # parallel one), the decode design in decode, every resource of both within 85 %
    built: dict = {}
    for precision, kind, est in rows:
        if kind in ("as built", "token-parallel") and (
                precision not in built or est.prefill_cycles < built[precision].prefill_cycles):
            built[precision] = est
    last = decode = None  # the rows the notes below read (absent if they did not fit)
    for precision, kind, est in rows:
        frac, slr, res = est.max_slr_utilization
        verdict = ""
        if kind == "decode design" and precision in built:
            prefill = built[precision]
            ok = (prefill.prefill_dsp_ratio >= 0.6 and est.decode_memory_ratio >= 0.6
                  and max(frac, prefill.max_slr_utilization[0]) <= 0.85 + 1e-9)
            verdict = (f"prefill {prefill.prefill_dsp_ratio:.1%}, decode {est.decode_memory_ratio:.1%}: "
                       + ("[green]met[/green]" if ok else "[red]not met[/red]"))
        prefill_cells = (["", "", "", ""] if kind == "decode design" else
                         [str(est.block), f"{est.prefill_ms:.3f} ms",
                          f"{est.seconds(est.prefill_roofline.dsp_cycles) * 1e3:.3f} ms", f"{est.prefill_dsp_ratio:.1%}"])
        table.add_row(
            precision, kind, *prefill_cells,
            f"{est.decode_ms:.3f} ms", f"{est.seconds(est.decode_roofline.memory_cycles) * 1e3:.3f} ms",
            f"{est.decode_memory_ratio:.1%}", f"SLR{slr} {res} {frac:.1%}", verdict,
        )
        if precision == "w4a8" and kind == "all streaming":
            last = est
        if precision == "fp32" and kind == "decode design":
            decode = est
    console.print(table)
    _print_token_parallel(console, design, device)
    if last is not None:
        fill = last.prefill_fill_cycles / last.prefill_cycles
        console.print(
            f"w4a8: pipeline fill is {fill:.0%} of prefill ({len(last.processes)} processes in one chain); "
            f"prefill bottleneck {last.bottleneck} ({last.process(last.bottleneck).parallelism}); "
            f"decode: a token takes each region's longest chain of processes (a stream's words counted once per "
            f"handoff), each reading its weights over its own channels "
            f"(slowest {last.decode_bottleneck}, {last.process(last.decode_bottleneck).decode_bound}-bound)."
        )
    if decode is not None:
        chain = set(decode.decode_chain)  # what a token waits on (the rest runs beside it)
        slowest = sorted((p for p in decode.processes if p.name in chain), key=lambda p: -p.decode_cycles * p.calls)[:3]
        console.print(
            "fp32 decode design: " + ", ".join(
                f"{p.name} {p.decode_cycles * p.calls / decode.decode_cycles:.0%} ({p.parallelism}, "
                f"{p.decode_bound}-bound)" for p in slowest)
            + " of a token (their own cycles; a handoff overlaps its producer's); KV cache " + (decode.kv_cache[0].where if decode.kv_cache else "none") + "."
        )


def _print_token_parallel(console, design, device) -> None:
    """The model's what-if of the prefill split by tokens over the SLRs, each SLR one engine
    that every linear (the LM head too) and the attention's matmuls take in turn
    (``tvm_spatial.estimate.token_parallel``): priced from the reused design's processes,
    its chunk boundaries searched, without building it (the "token-parallel" rows above
    are the build)."""
    from tvm_spatial.errors import ResourceBudgetError
    from tvm_spatial.estimate import design_work
    from tvm_spatial.estimate.token_parallel import token_parallel

    table = Table(title="what-if of the model: prefill split by tokens over the SLRs, one engine each "
                        "(tvm_spatial/estimate/token_parallel.py)")
    for col in ("precision", "tokens per SLR", "arrays", "prefill", "prefill/DSP roof", "fullest SLR resource"):
        table.add_column(col, justify="right")
    for precision in ("fp32", "w8a8", "w4a8"):
        work = design_work(design).with_precision(None if precision == "fp32" else precision)
        try:
            tp = token_parallel(work, device)
        except (ResourceBudgetError, ValueError) as err:
            table.add_row(precision, "", "", "", "", f"[red]{err}[/red]")
            continue
        frac, slr, res = tp.utilization(device)
        table.add_row(precision, " / ".join(str(b - a) for a, b in tp.rows),
                      " / ".join(str(e.parallelism).split(",")[0] for e in tp.engines),
                      f"{tp.prefill_ms:.3f} ms", f"{tp.prefill_dsp_ratio:.1%}", f"SLR{slr} {res} {frac:.1%}")
    console.print(table)


def _quantized_design(path: Path, scheme: str, device: str, seq: int):
    """The design ``relax.build`` would print for the model quantized with ``scheme``."""
    import tvm_spatial
    from tvm_spatial.estimate import design_from_module, module_from_onnx

    return design_from_module(tvm_spatial.quantize(module_from_onnx(path, seq), scheme), device)


if __name__ == "__main__":
    main()
