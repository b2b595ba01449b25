"""The customized kernels of test_schedule_dtypes / test_schedule_interfaces (fixed point,
quantized codes, stream parameters, shrunk buffer_at buffers) run clean under ASan + UBSan
and still equal their references: a local buffer indexed past its (now smaller) size, or a
stream read more often than written, is caught here rather than read as a wrong number."""

from __future__ import annotations

from pathlib import Path

from test_generated_cpp import _explain, _run_sanitized

TESTS = Path(__file__).resolve().parent

# Xilinx's ap_private.h left-shifts negative values when it builds a negative ap_fixed: UB in
# C++17 (defined in C++20, and what GCC does anyway). Only that check is off; our code has
# no such shift (the kernels use no <<).
CHILD = f"""
import os, sys
sys.path.insert(0, {str(TESTS)!r})
from codegen_hls import emulation
os.environ[emulation.EXTRA_FLAGS_ENV] += " -fno-sanitize=shift-base"
import test_schedule_dtypes as d
import test_schedule_interfaces as f
from tvm_spatial.prim_build import build_many

mods = build_many({{**d._fixed_schedules(), **f._stream_schedules(), **f._buffer_at_schedules()}})
for case in sorted(d.FIXED_CASES):
    d.test_cast_to_fixed_point_matches_the_ap_fixed_model(case, mods)
d.test_fixed_point_accumulator_quantizes_every_step("fx_acc", "acc[4];", mods)
d.test_fixed_point_accumulator_quantizes_every_step("fx_acc_local", "acc_local[1];", mods)
d.test_composed_call_sites_get_their_own_data_types(mods)
for args in [(8, 0.05, True, "int8_t"), (4, 0.25, True, "ap_int<4>"), (8, 0.03, False, "uint8_t")]:
    d.test_quantize_to_integers_and_back(*args, mods)
f.test_caller_stage_streams_into_a_composed_callee(mods)
f.test_callee_output_streams_into_a_caller_stage(mods)
f.test_composed_callees_stream_into_each_other(mods)
f.test_a_stream_parameter_of_the_top_function_is_fed_from_its_port(mods)
for name, decl in [("ba_row", "float C_local[8];"), ("ba_tile", "float C_local[4];"),
                   ("ba_local", "float tmp_local[8];"), ("ba_elem", "float B_local[1];")]:
    f.test_buffer_at_keeps_the_region_below_the_axis(name, decl, mods)
assert "-fsanitize=address,undefined" in emulation.extra_flags(), emulation.extra_flags()
print("SANITIZED-OK", len(mods))
"""


def test_customized_kernels_run_clean_under_sanitizers(tmp_path):
    proc = _run_sanitized(CHILD, tmp_path)
    assert proc.returncode == 0 and "SANITIZED-OK" in proc.stdout, _explain(proc)
