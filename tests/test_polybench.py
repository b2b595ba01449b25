"""PolyBench in TVMScript with Allo-style schedules (examples/polybench): scheduled and
unscheduled emulation equal numpy, the HLS text carries what each schedule implies, the
kernels compile warning-free, and every schedule's log replays to the same module.

All kernels go into one design, so the emulation is one compile (cached by content)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tvm

import tvm_spatial
from codegen_hls import emulation
from tvm_spatial.prim_build import build_many

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from examples.polybench import BENCHMARKS  # noqa: E402

NAMES = sorted(BENCHMARKS)


def _key(name: str) -> str:
    return "pb_" + name.replace("-", "_")


@pytest.fixture(scope="module")
def schedules():
    out = {}
    for name in NAMES:
        bench = BENCHMARKS[name]
        s = tvm_spatial.customize(bench.func)
        bench.schedule(s)
        out[_key(name)] = s
        out[_key(name) + "_plain"] = tvm_spatial.customize(bench.func)
    return out


@pytest.fixture(scope="module")
def modules(schedules):
    return build_many(schedules)


def test_at_least_twelve_kernels():
    assert len(BENCHMARKS) >= 12, NAMES


@pytest.mark.parametrize("variant", ["", "_plain"])
@pytest.mark.parametrize("name", NAMES)
def test_emulation_equals_numpy(name, variant, modules):
    bench = BENCHMARKS[name]
    arrays = bench.inputs(seed=1)
    want = bench.expected(arrays)
    modules[_key(name) + variant](*arrays)  # every parameter, updated in place (PolyBench style)
    for param, got, ref in zip(bench.func.params, arrays, want):
        np.testing.assert_allclose(got, ref, rtol=bench.rtol, atol=bench.atol, err_msg=f"{name}: {param.name}")


@pytest.mark.parametrize("name", NAMES)
def test_hls_text_shows_the_schedule(name, modules):
    bench = BENCHMARKS[name]
    code = modules[_key(name)].hls_code
    plain = modules[_key(name) + "_plain"].hls_code
    assert bench.expect, name
    for text in bench.expect:
        assert text in code, f"{name}: {text!r} missing from\n{code}"
    assert "#pragma HLS PIPELINE" not in plain.split('extern "C"')[0], name


@pytest.mark.parametrize("name", NAMES)
def test_log_replays_to_the_same_module(name, schedules):
    s = schedules[_key(name)]
    assert len(s.log) > 0 and str(s.log).startswith("s.")
    again = tvm_spatial.customize(BENCHMARKS[name].func).replay(s.log)
    tvm.ir.assert_structural_equal(again.module, s.module)


def test_kernels_compile_with_werror(modules, tmp_path):
    """How Vitis sees the kernels: C++17, the Xilinx headers, no warning."""
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
