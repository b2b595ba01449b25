"""PolyBench stencils (jacobi-2d, heat-3d, seidel-2d) with their schedules. The time loop
carries no sblock iterator: every step reads what the previous one wrote."""

from __future__ import annotations

import numpy as np
from tvm.script import tirx as T

from ._registry import benchmark

PIPE = "#pragma HLS PIPELINE II=1"
TSTEPS, JN = 3, 14


@T.prim_func(s_tir=True)
def jacobi_2d(A: T.Buffer((JN, JN), "float32"), B: T.Buffer((JN, JN), "float32")):
    for t in range(TSTEPS):
        for i, j in T.grid(JN - 2, JN - 2):
            with T.sblock("B"):
                vi = T.axis.spatial(JN - 2, i)
                vj = T.axis.spatial(JN - 2, j)
                B[vi + 1, vj + 1] = T.float32(0.2) * (A[vi + 1, vj + 1] + A[vi + 1, vj] + A[vi + 1, vj + 2]
                                                      + A[vi + 2, vj + 1] + A[vi, vj + 1])
        for i, j in T.grid(JN - 2, JN - 2):
            with T.sblock("A"):
                vi = T.axis.spatial(JN - 2, i)
                vj = T.axis.spatial(JN - 2, j)
                A[vi + 1, vj + 1] = T.float32(0.2) * (B[vi + 1, vj + 1] + B[vi + 1, vj] + B[vi + 1, vj + 2]
                                                      + B[vi + 2, vj + 1] + B[vi, vj + 1])


def _jacobi_2d(A, B):
    A, B = A.copy(), B.copy()
    for _ in range(TSTEPS):
        B[1:-1, 1:-1] = 0.2 * (A[1:-1, 1:-1] + A[1:-1, :-2] + A[1:-1, 2:] + A[2:, 1:-1] + A[:-2, 1:-1])
        A[1:-1, 1:-1] = 0.2 * (B[1:-1, 1:-1] + B[1:-1, :-2] + B[1:-1, 2:] + B[2:, 1:-1] + B[:-2, 1:-1])
    return [A, B]


@benchmark("jacobi-2d", jacobi_2d, _jacobi_2d,
           expect=(PIPE, "ARRAY_PARTITION variable=A type=cyclic factor=2 dim=1", "UNROLL factor=2"))
def schedule_jacobi_2d(s):
    s.pipeline("B/j")
    jo, ji = s.split("A/j", factor=2)
    s.unroll(ji, factor=2)
    s.pipeline(jo)
    s.partition("A", dim=1, factor=2, kind="cyclic")
    s.partition("B", dim=1, factor=2, kind="cyclic")


HN = 8


@T.prim_func(s_tir=True)
def heat_3d(A: T.Buffer((HN, HN, HN), "float32"), B: T.Buffer((HN, HN, HN), "float32")):
    for t in range(TSTEPS):
        for i, j, k in T.grid(HN - 2, HN - 2, HN - 2):
            with T.sblock("B"):
                vi = T.axis.spatial(HN - 2, i)
                vj = T.axis.spatial(HN - 2, j)
                vk = T.axis.spatial(HN - 2, k)
                B[vi + 1, vj + 1, vk + 1] = (
                    T.float32(0.125) * (A[vi + 2, vj + 1, vk + 1] - T.float32(2) * A[vi + 1, vj + 1, vk + 1] + A[vi, vj + 1, vk + 1])
                    + T.float32(0.125) * (A[vi + 1, vj + 2, vk + 1] - T.float32(2) * A[vi + 1, vj + 1, vk + 1] + A[vi + 1, vj, vk + 1])
                    + T.float32(0.125) * (A[vi + 1, vj + 1, vk + 2] - T.float32(2) * A[vi + 1, vj + 1, vk + 1] + A[vi + 1, vj + 1, vk])
                    + A[vi + 1, vj + 1, vk + 1]
                )
        for i, j, k in T.grid(HN - 2, HN - 2, HN - 2):
            with T.sblock("A"):
                vi = T.axis.spatial(HN - 2, i)
                vj = T.axis.spatial(HN - 2, j)
                vk = T.axis.spatial(HN - 2, k)
                A[vi + 1, vj + 1, vk + 1] = (
                    T.float32(0.125) * (B[vi + 2, vj + 1, vk + 1] - T.float32(2) * B[vi + 1, vj + 1, vk + 1] + B[vi, vj + 1, vk + 1])
                    + T.float32(0.125) * (B[vi + 1, vj + 2, vk + 1] - T.float32(2) * B[vi + 1, vj + 1, vk + 1] + B[vi + 1, vj, vk + 1])
                    + T.float32(0.125) * (B[vi + 1, vj + 1, vk + 2] - T.float32(2) * B[vi + 1, vj + 1, vk + 1] + B[vi + 1, vj + 1, vk])
                    + B[vi + 1, vj + 1, vk + 1]
                )


def _step3(X):
    c = X[1:-1, 1:-1, 1:-1]
    return (0.125 * (X[2:, 1:-1, 1:-1] - 2 * c + X[:-2, 1:-1, 1:-1])
            + 0.125 * (X[1:-1, 2:, 1:-1] - 2 * c + X[1:-1, :-2, 1:-1])
            + 0.125 * (X[1:-1, 1:-1, 2:] - 2 * c + X[1:-1, 1:-1, :-2]) + c)


def _heat_3d(A, B):
    A, B = A.copy(), B.copy()
    for _ in range(TSTEPS):
        B[1:-1, 1:-1, 1:-1] = _step3(A)
        A[1:-1, 1:-1, 1:-1] = _step3(B)
    return [A, B]


@benchmark("heat-3d", heat_3d, _heat_3d, expect=(PIPE, "ARRAY_PARTITION variable=A type=complete dim=3",
                                                  "ARRAY_PARTITION variable=B type=complete dim=3"))
def schedule_heat_3d(s):
    s.pipeline("B/j")  # the k loop is unrolled: a whole row at once
    s.pipeline("A/j")
    s.partition("A", dim=3)
    s.partition("B", dim=3)


@T.prim_func(s_tir=True)
def seidel_2d(A: T.Buffer((JN, JN), "float32")):
    for t in range(TSTEPS):
        for i, j in T.grid(JN - 2, JN - 2):
            with T.sblock("A"):
                vi = T.axis.spatial(JN - 2, i)
                vj = T.axis.spatial(JN - 2, j)
                A[vi + 1, vj + 1] = (A[vi, vj] + A[vi, vj + 1] + A[vi, vj + 2]
                                     + A[vi + 1, vj] + A[vi + 1, vj + 1] + A[vi + 1, vj + 2]
                                     + A[vi + 2, vj] + A[vi + 2, vj + 1] + A[vi + 2, vj + 2]) / T.float32(9)


def _seidel_2d(A):
    A = A.copy()
    n = A.shape[0]
    for _ in range(TSTEPS):
        for i in range(1, n - 1):
            for j in range(1, n - 1):
                A[i, j] = A[i - 1:i + 2, j - 1:j + 2].sum() / 9.0
    return [A]


@benchmark("seidel-2d", seidel_2d, _seidel_2d, expect=("#pragma HLS PIPELINE II=4",
                                                        "ARRAY_PARTITION variable=A type=cyclic factor=2 dim=1"))
def schedule_seidel_2d(s):
    # each point needs its left neighbour just written: the loop-carried chain sets the II
    s.pipeline("A/j", ii=4)
    s.partition("A", dim=1, factor=2, kind="cyclic")
