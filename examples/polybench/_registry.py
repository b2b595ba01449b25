"""The benchmark record and its registry (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

BENCHMARKS: dict[str, "Benchmark"] = {}


@dataclass(frozen=True)
class Benchmark:
    name: str
    func: object  # tvm.tirx.PrimFunc
    reference: Callable  # numpy: (all parameter arrays) -> all parameter arrays afterwards
    schedule: Callable  # (tvm_spatial.Schedule) -> None
    expect: tuple[str, ...] = field(default=())  # substrings of the scheduled HLS text
    rtol: float = 1e-4
    atol: float = 1e-4

    def inputs(self, seed: int = 0) -> list[np.ndarray]:
        """Random values for every parameter (outputs too: PolyBench updates in place)."""
        rng = np.random.default_rng(seed)
        out = []
        for param in self.func.params:
            shape = tuple(int(d) for d in param.ty.shape)
            out.append(rng.uniform(0.5, 1.5, size=shape).astype(str(param.ty.dtype)))
        return out

    def expected(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        copies = [a.astype(np.float64) for a in arrays]
        return [np.asarray(r) for r in self.reference(*copies)]


def benchmark(name: str, func, reference, *, expect=(), rtol=1e-4, atol=1e-4):
    """Register the decorated schedule with its kernel ``func`` and numpy ``reference``."""

    def register(schedule):
        BENCHMARKS[name] = Benchmark(name, func, reference, schedule, tuple(expect), rtol, atol)
        return schedule

    return register
