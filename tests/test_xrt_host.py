"""The generated XRT host against the metadata-only xclbin, under XRT's ``noop`` shim.

Real builds (the bundled MLP and encoder block through ``relax.build``), the real host
compiler and Debian's real XRT 2.13: the host must load the xclbin, find every kernel and
argument, allocate each buffer in the bank ``group_id`` reports, run and wait. The shim
computes nothing, so outputs are not compared here (emulation tests do that).

XRT loads ``$XILINX_XRT/lib/libxrt_noop.so.2``; Debian installs it in
/usr/lib/x86_64-linux-gnu, so the tests point ``XILINX_XRT`` at a private directory of
symlinks. Skipped, with the reason, without XRT's headers and noop library.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import subprocess

import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_spatial
from codegen_hls.design import Design, Kernel
from codegen_hls.project import write_project
from codegen_hls.vitis_files import METADATA_XCLBIN
from codegen_hls.xclbin import metadata_xclbin
from tvm_spatial import examples

from test_project import make_design

XRT_INCLUDE = pathlib.Path("/usr/include/xrt")
NOOP_LIB = next(
    (
        pathlib.Path(d) / "libxrt_noop.so.2"
        for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/opt/xilinx/xrt/lib")
        if (pathlib.Path(d) / "libxrt_noop.so.2").exists()
    ),
    None,
)
pytestmark = pytest.mark.skipif(
    not (XRT_INCLUDE / "xrt" / "xrt_kernel.h").exists() or NOOP_LIB is None or shutil.which("g++") is None,
    reason="needs XRT's headers in /usr/include/xrt and libxrt_noop.so.2 (apt-get install libxrt-dev "
    "libxrt1) and g++",
)


@pytest.fixture(autouse=True, scope="module")
def _xrt_calls_time_out():
    """A host process under the noop shim that hangs fails its test within minutes, with
    the kernel named, instead of holding the suite (it hung once in a CI run)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TVM_SPATIAL_XRT_TIMEOUT", "300")
        yield


@pytest.fixture(scope="session")
def noop_env(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("xilinx_xrt")
    (root / "lib").mkdir()
    (root / "lib" / "libxrt_noop.so.2").symlink_to(NOOP_LIB)
    return {**os.environ, "XILINX_XRT": str(root), "XCL_EMULATION_MODE": "noop"}


def compile_host(project: pathlib.Path) -> pathlib.Path:
    exe = project / "host.exe"
    subprocess.run(
        ["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", f"-I{XRT_INCLUDE}", "host/host.cpp",
         "-o", str(exe), "-lxrt_coreutil", "-luuid", "-pthread"],
        cwd=project, check=True,
    )
    return exe


def write_inputs(design: Design, data: pathlib.Path, known: dict[str, np.ndarray]) -> None:
    """The model input where a port carries it, seeded random bytes for the weights."""
    rng = np.random.default_rng(0)
    data.mkdir()
    for kernel in design.vitis_kernels():  # a region spanning SLRs: one kernel per SLR
        for port in kernel.ports:
            if port.direction != "in":
                continue
            value = known.get(port.name)
            if value is None or value.shape != port.shape:
                value = rng.standard_normal(port.shape or (1,)).astype(port.dtype)
            (data / f"{kernel.name}.{port.name}.bin").write_bytes(value.tobytes())


@dataclasses.dataclass
class Built:
    design: Design
    project: pathlib.Path
    host: pathlib.Path


@pytest.fixture(scope="module", params=["mlp", "encoder_block"])
def built(request, tmp_path_factory) -> Built:
    example = getattr(examples, request.param)()
    design = tvm_spatial.design_of(relax.build(example.mod, target="vitis_spatial"))
    project = write_project(design, tmp_path_factory.mktemp(request.param) / "proj")
    write_inputs(design, project / "data", example.inputs)
    return Built(design, project, compile_host(project))


def run_host(built: Built, xclbin: pathlib.Path, env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(built.host), str(xclbin), "data"], cwd=built.project, env=env,
        capture_output=True, text=True, timeout=120,
    )


def test_host_loads_metadata_xclbin_and_runs_every_kernel(built, noop_env):
    result = run_host(built, built.project / METADATA_XCLBIN, noop_env)
    assert result.returncode == 0, result.stderr
    # no XRT warning either: a buffer in a bank its argument is not connected to would
    # make XRT warn and copy ("no compute units with connectivity required ...")
    assert result.stderr == ""
    wrote = []
    for kernel in built.design.vitis_kernels():
        for port in kernel.ports:
            if port.direction == "out":
                path = built.project / "data" / f"{kernel.name}.{port.name}.out.bin"
                assert path.stat().st_size == port.num_elements * np.dtype(port.dtype).itemsize
                wrote.append(f"{kernel.name}: wrote data/{kernel.name}.{port.name}.out.bin")
    assert result.stdout.splitlines() == wrote


def with_port_renamed(design: Design, kernel_index: int, port_index: int, new: str) -> Design:
    kernel = design.kernels[kernel_index]
    ports = list(kernel.ports)
    old = ports[port_index].name
    ports[port_index] = dataclasses.replace(ports[port_index], name=new)
    segments = tuple(
        dataclasses.replace(seg, ports=tuple(new if n == old else n for n in seg.ports)) for seg in kernel.segments
    )
    kernels = list(design.kernels)
    kernels[kernel_index] = dataclasses.replace(kernel, ports=tuple(ports), segments=segments)
    return dataclasses.replace(design, kernels=tuple(kernels))


def vitis_kernel_of(design: Design, port_name: str):
    """(Vitis kernel, argument index) of a port of the first region."""
    for vk in design.kernels[0].vitis_kernels():
        names = [p.name for p in vk.ports]
        if port_name in names:
            return vk, names.index(port_name)
    raise KeyError(port_name)


def test_renamed_argument_is_reported_in_one_line(built, noop_env, tmp_path):
    region = built.design.kernels[0]
    kernel = region.vitis_kernels()[0]
    index = len(kernel.ports) - 2  # an input weight in the middle of the list
    wanted = kernel.ports[index].name
    bad = tmp_path / "renamed.xclbin"
    renamed = with_port_renamed(built.design, 0, [p.name for p in region.ports].index(wanted), wanted + "_renamed")
    bad.write_bytes(metadata_xclbin(renamed))
    result = run_host(built, bad, noop_env)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        f"error: xclbin {bad} does not match this host: kernel '{kernel.name}' has no argument "
        f"'{wanted}' at index {index} (the xclbin has "
    )
    assert f"'{wanted}_renamed'" in lines[0]


def test_missing_kernel_is_reported(built, noop_env, tmp_path):
    kernel = built.design.vitis_kernels()[0]
    other = Kernel(name=kernel.name + "_v2", source="", ports=kernel.ports, ops=())
    bad = tmp_path / "other.xclbin"
    bad.write_bytes(metadata_xclbin(dataclasses.replace(built.design, kernels=(other,))))
    result = run_host(built, bad, noop_env)
    assert result.returncode == 1
    assert result.stderr == (
        f"error: xclbin {bad} does not match this host: no kernel '{kernel.name}' "
        f"(the xclbin has '{kernel.name}_v2')\n"
    )


def test_not_an_xclbin_is_reported(built, noop_env):
    result = run_host(built, built.project / "Makefile", noop_env)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: cannot read xclbin {built.project / 'Makefile'}: ")


def test_run_sh_noop_target_links_the_shim_itself(tmp_path):
    """What an engineer without Vitis runs: TARGET=noop ./run.sh (make host, shim, host)."""
    if shutil.which("make") is None:
        pytest.skip("GNU make is not installed")
    design = make_design()
    project = write_project(design, tmp_path / "proj")
    write_inputs(design, project / "data", {})
    env = {k: v for k, v in os.environ.items() if k not in ("XILINX_XRT", "XCL_EMULATION_MODE")}
    env["TARGET"] = "noop"
    result = subprocess.run([str(project / "run.sh")], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "vadd: wrote data/vadd.c.out.bin" in result.stdout
    assert "relu_i32: wrote data/relu_i32.y.out.bin" in result.stdout


# -- codegen_hls.xrt_runtime: the same host, driven from Python -----------------------------

from codegen_hls import xrt_runtime  # noqa: E402
from tvm_spatial.errors import ToolchainError  # noqa: E402


def test_runner_runs_a_kernel_under_noop(built, noop_env, monkeypatch, tmp_path):
    for key in ("XILINX_XRT", "XCL_EMULATION_MODE"):
        monkeypatch.setenv(key, noop_env[key])
    monkeypatch.setenv("TVM_SPATIAL_CACHE_DIR", str(tmp_path / "cache" / "emulation"))
    runner = xrt_runtime.XRTRunner(built.design, built.project / METADATA_XCLBIN)
    assert runner.check() == "XRT noop shim (no computation)"
    kernel = built.design.kernels[0]
    inputs = {p.name: np.zeros(p.shape, p.dtype) for p in kernel.ports if p.direction == "in"}
    outputs = runner.run(kernel.name, inputs)
    assert {name: a.shape for name, a in outputs.items()} == {
        p.name: p.shape for p in kernel.ports if p.direction == "out"
    }


def test_a_kernel_call_that_hangs_is_stopped_and_named(built, noop_env, monkeypatch, tmp_path):
    """TVM_SPATIAL_XRT_TIMEOUT: a host process that does not finish in time is stopped,
    and the error names the kernel and the limit (a stand-in host that sleeps)."""
    for key in ("XILINX_XRT", "XCL_EMULATION_MODE"):
        monkeypatch.setenv(key, noop_env[key])
    sleeper = tmp_path / "host.sh"
    sleeper.write_text("#!/bin/sh\nsleep 60\n")
    sleeper.chmod(0o755)
    monkeypatch.setattr(xrt_runtime.XRTRunner, "host_executable", lambda self, kernel: sleeper)
    monkeypatch.setenv(xrt_runtime.XCLBIN_ENV, str(built.project / METADATA_XCLBIN))
    monkeypatch.setenv(xrt_runtime.TIMEOUT_ENV, "1.5")
    runner = xrt_runtime.runner_from_environment(built.design)
    assert runner.timeout_s == 1.5
    kernel = built.design.kernels[0]
    inputs = {p.name: np.zeros(p.shape, p.dtype) for p in kernel.ports if p.direction == "in"}
    with pytest.raises(ToolchainError, match=rf"kernel '{kernel.name}' did not finish within 1.5 s"):
        runner.run(kernel.name, inputs)
    for bad in ("soon", "0", "-3"):
        monkeypatch.setenv(xrt_runtime.TIMEOUT_ENV, bad)
        with pytest.raises(ToolchainError, match="is not a number of seconds above 0"):
            xrt_runtime.runner_from_environment(built.design)


def test_runner_names_what_is_missing(built, noop_env, monkeypatch, tmp_path):
    for key in ("XILINX_XRT", "XCL_EMULATION_MODE"):
        monkeypatch.setenv(key, noop_env[key])
    kernel, index = vitis_kernel_of(built.design, built.design.kernels[0].ports[1].name)

    missing = xrt_runtime.XRTRunner(built.design, tmp_path / "nope.xclbin")
    with pytest.raises(ToolchainError, match=r"xclbin .*nope\.xclbin does not exist"):
        missing.check()

    wanted = kernel.ports[index].name
    renamed = tmp_path / "renamed.xclbin"
    renamed.write_bytes(metadata_xclbin(with_port_renamed(built.design, 0, 1, "zz")))
    with pytest.raises(ToolchainError, match=rf"kernel '{kernel.name}' has no argument '{wanted}' at index {index}"):
        xrt_runtime.XRTRunner(built.design, renamed).check()

    with pytest.raises(ToolchainError, match="holds no bitstream"):
        xrt_runtime.check_xclbin(built.design, built.project / METADATA_XCLBIN, hardware=True)

    with pytest.raises(ToolchainError, match="XRT library libxrt_nothing.so.2 not found"):
        xrt_runtime.find_xrt_library("libxrt_nothing.so.2")

    monkeypatch.setenv("XILINX_XRT", str(tmp_path))
    with pytest.raises(ToolchainError, match="libxrt_noop.so.2, which is missing"):
        xrt_runtime.check_device(0)


def test_device_probe_reads_the_xocl_driver(monkeypatch, tmp_path):
    monkeypatch.delenv("XCL_EMULATION_MODE", raising=False)
    with pytest.raises(ToolchainError, match="no Alveo device with index 0: the xocl driver lists 0"):
        xrt_runtime.check_device(0, sysfs=str(tmp_path / "absent"))
    (tmp_path / "xocl" / "0000:3b:00.1").mkdir(parents=True)
    assert xrt_runtime.check_device(0, sysfs=str(tmp_path / "xocl")) == "Alveo device 0000:3b:00.1"
    with pytest.raises(ToolchainError, match=r"index 1: the xocl driver lists 1 \(0000:3b:00.1"):
        xrt_runtime.check_device(1, sysfs=str(tmp_path / "xocl"))


# -- relax.VirtualMachine in xrt mode: the same executable, kernels run through XRT ------------

@pytest.fixture()
def mlp_vm(noop_env, monkeypatch, tmp_path):
    for key in ("XILINX_XRT", "XCL_EMULATION_MODE"):
        monkeypatch.setenv(key, noop_env[key])
    for key in ("TVM_SPATIAL_RUNTIME", "TVM_SPATIAL_XCLBIN", "TVM_SPATIAL_DEVICE_INDEX"):
        monkeypatch.delenv(key, raising=False)
    example = examples.mlp()
    ex = relax.build(example.mod, target="vitis_spatial")
    vm = relax.VirtualMachine(ex, tvm.cpu())
    args = [tvm.runtime.tensor(v) for v in example.inputs.values()]
    design = tvm_spatial.design_of(ex)
    xclbin = tmp_path / "design.xclbin"
    xclbin.write_bytes(metadata_xclbin(design))
    return vm, args, design, xclbin


def test_vm_in_xrt_mode_runs_the_kernels_through_xrt(mlp_vm):
    vm, args, _, xclbin = mlp_vm
    emulated = vm["main"](*args).numpy()
    assert np.abs(emulated).max() > 0
    with tvm_spatial.runtime_mode("xrt", xclbin=xclbin):
        through_xrt = vm["main"](*args).numpy()
    # The noop shim computes nothing: the output buffer comes back as XRT allocated it
    # (zeros), which shows the call went through XRT and not through the emulated kernel.
    assert through_xrt.shape == emulated.shape
    assert not np.array_equal(through_xrt, emulated)
    np.testing.assert_array_equal(vm["main"](*args).numpy(), emulated)  # back to emulation


def test_vm_in_xrt_mode_reports_what_is_missing(mlp_vm, monkeypatch, tmp_path):
    vm, args, design, xclbin = mlp_vm
    with pytest.raises(tvm_spatial.UsageError, match="needs xclbin="):
        with tvm_spatial.runtime_mode("xrt"):
            pass
    monkeypatch.setenv("TVM_SPATIAL_RUNTIME", "xrt")
    with pytest.raises(ToolchainError, match="TVM_SPATIAL_XCLBIN"):
        vm["main"](*args)
    monkeypatch.setenv("TVM_SPATIAL_XCLBIN", str(tmp_path / "absent.xclbin"))
    with pytest.raises(ToolchainError, match="absent.xclbin does not exist"):
        vm["main"](*args)
    port = design.kernels[0].ports[1].name
    renamed = tmp_path / "renamed.xclbin"
    renamed.write_bytes(metadata_xclbin(with_port_renamed(design, 0, 1, port + "_renamed")))
    monkeypatch.setenv("TVM_SPATIAL_XCLBIN", str(renamed))
    with pytest.raises(ToolchainError, match=f"has no argument '{port}' at index 1"):
        vm["main"](*args)
    monkeypatch.setenv("TVM_SPATIAL_XCLBIN", str(xclbin))
    monkeypatch.setenv("TVM_SPATIAL_DEVICE_INDEX", "first")
    with pytest.raises(ToolchainError, match="not a device index"):
        vm["main"](*args)
    monkeypatch.setenv("TVM_SPATIAL_RUNTIME", "fpga")
    with pytest.raises(ValueError, match="TVM_SPATIAL_RUNTIME=fpga is not a runtime mode"):
        vm["main"](*args)


def test_xrt_mode_on_real_hardware_needs_a_device(mlp_vm, monkeypatch):
    """Without XCL_EMULATION_MODE the runner looks for an Alveo card (there is none here)."""
    vm, args, _, xclbin = mlp_vm
    monkeypatch.delenv("XCL_EMULATION_MODE")
    if pathlib.Path(xrt_runtime.SYSFS_XOCL).is_dir() and any(pathlib.Path(xrt_runtime.SYSFS_XOCL).glob("*:*")):
        pytest.skip("this machine has an Alveo card")
    with tvm_spatial.runtime_mode("xrt", xclbin=xclbin):
        with pytest.raises(ToolchainError, match="no Alveo device with index 0"):
            vm["main"](*args)
