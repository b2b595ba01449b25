"""The ``tvm-spatial`` command line.

``compile`` turns an ONNX file or a bundled example into a Vitis project; ``demo`` also
runs the design in emulation next to TVM's ``llvm`` build and prints both side by side.
Project errors print as one line (``--verbose`` for the traceback) and exit with 2.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from rich.console import Console

from .errors import SpatialError

console = Console()


def _load_model(model: str, shapes: list[str] | None):
    """An ONNX path or a bundled example name -> (Relax module, example inputs or None)."""
    from .examples import EXAMPLES, get_example

    if model in EXAMPLES:
        example = get_example(model)
        return example.mod, example.inputs
    path = Path(model)
    if not path.is_file():
        raise SpatialError(
            f"{model!r} is neither an ONNX file nor a bundled example ({', '.join(sorted(EXAMPLES))})"
        )
    from .frontend import from_onnx

    shape_dict = {}
    for item in shapes or []:
        name, _, dims = item.partition("=")
        try:
            shape_dict[name] = [int(d) for d in dims.split(",") if d]
        except ValueError:
            raise SpatialError(f"--shape {item!r} is not NAME=D0,D1,... with integer sizes") from None
    return from_onnx(path, shape_dict=shape_dict or None), None


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


def cmd_compile(args) -> int:
    from .project_api import export_project
    from .report import build_report

    mod, _ = _load_model(args.model, args.shape)
    ex, seconds = _build(mod, args.device)
    out = export_project(ex, args.output, force=args.force)
    build_report(ex).print(console)
    console.print(f"built in {seconds:.2f} s; Vitis project written to [bold]{out}[/bold]")
    return 0


def cmd_demo(args) -> int:
    import numpy as np
    import tvm
    from tvm import relax

    from .project_api import export_project
    from .report import build_report

    mod, inputs = _load_model(args.model, None)
    if inputs is None:
        raise SpatialError("demo runs bundled examples only; use 'compile' for ONNX files")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except SpatialError as err:
        if args.verbose:
            raise
        console.print(f"[red]error:[/red] {err}", highlight=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
