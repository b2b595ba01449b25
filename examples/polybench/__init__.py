"""PolyBench/C kernels in TVMScript, each next to its Allo-style hardware schedule.

Every kernel is a :class:`Benchmark` in ``BENCHMARKS`` (name -> benchmark): the TensorIR
function (``@T.prim_func(s_tir=True)``), its numpy reference, its inputs, and
``schedule(s)`` -- the customization primitives applied to ``s = tvm_spatial.customize(func)``
-- with ``expect``, the HLS text those primitives must produce. Sizes are small (the
emulation runs in tests); PolyBench's scalars (alpha, beta) are constants of the kernel.

A new kernel is one function and one schedule in the module of its PolyBench category
(``linear_algebra``, ``stencils``, ``datamining``), registered with ``@benchmark``.
"""

from __future__ import annotations

from ._registry import BENCHMARKS, Benchmark, benchmark  # noqa: F401
from . import datamining, linear_algebra, stencils  # noqa: F401,E402  (they register)

__all__ = ["BENCHMARKS", "Benchmark", "benchmark"]
