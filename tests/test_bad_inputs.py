"""Bad input never crashes, hangs or leaves half a result: it gets a typed error (or, for
data a model can legitimately see -- NaN, Inf, empty tensors -- the llvm build's answer).

Covered: truncated, corrupted and unknown-operator ONNX files (library and CLI), wrong
tensors at run time, NaN/Inf, zero-size dimensions, absurd dimensions, unwritable output
paths and an unwritable compile cache.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

import tvm_spatial
from tvm_spatial.errors import ModelImportError, OutputDirError, SpatialError, UnsupportedOperatorError
from tvm_spatial.frontend import from_onnx

from fuzz.differential import compare

op = relax.op


def _tiny_model() -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.standard_normal((8, 5)).astype("float32"), "w")
    b = numpy_helper.from_array(rng.standard_normal((5,)).astype("float32"), "b")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Add", ["h", "b"], ["hb"], name="bias"),
        helper.make_node("Relu", ["hb"], ["r"], name="act"),
        helper.make_node("Softmax", ["r"], ["y"], axis=-1, name="sm"),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 5])],
        initializer=[w, b],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    return _tiny_model().SerializeToString()


def _module(shapes, fn, dtype="float32"):
    bb = relax.BlockBuilder()
    params = [relax.Var(f"x{i}", relax.TensorType(s, dtype)) for i, s in enumerate(shapes)]
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(fn(*params))
        bb.emit_func_output(out)
    return bb.get()


def _run(ex, inputs):
    out = relax.VirtualMachine(ex, tvm.cpu())["main"](*[tvm.runtime.tensor(v) for v in inputs])
    return out.numpy()


# ---- ONNX files ---------------------------------------------------------------------


def test_every_truncation_of_a_model_is_typed(model_bytes, tmp_path):
    """Cut the file after every byte: a typed error (or a model that happens to be whole)."""
    path = tmp_path / "cut.onnx"
    untyped = []
    for cut in range(len(model_bytes)):
        path.write_bytes(model_bytes[:cut])
        try:
            from_onnx(path)
        except SpatialError:
            continue
        except Exception as exc:  # noqa: BLE001 - what we are looking for
            untyped.append((cut, f"{type(exc).__name__}: {exc}"))
    assert untyped == []


def test_no_truncation_of_a_model_imports(model_bytes, tmp_path):
    path = tmp_path / "cut.onnx"
    imported = []
    for cut in range(len(model_bytes)):
        path.write_bytes(model_bytes[:cut])
        try:
            from_onnx(path)
            imported.append(cut)
        except ModelImportError:
            pass
    assert imported == []


@pytest.mark.parametrize("content", [b"", b"\x00", b"not an onnx file at all\n", b"\x89PNG\r\n\x1a\n" + b"\xff" * 64])
def test_garbage_files_are_model_import_errors(tmp_path, content):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelImportError, match="garbage.onnx"):
        from_onnx(path)


def test_corrupted_bytes_give_typed_errors_or_a_model_that_builds(model_bytes, tmp_path):
    """Random byte flips: whatever parses must import and build, or fail with our error."""
    rng = np.random.default_rng(0)
    path = tmp_path / "flipped.onnx"
    untyped = []
    outcomes = {"typed": 0, "built": 0}
    for trial in range(60):
        data = bytearray(model_bytes)
        for _ in range(int(rng.integers(1, 4))):
            data[int(rng.integers(len(data)))] = int(rng.integers(256))
        path.write_bytes(bytes(data))
        try:
            mod = from_onnx(path)
            relax.build(mod, target="vitis_spatial")
            outcomes["built"] += 1
        except SpatialError:
            outcomes["typed"] += 1
        except Exception as exc:  # noqa: BLE001
            untyped.append((trial, f"{type(exc).__name__}: {str(exc)[:200]}"))
    assert untyped == []
    assert outcomes["typed"] > 0  # the corruption did hit structure


def test_unknown_operator_names_op_and_node(tmp_path):
    model = _tiny_model()
    model.graph.node[2].op_type = "SuperRelu"
    path = tmp_path / "odd.onnx"
    onnx.save(model, str(path))
    with pytest.raises(UnsupportedOperatorError, match=r"SuperRelu \(node 'act'\)"):
        from_onnx(path)


def test_operator_from_an_unknown_domain_is_refused(tmp_path):
    model = _tiny_model()
    model.graph.node[2].domain = "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    path = tmp_path / "domain.onnx"
    onnx.save(model, str(path))
    with pytest.raises(UnsupportedOperatorError, match=r"com\.example.*act|act.*com\.example"):
        from_onnx(path)


def _one_line_cli(*args):
    proc = subprocess.run(
        [sys.executable, "-m", "tvm_spatial.cli", *args], capture_output=True, text=True, timeout=300
    )
    return proc, [line for line in proc.stdout.splitlines() if line.strip()]


def test_cli_compile_of_a_truncated_file_prints_one_line_and_exits_2(model_bytes, tmp_path):
    path = tmp_path / "truncated.onnx"
    path.write_bytes(model_bytes[: len(model_bytes) // 3])
    out = tmp_path / "project"
    proc, lines = _one_line_cli("compile", str(path), "-o", str(out))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error:") and "truncated.onnx" in lines[0], lines
    assert "Traceback" not in proc.stderr
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["truncated.onnx"]


# ---- run time: wrong tensors, NaN/Inf, empty tensors ------------------------------------


@pytest.fixture(scope="module")
def relu_build():
    return relax.build(_module([(2, 3)], op.nn.relu), target="vitis_spatial")


@pytest.mark.parametrize(
    "bad, words",
    [
        (np.zeros((3, 2), "float32"), ["x0", "R.Tensor((2, 3)", "shape[0]"]),
        (np.zeros((2, 3), "float64"), ["x0", "float32", "float64"]),
        (np.zeros((2, 3, 1), "float32"), ["x0", "ndim 2", "3"]),
        (np.zeros((2, 3), "int32"), ["x0", "float32", "int32"]),
    ],
)
def test_wrong_tensor_at_run_time_names_the_parameter(relu_build, bad, words):
    """TVM's VM checks the arguments before any kernel runs; the message names the parameter
    and the declared type (RuntimeError/ValueError from TVM, not a crash)."""
    vm = relax.VirtualMachine(relu_build, tvm.cpu())
    with pytest.raises((ValueError, RuntimeError, TypeError)) as info:
        vm["main"](tvm.runtime.tensor(bad))
    for word in words:
        assert word in str(info.value), str(info.value)


def test_wrong_number_of_arguments_is_named(relu_build):
    vm = relax.VirtualMachine(relu_build, tvm.cpu())
    x = tvm.runtime.tensor(np.zeros((2, 3), "float32"))
    for args in ((), (x, x)):
        with pytest.raises(Exception, match=r"expects 1 arguments \(x0\)"):
            vm["main"](*args)


def test_wrong_tensor_reaching_an_emulated_kernel_is_refused(relu_build):
    """Calling the kernel itself (bypassing the VM): the emulation checks every port."""
    kernel = tvm_spatial.design_of(relu_build).kernels[0]
    func = relu_build.jit().get_function(kernel.name, query_imports=True)
    good = [tvm.runtime.tensor(np.zeros(p.shape, p.dtype)) for p in kernel.ports]
    func(*good)
    with pytest.raises(ValueError, match=rf"{kernel.name}: port \w+ expects float32\[2,3\], got float32\[6\]"):
        func(tvm.runtime.tensor(np.zeros(6, "float32")), *good[1:])
    with pytest.raises(TypeError, match="expected 2 tensor arguments, got 1"):
        func(good[0])


SPECIALS = np.array([[np.nan, np.inf, -np.inf, 1.5, -2.0, 0.0, -0.0, 3.4e38]], "float32")
PARTNER = np.array([[1.0, np.nan, 2.0, np.inf, np.nan, -np.inf, 0.0, 3.4e38]], "float32")
ONES = relax.const(np.ones(8, "float32"))
ZEROS = relax.const(np.zeros(8, "float32"))

NAN_CASES = {
    "relu": lambda x, y: op.nn.relu(x),
    "maximum": op.maximum,
    "minimum": op.minimum,
    "clip": lambda x, y: op.clip(x, -1.0, 1.0),
    "max": lambda x, y: op.max(x, axis=[1]),
    "sum": lambda x, y: op.sum(x, axis=[1]),
    "mean": lambda x, y: op.mean(x, axis=[1]),
    "variance": lambda x, y: op.variance(x, axis=[1]),
    "softmax": lambda x, y: op.nn.softmax(x),
    "log_softmax": lambda x, y: op.nn.log_softmax(x),
    "layer_norm": lambda x, y: op.nn.layer_norm(x, ONES, ZEROS, axes=[-1]),
    "rms_norm": lambda x, y: op.nn.rms_norm(x, ONES, axes=[-1]),
    "exp": lambda x, y: op.exp(x),
    "log": lambda x, y: op.log(x),
    "sqrt": lambda x, y: op.sqrt(x),
    "rsqrt": lambda x, y: op.rsqrt(x),
    "sigmoid": lambda x, y: op.sigmoid(x),
    "tanh": lambda x, y: op.tanh(x),
    "erf": lambda x, y: op.erf(x),
    "gelu": lambda x, y: op.nn.gelu(x),
    "gelu_tanh": lambda x, y: op.nn.gelu_tanh(x),
    "silu": lambda x, y: op.nn.silu(x),
    "add": op.add,
    "multiply": op.multiply,
    "divide": op.divide,
    "power": op.power,
    "floor_divide": op.floor_divide,
    "floor_mod": op.floor_mod,
    "floor": lambda x, y: op.floor(x),
    "abs": lambda x, y: op.abs(x),
    "matmul": lambda x, y: op.matmul(x, op.permute_dims(y)),
    "less": op.less,
    "equal": op.equal,
    "isnan": lambda x, y: op.isnan(x),
    "where": lambda x, y: op.where(op.greater(x, y), x, y),
    "softmax_of_sum": lambda x, y: op.nn.softmax(op.add(op.multiply(x, y), y)),
}


@pytest.mark.parametrize("name", sorted(NAN_CASES))
def test_nan_and_inf_propagate_like_llvm(name):
    mod = _module([(1, 8), (1, 8)], NAN_CASES[name])
    got = _run(relax.build(mod, target="vitis_spatial"), [SPECIALS, PARTNER])
    want = _run(relax.build(mod, target="llvm"), [SPECIALS, PARTNER])
    assert compare(got, want) is None, (got.tolist(), want.tolist())


@pytest.mark.parametrize("shape", [(0, 4), (3, 0)])
@pytest.mark.parametrize("name", ["relu", "sum", "softmax"])
def test_single_operator_on_an_empty_tensor_matches_llvm(shape, name):
    fn = {"relu": op.nn.relu, "sum": lambda x: op.sum(x, axis=[1]), "softmax": op.nn.softmax}[name]
    mod = _module([shape], fn)
    data = np.zeros(shape, "float32")
    got = _run(relax.build(mod, target="vitis_spatial"), [data])
    want = _run(relax.build(mod, target="llvm"), [data])
    assert compare(got, want) is None


@pytest.mark.parametrize("shape", [(0, 4), (3, 0)])
def test_chain_on_an_empty_tensor_matches_llvm_or_names_the_empty_input(shape):
    mod = _module([shape], lambda x: op.nn.softmax(op.exp(x)))
    data = np.zeros(shape, "float32")
    want = _run(relax.build(mod, target="llvm"), [data])
    try:
        got = _run(relax.build(mod, target="vitis_spatial"), [data])
    except SpatialError as err:
        assert "x0" in str(err) and ("empty" in str(err) or "zero" in str(err)), str(err)
    else:
        assert compare(got, want) is None


# ---- absurd shapes ------------------------------------------------------------------


def test_a_dimension_of_2_to_the_31_is_a_typed_error_before_any_compile(monkeypatch, tmp_path):
    import codegen_hls.emulation as emulation

    compiles = []
    real = emulation._compile
    monkeypatch.setattr(emulation, "_compile", lambda *a, **k: compiles.append(a) or real(*a, **k))
    monkeypatch.setenv("TVM_SPATIAL_CACHE_DIR", str(tmp_path / "cache"))
    mod = _module([(2**31, 4)], lambda x: op.exp(op.sum(op.nn.relu(x), axis=[1])))
    try:
        ex = relax.build(mod, target="vitis_spatial")
        tvm_spatial.design_of(ex)  # links the executable
    except SpatialError as err:
        assert "x0" in str(err) and "2147483648" in str(err), str(err)
    else:
        pytest.fail("a 32 GiB tensor was accepted")
    assert compiles == [], "the oversized design reached the C++ compiler"


# ---- output paths and the cache -----------------------------------------------------


@pytest.fixture(scope="module")
def small_build():
    return relax.build(_module([(2, 3)], lambda x: op.nn.softmax(op.nn.relu(x))), target="vitis_spatial")


@pytest.mark.parametrize(
    "where",
    ["under_a_file", "dev_null_child", "proc"],
)
def test_unwritable_output_path_is_an_output_dir_error_and_leaves_nothing(small_build, tmp_path, where):
    blocker = tmp_path / "plain_file"
    blocker.write_text("x")
    out = {
        "under_a_file": blocker / "project",
        "dev_null_child": "/dev/null/project",
        "proc": "/proc/tvm_spatial_project",
    }[where]
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(OutputDirError, match=str(out)):
        tvm_spatial.export_project(small_build, out)
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_parent_directory_is_an_output_dir_error(small_build, tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        with pytest.raises(OutputDirError, match="ro/project"):
            tvm_spatial.export_project(small_build, parent / "project")
        assert os.listdir(parent) == []
    finally:
        parent.chmod(0o755)


def test_cli_with_an_unwritable_output_path_prints_one_line(tmp_path):
    blocker = tmp_path / "plain_file"
    blocker.write_text("x")
    proc, lines = _one_line_cli("compile", "mlp", "-o", str(blocker / "project"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert lines[-1].startswith("error:") and str(blocker / "project") in lines[-1]
    assert "Traceback" not in proc.stderr


def test_unwritable_compile_cache_still_builds(monkeypatch, tmp_path):
    """The cache is an optimisation: a cache path that cannot be created is not an error."""
    blocker = tmp_path / "plain_file"
    blocker.write_text("x")
    monkeypatch.setenv("TVM_SPATIAL_CACHE_DIR", str(blocker / "cache"))
    mod = _module([(2, 5)], lambda x: op.tanh(op.nn.relu(x)))
    data = np.linspace(-2, 2, 10, dtype="float32").reshape(2, 5)
    got = _run(relax.build(mod, target="vitis_spatial"), [data])
    np.testing.assert_allclose(got, np.tanh(np.maximum(data, 0)), rtol=1e-6)
