"""Every operator of the pattern table, alone, against TVM's llvm build of the same module."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import build_and_compare
from tvm import relax

import tvm_spatial
from relax_passes.patterns import SINGLE_OPS

op = relax.op
F32 = "float32"


def _unary(fn, shape=(2, 3, 8), positive=False):
    def make(rng):
        data = rng.standard_normal(shape).astype(F32)
        if positive:
            data = np.abs(data) + 0.1
        return [data], lambda x: fn(x)

    return make


def _binary(fn, shape_a=(2, 3, 8), shape_b=(8,), positive_b=False):
    def make(rng):
        a = rng.standard_normal(shape_a).astype(F32)
        b = rng.standard_normal(shape_b).astype(F32)
        if positive_b:
            b = np.abs(b) + 0.5
        return [a, b], lambda x, y: fn(x, y)

    return make


def _layer_norm(rng):
    data = [rng.standard_normal(s).astype(F32) for s in ((2, 5, 8), (8,), (8,))]
    return data, lambda x, g, b: op.nn.layer_norm(x, g, b, axes=[-1])


def _rms_norm(rng):
    data = [rng.standard_normal(s).astype(F32) for s in ((2, 5, 8), (8,))]
    return data, lambda x, g: op.nn.rms_norm(x, g, axes=[-1])


def _take(rng):
    return [rng.standard_normal((10, 6)).astype(F32), rng.integers(0, 10, (3, 4)).astype("int64")], (
        lambda t, i: op.take(t, i, axis=0)
    )


def _where(rng):
    a, b = rng.standard_normal((2, 6)).astype(F32), rng.standard_normal((2, 6)).astype(F32)
    return [a, b], lambda x, y: op.where(op.less(x, y), x, y)


def _gather_elements(rng):
    return [rng.standard_normal((3, 5)).astype(F32), rng.integers(0, 5, (3, 4)).astype("int64")], (
        lambda t, i: op.gather_elements(t, i, axis=1)
    )


def _gather_nd(rng):
    return [rng.standard_normal((4, 5, 6)).astype(F32), rng.integers(0, 4, (3, 2)).astype("int64")], (
        lambda t, i: op.gather_nd(t, op.clip(i, 0, 3))
    )


def _special_values(rng):
    a = rng.standard_normal((3, 8)).astype(F32)
    a[0, :3] = [np.inf, -np.inf, np.nan]

    def fn(x):
        finite = op.where(op.isfinite(x), x, relax.const(np.float32(0.0)))
        return op.where(op.isinf(x), relax.const(np.float32(7.0)), op.add(op.sin(finite), op.cos(finite)))

    return [a], fn


def _comparisons(rng):
    a, b = rng.standard_normal((2, 6)).astype(F32), rng.standard_normal((2, 6)).astype(F32)
    a[0, :2] = b[0, :2]  # ties, where >=, <= and != differ from >, <, ==

    def fn(x, y):
        ge = op.astype(op.greater_equal(x, y), "float32")
        le = op.astype(op.less_equal(x, y), "float32")
        ne = op.astype(op.not_equal(x, y), "float32")
        return op.add(op.add(ge, op.multiply(le, relax.const(np.float32(2.0)))), op.multiply(ne, relax.const(np.float32(4.0))))

    return [a, b], fn


def _bitwise(rng):
    a, b = rng.integers(-100, 100, (3, 5)).astype("int32"), rng.integers(-100, 100, (3, 5)).astype("int32")
    return [a, b], lambda x, y: op.bitwise_xor(op.bitwise_and(x, y), op.bitwise_or(x, op.negative(y)))


def _logic(rng):
    a, b = rng.standard_normal((2, 6)).astype(F32), rng.standard_normal((2, 6)).astype(F32)
    a[0, 0] = np.nan

    def fn(x, y):
        both = op.logical_and(op.less(x, y), op.logical_not(op.isnan(x)))
        either = op.logical_or(both, op.greater(y, relax.const(np.float32(1.0))))
        return op.where(either, x, y)

    return [a, b], fn


CASES = {
    "gather_elements": _gather_elements,
    "gather_nd": _gather_nd,
    "logical_isnan": _logic,
    "isfinite_isinf_sin_cos": _special_values,
    "greater_equal_less_equal_not_equal": _comparisons,
    "bitwise_and_or_xor": _bitwise,
    "matmul": _binary(op.matmul, (2, 4, 8), (8, 5)),
    "batched_matmul": _binary(op.matmul, (2, 3, 4, 8), (2, 3, 8, 5)),
    "linear": lambda rng: (
        [rng.standard_normal((4, 8)).astype(F32), rng.standard_normal((8, 6)).astype(F32),
         rng.standard_normal((6,)).astype(F32)],
        lambda x, w, b: op.add(op.matmul(x, w), b),
    ),
    "add": _binary(op.add),
    "subtract": _binary(op.subtract),
    "multiply": _binary(op.multiply),
    "divide": _binary(op.divide, positive_b=True),
    "power": _binary(op.power, (2, 8), (8,), positive_b=False),
    "maximum": _binary(op.maximum),
    "minimum": _binary(op.minimum),
    "relu": _unary(op.nn.relu),
    "gelu": _unary(op.nn.gelu),
    "gelu_tanh": _unary(op.nn.gelu_tanh),
    "silu": _unary(op.nn.silu),
    "sigmoid": _unary(op.sigmoid),
    "tanh": _unary(op.tanh),
    "exp": _unary(op.exp),
    "erf": _unary(op.erf),
    "sqrt": _unary(op.sqrt, positive=True),
    "rsqrt": _unary(op.rsqrt, positive=True),
    "negative": _unary(op.negative),
    "abs": _unary(op.abs),
    "log": _unary(op.log, positive=True),
    "floor": _unary(lambda x: op.floor(op.multiply(x, relax.const(np.float32(3.0))))),
    "ceil": _unary(lambda x: op.ceil(op.multiply(x, relax.const(np.float32(3.0))))),
    "softmax": _unary(lambda x: op.nn.softmax(x, axis=-1)),
    "log_softmax": _unary(lambda x: op.nn.log_softmax(x, axis=1)),
    "layer_norm": _layer_norm,
    "rms_norm": _rms_norm,
    "mean": _unary(lambda x: op.mean(x, axis=[-1], keepdims=True)),
    "sum": _unary(lambda x: op.sum(x, axis=[0, 2])),
    "max": _unary(lambda x: op.max(x, axis=[1])),
    "min": _unary(lambda x: op.min(x, axis=[0, 2], keepdims=True)),
    # ONNX Max/Min of several inputs import as stack + max/min over the new axis
    "stack": _binary(lambda a, b: op.max(op.stack([a, b], axis=0), axis=[0]), (2, 3), (2, 3)),
    "variance": _unary(lambda x: op.variance(x, axis=[-1])),
    "astype": lambda rng: ([rng.standard_normal((3, 4)).astype(F32) * 10], lambda x: op.astype(x, "int32")),
    "reshape": _unary(lambda x: op.reshape(x, (6, 8))),
    "permute_dims": _unary(lambda x: op.permute_dims(x, [2, 0, 1])),
    "expand_dims": _unary(lambda x: op.expand_dims(x, axis=1)),
    "squeeze": _unary(lambda x: op.squeeze(x, axis=[0]), shape=(1, 3, 4)),
    "broadcast_to": _unary(lambda x: op.broadcast_to(x, (4, 3, 8)), shape=(3, 8)),
    "concat": _binary(lambda a, b: op.concat([a, b], axis=1), (2, 3), (2, 5)),
    "split": _unary(lambda x: op.split(x, [2, 5], axis=2)),
    "strided_slice": _unary(lambda x: op.strided_slice(x, axes=[2], begin=[1], end=[7], strides=[2])),
    "strided_slice_unit": _unary(lambda x: op.strided_slice(x, axes=[1, 2], begin=[1, 0], end=[3, 4])),
    "take": _take,
    "where_less": _where,
    "greater": _binary(op.greater),
    "equal": _binary(lambda a, b: op.equal(a, op.floor(b)), (4, 8), (8,)),
    "clip": _unary(lambda x: op.clip(x, -0.5, 0.5)),
}


def _module(make, rng):
    inputs, fn = make(rng)
    bb = relax.BlockBuilder()
    params = [relax.Var(f"in{i}", relax.TensorType(a.shape, str(a.dtype))) for i, a in enumerate(inputs)]
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(fn(*params))
        bb.emit_func_output(out)
    return bb.get(), inputs


@pytest.mark.parametrize("name", sorted(CASES))
def test_operator_matches_llvm_and_is_offloaded(name):
    mod, inputs = _module(CASES[name], np.random.default_rng(abs(hash(name)) % 2**32))
    ex, _ = build_and_compare(mod, inputs, rtol=1e-5, atol=1e-5)
    report = tvm_spatial.build_report(ex)
    assert report.host_ops == (), report.host_ops
    assert report.offloaded_ops >= 1


def test_every_table_operator_has_a_case():
    """A new pattern-table entry must come with a numeric test here."""
    names = {o.replace("nn.", "") for o, _ in SINGLE_OPS}
    covered = set(CASES) | {"less", "where", "isnan", "logical_and", "logical_or", "logical_not"}
    covered |= {"floor_divide", "floor_mod"}  # in test_spine
    covered |= {"isfinite", "isinf", "sin", "cos", "greater_equal", "less_equal", "not_equal"}
    covered |= {"bitwise_and", "bitwise_or", "bitwise_xor"}  # combined cases above
    assert names <= covered, sorted(names - covered)
