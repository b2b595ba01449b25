"""The hardware-customization annotations carried by TensorIR, in one place.

Why one module: a schedule primitive (``tvm_spatial.schedule``) records what it means in
the IR itself, and everything downstream -- the HLS printer (``codegen_hls.printer``),
later the analytical model -- reads it back from the IR through the readers here. No key
is spelled anywhere else, and nothing travels beside the IR.

Where an annotation lives:

* **Loop annotations** (``For.annotations``; they survive lowering):

  ``hls.pipeline_ii`` (int >= 1)
      pipeline the loop with this initiation interval -> ``#pragma HLS PIPELINE II=n``.
  ``hls.unroll`` (int >= 0)
      unroll the loop; 0 means fully -> ``#pragma HLS UNROLL [factor=n]``.
  ``hls.unfold`` (str)
      the loop is a spatial array of processing elements named by the value (e.g. a
      systolic array): every iteration is its own hardware instance -> fully unrolled,
      and each instance is labelled in the HLS text.
  ``hls.dataflow`` (int 1)
      the loop body is a dataflow region -> ``#pragma HLS DATAFLOW``.

* **Function attributes** (``PrimFunc.attrs``), because buffers carry no annotation dict.
  Buffers are named; names are unique inside a function (``customize`` checks it):

  ``hls.partition``: {buffer name: [{"dim", "factor", "kind"}, ...]}
      ``#pragma HLS ARRAY_PARTITION``. ``dim`` is 1-based, 0 means every dimension (as in
      Vitis); ``kind`` is complete/block/cyclic. Part of the function's interface type
      when the buffer is a parameter.
  ``hls.stream``: {buffer name: {"depth", "array_dims"}}
      the buffer is ``hls::stream`` FIFO(s) of that depth. The first ``array_dims``
      dimensions select one stream of an array of streams (indexed by unfolded loops);
      the remaining dimensions are the order in time the elements pass through. On a
      parameter (a single stream): the function takes ``hls::stream<T>&`` -- part of its
      interface type, so callers pass a stream.
  ``hls.reuse``: {buffer name: {"source", "axis", "kind"}}
      the buffer is a reuse buffer that ``reuse_at`` created: a ``line`` buffer (rows of
      ``source``) or a ``window`` buffer, refilled by shifting along loop ``axis``.
  ``hls.dataflow`` (int 1)
      the whole function body is a dataflow region.
  ``hls.fixed``: {buffer name: {"width", "int_bits", "signed", "rounding", "overflow"}}
      the on-chip buffer holds ``ap_fixed<width, int_bits, rounding, overflow>`` (or
      ``ap_ufixed``) values. TVM has no fixed-point dtype, so the buffer keeps its float
      dtype in TIR as the *carrier*: every store converts to the fixed type with the
      rounding/overflow modes (the real ``ap_fixed.h`` does it, in HLS and emulation
      alike) and every load converts back, exactly (``width`` fits the carrier's mantissa).
      Arithmetic between loads and stores stays in the carrier type.
  ``hls.storage``: {buffer name: buffer name}
      the buffer takes the array of the other one (same shape and type), which nothing
      reads once it is first written: a stage computed in place over its input element
      by element (the fused attention's scores, logits, exponentials and probabilities).
      The printer declares one array for both (``codegen_hls.printer.shared_storage``).
  ``hls.quantize``: {buffer name: {"dtype", "scale"}}
      the buffer holds integer codes ``q = clamp(round(x / scale))`` of dtype (int8, int4,
      ...) and reads give ``q * scale`` back. The TIR itself does the arithmetic (the buffer
      dtype is the integer one); this records the scale for readers of the design.

Import it as ``import tvm_spatial.annotations as ann``: ``from tvm_spatial import
annotations`` finds the package's ``__future__.annotations`` feature instead of this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# ---- keys ---------------------------------------------------------------------------
PIPELINE_II = "hls.pipeline_ii"
UNROLL = "hls.unroll"
UNFOLD = "hls.unfold"
DATAFLOW = "hls.dataflow"  # on a loop or a function

PARTITION = "hls.partition"
STREAM = "hls.stream"
REUSE = "hls.reuse"

LOOP_KEYS = (PIPELINE_II, UNROLL, UNFOLD, DATAFLOW)
FIXED = "hls.fixed"
QUANTIZE = "hls.quantize"

STORAGE = "hls.storage"

FUNCTION_KEYS = (PARTITION, STREAM, REUSE, DATAFLOW, FIXED, QUANTIZE, STORAGE)

PARTITION_KINDS = ("complete", "block", "cyclic")
# Vitis HLS quantization (rounding) and overflow modes of ap_fixed; the first is the default
ROUNDING_MODES = ("AP_TRN", "AP_TRN_ZERO", "AP_RND", "AP_RND_ZERO", "AP_RND_MIN_INF", "AP_RND_INF", "AP_RND_CONV")
OVERFLOW_MODES = ("AP_WRAP", "AP_SAT", "AP_SAT_ZERO", "AP_SAT_SYM")
# significand bits of each float carrier: a fixed type this wide converts to it exactly
CARRIER_BITS = {"float32": 24, "float64": 53}


# ---- typed values -------------------------------------------------------------------
@dataclass(frozen=True)
class Partition:
    dim: int  # 1-based; 0 = all dimensions
    factor: int  # 0 for complete
    kind: str  # complete | block | cyclic

    def pragma(self, variable: str) -> str:
        factor = "" if self.kind == "complete" else f" factor={self.factor}"
        return f"#pragma HLS ARRAY_PARTITION variable={variable} type={self.kind}{factor} dim={self.dim}"

    def __str__(self) -> str:
        factor = "" if self.kind == "complete" else f" {self.factor}"
        return f"{self.kind}{factor} on dim {self.dim}"


@dataclass(frozen=True)
class Stream:
    depth: int
    array_dims: int = 0  # leading dims selecting one stream of an array of streams


@dataclass(frozen=True)
class Reuse:
    source: str  # the buffer whose elements are reused
    axis: str  # name of the loop the reuse buffer shifts along
    kind: str  # line | window


@dataclass(frozen=True)
class Fixed:
    """A fixed-point element type, as Vitis spells it: ``ap_fixed<W, I, Q, O>``."""

    width: int  # W: total bits
    int_bits: int  # I: bits left of the binary point (sign included when signed)
    signed: bool = True
    rounding: str = ROUNDING_MODES[0]
    overflow: str = OVERFLOW_MODES[0]

    _SPELLING = re.compile(
        r"^ap_(u?)fixed<\s*(\d+)\s*,\s*(-?\d+)\s*(?:,\s*(\w+)\s*(?:,\s*(\w+)\s*)?)?>$"
    )

    @classmethod
    def parse(cls, text: str) -> "Fixed | None":
        """``"ap_fixed<16,8>"``, ``"ap_ufixed<8,2,AP_RND,AP_SAT>"`` -> Fixed; anything else -> None.
        Bad widths or modes raise ValueError saying what is valid."""
        match = cls._SPELLING.match(str(text).strip())
        if match is None:
            return None
        unsigned, width, int_bits, rounding, overflow = match.groups()
        return cls(int(width), int(int_bits), not unsigned, rounding or ROUNDING_MODES[0],
                   overflow or OVERFLOW_MODES[0])

    def __post_init__(self) -> None:
        if not (isinstance(self.width, int) and 1 <= self.width <= 64):
            raise ValueError(f"fixed-point width {self.width!r} must be an int in 1..64")
        if not isinstance(self.int_bits, int) or abs(self.int_bits) > 64:
            raise ValueError(f"fixed-point integer bits {self.int_bits!r} must be an int in -64..64")
        if self.rounding not in ROUNDING_MODES:
            raise ValueError(f"rounding mode {self.rounding!r} is not one of {', '.join(ROUNDING_MODES)}")
        if self.overflow not in OVERFLOW_MODES:
            raise ValueError(f"overflow mode {self.overflow!r} is not one of {', '.join(OVERFLOW_MODES)}")

    @property
    def frac_bits(self) -> int:
        return self.width - self.int_bits

    def c_type(self) -> str:
        modes = ""
        if (self.rounding, self.overflow) != (ROUNDING_MODES[0], OVERFLOW_MODES[0]):
            modes = f", {self.rounding}" + ("" if self.overflow == OVERFLOW_MODES[0] else f", {self.overflow}")
        return f"ap_{'' if self.signed else 'u'}fixed<{self.width}, {self.int_bits}{modes}>"

    def __str__(self) -> str:
        return self.c_type().replace(" ", "")


@dataclass(frozen=True)
class Quantized:
    dtype: str  # the integer dtype of the codes
    scale: float


# ---- loop annotations ---------------------------------------------------------------
def _int(value) -> int:
    return int(value.value) if hasattr(value, "value") else int(value)


def pipeline_ii(loop) -> int | None:
    value = loop.annotations.get(PIPELINE_II) if loop.annotations else None
    return None if value is None else _int(value)


def unroll_factor(loop) -> int | None:
    value = loop.annotations.get(UNROLL) if loop.annotations else None
    return None if value is None else _int(value)


def unfold_name(loop) -> str | None:
    value = loop.annotations.get(UNFOLD) if loop.annotations else None
    return None if value is None else str(value)


def is_dataflow_loop(loop) -> bool:
    return bool(loop.annotations and loop.annotations.get(DATAFLOW) is not None)


# ---- function annotations -----------------------------------------------------------
def _attr(func, key):
    return func.attrs.get(key) if func.attrs is not None else None


def partitions(func) -> dict[str, tuple[Partition, ...]]:
    value = _attr(func, PARTITION) or {}
    return {
        str(name): tuple(Partition(_int(p["dim"]), _int(p["factor"]), str(p["kind"])) for p in parts)
        for name, parts in value.items()
    }


def streams(func) -> dict[str, Stream]:
    value = _attr(func, STREAM) or {}
    return {str(n): Stream(_int(s["depth"]), _int(s["array_dims"])) for n, s in value.items()}


def reuse_buffers(func) -> dict[str, Reuse]:
    value = _attr(func, REUSE) or {}
    return {str(n): Reuse(str(r["source"]), str(r["axis"]), str(r["kind"])) for n, r in value.items()}


def storage(func) -> dict[str, str]:
    value = _attr(func, STORAGE) or {}
    return {str(name): str(source) for name, source in value.items()}


def fixed_types(func) -> dict[str, Fixed]:
    value = _attr(func, FIXED) or {}
    return {
        str(n): Fixed(_int(f["width"]), _int(f["int_bits"]), bool(_int(f["signed"])), str(f["rounding"]), str(f["overflow"]))
        for n, f in value.items()
    }


def quantized(func) -> dict[str, Quantized]:
    value = _attr(func, QUANTIZE) or {}
    return {str(n): Quantized(str(q["dtype"]), _float(q["scale"])) for n, q in value.items()}


def _float(value) -> float:
    return float(value.value) if hasattr(value, "value") else float(value)


def is_dataflow_function(func) -> bool:
    return _attr(func, DATAFLOW) is not None


def with_partition(func, buffer: str, part: Partition):
    table = partitions(func)
    kept = tuple(p for p in table.get(buffer, ()) if p.dim != part.dim and part.dim != 0)
    table[buffer] = (*kept, part)
    encoded = {
        name: [{"dim": p.dim, "factor": p.factor, "kind": p.kind} for p in parts]
        for name, parts in sorted(table.items())
    }
    return func.with_attr(PARTITION, encoded)


def with_stream(func, buffer: str, stream: Stream):
    table = streams(func)
    table[buffer] = stream
    encoded = {n: {"depth": s.depth, "array_dims": s.array_dims} for n, s in sorted(table.items())}
    return func.with_attr(STREAM, encoded)


def with_reuse(func, buffer: str, reuse: Reuse):
    table = reuse_buffers(func)
    table[buffer] = reuse
    encoded = {n: {"source": r.source, "axis": r.axis, "kind": r.kind} for n, r in sorted(table.items())}
    return func.with_attr(REUSE, encoded)


def with_storage(func, buffer: str, source: str):
    table = storage(func)
    table[buffer] = source
    return func.with_attr(STORAGE, dict(sorted(table.items())))


def with_fixed(func, buffer: str, fixed: Fixed):
    table = fixed_types(func)
    table[buffer] = fixed
    encoded = {
        n: {"width": f.width, "int_bits": f.int_bits, "signed": int(f.signed), "rounding": f.rounding,
            "overflow": f.overflow}
        for n, f in sorted(table.items())
    }
    return func.with_attr(FIXED, encoded)


def with_quantized(func, buffer: str, quant: Quantized):
    table = quantized(func)
    table[buffer] = quant
    encoded = {n: {"dtype": q.dtype, "scale": tvm_float(q.scale)} for n, q in sorted(table.items())}
    return func.with_attr(QUANTIZE, encoded)


def tvm_float(value: float):
    """A float attribute kept at full (64-bit) precision in the IR."""
    from tvm import tirx

    return tirx.FloatImm("float64", float(value))


def with_dataflow(func):
    return func.with_attr(DATAFLOW, 1)
