"""Quantized kernels (W8A8, W4A8 linear layers; int8 attention matmuls) run in emulation
and compared, bit for bit, with a numpy integer reference of the scheme written here
from its specification (``relax_passes/quantize.py`` docstring), not with the kernel.

Reference scheme: scale = float32(max|v|) / float32(qmax); q = clip(rint(v / scale),
-qmax, qmax); integer matmul; y = float32(acc) * float32(s_x * s_w) (+ bias).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_spatial
from codegen_hls.quant_kernels import pack_int4, packing_plan, unpack_int4
from helpers import run_vm


# ---- the independent reference -----------------------------------------------------------
def ref_scale(absmax, qmax):
    return (np.asarray(absmax, np.float32) / np.float32(qmax)).astype(np.float32)


def ref_quant(v, scale, qmax):
    return np.clip(np.rint(np.asarray(v, np.float32) / scale), -qmax, qmax).astype(np.int64)


def ref_linear(x, w, b, calib_absmax, weight_bits):
    qw = 127 if weight_bits == 8 else 7
    s_x = ref_scale(calib_absmax, 127)
    s_w = ref_scale(np.abs(w).max(axis=0), qw)
    acc = ref_quant(x, s_x, 127) @ ref_quant(w, s_w, qw)  # exact integer sums (int64)
    assert np.abs(acc).max() < 2**31  # an int32 accumulator holds them
    y = acc.astype(np.float32) * (s_x * s_w).astype(np.float32)
    return y if b is None else y + b


def ref_int8_matmul(a, b, absmax_a, absmax_b):
    s_a, s_b = ref_scale(absmax_a, 127), ref_scale(absmax_b, 127)
    acc = np.matmul(ref_quant(a, s_a, 127), ref_quant(b, s_b, 127))
    return acc.astype(np.float32) * np.float32(s_a * s_b)


# ---- modules -----------------------------------------------------------------------------
def linear_module(m, k, n, w, b):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((m, k), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.matmul(x, relax.const(w)))
            if b is not None:
                y = bb.emit(relax.op.add(y, relax.const(b)))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def two_input_matmul_module(shape_a, shape_b, softmax_first=False):
    bb = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType(shape_a, "float32"))
    b = relax.Var("b", relax.TensorType(shape_b, "float32"))
    with bb.function("main", [a, b]):
        with bb.dataflow():
            left = bb.emit(relax.op.nn.softmax(a, axis=-1)) if softmax_first else a
            y = bb.emit(relax.op.matmul(left, b))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def build_spatial(mod):
    with warnings.catch_warnings():
        warnings.simplefilter("error", tvm_spatial.HostFallbackWarning)
        return relax.build(mod, target="vitis_spatial")


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(1234)


# ---- bit-exact kernels ---------------------------------------------------------------------
@pytest.mark.parametrize("scheme,bits", [("w8a8", 8), ("w4a8", 4)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_bit_exact(scheme, bits, bias, rng):
    m, k, n = 12, 96, 40
    w = rng.standard_normal((k, n)).astype(np.float32)
    w[:, 3] *= 20  # one channel far larger: per-channel scales matter
    b = rng.standard_normal(n).astype(np.float32) if bias else None
    calib = [rng.standard_normal((m, k)).astype(np.float32) for _ in range(3)]
    absmax = max(np.abs(c).max() for c in calib)
    q = tvm_spatial.quantize(linear_module(m, k, n, w, b), scheme, [{"x": c} for c in calib])
    ex = build_spatial(q)
    x = (1.3 * rng.standard_normal((m, k))).astype(np.float32)  # some values clip
    (got,) = run_vm(ex, [x])
    want = ref_linear(x, w, b, absmax, bits)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    assert tvm_spatial.build_report(ex).host_ops == ()


def test_w4a8_weights_are_packed_and_use_dsp_packing(rng):
    m, k, n = 4, 64, 32
    w = rng.standard_normal((k, n)).astype(np.float32)
    q = tvm_spatial.quantize(linear_module(m, k, n, w, None), "w4a8", [{"x": rng.standard_normal((m, k)).astype("float32")}])
    ex = build_spatial(q)
    kernel = tvm_spatial.design_of(ex).kernels[0]
    weight_ports = [p for p in kernel.ports if p.direction == "in" and p.dtype == "int8"]
    # two 4-bit weights per byte (whole, or in the stripes the allocation read it through)
    assert weight_ports and {p.arg_shape for p in weight_ports} == {(k, n // 2)}
    plan = packing_plan(k)
    src = kernel.source
    assert "ap_int<4>" in src
    assert f"ap_int<{plan.packed_bits}>({1 << plan.shift})" in src  # w_hi << s in the wide operand
    assert f"static_cast<ap_int<{plan.acc_bits}>>" in src  # one multiply, packed accumulator
    assert f">> ap_int<{plan.acc_bits}>({plan.shift})" in src  # extraction of the high product


def test_w8a8_uses_int8_operands_and_int32_accumulators(rng):
    m, k, n = 4, 32, 16
    w = rng.standard_normal((k, n)).astype(np.float32)
    q = tvm_spatial.quantize(linear_module(m, k, n, w, None), "w8a8", [{"x": rng.standard_normal((m, k)).astype("float32")}])
    kernel = tvm_spatial.design_of(build_spatial(q)).kernels[0]
    src = kernel.source
    # the int8 weight, as stored (whole, or in the stripes the allocation read it through)
    weight = [p for p in kernel.ports if p.dtype == "int8" and p.arg_shape == (k, n)]
    assert weight and all(f"const int8_t {p.name}{''.join(f'[{d}]' for d in p.shape)}" in src for p in weight)
    assert "static_cast<int32_t>" in src and "int32_t matmul" in src  # int32 accumulation
    assert "ap_int" not in src  # int8 stays int8_t (see relax_passes/quantize.py)


@pytest.mark.parametrize(
    "shape_a,shape_b,probabilities",
    [((1, 4, 16, 8), (1, 4, 8, 16), False), ((1, 4, 16, 16), (1, 4, 16, 8), True)],
    ids=["qk_scores", "av_context"],
)
def test_int8_attention_matmul_bit_exact(shape_a, shape_b, probabilities, rng):
    def left(scale=1.0):
        if probabilities:  # rows of a softmax: non-negative, summing to 1
            e = rng.random(shape_a) ** 4
            return (e / e.sum(-1, keepdims=True)).astype("float32")
        return (scale * rng.standard_normal(shape_a)).astype("float32")

    calib = [[left(), rng.standard_normal(shape_b).astype("float32")] for _ in range(2)]
    q = tvm_spatial.quantize(two_input_matmul_module(shape_a, shape_b), "w8a8", calib)
    ex = build_spatial(q)
    a, b = left(1.2), rng.standard_normal(shape_b).astype("float32")
    (got,) = run_vm(ex, [a, b])
    amax_a = max(np.abs(c[0]).max() for c in calib)
    amax_b = max(np.abs(c[1]).max() for c in calib)
    np.testing.assert_array_equal(got, ref_int8_matmul(a, b, amax_a, amax_b))
    src = tvm_spatial.design_of(ex).kernels[0].source
    assert "static_cast<int32_t>" in src and "int8_t" in src


def test_attention_roles_survive_quantization(rng):
    shape_a, shape_b = (1, 2, 8, 8), (1, 2, 8, 4)
    mod = two_input_matmul_module(shape_a, shape_b, softmax_first=True)
    calib = [[rng.standard_normal(shape_a).astype("float32"), rng.standard_normal(shape_b).astype("float32")]]
    ex = build_spatial(tvm_spatial.quantize(mod, "w4a8", calib))
    ops = [p.op for k in tvm_spatial.design_of(ex).kernels for p in k.processes]
    assert "attention_context" in ops and "softmax" in ops


# ---- packing -------------------------------------------------------------------------------
def test_int4_packing_round_trip(rng):
    w = rng.integers(-8, 8, size=(16, 10)).astype(np.int8)
    packed = pack_int4(w)
    assert packed.dtype == np.int8 and packed.shape == (16, 5)
    np.testing.assert_array_equal(unpack_int4(packed), w)
    assert (packed[0, 0] & 15) == (w[0, 0] & 15)  # low nibble: the even channel


@pytest.mark.parametrize("k", [1, 64, 768, 3072])
def test_packing_plan_fits_a_dsp48_for_transformer_sizes(k):
    plan = packing_plan(k)
    assert 2 ** (plan.shift - 1) > 1024 * k
    assert plan.fits_one_dsp


# ---- generated C++: -Werror clean and deterministic ------------------------------------------
@pytest.mark.parametrize("scheme", ["w8a8", "w4a8"])
def test_quantized_kernels_compile_with_werror_and_deterministically(scheme, tmp_path):
    import os
    import subprocess

    from codegen_hls import emulation

    def design():
        r = np.random.default_rng(7)
        w = r.standard_normal((64, 32)).astype(np.float32)
        mod = linear_module(6, 64, 32, w, r.standard_normal(32).astype(np.float32))
        q = tvm_spatial.quantize(mod, scheme, [{"x": r.standard_normal((6, 64)).astype("float32")}])
        return tvm_spatial.design_of(build_spatial(q))

    first, second = design(), design()
    assert first.to_json() == second.to_json()  # same IR in, same bytes out
    tu = emulation.write_sources(first, tmp_path)
    for source in [*(tmp_path / k.filename for k in first.kernels), tu]:
        cmd = [emulation.host_compiler(), *emulation.base_flags(), "-O2", "-c", *emulation.STRICT_FLAGS,
               str(source), "-o", os.devnull]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-3000:]


@pytest.mark.parametrize("scheme,bits", [("w8a8", 8), ("w4a8", 4)])
def test_llvm_build_of_quantized_module_matches_reference(scheme, bits, rng):
    """The quantized module is plain Relax (plus the W4A8 operator): TVM's CPU build of it
    computes the same integers, so the module means the same on every target."""
    m, k, n = 5, 48, 24
    w, b = rng.standard_normal((k, n)).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    calib = rng.standard_normal((m, k)).astype(np.float32)
    q = tvm_spatial.quantize(linear_module(m, k, n, w, b), scheme, [{"x": calib}])
    x = rng.standard_normal((m, k)).astype(np.float32)
    (got,) = run_vm(relax.build(q, target="llvm"), [x])
    np.testing.assert_array_equal(got, ref_linear(x, w, b, np.abs(calib).max(), bits))


@pytest.mark.parametrize("bias", [True, False])
def test_w4a8_odd_width_is_padded_not_w8(bias, rng):
    """An odd number of output channels (a vocabulary like 50257) stays W4A8: one zero
    weight column completes the last pair and its output is dropped; the result equals the
    4-bit integer reference of the unpadded layer bit for bit."""
    m, k, n = 6, 64, 37
    w = rng.standard_normal((k, n)).astype(np.float32)
    w[:, n - 1] *= 10  # the unpaired last channel with a scale of its own
    b = rng.standard_normal(n).astype(np.float32) if bias else None
    calib = [rng.standard_normal((m, k)).astype(np.float32) for _ in range(2)]
    absmax = max(np.abs(c).max() for c in calib)
    from relax_passes.quantize import quantize_module

    result = quantize_module(linear_module(m, k, n, w, b), "w4a8", [{"x": c} for c in calib])
    assert result.w4_padded == result.linear and len(result.linear) == 1 and not result.w8_fallback
    ex = build_spatial(result.mod)
    kernel = tvm_spatial.design_of(ex).kernels[0]
    assert [p.shape for p in kernel.ports if p.dtype == "int8"] == [(k, (n + 1) // 2)]  # packed, padded
    assert "ap_int<4>" in kernel.source
    x = (1.3 * rng.standard_normal((m, k))).astype(np.float32)
    (got,) = run_vm(ex, [x])
    assert got.shape == (m, n)
    np.testing.assert_array_equal(got, ref_linear(x, w, b, absmax, 4))
    assert tvm_spatial.build_report(ex).host_ops == ()


def test_w4a8_intermediates_have_storable_widths_on_tvm_targets():
    """TVM sizes a buffer by bits, LLVM stores an int48 in 8 bytes: an odd-width
    intermediate overran its allocation in the llvm build (caught by the ASan gate).
    Only the HLS keeps the DSP's exact 48-bit accumulator."""
    import re

    from codegen_hls import quant_kernels as qk

    qk.register_ops()
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4, 64), "int8"))
    w = relax.Var("w", relax.TensorType((64, 8), "int8"))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            y = bb.emit_output(relax.Call(tvm.ir.Op.get(qk.W4A8_MATMUL), [x, w]))
        bb.emit_func_output(y)

    def buffer_dtypes(target):
        with tvm.target.Target(target):
            mod = relax.transform.LegalizeOps()(bb.get())
        texts = [f.script() for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
        found = {d for t in texts for d in re.findall(r'alloc_buffer\(.*"(\w+)"\)', t)}
        assert found, "the kernel should have its packed accumulator as an intermediate buffer"
        return found

    assert buffer_dtypes("llvm") <= {"int8", "int16", "int32", "int64"}, buffer_dtypes("llvm")
    assert f"int{qk.packing_plan(64).acc_bits}" in buffer_dtypes("vitis_spatial")
