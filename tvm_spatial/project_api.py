"""Get the design back out of a build, and write it as a Vitis project.

Why read it from the compiled module: the design manifest travels inside the module
``relax.build`` returned (and inside a library exported from it), so the project can be
written from either, in this process or a later one.
"""

from __future__ import annotations

import os
from pathlib import Path

import tvm

from codegen_hls.design import Design
from codegen_hls.emulation import MANIFEST_SYMBOL

from .errors import DesignNotFoundError


def _runtime_module(built) -> tvm.runtime.Module:
    if isinstance(built, (str, os.PathLike)):
        path = Path(built)
        if not path.is_file():
            raise DesignNotFoundError(f"no compiled library at {path}")
        return tvm.runtime.load_module(str(path))
    if isinstance(built, tvm.runtime.Executable):
        return built.jit()
    if isinstance(built, tvm.runtime.Module):
        return built
    raise TypeError(f"expected a relax Executable, a runtime Module or a library path, got {type(built).__name__}")


def design_of(built) -> Design:
    """The vitis_spatial design inside ``built`` (an Executable, Module or exported .so)."""
    module = _runtime_module(built)
    try:
        func = module.get_function(MANIFEST_SYMBOL, query_imports=True)
    except AttributeError:
        func = None
    if func is None:
        raise DesignNotFoundError(
            "this module holds no vitis_spatial design: build it with "
            "relax.build(mod, target=\"vitis_spatial\")"
        )
    return Design.from_json(str(func()))


def export_project(built, out_dir, *, force: bool = False) -> Path:
    """Write the Vitis project (kernels, connectivity, Makefile, host) of a build."""
    from codegen_hls.project import write_project

    return write_project(design_of(built), out_dir, force=force)
