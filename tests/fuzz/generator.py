"""Random graphs over the ``vitis_spatial`` operator table, as data, and their Relax/ONNX forms.

A *spec* is a JSON-able dict::

    {"frontend": "relax" | "onnx", "seed": <input-data seed>,
     "inputs":  [{"name", "shape", "dtype", "lo", "hi", "step"}],
     "nodes":   [{"op", "args", "outs", "attrs"}],      # in program order
     "outputs": [names], "groups": {output name: subgraph index}}

Why data and not a Relax module: the same spec becomes a Relax module (``to_relax``) or an
ONNX model (``to_onnx``), the shrinker edits it node by node, and a failing one is pasted
verbatim into a regression test.

What the generator guards against, so that a difference means a bug and not noise:

* domains — every value carries an interval ``[lo, hi]``; ``log``/``sqrt``/``rsqrt`` get
  positive operands, divisors stay away from zero, ``exp`` and ``power`` stay finite and
  magnitudes stay under ``FLOAT_LIMIT`` (integers under ``INT_LIMIT``, so nothing overflows);
* discontinuities — ``floor``, ``ceil``, comparisons, float->int casts and floor division
  only see *exact* values (built from inputs by correctly rounded or data-movement ops), so
  a last-bit difference in ``exp`` on one side cannot flip them.

Shapes are static and small (at most ``MAX_ELEMS`` elements per tensor), graphs are
chains with diamonds (operands are reused), broadcasting is random, reductions run over
random axes, dtypes are float32 mostly, int32/int64 where the operator takes them, bool
out of comparisons, float64 now and then.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

MAX_ELEMS = 256
MAX_DIM = 6
MAX_RANK = 4
FLOAT_LIMIT = 1e4
INT_LIMIT = 2**20
ONNX_OPSET = 20

FLOATS = ("float32", "float64")
INTS = ("int32", "int64", "int8", "int16", "uint8", "uint16", "uint32")
# the range an integer value may take (kept inside its dtype, and small enough that
# nothing overflows on the way: signed overflow is undefined in C++ and poison in LLVM)
INT_RANGE = {"int8": (-128, 127), "int16": (-(2**15), 2**15 - 1), "uint8": (0, 255),
             "uint16": (0, 2**16 - 1), "uint32": (0, INT_LIMIT), "int32": (-INT_LIMIT, INT_LIMIT),
             "int64": (-INT_LIMIT, INT_LIMIT)}


@dataclass
class Val:
    """What the generator knows about a value: shape, dtype, interval, exactness."""

    shape: tuple[int, ...]
    dtype: str
    lo: float
    hi: float
    exact: bool

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOATS

    @property
    def is_int(self) -> bool:
        return self.dtype in INTS

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def mag(self) -> float:
        return max(abs(self.lo), abs(self.hi))


class Reject(Exception):
    """The chosen operator does not apply to the chosen operand; the generator tries another."""


# ----------------------------------------------------------------------------------------
# tensor data

def tensor_values(shape, dtype, lo, hi, step, rng: np.random.Generator) -> np.ndarray:
    shape = tuple(shape)
    if dtype == "bool":
        return np.asarray(rng.random(shape) < 0.5)
    if dtype in INTS:
        return np.asarray(rng.integers(int(lo), int(hi) + 1, shape)).astype(dtype)
    data = np.asarray(rng.uniform(lo, hi, shape))
    if step:
        data = np.clip(np.round(data / step) * step, lo, hi)
    return data.astype(dtype)


def data_seed(spec, inp) -> list[int]:
    """An input's data depends on the spec's seed and its name only (so shrinking a spec
    or batching several into one module leaves the data of the others alone)."""
    return list(inp.get("data_seed") or [spec["seed"], zlib.crc32(inp["name"].encode())])


def make_inputs(spec) -> list[np.ndarray]:
    return [
        tensor_values(i["shape"], i["dtype"], i["lo"], i["hi"], i.get("step"),
                      np.random.default_rng(data_seed(spec, i)))
        for i in spec["inputs"]
    ]


def _const_values(attrs) -> np.ndarray:
    return tensor_values(attrs["shape"], attrs["dtype"], attrs["lo"], attrs["hi"], attrs.get("step"),
                         np.random.default_rng(attrs["seed"]))


# ----------------------------------------------------------------------------------------
# interval helpers

def _products(a: Val, b: Val) -> tuple[float, float]:
    ps = [a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi]
    return min(ps), max(ps)


def _broadcast(*shapes) -> tuple[int, ...]:
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*[tuple(s) for s in shapes]))
    except ValueError as exc:
        raise Reject("shapes do not broadcast") from exc


def _norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


# ----------------------------------------------------------------------------------------
# the generator

class Generator:
    """Draws one spec. ``ops`` restricts the operator set (the ONNX mode uses a subset)."""

    def __init__(self, rng: np.random.Generator, frontend: str = "relax") -> None:
        self.rng = rng
        self.frontend = frontend
        self.inputs: list[dict] = []
        self.nodes: list[dict] = []
        self.vals: dict[str, Val] = {}
        self.pool: list[str] = []  # values of the current subgraph, in creation order
        self.used: set[str] = set()
        self.counter = 0

    # -- names and values ------------------------------------------------------------------
    def _name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def choice(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    @staticmethod
    def _leaf_range(dtype, lo, hi):
        if dtype == "bool":
            return 0, 1
        if dtype in INTS:
            lo, hi = max(int(lo), INT_RANGE[dtype][0]), min(int(hi), INT_RANGE[dtype][1])
            if lo > hi:
                raise Reject(f"no {dtype} values in the range")
            return lo, hi
        return float(lo), float(hi)

    def new_input(self, shape, dtype, lo, hi, step=None) -> str:
        lo, hi = self._leaf_range(dtype, lo, hi)
        name = self._name("x")
        self.inputs.append({"name": name, "shape": list(shape), "dtype": dtype, "lo": lo, "hi": hi,
                            "step": step})
        self.vals[name] = Val(tuple(shape), dtype, lo, hi, True)
        self.pool.append(name)
        return name

    def new_const(self, shape, dtype, lo, hi, step=None) -> str:
        lo, hi = self._leaf_range(dtype, lo, hi)
        attrs = {"shape": list(shape), "dtype": dtype, "lo": lo, "hi": hi, "step": step,
                 "seed": int(self.rng.integers(2**31))}
        (name,) = self.emit("const", [], attrs, [Val(tuple(shape), dtype, lo, hi, True)], pool=False)
        return name

    def leaf(self, shape, dtype, lo, hi, step=None, const_p: float = 0.25) -> str:
        if self.chance(const_p):
            return self.new_const(shape, dtype, lo, hi, step)
        return self.new_input(shape, dtype, lo, hi, step)

    def emit(self, op: str, args: list[str], attrs: dict, outs: list[Val], pool: bool = True) -> list[str]:
        for v in outs:
            if v.size > MAX_ELEMS or len(v.shape) > MAX_RANK:
                raise Reject(f"{op}: too large")
            if v.is_float and not (v.mag <= FLOAT_LIMIT):
                raise Reject(f"{op}: magnitude")
            if v.is_int and not (INT_RANGE[v.dtype][0] <= v.lo and v.hi <= INT_RANGE[v.dtype][1]):
                raise Reject(f"{op}: outside {v.dtype}")
        names = [self._name("v" if op != "const" else "c") for _ in outs]
        self.nodes.append({"op": op, "args": list(args), "outs": names, "attrs": attrs})
        for name, v in zip(names, outs):
            self.vals[name] = v
            if pool:
                self.pool.append(name)
        self.used.update(args)
        return names

    def partner(self, shape, dtype, lo=-2.0, hi=2.0, need=None, exact=False, step=None, reuse_p=0.35) -> str:
        """An operand of exactly ``shape``/``dtype``: a pool value (a diamond) or a fresh leaf."""
        shape = tuple(shape)
        ok = [
            n for n in self.pool
            if self.vals[n].shape == shape and self.vals[n].dtype == dtype
            and (need is None or need(self.vals[n])) and (not exact or self.vals[n].exact)
        ]
        if ok and self.chance(reuse_p):
            return self.choice(ok)
        if dtype in INTS:
            lo, hi = int(math.floor(lo)), int(math.ceil(hi))
        return self.leaf(shape, dtype, lo, hi, step)

    def random_shape(self, rank=None) -> tuple[int, ...]:
        rank = int(self.rng.integers(1, MAX_RANK + 1)) if rank is None else rank
        while True:
            shape = tuple(int(self.rng.integers(1, MAX_DIM + 1)) for _ in range(rank))
            if math.prod(shape) <= MAX_ELEMS // 2:
                return shape

    def broadcast_shape_for(self, shape) -> tuple[int, ...]:
        """A shape that broadcasts against ``shape`` (same, suffix with ones, or expanding it)."""
        shape = tuple(shape)
        kind = self.rng.integers(5)
        if kind == 0 or not shape:
            return shape
        if kind == 1:  # a suffix
            return shape[int(self.rng.integers(0, len(shape) + 1)):]
        if kind == 2:  # ones in random places
            return tuple(1 if self.chance(0.5) else d for d in shape)
        if kind == 3:  # expands our size-1 dims, or adds a leading dim
            out = tuple(int(self.rng.integers(2, 5)) if d == 1 and self.chance(0.7) else d for d in shape)
            if out == shape and len(shape) < MAX_RANK:
                out = (int(self.rng.integers(2, 4)),) + shape
            return out
        return (1,) * int(self.rng.integers(0, 2)) + shape[-1:]

    def float_dtype(self) -> str:
        return "float64" if self.chance(0.05) else "float32"

    # -- one subgraph ------------------------------------------------------------------------
    def subgraph(self, n_nodes: int, ops) -> list[str]:
        self.pool = []
        start_dtype = self.choice(["float32"] * 6 + ["int32", "int64"] + ["float64"])
        shape = self.random_shape()
        if start_dtype in INTS:
            self.new_input(shape, start_dtype, -8, 8)
        else:
            step = 0.25 if self.chance(0.3) else None
            self.new_input(shape, start_dtype, -2.0, 2.0, step)
        made = 0
        attempts = 0
        weights = np.array([w for _, w in ops], dtype=float)
        weights /= weights.sum()
        while made < n_nodes and attempts < n_nodes * 40:
            attempts += 1
            fn = ops[int(self.rng.choice(len(ops), p=weights))][0]
            primary = self.pool[-1] if self.chance(0.55) else self.choice(self.pool)
            snapshot = (len(self.inputs), len(self.nodes), list(self.pool), set(self.used), self.counter)
            try:
                fn(self, primary)
                made += 1
            except Reject:
                n_in, n_nodes_before, pool, used, counter = snapshot
                del self.inputs[n_in:]
                del self.nodes[n_nodes_before:]
                self.pool, self.used, self.counter = pool, used, counter
        sinks = [n for n in self.pool if n not in self.used and n not in {i["name"] for i in self.inputs}]
        if not sinks:
            sinks = [self.pool[-1]]
        extra = [n for n in self.pool if n not in sinks and any(n in nd["outs"] for nd in self.nodes)]
        if extra and self.chance(0.2):
            sinks.append(self.choice(extra))
        return sinks


# ----------------------------------------------------------------------------------------
# operator rules: each takes (generator, primary operand name), emits nodes or raises Reject

def _need(cond: bool, why: str = "") -> None:
    if not cond:
        raise Reject(why)


def _num(g: Generator, x: str) -> Val:
    v = g.vals[x]
    _need(v.is_float or v.is_int, "not numeric")
    return v


def _float(g: Generator, x: str) -> Val:
    v = g.vals[x]
    _need(v.is_float, "not float")
    return v


def _binary_rule(op: str):
    def rule(g: Generator, x: str) -> None:
        a = _num(g, x)
        if op in ("floor_divide", "floor_mod"):
            _need(a.exact, "discontinuous op on inexact value")
        yshape = g.broadcast_shape_for(a.shape)
        y_lo, y_hi = (-8, 8) if a.is_int else (-2.0, 2.0)
        need = None
        divisor = op in ("divide", "floor_divide", "floor_mod")
        if divisor:
            sign = 1 if g.chance(0.7) or a.dtype.startswith("uint") else -1
            y_lo, y_hi = ((1, 4) if a.is_int else (0.5, 2.0))
            if sign < 0:
                y_lo, y_hi = -y_hi, -y_lo
            need = (lambda v: v.lo >= 0.5 or v.hi <= -0.5) if a.is_float else (lambda v: v.lo >= 1 or v.hi <= -1)
        if op == "divide":
            _need(a.is_float, "true division of ints")
        if op == "power":
            _need(a.is_float and a.lo > 0.05 and a.hi < 50, "power base")
            y_lo, y_hi = -2.0, 2.0
            need = lambda v: -2.0 <= v.lo and v.hi <= 2.0  # noqa: E731
        step = 0.25 if (a.is_float and g.chance(0.3)) else None
        y = g.partner(yshape, a.dtype, y_lo, y_hi, need=need, exact=op in ("floor_divide", "floor_mod"),
                      step=step)
        b = g.vals[y]
        args = [x, y]
        # commutative or domain-free ops may take the operands the other way round
        if op in ("add", "multiply", "maximum", "minimum", "subtract") and g.chance(0.4):
            args = [y, x]
            a, b = b, a
        out_shape = _broadcast(a.shape, b.shape)
        exact = a.exact and b.exact
        if op == "add":
            lo, hi = a.lo + b.lo, a.hi + b.hi
        elif op == "subtract":
            lo, hi = a.lo - b.hi, a.hi - b.lo
        elif op == "multiply":
            lo, hi = _products(a, b)
        elif op == "divide":
            inv = Val(b.shape, b.dtype, 1.0 / b.hi, 1.0 / b.lo, True)
            lo, hi = _products(a, inv)
        elif op == "floor_divide":
            inv = Val(b.shape, b.dtype, 1.0 / b.hi, 1.0 / b.lo, True)
            lo, hi = _products(a, inv)
            lo, hi = math.floor(lo), math.ceil(hi)
        elif op == "floor_mod":
            m = max(abs(b.lo), abs(b.hi))
            lo, hi = -m, m
        elif op == "power":
            corners = [a.lo ** b.lo, a.lo ** b.hi, a.hi ** b.lo, a.hi ** b.hi]
            lo, hi = min(corners), max(corners)
            exact = False
        elif op == "maximum":
            lo, hi = max(a.lo, b.lo), max(a.hi, b.hi)
        else:  # minimum
            lo, hi = min(a.lo, b.lo), min(a.hi, b.hi)
        g.emit(op, args, {}, [Val(out_shape, a.dtype, lo, hi, exact)])

    return rule


def _unary_rule(op: str):
    def rule(g: Generator, x: str) -> None:
        a = g.vals[x]
        if op in ("negative", "abs"):
            _num(g, x)
        else:
            _float(g, x)
        exact = a.exact
        lo, hi = a.lo, a.hi
        if op == "relu":
            _num(g, x)
            lo, hi = max(lo, 0), max(hi, 0)
        elif op in ("gelu", "gelu_tanh", "silu"):
            lo, hi = (-0.3 if lo < 0 else 0.0), max(hi, 0.0)
            exact = False
        elif op == "sigmoid":
            lo, hi = _sigmoid(lo), _sigmoid(hi)
            exact = False
        elif op == "tanh":
            lo, hi = math.tanh(lo), math.tanh(hi)
            exact = False
        elif op == "exp":
            _need(hi <= 8, "exp overflow")
            lo, hi = math.exp(lo), math.exp(hi)
            exact = False
        elif op == "erf":
            lo, hi = math.erf(lo), math.erf(hi)
            exact = False
        elif op in ("sin", "cos"):
            lo, hi = -1.0, 1.0
            exact = False
        elif op == "sqrt":
            _need(lo >= 0, "sqrt domain")
            lo, hi = math.sqrt(lo), math.sqrt(hi)
            exact = False
        elif op == "rsqrt":
            _need(lo >= 0.05, "rsqrt domain")
            lo, hi = 1 / math.sqrt(hi), 1 / math.sqrt(lo)
            exact = False
        elif op == "log":
            _need(lo >= 0.05, "log domain")
            lo, hi = math.log(lo), math.log(hi)
            exact = False
        elif op == "negative":
            lo, hi = -hi, -lo
        elif op == "abs":
            lo, hi = (0 if lo <= 0 <= hi else min(abs(lo), abs(hi))), max(abs(lo), abs(hi))
        elif op in ("floor", "ceil"):
            _need(exact, "discontinuous op on inexact value")
            lo, hi = math.floor(lo), math.ceil(hi)
        g.emit(op, [x], {}, [Val(a.shape, a.dtype, lo, hi, exact)])

    return rule


def _guard_positive(g: Generator, x: str) -> None:
    """Insert abs(x) + c (or exp/sigmoid) so that a domain-restricted op has an operand."""
    a = _float(g, x)
    kind = g.rng.integers(3)
    if kind == 0:
        (ab,) = g.emit("abs", [x], {}, [Val(a.shape, a.dtype, 0.0, a.mag, a.exact)])
        c = g.new_const((), a.dtype, 0.25, 0.25)
        (pos,) = g.emit("add", [ab, c], {}, [Val(a.shape, a.dtype, 0.25, a.mag + 0.25, a.exact)])
    elif kind == 1:
        _need(a.hi <= 8)
        (pos,) = g.emit("exp", [x], {}, [Val(a.shape, a.dtype, math.exp(a.lo), math.exp(a.hi), False)])
    else:
        (sg,) = g.emit("sigmoid", [x], {}, [Val(a.shape, a.dtype, _sigmoid(a.lo), _sigmoid(a.hi), False)])
        c = g.new_const((), a.dtype, 0.1, 0.1)
        g.emit("add", [sg, c], {}, [Val(a.shape, a.dtype, _sigmoid(a.lo) + 0.1, _sigmoid(a.hi) + 0.1, False)])
    rule = _unary_rule(g.choice(["log", "sqrt", "rsqrt"]))
    rule(g, g.pool[-1])


def _rule_softmax(op: str):
    def rule(g: Generator, x: str) -> None:
        a = _float(g, x)
        _need(len(a.shape) >= 1)
        axis = int(g.rng.integers(-len(a.shape), len(a.shape)))
        n = a.shape[axis]
        if op == "softmax":
            lo, hi = 0.0, 1.0
        else:
            lo, hi = -(a.hi - a.lo) - math.log(n) - 1e-3, 0.0
        g.emit(op, [x], {"axis": axis}, [Val(a.shape, a.dtype, lo, hi, False)])

    return rule


def _rule_norm(op: str):
    def rule(g: Generator, x: str) -> None:
        a = _float(g, x)
        rank = len(a.shape)
        _need(rank >= 1 and a.dtype == "float32", "TVM normalizes float32 only")
        # TVM's rms_norm reads its weight as trailing axes; ONNX normalizes trailing axes
        if g.frontend == "onnx" or op == "rms_norm" or g.chance(0.7):
            k = int(g.rng.integers(1, min(rank, 2) + 1))
            axes = list(range(-k, 0))
        else:
            axes = sorted(int(v) for v in g.rng.choice(rank, size=int(g.rng.integers(1, rank + 1)), replace=False))
        # TVM's rms_norm fails to legalize when it normalizes every axis
        _need(op != "rms_norm" or len(axes) < rank, "rms_norm over all axes")
        pshape = tuple(a.shape[ax] for ax in axes)
        n = math.prod(pshape)
        _need(n >= 2 or op == "rms_norm", "normalizing over one element")
        gamma = g.partner(pshape, a.dtype, 0.5, 1.5, reuse_p=0.0)
        gv = g.vals[gamma]
        bound = math.sqrt(n) + 1e-3
        lo, hi = _products(Val((), a.dtype, -bound, bound, False), gv)
        args = [x, gamma]
        attrs = {"axes": axes, "epsilon": 1e-5}
        if op == "layer_norm":
            beta = g.partner(pshape, a.dtype, -1.0, 1.0, reuse_p=0.0)
            lo, hi = lo + g.vals[beta].lo, hi + g.vals[beta].hi
            args.append(beta)
        g.emit(op, args, attrs, [Val(a.shape, a.dtype, lo, hi, False)])

    return rule


def _rule_reduce(op: str):
    def rule(g: Generator, x: str) -> None:
        a = _num(g, x)
        rank = len(a.shape)
        if op in ("mean", "variance"):
            _need(a.is_float, "mean of ints")
        if rank == 0 or g.chance(0.15):
            axis = None
            reduced = list(range(rank))
        else:
            k = int(g.rng.integers(1, rank + 1))
            reduced = sorted(int(v) for v in g.rng.choice(rank, size=k, replace=False))
            axis = [r - rank if g.chance(0.3) else r for r in reduced]
        keep = g.chance(0.4)
        if g.frontend == "onnx" and axis is None:
            axis = list(range(rank))
        shape = tuple(
            (1 if keep else None) if i in reduced else d for i, d in enumerate(a.shape)
        )
        shape = tuple(d for d in shape if d is not None)
        n = math.prod(a.shape[i] for i in reduced) if reduced else 1
        exact = a.exact and (a.is_int or op == "max")
        if op == "sum":
            lo, hi = n * min(a.lo, 0), n * max(a.hi, 0)
            if a.lo > 0:
                lo = n * a.lo
            if a.hi < 0:
                hi = n * a.hi
        elif op == "variance":
            lo, hi = 0.0, ((a.hi - a.lo) / 2) ** 2 + 1e-3
        else:
            lo, hi = a.lo, a.hi
        g.emit(op, [x], {"axis": axis, "keepdims": keep}, [Val(shape, a.dtype, lo, hi, exact)])

    return rule


def _rule_matmul(with_bias: bool):
    def rule(g: Generator, x: str) -> None:
        a = _num(g, x)
        _need(len(a.shape) >= 1)
        _need(a.is_float or (a.is_int and a.mag <= 64 and not with_bias and g.frontend == "relax"))
        if len(a.shape) == 1:
            k = a.shape[0]
            n = int(g.rng.integers(1, 7))
            bshape = (k, n)
            out = (n,)
        else:
            k = a.shape[-1]
            n = int(g.rng.integers(1, 9))
            if len(a.shape) >= 3 and g.chance(0.4):
                batch = tuple(1 if g.chance(0.3) else d for d in a.shape[:-2])
                bshape = batch + (k, n)
            elif g.chance(0.1):
                bshape = (k,)
            else:
                bshape = (k, n)
            if len(bshape) == 1:
                out = a.shape[:-1]
            else:
                out = _broadcast(a.shape[:-2], bshape[:-2]) + (a.shape[-2], n)
        _need(k <= 16, "long dot product")
        lim = (-1.0, 1.0) if a.is_float else (-4, 4)
        w = g.partner(bshape, a.dtype, *lim, reuse_p=0.15)
        plo, phi = _products(a, g.vals[w])
        lo, hi = k * min(plo, 0), k * max(phi, 0)
        exact = a.is_int
        (mm,) = g.emit("matmul", [x, w], {}, [Val(out, a.dtype, lo, hi, exact)])
        if with_bias:
            _need(len(out) >= 1)
            b = g.partner((out[-1],), a.dtype, -1.0, 1.0, reuse_p=0.0)
            g.emit("add", [mm, b], {}, [Val(out, a.dtype, lo - 1, hi + 1, False)])

    return rule


def _rule_astype(g: Generator, x: str) -> None:
    a = g.vals[x]
    if a.dtype == "bool":
        target = g.choice(["float32", "int32", "int64", "uint8"])
        g.emit("astype", [x], {"dtype": target}, [Val(a.shape, target, 0, 1, True)])
        return
    if g.chance(0.1):
        _need(a.exact, "bool of an inexact value")
        g.emit("astype", [x], {"dtype": "bool"}, [Val(a.shape, "bool", 0, 1, True)])
        return
    if a.is_float:
        choices = ["int32", "int64", "int8", "int16", "uint8"] + (["float64"] if a.dtype == "float32" else ["float32"])
        target = g.choice(choices)
        if target in INTS:
            _need(a.exact, "float->int cast of an inexact value")
            lo, hi = math.trunc(a.lo), math.trunc(a.hi)
            g.emit("astype", [x], {"dtype": target}, [Val(a.shape, target, lo, hi, True)])
        else:
            g.emit("astype", [x], {"dtype": target}, [Val(a.shape, target, a.lo, a.hi, a.exact)])
        return
    target = g.choice(["float32", "float32", "int64" if a.dtype == "int32" else "int32", "int8", "int16",
                       "uint8", "uint16", "uint32"])
    if target == a.dtype:
        target = "float32"
    exact = a.exact and a.mag < 2**24
    g.emit("astype", [x], {"dtype": target}, [Val(a.shape, target, a.lo, a.hi, exact)])


def _factorize(g: Generator, size: int) -> tuple[int, ...]:
    primes = []
    n, p = size, 2
    while n > 1:
        while n % p == 0:
            primes.append(p)
            n //= p
        p += 1
    rank = int(g.rng.integers(1, MAX_RANK + 1))
    dims = [1] * rank
    for prime in primes:
        dims[int(g.rng.integers(rank))] *= prime
    return tuple(dims)


def _rule_reshape(g: Generator, x: str) -> None:
    a = g.vals[x]
    shape = _factorize(g, a.size)
    attrs_shape = list(shape)
    if g.chance(0.2) and len(shape) > 1:
        attrs_shape[int(g.rng.integers(len(shape)))] = -1
    g.emit("reshape", [x], {"shape": attrs_shape}, [Val(shape, a.dtype, a.lo, a.hi, a.exact)])


def _rule_permute(g: Generator, x: str) -> None:
    a = g.vals[x]
    _need(len(a.shape) >= 2)
    if g.chance(0.2):
        axes = None
        shape = a.shape[::-1]
    else:
        axes = [int(v) for v in g.rng.permutation(len(a.shape))]
        shape = tuple(a.shape[i] for i in axes)
    g.emit("permute_dims", [x], {"axes": axes}, [Val(shape, a.dtype, a.lo, a.hi, a.exact)])


def _rule_expand_dims(g: Generator, x: str) -> None:
    a = g.vals[x]
    rank = len(a.shape)
    axis = int(g.rng.integers(-(rank + 1), rank + 1))
    pos = _norm_axis(axis, rank + 1)
    shape = a.shape[:pos] + (1,) + a.shape[pos:]
    g.emit("expand_dims", [x], {"axis": axis}, [Val(shape, a.dtype, a.lo, a.hi, a.exact)])


def _rule_squeeze(g: Generator, x: str) -> None:
    a = g.vals[x]
    ones = [i for i, d in enumerate(a.shape) if d == 1]
    _need(bool(ones), "nothing to squeeze")
    if g.chance(0.3) and g.frontend == "relax":
        axis = None
        drop = ones
    else:
        drop = sorted(int(v) for v in g.rng.choice(ones, size=int(g.rng.integers(1, len(ones) + 1)), replace=False))
        axis = drop
    shape = tuple(d for i, d in enumerate(a.shape) if i not in drop)
    g.emit("squeeze", [x], {"axis": axis}, [Val(shape, a.dtype, a.lo, a.hi, a.exact)])


def _rule_broadcast_to(g: Generator, x: str) -> None:
    a = g.vals[x]
    shape = tuple(int(g.rng.integers(2, 5)) if d == 1 and g.chance(0.7) else d for d in a.shape)
    if len(shape) < MAX_RANK and (shape == a.shape or g.chance(0.3)):
        shape = (int(g.rng.integers(2, 4)),) + shape
    g.emit("broadcast_to", [x], {"shape": list(shape)}, [Val(shape, a.dtype, a.lo, a.hi, a.exact)])


def _rule_concat(g: Generator, x: str) -> None:
    a = g.vals[x]
    _need(len(a.shape) >= 1 and a.dtype != "bool")
    axis = int(g.rng.integers(-len(a.shape), len(a.shape)))
    pos = _norm_axis(axis, len(a.shape))
    parts = [x]
    for _ in range(int(g.rng.integers(1, 3))):
        shape = list(a.shape)
        shape[pos] = int(g.rng.integers(1, 5))
        lim = (-8, 8) if a.is_int else (-2.0, 2.0)
        parts.append(g.partner(shape, a.dtype, *lim))
    order = [int(i) for i in g.rng.permutation(len(parts))]
    parts = [parts[i] for i in order]
    vs = [g.vals[p] for p in parts]
    shape = list(a.shape)
    shape[pos] = sum(v.shape[pos] for v in vs)
    lo, hi = min(v.lo for v in vs), max(v.hi for v in vs)
    g.emit("concat", parts, {"axis": axis}, [Val(tuple(shape), a.dtype, lo, hi, all(v.exact for v in vs))])


def _rule_split(g: Generator, x: str) -> None:
    a = g.vals[x]
    cands = [i for i, d in enumerate(a.shape) if d >= 2]
    _need(bool(cands), "nothing to split")
    pos = g.choice(cands)
    n = a.shape[pos]
    divisors = [s for s in range(2, n + 1) if n % s == 0]
    if g.chance(0.5):
        sections = g.choice(divisors)
        spec = sections
        sizes = [n // sections] * sections
    else:
        k = int(g.rng.integers(1, min(3, n - 1) + 1))
        cuts = sorted(int(c) for c in g.rng.choice(np.arange(1, n), size=k, replace=False))
        spec = cuts
        bounds = [0, *cuts, n]
        sizes = [bounds[i + 1] - bounds[i] for i in range(len(bounds) - 1)]
    axis = pos - len(a.shape) if g.chance(0.3) else pos
    outs = []
    for s in sizes:
        shape = list(a.shape)
        shape[pos] = s
        outs.append(Val(tuple(shape), a.dtype, a.lo, a.hi, a.exact))
    g.emit("split", [x], {"indices_or_sections": spec, "axis": axis}, outs)


def _rule_strided_slice(g: Generator, x: str) -> None:
    a = g.vals[x]
    rank = len(a.shape)
    _need(rank >= 1)
    k = int(g.rng.integers(1, rank + 1))
    axes = sorted(int(v) for v in g.rng.choice(rank, size=k, replace=False))
    with_strides = g.chance(0.6)
    begin, end, strides = [], [], []
    shape = list(a.shape)
    for ax in axes:
        n = a.shape[ax]
        stride = 1
        if with_strides:
            stride = g.choice([1, 1, 2, 3, -1, -2])
        if stride > 0:
            b = int(g.rng.integers(0, n))
            e = int(g.rng.integers(b + 1, n + 1))
        else:
            b = int(g.rng.integers(0, n))
            e = int(g.rng.integers(-1, b)) if b > 0 else -1
            if e == -1:
                e = -(n + 1)  # "to the front": python slice with end before index 0
        length = len(range(*slice(b, e, stride).indices(n)))
        _need(length >= 1)
        if g.chance(0.25) and b > 0:
            b -= n  # negative begin index
        begin.append(b)
        end.append(e)
        strides.append(stride)
        shape[ax] = length
    attrs = {"axes": axes, "begin": begin, "end": end, "strides": strides if with_strides else None}
    g.emit("strided_slice", [x], attrs, [Val(tuple(shape), a.dtype, a.lo, a.hi, a.exact)])


def _rule_take(g: Generator, x: str) -> None:
    a = g.vals[x]
    _need(len(a.shape) >= 1 and a.dtype != "bool")
    axis = int(g.rng.integers(-len(a.shape), len(a.shape)))
    pos = _norm_axis(axis, len(a.shape))
    ishape = g.random_shape(int(g.rng.integers(0, 3)))
    idtype = g.choice(["int64", "int32"])
    n = a.shape[pos]
    if g.chance(0.3):
        idx = g.new_const(ishape, idtype, 0, n - 1)
    else:
        idx = g.new_input(ishape, idtype, 0, n - 1)
    shape = a.shape[:pos] + tuple(ishape) + a.shape[pos + 1:]
    g.emit("take", [x, idx], {"axis": axis}, [Val(shape, a.dtype, a.lo, a.hi, a.exact)])


def _compare(g: Generator, x: str, op: str | None = None) -> str:
    a = _num(g, x)
    _need(a.exact, "comparison of an inexact value")
    # ONNX has no NotEqual (its importer would emit Not(Equal))
    ops = ["less", "greater", "equal", "less_equal", "greater_equal"]
    op = op or g.choice(ops + (["not_equal"] if g.frontend == "relax" else []))
    lim = (a.lo, a.hi) if a.lo < a.hi else (a.lo - 1, a.hi + 1)
    y = g.partner(g.broadcast_shape_for(a.shape), a.dtype, *lim, exact=True,
                  step=0.25 if a.is_float else None, reuse_p=0.5)
    args = [x, y] if g.chance(0.5) else [y, x]
    shape = _broadcast(a.shape, g.vals[y].shape)
    (c,) = g.emit(op, args, {}, [Val(shape, "bool", 0, 1, True)])
    return c


def _rule_compare(g: Generator, x: str) -> None:
    _compare(g, x)


def _rule_where(g: Generator, x: str) -> None:
    a = _num(g, x)
    bools = [n for n in g.pool if g.vals[n].dtype == "bool"]
    if bools and g.chance(0.5):
        c = g.choice(bools)
        _need(len(_broadcast(g.vals[c].shape, a.shape)) <= MAX_RANK)
    else:
        exact = [n for n in g.pool if g.vals[n].exact and (g.vals[n].is_float or g.vals[n].is_int)]
        _need(bool(exact), "no exact value for a condition")
        c = _compare(g, g.choice(exact))
    cshape = g.vals[c].shape
    lim = (-8, 8) if a.is_int else (-2.0, 2.0)
    y = g.partner(g.broadcast_shape_for(a.shape), a.dtype, *lim)
    args = [c, x, y] if g.chance(0.5) else [c, y, x]
    vs = [g.vals[n] for n in args[1:]]
    shape = _broadcast(cshape, vs[0].shape, vs[1].shape)
    lo, hi = min(v.lo for v in vs), max(v.hi for v in vs)
    g.emit("where", args, {}, [Val(shape, a.dtype, lo, hi, all(v.exact for v in vs))])


def _rule_clip(g: Generator, x: str) -> None:
    a = _float(g, x)
    lo = float(np.round(g.rng.uniform(-1.5, 0.5), 2))
    hi = float(np.round(lo + g.rng.uniform(0.1, 2.0), 2))
    g.emit("clip", [x], {"min": lo, "max": hi},
           [Val(a.shape, a.dtype, max(min(a.lo, hi), lo), min(max(a.hi, lo), hi), a.exact)])


def _rule_isnan(g: Generator, x: str) -> None:
    a = _float(g, x)
    op = g.choice(["isnan", "isinf"] + (["isfinite"] if g.frontend == "relax" else []))  # ONNX: no IsFinite
    g.emit(op, [x], {}, [Val(a.shape, "bool", 0, 1, True)])


def _rule_bitwise(g: Generator, x: str) -> None:
    a = g.vals[x]
    _need(a.is_int and a.exact, "bitwise ops need integers")
    y = g.partner(g.broadcast_shape_for(a.shape), a.dtype, -64, 64, exact=True, reuse_p=0.5)
    args = [x, y] if g.chance(0.5) else [y, x]
    mag = max(abs(a.lo), abs(a.hi), 64)
    bound = 2 ** math.ceil(math.log2(mag + 1))  # two's complement: and/or/xor stay in [-2^k, 2^k)
    shape = _broadcast(a.shape, g.vals[y].shape)
    op = g.choice(["bitwise_and", "bitwise_or", "bitwise_xor"])
    g.emit(op, args, {}, [Val(shape, a.dtype, -bound, bound - 1, True)])


def _rule_stack(g: Generator, x: str) -> None:
    """stack of same-shape values, then (often) a max/min over the new axis: how the ONNX
    importer spells Max/Min of several inputs."""
    a = g.vals[x]
    _need(len(a.shape) < MAX_RANK and a.dtype != "bool")
    others = [g.partner(a.shape, a.dtype, a.lo, a.hi, exact=a.exact, reuse_p=0.3) for _ in range(int(g.rng.integers(1, 3)))]
    parts = [x, *others]
    vs = [g.vals[n] for n in parts]
    lo, hi, exact = min(v.lo for v in vs), max(v.hi for v in vs), all(v.exact for v in vs)
    axis = int(g.rng.integers(0, len(a.shape) + 1))
    shape = a.shape[:axis] + (len(parts),) + a.shape[axis:]
    (st,) = g.emit("stack", parts, {"axis": axis}, [Val(shape, a.dtype, lo, hi, exact)])
    if g.chance(0.6):
        op = g.choice(["max", "min"])
        g.emit(op, [st], {"axis": [axis], "keepdims": False}, [Val(a.shape, a.dtype, lo, hi, exact)])


def _rule_logical(g: Generator, x: str) -> None:
    if g.vals[x].dtype != "bool":
        bools = [n for n in g.pool if g.vals[n].dtype == "bool"]
        x = g.choice(bools) if bools else _compare(g, x)
    a = g.vals[x]
    op = g.choice(["logical_and", "logical_or", "logical_not"])
    if op == "logical_not":
        g.emit(op, [x], {}, [Val(a.shape, "bool", 0, 1, True)])
        return
    y = g.partner(g.broadcast_shape_for(a.shape), "bool", reuse_p=0.5)
    args = [x, y] if g.chance(0.5) else [y, x]
    shape = _broadcast(a.shape, g.vals[y].shape)
    g.emit(op, args, {}, [Val(shape, "bool", 0, 1, True)])


def _rule_gather_elements(g: Generator, x: str) -> None:
    a = g.vals[x]
    _need(len(a.shape) >= 1 and a.dtype != "bool")
    axis = int(g.rng.integers(-len(a.shape), len(a.shape)))
    pos = _norm_axis(axis, len(a.shape))
    ishape = list(a.shape)
    ishape[pos] = int(g.rng.integers(1, 7))
    idtype = g.choice(["int64", "int32"])
    idx = g.leaf(ishape, idtype, 0, a.shape[pos] - 1, const_p=0.3)
    g.emit("gather_elements", [x, idx], {"axis": axis}, [Val(tuple(ishape), a.dtype, a.lo, a.hi, a.exact)])


def _rule_gather_nd(g: Generator, x: str) -> None:
    a = g.vals[x]
    _need(len(a.shape) >= 1 and a.dtype != "bool")
    m = int(g.rng.integers(1, len(a.shape) + 1))
    lead = g.random_shape(int(g.rng.integers(0, 3)))
    idx = g.leaf(tuple(lead) + (m,), "int64", 0, min(a.shape[:m]) - 1, const_p=0.3)
    shape = tuple(lead) + a.shape[m:]
    g.emit("gather_nd", [x, idx], {}, [Val(shape, a.dtype, a.lo, a.hi, a.exact)])


HOST_OP = "atan"  # must stay out of relax_passes.patterns.SINGLE_OPS


def _rule_host_op(g: Generator, x: str) -> None:
    """An operator outside the table (atan): a host island between kernels."""
    a = _float(g, x)
    g.emit(HOST_OP, [x], {}, [Val(a.shape, a.dtype, math.atan(a.lo), math.atan(a.hi), False)])


def _scalar(g: Generator, value: float, dtype: str = "float32") -> str:
    return g.new_const((), dtype, value, value)


def _rule_linear_const(g: Generator, x: str) -> None:
    """matmul with a constant weight (+ a constant bias): the ``linear`` LLM pattern."""
    a = _float(g, x)
    _need(len(a.shape) >= 1 and a.dtype == "float32" and a.shape[-1] <= 16)
    k, n = a.shape[-1], int(g.rng.integers(1, 9))
    w = g.new_const((k, n), a.dtype, -1.0, 1.0)
    out = a.shape[:-1] + (n,)
    lo, hi = -k * a.mag, k * a.mag
    (mm,) = g.emit("matmul", [x, w], {}, [Val(out, a.dtype, lo, hi, False)])
    if g.chance(0.7):
        b = g.new_const((n,), a.dtype, -1.0, 1.0)
        args = [mm, b] if g.chance(0.8) else [b, mm]
        g.emit("add", args, {}, [Val(out, a.dtype, lo - 1, hi + 1, False)])


def _rule_gelu_expansion(g: Generator, x: str) -> None:
    """GELU as the exporters spell it (erf form or the tanh "gelu_new" form)."""
    a = _float(g, x)
    _need(a.dtype == "float32" and a.mag <= 20)
    sh, dt = a.shape, a.dtype
    vals = lambda lo, hi: [Val(sh, dt, lo, hi, False)]  # noqa: E731
    m = a.mag
    if g.chance(0.6):
        if g.chance(0.5):
            (arg,) = g.emit("divide", [x, _scalar(g, 1.4142135)], {}, vals(-m, m))
        else:
            (arg,) = g.emit("multiply", [x, _scalar(g, 0.70710677)], {}, vals(-m, m))
        (e,) = g.emit("erf", [arg], {}, vals(-1, 1))
        (half,) = g.emit("add", [e, _scalar(g, 1.0)], {}, vals(0, 2))
        form = int(g.rng.integers(4))
        if form == 0:
            (t,) = g.emit("multiply", [_scalar(g, 0.5), half], {}, vals(0, 1))
            g.emit("multiply", [x, t], {}, vals(-m, m))
        elif form == 1:
            (t,) = g.emit("multiply", [half, _scalar(g, 0.5)], {}, vals(0, 1))
            g.emit("multiply", [x, t], {}, vals(-m, m))
        elif form == 2:
            (t,) = g.emit("multiply", [x, _scalar(g, 0.5)], {}, vals(-m, m))
            g.emit("multiply", [t, half], {}, vals(-m, m))
        else:
            (t,) = g.emit("multiply", [x, half], {}, vals(-2 * m, 2 * m))
            g.emit("multiply", [t, _scalar(g, 0.5)], {}, vals(-m, m))
    else:
        (cube,) = g.emit("power", [x, _scalar(g, 3.0)], {}, vals(-m**3, m**3))
        (cube2,) = g.emit("multiply", [cube, _scalar(g, 0.044715)], {}, vals(-m**3, m**3))
        (inner,) = g.emit("add", [x, cube2], {}, vals(-m**3 - m, m**3 + m))
        (scaled,) = g.emit("multiply", [inner, _scalar(g, 0.7978846)], {}, vals(-m**3 - m, m**3 + m))
        (th,) = g.emit("tanh", [scaled], {}, vals(-1, 1))
        (half,) = g.emit("add", [th, _scalar(g, 1.0)], {}, vals(0, 2))
        form = int(g.rng.integers(3))
        if form == 0:
            (t,) = g.emit("multiply", [x, _scalar(g, 0.5)], {}, vals(-m, m))
            g.emit("multiply", [t, half], {}, vals(-m, m))
        elif form == 1:
            (t,) = g.emit("multiply", [_scalar(g, 0.5), half], {}, vals(0, 1))
            g.emit("multiply", [x, t], {}, vals(-m, m))
        else:
            (t,) = g.emit("multiply", [x, half], {}, vals(-2 * m, 2 * m))
            g.emit("multiply", [t, _scalar(g, 0.5)], {}, vals(-m, m))


def _rule_masked_softmax(g: Generator, x: str) -> None:
    """softmax(x + mask) [axis -1], then maybe the exporters' where(isnan(p), 0, p) guard."""
    a = _float(g, x)
    _need(len(a.shape) >= 1 and a.dtype == "float32" and a.mag <= 100)
    mshape = g.broadcast_shape_for(a.shape)
    mask = g.leaf(mshape, a.dtype, -10000.0, 0.0, step=10000.0, const_p=0.5)
    args = [x, mask] if g.chance(0.7) else [mask, x]
    shape = _broadcast(a.shape, mshape)
    (s,) = g.emit("add", args, {}, [Val(shape, a.dtype, a.lo - 10000, a.hi, False)])
    (sm,) = g.emit("softmax", [s], {"axis": -1}, [Val(shape, a.dtype, 0.0, 1.0, False)])
    if g.chance(0.5):
        (nan,) = g.emit("isnan", [sm], {}, [Val(shape, "bool", 0, 1, True)])
        g.emit("where", [nan, _scalar(g, 0.0), sm], {}, [Val(shape, a.dtype, 0.0, 1.0, False)])


def _rule_attention_matmul(g: Generator, x: str) -> None:
    """activation x activation matmul with optional constant scalings (QK^T / AV)."""
    a = _float(g, x)
    _need(len(a.shape) >= 2 and a.dtype == "float32" and a.shape[-1] <= 16 and a.mag <= 100)
    k, n = a.shape[-1], int(g.rng.integers(1, 7))
    bshape = a.shape[:-2] + (k, n)
    y = g.partner(bshape, a.dtype, -1.0, 1.0, reuse_p=0.3)
    b = g.vals[y]

    def scaled(name, v):
        kind = g.rng.integers(3)
        if kind == 0:
            return name, v.mag
        c = float(np.round(g.rng.uniform(0.2, 2.0), 3))
        op = "multiply" if kind == 1 else "divide"
        m = v.mag * (c if op == "multiply" else 1 / c)
        (out,) = g.emit(op, [name, _scalar(g, c)], {}, [Val(v.shape, v.dtype, -m, m, False)])
        return out, m

    left, ml = scaled(x, a)
    right, mr = scaled(y, b)
    out = a.shape[:-1] + (n,)
    m = k * ml * mr
    (mm,) = g.emit("matmul", [left, right], {}, [Val(out, a.dtype, -m, m, False)])
    scaled(mm, Val(out, a.dtype, -m, m, False))


def _rule_heads(g: Generator, x: str) -> None:
    """head split (reshape -> permute) or head merge (permute -> reshape)."""
    a = g.vals[x]
    _need(len(a.shape) in (2, 3))
    if g.chance(0.5):
        last = a.shape[-1]
        heads = [h for h in range(2, last + 1) if last % h == 0]
        _need(bool(heads), "no head count divides the last dim")
        h = g.choice(heads)
        shape = a.shape[:-1] + (h, last // h)
        (r,) = g.emit("reshape", [x], {"shape": list(shape)}, [Val(shape, a.dtype, a.lo, a.hi, a.exact)])
        r_rank = len(shape)
        perm = list(range(r_rank - 3)) + [r_rank - 2, r_rank - 3, r_rank - 1]
        out = tuple(shape[i] for i in perm)
        g.emit("permute_dims", [r], {"axes": perm}, [Val(out, a.dtype, a.lo, a.hi, a.exact)])
    else:
        _need(len(a.shape) == 3)
        perm = [1, 0, 2]
        pshape = tuple(a.shape[i] for i in perm)
        (p,) = g.emit("permute_dims", [x], {"axes": perm}, [Val(pshape, a.dtype, a.lo, a.hi, a.exact)])
        shape = (pshape[0], pshape[1] * pshape[2])
        g.emit("reshape", [p], {"shape": list(shape)}, [Val(shape, a.dtype, a.lo, a.hi, a.exact)])


def _rule_embedding(g: Generator, x: str) -> None:
    """take(constant table, ids) with ONNX's negative-index wrap and position embeddings."""
    a = g.vals[x]
    _need(a.is_int and a.exact, "ids must be exact integers")
    rows, width = int(g.rng.integers(2, 12)), int(g.rng.integers(1, 9))
    _need(a.size * width <= MAX_ELEMS)
    ids_dtype = a.dtype if a.dtype in ("int32", "int64") else None
    _need(ids_dtype is not None)
    raw = g.new_input(a.shape, ids_dtype, -rows, rows - 1) if g.chance(0.5) else None
    idx = raw or x
    if raw is not None:
        zero = _scalar(g, 0, ids_dtype)
        nrows = _scalar(g, rows, ids_dtype)
        (neg,) = g.emit("less", [raw, zero], {}, [Val(a.shape, "bool", 0, 1, True)])
        (wrapped,) = g.emit("add", [raw, nrows], {}, [Val(a.shape, ids_dtype, 0, 2 * rows, True)])
        (idx,) = g.emit("where", [neg, wrapped, raw], {}, [Val(a.shape, ids_dtype, 0, rows - 1, True)])
    else:
        _need(a.lo >= 0 and a.hi < rows, "ids out of the table")
    table = g.new_const((rows, width), "float32", -1.0, 1.0)
    shape = a.shape + (width,)
    (e,) = g.emit("take", [table, idx], {"axis": 0}, [Val(shape, "float32", -1.0, 1.0, True)])
    for _ in range(int(g.rng.integers(0, 3))):
        pos = g.new_const(shape[-2:] if len(shape) >= 2 else shape, "float32", -1.0, 1.0)
        lo, hi = g.vals[e].lo - 1, g.vals[e].hi + 1
        (e,) = g.emit("add", [e, pos], {}, [Val(shape, "float32", lo, hi, True)])


def _ops_table():
    u, b = _unary_rule, _binary_rule
    return {
        "matmul": (_rule_matmul(False), 3),
        "linear": (_rule_matmul(True), 2),
        "add": (b("add"), 3),
        "subtract": (b("subtract"), 2),
        "multiply": (b("multiply"), 2),
        "divide": (b("divide"), 1.5),
        "floor_divide": (b("floor_divide"), 1),
        "floor_mod": (b("floor_mod"), 1),
        "power": (b("power"), 1),
        "maximum": (b("maximum"), 1),
        "minimum": (b("minimum"), 1),
        "relu": (u("relu"), 1.5),
        "gelu": (u("gelu"), 1),
        "gelu_tanh": (u("gelu_tanh"), 1),
        "silu": (u("silu"), 1),
        "sigmoid": (u("sigmoid"), 1),
        "tanh": (u("tanh"), 1),
        "exp": (u("exp"), 1),
        "erf": (u("erf"), 1),
        "sin": (u("sin"), 0.5),
        "cos": (u("cos"), 0.5),
        "domain": (_guard_positive, 1.5),  # log / sqrt / rsqrt behind a positivity guard
        "sqrt": (u("sqrt"), 0.5),
        "rsqrt": (u("rsqrt"), 0.5),
        "log": (u("log"), 0.5),
        "negative": (u("negative"), 1),
        "abs": (u("abs"), 1),
        "floor": (u("floor"), 1),
        "ceil": (u("ceil"), 1),
        "softmax": (_rule_softmax("softmax"), 1.5),
        "log_softmax": (_rule_softmax("log_softmax"), 1),
        "layer_norm": (_rule_norm("layer_norm"), 1.5),
        "rms_norm": (_rule_norm("rms_norm"), 1),
        "mean": (_rule_reduce("mean"), 1),
        "sum": (_rule_reduce("sum"), 1),
        "max": (_rule_reduce("max"), 1),
        "min": (_rule_reduce("min"), 0.5),
        "variance": (_rule_reduce("variance"), 1),
        "astype": (_rule_astype, 1.5),
        "reshape": (_rule_reshape, 2),
        "permute_dims": (_rule_permute, 2),
        "expand_dims": (_rule_expand_dims, 1),
        "squeeze": (_rule_squeeze, 1),
        "broadcast_to": (_rule_broadcast_to, 1),
        "concat": (_rule_concat, 1.5),
        "split": (_rule_split, 1.5),
        "strided_slice": (_rule_strided_slice, 1.5),
        "take": (_rule_take, 1.5),
        "compare": (_rule_compare, 1.5),
        "where": (_rule_where, 1.5),
        "clip": (_rule_clip, 1),
        "isnan": (_rule_isnan, 0.5),
        "bitwise": (_rule_bitwise, 0.5),
        "stack": (_rule_stack, 0.5),
        "logical": (_rule_logical, 1),
        "gather_elements": (_rule_gather_elements, 1),
        "gather_nd": (_rule_gather_nd, 1),
        "host_op": (_rule_host_op, 0.5),
        "linear_const": (_rule_linear_const, 2),
        "gelu_expansion": (_rule_gelu_expansion, 1),
        "masked_softmax": (_rule_masked_softmax, 1),
        "attention_matmul": (_rule_attention_matmul, 1.5),
        "heads": (_rule_heads, 1),
        "embedding": (_rule_embedding, 1),
    }


# ONNX has no floor_divide, float floor_mod or variance; RMSNormalization needs opset 23.
ONNX_RULES = frozenset(_ops_table()) - {"floor_divide", "variance", "rms_norm", "floor_mod", "stack"}


def generate(seed: int, frontend: str = "relax", max_subgraphs: int = 3, max_nodes: int = 7) -> dict:
    """One random spec (deterministic in ``seed``)."""
    rng = np.random.default_rng([seed, 0 if frontend == "relax" else 1])
    g = Generator(rng, frontend)
    table = _ops_table()
    names = sorted(table) if frontend == "relax" else sorted(ONNX_RULES)
    ops = [table[n] for n in names]
    outputs: list[str] = []
    groups: dict[str, int] = {}
    for sub in range(int(rng.integers(1, max_subgraphs + 1))):
        for name in g.subgraph(int(rng.integers(2, max_nodes + 1)), ops):
            if name not in groups:
                outputs.append(name)
                groups[name] = sub
    return {
        "frontend": frontend,
        "seed": int(seed),
        "inputs": g.inputs,
        "nodes": g.nodes,
        "outputs": outputs,
        "groups": groups,
    }


# ----------------------------------------------------------------------------------------
# spec -> Relax

def _relax_expr(node, args):
    from tvm import relax

    op = relax.op
    name, attrs = node["op"], node["attrs"]
    simple = {
        "add": op.add, "subtract": op.subtract, "multiply": op.multiply, "divide": op.divide,
        "floor_divide": op.floor_divide, "floor_mod": op.floor_mod, "power": op.power,
        "maximum": op.maximum, "minimum": op.minimum, "matmul": op.matmul,
        "relu": op.nn.relu, "gelu": op.nn.gelu, "gelu_tanh": op.nn.gelu_tanh, "silu": op.nn.silu,
        "sigmoid": op.sigmoid, "tanh": op.tanh, "exp": op.exp, "erf": op.erf, "sqrt": op.sqrt,
        "rsqrt": op.rsqrt, "log": op.log, "negative": op.negative, "abs": op.abs,
        "floor": op.floor, "ceil": op.ceil, "less": op.less, "greater": op.greater,
        "equal": op.equal, "where": op.where, "isnan": op.isnan, "logical_and": op.logical_and,
        "logical_or": op.logical_or, "logical_not": op.logical_not, "sin": op.sin, "cos": op.cos,
        "atan": op.atan, "isinf": op.isinf, "isfinite": op.isfinite, "not_equal": op.not_equal,
        "less_equal": op.less_equal, "greater_equal": op.greater_equal, "bitwise_and": op.bitwise_and,
        "bitwise_or": op.bitwise_or, "bitwise_xor": op.bitwise_xor,
    }
    if name == "const":
        return relax.const(_const_values(attrs), attrs["dtype"])
    if name in ("softmax", "log_softmax"):
        return getattr(op.nn, name)(args[0], axis=attrs["axis"])
    if name == "layer_norm":
        return op.nn.layer_norm(*args, axes=attrs["axes"], epsilon=attrs["epsilon"])
    if name == "rms_norm":
        return op.nn.rms_norm(*args, axes=attrs["axes"], epsilon=attrs["epsilon"])
    if name in ("mean", "sum", "max", "min", "variance"):
        return getattr(op, name)(args[0], axis=attrs["axis"], keepdims=attrs["keepdims"])
    if name == "astype":
        return op.astype(args[0], attrs["dtype"])
    if name == "reshape":
        return op.reshape(args[0], attrs["shape"])
    if name == "permute_dims":
        return op.permute_dims(args[0], attrs["axes"])
    if name == "expand_dims":
        return op.expand_dims(args[0], attrs["axis"])
    if name == "squeeze":
        return op.squeeze(args[0], attrs["axis"])
    if name == "broadcast_to":
        return op.broadcast_to(args[0], attrs["shape"])
    if name == "concat":
        return op.concat(list(args), axis=attrs["axis"])
    if name == "stack":
        return op.stack(list(args), axis=attrs["axis"])
    if name == "split":
        return op.split(args[0], attrs["indices_or_sections"], axis=attrs["axis"])
    if name == "strided_slice":
        return op.strided_slice(args[0], attrs["axes"], attrs["begin"], attrs["end"], attrs["strides"])
    if name == "take":
        return op.take(args[0], args[1], axis=attrs["axis"])
    if name == "clip":
        return op.clip(args[0], attrs["min"], attrs["max"])
    if name == "gather_elements":
        return op.gather_elements(args[0], args[1], axis=attrs["axis"])
    if name == "gather_nd":
        return op.gather_nd(args[0], args[1])
    return simple[name](*args)


def to_relax(spec):
    """The spec as a Relax module whose ``main`` returns a tuple of the outputs."""
    from tvm import relax

    bb = relax.BlockBuilder()
    env = {}
    params = []
    for i in spec["inputs"]:
        var = relax.Var(i["name"], relax.TensorType(tuple(i["shape"]), i["dtype"]))
        env[i["name"]] = var
        params.append(var)
    with bb.function("main", params):
        with bb.dataflow():
            for node in spec["nodes"]:
                expr = _relax_expr(node, [env[a] for a in node["args"]])
                if node["op"] == "const":
                    env[node["outs"][0]] = expr
                elif len(node["outs"]) == 1 and node["op"] != "split":
                    env[node["outs"][0]] = bb.emit(expr, name_hint=node["outs"][0])
                else:
                    tup = bb.emit(expr)
                    for k, out in enumerate(node["outs"]):
                        env[out] = bb.emit(relax.TupleGetItem(tup, k), name_hint=out)
            out = bb.emit_output(relax.Tuple([env[o] for o in spec["outputs"]]))
        bb.emit_func_output(out)
    return bb.get()


# ----------------------------------------------------------------------------------------
# spec -> ONNX

_ONNX_SIMPLE = {
    "add": "Add", "subtract": "Sub", "multiply": "Mul", "divide": "Div", "power": "Pow",
    "maximum": "Max", "minimum": "Min", "matmul": "MatMul", "relu": "Relu", "sigmoid": "Sigmoid",
    "tanh": "Tanh", "exp": "Exp", "erf": "Erf", "sqrt": "Sqrt", "log": "Log", "negative": "Neg",
    "abs": "Abs", "floor": "Floor", "ceil": "Ceil", "less": "Less", "greater": "Greater",
    "equal": "Equal", "where": "Where", "isnan": "IsNaN", "logical_and": "And", "logical_or": "Or",
    "logical_not": "Not", "sin": "Sin", "cos": "Cos", "atan": "Atan", "gather_nd": "GatherND",
    "isinf": "IsInf", "less_equal": "LessOrEqual", "greater_equal": "GreaterOrEqual",
    "bitwise_and": "BitwiseAnd", "bitwise_or": "BitwiseOr", "bitwise_xor": "BitwiseXor",
}


def to_onnx(spec, shapes: dict[str, tuple[tuple[int, ...], str]]):
    """The spec as an ONNX model; ``shapes`` gives every value's (shape, dtype) for the outputs."""
    import onnx
    from onnx import helper, numpy_helper

    nodes, inits = [], []
    count = [0]

    def tmp(prefix="t"):
        count[0] += 1
        return f"_{prefix}{count[0]}"

    def const_init(values, dtype="int64") -> str:
        name = tmp("k")
        inits.append(numpy_helper.from_array(np.asarray(values, dtype=dtype), name))
        return name

    def add(op_type, inputs, outputs, **attrs):
        nodes.append(helper.make_node(op_type, inputs, outputs, **attrs))

    for node in spec["nodes"]:
        op, args, outs, attrs = node["op"], node["args"], node["outs"], node["attrs"]
        if op == "const":
            inits.append(numpy_helper.from_array(_const_values(attrs), outs[0]))
        elif op in _ONNX_SIMPLE:
            add(_ONNX_SIMPLE[op], args, outs)
        elif op == "floor_mod":
            add("Mod", args, outs, fmod=0)
        elif op == "gelu":
            add("Gelu", args, outs)
        elif op == "gelu_tanh":
            add("Gelu", args, outs, approximate="tanh")
        elif op == "silu":
            s = tmp()
            add("Sigmoid", args, [s])
            add("Mul", [args[0], s], outs)
        elif op == "rsqrt":
            s = tmp()
            add("Sqrt", args, [s])
            add("Reciprocal", [s], outs)
        elif op in ("softmax", "log_softmax"):
            add("Softmax" if op == "softmax" else "LogSoftmax", args, outs, axis=attrs["axis"])
        elif op == "layer_norm":
            add("LayerNormalization", args, outs, axis=attrs["axes"][0], epsilon=attrs["epsilon"])
        elif op in ("mean", "sum", "max", "min"):
            onnx_op = {"mean": "ReduceMean", "sum": "ReduceSum", "max": "ReduceMax", "min": "ReduceMin"}[op]
            add(onnx_op, [args[0], const_init(attrs["axis"])], outs, keepdims=int(attrs["keepdims"]))
        elif op == "astype":
            to = helper.np_dtype_to_tensor_dtype(np.dtype(attrs["dtype"]))
            add("Cast", args, outs, to=to)
        elif op == "reshape":
            add("Reshape", [args[0], const_init(attrs["shape"])], outs)
        elif op == "permute_dims":
            perm = attrs["axes"]
            if perm is None:
                add("Transpose", args, outs)
            else:
                add("Transpose", args, outs, perm=perm)
        elif op == "expand_dims":
            add("Unsqueeze", [args[0], const_init([attrs["axis"]])], outs)
        elif op == "squeeze":
            add("Squeeze", [args[0], const_init(attrs["axis"])], outs)
        elif op == "broadcast_to":
            add("Expand", [args[0], const_init(attrs["shape"])], outs)
        elif op == "concat":
            add("Concat", args, outs, axis=attrs["axis"])
        elif op == "split":
            sizes = [shapes[o][0][_norm_axis(attrs["axis"], len(shapes[args[0]][0]))] for o in outs]
            add("Split", [args[0], const_init(sizes)], outs, axis=attrs["axis"])
        elif op == "strided_slice":
            inputs = [args[0], const_init(attrs["begin"]), const_init(attrs["end"]), const_init(attrs["axes"])]
            if attrs["strides"] is not None:
                inputs.append(const_init(attrs["strides"]))
            add("Slice", inputs, outs)
        elif op == "take":
            add("Gather", args, outs, axis=attrs["axis"])
        elif op == "gather_elements":
            add("GatherElements", args, outs, axis=attrs["axis"])
        elif op == "clip":
            dtype = shapes[args[0]][1]
            add("Clip", [args[0], const_init(attrs["min"], dtype), const_init(attrs["max"], dtype)], outs)
        else:
            raise ValueError(f"no ONNX form for {op}")

    def info(name, shape, dtype):
        return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), list(shape))

    graph = helper.make_graph(
        nodes,
        "fuzz",
        [info(i["name"], i["shape"], i["dtype"]) for i in spec["inputs"]],
        [info(o, *shapes[o]) for o in spec["outputs"]],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    model.ir_version = 9
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def value_types(spec) -> dict[str, tuple[tuple[int, ...], str]]:
    """(shape, dtype) of every input and node output, by Relax's own type inference."""
    mod = to_relax(spec)
    types = {}
    func = mod["main"]
    for p in func.params:
        types[p.name] = (tuple(int(d) for d in p.ty.shape.values), str(p.ty.dtype))
    for block in func.body.blocks:
        for binding in block.bindings:
            ty = binding.var.ty
            if hasattr(ty, "shape") and ty.shape is not None and hasattr(ty, "dtype"):
                types[binding.var.name] = (tuple(int(d) for d in ty.shape.values), str(ty.dtype))
    for node in spec["nodes"]:
        if node["op"] == "const":
            a = node["attrs"]
            types[node["outs"][0]] = (tuple(a["shape"]), a["dtype"])
    return types


def to_module(spec):
    """The Relax module of a spec: directly, or through ONNX and ``from_onnx``."""
    if spec["frontend"] == "relax":
        return to_relax(spec)
    from tvm.relax.frontend.onnx import from_onnx

    model = to_onnx(spec, value_types(spec))
    shape_dict = {i["name"]: list(i["shape"]) for i in spec["inputs"]}
    dtype_dict = {i["name"]: i["dtype"] for i in spec["inputs"]}
    return from_onnx(model, shape_dict=shape_dict, dtype_dict=dtype_dict)
