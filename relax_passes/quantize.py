"""Post-training quantization of a Relax module: W8A8 and W4A8 linear layers, int8
attention matmuls; everything else (softmax, layer norm, residual, GELU) stays fp32.

The scheme (also what the bit-exact tests re-implement independently, in numpy):

* scale of a set of values ``v`` for ``qmax`` (127 for int8, 7 for int4):
  ``float32(max|v|) / float32(qmax)`` computed in float32; 1.0 if ``max|v| == 0``.
* quantize ``x`` with scale ``s``: ``clip(round_half_to_even(x / s), -qmax, qmax)``, the
  division in float32. Activations are int8 (qmax 127), weights int8 or int4 (qmax 7).
* **Weights** of a linear layer ``x @ W`` (``W`` a constant ``[K, N]``): one scale per output
  channel (column of ``W``). **Activations**: one scale per tensor, from the largest
  ``|x|`` seen while running the fp32 model on the calibration inputs.
* the integer matmul accumulates in int32 (W4A8: packed in a wide accumulator and
  extracted exactly, see ``codegen_hls/quant_kernels.py``); it is dequantized as
  ``float32(acc) * float32(s_x * s_w[n])`` (the product of the two scales rounded to
  float32 once, at compile time), then the bias (if any) is added in fp32.
* attention matmuls (both operands activations, QK^T and AV) quantize both operands per
  tensor to int8 and dequantize with ``float32(s_a * s_b)``.

What a quantized linear looks like in Relax (one dataflow process after partitioning,
``relax_passes/quant_patterns.py``)::

    q   = astype(clip(round(divide(x, s_x)), -127, 127), "int8")
    acc = matmul(q, W_int8, out_dtype="int32")     # W8A8
    acc = vitis_spatial.matmul_w4a8(q, W_packed)   # W4A8: two int4 weights per byte
    y   = multiply(astype(acc, "float32"), s_x * s_w) (+ bias)

W4A8 packs the weights of output channels in pairs; a layer with an odd number of them
(e.g. a 50257-token vocabulary) gets one zero weight column packed after the last, and the
extra output is dropped right after the dequantization (a ``strided_slice`` inside the same
process); such layers are listed in :attr:`QuantizationResult.w4_padded`.
Only the module's ``main`` function is quantized (that is the function the calibration
inputs are fed to).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import tvm
from tvm import relax

from codegen_hls.quant_kernels import matmul_w4a8, pack_int4

_MATMUL = tvm.ir.Op.get("relax.matmul")
ACT_QMAX = 127


@dataclass(frozen=True)
class QuantScheme:
    name: str
    weight_bits: int

    @property
    def weight_qmax(self) -> int:
        return (1 << (self.weight_bits - 1)) - 1


SCHEMES = {"w8a8": QuantScheme("w8a8", 8), "w4a8": QuantScheme("w4a8", 4)}


@dataclass
class QuantizationResult:
    mod: tvm.IRModule
    scheme: str
    linear: list[str] = field(default_factory=list)  # binding names of quantized linears
    attention: list[str] = field(default_factory=list)  # ... and attention matmuls
    w8_fallback: list[str] = field(default_factory=list)  # W4A8 layers kept at 8 bits (none today)
    w4_padded: list[str] = field(default_factory=list)  # W4A8 layers with an odd width, padded by one
    activation_scales: dict[str, float] = field(default_factory=dict)


def symmetric_scale(absmax, qmax: int) -> np.ndarray:
    """float32(absmax) / float32(qmax); 1 where absmax is 0 (an all-zero tensor)."""
    absmax = np.asarray(absmax, dtype=np.float32)
    scale = absmax / np.float32(qmax)
    return np.where(scale > 0, scale, np.float32(1)).astype(np.float32)


def quantize_values(v: np.ndarray, scale, qmax: int) -> np.ndarray:
    """clip(round_half_to_even(v / scale), -qmax, qmax) in float32, as integers."""
    q = np.rint(np.asarray(v, np.float32) / np.asarray(scale, np.float32))
    return np.clip(q, -qmax, qmax).astype(np.int32)


# ---- finding the matmuls ---------------------------------------------------------------
@dataclass(frozen=True)
class _Site:
    index: int  # position among the matmul bindings of main, in program order
    name: str
    kind: str  # "linear" or "attention"
    captured: tuple[int, ...]  # argument positions whose calibration range is needed


def _is_float_tensor(expr) -> bool:
    ty = expr.ty
    return isinstance(ty, relax.TensorType) and str(ty.dtype) == "float32"


def _classify(call: relax.Call) -> str | None:
    a, b = call.args
    if not (_is_float_tensor(a) and _is_float_tensor(b)):
        return None
    const_a, const_b = (isinstance(x, tvm.ir.GenericConst) for x in (a, b))
    if not const_a and const_b and b.ty.ndim == 2:
        return "linear"
    if not const_a and not const_b:
        return "attention"
    return None


def _matmul_bindings(func: relax.Function) -> list[relax.VarBinding]:
    found = []
    for block in func.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(binding, relax.VarBinding) and isinstance(value, relax.Call) and value.op.same_as(_MATMUL):
                found.append(binding)
    return found


def find_sites(func: relax.Function) -> list[_Site]:
    sites = []
    for index, binding in enumerate(_matmul_bindings(func)):
        kind = _classify(binding.value)
        if kind is not None:
            sites.append(_Site(index, binding.var.name, kind, (0,) if kind == "linear" else (0, 1)))
    return sites


def prepare(mod: tvm.IRModule) -> tvm.IRModule:
    """Normalize and fold constants (an exporter's ``permute_dims(W)`` becomes a constant)."""
    return relax.transform.FoldConstant()(relax.transform.Normalize()(mod))


# ---- calibration -------------------------------------------------------------------------
def _instrumented(mod: tvm.IRModule, sites: list[_Site]) -> tvm.IRModule:
    """``main`` also returning every calibrated matmul operand (after its outputs)."""
    flat = relax.transform.ToNonDataflow()(mod)
    func = flat["main"]
    bindings = _matmul_bindings(func)
    captured = []
    for site in sites:
        call = bindings[site.index].value
        captured += [call.args[i] for i in site.captured]
    body = func.body
    fields = [body.body, *captured]
    new_body = relax.SeqExpr(body.blocks, relax.Tuple(fields))
    ret_ty = relax.TupleType([f.ty for f in fields])
    new_func = relax.Function(func.params, new_body, ret_ty, attrs=func.attrs)
    out = tvm.IRModule({"main": new_func})
    return relax.transform.Normalize()(out)


def _as_args(func: relax.Function, sample) -> list[np.ndarray]:
    names = [p.name for p in func.params]
    if isinstance(sample, Mapping):
        missing = [n for n in names if n not in sample]
        if missing:
            raise ValueError(f"calibration sample lacks input(s) {', '.join(missing)} (has {', '.join(sample)})")
        return [np.asarray(sample[n]) for n in names]
    values = list(sample) if isinstance(sample, (list, tuple)) else [sample]
    if len(values) != len(names):
        raise ValueError(f"calibration sample has {len(values)} arrays, main takes {len(names)}")
    return [np.asarray(v) for v in values]


def calibrate(mod: tvm.IRModule, calibration: Sequence, sites: list[_Site] | None = None) -> list[np.float32]:
    """Largest |value| of each calibrated matmul operand over the calibration inputs, by
    running the fp32 module built for TVM's ``llvm`` target."""
    if not calibration:
        raise ValueError("quantization needs at least one calibration sample")
    sites = find_sites(mod["main"]) if sites is None else sites
    n_out = 1  # the instrumented main returns (original result, *operands)
    inst = _instrumented(mod, sites)
    ex = relax.build(inst, target="llvm")
    vm = relax.VirtualMachine(ex, tvm.cpu())
    ranges: list[np.float32] | None = None
    for sample in calibration:
        args = _as_args(mod["main"], sample)
        outs = vm["main"](*[tvm.runtime.tensor(a) for a in args])
        values = [outs[i].numpy() for i in range(n_out, len(outs))]
        maxima = [np.float32(np.max(np.abs(v))) if v.size else np.float32(0) for v in values]
        ranges = maxima if ranges is None else [max(a, b) for a, b in zip(ranges, maxima)]
    return ranges or []


# ---- rewriting ---------------------------------------------------------------------------
@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def __init__(self, mod, scheme: QuantScheme, plan: dict, result: QuantizationResult):
        super().__init__(mod)
        self.scheme = scheme
        self.plan = plan  # matmul index -> (site, [absmax per captured operand])
        self.result = result
        self.index = 0

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        value = binding.value
        if not (isinstance(value, relax.Call) and value.op.same_as(_MATMUL)):
            super().visit_var_binding_(binding)
            return
        index, self.index = self.index, self.index + 1
        if index not in self.plan:
            super().visit_var_binding_(binding)
            return
        site, ranges = self.plan[index]
        args = [self.visit_expr(a) for a in value.args]
        if site.kind == "linear":
            new = self.linear(site, args[0], value.args[1], ranges[0])
        else:
            new = self.attention(site, args, ranges)
        if isinstance(binding.var, relax.DataflowVar) or not self.builder_.current_block_is_dataflow():
            var = self.builder_.emit(new, binding.var.name)
        else:
            var = self.builder_.emit_output(new, binding.var.name)
        self.set_var_remap(binding.var, var)

    def quantize_activation(self, x, scale: np.float32):
        d = self.builder_.emit(relax.op.divide(x, relax.const(np.float32(scale), "float32")))
        r = self.builder_.emit(relax.op.round(d))
        c = self.builder_.emit(relax.op.clip(r, -ACT_QMAX, ACT_QMAX))
        return self.builder_.emit(relax.op.astype(c, "int8"))

    def linear(self, site: _Site, x, weight: tvm.ir.GenericConst, absmax):
        w = weight.value.numpy().astype(np.float32)
        s_x = symmetric_scale(absmax, ACT_QMAX)
        bits = self.scheme.weight_bits
        n = w.shape[1]
        qmax = (1 << (bits - 1)) - 1
        s_w = symmetric_scale(np.max(np.abs(w), axis=0), qmax)
        w_q = quantize_values(w, s_w, qmax).astype(np.int8)
        scale = (s_x * s_w).astype(np.float32)
        pad = bits == 4 and n % 2 == 1
        if pad:  # a zero weight column (and scale) completes the last pair; its output is dropped
            w_q = np.pad(w_q, ((0, 0), (0, 1)))
            scale = np.pad(scale, (0, 1))
            self.result.w4_padded.append(site.name)
        q = self.quantize_activation(x, s_x)
        if bits == 4:
            acc = self.builder_.emit(matmul_w4a8(q, relax.const(pack_int4(w_q))))
        else:
            acc = self.builder_.emit(relax.op.matmul(q, relax.const(w_q), out_dtype="int32"))
        f = self.builder_.emit(relax.op.astype(acc, "float32"))
        self.result.linear.append(site.name)
        self.result.activation_scales[site.name] = float(s_x)
        y = relax.op.multiply(f, relax.const(scale))
        if not pad:
            return y
        y = self.builder_.emit(y)
        return relax.op.strided_slice(y, axes=[y.ty.ndim - 1], begin=[0], end=[n])

    def attention(self, site: _Site, args, ranges):
        s_a, s_b = (symmetric_scale(r, ACT_QMAX) for r in ranges)
        qa, qb = (self.quantize_activation(x, s) for x, s in zip(args, (s_a, s_b)))
        acc = self.builder_.emit(relax.op.matmul(qa, qb, out_dtype="int32"))
        f = self.builder_.emit(relax.op.astype(acc, "float32"))
        self.result.attention.append(site.name)
        self.result.activation_scales[site.name] = float(s_a)
        self.result.activation_scales[site.name + ".b"] = float(s_b)
        return relax.op.multiply(f, relax.const(np.float32(s_a * s_b), "float32"))


def quantize_module(mod: tvm.IRModule, scheme: str, calibration: Sequence,
                    *, attention: bool = True) -> QuantizationResult:
    """Quantize ``mod["main"]``'s linear layers (and, with ``attention``, its attention
    matmuls) with ``scheme`` (``"w8a8"`` or ``"w4a8"``), calibrating on ``calibration``
    (a list of {input name: array} or of positional array lists)."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown quantization scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    mod = prepare(mod)
    sites = [s for s in find_sites(mod["main"]) if attention or s.kind == "linear"]
    ranges = calibrate(mod, calibration, sites)
    plan, at = {}, 0
    for site in sites:
        n = len(site.captured)
        plan[site.index] = (site, ranges[at: at + n])
        at += n
    result = QuantizationResult(mod, scheme)
    rewriter = _Rewriter(mod, SCHEMES[scheme], plan, result)
    new_main = rewriter.visit_expr(mod["main"])
    out = mod.clone() if hasattr(mod, "clone") else tvm.IRModule(dict(mod.functions.items()))
    out["main"] = new_main
    result.mod = relax.transform.Normalize()(out)
    return result
