"""Token blocks (codegen_hls.token_blocks): row-wise processes compute a block of tokens at
a time, the others keep whole tensors.

Which operators are row-wise is a fact about the operators (a layer norm over the hidden
axis is, a softmax over the token axis or an attention is not), written here by hand.
Numbers: the blocked GPT2 and BERT fixtures against onnxruntime's outputs stored with
them, and against the same design built with whole tensors (the same arithmetic in the
same order, so the same bits); the kernels compile with -Werror as Vitis sees them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_spatial
from codegen_hls import emulation
from codegen_hls.token_blocks import separable, token_axis

sys.path.insert(0, str(Path(__file__).parent))
from test_models import load_fixture  # noqa: E402


# ---- which operators are row-wise --------------------------------------------------------
def _fn(body, *params):
    """A Relax function of ``params`` (name, shape) returning ``body(*vars)``."""
    args = [relax.Var(name, relax.TensorType(shape, "float32")) for name, shape in params]
    bb = relax.BlockBuilder()
    with bb.function("main", args):
        with bb.dataflow():
            out = bb.emit_output(body(*args))
        bb.emit_func_output(out)
    return bb.get()["main"]


T, D = 16, 8


@pytest.mark.parametrize("case, body, params, streamed, expected", [
    ("layer norm over the hidden axis", lambda x, g, b: relax.op.nn.layer_norm(x, g, b, axes=[-1]),
     [("x", (1, T, D)), ("g", (D,)), ("b", (D,))], {0}, True),
    ("linear: x @ W + b", lambda x, w, b: relax.op.add(relax.op.matmul(x, w), b),
     [("x", (T, D)), ("w", (D, 4)), ("b", (4,))], {0}, True),
    ("residual add of two streams", lambda x, y: relax.op.add(x, y), [("x", (T, D)), ("y", (T, D))], {0, 1}, True),
    ("GELU", lambda x: relax.op.nn.gelu(x), [("x", (1, T, D))], {0}, True),
    ("split along the hidden axis", lambda x: relax.op.split(x, 2, axis=1), [("x", (T, D))], {0}, True),
    ("softmax over the token axis", lambda x: relax.op.nn.softmax(x, axis=0), [("x", (T, D))], {0}, False),
    ("sum over the tokens", lambda x: relax.op.sum(x, axis=0, keepdims=True), [("x", (T, D))], {0}, False),
    ("a token-indexed port (a position table)", lambda x, p: relax.op.add(x, p),
     [("x", (T, D)), ("p", (T, D))], {0}, False),
    ("the stream as a matmul's second operand", lambda w, x: relax.op.matmul(w, x),
     [("w", (4, T)), ("x", (T, D))], {1}, False),
    ("a transpose", lambda x: relax.op.permute_dims(x, [1, 0]), [("x", (T, D))], {0}, False),
])
def test_row_wise_operators(case, body, params, streamed, expected):
    assert separable(_fn(body, *params), streamed, T) is expected, case


def test_token_axis_is_the_first_axis_longer_than_one():
    assert token_axis((1, 16, 64), 16) == 1 and token_axis((16, 64), 16) == 0
    assert token_axis((1, 4, 16, 16), 16) is None  # heads first: not token-major
    assert token_axis((1, 16), 1) is None  # a single token has nothing to block


# ---- the fixtures, blocked -----------------------------------------------------------------
def _build(name: str, rows: int):
    path, inputs, outputs, _ = load_fixture(name)
    with tvm_spatial.allocation(rows=rows, layers="unroll"):  # one region: the tests count its processes
        ex = relax.build(tvm_spatial.frontend.from_onnx(path), target="vitis_spatial")
    return ex, inputs, outputs


def _run(ex, inputs):
    vm = relax.VirtualMachine(ex, tvm.cpu())
    got = vm["main"](*[tvm.runtime.tensor(v) for v in inputs.values()])
    return [g.numpy() for g in ([got] if isinstance(got, tvm.runtime.Tensor) else list(got))]


@pytest.fixture(scope="module")
def gpt2_blocked():
    return _build("gpt2_tiny", 8)


ROW_WISE = {"layer_norm", "linear", "split", "residual_add", "gelu", "attention"}  # attention: row-wise in its queries


def test_row_wise_processes_run_in_blocks_and_the_rest_whole(gpt2_blocked):
    ex, *_ = gpt2_blocked
    design = tvm_spatial.design_of(ex)
    (kernel,) = design.kernels
    for proc in kernel.processes:
        assert proc.separable is (proc.op in ROW_WISE), proc.name
        assert proc.rows == (8 if proc.op in ROW_WISE else 0), proc.name
        body = kernel.source.split(f"static void {proc.name}(", 1)[1].split("\nstatic void ", 1)[0]
        assert ("for (int blk = 0; blk < 2; ++blk)" in body) is (proc.op in ROW_WISE), proc.name
    # a blocked linear holds one block of its input: 8 of the 16 tokens
    linear = next(p for p in kernel.processes if p.op == "linear")
    body = kernel.source.split(f"static void {linear.name}(", 1)[1].split("\nstatic void ", 1)[0]
    assert re.search(r"static float in_\w+\[8\]\[64\];", body), body[:400]
    # its record still counts the whole call: 16 rows, twice the block's loop trips
    assert linear.matmul[1] == 16


def test_blocked_fixtures_match_onnxruntime_and_the_whole_tensor_build(gpt2_blocked):
    ex, inputs, outputs = gpt2_blocked
    blocked = _run(ex, inputs)
    for got, (name, want) in zip(blocked, outputs.items()):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=name)
    whole_ex, _, _ = _build("gpt2_tiny", 16)  # rows at the sequence length: whole tensors
    assert {p.rows for k in tvm_spatial.design_of(whole_ex).kernels for p in k.processes} == {0}
    for got, want in zip(blocked, _run(whole_ex, inputs)):
        np.testing.assert_array_equal(got, want)


def test_blocked_bert_matches_onnxruntime():
    ex, inputs, outputs = _build("bert_tiny", 8)
    assert any(p.rows == 8 for k in tvm_spatial.design_of(ex).kernels for p in k.processes)
    for got, (name, want) in zip(_run(ex, inputs), outputs.items()):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=name)


def test_blocked_kernels_compile_with_werror(gpt2_blocked, tmp_path):
    design = tvm_spatial.design_of(gpt2_blocked[0])
    emulation.write_sources(design, tmp_path)
    for kernel in design.kernels:
        proc = subprocess.run(
            [emulation.host_compiler(), "-std=c++17", "-O2", "-c", "-isystem", str(emulation.xilinx_include_dir()),
             *emulation.STRICT_FLAGS, str(tmp_path / kernel.filename), "-o", os.devnull],
            cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_the_estimate_reads_the_blocks_and_they_overlap(gpt2_blocked):
    """The built design's estimate equals the model's for its recorded blocks, and the
    blocked row-wise segments overlap: faster than the same arrays on whole tensors."""
    from tvm_spatial.devices import get_device
    from tvm_spatial.estimate import ModelConfig, design_work, estimate_work, realized_config

    design = tvm_spatial.design_of(gpt2_blocked[0])
    config = realized_config(design)
    assert config.block == 8
    blocked = tvm_spatial.estimate(design)
    work, dev = design_work(design), get_device(design.device)
    assert blocked.prefill_cycles == pytest.approx(estimate_work(work, dev, config).prefill_cycles)
    whole = estimate_work(work, dev, ModelConfig(block=None, parallelism=config.parallelism))
    assert blocked.prefill_cycles < whole.prefill_cycles
    # a row-wise process buffers one block; a whole-tensor one (the embedding) its whole input
    linear = next(p for p in work.processes if p.op == "linear")
    assert linear.separable and linear.rows == 8
    assert not next(p for p in work.processes if p.op == "embedding").separable


def test_packed_w4a8_linears_run_in_blocks():
    """The W4A8 kernel (packed weight bytes) is a matmul like any other: a linear layer
    using it streams token blocks, and its record still says two outputs per multiply."""
    from tvm_spatial.estimate import design_from_module, design_work
    from tvm_spatial.quantization import random_token_calibration

    path, *_ = load_fixture("gpt2_tiny")
    mod = tvm_spatial.frontend.from_onnx(path)
    with tvm_spatial.allocation(rows=8):
        design = design_from_module(tvm_spatial.quantize(mod, "w4a8", random_token_calibration(mod, samples=2)))
    linears = [p for k in design.kernels for p in k.processes if p.op == "linear"]
    assert linears and all(p.rows == 8 and p.packed == 2 and p.matmul[1] == 16 for p in linears)
    assert design_work(design).block == 8
