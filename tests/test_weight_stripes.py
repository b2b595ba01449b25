"""A matmul's weight striped over several m_axi ports (codegen_hls.weight_stripes):
one port, bundle and HBM bank per stripe, each read in parallel in every ``k`` step.

Checked against TVM's llvm build of the same module (the emulation copies each stripe out
of the argument, the kernel reads the stripes), the stripe layout against loops written
here, the HLS text and connectivity against the design's port records, and the model's
channels against what the design realized."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import tvm
from helpers import build_and_compare
from tvm import relax

import tvm_spatial
from codegen_hls import xrt_runtime
from codegen_hls.design import Design, Port
from codegen_hls.project import project_files
from codegen_hls.xclbin import metadata_xclbin
from tvm_spatial.devices import get_device
from tvm_spatial.estimate import allocate_for_codegen, design_work, estimate_work, realized_config
from tvm_spatial.estimate.allocation import realizable_channels
from tvm_spatial.estimate.model import Parallelism

sys.path.insert(0, str(Path(__file__).parent))
from test_lanes import _function_body  # noqa: E402
from test_xrt_host import NOOP_LIB, XRT_INCLUDE, noop_env  # noqa: E402,F401


def two_linears(seed: int = 3):
    """x [16, 64] -> relu(x @ W1 [64, 128]) @ W2 [128, 96]: (module, inputs, W1)."""
    rng = np.random.default_rng(seed)
    first = (rng.standard_normal((64, 128)) * 0.2).astype("float32")
    second = rng.standard_normal((128, 96)).astype("float32")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([16, 64], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            h = bb.emit(relax.op.nn.relu(relax.op.matmul(x, relax.const(first))))
            out = bb.emit_output(relax.op.matmul(h, relax.const(second)))
        bb.emit_func_output(out)
    return bb.get(), [rng.standard_normal((16, 64)).astype("float32")], first


FIRST, SECOND = "k0_linear_relu_p0_linear", "k0_linear_relu_p2_linear"


@pytest.fixture(scope="module")
def striped():
    mod, inputs, first = two_linears()
    with tvm_spatial.allocation(arrays={FIRST: (2, 16, 4), SECOND: (2, 16, 2)}):
        ex, _ = build_and_compare(mod, inputs)  # the emulation equals llvm
    return ex, tvm_spatial.design_of(ex), inputs, first


def test_each_stripe_is_a_port_of_its_own(striped):
    _, design, _, _ = striped
    (kernel,) = design.kernels
    ports = {p.name: p for p in kernel.ports}
    procs = {p.name: p for p in kernel.processes}
    for name, count, weight in ((FIRST, 4, (64, 128)), (SECOND, 2, (128, 96))):
        proc = procs[name]
        assert proc.weight_port == "" and len(proc.weight_stripes) == count
        stripes = [ports[s] for s in proc.weight_stripes]
        assert [s.stripe[:2] for s in stripes] == [(c, count) for c in range(count)]
        tiles = -(-weight[1] // proc.tile[1])  # tile-major: [tiles, K, the tile's columns / count]
        assert {s.shape for s in stripes} == {(tiles, weight[0], proc.tile[1] // count)}
        assert all(s.arg_shape == weight for s in stripes) and len({s.arg for s in stripes}) == 1
        assert len({s.bundle for s in stripes}) == count  # a bundle, hence a memory bank, each
        # the stripes' group: the width of the tile the array works in, split in ``count``
        assert {s.stripe[2] * count for s in stripes} == {proc.tile[1]}
        assert set(proc.weight_stripes) <= set(proc.inputs)
    banks = project_files(design)["connectivity.cfg"][0].decode()
    for name in procs[FIRST].weight_stripes:
        assert re.search(rf"sp=\w+\.{name}:HBM\[\d+\]", banks), name
    stripe_banks = re.findall(rf"sp=\w+\.({'|'.join(procs[FIRST].weight_stripes)}):(HBM\[\d+\])", banks)
    assert len({bank for _, bank in stripe_banks}) == 4


def test_hls_text_reads_each_stripe_in_its_own_unrolled_loop(striped):
    _, design, _, _ = striped
    (kernel,) = design.kernels
    proc = next(p for p in kernel.processes if p.name == FIRST)
    body = _function_body(kernel.source, proc.name)
    call = re.search(rf"\b({re.escape(kernel.name)}__\w+_a\d+x\d+_c4(?:_o)?)\(([^;]*)\);", body)
    stage = call.group(1)
    assert ", ".join(proc.weight_stripes) in call.group(2)  # the process hands it every stripe
    text = _function_body(kernel.source, stage)
    signature = text.split("{", 1)[0]
    for s in ("param_0_s0", "param_0_s1", "param_0_s2", "param_0_s3"):
        assert f"const float {s}[2][64][16]" in signature  # 2 tiles of 64 columns, 16 each
    # one update statement per stripe, each under an unrolled loop of the group's 16 columns,
    # reading its tile's k-th row
    updates = re.findall(r"\* (param_0_s\d)\[\w+\]\[k\]\[", text)
    assert sorted(updates) == ["param_0_s0", "param_0_s1", "param_0_s2", "param_0_s3"]
    for pragma in re.findall(r"#pragma HLS INTERFACE m_axi port=(param_0_s\d) offset=slave bundle=(\w+)", kernel.source):
        assert pragma[1] == next(p.bundle for p in kernel.ports if p.name == pragma[0])


@pytest.mark.parametrize("columns", [24, 20])
def test_stripe_layout_is_the_documented_one(columns):
    """``Port.from_argument`` against loops over the layout ``Port.stripe`` states: tiles of
    6 columns, 3 stripes of 2, tile-major; 20 columns cut the last tile short (zeros past
    the end)."""
    weight = np.arange(1, 6 * columns + 1, dtype=np.float32).reshape(6, columns)
    count, group, tiles = 3, 2, 4
    for index in range(count):
        port = Port(f"w_s{index}", "float32", (tiles, 6, group), "in", f"b{index}", 0, (index, count, group, columns))
        assert port.arg_shape == (6, columns)
        want = np.zeros((tiles, 6, group), np.float32)
        for k in range(6):
            for t in range(tiles):
                for i in range(group):
                    if t * count * group + index * group + i < columns:
                        want[t, k, i] = weight[k, t * count * group + index * group + i]
        np.testing.assert_array_equal(port.from_argument(weight), want)


def test_a_last_tile_cut_short_is_striped_too():
    """A vocabulary-like width (200 columns; tiles of 32 leave 8): the stripes are padded,
    the short tile's loop reads only the stripe it reaches, and the emulation equals llvm."""
    rng = np.random.default_rng(5)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([16, 64], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            w = relax.const(rng.standard_normal((64, 200)).astype("float32"))
            out = bb.emit_output(relax.op.matmul(x, w))
        bb.emit_func_output(out)
    with tvm_spatial.allocation("default"):
        name = tvm_spatial.design_of(relax.build(bb.get(), target="vitis_spatial")).kernels[0].processes[0].name
    with tvm_spatial.allocation(arrays={name: (2, 16, 4)}):
        ex, _ = build_and_compare(bb.get(), [rng.standard_normal((16, 64)).astype("float32")])
    (kernel,) = tvm_spatial.design_of(ex).kernels
    proc = kernel.processes[0]
    assert proc.tile == (16, 32) and len(proc.weight_stripes) == 4
    stripes = [p for p in kernel.ports if p.name in proc.weight_stripes]
    assert {p.shape for p in stripes} == {(7, 64, 8)} and {p.arg_shape for p in stripes} == {(64, 200)}
    stage = re.search(rf"\b({re.escape(kernel.name)}__\w+_c4(?:_o)?)\(", _function_body(kernel.source, proc.name)).group(1)
    text = _function_body(kernel.source, stage)
    # the full tiles read every stripe; the last (8 columns) only the first
    assert [len(re.findall(rf"\* {s.name}\[", text)) for s in stripes] == [2, 1, 1, 1]


def test_design_json_round_trips_stripes(striped):
    _, design, _, _ = striped
    again = Design.from_json(design.to_json())
    assert again == design


def test_model_reads_back_the_channels(striped):
    """The estimate of the built design: the striped processes have their stripes'
    channels, the weight bytes once (as unstriped), and the same compute."""
    _, design, _, _ = striped
    mod, _, _ = two_linears()
    with tvm_spatial.allocation(arrays={FIRST: (2, 16), SECOND: (2, 16)}):
        plain = tvm_spatial.design_of(relax.build(mod, target="vitis_spatial"))
    dev = get_device("u280")
    est, ref = (estimate_work(design_work(d), dev, realized_config(d)) for d in (design, plain))
    channels = {p.name: p.parallelism.channels for p in est.processes if p.macs}
    assert channels == {FIRST: 4, SECOND: 2}
    assert est.prefill_bytes == ref.prefill_bytes and est.decode_bytes == ref.decode_bytes
    for p, q in zip(est.processes, ref.processes):
        assert p.macs == q.macs and p.decode_cycles <= q.decode_cycles


def test_allocation_asks_only_for_channels_the_codegen_realizes(striped):
    _, design, _, _ = striped
    work = design_work(design)
    linear = next(p for p in work.processes if p.name == FIRST)  # n = 128, tile 8 x 64 at 2 x 16
    assert realizable_channels(linear, Parallelism(rows=2, cols=16, channels=8)) == 8
    assert realizable_channels(linear, Parallelism(rows=2, cols=16, channels=1)) == 1
    other = next(p for p in work.processes if p.matmul is None)
    assert realizable_channels(other, Parallelism(channels=4)) == 1
    alloc = allocate_for_codegen(work, get_device("u280"))
    for name, entry in alloc.matmul_tilings().items():
        proc = next(p for p in work.processes if p.name == name)
        par = alloc.factors[name]
        assert realizable_channels(proc, par, alloc.config.block) == par.channels
        assert len(entry) == (3 if par.channels > 1 else 2)


@pytest.mark.skipif(not (XRT_INCLUDE / "xrt" / "xrt_kernel.h").exists() or NOOP_LIB is None,
                    reason="needs XRT's headers and libxrt_noop.so.2 (apt-get install libxrt-dev libxrt1)")
def test_xrt_runner_is_handed_each_stripe(striped, noop_env, monkeypatch, tmp_path):
    """Through XRT the host writes each stripe port its columns of the argument (the noop
    shim computes nothing, so what the runner is handed is what is checked)."""
    ex, design, inputs, first = striped
    for key in ("XILINX_XRT", "XCL_EMULATION_MODE"):
        monkeypatch.setenv(key, noop_env[key])
    monkeypatch.setenv("TVM_SPATIAL_CACHE_DIR", str(tmp_path / "cache"))
    handed = {}
    real = xrt_runtime.XRTRunner.run

    def spy(self, kernel, given):
        handed.update(given)
        return real(self, kernel, given)

    monkeypatch.setattr(xrt_runtime.XRTRunner, "run", spy)
    xclbin = tmp_path / "design.xclbin"
    xclbin.write_bytes(metadata_xclbin(design))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    with tvm_spatial.runtime_mode("xrt", xclbin=xclbin):
        vm["main"](*[tvm.runtime.tensor(v) for v in inputs])
    (kernel,) = design.kernels
    proc = next(p for p in kernel.processes if p.name == FIRST)
    group = 16  # tiles of 64 columns (the array's 2 x 16, tiled 8 x 64), 4 stripes of 16
    for c, name in enumerate(proc.weight_stripes):
        want = np.stack([first[:, t * 64 + c * group: t * 64 + (c + 1) * group] for t in range(2)])  # tile-major
        np.testing.assert_array_equal(handed[name], want)


def test_striped_kernel_and_entry_points_compile_with_werror(striped, tmp_path):
    import os

    from codegen_hls import emulation
    from test_generated_cpp import _compile, _strict_kernel_args

    _, design, _, _ = striped
    tu = emulation.write_sources(design, tmp_path)
    (kernel,) = design.kernels
    proc = _compile(_strict_kernel_args(tmp_path / kernel.filename), tmp_path)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    proc = _compile([*emulation.base_flags(), "-O2", "-c", *emulation.STRICT_FLAGS, str(tu), "-o", os.devnull],
                    tmp_path)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


STRIPED_CHILD = """
    import sys
    import numpy as np
    import tvm
    from tvm import relax
    import tvm_spatial
    from codegen_hls import emulation
    sys.path.insert(0, sys.argv[1])
    from test_weight_stripes import FIRST, SECOND, two_linears

    assert "-fsanitize=address,undefined" in emulation.extra_flags()
    mod, inputs, _ = two_linears()
    with tvm_spatial.allocation(arrays={FIRST: (2, 16, 4), SECOND: (2, 16, 2)}):
        spatial = relax.build(mod, target="vitis_spatial")
    assert tvm_spatial.design_of(spatial).kernels[0].processes[0].weight_stripes
    runs = []
    for ex, cfg in ((spatial, "naive"), (relax.build(mod, target="llvm"), "pooled")):
        vm = relax.VirtualMachine(ex, tvm.cpu(), memory_cfg=cfg)
        runs.append(vm["main"](*[tvm.runtime.tensor(v) for v in inputs]).numpy())
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-5, atol=1e-5)
    print("STRIPES-CLEAN", flush=True)
"""


def test_striped_emulation_runs_clean_under_sanitizers(tmp_path):
    from test_generated_cpp import SANITIZER_REPORTS, _explain, _run_sanitized

    proc = _run_sanitized(STRIPED_CHILD, tmp_path, str(Path(__file__).parent))
    for report in SANITIZER_REPORTS:
        assert report not in proc.stderr, _explain(proc)
    assert proc.returncode == 0 and "STRIPES-CLEAN" in proc.stdout, _explain(proc)
    objects = list((tmp_path / "cache").glob("*.o"))
    assert objects and all(b"__asan_" in o.read_bytes() for o in objects), objects


def test_channels_cap_the_stripes_the_allocation_takes():
    """``allocation(channels=1)`` keeps every weight behind one port (the emulation's fastest
    form); by default the BERT fixture's allocation stripes; a bad cap is refused."""
    from tvm_spatial.estimate import design_from_onnx

    path = Path(__file__).parent / "fixtures" / "bert_tiny.onnx"
    striped = design_from_onnx(path)
    assert any(p.weight_stripes for k in striped.kernels for p in k.processes)
    with tvm_spatial.allocation(channels=1):
        plain = design_from_onnx(path)
    assert not any(p.weight_stripes for k in plain.kernels for p in k.processes)
    with tvm_spatial.allocation(channels=2):
        two = design_from_onnx(path)
    assert {len(p.weight_stripes) for k in two.kernels for p in k.processes} <= {0, 2}
    with pytest.raises(tvm_spatial.UsageError, match="channels"):
        with tvm_spatial.allocation(channels=-1):
            pass


def test_a_packed_w4a8_weight_is_striped_in_packed_columns():
    """A W4A8 weight (two 4-bit weights per byte, ``[K, N/2]``) stripes over its packed
    columns: the build with stripes equals TVM's llvm build and, bit for bit, the build
    without; the model reads the stripes' channels back."""
    rng = np.random.default_rng(11)
    x = relax.Var("x", relax.TensorType([16, 64], "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            w = relax.const((rng.standard_normal((64, 256)) * 0.2).astype("float32"))
            out = bb.emit_output(relax.op.matmul(x, w))
        bb.emit_func_output(out)
    inputs = [rng.standard_normal((16, 64)).astype("float32")]
    quantized = tvm_spatial.quantize(bb.get(), "w4a8", [{"x": inputs[0]}])
    with tvm_spatial.allocation("default"):
        name = tvm_spatial.design_of(relax.build(quantized, target="vitis_spatial")).kernels[0].processes[0].name
    with tvm_spatial.allocation(arrays={name: (2, 32, 4)}):
        ex, got = build_and_compare(quantized, inputs)
    with tvm_spatial.allocation(arrays={name: (2, 32)}):
        plain = relax.build(quantized, target="vitis_spatial")
    from helpers import run_vm

    assert all(np.array_equal(a, b) for a, b in zip(got, run_vm(plain, inputs)))
    (kernel,) = tvm_spatial.design_of(ex).kernels
    proc = next(p for p in kernel.processes if p.name == name)
    assert proc.packed == 2 and len(proc.weight_stripes) == 4
    stripes = [p for p in kernel.ports if p.name in proc.weight_stripes]
    # a tile of 64 packed columns (the array's 32, twice) over 4 stripes of 16 bytes each
    assert {p.dtype for p in stripes} == {"int8"} and {p.arg_shape for p in stripes} == {(64, 128)}
    assert {p.shape[-1] for p in stripes} == {proc.tile[1] // 4}
    assert realized_config(tvm_spatial.design_of(ex)).of(name, True).channels == 4


# -- stripes past the card's channels share bundles ---------------------------------------


def four_linears(seed: int = 5):
    """One token through four chained linears of 256 columns (a decode step's shape):
    (module, inputs)."""
    rng = np.random.default_rng(seed)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 64], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            h = x
            for k, n in ((64, 256), (256, 256), (256, 256), (256, 256)):
                w = relax.const((rng.standard_normal((k, n)) / np.sqrt(k)).astype("float32"))
                h = bb.emit(relax.op.matmul(h, w))
            out = bb.emit_output(h)
        bb.emit_func_output(out)
    return bb.get(), [rng.standard_normal((1, 64)).astype("float32")]


@pytest.fixture(scope="module")
def wide_stripes():
    """Each of the four weights over 32 ports, all on one SLR: 128 stripes, 32 channels.
    One token: the four linears are one process on one array (``codegen_hls.engine``),
    which reads the four weights one after another."""
    mod, inputs = four_linears()
    name = "k0_linear_p0_engine"
    with tvm_spatial.allocation(slrs=1, arrays={name: (1, 32, 32)}):
        ex, _ = build_and_compare(mod, inputs)  # the emulation equals llvm
    return tvm_spatial.design_of(ex), name


def _pragma_bundles(source: str) -> dict[str, str]:
    """Port -> bundle, as the printed m_axi pragmas declare them."""
    return dict(re.findall(r"#pragma HLS INTERFACE m_axi port=(\w+) offset=slave bundle=(\w+)", source))


def test_stripes_past_the_channels_share_bundles_and_banks(wide_stripes):
    """The kernel declares one m_axi bundle per channel for its 128 stripes, not one per
    stripe; a weight's own stripes are on distinct bundles and banks; every port of a
    bundle is on one bank (an AXI master reaches one); the xclbin's interface has one
    master per bundle."""
    design, name = wide_stripes
    (kernel,) = design.kernels
    engine = next(p for p in kernel.processes if p.name == name)
    stripe_ports = [*engine.weight_stripes, *engine.engine_weights]
    weights = [stripe_ports[i:i + 32] for i in range(0, len(stripe_ports), 32)]
    assert [len(w) for w in weights] == [32] * 4
    bundle_of = _pragma_bundles(kernel.source)
    channels = get_device("u280").offchip.channels
    assert len({bundle_of[s] for s in stripe_ports}) == channels == 32
    cfg = project_files(design)["connectivity.cfg"][0].decode()
    bank_of = dict(re.findall(r"sp=\w+\.(\w+):(HBM\[\d+\])", cfg))
    for stripes in weights:
        assert len({bundle_of[s] for s in stripes}) == len({bank_of[s] for s in stripes}) == 32
    by_bundle: dict[str, set] = {}
    for port, bundle in bundle_of.items():
        by_bundle.setdefault(bundle, set()).add(bank_of[port])
    assert all(len(banks) == 1 for banks in by_bundle.values()), by_bundle
    masters = re.findall(rb'name="M_AXI_(\w+)"', metadata_xclbin(design))
    assert len(set(masters)) == len(set(bundle_of.values()))


def test_model_counts_one_adapter_per_bundle(wide_stripes, monkeypatch):
    """The estimate's LUT for m_axi adapters follows the bundles the kernel declares
    (counted from its pragmas), not its 128 stripe ports."""
    from tvm_spatial.estimate import costs

    design, _ = wide_stripes
    work, dev = design_work(design), get_device("u280")
    before = estimate_work(work, dev, realized_config(design)).slr_use[0].lut
    monkeypatch.setattr(costs, "PORT_LUT", costs.PORT_LUT + 1000)
    after = estimate_work(work, dev, realized_config(design)).slr_use[0].lut
    (kernel,) = design.kernels
    assert (after - before) / 1000 == pytest.approx(len(set(_pragma_bundles(kernel.source).values())))
