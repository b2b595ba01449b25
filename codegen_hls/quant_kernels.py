"""Quantized matmul kernels: the 4-bit-weight x 8-bit-activation matmul (``W4A8``) as a
Relax operator of its own, legalized to TensorIR that packs two weights per multiply.

Why an operator: the weights of a W4A8 linear layer are stored packed, two 4-bit values
per byte (``pack_int4``), so a layer's weight costs half the HBM traffic of int8. Their
unpacking must happen inside the kernel: written with Relax's element-wise operators on
the constant weight, ``FoldConstant`` would unpack them at compile time. The operator
takes the int8 activations and the packed bytes, so nothing folds, and its legalization
(:func:`_packed_matmul_te`) is the kernel, the same TIR for the ``llvm`` build and for the HLS
printer (``codegen_hls/printer.py``).

The DSP-packing trick (what the TIR computes). A DSP48E2 multiplies 27 x 18 bits and
accumulates into 48 bits. One int8 activation ``a`` is multiplied by the *packed* weight
pair ``P = w_hi * 2**s + w_lo`` (two ``ap_int<4>`` weights of neighbouring output
channels), so one multiplication yields ``a*w_hi*2**s + a*w_lo``. The products are
accumulated packed over the whole reduction: ``acc = H * 2**s + L`` with
``H = sum a*w_hi`` and ``L = sum a*w_lo``. ``s`` is chosen from ``K`` so that ``L`` always
fits in ``s`` signed bits (``|a*w| <= 1024``: ``2**(s-1) > 1024*K``), and the accumulator
width so that ``acc`` cannot overflow. Extraction with sign correction: ``L`` is the low
``s`` bits of ``acc`` read as a signed number; when ``L < 0`` it borrowed one from the
upper field, so ``H = (acc - L) >> s`` (not ``acc >> s``). Both are exact integer sums:
the result equals an int32 matmul of the unpacked weights bit for bit.

Packing layout (``pack_int4``): byte ``[k, j]`` holds the weight of output channel ``2j``
in its low nibble and of channel ``2j + 1`` in its high nibble, two's complement.

Where things live: the pattern that offloads this operator (with the activation
quantization and the dequantization around it) is in ``relax_passes/quant_patterns.py``;
the pass that introduces it is ``relax_passes/quantize.py``; its tests are
``tests/test_quantize.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax, te, tirx
from tvm.ir import _ffi_api as _ir_api

W4A8_MATMUL = "relax.vitis_spatial.matmul_w4a8"
DSP_MULTIPLIER_BITS = 27  # the DSP48E2's wide multiplier input
DSP_ACCUMULATOR_BITS = 48


@dataclass(frozen=True)
class PackingPlan:
    """Bit layout of the packed multiply for a reduction of length ``k``."""

    k: int
    shift: int  # position of w_hi in the packed operand: the width of the low field
    packed_bits: int  # width of the packed weight operand P
    acc_bits: int  # width of the packed accumulator

    @property
    def fits_one_dsp(self) -> bool:
        return self.packed_bits <= DSP_MULTIPLIER_BITS and self.acc_bits <= DSP_ACCUMULATOR_BITS


def packing_plan(k: int) -> PackingPlan:
    """|a*w| <= 128*8 = 1024 for int8 a and int4 w, so |L| <= 1024*k < 2**(shift-1)."""
    bound = 1024 * int(k)
    shift = bound.bit_length() + 1
    packed_bits = shift + 4  # w_hi in [-8, 7] above the low field
    # |acc| <= bound * 2**shift + bound < 2**(acc_bits - 1)
    need = (bound * (1 << shift) + bound).bit_length() + 1
    return PackingPlan(int(k), shift, packed_bits, max(DSP_ACCUMULATOR_BITS, need))


def pack_int4(w: np.ndarray) -> np.ndarray:
    """int values in [-8, 7] of shape [K, N] (N even) -> int8 bytes [K, N/2]."""
    w = np.asarray(w)
    if w.ndim != 2 or w.shape[1] % 2:
        raise ValueError(f"pack_int4 needs a [K, N] array with even N, got shape {w.shape}")
    if w.min(initial=0) < -8 or w.max(initial=0) > 7:
        raise ValueError("pack_int4 values must lie in [-8, 7]")
    nibbles = (w.astype(np.int16) & 15).astype(np.uint8)
    return (nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)).view(np.int8)


def unpack_int4(packed: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_int4` (int8 [K, N/2] -> int8 [K, N])."""
    b = np.asarray(packed, dtype=np.int8).astype(np.int16)
    lo = ((b & 15) ^ 8) - 8
    hi = b >> 4
    out = np.empty((b.shape[0], 2 * b.shape[1]), np.int8)
    out[:, 0::2], out[:, 1::2] = lo, hi
    return out


def _storage_width(bits: int) -> int:
    """The standard integer width holding ``bits`` (8, 16, 32 or 64)."""
    return next(w for w in (8, 16, 32, 64) if bits <= w)


def _packed_matmul_te(x: te.Tensor, w: te.Tensor, exact_widths: bool = True):
    """x: int8 [..., K], w: packed bytes [K, N/2] -> int32 [..., N], two weights per
    multiply; each byte is decoded into two ``ap_int<4>`` inside the reduction.
    ``exact_widths``: the packed operand and accumulator get the plan's exact widths
    (``ap_int<48>``: the DSP's); otherwise standard widths (int64), for TVM's own
    targets, whose buffers of odd widths are sized by bits but stored by LLVM in whole
    power-of-two words (an int48 intermediate overruns its allocation)."""
    *batch, k_len = x.shape
    half = w.shape[1]
    plan = packing_plan(int(k_len))
    acc_bits, packed_bits = plan.acc_bits, plan.packed_bits
    if not exact_widths:
        acc_bits, packed_bits = _storage_width(acc_bits), _storage_width(packed_bits)
    acc_t, packed_t = f"int{acc_bits}", f"int{packed_bits}"
    k = te.reduce_axis((0, k_len), "k")

    def packed_pair(kk, j):  # P = w_hi * 2**s + w_lo, one operand of the DSP multiplier
        byte = w[kk, j]
        w_lo = tirx.Cast("int4", byte & tirx.const(15, "int8"))  # ap_int<4>: sign-extends
        w_hi = tirx.Cast("int4", byte >> tirx.const(4, "int8"))
        return tirx.Cast(packed_t, w_hi) * tirx.const(1 << plan.shift, packed_t) + tirx.Cast(packed_t, w_lo)

    acc = te.compute(
        (*batch, half),
        lambda *idx: te.sum(
            tirx.Cast(acc_t, x[(*idx[:-1], k)]) * tirx.Cast(acc_t, packed_pair(k, idx[-1])), axis=k
        ),
        name="packed_acc",
    )
    mask = tirx.const((1 << plan.shift) - 1, acc_t)
    sign = tirx.const(1 << (plan.shift - 1), acc_t)

    def extract(*idx):
        n = idx[-1]
        a = acc[(*idx[:-1], n // 2)]
        low = ((a & mask) ^ sign) - sign  # the low field, sign-extended: sum of a * w_lo
        high = (a - low) >> tirx.const(plan.shift, acc_t)  # sign correction: undo low's borrow
        # each branch cast on its own: ap_int arithmetic widens, and ?: needs one type
        return tirx.Select(n % 2 == 0, tirx.Cast("int32", low), tirx.Cast("int32", high))

    return te.compute((*batch, 2 * half), extract, name="matmul_w4a8")


def _infer(call: relax.Call, _ctx):
    x, w = call.args
    xt, wt = x.ty, w.ty
    if not (isinstance(xt, relax.TensorType) and isinstance(wt, relax.TensorType)):
        raise ValueError(f"{W4A8_MATMUL} takes two tensors")
    if str(xt.dtype) != "int8" or str(wt.dtype) != "int8" or wt.ndim != 2:
        raise ValueError(f"{W4A8_MATMUL} takes int8 activations [..., K] and packed int8 weights [K, N/2]")
    if xt.shape is None or wt.shape is None:
        return relax.TensorType(dtype="int32", ndim=xt.ndim)
    *batch, _ = xt.shape.values
    return relax.TensorType([*batch, wt.shape.values[1] * 2], "int32")


def _legalize(bb: relax.BlockBuilder, call: relax.Call):
    """One PrimFunc that decodes the packed weights inside the reduction: no 4-bit
    intermediate tensor (which a host runtime could not allocate), and in HLS the decoder
    feeds the packed MAC array directly."""
    target = tvm.target.Target.current(allow_none=True)
    exact = target is not None and "vitis_spatial" in target.keys
    return bb.call_te(_packed_matmul_te, call.args[0], call.args[1], exact, primfunc_name_hint="matmul_w4a8")


def register_ops() -> None:
    """Register the operator once per process (its attributes are set only here)."""
    if W4A8_MATMUL in [str(n) for n in _ir_api.ListOpNames()]:
        op = tvm.ir.Op.get(W4A8_MATMUL)
        if _ir_api.OpHasAttr(op, "FLegalize"):
            return
    else:
        _ir_api.RegisterOp(W4A8_MATMUL, "int8 x packed int4 matmul with int32 results (tvm-spatial)")
    op = tvm.ir.Op.get(W4A8_MATMUL)
    _ir_api.OpSetNumInputs(op, 2)
    tvm.ir.register_op_attr(W4A8_MATMUL, "FInferType", _infer)
    tvm.ir.register_op_attr(W4A8_MATMUL, "FPurity", True)
    tvm.ir.register_op_attr(W4A8_MATMUL, "FLegalize", _legalize)


def matmul_w4a8(x: relax.Expr, packed_weight: relax.Expr) -> relax.Call:
    register_ops()
    return relax.Call(tvm.ir.Op.get(W4A8_MATMUL), [x, packed_weight])


register_ops()
