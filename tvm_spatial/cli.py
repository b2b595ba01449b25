"""The ``tvm-spatial`` command line.

``compile`` turns an ONNX file or a bundled example into a Vitis project; ``demo`` also
runs the design in emulation next to TVM's ``llvm`` build and prints both side by side.
Errors print as one line on standard output and exit non-zero: project errors
(:class:`~tvm_spatial.errors.SpatialError`, bad input) with 2, anything else -- a bug in
tvm-spatial or TVM -- with 3. ``--verbose`` shows the whole message and the traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from .errors import SpatialError, UsageError

console = Console()


def _load_model(model: str, shapes: list[str] | None):
    """An ONNX path or a bundled example name -> (Relax module, example inputs or None)."""
    from .examples import EXAMPLES, get_example

    if model in EXAMPLES:
        if shapes:
            raise UsageError(f"--shape applies to ONNX files; the bundled example {model!r} has fixed shapes")
        example = get_example(model)
        return example.mod, example.inputs
    path = Path(model)
    if path.is_dir():
        raise UsageError(f"{model!r} is a directory; give an ONNX file or a bundled example")
    if not path.is_file():
        raise UsageError(
            f"{model!r} is neither an ONNX file nor a bundled example ({', '.join(sorted(EXAMPLES))})"
        )
    from .frontend import from_onnx

    return from_onnx(path, shape_dict=parse_shapes(shapes) or None), None


def parse_shapes(items: list[str] | None) -> dict[str, list[int]]:
    """``["x=1,128", ...]`` -> ``{"x": [1, 128]}``; anything else is a :class:`UsageError`."""
    shape_dict: dict[str, list[int]] = {}
    for item in items or []:
        name, sep, dims = item.partition("=")
        try:
            sizes = [int(d) for d in dims.split(",")] if dims.strip() else []
        except ValueError:
            sizes = None
        if not sep or not name or not sizes or any(d <= 0 for d in sizes):
            raise UsageError(f"--shape {item!r} is not NAME=D0,D1,... with positive integer sizes")
        if name in shape_dict:
            raise UsageError(f"--shape gives input {name!r} twice")
        shape_dict[name] = sizes
    return shape_dict


def _target(device: str) -> str:
    from .devices import get_device
    from .target import tag_name

    return tag_name(get_device(device).key)


def _build(mod, device: str):
    from tvm import relax

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        ex = relax.build(mod, target=_target(device))
        seconds = time.perf_counter() - start
    for w in caught:
        console.print(f"[yellow]warning:[/yellow] {w.message}")
    return ex, seconds


EMULATION_LIBRARY = "emulation/design.so"  # inside a compiled project directory


def _quantize(mod, scheme: str, calibration: str | None):
    """``--quant``: calibrate on ``--calibration`` (an .npz) or on random vocabulary tokens."""
    if scheme == "none":
        if calibration:
            raise UsageError("--calibration needs --quant w8a8 or --quant w4a8")
        return mod
    from .quantization import load_calibration, quantize

    return quantize(mod, scheme, load_calibration(calibration) if calibration else None)


QUANT_HELP = ("quantize linear layers (W8A8: int8 weights, W4A8: 4-bit weights, two per byte) and "
              "attention matmuls (int8); softmax, layer norm, residual and GELU stay fp32. Activation "
              "scales are calibrated on --calibration, or else on a few random-token inputs drawn "
              "from the model's vocabulary (default: none)")


def cmd_compile(args) -> int:
    from rich.progress import Progress

    from .project_api import export_project
    from .report import build_report

    # not on a terminal, a transient progress bar would leave an empty line before an error
    with Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("importing the model", total=4)
        mod, _ = _load_model(args.model, args.shape)
        mod = _quantize(mod, args.quant, args.calibration)
        progress.update(task, advance=1, description="partitioning, printing HLS, compiling the emulation")
        ex, seconds = _build(mod, args.device)
        progress.update(task, advance=1, description="writing the Vitis project")
        out = export_project(ex, args.output, force=args.force)
        progress.update(task, advance=1, description="exporting the emulation library")
        library = out / EMULATION_LIBRARY
        library.parent.mkdir(parents=True, exist_ok=True)
        ex.export_library(str(library))
        progress.update(task, advance=1)
    build_report(ex).print(console)
    console.print(f"built in {seconds:.2f} s; Vitis project written to [bold]{out}[/bold]")
    console.print(f"run it in emulation: tvm-spatial run {out} --inputs inputs.npz")
    return 0


def cmd_run(args) -> int:
    """Run a compiled project's emulation library on inputs from an .npz file."""
    import numpy as np
    import tvm
    from tvm import relax

    library = Path(args.project) / EMULATION_LIBRARY
    if not library.is_file():
        raise UsageError(f"{library} does not exist: compile the model first (tvm-spatial compile MODEL -o DIR)")
    inputs_path = Path(args.inputs)
    if not inputs_path.is_file():
        raise UsageError(f"inputs file {inputs_path} does not exist")
    try:
        arrays = dict(np.load(inputs_path))
    except Exception as err:  # numpy raises several kinds for a bad file
        raise UsageError(f"{inputs_path} is not a readable .npz file ({type(err).__name__})") from err
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(library)), tvm.cpu())
    arity = vm._get_function_arity("main")
    names = [vm._get_function_param_name("main", i) for i in range(arity)]
    missing = [n for n in names if n not in arrays]
    extra = sorted(set(arrays) - set(names))
    if missing or extra:
        raise UsageError(f"the design's inputs are {names}; {inputs_path} lacks {missing} and has extra {extra}")
    from .runtime_mode import runtime_mode

    mode = "xrt" if args.xclbin else "emulation"
    with runtime_mode(mode, xclbin=args.xclbin, device_index=args.device_index):
        start = time.perf_counter()
        out = vm["main"](*[tvm.runtime.tensor(arrays[n]) for n in names])
        seconds = time.perf_counter() - start
    outputs = [out] if isinstance(out, tvm.runtime.Tensor) else list(out)
    results = {f"output{i}": o.numpy() for i, o in enumerate(outputs)}
    target = Path(args.output) if args.output else Path(args.project) / "outputs.npz"
    np.savez(target, **results)
    for name, value in results.items():
        console.print(f"{name}: {value.dtype}{list(value.shape)}")
    where = f"XRT, {args.xclbin}" if args.xclbin else "emulation"
    console.print(f"ran in {seconds * 1e3:.1f} ms ({where}); outputs written to [bold]{target}[/bold]")
    return 0


def cmd_demo(args) -> int:
    import numpy as np
    import tvm
    from tvm import relax

    from .project_api import export_project
    from .report import build_report

    mod, inputs = _load_model(args.model, None)
    if inputs is None:
        raise UsageError("demo runs bundled examples only; use 'compile' for ONNX files")
    ex, spatial_s = _build(mod, args.device)
    start = time.perf_counter()
    ref_ex = relax.build(mod, target="llvm")
    llvm_s = time.perf_counter() - start
    args_tvm = [tvm.runtime.tensor(v) for v in inputs.values()]
    out = relax.VirtualMachine(ex, tvm.cpu())["main"](*args_tvm).numpy()
    ref = relax.VirtualMachine(ref_ex, tvm.cpu())["main"](*args_tvm).numpy()
    project = export_project(ex, args.output, force=args.force)
    build_report(ex).print(console)
    from .estimate import estimate
    from .estimate.report import _fmt, summary_table

    # what the analytical model expects of the design just built (each matmul's MAC array as
    # the HLS realizes it); the full per-process report is `tvm-spatial estimate`
    built = estimate(ex, device=args.device)
    console.print("analytical estimate of the generated design (its MAC arrays as built):")
    console.print(summary_table(built))
    try:
        ideal = estimate(ex, device=args.device, allocate_resources=True)
    except SpatialError as err:
        console.print(f"unconstrained model allocation: none fits ({one_line(err)})")
    else:
        console.print(
            f"unconstrained model allocation (every operator streaming token blocks, multi-channel ports: "
            f"not generated yet): prefill {_fmt(ideal.prefill_cycles, ideal)}, decode "
            f"{_fmt(ideal.decode_cycles, ideal)}/token vs as built {_fmt(built.prefill_cycles, built)}, "
            f"{_fmt(built.decode_cycles, built)}/token"
        )
    err = float(np.max(np.abs(out - ref)))
    ok = np.allclose(out, ref, rtol=1e-5, atol=1e-5)
    console.print(f"build time: vitis_spatial {spatial_s:.2f} s, llvm {llvm_s:.2f} s")
    console.print(
        f"emulation vs llvm: max |diff| = {err:.3g} over {out.size} outputs -> "
        + ("[green]MATCH[/green]" if ok else "[red]MISMATCH[/red]")
    )
    console.print(f"Vitis project: [bold]{project}[/bold] (make TARGET=sw_emu|hw_emu|hw)")
    return 0 if ok else 1


def parse_token_ids(text: str) -> list[int]:
    """``"1,2,3"`` -> ``[1, 2, 3]``; anything else is a :class:`UsageError`."""
    try:
        ids = [int(t) for t in text.split(",")]
    except ValueError:
        raise UsageError(f"--input-ids {text!r} is not a comma-separated list of integer token ids") from None
    return ids


def cmd_generate(args) -> int:
    """Greedy tokens from a GPT2 prefill + decode model pair, run in emulation."""
    from .generate import Generator, check_context, check_tokens, find_models, read_signature
    from .report import build_report

    prompt = parse_token_ids(args.input_ids)
    if args.max_new_tokens < 0:
        raise UsageError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    prefill, decode = find_models(args.model)
    signature = read_signature(prefill, decode)  # bad input fails before anything is built
    check_context(signature, len(check_tokens(signature, prompt)), args.max_new_tokens)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with console.status("building the prefill and decode designs"):
            start = time.perf_counter()
            if args.quant == "none":
                generator = Generator(prefill, decode, target=_target(args.device))
            else:
                from .quantization import quantized_generator

                generator = quantized_generator(prefill, decode, args.quant, target=_target(args.device))
            seconds = time.perf_counter() - start
    for w in caught:
        console.print(f"[yellow]warning:[/yellow] {w.message}")
    for stage, ex in generator.executables.items():
        report = build_report(ex)
        host = ", ".join(report.host_ops) or "none"
        console.print(f"{stage}: {len(report.design.kernels)} kernel(s), {report.offloaded_ops} operators "
                      f"offloaded, on the host: {host}")
    console.print(f"built in {seconds:.2f} s; context {generator.max_context} positions, prefill "
                  f"{generator.prefill_length or '-'} tokens, vocabulary {generator.vocab_size}")
    result = generator.run(prompt, args.max_new_tokens)
    console.print(f"prompt: {','.join(map(str, result.prompt))}")
    console.print(f"generated: {','.join(map(str, result.tokens))}")
    rate = f", {result.decode_tokens_per_second:.1f} tokens/s" if result.decode_steps else ""
    console.print(f"emulation: prompt {result.prefill_seconds * 1e3:.1f} ms, {result.decode_steps} decode "
                  f"steps {result.decode_seconds * 1e3:.1f} ms{rate}")
    return 0


def cmd_estimate(args) -> int:
    """Latency and resources of a model's spatial design, from the analytical model."""
    from .estimate import allocate, design_from_onnx, design_work, estimate_work
    from .examples import EXAMPLES
    from .devices import get_device

    device = get_device(args.device)
    if args.model in EXAMPLES:
        from .project_api import design_of

        mod, _ = _load_model(args.model, None)
        ex, _ = _build(mod, args.device)
        design = design_of(ex)
    else:
        path = Path(args.model)
        if not path.is_file():
            raise UsageError(f"{args.model!r} is neither an ONNX file nor a bundled example ({', '.join(sorted(EXAMPLES))})")
        with console.status("importing and partitioning the model"):
            design = design_from_onnx(path, device.key, args.seq)
    work = design_work(design).with_precision(args.precision)
    if args.as_built:
        from .estimate import realized_config

        # what relax.build realized (allocate_for_codegen: MAC arrays, lanes, token blocks of
        # the row-wise processes, one channel per port), read back from the process records
        console.print("estimate of the design as relax.build generates it (its MAC arrays as built)")
        est = estimate_work(work, device, realized_config(design))
    else:
        console.print("estimate with the model's unconstrained allocation (every operator streaming token "
                      "blocks and multi-channel ports are not generated yet; --as-built for the generated design)")
        with console.status("allocating parallelism with the model"):
            est = allocate(work.streaming(), device, budget=args.budget).estimate
    est.print(console, limit=args.top)
    if args.html:
        Path(args.html).write_text(est.to_html(f"tvm-spatial estimate: {Path(args.model).name}"))
        console.print(f"HTML report written to [bold]{args.html}[/bold]")
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tvm-spatial", description=__doc__.split("\n")[0])
    parser.add_argument("--verbose", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("model", help="an ONNX file or a bundled example (mlp, encoder_block)")
        p.add_argument("-o", "--output", required=True, help="directory for the Vitis project")
        p.add_argument("--device", default="u280", help="FPGA card: u280 (default), u250, u55c")
        p.add_argument("--force", action="store_true", help="replace a non-empty output directory")

    p = sub.add_parser("compile", help="compile a model to a Vitis project")
    common(p)
    p.add_argument("--shape", action="append", metavar="NAME=D0,D1,...", help="static input shape")
    p.add_argument("--quant", choices=["none", "w8a8", "w4a8"], default="none", help=QUANT_HELP)
    p.add_argument("--calibration", metavar="NPZ", help="calibration inputs for --quant: one array per "
                   "model input, by name, with a leading sample axis")
    p.set_defaults(func=cmd_compile)
    p = sub.add_parser("demo", help="compile a bundled example, run it in emulation, compare with llvm")
    common(p)
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("run", help="run a compiled project's design in emulation (or through XRT with --xclbin)")
    p.add_argument("project", help="a directory written by 'tvm-spatial compile'")
    p.add_argument("--inputs", required=True, help=".npz file with one array per model input, by name")
    p.add_argument("--output", help="where to write the outputs (.npz; default PROJECT/outputs.npz)")
    p.add_argument("--xclbin", help="run the kernels on a card through XRT with this .xclbin (default: emulation)")
    p.add_argument("--device-index", type=int, default=0, help="XRT device index with --xclbin (default 0)")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("generate", help="greedy tokens from GPT2 prefill + decode models, in emulation")
    p.add_argument("model", help="a directory, a prefix P (P_prefill.onnx, P_decode.onnx) or one of the files")
    p.add_argument("--input-ids", required=True, metavar="ID,ID,...", help="the prompt's token ids")
    p.add_argument("--max-new-tokens", type=int, default=16, help="tokens to generate (default 16)")
    p.add_argument("--device", default="u280", help="FPGA card: u280 (default), u250, u55c")
    p.add_argument("--quant", choices=["none", "w8a8", "w4a8"], default="none",
                   help=QUANT_HELP.replace("on --calibration, or else ", "") + "; the decode design is "
                   "calibrated on random tokens stepped through the fp32 model from an empty cache")
    p.set_defaults(func=cmd_generate)
    p = sub.add_parser("estimate", help="estimate latency and resources of a model's design (analytical model)")
    p.add_argument("model", help="an ONNX file or a bundled example (mlp, encoder_block)")
    p.add_argument("--device", default="u280", help="FPGA card: u280 (default), u250, u55c")
    p.add_argument("--seq", type=int, help="sequence length to bind (the last dimension of each input)")
    p.add_argument("--precision", choices=["w8a8", "w4a8"], help="estimate the design quantized")
    p.add_argument("--budget", type=float, default=0.85, help="per-SLR resource budget of the allocation")
    p.add_argument("--as-built", "--as-generated", dest="as_built", action="store_true",
                   help="the design as relax.build generates it: the MAC arrays the codegen allocation "
                   "realized, whole-tensor buffers between processes, one channel per port "
                   "(default: the model's unconstrained allocation)")
    p.add_argument("--top", type=int, default=25, help="processes listed (slowest first)")
    p.add_argument("--html", help="also write an HTML report with plots")
    p.set_defaults(func=cmd_estimate)
    return parser


def one_line(err: BaseException) -> str:
    """The first line of an error's message; the rest is for ``--verbose``."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(err).__name__
    if len(lines) > 1:
        text += f" [{len(lines) - 1} more line(s): --verbose]"
    return text


def _print_error(kind: str, text: str) -> None:
    # soft_wrap: never break the line at the terminal width; escape: messages hold brackets
    console.print(f"[red]{kind}:[/red] {escape(text)}", highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except SpatialError as err:
        if args.verbose:
            raise
        _print_error("error", one_line(err))
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # noqa: BLE001 - anything else is our bug: still one line
        if args.verbose:
            raise
        _print_error("internal error", f"{type(err).__name__}: {one_line(err)} (a bug in tvm-spatial; "
                     "rerun with --verbose for the traceback and report it)")
        return 3


if __name__ == "__main__":
    sys.exit(main())
