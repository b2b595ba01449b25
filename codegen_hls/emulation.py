"""Emulation: the design's HLS C++, compiled by the host compiler, as a TVM module.

Why an object file: ``relax.VirtualMachine`` compiles C *source* modules itself with a
bare ``g++ -shared`` (no ``-O2``, no include path for the Xilinx headers). We compile the
kernels here, once, with ``-O2 -isystem <ap_types>``, and hand TVM a ``static_library``
module: ``jit`` and ``export_library`` then only link it. The translation unit
``#include``s the very kernel files written to the Vitis project, followed by thin
TVM-FFI entry points (argument checks, then the kernel call) and one function that
returns the design manifest, so an exported library can still write its project.

Environment:

``TVM_SPATIAL_CACHE_DIR``
    Where compiled objects are cached (default ``$XDG_CACHE_HOME/tvm-spatial/emulation``).
``TVM_SPATIAL_RUNTIME``
    ``emulation`` (the default) runs the compiled kernels here; ``xrt`` hands every kernel
    call to :mod:`codegen_hls.xrt_runtime` (through the global FFI function
    ``XRT_DISPATCH``), which runs it on the ``.xclbin`` named by ``TVM_SPATIAL_XCLBIN``
    through XRT. Read at every call, so :func:`tvm_spatial.runtime_mode` can switch an
    already-loaded executable.
``TVM_SPATIAL_EMULATION_FLAGS``
    Extra compiler flags (split like a shell command line) appended to every emulation
    compile, e.g. ``SANITIZE_FLAGS`` to build the kernels with ASan+UBSan. They are part of
    the cache key. A sanitized object needs the sanitizer runtimes in the process: run
    Python with ``LD_PRELOAD`` of the compiler's ``libasan.so`` and ``libubsan.so`` (see
    ``tests/test_generated_cpp.py``), and point the cache at a scratch directory.
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from functools import lru_cache
from importlib import resources
from pathlib import Path

import tvm
import tvm_ffi

from tvm_spatial.errors import CodegenError, ToolchainError

from .c_types import c_type, needs_ap_types
from .code_writer import CodeWriter
from .design import Design, Kernel, Port
from .host_code import written_args
from .kernel import EMULATION_STREAM_HEADER, EMULATION_STREAMS_MACRO

MANIFEST_SYMBOL = "vitis_spatial_design"
RUNTIME_ENV = "TVM_SPATIAL_RUNTIME"
RUNTIME_MODES = ("emulation", "xrt")
# Global FFI function a kernel entry calls in xrt mode: (kernel name, design manifest, tensors...).
XRT_DISPATCH = "tvm_spatial.runtime.run_kernel_on_xrt"

# Warnings the Xilinx headers trigger on their own (DESIGN.md); kernel code stays clean.
HEADER_WARNING_EXCEPTIONS = ("-Wno-unknown-pragmas", "-Wno-uninitialized", "-Wno-maybe-uninitialized")
STRICT_FLAGS = ("-Wall", "-Wextra", "-Werror", *HEADER_WARNING_EXCEPTIONS)
# -O1 (after OPT_FLAGS, so it wins) is what ASan's own docs advise: at -O3 with -g the
# sanitized emulation TU of the BERT fixture took 86 s to compile, at -O1 12.6 s.
SANITIZE_FLAGS = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer",
                  "-g", "-O1")
EXTRA_FLAGS_ENV = "TVM_SPATIAL_EMULATION_FLAGS"
# Emulation runs the kernels at host speed: -O3 and this machine's vector units. The
# object (and a library exported from it) then needs a CPU like this one; the kernel
# sources themselves are unaffected. No -ffast-math: it would change NaN/Inf behaviour.
# -fno-tree-loop-if-convert: GCC 12.2 miscompiles a concat at -O3 with AVX2/AVX-512 if-conversion
# (tests/regressions/test_relax_concat_mismatch.py); -O2 and this flag give the right answer.
# On x86, GCC keeps to 256-bit vectors on AVX-512 parts unless told: the matmul tiles run
# about 1.5x faster with full-width vectors (56 vs 40 GFLOP/s measured on a 128x768x3072 tile).
OPT_FLAGS = ("-O3", "-march=native", "-fno-tree-loop-if-convert") + (
    ("-mprefer-vector-width=512",) if platform.machine() in ("x86_64", "AMD64") else ()
)

# The emulation's hls::stream (codegen_hls/include/tvm_spatial_emulation_stream.h): the
# common header picks it over Xilinx's C-simulation stream when the macro is defined.
EMULATION_INCLUDE_DIR = Path(__file__).resolve().parent / "include"
EMULATION_DEFINES = (f"-D{EMULATION_STREAMS_MACRO}",)

_DL_CODES = {"int": 0, "uint": 1, "float": 2, "bool": 6}


@lru_cache(maxsize=1)
def xilinx_include_dir() -> Path:
    """Xilinx's ap_int/ap_fixed/hls_stream headers, shipped inside the hls4ml wheel."""
    try:
        root = resources.files("hls4ml").joinpath("templates/vivado/ap_types")
    except ModuleNotFoundError:
        root = None
    path = Path(str(root)) if root is not None else None
    if path is None or not (path / "ap_int.h").is_file():
        raise ToolchainError(
            "Xilinx HLS headers (ap_int.h, hls_stream.h) not found: install the 'hls4ml' "
            "package (pip install hls4ml), which ships them"
        )
    return path


@lru_cache(maxsize=1)
def host_compiler() -> str:
    for candidate in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    raise ToolchainError(
        "no C++ compiler found (tried $CXX, g++, c++, clang++): install one, e.g. "
        "'apt-get install g++'"
    )


@lru_cache(maxsize=1)
def _compiler_identity() -> str:
    out = subprocess.run([host_compiler(), "--version"], capture_output=True, text=True)
    return out.stdout


def base_flags() -> list[str]:
    # -ffp-contract=off: each multiply and add rounded on its own, as the HLS operators
    # compute them. GCC's default fuses a * b + c into an FMA where the code's shape lets
    # it, so the same sums took other bits with a weight striped (codegen_hls.weight_stripes)
    # than without (GPT2 fixture: 1.4e-6); measured cost on GPT2-small's emulation: none.
    return [
        "-std=c++17",
        "-ffp-contract=off",
        "-fPIC",
        "-I",
        str(EMULATION_INCLUDE_DIR),
        "-isystem",
        str(xilinx_include_dir()),
        "-isystem",
        tvm_ffi.libinfo.find_include_path(),
    ]


def extra_flags() -> list[str]:
    """Flags from ``TVM_SPATIAL_EMULATION_FLAGS``, read at every compile (not cached)."""
    return shlex.split(os.environ.get(EXTRA_FLAGS_ENV, ""))


def _dl_dtype(dtype: str) -> tuple[int, int]:
    if dtype == "bool":
        return _DL_CODES["bool"], 8
    for prefix in ("uint", "int", "float"):
        if dtype.startswith(prefix):
            return _DL_CODES[prefix], int(dtype[len(prefix):])
    raise CodegenError(f"dtype {dtype} cannot cross the emulation boundary")


def _pointer_type(port: Port) -> str:
    const = "const " if port.direction == "in" else ""
    inner = "".join(f"[{d}]" for d in port.shape[1:])
    if inner:
        return f"{const}{c_type(port.dtype)} (*){inner}"
    return f"{const}{c_type(port.dtype)}*"


def _write_runtime_support(w: CodeWriter, in_place: bool = False, striped: bool = False) -> None:
    """Argument checking shared by every kernel's FFI entry point (``in_place``: and the
    result of a kernel that updates an argument in place; ``striped``: and the copy of a
    weight's stripe for a port that reads one)."""
    w.line("namespace tvs_emulation {")
    w.line("struct PortSpec { const char* name; int code; int bits; int ndim; int64_t shape[8]; };")
    w.line()
    with w.block("static int fail(const char* kind, const std::string& message)"):
        w.line("TVMFFIErrorSetRaisedFromCStr(kind, message.c_str());")
        w.line("return -1;")
    w.line()
    w.line("static std::string describe(int code, int bits, int ndim, const int64_t* shape) {")
    with w.indented():
        w.line('static const char* kinds[] = {"int", "uint", "float", "?", "?", "?", "bool"};')
        w.line('std::string s = (code >= 0 && code <= 6) ? kinds[code] : "?";')
        w.line('if (code != 6) s += std::to_string(bits);')
        w.line('s += "[";')
        w.line('for (int i = 0; i < ndim; ++i) s += (i ? "," : "") + std::to_string(shape[i]);')
        w.line('return s + "]";')
    w.line("}")
    w.line()
    w.line("// Checks that args[i] is a compact CPU tensor matching ports[i]; fills data[i].")
    w.line("static int bind(const char* kernel, const TVMFFIAny* args, int32_t num_args,")
    w.line("                const PortSpec* ports, int32_t num_ports, void** data) {")
    with w.indented():
        with w.block("if (num_args != num_ports)"):
            w.line('return fail("TypeError", std::string(kernel) + ": expected " + std::to_string(num_ports) +')
            w.line('            " tensor arguments, got " + std::to_string(num_args));')
        with w.block("for (int32_t i = 0; i < num_ports; ++i)"):
            w.line("const PortSpec& p = ports[i];")
            w.line("const DLTensor* t = nullptr;")
            w.line("if (args[i].type_index == kTVMFFIDLTensorPtr) t = static_cast<const DLTensor*>(args[i].v_ptr);")
            w.line("else if (args[i].type_index == kTVMFFITensor) t = TVMFFITensorGetDLTensorPtr(args[i].v_obj);")
            with w.block("if (t == nullptr)"):
                w.line('return fail("TypeError", std::string(kernel) + ": argument " + p.name + " is not a tensor");')
            w.line("bool ok = t->ndim == p.ndim && t->dtype.code == p.code && t->dtype.bits == p.bits &&")
            w.line("          t->dtype.lanes == 1;")
            w.line("for (int d = 0; ok && d < p.ndim; ++d) ok = t->shape[d] == p.shape[d];")
            with w.block("if (!ok)"):
                w.line('return fail("ValueError", std::string(kernel) + ": port " + p.name + " expects " +')
                w.line("            describe(p.code, p.bits, p.ndim, p.shape) + \", got \" +")
                w.line("            describe(t->dtype.code, t->dtype.bits, t->ndim, t->shape));")
            with w.block("if (t->device.device_type != kDLCPU)"):
                w.line('return fail("ValueError", std::string(kernel) + ": port " + p.name +')
                w.line('            " must be a CPU tensor in emulation");')
            w.line("int64_t expected_stride = 1;")
            with w.block("for (int d = p.ndim - 1; t->strides != nullptr && d >= 0; --d)"):
                with w.block("if (p.shape[d] != 1 && t->strides[d] != expected_stride)"):
                    w.line('return fail("ValueError", std::string(kernel) + ": port " + p.name +')
                    w.line('            " must be a compact (row-major, contiguous) tensor");')
                w.line("expected_stride *= p.shape[d];")
            w.line("data[i] = static_cast<char*>(t->data) + t->byte_offset;")
        w.line("return 0;")
    w.line("}")
    w.line()
    w.line(f"// {RUNTIME_ENV}: 1 = run here, 0 = hand the call to XRT, -1 = an error is set.")
    with w.block("static int run_here(const char* kernel)"):
        w.line(f'const char* mode = std::getenv("{RUNTIME_ENV}");')
        w.line('if (mode == nullptr || *mode == 0 || std::strcmp(mode, "emulation") == 0) return 1;')
        w.line('if (std::strcmp(mode, "xrt") == 0) return 0;')
        w.line(f'fail("ValueError", std::string(kernel) + ": {RUNTIME_ENV}=" + mode +')
        w.line(f'     " is not a runtime mode (valid: {", ".join(RUNTIME_MODES)})");')
        w.line("return -1;")
    w.line()
    w.line("// Calls the Python XRT runner with (kernel, manifest, the kernel's tensors...).")
    w.line("static int run_on_xrt(const char* kernel, const char* manifest, const TVMFFIAny* args,")
    w.line("                      int32_t num_args, TVMFFIAny* result) {")
    with w.indented():
        w.line(f'static const char name[] = "{XRT_DISPATCH}";')
        w.line("TVMFFIByteArray bytes{name, sizeof(name) - 1};")
        w.line("TVMFFIObjectHandle fn = nullptr;")
        w.line("if (TVMFFIFunctionGetGlobal(&bytes, &fn) != 0) return -1;")
        with w.block("if (fn == nullptr)"):
            w.line(f'return fail("RuntimeError", std::string(kernel) + ": {RUNTIME_ENV}=xrt, but the XRT "')
            w.line('            "runner is not registered in this process: import tvm_spatial first");')
        w.line("std::vector<TVMFFIAny> call(static_cast<size_t>(num_args) + 2);")
        w.line("call[0].type_index = kTVMFFIRawStr;")
        w.line("call[0].v_c_str = kernel;")
        w.line("call[1].type_index = kTVMFFIRawStr;")
        w.line("call[1].v_c_str = manifest;")
        w.line("for (int32_t i = 0; i < num_args; ++i) call[i + 2] = args[i];")
        w.line("int rc = TVMFFIFunctionCall(fn, call.data(), num_args + 2, result);")
        w.line("TVMFFIObjectDecRef(fn);")
        w.line("return rc;")
    w.line("}")
    if in_place:
        _write_return_args(w)
    if striped:
        w.line()
        w.line("// One stripe of a [rows, cols] weight (design.Port.stripe), tile-major: of every tile of")
        w.line("// count x group columns, the group from index * group, rows in order; zeros past the last column.")
        w.line("template <typename T>")
        w.line("static void stripe(const T* src, T* dst, int64_t rows, int64_t cols, int64_t count, int64_t group,")
        w.line("                   int64_t index, int64_t tiles) {")
        with w.indented():
            w.line("const int64_t tile = count * group;")
            with w.block("for (int64_t t = 0; t < tiles; ++t)"):
                w.line("const int64_t first = t * tile + index * group;")
                w.line("const int64_t n = first >= cols ? 0 : (cols - first < group ? cols - first : group);")
                with w.block("for (int64_t r = 0; r < rows; ++r)"):
                    w.line("T* out = dst + (t * rows + r) * group;")
                    w.line("if (n > 0) std::memcpy(out, src + r * cols + first, static_cast<size_t>(n) * sizeof(T));")
                    w.line("for (int64_t i = n; i < group; ++i) out[i] = T(0);")
        w.line("}")
    w.line("}  // namespace tvs_emulation")


def _write_return_args(w: CodeWriter) -> None:
    w.line()
    w.line("// The result of an in-place kernel: an ffi.Array of the arguments it wrote.")
    w.line("static int return_args(const TVMFFIAny* args, const int* which, int count, TVMFFIAny* result) {")
    with w.indented():
        w.line('static const char name[] = "ffi.Array";')
        w.line("TVMFFIByteArray bytes{name, sizeof(name) - 1};")
        w.line("TVMFFIObjectHandle fn = nullptr;")
        w.line("if (TVMFFIFunctionGetGlobal(&bytes, &fn) != 0) return -1;")
        w.line('if (fn == nullptr) return fail("RuntimeError", "ffi.Array is not registered");')
        w.line("std::vector<TVMFFIAny> items(static_cast<size_t>(count));")
        w.line("for (int i = 0; i < count; ++i) items[i] = args[which[i]];")
        w.line("int rc = TVMFFIFunctionCall(fn, items.data(), count, result);")
        w.line("TVMFFIObjectDecRef(fn);")
        w.line("return rc;")
    w.line("}")


def _write_entry_point(w: CodeWriter, kernel: Kernel) -> None:
    for port in kernel.ports:
        if needs_ap_types(port.dtype):
            raise CodegenError(
                f"kernel {kernel.name}: port {port.name} has dtype {port.dtype}, which host "
                "tensors cannot carry; keep ports in standard types and convert inside the kernel"
            )
    args = [port.arg if port.arg >= 0 else i for i, port in enumerate(kernel.ports)]
    feeds = [port.layers or (arg,) for port, arg in zip(kernel.ports, args)]  # a stacked port: every layer's
    n = max((a for fed in feeds for a in fed), default=-1) + 1
    first = {}
    for port, fed in zip(kernel.ports, feeds):
        for a in fed:
            first.setdefault(a, port)
    if sorted(first) != list(range(n)):
        raise CodegenError(f"kernel {kernel.name}: port arguments {sorted(first)} are not 0..{n - 1}")
    w.line()
    w.line(f"extern \"C\" TVM_FFI_DLL_EXPORT int __tvm_ffi_{kernel.name}(")
    w.line("    void*, const TVMFFIAny* args, int32_t num_args, TVMFFIAny* result) {")
    with w.indented():
        w.line(f"static const tvs_emulation::PortSpec ports[{max(n, 1)}] = {{")
        with w.indented():
            for arg in range(n):
                port = first[arg]
                code, bits = _dl_dtype(port.dtype)
                shape = ", ".join(str(d) for d in port.arg_shape) or "0"
                w.line(f'{{"{port.name}", {code}, {bits}, {len(port.arg_shape)}, {{{shape}}}}},')
        w.line("};")
        w.line(f"void* data[{max(n, 1)}];")
        w.line(f'if (tvs_emulation::bind("{kernel.name}", args, num_args, ports, {n}, data) != 0) return -1;')
        w.line(f'int here = tvs_emulation::run_here("{kernel.name}");')
        w.line("if (here < 0) return -1;")
        written = in_place_results(kernel)
        if not written:
            w.line(f'if (here == 0) return tvs_emulation::run_on_xrt("{kernel.name}", tvs_manifest, args, num_args, result);')
        else:
            w.line(f'if (here == 0 && tvs_emulation::run_on_xrt("{kernel.name}", tvs_manifest, args, num_args, result) != 0)')
            w.line("  return -1;")
        casts = []
        for i, (p, a, fed) in enumerate(zip(kernel.ports, args, feeds)):
            if not p.stripe and not p.layers:
                casts.append(f"static_cast<{_pointer_type(p)}>(data[{a}])")
                continue
            # a copy of what the port reads, every call: the stripe of its argument (its
            # columns), or of every layer's argument one after another (a stacked port)
            ctype = c_type(p.dtype)
            each = math.prod(p.layer_shape)
            # one buffer per port and thread, kept between calls (a fresh one faults its pages in)
            w.line(f"static thread_local std::vector<{ctype}> stacked{i};")
            w.line(f"stacked{i}.resize({p.num_elements});")
            for layer, arg in enumerate(fed):
                src, dst = f"static_cast<const {ctype}*>(data[{arg}])", f"stacked{i}.data() + {layer * each}"
                if p.stripe:
                    index, count, group, _ = p.stripe
                    rows, cols = p.arg_shape
                    w.line(f"tvs_emulation::stripe({src}, {dst}, {rows}, {cols}, {count}, {group}, {index}, "
                           f"{p.layer_shape[0]});")
                else:
                    w.line(f"std::memcpy({dst}, {src}, sizeof({ctype}) * {each});")
            casts.append(f"reinterpret_cast<{_pointer_type(p)}>(stacked{i}.data())")
        casts = ", ".join(casts)
        if written:
            w.line(f"if (here == 1) {kernel.name}({casts});")
            w.line("// Updated in place (an inout port): hand back every written argument, in argument order.")
            w.line(f"static const int written[{len(written)}] = {{{', '.join(map(str, written))}}};")
            w.line(f"return tvs_emulation::return_args(args, written, {len(written)}, result);")
        else:
            w.line(f"{kernel.name}({casts});")
            w.line("result->type_index = kTVMFFINone;")
            w.line("result->v_int64 = 0;")
            w.line("return 0;")
    w.line("}")


def in_place_results(kernel: Kernel) -> list[int]:
    """A kernel with an ``inout`` port is called through ``R.call_inplace_packed``
    (``relax_passes.kv_inplace``) and returns the arguments it writes -- in place and
    fresh outputs -- in ascending argument order; any other kernel returns nothing (DPS)."""
    if not any(p.direction == "inout" for p in kernel.ports):
        return []
    return sorted(written_args(kernel))


def _raw_string(text: str) -> str:
    delim = "tvs"
    while f"){delim}\"" in text:
        delim += "x"
    return f'R"{delim}({text}){delim}"'


def emulation_source(design: Design) -> str:
    """The translation unit compiled for emulation (kernels are #included, not copied)."""
    w = CodeWriter()
    w.line("// tvm-spatial emulation entry points. The kernels are included verbatim.")
    w.lines(["#include <tvm/ffi/c_api.h>", "#include <cstdlib>", "#include <cstring>", "#include <string>",
             "#include <vector>"])
    for kernel in design.kernels:
        w.line(f'#include "{kernel.filename}"')
    w.line()
    w.line(f"static const char tvs_manifest[] = {_raw_string(design.to_json())};")
    w.line()
    _write_runtime_support(w, any(in_place_results(kernel) for kernel in design.kernels),
                           any(port.stripe for kernel in design.kernels for port in kernel.ports))
    for kernel in design.kernels:
        _write_entry_point(w, kernel)
    w.line()
    w.line(f'extern "C" TVM_FFI_DLL_EXPORT int __tvm_ffi_{MANIFEST_SYMBOL}(')
    w.line("    void*, const TVMFFIAny*, int32_t, TVMFFIAny* result) {")
    with w.indented():
        w.line("TVMFFIByteArray bytes{tvs_manifest, sizeof(tvs_manifest) - 1};")
        w.line("return TVMFFIStringFromByteArray(&bytes, result);")
    w.line("}")
    return w.text()


def write_sources(design: Design, directory: Path) -> Path:
    """Write kernels, the common header and the emulation TU; return the TU's path."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / Design.COMMON_HEADER_NAME).write_bytes(design.common_header.encode())
    for kernel in design.kernels:
        (directory / kernel.filename).write_bytes(kernel.source.encode())
    tu = directory / "tvm_spatial_emulation.cc"
    tu.write_bytes(emulation_source(design).encode())
    return tu


def cache_dir() -> Path:
    root = os.environ.get("TVM_SPATIAL_CACHE_DIR")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tvm-spatial" / "emulation"


def _compile(tu: Path, output: Path, flags: list[str]) -> None:
    cmd = [host_compiler(), *flags, "-c", str(tu), "-o", str(output)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ToolchainError(
            f"compiling the emulation of the design failed ({' '.join(cmd)}):\n{proc.stderr[-4000:]}"
        )


def compile_object(design: Design, *, opt_flags=OPT_FLAGS) -> Path:
    """Compile the design into an object file, reusing an identical earlier compile."""
    flags = [*base_flags(), *EMULATION_DEFINES, *opt_flags, *extra_flags()]  # all of them key the cache
    with tempfile.TemporaryDirectory(prefix="tvm_spatial_emu_") as tmp:
        tu = write_sources(design, Path(tmp))
        digest = hashlib.sha256()
        digest.update(_compiler_identity().encode())
        digest.update("\0".join(flags).encode())
        for path in [*sorted(Path(tmp).iterdir()), EMULATION_INCLUDE_DIR / EMULATION_STREAM_HEADER]:
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
        key = digest.hexdigest()[:32]
        cached = cache_dir() / f"{key}.o"
        if cached.is_file():
            return cached
        built = Path(tmp) / "design.o"
        _compile(tu, built, flags)
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            staging = cached.with_suffix(f".{os.getpid()}.tmp")
            shutil.copyfile(built, staging)
            os.replace(staging, cached)
            return cached
        except OSError:
            # no writable cache: keep the object somewhere that outlives this call
            keep = Path(tempfile.mkdtemp(prefix="tvm_spatial_obj_")) / "design.o"
            shutil.copyfile(built, keep)
            return keep


def emulation_module(design: Design) -> tvm.runtime.Module:
    """A TVM module implementing every kernel (and the manifest) by the compiled HLS C++."""
    obj = compile_object(design)
    names = [kernel.name for kernel in design.kernels] + [MANIFEST_SYMBOL]
    return tvm.runtime.load_static_library(str(obj), names)
