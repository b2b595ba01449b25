"""The tvm-spatial command line: compile (ONNX file or bundled example) and demo."""

from __future__ import annotations

import subprocess
from pathlib import Path
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tvm_spatial.cli import main


@pytest.fixture
def tiny_onnx(tmp_path):
    """MatMul + Add + Relu + Softmax with random initializers, built with onnx.helper."""
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.standard_normal((8, 5)).astype("float32"), "w")
    b = numpy_helper.from_array(rng.standard_normal((5,)).astype("float32"), "b")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Add", ["h", "b"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["r"]),
        helper.make_node("Softmax", ["r"], ["y"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "tiny.onnx"
    onnx.save(model, str(path))
    return path


def test_compile_onnx_writes_a_project(tiny_onnx, tmp_path, capsys):
    out = tmp_path / "proj"
    assert main(["compile", str(tiny_onnx), "-o", str(out), "--shape", "x=3,8"]) == 0
    kernels = list((out / "kernels").glob("k*.cpp"))
    assert len(kernels) == 1
    text = kernels[0].read_text()
    assert "float x[3][8]" in text and "#pragma HLS INTERFACE m_axi port=x" in text
    printed = capsys.readouterr().out
    assert "operators left on host" in printed and str(out) in printed


def test_compile_refuses_a_non_empty_directory_without_force(tiny_onnx, tmp_path, capsys):
    out = tmp_path / "proj"
    out.mkdir()
    (out / "mine.txt").write_text("user data")
    assert main(["compile", str(tiny_onnx), "-o", str(out), "--shape", "x=3,8"]) == 2
    err = capsys.readouterr().out
    assert "error:" in err and str(out) in err and "--force" in err
    assert (out / "mine.txt").read_text() == "user data"
    assert main(["compile", str(tiny_onnx), "-o", str(out), "--shape", "x=3,8", "--force"]) == 0
    assert not (out / "mine.txt").exists()


def test_dynamic_onnx_input_without_shape_names_the_dimension(tiny_onnx, tmp_path, capsys):
    assert main(["compile", str(tiny_onnx), "-o", str(tmp_path / "p")]) == 2
    assert "batch" in capsys.readouterr().out


def test_bad_model_and_device_are_one_line_errors(tmp_path, capsys):
    assert main(["compile", "no_such_model", "-o", str(tmp_path / "a")]) == 2
    assert "no_such_model" in capsys.readouterr().out
    assert main(["compile", "mlp", "-o", str(tmp_path / "b"), "--device", "vu9p"]) == 2
    assert "vu9p" in capsys.readouterr().out


def test_demo_runs_emulation_and_matches_llvm(tmp_path):
    """The README's main job, as a user runs it (console script entry point)."""
    proc = subprocess.run(
        [sys.executable, "-m", "tvm_spatial.cli", "demo", "mlp", "-o", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "MATCH" in proc.stdout and "MISMATCH" not in proc.stdout
    assert (tmp_path / "demo" / "Makefile").is_file()
    # the estimate is of the design that was built, the model's own allocation only beside it
    assert "estimate of the generated design (its MAC arrays as built)" in proc.stdout
    assert "not yet applied" not in proc.stdout
    assert "unconstrained model allocation" in proc.stdout


def test_estimate_as_built_is_the_allocation_relax_build_applies(capsys):
    """``estimate --as-built`` reads the MAC arrays the codegen realized; they are the ones
    ``allocate_for_codegen`` chose, and its latency is the model's for exactly that design."""
    from tvm_spatial.devices import get_device
    from tvm_spatial.estimate import (
        allocate_for_codegen, design_from_onnx, design_work, estimate_work, realized_config,
    )
    from tvm_spatial.estimate.report import _fmt

    model = Path(__file__).parent / "fixtures" / "gpt2_tiny.onnx"
    design = design_from_onnx(model)
    dev = get_device("u280")
    chosen = allocate_for_codegen(design_work(design), dev)
    arrays = {p.name: p.realized for k in design.kernels for p in k.processes if p.array}
    assert arrays and arrays == chosen.matmul_tilings()
    est = estimate_work(design_work(design), dev, realized_config(design))
    assert est.prefill_cycles == pytest.approx(chosen.estimate.prefill_cycles)
    assert main(["estimate", str(model), "--as-built", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "as relax.build generates it" in out
    assert _fmt(est.prefill_cycles, est) in out
    assert design_work(design).block == 8  # the allocation streams the row-wise processes in blocks
    assert "16 / 8 (row-wise processes" in out


def test_compile_then_run_matches_onnxruntime(tmp_path, capsys):
    """`tvm-spatial compile` writes the emulation library; `tvm-spatial run` runs it."""
    fixtures = Path(__file__).parent / "fixtures"
    data = np.load(fixtures / "gpt2_tiny.npz")
    out = tmp_path / "gpt2"
    assert main(["compile", str(fixtures / "gpt2_tiny.onnx"), "-o", str(out)]) == 0
    assert (out / "emulation" / "design.so").is_file()
    np.savez(tmp_path / "in.npz", input_ids=data["in:input_ids"])
    assert main(["run", str(out), "--inputs", str(tmp_path / "in.npz"), "--output", str(tmp_path / "o.npz")]) == 0
    got = np.load(tmp_path / "o.npz")["output0"]
    np.testing.assert_allclose(got, data["out:logits"], rtol=1e-4, atol=1e-4)
    np.savez(tmp_path / "bad.npz", ids=data["in:input_ids"])
    capsys.readouterr()
    assert main(["run", str(out), "--inputs", str(tmp_path / "bad.npz")]) == 2
    assert "input_ids" in capsys.readouterr().out


def test_run_with_an_xclbin_that_is_not_there_says_so(tiny_onnx, tmp_path, capsys):
    out = tmp_path / "proj"
    assert main(["compile", str(tiny_onnx), "-o", str(out), "--shape", "x=3,8"]) == 0
    np.savez(tmp_path / "in.npz", x=np.ones((3, 8), "float32"))
    capsys.readouterr()
    missing = tmp_path / "nowhere.xclbin"
    assert main(["run", str(out), "--inputs", str(tmp_path / "in.npz"), "--xclbin", str(missing)]) == 2
    printed = capsys.readouterr().out.replace("\n", "")
    # XRT's preflight names the first missing piece: no card here, else the missing file
    assert printed.startswith("error: ")
    assert "no Alveo device with index 0" in printed or f"xclbin {missing} does not exist" in printed
    assert not (out / "outputs.npz").exists()
