"""A causal prefill built as token-parallel engines (``allocation(layers="token_parallel")``):
one engine per SLR, each computing every layer and the LM head for its chunk of tokens,
handing its K and V rows forwards layer by layer. Checked against onnxruntime's logits
(the fixture's), under ASan/UBSan, and with -Werror."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tvm
from test_fixture_quality import _assert_clean_sanitized_run
from test_generated_cpp import _compile, _run_sanitized, _strict_kernel_args
from tvm import relax

import tvm_spatial
from codegen_hls import emulation

FIXTURES = Path(__file__).parent / "fixtures"
OK_MARKER = "SANITIZED-TOKEN-PARALLEL-MATCHES-ONNXRUNTIME"


@pytest.fixture(scope="module")
def built():
    mod = tvm_spatial.frontend.from_onnx(FIXTURES / "gpt2_tiny.onnx")
    with tvm_spatial.allocation(layers="token_parallel"):
        return relax.build(mod, target="vitis_spatial")


def test_the_engines_compute_onnxruntimes_logits(built):
    data = np.load(FIXTURES / "gpt2_tiny.npz")
    vm = relax.VirtualMachine(built, tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(data["in:input_ids"])).numpy()
    np.testing.assert_allclose(got, data["out:logits"], rtol=1e-4, atol=1e-4)


def test_one_engine_per_slr_and_the_streams_run_forwards(built):
    design = tvm_spatial.design_of(built)
    assert len(design.kernels) == 1
    kernel = design.kernels[0]
    procs = kernel.processes
    assert [p.op for p in procs] == ["engine"] * 3
    assert sorted(p.slr for p in procs) == [0, 1, 2]
    order = {p.name: i for i, p in enumerate(procs)}
    assert kernel.streams and all(order[s.producer] < order[s.consumer] for s in kernel.streams)
    # one FIFO per pair of engines carries every layer's K and V rows in turn (coalesce_streams)
    assert sorted((order[s.producer], order[s.consumer]) for s in kernel.streams) == [(0, 1), (0, 2), (1, 2)]
    # every linear of the 2-layer model (QKV, projection, FFN1, FFN2; then the LM head) in
    # each: a layer's four in its layer loop, called once per layer (their batch), and the head
    for proc in procs:
        linears = [proc.matmul, *proc.engine]
        assert len(linears) == 4 + 1 and sum(mm[0] for mm in linears) == 2 * 4 + 1


def test_a_later_engine_reads_each_layers_keys_just_before_that_layer_needs_them(built):
    """Interleaved I/O (``_KernelWriter.io_schedule``): in its layer loop, the second
    engine reads the first engine's K after its own QKV linear and before its attention --
    once per layer, not all layers' at the top of the process -- and writes its own K and
    V on to the third engine in that layer too, once its last use of them is done."""
    kernel = tvm_spatial.design_of(built).kernels[0]
    second = kernel.processes[1]
    source = kernel.source
    body = source[source.index(f"static void {second.name}("):]
    body = body[:body.index("\n}\n")]
    loop = body[body.index("for (int layer = 0; layer < 2; ++layer) {"):]
    loop = loop[:loop.index("\n  }\n")]
    reads = [i for i in range(len(loop)) if loop.startswith(".read()", i)]
    writes = [i for i in range(len(loop)) if loop.startswith(".write(", i)]
    attention = loop.index("__attention")
    assert loop.count("__attention") == 1 and reads and writes
    assert loop.index("__matmul") < reads[0] < attention and loop.index("__matmul") < writes[0]


def test_each_engine_has_one_copy_of_a_layers_hardware(built):
    """The layer loop (``codegen_hls.layer_loop``): each engine prints a layer's stages
    once, in a loop over the 2 layers, reading each weight, bias, gain and mask through
    one stacked port (``Port.layers``: every layer's argument in order) at ``[layer]``."""
    kernel = tvm_spatial.design_of(built).kernels[0]
    source = kernel.source
    stacked = [p for p in kernel.ports if p.layers]
    assert stacked and all(p.shape[0] == 2 and len(set(p.layers)) == 2 and p.arg == p.layers[0] for p in stacked)
    for proc in kernel.processes:
        body = source[source.index(f"static void {proc.name}("):]
        body = body[:body.index("\n}\n")]
        assert body.count("for (int layer = 0; layer < 2; ++layer)") == 1
        assert body.count("__attention") == 1 and body.count("__matmul") == 4 + 1  # a layer's four, the head
        mine = [p for p in stacked if p.name in body]
        assert len(mine) >= 4 and all(f"{p.name}[layer]" in body for p in mine)
    # every argument reaches the kernel once per engine that reads it: no layer's lost
    design = tvm_spatial.design_of(built)
    assert {a for p in kernel.ports for a in p.args} == set(range(design.kernels[0].num_args))


def test_the_kernel_compiles_with_werror(built, tmp_path):
    design = tvm_spatial.design_of(built)
    emulation.write_sources(design, tmp_path)
    for kernel in design.kernels:
        proc = _compile(_strict_kernel_args(tmp_path / kernel.filename), tmp_path)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr


CHILD = f"""
    from pathlib import Path
    import numpy as np
    import tvm
    from tvm import relax
    import tvm_spatial

    fixtures = Path({str(FIXTURES)!r})
    data = np.load(fixtures / "gpt2_tiny.npz")
    mod = tvm_spatial.frontend.from_onnx(fixtures / "gpt2_tiny.onnx")
    with tvm_spatial.allocation(layers="token_parallel"):
        ex = relax.build(mod, target="vitis_spatial")
    vm = relax.VirtualMachine(ex, tvm.cpu(), memory_cfg="naive")  # exact-size buffers for ASan
    got = vm["main"](tvm.runtime.tensor(data["in:input_ids"])).numpy()
    np.testing.assert_allclose(got, data["out:logits"], rtol=1e-4, atol=1e-4)
    print("checked token_parallel", flush=True)
    print("{OK_MARKER}", flush=True)
"""


def test_the_engines_run_clean_under_sanitizers(tmp_path):
    _assert_clean_sanitized_run(_run_sanitized(CHILD, tmp_path), tmp_path, OK_MARKER, ["token_parallel"])


def test_the_model_runs_the_engines_side_by_side(built):
    """The estimate of the built design: no faster than its slowest engine, well under the
    engines one after another (they exchange K and V as they go: interleaved_cycles)."""
    from tvm_spatial.devices import get_device
    from tvm_spatial.estimate import design_work, estimate_work, realized_config

    design = tvm_spatial.design_of(built)
    work = design_work(design)
    assert all(p.interleaved for p in work.processes)
    assert any(0 < s.written_at < 1 and 0 < s.read_at < 1 for s in work.streams)
    est = estimate_work(work, get_device("u280"), realized_config(design))
    engines = [p.block_cycles for p in est.processes]
    assert max(engines) <= est.prefill_cycles < 0.75 * sum(engines)
    assert est.prefill_roofline.dsp_cycles > 0


def test_a_consumer_waits_for_what_it_reads_and_no_longer():
    from tvm_spatial.estimate.model import interleaved_cycles
    from tvm_spatial.estimate.workload import StreamWork

    def stream(w, r):
        return StreamWork("s", 32, 2, 64, 0, "a", "b", written_at=w, read_at=r)

    # b reads at 10 % of its 100 cycles what a writes at 90 % of its 100: b waits 80 cycles
    assert interleaved_cycles({"a": 100.0, "b": 100.0}, [stream(0.9, 0.1)]) == pytest.approx(180.0)
    # written early, read late: nothing to wait for; the slower sets the time
    assert interleaved_cycles({"a": 100.0, "b": 60.0}, [stream(0.1, 0.9)]) == pytest.approx(100.0)
    # a stream of whole processes (written last, read first): one after the other
    assert interleaved_cycles({"a": 100.0, "b": 60.0}, [stream(1.0, 0.0)]) == pytest.approx(160.0)


def test_an_engine_reuses_its_arrays_across_layers(built):
    """buffer_plan: a value's array is taken by a later value of its type and shape once
    free, so an engine of a 2-layer model declares far fewer arrays than it has stages
    (before: one per value), and its logits still equal onnxruntime's (above)."""
    kernel = tvm_spatial.design_of(built).kernels[0]
    for proc in kernel.processes:
        source = kernel.source
        body = source[source.index(f"static void {proc.name}("):]
        body = body[:body.index("\n}\n")]
        arrays = body.count("\n  static ")
        stages = body.count(f"  {kernel.name}__")
        assert 0 < arrays < stages / 2, (proc.name, arrays, stages)


def test_an_engines_attention_multiplies_as_wide_as_its_array(built):
    """Lanes.mac: the attention's QK^T and AV nests take as many lanes as the engine's
    array has units (its shared multipliers and adders); its softmax keeps the few lanes
    that keep pace. The model's nests carry that width, and count the QK^T nest (a head's
    64-element dot product per key) at units / 64 keys a cycle."""
    from codegen_hls.lanes import rows_unrolled

    kernel = tvm_spatial.design_of(built).kernels[0]
    for proc in kernel.processes:
        units = proc.array[0] * proc.array[1]
        assert "__attention_l" in kernel.source and f"_x{units}" in kernel.source
        wide = [n for n in proc.nests if len(n) > 4 and n[4]]
        assert wide and all(n[4] == units for n in wide)
        qk = [n for n in wide if n[1] == 16]  # the tiny model's head width
        assert qk, wide
        trips, extent, _, rows, lanes = qk[0][:5]
        assert rows_unrolled(extent, rows, lanes) == max(d for d in range(1, rows + 1)
                                                         if rows % d == 0 and d * extent <= units)


def test_each_engine_writes_its_own_rows_of_the_logits():
    """No engine gathers the others' logits: each writes its rows through a port of its
    own, and the host puts the rows together (the one operator it keeps, and says so)."""
    mod = tvm_spatial.frontend.from_onnx(FIXTURES / "gpt2_tiny.onnx")
    with tvm_spatial.allocation(layers="token_parallel"), pytest.warns(tvm_spatial.HostFallbackWarning, match="concat"):
        ex = relax.build(mod, target="vitis_spatial")
    kernel = tvm_spatial.design_of(ex).kernels[0]
    outs = [p for p in kernel.ports if p.direction == "out"]
    assert len(outs) == 3 and sum(p.shape[-2] for p in outs) == 16  # the fixture's 16 tokens, in three
    rows_of_logits = {int(np.prod(p.shape)) for p in outs}
    assert kernel.streams and all(s.elements not in rows_of_logits for s in kernel.streams)  # K and V rows only
    data = np.load(FIXTURES / "gpt2_tiny.npz")
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(data["in:input_ids"])).numpy()
    np.testing.assert_allclose(got, data["out:logits"], rtol=1e-4, atol=1e-4)


def test_a_stacked_port_holds_each_layers_argument_at_its_index(built):
    """What the XRT host writes to a stacked port (``Port.from_arguments``): layer l's
    argument -- or its stripe -- at [l]; and the design manifest keeps the stacking."""
    from dataclasses import replace

    from codegen_hls.design import Design

    design = tvm_spatial.design_of(built)
    kernel = design.kernels[0]
    ports = [p for p in kernel.ports if p.layers]
    striped = next(p for p in ports if p.stripe)
    plain = next(p for p in ports if not p.stripe)
    rng = np.random.default_rng(0)
    for port in (plain, striped):
        args = [rng.standard_normal(port.arg_shape).astype("float32") for _ in port.layers]
        got = port.from_arguments(args)
        assert got.shape == port.shape
        one = replace(port, shape=port.shape[1:], layers=())
        for layer, arg in enumerate(args):
            np.testing.assert_array_equal(got[layer], one.from_argument(arg))
    filled = [np.full(plain.arg_shape, float(i), "float32") for i in range(len(plain.layers))]
    np.testing.assert_array_equal(plain.from_arguments(filled), np.stack(filled))
    assert Design.from_json(design.to_json()).kernels[0].ports == kernel.ports


def test_a_reshape_of_leading_ones_is_a_view_not_a_copy(built):
    """view_reshapes: around every linear the engine reads the reshaped activations as
    ``x[0]`` / ``&x`` of the array they are in -- no copy loop, no array of their own (the
    logits still equal onnxruntime's, above) -- so no reshape stage is left in a loop body."""
    kernel = tvm_spatial.design_of(built).kernels[0]
    source = kernel.source
    for proc in kernel.processes:
        body = source[source.index(f"static void {proc.name}("):]
        body = body[:body.index("\n}\n")]
        loop = body[body.index("for (int layer"):]
        assert "__reshape" not in loop and "[0], param_" in loop


def test_each_engine_gets_the_fastest_array_that_fits_its_slr(built):
    """The allocation searches a token-parallel engine's every rows x cols (and channels)
    rather than growing it step by step (``allocation._whole_array_search``): over the
    arrays the codegen realizes, none that fits the engine's SLR budget is faster than the
    one it was given."""
    from tvm_spatial.devices import RESOURCES, get_device
    from tvm_spatial.estimate import design_work, realized_config
    from tvm_spatial.estimate.allocation import (ARRAY_COLUMNS, DEFAULT_BUDGET, realizable_array,
                                                 realizable_channels, widest)
    from tvm_spatial.estimate.model import Parallelism, process_estimate

    design = tvm_spatial.design_of(built)
    work, config = design_work(design), realized_config(design)
    dev = get_device("u280")
    for p in work.processes:
        given = process_estimate(p, config.of(p.name, True), dev, dev.clock_mhz, None)
        cap = {r: DEFAULT_BUDGET * dev.slr(p.slr).get(r) for r in RESOURCES}
        mm = widest(p)
        for rows in range(1, mm.m + 1):
            for cols in (c for c in ARRAY_COLUMNS if c <= mm.n):
                for channels in (1, 2, 4, 8):
                    r, c = realizable_array(mm, rows, cols)
                    par = Parallelism(rows=r, cols=c, channels=channels)
                    par = Parallelism(rows=r, cols=c, channels=realizable_channels(p, par))
                    est = process_estimate(p, par, dev, dev.clock_mhz, None)
                    if all(est.resources.get(k) <= cap[k] for k in RESOURCES):
                        assert est.block_cycles >= given.block_cycles * (1 - 1e-9), (p.name, par)


def test_an_engines_rows_need_not_divide_its_tokens(built, tmp_path):
    """MacArray.ragged_rows: a token-parallel engine's array of 4 rows over chunks of 6 and
    5 tokens (neither a multiple of 4: the last row tile is short) -- the HLS text says 4
    rows, and the logits still equal onnxruntime's; the kernel compiles with -Werror."""
    names = [p.name for p in tvm_spatial.design_of(built).kernels[0].processes]
    mod = tvm_spatial.frontend.from_onnx(FIXTURES / "gpt2_tiny.onnx")
    with tvm_spatial.allocation(layers="token_parallel", arrays={n: (4, 32) for n in names}):
        ex = relax.build(mod, target="vitis_spatial")
    design = tvm_spatial.design_of(ex)
    kernel = design.kernels[0]
    assert [p.array[:2] for p in kernel.processes] == [(4, 32)] * 3
    assert "_a4x32" in kernel.source
    data = np.load(FIXTURES / "gpt2_tiny.npz")
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(data["in:input_ids"])).numpy()
    np.testing.assert_allclose(got, data["out:logits"], rtol=1e-4, atol=1e-4)
    emulation.write_sources(design, tmp_path)
    proc = _compile(_strict_kernel_args(tmp_path / kernel.filename), tmp_path)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
