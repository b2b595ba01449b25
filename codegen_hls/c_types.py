"""TVM dtypes -> exact HLS C++ types.

Why exact: an FPGA kernel's cost and numerics follow its bit widths, so every TVM
dtype maps to the C type of the same width (standard types where they exist,
``ap_int``/``ap_uint`` for the odd widths) and anything else is refused by name.
"""

from __future__ import annotations

import re

from tvm_spatial.errors import CodegenError

_STANDARD = {
    "float32": "float",
    "float64": "double",
    "bool": "bool",
    "int8": "int8_t",
    "int16": "int16_t",
    "int32": "int32_t",
    "int64": "int64_t",
    "uint8": "uint8_t",
    "uint16": "uint16_t",
    "uint32": "uint32_t",
    "uint64": "uint64_t",
}

_BYTES = {"float32": 4, "float64": 8, "bool": 1}

_ARBITRARY = re.compile(r"^(u?)int(\d+)$")


def c_type(dtype: str) -> str:
    """The HLS C++ spelling of a scalar TVM dtype."""
    dtype = str(dtype)
    if dtype in _STANDARD:
        return _STANDARD[dtype]
    match = _ARBITRARY.match(dtype)
    if match and 1 <= int(match.group(2)) <= 1024:
        return f"ap_{'u' if match.group(1) else ''}int<{match.group(2)}>"
    raise CodegenError(
        f"dtype {dtype!r} has no HLS C++ type in tvm-spatial; supported: "
        f"{', '.join(sorted(_STANDARD))} and intN/uintN (ap_int) up to 1024 bits"
    )


def needs_ap_types(dtype: str) -> bool:
    return c_type(dtype).startswith("ap_")


def byte_size(dtype: str) -> int:
    """Bytes per element in host memory (what a DLTensor of this dtype uses)."""
    dtype = str(dtype)
    if dtype in _BYTES:
        return _BYTES[dtype]
    match = _ARBITRARY.match(dtype)
    if match:
        return max(1, (int(match.group(2)) + 7) // 8)
    raise CodegenError(f"dtype {dtype!r} has no host byte size")


def is_float(dtype: str) -> bool:
    return str(dtype).startswith("float")


PACKET = "tvs_packet"  # the common header's struct of ``N`` elements (codegen_hls.kernel)


def stream_element(dtype: str, width: int = 1) -> str:
    """The element type of a stream carrying ``width`` elements of ``dtype`` per transfer."""
    return c_type(dtype) if width <= 1 else f"{PACKET}<{c_type(dtype)}, {int(width)}>"
