"""Write a :class:`Design` as a Vitis project an engineer with the AMD tools builds as-is.

Layout::

    kernels/<name>.cpp, kernels/tvm_spatial_hls.h   HLS sources (byte-identical to emulation's)
    connectivity.cfg, Makefile, run.sh, README.md   build and run (see ``vitis_files``)
    host/host.cpp                                   XRT host program (see ``host_code``)
    metadata/design.metadata_only.xclbin            kernel interface only, no bitstream
                                                    (see ``xclbin``): the host checks against
                                                    it under XRT's noop shim

Why a staging directory: the tree is written next to ``out_dir`` and renamed into place,
so a failure never leaves half a project, and ``force`` drops the old tree only once the
new one is complete.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import tempfile

from tvm_spatial.devices import get_device
from tvm_spatial.errors import CodegenError, OutputDirError

from . import vitis_files
from .lint import check_design
from .xclbin import metadata_xclbin
from .design import Design
from .host_code import check_ports, host_cpp

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _check_names(design: Design) -> None:
    """Kernel and port names become C symbols, file names and cfg keys: keep them plain."""
    seen: set[str] = set()
    for kernel in design.kernels:
        if not _IDENTIFIER.match(kernel.name) or kernel.name in seen:
            raise CodegenError(f"kernel name {kernel.name!r} is not a unique C identifier")
        seen.add(kernel.name)
        ports = [p.name for p in kernel.ports]
        for name in ports:
            if not _IDENTIFIER.match(name) or ports.count(name) > 1:
                raise CodegenError(
                    f"kernel {kernel.name!r} port {name!r} is not a unique C identifier"
                )
        for vk in kernel.vitis_kernels():
            if vk.name == kernel.name:
                continue
            if not _IDENTIFIER.match(vk.name) or vk.name in seen:
                raise CodegenError(f"SLR segment kernel name {vk.name!r} is not a unique C identifier")
            seen.add(vk.name)


def project_files(design: Design) -> dict[str, tuple[bytes, bool]]:
    """Relative path -> (content, executable), in a fixed order: the whole project in memory."""
    _check_names(design)
    check_ports(design)
    device = get_device(design.device)
    placement = vitis_files.place(design, device)
    connectivity = vitis_files.connectivity_cfg(design, device, placement)
    check_design(design, placement.banks, connectivity)  # LintError: Vitis would reject or mis-build it
    files: dict[str, tuple[bytes, bool]] = {}
    for kernel in design.kernels:
        files[f"kernels/{kernel.filename}"] = (kernel.source.encode("utf-8"), False)
    files[f"kernels/{Design.COMMON_HEADER_NAME}"] = (design.common_header.encode("utf-8"), False)
    text_files = {
        "connectivity.cfg": (connectivity, False),
        "Makefile": (vitis_files.makefile(design, device), False),
        "host/host.cpp": (host_cpp(design), False),
        "run.sh": (vitis_files.run_sh(), True),
        "README.md": (vitis_files.readme(design, device, placement), False),
    }
    for path, (text, executable) in text_files.items():
        files[path] = (text.encode("utf-8"), executable)
    files[vitis_files.METADATA_XCLBIN] = (metadata_xclbin(design, placement), False)
    return files


def _write_tree(root: pathlib.Path, files: dict[str, tuple[bytes, bool]]) -> None:
    for rel, (content, executable) in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)  # bytes: no newline translation
        if executable:
            path.chmod(path.stat().st_mode | 0o111)


def _check_target(out: pathlib.Path, force: bool) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise OutputDirError(
            f"output path {out} exists and is not a directory; choose another path"
        )
    if out.is_dir() and not force and any(out.iterdir()):
        raise OutputDirError(
            f"output directory {out} is not empty; pass force=True (--force on the command "
            "line) to replace it, or choose another directory"
        )


def _install(staging: pathlib.Path, tree: pathlib.Path, out: pathlib.Path) -> None:
    """Rename the finished tree to ``out``; an existing ``out`` is parked until that succeeded."""
    if not out.exists():
        os.rename(tree, out)
        return
    old = staging / "old"
    os.rename(out, old)
    try:
        os.rename(tree, out)
    except OSError:
        os.rename(old, out)
        raise


def _os_error(out: pathlib.Path, exc: OSError) -> OutputDirError:
    return OutputDirError(f"cannot write the Vitis project to {out}: {exc.strerror or exc}")


def write_project(design: Design, out_dir, *, force: bool = False) -> pathlib.Path:
    """Write the Vitis project of ``design`` to ``out_dir`` and return its absolute path.

    Refuses a non-empty ``out_dir`` unless ``force``; raises :class:`OutputDirError` naming
    the path for that and for any file-system failure, and :class:`LintError` (before
    touching the disk) when a kernel breaks a synthesizability rule (``codegen_hls.lint``).
    Same design -> byte-identical files.
    """
    out = pathlib.Path(os.path.abspath(os.fspath(out_dir)))
    files = project_files(design)  # generation errors surface before touching the disk
    try:
        _check_target(out, force)
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as exc:
        raise _os_error(out, exc) from exc
    try:
        tree = staging / "tree"
        tree.mkdir()  # not mkdtemp's 0700: the project gets the user's usual permissions
        _write_tree(tree, files)
        _install(staging, tree, out)
    except OSError as exc:
        raise _os_error(out, exc) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
