"""The XRT host program (``host/host.cpp``) of a generated Vitis project.

Why a table plus fixed code: the per-design part is only the list of kernels and their
ports (name, direction, byte size), emitted as a C++ table; the logic that walks it is
the same for every design, so it is written once here and is easy to review. The host
moves raw bytes, so a dtype only needs a C type of the right size.

Regions run one after another; the Vitis kernels of one region (one per SLR it spans)
are all started before any is waited for, since they feed each other through AXI
streams. The host sets only the m_axi arguments: stream arguments are wired by
``stream_connect`` at link time, and the table lists them only so that the interface
check covers every argument the xclbin declares.

Buffers (:func:`buffers`): a port gets its own buffer object, except that every port of a
*written* caller argument (``Port.arg`` shared by several ports, one of them ``out`` or
``inout``: a decode design's KV cache, one ``inout`` port per layer) uses one buffer, the
same ``xrt::bo`` passed to each of those kernel arguments. That is what the kernels mean:
each writes its rows of one tensor and the others must see them; XRT accepts one buffer
for several arguments only when they are connected to one memory bank, which
``vitis_files.place`` guarantees. Such a buffer is read from the file of its first port
and synced to the device once before the run, and synced back and written to that file
once after it, not once per port. Read-only arguments keep one buffer per port (each in
its own bank, for bandwidth).
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm_spatial.errors import CodegenError

from .c_types import byte_size, needs_ap_types
from .c_types import c_type as hls_c_type
from .code_writer import CodeWriter
from .design import Design, Kernel, Port

HOST_EXECUTABLE = "host.exe"  # not "host": the project already has a host/ directory


@dataclass(frozen=True)
class Buffer:
    """One buffer object of a region's call and the ports (kernel arguments) it is passed to."""

    kernel: str  # the Vitis kernel of its first port: its data files are <kernel>.<port>[.out].bin
    port: Port  # its first port (Vitis kernel order, then argument order)
    ports: tuple[tuple[str, Port], ...]  # (Vitis kernel, port) of every argument it is passed to
    reads: bool  # some port reads it: filled from its file before the run
    writes: bool  # some port writes it: written to its .out.bin file after the run


def written_args(kernel: Kernel) -> set[int]:
    """Caller arguments of ``kernel`` that some port writes (``out`` or ``inout``)."""
    return {p.arg for p in kernel.ports if p.arg >= 0 and p.direction in ("out", "inout")}


def buffers(kernel: Kernel) -> list[Buffer]:
    """The region's buffers in Vitis-kernel and argument order: one per port, except one
    for all the ports of each written argument (the module docstring says why)."""
    written = written_args(kernel)
    groups: dict[object, list[tuple[str, Port]]] = {}
    for vk in kernel.vitis_kernels():
        for port in vk.ports:
            key = ("arg", port.arg) if port.arg in written else ("port", port.name)
            groups.setdefault(key, []).append((vk.name, port))
    result = []
    for members in groups.values():
        first_kernel, first = members[0]
        for _, other in members[1:]:
            if (other.dtype, other.shape) != (first.dtype, first.shape):
                raise CodegenError(
                    f"kernel {kernel.name!r}: ports {first.name!r} and {other.name!r} share written "
                    f"argument {first.arg} (one buffer) but are {first.dtype}{list(first.shape)} and "
                    f"{other.dtype}{list(other.shape)}"
                )
        result.append(Buffer(
            first_kernel, first, tuple(members),
            reads=any(p.direction in ("in", "inout") for _, p in members),
            writes=any(p.direction in ("out", "inout") for _, p in members),
        ))
    return result


def _host_dtype_ok(dtype: str) -> bool:
    """The host moves raw bytes of standard C types; ap_int ports would need packing."""
    try:
        return not needs_ap_types(dtype)
    except CodegenError:
        return False


def c_type(kernel: Kernel, port: Port) -> str:
    if not _host_dtype_ok(port.dtype):
        raise CodegenError(
            f"kernel {kernel.name!r} port {port.name!r} has dtype {port.dtype!r}, which the "
            "host program cannot transfer; supported: float32/64, (u)int8/16/32/64, bool"
        )
    return hls_c_type(port.dtype)


def port_bytes(port: Port) -> int:
    """Bytes of one port's buffer (host byte size of its dtype times its element count)."""
    return port.num_elements * byte_size(port.dtype)


def check_ports(design: Design) -> None:
    """Raise :class:`CodegenError` naming the first port the host cannot transfer."""
    for kernel in design.kernels:
        for buffer in buffers(kernel):
            for _, port in buffer.ports:
                _port_entry(kernel, port, buffer)


def _port_entry(kernel: Kernel, port: Port, buffer: Buffer) -> str:
    if port.direction not in ("in", "out", "inout"):
        raise CodegenError(
            f"kernel {kernel.name!r} port {port.name!r} has direction {port.direction!r}; "
            "expected 'in', 'out' or 'inout'"
        )
    owner = buffer.port.name == port.name
    # the first port of a buffer moves it through the files for every port using it: read
    # before the run if any of them reads it, written back if any writes it (an inout port,
    # a KV cache updated in place, both)
    reads = buffer.reads if owner else port.direction in ("in", "inout")
    writes = buffer.writes if owner else port.direction in ("out", "inout")
    shares = "nullptr" if owner else f'"{buffer.port.name}"'
    shape = ",".join(str(d) for d in port.shape)
    return (
        f'{{"{port.name}", {str(reads).lower()}, {str(writes).lower()}, '
        f'{port.num_elements} * sizeof({c_type(kernel, port)}), "{port.dtype}[{shape}]", {shares}}},'
    )


def _kernel_table(w: CodeWriter, design: Design) -> None:
    w.line("// The design's kernels in the order the model calls them: {name, region, m_axi ports in")
    w.line("// argument order, AXI-stream arguments after them}. The kernels of one region (one per SLR")
    w.line("// it spans) run together, linked by streams (stream_connect), which the host never sets.")
    w.line("// A port naming another in its last field is passed that port's buffer object (the ports")
    w.line("// of one written argument, e.g. a KV cache updated in place, share one buffer and bank).")
    w.line("const std::vector<KernelSpec> kKernels = {")
    with w.indented():
        for region, kernel in enumerate(design.kernels):
            buffer_of = {port.name: b for b in buffers(kernel) for _, port in b.ports}
            for vk in kernel.vitis_kernels():
                w.line(f'{{"{vk.name}", {region}, {{')
                with w.indented():
                    for port in vk.ports:
                        w.line(_port_entry(kernel, port, buffer_of[port.name]))
                streams = ", ".join(f'"{a.name}"' for a in vk.axis)
                w.line(f"}}, {{{streams}}}}},")
    w.line("};")


_INCLUDES = (
    "#include <cstddef>",
    "#include <cstdint>",
    "#include <exception>",
    "#include <fstream>",
    "#include <iostream>",
    "#include <iterator>",
    "#include <map>",
    "#include <stdexcept>",
    "#include <string>",
    "#include <vector>",
    "",
    "#include <xrt/xrt_bo.h>",
    "#include <xrt/xrt_device.h>",
    "#include <xrt/xrt_kernel.h>",
)

_TYPES = (
    "struct PortSpec {",
    "  const char* name;",
    "  bool is_input;   // read from <kernel>.<port>.bin before the run",
    "  bool is_output;  // written to <kernel>.<port>.out.bin after it (both: inout)",
    "  std::size_t bytes;",
    '  const char* type;  // e.g. "float32[16]", for messages',
    "  // nullptr: the port has its own buffer. Else the earlier port (same region) whose buffer",
    "  // it is passed, which alone moves the data through its files (a written argument).",
    "  const char* shares;",
    "};",
    "",
    "struct KernelSpec {",
    "  const char* name;",
    "  int region;  // the kernels of one region run together",
    "  std::vector<PortSpec> ports;",
    "  std::vector<const char*> streams;  // AXI-stream arguments, after the ports",
    "};",
)


def _file_helpers(w: CodeWriter) -> None:
    """Reading inputs checks existence and exact size so a bad data dir fails with its name."""
    w.line("std::string data_path(const std::string& dir, const KernelSpec& k, const PortSpec& p,")
    with w.block("                      const char* suffix)"):
        w.line('return dir + "/" + k.name + "." + p.name + suffix;')
    w.line()
    with w.block("std::vector<char> read_input(const std::string& path, const PortSpec& p)"):
        w.line("std::ifstream in(path, std::ios::binary);")
        with w.block("if (!in)"):
            w.line('throw std::runtime_error("cannot open input file " + path + " (" + p.type + ", " +')
            w.line('                         std::to_string(p.bytes) + " bytes)");')
        w.line("std::vector<char> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());")
        with w.block("if (data.size() != p.bytes)"):
            w.line('throw std::runtime_error("input file " + path + " has " + std::to_string(data.size()) +')
            w.line('                         " bytes; " + p.type + " needs " + std::to_string(p.bytes));')
        w.line("return data;")
    w.line()
    with w.block("void write_output(const std::string& path, const std::vector<char>& data)"):
        w.line("std::ofstream out(path, std::ios::binary);")
        w.line("out.write(data.data(), static_cast<std::streamsize>(data.size()));")
        with w.block("if (!out)"):
            w.line('throw std::runtime_error("cannot write output file " + path);')


def _parse_index(w: CodeWriter) -> None:
    """std::stoul alone would report a bad index as just "stoul"."""
    with w.block("unsigned parse_index(const std::string& text)"):
        w.line("std::size_t used = 0;")
        w.line("unsigned long value = 0;")
        with w.block("try", tail="} catch (const std::exception&) {"):
            w.line("value = std::stoul(text, &used);")
        with w.indented():
            w.line("used = 0;")
        w.line("}")
        with w.block("if (used == 0 || used != text.size() || text[0] == '-')"):
            w.line('throw std::runtime_error("device_index must be a non-negative integer, got \'" + text + "\'");')
        w.line("return static_cast<unsigned>(value);")


def _load_inputs(w: CodeWriter) -> None:
    """All inputs are read before the device is opened: missing data fails in milliseconds."""
    with w.block("std::vector<std::vector<std::vector<char>>> load_inputs(const std::string& dir)"):
        w.line("std::vector<std::vector<std::vector<char>>> inputs;")
        with w.block("for (const KernelSpec& k : kKernels)"):
            w.line("inputs.emplace_back();")
            with w.block("for (const PortSpec& p : k.ports)"):
                w.line("const bool own_file = p.is_input && p.shares == nullptr;")
                w.line("inputs.back().push_back(own_file ? read_input(data_path(dir, k, p, \".bin\"), p)")
                w.line("                                 : std::vector<char>());")
        w.line("return inputs;")


def _check_interface(w: CodeWriter) -> None:
    """The xclbin must declare every kernel and argument of the table, by name and index:
    a host and an xclbin from different designs fail here, in one line, before any run."""
    with w.block("std::string quoted_list(const std::vector<std::string>& names)"):
        w.line("std::string out;")
        with w.block("for (const std::string& n : names)"):
            w.line("out += (out.empty() ? \"'\" : \", '\") + n + \"'\";")
        w.line("return out.empty() ? \"none\" : out;")
    w.line()
    w.line("[[noreturn]] void mismatch(const std::string& path, const std::string& what,")
    with w.block("                           const std::vector<std::string>& present)"):
        w.line("throw std::runtime_error(\"xclbin \" + path + \" does not match this host: \" + what +")
        w.line("                         \" (the xclbin has \" + quoted_list(present) + \")\");")
    w.line()
    with w.block("void check_interface(const xrt::xclbin& xclbin, const std::string& path)"):
        w.line("std::vector<std::string> kernel_names;")
        with w.block("for (const xrt::xclbin::kernel& k : xclbin.get_kernels())"):
            w.line("kernel_names.push_back(k.get_name());")
        with w.block("for (const KernelSpec& spec : kKernels)"):
            w.line("const std::string name = spec.name;")
            w.line("xrt::xclbin::kernel found;")
            with w.block("for (const xrt::xclbin::kernel& k : xclbin.get_kernels())"):
                with w.block("if (k.get_name() == name)"):
                    w.line("found = k;")
            with w.block("if (!found)"):
                w.line("mismatch(path, \"no kernel '\" + name + \"'\", kernel_names);")
            w.line("std::vector<std::string> args;")
            with w.block("for (const xrt::xclbin::arg& a : found.get_args())"):
                w.line("args.push_back(a.get_name());")
            w.line("std::vector<std::string> wanted;")
            with w.block("for (const PortSpec& p : spec.ports)"):
                w.line("wanted.push_back(p.name);")
            with w.block("for (const char* s : spec.streams)"):
                w.line("wanted.push_back(s);")
            with w.block("for (std::size_t i = 0; i < wanted.size(); ++i)"):
                with w.block("if (i >= args.size() || args[i] != wanted[i])"):
                    w.line("mismatch(path, \"kernel '\" + name + \"' has no argument '\" + wanted[i] +")
                    w.line("         \"' at index \" + std::to_string(i), args);")
            with w.block("if (args.size() != wanted.size())"):
                w.line("mismatch(path, \"kernel '\" + name + \"' has \" + std::to_string(args.size()) +")
                w.line("         \" arguments; the host expects \" + std::to_string(wanted.size()), args);")
    w.line()
    with w.block("xrt::xclbin read_xclbin(const std::string& path)"):
        with w.block("if (!std::ifstream(path, std::ios::binary))"):
            w.line("throw std::runtime_error(\"cannot open xclbin \" + path);")
        with w.block("try", tail="} catch (const std::exception& e) {"):
            w.line("return xrt::xclbin(path);")
        with w.indented():
            w.line("throw std::runtime_error(\"cannot read xclbin \" + path + \": \" + e.what());")
        w.line("}")


def _run_region(w: CodeWriter) -> None:
    """One bo per buffer (:func:`buffers`) in the bank ``group_id`` reports, so the host follows
    connectivity.cfg; a port sharing another's buffer gets that same bo, after a check that
    XRT connected both to one bank (else XRT would warn and copy, or the kernels would write
    different memories). All kernels of a region are started before any is waited for: they
    pass data to each other through AXI streams, so a kernel waited for alone would stall."""
    w.line("void run_region(const xrt::device& device, const xrt::uuid& uuid, std::size_t first, std::size_t last,")
    with w.block("                const std::vector<std::vector<std::vector<char>>>& inputs, const std::string& dir)"):
        w.line("std::vector<xrt::kernel> kernels;")
        w.line("std::vector<xrt::run> runs;")
        w.line("std::vector<std::vector<xrt::bo>> bos(last - first);")
        w.line("std::map<std::string, std::pair<xrt::bo, int>> owned;  // port -> its buffer, memory group")
        with w.block("for (std::size_t k = first; k < last; ++k)"):
            w.line("const KernelSpec& spec = kKernels[k];")
            w.line("kernels.emplace_back(device, uuid, spec.name);")
            w.line("runs.emplace_back(kernels.back());")
            w.line("std::vector<xrt::bo>& kbos = bos[k - first];")
            w.line("kbos.reserve(spec.ports.size());")
            with w.block("for (std::size_t i = 0; i < spec.ports.size(); ++i)"):
                w.line("const PortSpec& p = spec.ports[i];")
                w.line("const int arg = static_cast<int>(i);")
                w.line("const int group = kernels.back().group_id(arg);")
                with w.block("if (p.shares != nullptr)", tail="} else {"):
                    w.line("const auto owner = owned.find(p.shares);")
                    with w.block("if (owner == owned.end())"):
                        w.line("throw std::runtime_error(std::string(spec.name) + \": argument '\" + p.name +")
                        w.line("                         \"' shares the buffer of '\" + p.shares + \"', which no earlier kernel has\");")
                    with w.block("if (owner->second.second != group)"):
                        w.line("throw std::runtime_error(std::string(spec.name) + \": argument '\" + p.name + \"' is in memory \" +")
                        w.line("                         \"group \" + std::to_string(group) + \" but shares the buffer of '\" + p.shares +")
                        w.line("                         \"' in group \" + std::to_string(owner->second.second) +")
                        w.line('                         ": connect both to one bank (sp= in connectivity.cfg)");')
                    w.line("kbos.push_back(owner->second.first);")
                with w.indented():
                    w.line("kbos.emplace_back(device, p.bytes, group);")
                    with w.block("if (p.is_input)"):
                        w.line("kbos.back().write(inputs[k][i].data());")
                        w.line("kbos.back().sync(XCL_BO_SYNC_BO_TO_DEVICE);")
                    w.line("owned.emplace(p.name, std::make_pair(kbos.back(), group));")
                w.line("}")
                w.line("runs.back().set_arg(arg, kbos.back());")
        with w.block("for (xrt::run& run : runs)"):
            w.line("run.start();")
        with w.block("for (xrt::run& run : runs)"):
            w.line("run.wait();")
        with w.block("for (std::size_t k = first; k < last; ++k)"):
            w.line("const KernelSpec& spec = kKernels[k];")
            with w.block("for (std::size_t i = 0; i < spec.ports.size(); ++i)"):
                w.line("// a shared buffer goes back once, through the port that owns it")
                with w.block("if (!spec.ports[i].is_output || spec.ports[i].shares != nullptr)"):
                    w.line("continue;")
                w.line("xrt::bo& bo = bos[k - first][i];")
                w.line("bo.sync(XCL_BO_SYNC_BO_FROM_DEVICE);")
                w.line("std::vector<char> data(spec.ports[i].bytes);")
                w.line("bo.read(data.data());")
                w.line('const std::string path = data_path(dir, spec, spec.ports[i], ".out.bin");')
                w.line("write_output(path, data);")
                w.line('std::cout << spec.name << ": wrote " << path << "\\n";')


def _main(w: CodeWriter) -> None:
    """Every failure becomes one line on stderr and exit status 1, for scripts and CI."""
    with w.block("int main(int argc, char** argv)"):
        with w.block("if (argc < 3 || argc > 4)"):
            w.line('std::cerr << "usage: " << argv[0] << " <design.xclbin> <data_dir> [device_index]\\n";')
            w.line("return 1;")
        with w.block("try", tail="} catch (const std::exception& e) {"):
            w.line("const std::string xclbin = argv[1];")
            w.line("const std::string dir = argv[2];")
            w.line("const unsigned index = argc == 4 ? parse_index(argv[3]) : 0;")
            w.line("const auto inputs = load_inputs(dir);")
            w.line("const xrt::xclbin design = read_xclbin(xclbin);")
            w.line("check_interface(design, xclbin);")
            w.line("xrt::device device(index);")
            w.line("const xrt::uuid uuid = device.load_xclbin(design);")
            w.line("std::size_t first = 0;")
            with w.block("while (first < kKernels.size())"):
                w.line("std::size_t last = first + 1;")
                w.line("while (last < kKernels.size() && kKernels[last].region == kKernels[first].region) ++last;")
                w.line("run_region(device, uuid, first, last, inputs, dir);")
                w.line("first = last;")
        with w.indented():
            w.line('std::cerr << "error: " << e.what() << "\\n";')
            w.line("return 1;")
        w.line("}")
        w.line("return 0;")


def host_cpp(design: Design) -> str:
    """``host <design.xclbin> <data_dir> [device_index]`` on the XRT native C++ API."""
    w = CodeWriter()
    w.line(f"// Generated by tvm-spatial: XRT host program for device {design.device!r}.")
    w.line("// Usage: host.exe <design.xclbin> <data_dir> [device_index]")
    w.line("// Reads <data_dir>/<kernel>.<port>.bin for every input port, runs the kernels region by region,")
    w.line("// writes <data_dir>/<kernel>.<port>.out.bin for every output or inout port (raw bytes, row-major).")
    w.line("// Ports sharing one buffer (a written argument) use the files of the first of them only.")
    w.line("// Before opening the device it checks that the xclbin declares every kernel and argument")
    w.line("// below (by name, in order): a host and an xclbin of different designs fail in one line.")
    w.lines(_INCLUDES)
    w.line()
    w.line("namespace {")  # not CodeWriter.block: namespace bodies are not indented
    w.line()
    w.lines(_TYPES)
    w.line()
    _kernel_table(w, design)
    w.line()
    _file_helpers(w)
    w.line()
    _parse_index(w)
    w.line()
    _load_inputs(w)
    w.line()
    _check_interface(w)
    w.line()
    _run_region(w)
    w.line()
    w.line("}  // namespace")
    w.line()
    _main(w)
    return w.text()
