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


def cmd_compile(args) -> int:
    from rich.progress import Progress

    from .project_api import export_project
    from .report import build_report

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("importing the model", total=4)
        mod, _ = _load_model(args.model, args.shape)
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
    start = time.perf_counter()
    out = vm["main"](*[tvm.runtime.tensor(arrays[n]) for n in names])
    seconds = time.perf_counter() - start
    outputs = [out] if isinstance(out, tvm.runtime.Tensor) else list(out)
    results = {f"output{i}": o.numpy() for i, o in enumerate(outputs)}
    target = Path(args.output) if args.output else Path(args.project) / "outputs.npz"
    np.savez(target, **results)
    for name, value in results.items():
        console.print(f"{name}: {value.dtype}{list(value.shape)}")
    console.print(f"ran in {seconds * 1e3:.1f} ms (emulation); outputs written to [bold]{target}[/bold]")
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
    err = float(np.max(np.abs(out - ref)))
    ok = np.allclose(out, ref, rtol=1e-5, atol=1e-5)
    console.print(f"build time: vitis_spatial {spatial_s:.2f} s, llvm {llvm_s:.2f} s")
    console.print(
        f"emulation vs llvm: max |diff| = {err:.3g} over {out.size} outputs -> "
        + ("[green]MATCH[/green]" if ok else "[red]MISMATCH[/red]")
    )
    console.print(f"Vitis project: [bold]{project}[/bold] (make TARGET=sw_emu|hw_emu|hw)")
    return 0 if ok else 1


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
    p.set_defaults(func=cmd_compile)
    p = sub.add_parser("demo", help="compile a bundled example, run it in emulation, compare with llvm")
    common(p)
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("run", help="run a compiled project's design in emulation")
    p.add_argument("project", help="a directory written by 'tvm-spatial compile'")
    p.add_argument("--inputs", required=True, help=".npz file with one array per model input, by name")
    p.add_argument("--output", help="where to write the outputs (.npz; default PROJECT/outputs.npz)")
    p.set_defaults(func=cmd_run)
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
