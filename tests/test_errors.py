"""The error catalogue: every class in ``tvm_spatial/errors.py`` raised through the path a
user takes, with a message that names the culprit (and, where there is one, the fix).

Each test is registered with :func:`covers`; ``test_every_error_class_is_covered`` fails
when a class is added to the catalogue without a test here.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper
from tvm import relax
from tvm.script import ir as I
from tvm.script import tirx as T

import tvm_spatial
from tvm_spatial import errors
from tvm_spatial.examples import mlp

COVERED: set[str] = set()


def covers(*classes):
    def mark(fn):
        COVERED.update(cls.__name__ for cls in classes)
        return fn

    return mark


CATALOGUE = {  # by class name: the module also exports aliases (ScheduleError)
    cls.__name__: cls
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, errors.SpatialError)
}


def test_every_error_class_is_covered():
    assert set(CATALOGUE) <= COVERED, sorted(set(CATALOGUE) - COVERED)


def test_every_error_is_a_spatial_error_with_a_docstring():
    for name, cls in CATALOGUE.items():
        assert issubclass(cls, tvm_spatial.SpatialError)
        assert cls.__doc__, f"{name} has no docstring saying when it is raised"


@pytest.fixture(scope="module")
def mlp_build():
    return relax.build(mlp().mod, target="vitis_spatial")


def _relu_module(shape, dtype="float32"):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.nn.relu(x))
        bb.emit_func_output(y)
    return bb.get()


def _onnx_model(nodes, inputs, outputs, path):
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


@T.prim_func(s_tir=True)
def _add_one(A: T.Buffer((8,), "float32"), B: T.Buffer((8,), "float32")):
    for i in range(8):
        with T.sblock("B"):
            vi = T.axis.remap("S", [i])
            B[vi] = A[vi] + T.float32(1)


@T.prim_func(s_tir=True)
def _half_add(A: T.Buffer((8,), "float16"), B: T.Buffer((8,), "float16")):
    for i in range(8):
        with T.sblock("B"):
            vi = T.axis.remap("S", [i])
            B[vi] = A[vi] + T.float16(1)


# ---- one test per class -------------------------------------------------------------


@covers(errors.SpatialError)
def test_base_class_catches_everything_and_crosses_tvms_ffi():
    """Raised inside a pass that runs inside C++ (relax.build), our error keeps its type."""
    n = tvm.tirx.Var("batch", "int64")
    with pytest.raises(tvm_spatial.SpatialError, match="batch"):
        relax.build(_relu_module((n, 4)), target="vitis_spatial")
    with pytest.raises(tvm_spatial.SpatialError, match="llvm"):
        tvm_spatial.build(tvm_spatial.customize(_add_one), target="llvm")


@covers(errors.UnsupportedOperatorError)
def test_unknown_onnx_operator_is_named_with_its_node(tmp_path):
    from tvm_spatial.frontend import from_onnx

    path = _onnx_model(
        [helper.make_node("Relu", ["x"], ["h"], name="first"),
         helper.make_node("FrobnicateTensor", ["h"], ["y"], name="the_odd_one")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        tmp_path / "odd.onnx",
    )
    with pytest.raises(errors.UnsupportedOperatorError) as info:
        from_onnx(path)
    assert "FrobnicateTensor" in str(info.value) and "the_odd_one" in str(info.value)


@covers(errors.DynamicShapeError)
def test_symbolic_dimension_names_input_and_dimension(tmp_path):
    n = tvm.tirx.Var("seq_len", "int64")
    with pytest.raises(errors.DynamicShapeError) as info:
        relax.build(_relu_module((2, n)), target="vitis_spatial")
    assert "seq_len" in str(info.value) and "input x" in str(info.value) and "static" in str(info.value)

    from tvm_spatial.frontend import from_onnx

    path = _onnx_model(
        [helper.make_node("Relu", ["tokens"], ["y"])],
        [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        tmp_path / "dyn.onnx",
    )
    with pytest.raises(errors.DynamicShapeError) as info:
        from_onnx(path)
    assert "'tokens'" in str(info.value) and "'batch'" in str(info.value) and "--shape" in str(info.value)


@covers(errors.UnknownDeviceError)
def test_unknown_card_is_named_with_the_known_ones():
    target = tvm.target.Target({"kind": "llvm", "keys": ["vitis_spatial", "cpu"], "model": "xcvu9p"})
    with pytest.raises(errors.UnknownDeviceError) as info:
        relax.build(_relu_module((2, 3)), target=target)
    assert "xcvu9p" in str(info.value) and "u280" in str(info.value)


@covers(errors.OutputDirError)
def test_output_directory_conflicts_name_the_path(mlp_build, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(errors.OutputDirError) as info:
        tvm_spatial.export_project(mlp_build, busy)
    assert str(busy) in str(info.value) and "force" in str(info.value)
    assert (busy / "notes.txt").read_text() == "mine"

    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(errors.OutputDirError, match="not a directory"):
        tvm_spatial.export_project(mlp_build, a_file)


@covers(errors.ToolchainError)
def test_failing_compiler_names_the_command(monkeypatch, tmp_path):
    monkeypatch.setenv("TVM_SPATIAL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TVM_SPATIAL_EMULATION_FLAGS", "-fno-such-compiler-option")
    with pytest.raises(errors.ToolchainError) as info:
        relax.build(_relu_module((3, 5)), target="vitis_spatial")
    message = str(info.value)
    assert "compiling the emulation" in message and "-fno-such-compiler-option" in message


@covers(errors.ToolchainError)
def test_missing_xclbin_names_the_file_and_the_fix(mlp_build, tmp_path):
    from codegen_hls.xrt_runtime import check_xclbin

    missing = tmp_path / "design.xclbin"
    with pytest.raises(errors.ToolchainError) as info:
        check_xclbin(tvm_spatial.design_of(mlp_build), missing, hardware=False)
    assert str(missing) in str(info.value) and "make" in str(info.value)
    missing.write_bytes(b"not an xclbin at all")
    with pytest.raises(errors.ToolchainError, match="cannot be read"):
        check_xclbin(tvm_spatial.design_of(mlp_build), missing, hardware=False)


@covers(errors.ToolchainError)
def test_missing_compiler_is_a_typed_error(tmp_path):
    """No g++/c++/clang++ on PATH (and no $CXX): the build says what to install."""
    bindir = tmp_path / "empty_bin"
    bindir.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "CXX"}
    env.update(PATH=str(bindir), TVM_SPATIAL_CACHE_DIR=str(tmp_path / "cache"))
    script = textwrap.dedent(
        """
        import tvm_spatial
        from tvm import relax
        bb = relax.BlockBuilder()
        x = relax.Var("x", relax.TensorType((2, 2), "float32"))
        with bb.function("main", [x]):
            with bb.dataflow():
                y = bb.emit_output(relax.op.nn.relu(x))
            bb.emit_func_output(y)
        try:
            relax.build(bb.get(), target="vitis_spatial")
        except tvm_spatial.ToolchainError as err:
            print("TOOLCHAIN:", err)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert "TOOLCHAIN: no C++ compiler found" in proc.stdout, proc.stdout + proc.stderr
    assert "g++" in proc.stdout


@covers(errors.EmulationError)
def test_emulated_kernel_called_with_the_wrong_array_names_port_and_types():
    module = tvm_spatial.build(tvm_spatial.customize(_add_one), name="add_one")
    a = np.arange(8, dtype="float32")
    np.testing.assert_array_equal(module(a), a + 1)
    with pytest.raises(errors.EmulationError) as info:
        module(a.astype("float64"))
    assert "add_one" in str(info.value) and "float32[8]" in str(info.value) and "float64[8]" in str(info.value)
    with pytest.raises(errors.EmulationError, match="got 3 arrays"):
        module(a, a, a)


@covers(errors.DesignNotFoundError)
def test_module_without_a_design_says_how_to_get_one(tmp_path):
    with pytest.raises(errors.DesignNotFoundError, match='target="vitis_spatial"'):
        tvm_spatial.design_of(relax.build(_relu_module((2, 3)), target="llvm"))
    with pytest.raises(errors.DesignNotFoundError, match="nothing.so"):
        tvm_spatial.design_of(tmp_path / "nothing.so")


@covers(errors.LintError)
def test_unsynthesizable_kernel_names_kernel_line_and_rule(mlp_build, tmp_path):
    from codegen_hls.project import write_project

    design = tvm_spatial.design_of(mlp_build)
    kernel = design.kernels[0]
    lines = kernel.source.splitlines()
    body = next(i for i, line in enumerate(lines) if line.startswith('extern "C"'))
    lines.insert(body + 1, "  float* scratch = new float[16];")
    bad = dataclasses.replace(kernel, source="\n".join(lines) + "\n")
    with pytest.raises(errors.LintError) as info:
        write_project(dataclasses.replace(design, kernels=(bad, *design.kernels[1:])), tmp_path / "p")
    message = str(info.value)
    assert kernel.name in message and f"line {body + 2}" in message and "heap" in message
    assert not (tmp_path / "p").exists()


@covers(errors.CodegenError)
def test_dtype_without_an_hls_type_is_named():
    with pytest.raises(errors.CodegenError) as info:
        tvm_spatial.build(tvm_spatial.customize(_half_add), name="half_add")
    assert "float16" in str(info.value) and "supported" in str(info.value)


@covers(errors.ModelImportError)
def test_unreadable_model_file_names_the_path(tmp_path):
    from tvm_spatial.frontend import from_onnx

    good = _onnx_model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        tmp_path / "good.onnx",
    )
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(errors.ModelImportError) as info:
        from_onnx(cut)
    assert str(cut) in str(info.value)
    with pytest.raises(errors.ModelImportError, match="does not exist"):
        from_onnx(tmp_path / "absent.onnx")
    with pytest.raises(errors.ModelImportError, match="'nope'"):
        from_onnx(good, shape_dict={"nope": [1]})


@covers(errors.ScheduleError)
def test_primitive_on_a_missing_loop_names_it_and_the_loops_there_are():
    s = tvm_spatial.customize(_add_one)
    with pytest.raises(errors.ScheduleError) as info:
        s.pipeline("j")
    assert "'j'" in str(info.value) and "B/i" in str(info.value)
    with pytest.raises(errors.ScheduleError, match="factor 3 does not divide"):
        s.partition("A", dim=1, factor=3, kind="cyclic")


@I.ir_module
class _Twice:
    @T.prim_func(s_tir=True)
    def scale(A: T.Buffer((8,), "float32"), B: T.Buffer((8,), "float32")):
        for i in range(8):
            with T.sblock("B"):
                vi = T.axis.remap("S", [i])
                B[vi] = A[vi] * T.float32(2)

    @T.prim_func(s_tir=True)
    def main(A: T.Buffer((8,), "float32"), C: T.Buffer((8,), "float32")):
        tmp = T.alloc_buffer((8,), "float32")
        _Twice.scale(A, tmp)
        _Twice.scale(tmp, C)


@covers(errors.InterfaceMismatchError)
def test_composition_with_mismatched_interfaces_names_both_sides():
    @T.prim_func(s_tir=True)
    def scale(A: T.Buffer((4,), "float32"), B: T.Buffer((4,), "float32")):
        for i in range(4):
            with T.sblock("B"):
                vi = T.axis.remap("S", [i])
                B[vi] = A[vi] * T.float32(2)

    with pytest.raises(errors.InterfaceMismatchError) as info:
        tvm_spatial.customize(_Twice).compose(tvm_spatial.customize(scale), id=0)
    message = str(info.value)
    assert "float32[4]" in message and "float32[8]" in message, message


@covers(errors.ResourceBudgetError)
def test_tensor_larger_than_the_cards_memory_names_tensor_and_resource():
    with pytest.raises(errors.ResourceBudgetError) as info:
        relax.build(_relu_module((2**31, 4)), target="vitis_spatial")
    assert "x" in str(info.value) and "HBM" in str(info.value)


@covers(errors.TokenSplitError)
def test_token_parallel_engines_for_a_bidirectional_model_say_why_not():
    """``allocation(layers="token_parallel")`` on BERT: every chunk would need every other
    chunk's K and V, so the build refuses, naming the attention and the reason."""
    mod = tvm_spatial.frontend.from_onnx(Path(__file__).parent / "fixtures" / "bert_tiny.onnx")
    with tvm_spatial.allocation(layers="token_parallel"), \
            pytest.raises(tvm_spatial.TokenSplitError, match="attention is not causal"):
        relax.build(mod, target="vitis_spatial")


@covers(errors.UsageError)
def test_bad_command_line_input_is_a_usage_error(tmp_path):
    from tvm_spatial.cli import main, parse_shapes

    for bad in (["x"], ["x="], ["x=1,b"], ["=3"], ["x=0,4"], ["x=1", "x=2"]):
        with pytest.raises(errors.UsageError) as info:
            parse_shapes(bad)
        assert repr(bad[-1]) in str(info.value) or "twice" in str(info.value)
    with pytest.raises(errors.UsageError, match="no_such_model"):
        main(["--verbose", "compile", "no_such_model", "-o", str(tmp_path / "o")])
    with pytest.raises(errors.UsageError, match="--shape applies to ONNX"):
        main(["--verbose", "compile", "mlp", "-o", str(tmp_path / "o"), "--shape", "x=1,2"])
    assert not (tmp_path / "o").exists()


# ---- the command line: one line, non-zero exit, traceback only with --verbose -----------


def _cli(*args, cwd=None):
    exe = shutil.which("tvm-spatial", path=os.path.dirname(sys.executable))
    cmd = [exe] if exe else [sys.executable, "-m", "tvm_spatial.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_cli_prints_one_line_and_exits_2_without_a_traceback(tmp_path):
    out = tmp_path / "out"
    proc = _cli("compile", "no_such_model.onnx", "-o", str(out), "--device", "u280")
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 2
    assert len(lines) == 1 and lines[0].startswith("error:") and "no_such_model.onnx" in lines[0], lines
    assert not out.exists()


def test_cli_verbose_shows_the_traceback(tmp_path):
    proc = _cli("--verbose", "compile", "mlp", "-o", str(tmp_path / "o"), "--device", "vu9p")
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "UnknownDeviceError" in proc.stderr and "vu9p" in proc.stderr


def test_cli_long_messages_stay_on_one_line(capsys, tmp_path):
    from tvm_spatial.cli import main

    long_name = "m" * 150 + "[bold]x[/bold]"
    assert main(["compile", long_name, "-o", str(tmp_path / "o")]) == 2
    printed = capsys.readouterr().out
    assert printed.count("\n") == 1 and long_name in printed  # not wrapped, markup not eaten


def test_cli_internal_errors_are_one_line_with_exit_3(monkeypatch, capsys, tmp_path):
    """An exception that is not ours (a bug) still prints one line, with its type."""
    from tvm_spatial import cli

    def broken(*_args, **_kwargs):
        raise KeyError("kaput\nsecond line")

    monkeypatch.setattr(cli, "_build", broken)
    assert cli.main(["compile", "mlp", "-o", str(tmp_path / "o")]) == 3
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and "internal error: KeyError" in printed[0] and "--verbose" in printed[0]


# -- generation (tvm_spatial.generate; more in tests/test_generate.py) --------------------
# Raised before anything is built: the limits are read from the committed ONNX pair.

_GEN = os.path.join(os.path.dirname(__file__), "fixtures", "gpt2_tiny")


@covers(errors.GenerationError, errors.ContextLengthError, errors.VocabularyError)
def test_generation_input_errors_name_the_limit():
    from tvm_spatial.generate import check_context, check_tokens, read_signature

    signature = read_signature(_GEN + "_prefill.onnx", _GEN + "_decode.onnx")
    with pytest.raises(errors.ContextLengthError, match=r"40 tokens, longer than the compiled context of 32"):
        check_context(signature, 40, 1)
    with pytest.raises(errors.VocabularyError, match=r"token id 500 .*vocabulary of 128"):
        check_tokens(signature, [1, 500])


@covers(errors.KVCacheInterfaceError)
def test_decode_model_without_cache_inputs_names_them():
    from tvm_spatial.generate import read_signature

    with pytest.raises(errors.KVCacheInterfaceError, match=r"no cache input.*'past_key', 'past_value'"):
        read_signature(None, _GEN + ".onnx")
