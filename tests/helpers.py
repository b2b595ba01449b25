"""Shared test helpers: build a module for vitis_spatial and for TVM's llvm, run both."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

import tvm_spatial  # noqa: F401 - registers the target


def run_vm(ex, inputs):
    vm = relax.VirtualMachine(ex, tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(v) for v in inputs])
    if isinstance(out, tvm.runtime.Tensor):
        return [out.numpy()]
    return [o.numpy() for o in out]


def build_and_compare(mod, inputs, *, target="vitis_spatial", rtol=1e-5, atol=1e-5):
    """Build for ``target`` and llvm, run both on ``inputs``; assert equal; return the spatial build."""
    ex = relax.build(mod, target=target)
    ref = relax.build(mod, target="llvm")
    got, want = run_vm(ex, inputs), run_vm(ref, inputs)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
    return ex, got
