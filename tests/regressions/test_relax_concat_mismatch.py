"""Regression found by the differential fuzzer (benchmarks/fuzz.py, case relax:100945).

Outcome when found: mismatch
v28: 2 of 10 elements differ, max |diff| 1.19 (0.0 vs llvm -1.1917227506637573)
Graph: concat([1,3,1,2], [1,2,1,2], axis=-3) -> [1,5,1,2]; the first row taken from the second
operand (out[0][3][0][*]) comes out 0.

Cause: the printed kernel is correct C++ (UBSan-clean), ``T_concat[..][ax1][0][ax3] =
((3 <= ax1) ? b[..][ax1 - 3][0][ax3] : a[..][ax1][0][ax3])``, but GCC 12.2 miscompiles it
at the emulation's ``OPT_FLAGS = ("-O3", "-march=native")`` (loop if-conversion + AVX2
vectorization; also with ``-O3 -mavx2``). ``-O2``, ``-O3`` without ``-march``, or
``-O3 -march=native -fno-tree-loop-if-convert`` give the right answer:
``TVM_SPATIAL_EMULATION_FLAGS=-fno-tree-loop-if-convert`` makes this test pass.
"""

import pytest
from fuzz.differential import run_case

SPEC = {'frontend': 'relax',
 'seed': 100945,
 'inputs': [{'name': 'x27',
             'shape': [1, 3, 1, 2],
             'dtype': 'float32',
             'lo': -2.0,
             'hi': 2.0,
             'step': None},
            {'name': 'v26',
             'shape': [1, 2, 1, 2],
             'dtype': 'float32',
             'lo': -2.0,
             'hi': 2.0,
             'step': None}],
 'nodes': [{'op': 'concat', 'args': ['x27', 'v26'], 'outs': ['v28'], 'attrs': {'axis': -3}}],
 'outputs': ['v28'],
 'groups': {'v28': 2}}


def test_relax_concat_mismatch():
    outcome = run_case(SPEC)
    assert outcome.kind == "pass", outcome.detail
