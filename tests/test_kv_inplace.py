"""The decode design updates its KV cache in place (``relax_passes.kv_inplace``).

What a step must do: write one new K and one new V row per layer into the cache buffer
the caller passed (an ``inout`` port), return that same buffer as the present cache, and
compute what the ONNX graph computes. References are independent of the codegen: the
fixture's onnxruntime outputs, TVM's own ``llvm`` build of the same graph (fresh output
tensors, no aliasing), and numpy slicing of the cache.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import tvm
from test_generated_cpp import _compile, _explain, _run_sanitized, _strict_kernel_args
from test_fixture_quality import _assert_clean_sanitized_run
from tvm import relax

import tvm_spatial
from codegen_hls import emulation
from codegen_hls.design import Design
from codegen_hls.host_code import host_cpp
from relax_passes.kv_inplace import find_cache_updates, kv_inplace
from tvm_spatial.generate import Generator

FIXTURES = Path(__file__).parent / "fixtures"
PREFILL, DECODE = FIXTURES / "gpt2_tiny_prefill.onnx", FIXTURES / "gpt2_tiny_decode.onnx"
CACHE = ("past_key", "past_value")


@pytest.fixture(scope="module")
def decode_ex():
    return relax.build(tvm_spatial.frontend.from_onnx(DECODE), target="vitis_spatial")


@pytest.fixture(scope="module")
def design(decode_ex):
    return tvm_spatial.design_of(decode_ex)


def _inputs():
    data = np.load(FIXTURES / "gpt2_tiny_generate.npz")
    names = [k.split(":", 2)[2] for k in data.files if k.startswith("in:decode:")]
    return data, names, {n: data[f"in:decode:{n}"] for n in names}


def _cache_shape():
    _, _, inputs = _inputs()
    return inputs["past_key"].shape


# -- Relax ------------------------------------------------------------------------------


def test_pass_finds_both_caches_and_nothing_in_prefill():
    decode = relax.transform.FoldConstant()(tvm_spatial.frontend.from_onnx(DECODE))
    updates = find_cache_updates(decode["main"])
    assert [(u.output, u.param) for u in updates] == [(1, 2), (2, 3)]  # present_* <- past_*
    assert all(len(u.layers) == _cache_shape()[0] for u in updates)
    prefill = tvm_spatial.frontend.from_onnx(PREFILL)
    assert find_cache_updates(prefill["main"]) == []
    assert kv_inplace(prefill) is prefill


def test_main_calls_the_kernel_in_place():
    """After partitioning, main's one kernel call is call_inplace_packed whose aliased
    outputs are past_key and past_value, returned as present_key and present_value."""
    from relax_passes import partition_for_vitis_spatial

    mod = partition_for_vitis_spatial(tvm_spatial.frontend.from_onnx(DECODE))
    main = mod["main"]
    calls = []

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            calls.append(expr)

    relax.analysis.post_order_visit(main.body, visit)
    packed = [c for c in calls if c.op.name == "relax.call_inplace_packed"]
    assert len(packed) == 1 and not any(c.op.name in ("relax.concat", "relax.call_dps_packed") for c in calls)
    call = packed[0]
    indices = [int(i) for i in call.attrs.inplace_indices]
    named = [call.args[1 + i] for i in indices]  # args[0] is the extern function
    assert [v.name for v in named[:2]] == list(CACHE)
    text = main.script()
    assert re.search(r"gv: .* = lv, kv_updated, kv_updated1", text), text[-800:]


# -- the design -----------------------------------------------------------------------


def test_cache_ports_are_inout_in_the_design_json(design):
    (kernel,) = design.kernels
    cache = [p for p in kernel.ports if p.name.startswith(CACHE)]
    layers = _cache_shape()[0]
    assert len(cache) == 2 * layers  # one port per layer's update process, K and V
    assert {p.direction for p in cache} == {"inout"}
    assert {p.arg for p in cache if p.name.startswith("past_key")} != {p.arg for p in cache if p.name.startswith("past_value")}
    assert [p.direction for p in kernel.ports if p.direction != "in"].count("out") == 1  # logits only
    data = json.loads(design.to_json())
    assert {p["direction"] for p in data["kernels"][0]["ports"] if p["name"].startswith(CACHE)} == {"inout"}
    assert Design.from_json(design.to_json()) == design
    ops = [p.op for p in kernel.processes]
    assert ops.count("kv_update") == 2 * layers and "concat" not in ops and "take" not in ops


def _functions(source: str) -> dict[str, tuple[str, list[str]]]:
    """C function name -> (parameter text, body lines), from the printed kernel."""
    out = {}
    lines = source.split("\n")
    for i, line in enumerate(lines):
        m = re.match(r'^(?:static void|extern "C" void|void) (\w+)\((.*)\) \{$', line)
        if not m:
            continue
        body = []
        for inner in lines[i + 1:]:
            if inner == "}":
                break
            body.append(inner)
        out[m.group(1)] = (m.group(2), body)
    return out


def _enclosing_loops(body: list[str], index: int) -> list[int]:
    """Trip counts of the ``for (int v = 0; v < N; ++v)`` loops enclosing line ``index``."""
    depth = len(body[index]) - len(body[index].lstrip())
    bounds = []
    for line in reversed(body[:index]):
        indent = len(line) - len(line.lstrip())
        if indent < depth and line.strip():
            depth = indent
            m = re.match(r"\s*for \(int \w+ = 0; \w+ < (\d+); \+\+\w+\) \{", line)
            if m:
                bounds.append(int(m.group(1)))
    return bounds


def test_kernel_writes_the_cache_only_one_row_per_layer(design):
    """Every store into a cache port sits in a loop nest of heads x head_dim (one row), none
    over the context; stage functions only read the cache (const); each store's process
    is a kv_update, whose port is the only non-const cache parameter."""
    layers, _, heads, ctx, head_dim = _cache_shape()
    (kernel,) = design.kernels
    cache_ports = {p.name for p in kernel.ports if p.name.startswith(CACHE)}
    funcs = _functions(kernel.source)
    stores = 0
    for name, (params, body) in funcs.items():
        for port in cache_ports:
            declared = re.search(rf"(const )?float {port}\[{layers}\]\[1\]\[{heads}\]\[{ctx}\]\[{head_dim}\]", params)
            if declared is None:
                continue
            if "__" in name:  # a TIR stage function (take): reads only
                assert declared.group(1) == "const ", (name, port)
            for i, line in enumerate(body):
                if re.match(rf"\s*{port}\[", line) and "=" in line:
                    stores += 1
                    assert "_kv_update" in name, (name, line)
                    assert sorted(_enclosing_loops(body, i)) == sorted([heads, head_dim]), (name, line)
                    assert line.strip() == f"{port}[layer][0][h][pos][d] = " + line.split("= ", 1)[1]
    assert stores == 2 * layers  # one row store per (layer, K/V) process
    # the stage functions the processes call take the cache const; nothing else writes it
    for name, (params, body) in funcs.items():
        if "__" in name:
            assert not re.search(r"(?<!const )float \w+\[\d+\]\[1\]\[\d+\]\[\d+\]\[\d+\]", params), name


def test_decode_step_equals_onnxruntime_and_the_llvm_build_and_aliases_its_cache(decode_ex):
    data, names, inputs = _inputs()
    want = [data[f"out:decode:{n}"] for n in ("logits", "present_key", "present_value")]
    vm = relax.VirtualMachine(decode_ex, tvm.cpu())["main"]
    args = {n: tvm.runtime.tensor(v) for n, v in inputs.items()}
    got = vm(*[args[n] for n in names])
    ref_vm = relax.VirtualMachine(relax.build(tvm_spatial.frontend.from_onnx(DECODE), target="llvm"), tvm.cpu())
    ref = ref_vm["main"](*[tvm.runtime.tensor(inputs[n]) for n in names])
    for g, r, w in zip(got, ref, want):
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(g.numpy(), r.numpy(), rtol=1e-4, atol=1e-4)
    # the present caches ARE the past tensors passed in; only row `position` changed
    assert got[1].same_as(args["past_key"]) and got[2].same_as(args["past_value"])
    assert not ref[1].same_as(args["past_key"])  # the llvm build returns new tensors
    pos = int(inputs["position"][0])
    for cache, name in zip(got[1:], CACHE):
        before, after = inputs[name], cache.numpy()
        keep = np.ones(after.shape[3], bool)
        keep[pos] = False
        np.testing.assert_array_equal(after[:, :, :, keep], before[:, :, :, keep])


def test_generator_steps_match_the_llvm_generator():
    """Greedy runs through prefill + in-place decode steps equal TVM's llvm build token for
    token (the reference keeps no aliasing), over a prompt longer than the prefill."""
    prompt = [5, 17, 99, 3, 64, 21, 8, 100, 42, 7, 1, 2, 3, 4, 5, 6, 77, 31, 12]
    spatial = Generator(PREFILL, DECODE).run(prompt, 8)
    reference = Generator(PREFILL, DECODE, target="llvm").run(prompt, 8)
    assert spatial.tokens == reference.tokens
    np.testing.assert_allclose(spatial.logits, reference.logits, rtol=1e-4, atol=1e-4)


def test_host_program_reads_and_writes_back_an_inout_port(design):
    text = host_cpp(design)
    assert re.search(r'\{"past_key", true, true, \d+ \* sizeof\(float\)', text)
    assert re.search(r'\{"out", false, true, ', text)
    assert "if (!spec.ports[i].is_output)" in text


def test_emulation_unit_is_werror_clean(design, tmp_path):
    """The kernel as Vitis sees it and the emulation TU with its in-place entry point."""
    tu = emulation.write_sources(design, tmp_path)
    for kernel in design.kernels:
        proc = _compile(_strict_kernel_args(tmp_path / kernel.filename), tmp_path)
        assert proc.returncode == 0 and not proc.stderr, _explain(proc)
    proc = _compile([*emulation.base_flags(), "-O1", "-c", *emulation.STRICT_FLAGS, str(tu), "-o", os.devnull],
                    tmp_path)
    assert proc.returncode == 0 and not proc.stderr, _explain(proc)
    assert "return_args(args, written, 3, result)" in tu.read_text()


def test_codegen_is_deterministic(design):
    again = tvm_spatial.design_of(relax.build(tvm_spatial.frontend.from_onnx(DECODE), target="vitis_spatial"))
    assert again.to_json() == design.to_json()


SANITIZED_OK = "SANITIZED-IN-PLACE-DECODE-MATCHES"
SANITIZED_CHILD = f"""
    from pathlib import Path
    import numpy as np
    import tvm
    from tvm import relax
    import tvm_spatial

    fixtures = Path({str(FIXTURES)!r})
    data = np.load(fixtures / "gpt2_tiny_generate.npz")
    names = [k.split(":", 2)[2] for k in data.files if k.startswith("in:decode:")]
    ex = relax.build(tvm_spatial.frontend.from_onnx(fixtures / "gpt2_tiny_decode.onnx"), target="vitis_spatial")
    vm = relax.VirtualMachine(ex, tvm.cpu(), memory_cfg="naive")  # exact-size buffers for ASan
    args = {{n: tvm.runtime.tensor(data["in:decode:" + n]) for n in names}}
    for step in range(3):  # the same cache tensors, updated in place, step after step
        out = vm["main"](*[args[n] for n in names])
        assert out[1].same_as(args["past_key"]) and out[2].same_as(args["past_value"])
        if step == 0:
            for got, n in zip(out, ("logits", "present_key", "present_value")):
                np.testing.assert_allclose(got.numpy(), data["out:decode:" + n], rtol=1e-4, atol=1e-4)
        args["position"] = tvm.runtime.tensor(np.array([int(args["position"].numpy()[0]) + 1], "int64"))
        args["input_ids"] = tvm.runtime.tensor(np.array([[int(out[0].numpy().argmax())]], "int64"))
    print("checked decode", flush=True)
    print("{SANITIZED_OK}", flush=True)
"""


def test_in_place_decode_runs_clean_under_sanitizers(tmp_path):
    """ASan+UBSan over three in-place steps (-O1 keeps the sanitized compile short)."""
    proc = _run_sanitized(SANITIZED_CHILD, tmp_path, extra_flags=("-O1",))
    _assert_clean_sanitized_run(proc, tmp_path, SANITIZED_OK, ["decode"])


def test_decode_in_xrt_mode_passes_the_cache_both_ways(decode_ex, monkeypatch, tmp_path):
    """Through XRT (the noop shim computes nothing) the in-place call still returns the
    caches it was given, and each cache port goes to the host as input and comes back as
    output (the host program's inout handling, end to end)."""
    import test_xrt_host

    if test_xrt_host.pytestmark.args[0]:
        pytest.skip(test_xrt_host.pytestmark.kwargs["reason"])
    from codegen_hls.xclbin import metadata_xclbin

    root = tmp_path / "xilinx_xrt"
    (root / "lib").mkdir(parents=True)
    (root / "lib" / "libxrt_noop.so.2").symlink_to(test_xrt_host.NOOP_LIB)
    monkeypatch.setenv("XILINX_XRT", str(root))
    monkeypatch.setenv("XCL_EMULATION_MODE", "noop")
    for key in ("TVM_SPATIAL_RUNTIME", "TVM_SPATIAL_XCLBIN", "TVM_SPATIAL_DEVICE_INDEX"):
        monkeypatch.delenv(key, raising=False)
    xclbin = tmp_path / "design.xclbin"
    xclbin.write_bytes(metadata_xclbin(tvm_spatial.design_of(decode_ex)))
    _, names, inputs = _inputs()
    args = {n: tvm.runtime.tensor(v) for n, v in inputs.items()}
    vm = relax.VirtualMachine(decode_ex, tvm.cpu())["main"]
    with tvm_spatial.runtime_mode("xrt", xclbin=xclbin):
        logits, key, value = vm(*[args[n] for n in names])
    assert key.same_as(args["past_key"]) and value.same_as(args["past_value"])
    data, _, _ = _inputs()
    assert logits.shape == data["out:decode:logits"].shape
    assert not logits.numpy().any()  # as XRT allocated it: the call went through the shim


# -- a hand-written graph: the pass matches exactly the slot-write pattern ---------------

SMALL = dict(layers=2, heads=2, context=5, head_dim=3)


def _slot_write_module(order=(0, 1)):
    """main(position, past_key, new) -> (sum of the layers' K, present_key), written the way
    hf_export's decode graph writes its cache; ``order``: the layers as stacked."""
    L, H, T, D = SMALL["layers"], SMALL["heads"], SMALL["context"], SMALL["head_dim"]
    position = relax.Var("position", relax.TensorType((1,), "int64"))
    past = relax.Var("past_key", relax.TensorType((L, 1, H, T, D), "float32"))
    new = relax.Var("new", relax.TensorType((1, H, 1, D), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [position, past, new]):
        with bb.dataflow():
            hit = bb.emit(relax.op.equal(relax.const(np.arange(T, dtype="int64")), position))
            mask = bb.emit(relax.op.reshape(hit, (1, 1, T, 1)))
            ks = [bb.emit(relax.op.where(mask, new, bb.emit(relax.op.take(past, relax.const(l, "int64"), axis=0))))
                  for l in range(L)]
            total = bb.emit(relax.op.add(ks[0], ks[1]))
            stacked = [bb.emit(relax.op.expand_dims(ks[l], [0])) for l in order]
            present = bb.emit(relax.op.concat(stacked, axis=0))
            out = bb.emit_output(relax.Tuple([total, present]))
        bb.emit_func_output(out)
    return bb.get()


def _slot_write_inputs():
    rng = np.random.default_rng(7)
    L, H, T, D = SMALL["layers"], SMALL["heads"], SMALL["context"], SMALL["head_dim"]
    return [np.array([3], "int64"), rng.standard_normal((L, 1, H, T, D)).astype("float32"),
            rng.standard_normal((1, H, 1, D)).astype("float32")]


def test_hand_written_slot_write_is_updated_in_place_and_equals_llvm():
    inputs = _slot_write_inputs()
    ex = relax.build(_slot_write_module(), target="vitis_spatial")
    (kernel,) = tvm_spatial.design_of(ex).kernels
    assert [p.op for p in kernel.processes].count("kv_update") == 2
    assert {p.direction for p in kernel.ports if p.name.startswith("past_key")} == {"inout"}
    ref = relax.VirtualMachine(relax.build(_slot_write_module(), target="llvm"), tvm.cpu())["main"](
        *[tvm.runtime.tensor(v) for v in inputs])
    args = [tvm.runtime.tensor(v) for v in inputs]
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](*args)
    np.testing.assert_allclose(got[0].numpy(), ref[0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(got[1].numpy(), ref[1].numpy(), rtol=1e-6)
    assert got[1].same_as(args[1])
    want = inputs[1].copy()  # numpy: row 3 of every layer is the new row
    want[:, 0, :, 3, :] = inputs[2][0, :, 0, :]
    np.testing.assert_array_equal(got[1].numpy(), want)


def test_layers_stacked_out_of_order_are_not_updated_in_place():
    """present = stack(K_1, K_0) is not "past with a row written": the pass leaves it, and
    the design computes and writes the whole output as before (no inout port)."""
    inputs = _slot_write_inputs()
    mod = _slot_write_module(order=(1, 0))
    assert find_cache_updates(relax.transform.FoldConstant()(mod)["main"]) == []
    ex = relax.build(mod, target="vitis_spatial")
    (kernel,) = tvm_spatial.design_of(ex).kernels
    assert "kv_update" not in [p.op for p in kernel.processes]
    assert not any(p.direction == "inout" for p in kernel.ports)
    ref = relax.VirtualMachine(relax.build(mod, target="llvm"), tvm.cpu())["main"](
        *[tvm.runtime.tensor(v) for v in inputs])
    args = [tvm.runtime.tensor(v) for v in inputs]
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](*args)
    np.testing.assert_allclose(got[1].numpy(), ref[1].numpy(), rtol=1e-6)
    assert not got[1].same_as(args[1])
    np.testing.assert_array_equal(args[1].numpy(), inputs[1])  # the input is left alone
