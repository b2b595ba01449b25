"""Layer reuse (relax_passes/layer_reuse.py): a run of identical layers becomes one region
the host calls once per layer with that layer's weights. Checked against TVM's llvm
build and onnxruntime's stored outputs; the model's view of it against the unrolled
design of the same graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tvm
from helpers import build_and_compare, run_vm
from tvm import relax

import tvm_spatial
from relax_passes import partition_for_vitis_spatial
from relax_passes.layer_reuse import CALLS_ATTR, LAYER_FUNCTION, reuses_layers
from tvm_spatial.estimate import design_from_module, design_work, estimate_work, realized_config

FIXTURES = Path(__file__).parent / "fixtures"


def _regions(part) -> dict[str, int]:
    """Kernel name -> calls per inference, of every offloaded region."""
    return {str(f.attrs["global_symbol"]): int(f.attrs.get(CALLS_ATTR, 1))
            for _, f in part.functions.items()
            if isinstance(f, relax.Function) and f.attrs and f.attrs.get("Codegen")}


def residual_mlp(layers: int, hidden: int = 16, seed: int = 0, shared_scale: bool = False,
                 last_is_result: bool = False):
    """``layers`` blocks of x + relu(x @ W_l + b_l) (times a shared input, if asked); with
    ``last_is_result`` the last layer's add is itself main's result (no binding after it)."""
    rng = np.random.default_rng(seed)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([4, hidden], "float32"))
    params = [x]
    scale = None
    if shared_scale:
        scale = relax.Var("scale", relax.TensorType([4, hidden], "float32"))
        params.append(scale)
    with bb.function("main", params):
        with bb.dataflow():
            h = x
            for layer in range(layers):
                w = relax.const(rng.standard_normal((hidden, hidden)).astype("float32") * 0.3)
                b = relax.const(rng.standard_normal(hidden).astype("float32") * 0.1)
                y = bb.emit(relax.op.nn.relu(relax.op.add(relax.op.matmul(h, w), b)))
                if scale is not None:
                    y = bb.emit(relax.op.multiply(y, scale))
                last = last_is_result and layer == layers - 1
                h = (bb.emit_output if last else bb.emit)(relax.op.add(h, y))
            out = h if last_is_result else bb.emit_output(h)
        bb.emit_func_output(out)
    inputs = [rng.standard_normal((4, hidden)).astype("float32") for _ in params]
    return bb.get(), inputs


@pytest.mark.parametrize("shared, last_is_result", [(False, False), (True, False), (False, True)])
def test_identical_layers_become_one_region_called_per_layer(shared, last_is_result):
    mod, inputs = residual_mlp(3, shared_scale=shared, last_is_result=last_is_result)
    part = partition_for_vitis_spatial(mod, layers="reuse")
    assert reuses_layers(part)
    assert sorted(_regions(part).values()) == [3]
    # raises if, say, the last call's result were a dataflow variable returned from main
    assert relax.analysis.well_formed(part["main"]) is not False
    # unrolled, the same graph is one region called once
    assert list(_regions(partition_for_vitis_spatial(mod)).values()) == [1]
    with tvm_spatial.allocation(layers="reuse"):
        ex, _ = build_and_compare(mod, inputs)
    design = tvm_spatial.design_of(ex)
    assert [k.calls for k in design.kernels] == [3]


def test_a_reused_layer_reads_its_input_port_in_token_blocks():
    """The layer's input arrives through a port, read by its linear and by its residual add:
    both cut it into token blocks (each block copies its rows of the port), so the whole
    layer is one pipeline of blocks; equal to llvm, and the copy cycles the design records
    are those the HLS text implies."""
    from test_lanes import _function_body, _pipelined_cycles

    mod, inputs = residual_mlp(3)
    with tvm_spatial.allocation(layers="reuse", rows=2):
        ex, _ = build_and_compare(mod, inputs)
    (kernel,) = tvm_spatial.design_of(ex).kernels
    assert kernel.calls == 3
    assert [p.rows for p in kernel.processes] == [2] * len(kernel.processes)
    port_readers = [p for p in kernel.processes if p.op in ("linear", "residual_add")]
    assert len(port_readers) == 2
    for proc in kernel.processes:
        body = _function_body(kernel.source, proc.name)
        assert ("blk * 2 + i0" in body) == (proc in port_readers)  # its rows of the port
        assert proc.stream_io == _pipelined_cycles(body)
    # the block buffer of a port is memory the model counts: 2 tokens of 16
    assert 2 * 16 in kernel.processes[0].scratch


def test_a_single_layer_is_not_outlined():
    mod, _ = residual_mlp(1)
    assert not reuses_layers(partition_for_vitis_spatial(mod, layers="reuse"))


def test_layers_that_differ_are_not_outlined_together():
    """Two layers of another width between two of the first kind: no run of repeats."""
    rng = np.random.default_rng(1)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([4, 16], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            h = x
            for width in (16, 32, 16):
                w1 = relax.const(rng.standard_normal((16, width)).astype("float32"))
                w2 = relax.const(rng.standard_normal((width, 16)).astype("float32"))
                h = bb.emit(relax.op.matmul(relax.op.nn.relu(relax.op.matmul(h, w1)), w2))
            out = bb.emit_output(h)
        bb.emit_func_output(out)
    assert not reuses_layers(partition_for_vitis_spatial(bb.get(), layers="reuse"))


def test_bad_layers_choice_is_refused():
    mod, _ = residual_mlp(2)
    with pytest.raises(ValueError, match="layers"):
        partition_for_vitis_spatial(mod, layers="sometimes")
    with pytest.raises(tvm_spatial.UsageError, match="layers"):
        with tvm_spatial.allocation(layers="sometimes"):
            pass


def scaled_layers(scales):
    """Layers ``x + relu(x @ W_l) * s_l`` with 0-d constants ``s_l`` (as a quantization
    scale), and a 0.5 the same in every layer."""
    rng = np.random.default_rng(3)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([4, 16], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            h = x
            for s in scales:
                w = relax.const(rng.standard_normal((16, 16)).astype("float32") * 0.3)
                y = bb.emit(relax.op.nn.relu(relax.op.matmul(h, w)))
                y = bb.emit(relax.op.multiply(relax.op.multiply(y, relax.const(s, "float32")),
                                              relax.const(0.5, "float32")))
                h = bb.emit(relax.op.add(h, y))
            out = bb.emit_output(h)
        bb.emit_func_output(out)
    return bb.get(), [rng.standard_normal((4, 16)).astype("float32")]


def _scalar_params(part) -> int:
    """0-d parameters of the reused layer's region: the values each call passes."""
    (region,) = [f for _, f in part.functions.items() if isinstance(f, relax.Function) and f.attrs
                 and f.attrs.get("Codegen") and int(f.attrs.get(CALLS_ATTR, 1)) > 1]
    return sum(1 for p in region.params if len(p.ty.shape) == 0)


def test_a_scalar_that_differs_per_layer_is_passed_per_call():
    """A per-layer 0-d constant (a quantization scale) no longer keeps layers apart: it
    becomes a parameter of each call, while a scalar the same in every layer (the 0.5)
    stays a literal inside the layer. The emulation equals llvm, so each call got its own."""
    mod, inputs = scaled_layers([0.25, 2.0, -1.5])
    part = partition_for_vitis_spatial(mod, layers="reuse")
    assert sorted(_regions(part).values()) == [3] and _scalar_params(part) == 1
    same, _ = scaled_layers([0.75, 0.75, 0.75])
    assert _scalar_params(partition_for_vitis_spatial(same, layers="reuse")) == 0
    with tvm_spatial.allocation(layers="reuse"):
        ex, _ = build_and_compare(mod, inputs)
    assert [k.calls for k in tvm_spatial.design_of(ex).kernels] == [3]


@pytest.mark.parametrize("name", ["gpt2_tiny", "bert_tiny"])
def test_quantized_fixture_reuses_its_layers(name):
    """W8A8: every layer has its own activation scales; the layers are reused all the same
    (each call passes its scales), and the emulation equals TVM's llvm build of the
    quantized module."""
    mod, inputs, _ = _fixture(name)
    quantized = tvm_spatial.quantize(mod, "w8a8")
    assert 2 in _regions(partition_for_vitis_spatial(quantized, layers="reuse")).values()
    with tvm_spatial.allocation(layers="reuse"):
        ex, _ = build_and_compare(quantized, inputs)
    assert max(k.calls for k in tvm_spatial.design_of(ex).kernels) == 2


def _fixture(name: str):
    data = np.load(FIXTURES / f"{name}.npz")
    inputs = [data[k] for k in data.files if k.startswith("in:")]
    wants = [data[k] for k in data.files if k.startswith("out:")]
    return tvm_spatial.frontend.from_onnx(FIXTURES / f"{name}.onnx"), inputs, wants


@pytest.mark.parametrize("name", ["gpt2_tiny", "bert_tiny"])
def test_reused_fixture_matches_onnxruntime(name):
    """BERT's extended attention mask sits inside its first layer in the export; it is
    moved before the run so both layers line up."""
    mod, inputs, wants = _fixture(name)
    part = partition_for_vitis_spatial(mod, layers="reuse")
    assert 2 in _regions(part).values()  # both fixtures have two layers
    with tvm_spatial.allocation(layers="reuse"):
        ex = relax.build(mod, target="vitis_spatial")
    got = run_vm(ex, inputs)
    for g, w in zip(got, wants):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
    assert max(k.calls for k in tvm_spatial.design_of(ex).kernels) == 2


def test_decode_step_reuses_its_layers_with_the_cache_layer_as_an_argument():
    """A decode step's in-place cache updates are one function per cache, so its layers
    are outlined too: each call passes its own layer index (K's and V's) and the cache
    itself under the name of main's input (it names the kernel's port). The step's
    results are checked in tests/test_kv_inplace.py."""
    mod = tvm_spatial.frontend.from_onnx(FIXTURES / "gpt2_tiny_decode.onnx")
    part = partition_for_vitis_spatial(mod, layers="reuse")
    assert reuses_layers(part)
    layer_gv = part.get_global_var(LAYER_FUNCTION)
    assert {"past_key", "past_value"} <= {p.name for p in part[layer_gv].params}
    indices = []

    def visit(expr):
        if isinstance(expr, relax.Call) and expr.op.same_as(layer_gv):
            indices.append([int(a.value.numpy()) for a in expr.args if isinstance(a, tvm.ir.GenericConst)
                            and a.ty.ndim == 0 and str(a.ty.dtype) == "int64"])

    relax.analysis.post_order_visit(part["main"].body, visit)
    assert indices == [[0, 0], [1, 1]]  # the two layers' K and V rows


@pytest.fixture(scope="module")
def both_gpt2_designs():
    mod, _, _ = _fixture("gpt2_tiny")
    designs = {}
    for layers in ("reuse", "unroll"):
        with tvm_spatial.allocation(layers=layers):
            designs[layers] = design_from_module(mod)
    return mod, designs


def test_model_counts_every_call_of_a_reused_layer(both_gpt2_designs):
    """The work of a graph does not depend on how its hardware is shared: the DSP
    roofline (every MAC at the card's DSP rate) of the reused and the unrolled design is
    the same. Their off-chip traffic differs by the activations that now cross regions
    through memory, counted by hand from the graph: the embedding's output, each call's
    layer input (read by its layer norm and its residual add) and output, the head's
    input -- 1 + 2 x (2 + 1) + 1 = 8 tensors of 16 x 64 floats."""
    _, designs = both_gpt2_designs
    device = tvm_spatial.get_device("u280")
    est = {k: estimate_work(design_work(d), device, realized_config(d)) for k, d in designs.items()}
    assert est["reuse"].prefill_roofline.dsp_cycles == pytest.approx(est["unroll"].prefill_roofline.dsp_cycles)
    bytes_per_cycle = device.offchip.bandwidth_gbs * 1e9 / (est["reuse"].clock_mhz * 1e6)
    extra = (est["reuse"].prefill_roofline.memory_cycles - est["unroll"].prefill_roofline.memory_cycles)
    assert extra * bytes_per_cycle == pytest.approx(8 * 16 * 64 * 4)
    # and the layer's hardware is counted once: fewer processes than the unrolled design
    assert len(design_work(designs["reuse"]).processes) < len(design_work(designs["unroll"]).processes)


def test_auto_keeps_the_faster_design(both_gpt2_designs):
    mod, designs = both_gpt2_designs
    prefill = {k: tvm_spatial.estimate(d).prefill_cycles for k, d in designs.items()}
    chosen = tvm_spatial.estimate(design_from_module(mod)).prefill_cycles
    assert chosen == pytest.approx(min(prefill.values()))
