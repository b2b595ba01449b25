"""The generated C++ itself: warning-free under ``-Werror``, and free of memory errors and
undefined behaviour under AddressSanitizer + UndefinedBehaviorSanitizer.

The sanitizer runs need the compiler's ``libasan.so`` (Debian: ``apt-get install g++``,
which pulls in ``libasan8``); they are skipped, with that reason, where it is missing.

How the sanitized run works: ``TVM_SPATIAL_EMULATION_FLAGS`` (read by
``codegen_hls.emulation`` at compile time, part of its cache key) adds ``SANITIZE_FLAGS``
to the emulation compile; a child Python then runs with the sanitizer runtimes in
``LD_PRELOAD`` (the instrumented code lives in a ``.so`` that TVM dlopens, so the runtime
must be in the process from the start) and a scratch cache dir. The child uses the Relax
VM's ``naive`` allocator: the default pooled allocator rounds buffers up, so an overrun of
a VM-allocated output would land in padding that ASan does not watch.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import tvm_spatial  # first: registers the target (and imports codegen_hls in the right order)
from codegen_hls import emulation
from codegen_hls.design import Design, Kernel, Port
from tvm_spatial.examples import EXAMPLES

EXAMPLE_NAMES = ("mlp", "encoder_block")
OK_MARKER = "SANITIZED-EMULATION-MATCHES-LLVM"
SANITIZER_REPORTS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer")
# A sanitized build of both fixture models takes about 215 s alone on 2 cores (slower
# under load): the limit catches a hang, not a slow compile.
CHILD_TIMEOUT_S = 600


# ---------------------------------------------------------------------------------------
# helpers


def _built_design(name: str) -> Design:
    from tvm import relax

    return tvm_spatial.design_of(relax.build(EXAMPLES[name]().mod, target="vitis_spatial"))


def _compile(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([emulation.host_compiler(), *args], cwd=cwd, capture_output=True, text=True)


def _strict_kernel_args(source: Path) -> list[str]:
    """How Vitis sees a kernel: C++17, only the Xilinx headers. ``-O2 -c`` rather than
    ``-fsyntax-only`` because GCC emits some warnings (-Warray-bounds, -Wstringop-*) only
    from its optimisers."""
    return [
        "-std=c++17", "-O2", "-c", "-isystem", str(emulation.xilinx_include_dir()),
        *emulation.STRICT_FLAGS, str(source), "-o", os.devnull,
    ]


def _sanitizer_runtimes() -> list[str]:
    """Absolute paths of the compiler's libasan.so and libubsan.so, or skip."""
    libs = []
    for name in ("libasan.so", "libubsan.so"):
        out = _compile([f"-print-file-name={name}"], Path.cwd()).stdout.strip()
        # an unknown file is echoed back bare (that is also what clang says for these)
        if not out or not os.path.isabs(out) or not os.path.exists(out):
            pytest.skip(
                f"the host compiler ({emulation.host_compiler()}) has no {name}: install the "
                "GCC sanitizer runtimes (Debian: apt-get install libasan8 libubsan1)"
            )
        libs.append(os.path.realpath(out))
    return libs


def _run_sanitized(script: str, tmp_path: Path, *args: str, timeout: float = CHILD_TIMEOUT_S,
                   extra_flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run ``script`` in a child Python with sanitized emulation builds."""
    libs = _sanitizer_runtimes()
    path = tmp_path / "child.py"
    path.write_text(textwrap.dedent(script))
    env = dict(os.environ)
    env.update(
        {
            emulation.EXTRA_FLAGS_ENV: " ".join((*emulation.SANITIZE_FLAGS, *extra_flags)),
            "TVM_SPATIAL_CACHE_DIR": str(tmp_path / "cache"),  # never the user's cache
            "LD_PRELOAD": " ".join([*libs, env.get("LD_PRELOAD", "")]).strip(),
            "ASAN_OPTIONS": "detect_leaks=0",  # CPython itself leaks at exit
            "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return subprocess.run(
        [sys.executable, str(path), *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout,
    )


def _explain(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-6000:]}"


# ---------------------------------------------------------------------------------------
# -Werror


def test_strict_flags_reject_a_warning(tmp_path):
    """Control for the test below: the strict compile does fail on a warning."""
    src = tmp_path / "warns.cpp"
    src.write_text('extern "C" void k(const float a[4], float b[4]) {\n  int unused = 0;\n'
                   "  for (int i = 0; i < 4; ++i) b[i] = a[i];\n}\n")
    proc = _compile(_strict_kernel_args(src), tmp_path)
    assert proc.returncode != 0 and "unused" in proc.stderr, _explain(proc)


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_kernels_compile_with_werror(name, tmp_path):
    design = _built_design(name)
    assert design.kernels, f"{name}: nothing was offloaded"
    tu = emulation.write_sources(design, tmp_path)  # common header, every kernel, the TU
    assert (tmp_path / Design.COMMON_HEADER_NAME).read_text() == design.common_header

    for kernel in design.kernels:
        source = tmp_path / kernel.filename
        assert source.read_text() == kernel.source
        proc = _compile(_strict_kernel_args(source), tmp_path)
        assert proc.returncode == 0, f"{name}: kernel {kernel.name} is not -Werror clean:\n{proc.stderr}"
        assert proc.stderr == "", proc.stderr

    # the emulation translation unit (kernels #included, plus the TVM-FFI entry points)
    proc = _compile(
        [*emulation.base_flags(), "-O2", "-c", *emulation.STRICT_FLAGS, str(tu), "-o", os.devnull],
        tmp_path,
    )
    assert proc.returncode == 0, f"{name}: the emulation TU is not -Werror clean:\n{proc.stderr}"
    assert proc.stderr == "", proc.stderr


# ---------------------------------------------------------------------------------------
# ASan + UBSan

EXAMPLES_CHILD = f"""
    import sys
    import numpy as np
    import tvm
    from tvm import relax
    import tvm_spatial
    from codegen_hls import emulation
    from tvm_spatial.examples import EXAMPLES

    assert "-fsanitize=address,undefined" in emulation.extra_flags(), emulation.extra_flags()

    def run(ex, inputs, memory_cfg):
        vm = relax.VirtualMachine(ex, tvm.cpu(), memory_cfg=memory_cfg)
        out = vm["main"](*[tvm.runtime.tensor(v) for v in inputs])
        outs = [out] if isinstance(out, tvm.runtime.Tensor) else list(out)
        return [o.numpy() for o in outs]

    for name in sys.argv[1:]:
        example = EXAMPLES[name]()
        inputs = list(example.inputs.values())
        spatial = relax.build(example.mod, target="vitis_spatial")
        assert tvm_spatial.design_of(spatial).kernels, name
        got = run(spatial, inputs, "naive")  # exact-size buffers: ASan sees every overrun
        want = run(relax.build(example.mod, target="llvm"), inputs, "pooled")
        assert len(got) == len(want), name
        for g, w in zip(got, want):
            assert g.shape == w.shape and g.dtype == w.dtype, name
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=name)
        print("checked", name, flush=True)
    print("{OK_MARKER}", flush=True)
"""


def test_emulation_runs_clean_under_sanitizers(tmp_path):
    proc = _run_sanitized(EXAMPLES_CHILD, tmp_path, *EXAMPLE_NAMES)
    for report in SANITIZER_REPORTS:
        assert report not in proc.stderr, _explain(proc)
    assert proc.returncode == 0, _explain(proc)
    assert OK_MARKER in proc.stdout, _explain(proc)
    for name in EXAMPLE_NAMES:
        assert f"checked {name}" in proc.stdout, _explain(proc)
    # the objects really were built with the sanitizers (not taken from a plain cache)
    objects = list((tmp_path / "cache").glob("*.o"))
    assert len(objects) == len(EXAMPLE_NAMES), objects
    for obj in objects:
        assert b"__asan_" in obj.read_bytes() and b"__ubsan_" in obj.read_bytes(), obj


# A hand-written design: one clean kernel, then the bug. Running the clean kernel first
# shows that the sanitized library loads and works, so the failure is the report.
_COPY = (
    'extern "C" void copy16(const float a[16], float c[16]) {\n'
    "  for (int i = 0; i < 16; ++i) c[i] = a[i];\n"
    "}\n"
)
_BUGS = {
    # off by one past the caller's output tensor (a pointer, so only ASan can see it)
    "asan-off-by-one-write": (
        'extern "C" void buggy(const float a[16], float c[16]) {\n'
        "  for (int i = 0; i <= 16; ++i) c[i] = a[i < 16 ? i : 0];\n"
        "}\n",
        "float32",
        ("ERROR: AddressSanitizer: heap-buffer-overflow", "WRITE of size 4", "buggy.cpp:3"),
    ),
    # signed overflow: undefined behaviour that only UBSan reports
    "ubsan-signed-overflow": (
        'extern "C" void buggy(const int32_t a[16], int32_t c[16]) {\n'
        "  for (int i = 0; i < 16; ++i) c[i] = a[i] + 2147483647;\n"
        "}\n",
        "int32",
        ("buggy.cpp:3", "runtime error: signed integer overflow"),
    ),
}

HARNESS_CHILD = """
    import os, sys, tempfile
    import numpy as np
    import tvm
    import tvm_spatial
    from codegen_hls.design import Design
    from codegen_hls.emulation import emulation_module

    design = Design.from_json(open(sys.argv[1]).read())
    lib_path = os.path.join(tempfile.mkdtemp(dir="."), "design.so")
    emulation_module(design).export_library(lib_path)  # the same compile as relax.build's
    lib = tvm.runtime.load_module(lib_path)
    dtype = sys.argv[2]
    a = tvm.runtime.tensor(np.arange(1, 17).astype(dtype))
    c = tvm.runtime.empty((16,), dtype)
    lib["copy16"](tvm.runtime.tensor(np.ones(16, "float32")), tvm.runtime.empty((16,), "float32"))
    print("CLEAN-KERNEL-RAN", flush=True)
    lib["buggy"](a, c)
    print("BUG-NOT-CAUGHT", flush=True)
"""


@pytest.mark.parametrize("bug", sorted(_BUGS))
def test_sanitizer_harness_catches_out_of_bounds(bug, tmp_path):
    source, dtype, expected = _BUGS[bug]
    header = "#pragma once\n#include <cstdint>\n"
    include = f'#include "{Design.COMMON_HEADER_NAME}"\n'

    def ports(dt):
        return (Port("a", dt, (16,), "in", "gmem0"), Port("c", dt, (16,), "out", "gmem1"))

    design = Design(
        device="u280",
        kernels=(
            Kernel("copy16", include + _COPY, ports("float32"), ("relax.add",)),
            Kernel("buggy", include + source, ports(dtype), ("relax.add",)),
        ),
        common_header=header,
    )
    manifest = tmp_path / "design.json"
    manifest.write_text(design.to_json())
    proc = _run_sanitized(HARNESS_CHILD, tmp_path, str(manifest), dtype)
    assert "CLEAN-KERNEL-RAN" in proc.stdout, _explain(proc)
    assert "BUG-NOT-CAUGHT" not in proc.stdout, _explain(proc)
    assert proc.returncode != 0, _explain(proc)
    for text in expected:
        assert text in proc.stderr, f"missing {text!r}\n" + _explain(proc)
