"""What one operation costs on an UltraScale+ FPGA: the constants of the analytical model.

Why a table: every number the model multiplies with lives here, next to where it comes
from, so a calibration is one edit and a reviewer can check each figure. Resources of the
cards themselves are data (``tvm_spatial/data/devices.json``), not here.

Sources (cited by key in the tables below):

``pg060``
    AMD PG060, Floating-Point Operator LogiCORE IP product guide, resource tables for
    UltraScale+ with full DSP usage: single-precision multiply 3 DSP48E2, add/subtract 2.
``ug579``
    AMD UG579, UltraScale Architecture DSP Slice user guide: one DSP48E2 is a 27x18
    multiplier with a 48-bit accumulator, so an int8 (or int16) multiply-accumulate is one
    slice.
``allo_pe``
    Allo's U280 GPT2 design (github.com/cornell-zhang/allo-pldi24-artifact,
    ``llm/gpt_region_1.cpp``, ``PE_int8_int16``): two 4-bit weights packed into one 27-bit
    operand times an 8-bit activation give two products per DSP48E2 (also AMD WP486,
    "Deep Learning with INT8 Optimization on Xilinx Devices", for the packing idea).
``ug573``
    AMD UG573, UltraScale Architecture Memory Resources: RAMB18E2 aspect ratios
    16Kx1 ... 512x36 (simple dual port), URAM288 4Kx72.
``allo_gemm``
    Allo's PolyBench gemm (allo-pldi24-artifact ``polybench/allo/gemm/gemm.cpp``) pipelines
    the fp32 accumulation at II=4: the fp32 adder latency at 300 MHz in Vitis HLS 2022.1.
``assumed``
    Engineering estimates, not measured here (LUT/FF per operator, per port, per process);
    the validation (docs/model_validation.md) says how far they carry.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MacCost:
    """One multiply-accumulate unit (a processing element of a matmul array)."""

    dsp: float
    lut: float
    ff: float
    latency: int  # cycles of the accumulate recurrence (II of a dependent accumulation)
    source: str


# keyed by precision class (see mac_class): DSP per MAC includes the accumulate
MAC_COSTS = {
    "fp32": MacCost(dsp=5, lut=430, ff=700, latency=4, source="pg060 (3 mul + 2 add), allo_gemm (latency)"),
    "fp16": MacCost(dsp=2, lut=250, ff=400, latency=4, source="pg060 (half precision: 1 mul + 1 add)"),
    "int16": MacCost(dsp=1, lut=30, ff=60, latency=1, source="ug579"),
    "int8": MacCost(dsp=1, lut=25, ff=50, latency=1, source="ug579"),
    "int4xint8": MacCost(dsp=0.5, lut=20, ff=40, latency=1, source="allo_pe"),
}


@dataclass(frozen=True)
class OpCost:
    """A scalar operator instance inside a pipelined loop."""

    dsp: float
    lut: float
    ff: float
    latency: int


# fp32 operators (pg060 with full DSP usage; LUT/FF and the transcendental ones: assumed)
FP32_OPS = {
    "add": OpCost(2, 220, 350, 4),
    "mul": OpCost(3, 90, 150, 3),
    "div": OpCost(0, 800, 1400, 12),
    "exp": OpCost(7, 900, 1200, 10),
    "sqrt": OpCost(0, 500, 900, 12),
    "tanh": OpCost(9, 1500, 2000, 20),  # exp + div, roughly
    "erf": OpCost(9, 1500, 2000, 20),
    "cmp": OpCost(0, 70, 60, 1),
}
INT_OPS = {
    "add": OpCost(0, 12, 16, 1),
    "mul": OpCost(1, 10, 20, 2),
    "div": OpCost(0, 300, 400, 18),
    "exp": OpCost(0, 300, 300, 4),  # table lookup
    "sqrt": OpCost(0, 200, 200, 8),
    "tanh": OpCost(0, 300, 300, 4),
    "erf": OpCost(0, 300, 300, 4),
    "cmp": OpCost(0, 10, 8, 1),
}

# Per-element operator mix of the LLM operators that are not matmuls (fp32 as the codegen
# prints them; counts read off their TIR: layer_norm = mean, variance, scale and shift).
ELEMENT_OPS = {
    "layer_norm": {"add": 3, "mul": 2},  # the per-row rsqrt/div are shared (one per row)
    "masked_softmax": {"add": 2, "exp": 1, "cmp": 1, "mul": 1},
    # the fused attention (codegen_hls.attention_kernel): its five loop nests' operators --
    # the QK^T MAC with Q and K scaled inside it, scale and mask, max, exp, sum, divide, the AV MAC
    "attention": {"mul": 5, "add": 5, "exp": 1, "cmp": 1, "div": 1},
    "softmax": {"add": 2, "exp": 1, "cmp": 1, "mul": 1},
    "gelu": {"add": 2, "mul": 5, "tanh": 1},
    "residual_add": {"add": 1},
    "add": {"add": 1},
    "embedding": {"add": 1},
    "quantize": {"mul": 1, "cmp": 2},
    "dequantize": {"mul": 1},
}
# passes over the data of one row (layer_norm: mean, variance, normalize)
ELEMENT_PASSES = {"layer_norm": 3, "masked_softmax": 3, "softmax": 3}

# Fixed costs (assumed)
PROCESS_LUT, PROCESS_FF = 500, 800  # control FSM and loop counters of one dataflow process
PORT_LUT, PORT_FF, PORT_BRAM18 = 900, 1500, 1  # one m_axi read adapter with its burst FIFO
STREAM_LUT_PER_32BIT = 1  # SRL FIFO of depth <= 32 per 32 bits of width
PIPELINE_DEPTH = 12  # load + MAC + store of one pipelined iteration (cycles)
LOOP_OVERHEAD = 1  # cycles per iteration of a loop that is not pipelined

# Off-chip memory
HBM_EFFICIENCY = 0.9  # sustained fraction of a pseudo-channel's peak for long bursts (assumed)
AXI_PORT_BYTES = 64  # widest m_axi data port (512 bit) per cycle

# On-chip memory (ug573)
BRAM18_BITS = 18 * 1024
BRAM18_SHAPES = ((1, 16384), (2, 8192), (4, 4096), (9, 2048), (18, 1024), (36, 512))
URAM_WIDTH, URAM_DEPTH = 72, 4096
REGISTER_ARRAY_BITS = 1024  # arrays this small become registers/LUTRAM, not BRAM (Vitis default)


def dtype_bits(dtype: str) -> int:
    """Bits of a TVM dtype string (``float32``, ``int8``, ``int4``, ``bool``)."""
    dtype = str(dtype)
    if dtype == "bool":
        return 1
    digits = "".join(ch for ch in dtype if ch.isdigit())
    return int(digits) if digits else 32


def is_float(dtype: str) -> bool:
    return str(dtype).startswith(("float", "bfloat"))


def mac_class(act_dtype: str, weight_dtype: str) -> str:
    """The MAC unit a matmul of these operand types needs."""
    if is_float(act_dtype) or is_float(weight_dtype):
        return "fp32" if max(dtype_bits(act_dtype), dtype_bits(weight_dtype)) > 16 else "fp16"
    a, w = dtype_bits(act_dtype), dtype_bits(weight_dtype)
    if min(a, w) <= 4 and max(a, w) <= 8:
        return "int4xint8"
    return "int8" if max(a, w) <= 8 else "int16"


def op_cost(op: str, dtype: str) -> OpCost:
    table = FP32_OPS if is_float(dtype) else INT_OPS
    return table.get(op, table["add"])


def bram18_for(depth: int, width: int) -> int:
    """RAMB18s for one memory bank of ``depth`` words of ``width`` bits (ug573 shapes)."""
    if depth <= 0 or width <= 0 or depth * width <= REGISTER_ARRAY_BITS:
        return 0
    return min(-(-width // w) * -(-depth // d) for w, d in BRAM18_SHAPES)


def uram_for(depth: int, width: int) -> int:
    if depth <= 0 or width <= 0:
        return 0
    if width <= URAM_WIDTH:  # narrow words are packed side by side into the 72-bit word
        per_word = URAM_WIDTH // width
        return -(-depth // (URAM_DEPTH * per_word))
    return -(-width // URAM_WIDTH) * -(-depth // URAM_DEPTH)
