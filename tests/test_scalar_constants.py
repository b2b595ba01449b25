"""0-d constants are bound into the operators that fold them into literals."""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax import op

import tvm_spatial
from helpers import build_and_compare


def _c(value):
    return relax.const(value, "float32")


def _module(body):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4, 64), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(body(x)))
        bb.emit_func_output(out)
    return bb.get()


def _gelu_tanh(x):
    inner = op.add(x, op.multiply(_c(0.044715), op.power(x, _c(3.0))))
    return op.multiply(op.multiply(_c(0.5), x), op.add(_c(1.0), op.tanh(op.multiply(_c(0.7978845608), inner))))


def test_gelu_constants_become_literals_not_ports():
    x = np.random.default_rng(0).standard_normal((4, 64)).astype("float32")
    ex, _ = build_and_compare(_module(_gelu_tanh), [x])
    kernel = tvm_spatial.design_of(ex).kernels[0]
    assert [p.direction for p in kernel.ports] == ["in", "out"], [p.name for p in kernel.ports]
    assert "powf" not in kernel.source  # power(x, 3.0) with a literal exponent is multiplied out
    assert "0.044715" in kernel.source


def test_a_constant_of_an_operator_that_keeps_it_as_a_tensor_stays_a_port():
    """``where`` does not fold scalar operands, so its constant must remain an input."""
    x = np.random.default_rng(1).standard_normal((4, 64)).astype("float32")
    ex, _ = build_and_compare(_module(lambda v: op.where(op.greater(v, _c(0.0)), v, _c(-1.5))), [x])
    kernel = tvm_spatial.design_of(ex).kernels[0]
    scalar_ports = [p.name for p in kernel.ports if p.direction == "in" and tuple(p.shape) in ((), (1,))]
    assert len(scalar_ports) == 1, [(p.name, p.shape) for p in kernel.ports]


def test_an_operator_shared_by_two_layers_gets_its_constants_bound_too():
    """FuseOpsByPattern shares one composite among identical matches (every layer's GELU)."""
    x = np.random.default_rng(2).standard_normal((4, 64)).astype("float32")
    ex, _ = build_and_compare(_module(lambda v: _gelu_tanh(op.multiply(_gelu_tanh(v), _gelu_tanh(v)))), [x])
    kernel = tvm_spatial.design_of(ex).kernels[0]
    assert [p.direction for p in kernel.ports] == ["in", "in", "out"], [p.name for p in kernel.ports]
    assert "powf" not in kernel.source and "std::pow" not in kernel.source
