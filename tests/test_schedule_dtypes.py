"""Data-type customizations: ``cast`` to fixed point (``ap_fixed``) and ``quantize`` to
int8/int4 with a scale (and to fixed point), read back as float.

The expected values come from numpy models of the arithmetic written here from the Vitis
HLS rules (UG1399: quantization and overflow modes of ap_fixed; round-half-even codes
for integer quantization), not from the generated code."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
import tvm
from tvm.script import ir as I
from tvm.script import tirx as T

import tvm_spatial.annotations as ann
from codegen_hls import emulation
from tvm_spatial import InterfaceMismatchError, ScheduleError, customize
from tvm_spatial.prim_build import build_many

from test_schedule import TwoMM

L = 64  # elements of the 1-d kernels
M, K = 4, 16  # matvec


@T.prim_func(s_tir=True)
def scale3(A: T.Buffer((L,), "float32"), C: T.Buffer((L,), "float32")):
    B = T.alloc_buffer((L,), "float32")
    for i in range(L):
        with T.sblock("B"):
            vi = T.axis.remap("S", [i])
            B[vi] = A[vi] * T.float32(3)
    for i in range(L):
        with T.sblock("C"):
            vi = T.axis.remap("S", [i])
            C[vi] = B[vi] + T.float32(0.5)


@T.prim_func(s_tir=True)
def scale3_twice(A: T.Buffer((L,), "float32"), C: T.Buffer((L,), "float32")):
    # no a * b + c after a dequantizing load: the emulation may contract that into an FMA
    B = T.alloc_buffer((L,), "float32")
    for i in range(L):
        with T.sblock("B"):
            vi = T.axis.remap("S", [i])
            B[vi] = A[vi] * T.float32(3)
    for i in range(L):
        with T.sblock("C"):
            vi = T.axis.remap("S", [i])
            C[vi] = B[vi] * T.float32(2)


@T.prim_func(s_tir=True)
def matvec(A: T.Buffer((M, K), "float32"), x: T.Buffer((K,), "float32"), y: T.Buffer((M,), "float32")):
    acc = T.alloc_buffer((M,), "float32")
    for i, k in T.grid(M, K):
        with T.sblock("acc"):
            vi, vk = T.axis.remap("SR", [i, k])
            with T.init():
                acc[vi] = T.float32(0)
            acc[vi] = acc[vi] + A[vi, vk] * x[vk]
    for i in range(M):
        with T.sblock("y"):
            vi = T.axis.remap("S", [i])
            y[vi] = acc[vi]


@I.ir_module
class TwoStages:
    """scale3 called twice: each call site can get its own data types (compose with id)."""

    @T.prim_func(s_tir=True)
    def stage(A: T.Buffer((L,), "float32"), C: T.Buffer((L,), "float32")):
        B = T.alloc_buffer((L,), "float32")
        for i in range(L):
            with T.sblock("B"):
                vi = T.axis.remap("S", [i])
                B[vi] = A[vi] * T.float32(3)
        for i in range(L):
            with T.sblock("C"):
                vi = T.axis.remap("S", [i])
                C[vi] = B[vi] * T.float32(2)

    @T.prim_func(s_tir=True)
    def main(A: T.Buffer((L,), "float32"), C0: T.Buffer((L,), "float32"), C1: T.Buffer((L,), "float32")):
        TwoStages.stage(A, C0)
        TwoStages.stage(A, C1)


# ---- independent numpy models -----------------------------------------------------------


def ap_fixed_model(x, width, int_bits, *, signed=True, rounding="AP_TRN", overflow="AP_WRAP"):
    """float -> ap_fixed<width, int_bits, rounding, overflow> -> float, per UG1399."""
    scaled = np.asarray(x, np.float64) * 2.0 ** (width - int_bits)  # exact for float32 input
    floor = np.floor(scaled)
    tie = scaled - floor == 0.5
    if rounding == "AP_TRN":
        code = floor
    elif rounding == "AP_TRN_ZERO":
        code = np.trunc(scaled)
    elif rounding == "AP_RND":  # to nearest, ties toward +infinity
        code = np.floor(scaled + 0.5)
    elif rounding == "AP_RND_CONV":  # to nearest, ties to even
        code = np.where(tie, floor + (floor % 2), np.floor(scaled + 0.5))
    else:
        raise NotImplementedError(rounding)
    lo, hi = (-(2 ** (width - 1)), 2 ** (width - 1) - 1) if signed else (0, 2**width - 1)
    if overflow == "AP_WRAP":
        code = (code - lo) % 2**width + lo
    elif overflow == "AP_SAT":
        code = np.clip(code, lo, hi)
    elif overflow == "AP_SAT_SYM":
        code = np.clip(code, -hi if signed else 0, hi)
    else:
        raise NotImplementedError(overflow)
    return code * 2.0 ** (int_bits - width)


def int_quant_model(x, scale, bits, *, signed=True):
    """float32 -> integer codes clamp(round_half_even(x / scale)) -> float32 codes * scale."""
    x = np.asarray(x, np.float32)
    step = np.float32(scale)
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    codes = np.clip(np.rint(x / step), lo, hi)
    return codes.astype(np.float32) * step


def _inputs(seed=0):
    # multiples of 1/64 in [-3, 3]: times 3 they hit rounding ties and overflow <8,3>'s [-4, 4)
    return (np.random.default_rng(seed).integers(-192, 193, L) / 64).astype("float32")


# ---- fixed point ------------------------------------------------------------------------

FIXED_CASES = {
    # name: (type, width, int_bits, signed, rounding, overflow, its C spelling)
    "trn_wrap": ("ap_fixed<8,3>", 8, 3, True, "AP_TRN", "AP_WRAP", "ap_fixed<8, 3>"),
    "rnd_sat": ("ap_fixed<8,3,AP_RND,AP_SAT>", 8, 3, True, "AP_RND", "AP_SAT", "ap_fixed<8, 3, AP_RND, AP_SAT>"),
    "conv_symsat": ("ap_fixed<7,3,AP_RND_CONV,AP_SAT_SYM>", 7, 3, True, "AP_RND_CONV", "AP_SAT_SYM",
                    "ap_fixed<7, 3, AP_RND_CONV, AP_SAT_SYM>"),
    "unsigned_trn_zero": ("ap_ufixed<6,2,AP_TRN_ZERO,AP_SAT>", 6, 2, False, "AP_TRN_ZERO", "AP_SAT",
                          "ap_ufixed<6, 2, AP_TRN_ZERO, AP_SAT>"),
}


def _fixed_schedules():
    out = {}
    for name, (spelling, *_rest) in FIXED_CASES.items():
        s = customize(scale3)
        s.cast("B", spelling)
        out[f"fx_{name}"] = s
    q = customize(scale3)
    q.quantize("B", "ap_fixed<8,3>")  # quantize to fixed point = cast
    out["fx_quantize"] = q
    acc = customize(matvec)
    acc.cast("acc", ann.Fixed(12, 4, rounding="AP_RND", overflow="AP_SAT"))
    acc.pipeline("acc/k")
    out["fx_acc"] = acc
    local = customize(matvec)  # the accumulation moved to a local buffer keeps the fixed type
    local.cast("acc", "ap_fixed<12,4,AP_RND,AP_SAT>")
    local.buffer_at("acc", "acc/i")
    out["fx_acc_local"] = local
    for bits, scale in ((8, 0.05), (4, 0.25)):
        s = customize(scale3_twice)
        s.quantize("B", f"int{bits}", scale=scale)
        out[f"q_int{bits}"] = s
    u = customize(scale3_twice)
    u.quantize("B", "uint8", scale=0.03)
    out["q_uint8"] = u
    fixed_stage = customize(TwoStages["stage"])
    fixed_stage.cast("B", "ap_fixed<8,3,AP_RND,AP_SAT>")
    int4_stage = customize(TwoStages["stage"])
    int4_stage.quantize("B", "int4", scale=0.5)
    two = customize(TwoStages)
    two.compose(fixed_stage, id=0)
    two.compose(int4_stage, id=1)
    out["two_stages"] = two
    return out


def _base(name: str):
    """The unscheduled function a schedule of _fixed_schedules() started from."""
    return {"fx_acc": matvec, "fx_acc_local": matvec, "two_stages": TwoStages}.get(
        name, scale3_twice if name.startswith("q_") else scale3)


@pytest.fixture(scope="module")
def schedules():
    return _fixed_schedules()


@pytest.fixture(scope="module")
def modules(schedules):
    return build_many(schedules)


@pytest.mark.parametrize("case", sorted(FIXED_CASES))
def test_cast_to_fixed_point_matches_the_ap_fixed_model(case, modules):
    _, width, int_bits, signed, rounding, overflow, c_spelling = FIXED_CASES[case]
    m = modules[f"fx_{case}"]
    a = _inputs()
    got = m(a)
    stored = ap_fixed_model(a * np.float32(3), width, int_bits, signed=signed, rounding=rounding, overflow=overflow)
    want = stored.astype(np.float32) + np.float32(0.5)
    np.testing.assert_array_equal(got, want)
    assert not np.array_equal(got, a * 3 + 0.5)  # the fixed point is really there
    code = m.hls_code
    assert f"static {c_spelling} B[{L}];" in code, code
    assert "static_cast<float>(B[vi_1])" in code  # read back into the float carrier
    assert "#include <ap_fixed.h>" in m.design.common_header


def test_quantize_to_fixed_point_is_cast(modules):
    a = _inputs(1)
    want = ap_fixed_model(a * np.float32(3), 8, 3).astype(np.float32) + np.float32(0.5)
    np.testing.assert_array_equal(modules["fx_quantize"](a), want)


@pytest.mark.parametrize("name, declaration", [
    ("fx_acc", "static ap_fixed<12, 4, AP_RND, AP_SAT> acc[4];"),
    ("fx_acc_local", "ap_fixed<12, 4, AP_RND, AP_SAT> acc_local[1];"),
])
def test_fixed_point_accumulator_quantizes_every_step(name, declaration, modules):
    rng = np.random.default_rng(2)
    # products are multiples of 1/512: each step rounds to the type's 1/256 (AP_RND)
    a = (rng.integers(-16, 17, (M, K)) / 16).astype("float32")
    x = (rng.integers(16, 33, K) / 32).astype("float32")
    a[0] = 1  # row 0 sums past the type's top (8): saturation, not wrap-around
    want = np.zeros(M)
    for i in range(M):
        acc = 0.0
        for k in range(K):  # products and sums are exact in float32 (an FMA changes nothing)
            acc = ap_fixed_model(np.float32(acc) + a[i, k] * x[k], 12, 4, rounding="AP_RND", overflow="AP_SAT")
        want[i] = acc
    got = modules[name](a, x)
    np.testing.assert_array_equal(got, want.astype("float32"))
    assert got[0] == 8 - 2.0**-8  # saturated at the largest ap_fixed<12,4> value
    assert not np.array_equal(got[1:], (a @ x)[1:])  # and rounded on the way
    assert declaration in modules[name].hls_code, modules[name].hls_code


# ---- integer quantization with a scale ----------------------------------------------------


@pytest.mark.parametrize("bits, scale, signed, c_spelling", [
    (8, 0.05, True, "int8_t"), (4, 0.25, True, "ap_int<4>"), (8, 0.03, False, "uint8_t"),
])
def test_quantize_to_integers_and_back(bits, scale, signed, c_spelling, modules):
    name = f"q_{'' if signed else 'u'}int{bits}"
    m = modules[name]
    a = _inputs(3)
    want = int_quant_model(a * np.float32(3), scale, bits, signed=signed) * np.float32(2)
    got = m(a)
    np.testing.assert_array_equal(got, want)
    assert not np.allclose(got, a * 6, atol=1e-6)
    code = m.hls_code
    assert f"static {c_spelling} B[{L}];" in code, code
    dtype = f"{'' if signed else 'u'}int{bits}"
    assert f"// quantized: {dtype} codes of {scale!r} steps" in code
    assert "std::nearbyint" in code  # round half to even
    if c_spelling.startswith("ap_"):
        assert f"static_cast<{c_spelling}>(static_cast<int32_t>(" in code  # exact float -> ap_int


def test_composed_call_sites_get_their_own_data_types(modules):
    m = modules["two_stages"]
    a = _inputs(4)
    c0, c1 = m(a)
    b = a * np.float32(3)
    np.testing.assert_array_equal(c0, ap_fixed_model(b, 8, 3, rounding="AP_RND", overflow="AP_SAT").astype("float32") * 2)
    np.testing.assert_array_equal(c1, int_quant_model(b, 0.5, 4) * np.float32(2))
    code = m.hls_code
    assert "static ap_fixed<8, 3, AP_RND, AP_SAT> B[64];" in code.split("two_stages__stage_0(")[1].split("\n}\n")[0]
    assert "static ap_int<4> B[64];" in code.split("two_stages__stage_1(")[1].split("\n}\n")[0]


def test_quantize_records_its_scale_in_the_ir(schedules):
    func = schedules["q_int4"].func
    q = ann.quantized(func)["B"]
    assert (q.dtype, q.scale) == ("int4", 0.25)
    fx = ann.fixed_types(schedules["fx_rnd_sat"].func)["B"]
    assert (fx.width, fx.int_bits, fx.rounding, fx.overflow) == (8, 3, "AP_RND", "AP_SAT")


@pytest.mark.parametrize("name", sorted(_fixed_schedules()))
def test_log_replays_to_the_same_module(name, schedules):
    s = schedules[name]
    tvm.ir.assert_structural_equal(customize(_base(name)).replay(s.log).module, s.module)


def test_kernels_compile_with_werror(modules, tmp_path):
    design = next(iter(modules.values())).design
    emulation.write_sources(design, tmp_path)
    tu = tmp_path / "all_kernels.cpp"
    tu.write_text("".join(f'#include "{k.filename}"\n' for k in design.kernels))
    proc = subprocess.run(
        [emulation.host_compiler(), "-std=c++17", "-O2", "-c", "-isystem", str(emulation.xilinx_include_dir()),
         *emulation.STRICT_FLAGS, str(tu), "-o", os.devnull],
        cwd=tmp_path, capture_output=True, text=True,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


# ---- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "apply, words",
    [
        (lambda s: s.cast("A", "ap_fixed<8,3>"), ["parameter", "off-chip port", "keep host types", "buffer_at"]),
        (lambda s: s.quantize("C", "int8", scale=0.1), ["parameter", "keep host types"]),
        (lambda s: s.quantize("B", "int8"), ["scale must be a positive", "None"]),
        (lambda s: s.quantize("B", "int8", scale=-1.0), ["scale must be a positive"]),
        (lambda s: s.quantize("B", "float16", scale=0.1), ["int2..int16", "'int4'", "ap_fixed<8,3>"]),
        (lambda s: s.quantize("B", "ap_fixed<8,3>", scale=0.5), ["no scale"]),
        (lambda s: s.cast("B", "ap_fixed<30,8>"), ["30 bits", "float32", "up to 24"]),
        (lambda s: s.cast("B", "ap_fixed<8,3,AP_FOO>"), ["AP_FOO", "AP_RND_CONV"]),
        (lambda s: s.cast("B", "ap_fixed<8,3,AP_RND,AP_BAR>"), ["AP_BAR", "AP_SAT_SYM"]),
        (lambda s: s.cast("B", "fixed<8,3>"), ["ap_fixed<W,I>"]),
        (lambda s: s.cast("B", "float16"), ["float16", "ap_fixed<16,8>"]),
        (lambda s: s.cast("Q", "int8"), ["no buffer named 'Q'", "A, B, C"]),
    ],
)
def test_bad_data_type_input_raises_a_typed_error(apply, words):
    s = customize(scale3)
    with pytest.raises(ScheduleError) as info:
        apply(s)
    for word in words:
        assert word in str(info.value), str(info.value)
    assert len(s.log) == 0


def test_retyping_a_retyped_buffer_raises():
    s = customize(scale3)
    s.quantize("B", "int8", scale=0.1)
    with pytest.raises(ScheduleError, match="already"):
        s.quantize("B", "int4", scale=0.1)
    with pytest.raises(ScheduleError, match="already"):
        s.cast("B", "ap_fixed<8,3>")
    t = customize(scale3)
    t.cast("B", "int16")
    with pytest.raises(ScheduleError, match="B is int16: give it a float32/float64 buffer"):
        t.cast("B", "ap_fixed<8,3>")


def test_a_retyped_buffer_passed_to_a_function_is_an_interface_mismatch():
    s = customize(TwoMM)
    with pytest.raises(InterfaceMismatchError) as info:
        s.cast("tmp", "ap_fixed<16,8>")
    for word in ("'tmp'", "'C'", "gemm", "float32[8, 8]", "keeps its host type"):
        assert word in str(info.value), str(info.value)
    with pytest.raises(InterfaceMismatchError, match="'tmp'"):
        s.quantize("tmp", "int8", scale=0.1)
    assert len(s.log) == 0



def test_codegen_is_deterministic(schedules):
    from tvm_spatial.prim_build import kernel_of

    for name, s in schedules.items():
        again = customize(_base(name)).replay(s.log)
        assert kernel_of(s, name)[0].source == kernel_of(again, name)[0].source, name
