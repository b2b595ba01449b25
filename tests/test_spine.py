"""relax.build(mod, target="vitis_spatial"): results equal TVM's llvm build, everything
offloaded is reported, the design survives export, and bad input gets typed errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import tvm
from helpers import build_and_compare, run_vm
from tvm import relax

import tvm_spatial
from codegen_hls.emulation import write_sources
from tvm_spatial.examples import encoder_block, mlp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def mlp_build():
    example = mlp()
    ex, outs = build_and_compare(example.mod, list(example.inputs.values()))
    return example, ex, outs


@pytest.fixture(scope="module")
def block_build():
    example = encoder_block()
    ex, outs = build_and_compare(example.mod, list(example.inputs.values()))
    return example, ex, outs


def test_mlp_matches_llvm_with_nothing_on_host(mlp_build):
    _, ex, _ = mlp_build
    report = tvm_spatial.build_report(ex)
    assert report.host_ops == ()
    design = report.design
    assert [op for k in design.kernels for op in k.ops] == ["linear", "relu", "linear", "softmax"]


def test_encoder_block_matches_llvm_with_nothing_on_host(block_build):
    _, ex, _ = block_build
    report = tvm_spatial.build_report(ex)
    assert report.host_ops == ()
    ops = {op for k in report.design.kernels for op in k.ops}
    # the head split, QK^T, softmax, AV and head merge are one fused attention operator
    assert {"layer_norm", "linear", "attention", "residual_add", "gelu"} <= ops
    assert "operators left on host" in str(report)


def test_export_library_and_reload_in_fresh_process(block_build, tmp_path):
    example, ex, outs = block_build
    lib = tmp_path / "block.so"
    ex.export_library(str(lib))
    np.save(tmp_path / "x.npy", example.inputs["x"])
    script = textwrap.dedent(
        f"""
        import numpy as np, tvm
        from tvm import relax
        lib = tvm.runtime.load_module({str(lib)!r})
        vm = relax.VirtualMachine(lib, tvm.cpu())
        out = vm["main"](tvm.runtime.tensor(np.load({str(tmp_path / "x.npy")!r}))).numpy()
        np.save({str(tmp_path / "out.npy")!r}, out)
        import tvm_spatial
        print(len(tvm_spatial.design_of({str(lib)!r}).kernels))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(len(tvm_spatial.design_of(ex).kernels))
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), outs[0])


def test_plain_import_tvm_registers_the_target():
    """The tvm.backends entry point: no import of tvm_spatial in the user's script."""
    script = textwrap.dedent(
        """
        import numpy as np, tvm
        from tvm import relax
        bb = relax.BlockBuilder()
        x = relax.Var("x", relax.TensorType((2, 3), "float32"))
        with bb.function("main", [x]):
            with bb.dataflow():
                y = bb.emit_output(relax.op.nn.relu(relax.op.add(x, x)))
            bb.emit_func_output(y)
        ex = relax.build(bb.get(), target="vitis_spatial")
        lib = ex.jit()
        assert lib.get_function("vitis_spatial_design", query_imports=True) is not None
        v = np.array([[-1, 2, -3], [4, -5, 6]], "float32")
        out = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(v)).numpy()
        print(out.tolist())
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Failed to autoload" not in proc.stderr
    assert json.loads(proc.stdout.strip()) == [[0.0, 4.0, 0.0], [8.0, 0.0, 12.0]]


@pytest.mark.parametrize(
    "imports",
    [
        "import tvm_spatial",
        "import tvm_spatial.devices",
        "import codegen_hls.design, tvm",
        "import codegen_hls.emulation",
        "import relax_passes.patterns",
        "import tvm",
    ],
)
def test_every_import_order_registers_cleanly(imports):
    script = f"{imports}\nimport tvm\nassert tvm.get_global_func('relax.ext.vitis_spatial', True) is not None"
    proc = subprocess.run([sys.executable, "-W", "error", "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_unsupported_operator_stays_on_host_and_is_named():
    rng = np.random.default_rng(1)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 2, 6, 6), "float32"))
    w = relax.const(rng.standard_normal((3, 2, 3, 3)).astype("float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            c = bb.emit(relax.op.nn.conv2d(x, w))
            y = bb.emit_output(relax.op.nn.relu(c))
        bb.emit_func_output(y)
    inputs = [rng.standard_normal((1, 2, 6, 6)).astype("float32")]
    with pytest.warns(tvm_spatial.HostFallbackWarning, match=r"relax\.nn\.conv2d"):
        ex, _ = build_and_compare(bb.get(), inputs)
    report = tvm_spatial.build_report(ex)
    assert len(report.host_ops) == 1 and report.host_ops[0].startswith("relax.nn.conv2d")
    assert [k.ops for k in report.design.kernels] == [("relu",)]


def test_gather_concat_split_and_integer_ops_match_llvm():
    """take (embedding), concat, split, floor division/modulo with negative operands."""
    rng = np.random.default_rng(2)
    table = relax.const(rng.standard_normal((10, 4)).astype("float32"))
    bb = relax.BlockBuilder()
    ids = relax.Var("ids", relax.TensorType((2, 3), "int64"))
    a = relax.Var("a", relax.TensorType((2, 3, 4), "float32"))
    n = relax.Var("n", relax.TensorType((5,), "int32"))
    with bb.function("main", [ids, a, n]):
        with bb.dataflow():
            e = bb.emit(relax.op.take(table, ids, axis=0))
            c = bb.emit(relax.op.concat([e, a], axis=2))
            parts = bb.emit(relax.op.split(c, 2, axis=2))
            s = bb.emit(relax.op.subtract(relax.TupleGetItem(parts, 0), relax.TupleGetItem(parts, 1)))
            d = bb.emit(relax.op.floor_divide(n, relax.const(np.int32(-3))))
            m = bb.emit(relax.op.floor_mod(n, relax.const(np.int32(4))))
            out = bb.emit_output(relax.Tuple([s, d, m]))
        bb.emit_func_output(out)
    inputs = [
        rng.integers(0, 10, (2, 3)).astype("int64"),
        rng.standard_normal((2, 3, 4)).astype("float32"),
        np.array([-7, -4, 0, 5, 9], "int32"),
    ]
    ex, outs = build_and_compare(bb.get(), inputs)
    np.testing.assert_array_equal(outs[1], np.floor_divide(inputs[2], -3))
    np.testing.assert_array_equal(outs[2], np.mod(inputs[2], 4))
    assert tvm_spatial.build_report(ex).host_ops == ()


def test_symbolic_dimension_is_a_typed_error_naming_it():
    bb = relax.BlockBuilder()
    n = tvm.tirx.Var("seq_len", "int64")
    x = relax.Var("x", relax.TensorType((n, 4), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.nn.relu(x))
        bb.emit_func_output(y)
    with pytest.raises(tvm_spatial.DynamicShapeError, match="seq_len"):
        relax.build(bb.get(), target="vitis_spatial")


def test_unknown_device_is_a_typed_error():
    target = tvm.target.Target({"kind": "llvm", "keys": ["vitis_spatial", "cpu"], "model": "xcu999"})
    with pytest.raises(tvm_spatial.UnknownDeviceError, match="xcu999"):
        relax.build(mlp().mod, target=target)
    with pytest.raises(tvm_spatial.UnknownDeviceError, match="u280"):
        tvm_spatial.get_device("zcu104")


def test_device_tag_selects_the_card(tmp_path):
    example = mlp()
    ex, _ = build_and_compare(example.mod, list(example.inputs.values()), target="vitis_spatial/u250")
    design = tvm_spatial.design_of(ex)
    assert design.device == "u250"
    project = tvm_spatial.export_project(ex, tmp_path / "p")
    cfg = (project / "connectivity.cfg").read_text()
    assert "DDR[" in cfg and "HBM[" not in cfg
    assert "xilinx_u250" in (project / "Makefile").read_text()


def test_emulated_kernel_rejects_mismatched_tensors(mlp_build):
    _, ex, _ = mlp_build
    design = tvm_spatial.design_of(ex)
    kernel = design.kernels[0]
    func = ex.jit().get_function(kernel.name, query_imports=True)
    # one tensor per argument (a weight read through several stripe ports is one argument)
    firsts = [next(p for p in kernel.ports if p.arg == i) for i in range(kernel.num_args)]
    args = [tvm.runtime.tensor(np.zeros(p.arg_shape, p.dtype)) for p in firsts]
    func(*args)  # the right interface runs
    bad = list(args)
    bad[0] = tvm.runtime.tensor(np.zeros((3, 3), "float32"))
    with pytest.raises(ValueError, match=rf"{kernel.name}: port {kernel.ports[0].name} expects float32\[4,16\]"):
        func(*bad)
    with pytest.raises(TypeError, match="expected"):
        func(*args[:-1])


def test_project_from_build_is_what_emulation_compiled(block_build, tmp_path):
    _, ex, _ = block_build
    design = tvm_spatial.design_of(ex)
    project = tvm_spatial.export_project(ex, tmp_path / "proj")
    compiled = tmp_path / "compiled"
    write_sources(design, compiled)
    for kernel in design.kernels:
        assert (project / "kernels" / kernel.filename).read_bytes() == (compiled / kernel.filename).read_bytes()
    make = subprocess.run(["make", "-n", "TARGET=hw"], cwd=project, capture_output=True, text=True)
    assert make.returncode == 0, make.stderr
    lines = make.stdout.splitlines()
    assert sum("v++ -c" in line for line in lines) == len(design.vitis_kernels())  # one per SLR segment
    assert sum("v++ -l" in line for line in lines) == 1
    for name in ("connectivity.cfg", "Makefile", "host/host.cpp", "README.md"):
        assert (project / name).is_file()


def test_builds_are_deterministic(tmp_path):
    designs = []
    for i in range(2):
        example = encoder_block()
        ex = relax.build(example.mod, target="vitis_spatial")
        designs.append(tvm_spatial.design_of(ex))
        tvm_spatial.export_project(ex, tmp_path / f"p{i}")
    assert designs[0].to_json() == designs[1].to_json()
    files0 = sorted(p.relative_to(tmp_path / "p0") for p in (tmp_path / "p0").rglob("*") if p.is_file())
    files1 = sorted(p.relative_to(tmp_path / "p1") for p in (tmp_path / "p1").rglob("*") if p.is_file())
    assert files0 == files1
    for rel in files0:
        assert (tmp_path / "p0" / rel).read_bytes() == (tmp_path / "p1" / rel).read_bytes()


def test_llvm_target_is_untouched():
    """Without the vitis_spatial key the wrapped pipeline is TVM's own: no external modules."""
    example = mlp()
    ex = relax.build(example.mod, target="llvm")
    with pytest.raises(AttributeError):
        ex.jit().get_function("vitis_spatial_design", query_imports=True)
    assert run_vm(ex, list(example.inputs.values()))[0].shape == (4, 10)


def test_design_of_a_non_spatial_build_is_a_typed_error():
    ex = relax.build(mlp().mod, target="llvm")
    with pytest.raises(tvm_spatial.DesignNotFoundError, match="vitis_spatial"):
        tvm_spatial.design_of(ex)


def test_a_value_returned_twice_fills_both_outputs():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 5), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            r = bb.emit(relax.op.nn.relu(x))
            out = bb.emit_output(relax.Tuple([r, r]))
        bb.emit_func_output(out)
    data = np.random.default_rng(4).standard_normal((2, 5)).astype("float32")
    ex, outs = build_and_compare(bb.get(), [data])
    np.testing.assert_array_equal(outs[0], np.maximum(data, 0))
    np.testing.assert_array_equal(outs[1], np.maximum(data, 0))
