"""PolyBench linear-algebra kernels (BLAS, kernels, solvers) with their schedules."""

from __future__ import annotations

import numpy as np
from tvm.script import tirx as T

from ._registry import benchmark

ALPHA = 1.5
BETA = 1.2

PIPE = "#pragma HLS PIPELINE II=1"

# ---- gemm: C = alpha*A*B + beta*C ----------------------------------------------------
NI, NJ, NK, NL = 16, 12, 8, 10


@T.prim_func(s_tir=True)
def gemm(A: T.Buffer((NI, NK), "float32"), B: T.Buffer((NK, NJ), "float32"), C: T.Buffer((NI, NJ), "float32")):
    for i, j in T.grid(NI, NJ):
        with T.sblock("scale"):
            vi, vj = T.axis.remap("SS", [i, j])
            C[vi, vj] = C[vi, vj] * T.float32(BETA)
    for i, j, k in T.grid(NI, NJ, NK):
        with T.sblock("update"):
            vi, vj, vk = T.axis.remap("SSR", [i, j, k])
            C[vi, vj] = C[vi, vj] + T.float32(ALPHA) * A[vi, vk] * B[vk, vj]


def _gemm(A, B, C):
    return [A, B, BETA * C + ALPHA * A @ B]


@benchmark("gemm", gemm, _gemm, expect=(PIPE, "ARRAY_PARTITION variable=B type=cyclic factor=4 dim=2",
                                         "ARRAY_PARTITION variable=C type=cyclic factor=4 dim=2"))
def schedule_gemm(s):
    # Allo's gemm: k outside j so that the j loop is the pipelined, dependence-free one
    s.reorder("update/k", "update/j")
    s.pipeline("update/j")
    s.pipeline("scale/j")
    s.partition("B", dim=2, factor=4, kind="cyclic")
    s.partition("C", dim=2, factor=4, kind="cyclic")


# ---- 2mm: D = alpha*A*B*C + beta*D -----------------------------------------------------
@T.prim_func(s_tir=True)
def mm2(A: T.Buffer((NI, NK), "float32"), B: T.Buffer((NK, NJ), "float32"),
        C: T.Buffer((NJ, NL), "float32"), D: T.Buffer((NI, NL), "float32")):
    tmp = T.alloc_buffer((NI, NJ), "float32")
    for i, j, k in T.grid(NI, NJ, NK):
        with T.sblock("tmp"):
            vi, vj, vk = T.axis.remap("SSR", [i, j, k])
            with T.init():
                tmp[vi, vj] = T.float32(0)
            tmp[vi, vj] = tmp[vi, vj] + T.float32(ALPHA) * A[vi, vk] * B[vk, vj]
    for i, j in T.grid(NI, NL):
        with T.sblock("scale"):
            vi, vj = T.axis.remap("SS", [i, j])
            D[vi, vj] = D[vi, vj] * T.float32(BETA)
    for i, j, k in T.grid(NI, NL, NJ):
        with T.sblock("D"):
            vi, vj, vk = T.axis.remap("SSR", [i, j, k])
            D[vi, vj] = D[vi, vj] + tmp[vi, vk] * C[vk, vj]


def _mm2(A, B, C, D):
    return [A, B, C, BETA * D + ALPHA * A @ B @ C]


@benchmark("2mm", mm2, _mm2, expect=(PIPE, "ARRAY_PARTITION variable=tmp type=cyclic factor=2 dim=2",
                                      "UNROLL factor=2", "static float tmp[16][12]"))
def schedule_2mm(s):
    s.reorder("tmp/k", "tmp/j")
    s.pipeline("tmp/j")
    s.partition("tmp", dim=2, factor=2, kind="cyclic")
    s.reorder("D/k", "D/j")
    s.pipeline("D/j")
    s.unroll("scale/j", factor=2)


# ---- 3mm: G = (A*B)*(C*D) ----------------------------------------------------------------
NM = 6


@T.prim_func(s_tir=True)
def mm3(A: T.Buffer((NI, NK), "float32"), B: T.Buffer((NK, NJ), "float32"), C: T.Buffer((NJ, NM), "float32"),
        D: T.Buffer((NM, NL), "float32"), G: T.Buffer((NI, NL), "float32")):
    E = T.alloc_buffer((NI, NJ), "float32")
    F = T.alloc_buffer((NJ, NL), "float32")
    for i, j, k in T.grid(NI, NJ, NK):
        with T.sblock("E"):
            vi, vj, vk = T.axis.remap("SSR", [i, j, k])
            with T.init():
                E[vi, vj] = T.float32(0)
            E[vi, vj] = E[vi, vj] + A[vi, vk] * B[vk, vj]
    for i, j, k in T.grid(NJ, NL, NM):
        with T.sblock("F"):
            vi, vj, vk = T.axis.remap("SSR", [i, j, k])
            with T.init():
                F[vi, vj] = T.float32(0)
            F[vi, vj] = F[vi, vj] + C[vi, vk] * D[vk, vj]
    for i, j, k in T.grid(NI, NL, NJ):
        with T.sblock("G"):
            vi, vj, vk = T.axis.remap("SSR", [i, j, k])
            with T.init():
                G[vi, vj] = T.float32(0)
            G[vi, vj] = G[vi, vj] + E[vi, vk] * F[vk, vj]


def _mm3(A, B, C, D, G):
    return [A, B, C, D, (A @ B) @ (C @ D)]


@benchmark("3mm", mm3, _mm3, expect=(PIPE, "ARRAY_PARTITION variable=E type=complete dim=2",
                                      "ARRAY_PARTITION variable=F type=complete dim=1"))
def schedule_3mm(s):
    for stage in ("E", "F", "G"):
        s.pipeline(f"{stage}/j")  # inner k is unrolled by the pipeline
    s.partition("E", dim=2)  # G reads a row of E per cycle
    s.partition("F", dim=1)  # and a column of F
    s.partition("A", dim=2)
    s.partition("B", dim=1)
    s.partition("C", dim=2)
    s.partition("D", dim=1)


# ---- atax: y = A^T (A x) ---------------------------------------------------------------
AM, AN = 12, 16


@T.prim_func(s_tir=True)
def atax(A: T.Buffer((AM, AN), "float32"), x: T.Buffer((AN,), "float32"), y: T.Buffer((AN,), "float32")):
    tmp = T.alloc_buffer((AM,), "float32")
    for i, j in T.grid(AM, AN):
        with T.sblock("tmp"):
            vi, vj = T.axis.remap("SR", [i, j])
            with T.init():
                tmp[vi] = T.float32(0)
            tmp[vi] = tmp[vi] + A[vi, vj] * x[vj]
    for j, i in T.grid(AN, AM):
        with T.sblock("y"):
            vj, vi = T.axis.remap("SR", [j, i])
            with T.init():
                y[vj] = T.float32(0)
            y[vj] = y[vj] + A[vi, vj] * tmp[vi]


def _atax(A, x, y):
    return [A, x, A.T @ (A @ x)]


@benchmark("atax", atax, _atax, expect=(PIPE, "ARRAY_PARTITION variable=tmp type=complete dim=0",
                                         "UNROLL factor=4"))
def schedule_atax(s):
    jo, ji = s.split("tmp/j", factor=4)
    s.unroll(ji, factor=4)
    s.pipeline(jo)
    s.pipeline("y/i", ii=1)
    s.partition("tmp")


# ---- bicg: s = r^T A, q = A p ---------------------------------------------------------------
@T.prim_func(s_tir=True)
def bicg(A: T.Buffer((AN, AM), "float32"), p: T.Buffer((AM,), "float32"), r: T.Buffer((AN,), "float32"),
         s: T.Buffer((AM,), "float32"), q: T.Buffer((AN,), "float32")):
    for i, j in T.grid(AN, AM):
        with T.sblock("s"):
            vi, vj = T.axis.remap("RS", [i, j])
            with T.init():
                s[vj] = T.float32(0)
            s[vj] = s[vj] + r[vi] * A[vi, vj]
    for i, j in T.grid(AN, AM):
        with T.sblock("q"):
            vi, vj = T.axis.remap("SR", [i, j])
            with T.init():
                q[vi] = T.float32(0)
            q[vi] = q[vi] + A[vi, vj] * p[vj]


def _bicg(A, p, r, s, q):
    return [A, p, r, r @ A, A @ p]


@benchmark("bicg", bicg, _bicg, expect=(PIPE, "PIPELINE II=2", "ARRAY_PARTITION variable=A type=cyclic factor=3 dim=2"))
def schedule_bicg(s):
    s.pipeline("s/j")
    s.pipeline("q/j", ii=2)
    s.partition("A", dim=2, factor=3, kind="cyclic")


# ---- mvt: x1 += A y1, x2 += A^T y2 ---------------------------------------------------------
MN = 16


@T.prim_func(s_tir=True)
def mvt(A: T.Buffer((MN, MN), "float32"), y1: T.Buffer((MN,), "float32"), y2: T.Buffer((MN,), "float32"),
        x1: T.Buffer((MN,), "float32"), x2: T.Buffer((MN,), "float32")):
    for i, j in T.grid(MN, MN):
        with T.sblock("x1"):
            vi, vj = T.axis.remap("SR", [i, j])
            x1[vi] = x1[vi] + A[vi, vj] * y1[vj]
    for i, j in T.grid(MN, MN):
        with T.sblock("x2"):
            vi, vj = T.axis.remap("SR", [i, j])
            x2[vi] = x2[vi] + A[vj, vi] * y2[vj]


def _mvt(A, y1, y2, x1, x2):
    return [A, y1, y2, x1 + A @ y1, x2 + A.T @ y2]


@benchmark("mvt", mvt, _mvt, expect=(PIPE, "ARRAY_PARTITION variable=A type=block factor=4 dim=1", "UNROLL factor=4"))
def schedule_mvt(s):
    s.pipeline("x1/j")
    jo, ji = s.split("x2/j", factor=4)
    s.unroll(ji, factor=4)
    s.partition("A", dim=1, factor=4, kind="block")


# ---- gesummv: y = alpha*A x + beta*B x -------------------------------------------------------
@T.prim_func(s_tir=True)
def gesummv(A: T.Buffer((MN, MN), "float32"), B: T.Buffer((MN, MN), "float32"), x: T.Buffer((MN,), "float32"),
            y: T.Buffer((MN,), "float32")):
    tmp = T.alloc_buffer((MN,), "float32")
    yb = T.alloc_buffer((MN,), "float32")
    for i, j in T.grid(MN, MN):
        with T.sblock("tmp"):
            vi, vj = T.axis.remap("SR", [i, j])
            with T.init():
                tmp[vi] = T.float32(0)
                yb[vi] = T.float32(0)
            tmp[vi] = tmp[vi] + A[vi, vj] * x[vj]
            yb[vi] = yb[vi] + B[vi, vj] * x[vj]
    for i in range(MN):
        with T.sblock("y"):
            vi = T.axis.remap("S", [i])
            y[vi] = T.float32(ALPHA) * tmp[vi] + T.float32(BETA) * yb[vi]


def _gesummv(A, B, x, y):
    return [A, B, x, ALPHA * A @ x + BETA * B @ x]


@benchmark("gesummv", gesummv, _gesummv, expect=(PIPE, "ARRAY_PARTITION variable=x type=complete dim=0",
                                                  "ARRAY_PARTITION variable=A type=complete dim=2"))
def schedule_gesummv(s):
    s.pipeline("tmp/i")
    s.partition("x")
    s.partition("A", dim=2)
    s.partition("B", dim=2)
    s.pipeline("y/i")


# ---- syrk: C = alpha*A*A^T + beta*C (lower triangle) -------------------------------------------
SN, SM = 12, 8


@T.prim_func(s_tir=True)
def syrk(A: T.Buffer((SN, SM), "float32"), C: T.Buffer((SN, SN), "float32")):
    for i, j in T.grid(SN, SN):
        with T.sblock("scale"):
            T.where(j <= i)
            vi, vj = T.axis.remap("SS", [i, j])
            C[vi, vj] = C[vi, vj] * T.float32(BETA)
    for i, k, j in T.grid(SN, SM, SN):
        with T.sblock("update"):
            T.where(j <= i)
            vi, vk, vj = T.axis.remap("SRS", [i, k, j])
            C[vi, vj] = C[vi, vj] + T.float32(ALPHA) * A[vi, vk] * A[vj, vk]


def _syrk(A, C):
    low = np.tril(np.ones_like(C, dtype=bool))
    return [A, np.where(low, BETA * C + ALPHA * A @ A.T, C)]


@benchmark("syrk", syrk, _syrk, expect=(PIPE, "ARRAY_PARTITION variable=C type=cyclic factor=2 dim=2"))
def schedule_syrk(s):
    s.pipeline("update/j")
    s.pipeline("scale/j")
    s.partition("C", dim=2, factor=2, kind="cyclic")


# ---- syr2k: C = alpha*(A*B^T + B*A^T) + beta*C (lower triangle) -----------------------------
@T.prim_func(s_tir=True)
def syr2k(A: T.Buffer((SN, SM), "float32"), B: T.Buffer((SN, SM), "float32"), C: T.Buffer((SN, SN), "float32")):
    for i, j in T.grid(SN, SN):
        with T.sblock("scale"):
            T.where(j <= i)
            vi, vj = T.axis.remap("SS", [i, j])
            C[vi, vj] = C[vi, vj] * T.float32(BETA)
    for i, k, j in T.grid(SN, SM, SN):
        with T.sblock("update"):
            T.where(j <= i)
            vi, vk, vj = T.axis.remap("SRS", [i, k, j])
            C[vi, vj] = C[vi, vj] + A[vj, vk] * T.float32(ALPHA) * B[vi, vk] + B[vj, vk] * T.float32(ALPHA) * A[vi, vk]


def _syr2k(A, B, C):
    low = np.tril(np.ones_like(C, dtype=bool))
    return [A, B, np.where(low, BETA * C + ALPHA * (A @ B.T + B @ A.T), C)]


@benchmark("syr2k", syr2k, _syr2k, expect=(PIPE, "UNROLL factor=3", "ARRAY_PARTITION variable=A type=block factor=2 dim=2"))
def schedule_syr2k(s):
    jo, ji = s.split("update/j", factor=3)
    s.unroll(ji, factor=3)
    s.pipeline(jo)
    s.partition("A", dim=2, factor=2, kind="block")


# ---- symm: C = alpha*A*B + beta*C, A symmetric (lower triangle stored) -------------------------
YM, YN = 10, 12


@T.prim_func(s_tir=True)
def symm(A: T.Buffer((YM, YM), "float32"), B: T.Buffer((YM, YN), "float32"), C: T.Buffer((YM, YN), "float32")):
    acc = T.alloc_buffer((YM, YN), "float32")
    for i, j, k in T.grid(YM, YN, YM):
        with T.sblock("acc"):
            vi, vj, vk = T.axis.remap("SSR", [i, j, k])
            with T.init():
                acc[vi, vj] = T.float32(0)
            acc[vi, vj] = acc[vi, vj] + T.Select(vk <= vi, A[vi, vk], A[vk, vi]) * B[vk, vj]
    for i, j in T.grid(YM, YN):
        with T.sblock("C"):
            vi, vj = T.axis.remap("SS", [i, j])
            C[vi, vj] = T.float32(BETA) * C[vi, vj] + T.float32(ALPHA) * acc[vi, vj]


def _symm(A, B, C):
    sym = np.tril(A) + np.tril(A, -1).T
    return [A, B, BETA * C + ALPHA * sym @ B]


@benchmark("symm", symm, _symm, expect=(PIPE, "ARRAY_PARTITION variable=acc type=cyclic factor=2 dim=2"))
def schedule_symm(s):
    s.reorder("acc/k", "acc/j")  # j innermost: independent accumulations pipeline at II=1
    s.pipeline("acc/j")
    s.pipeline("C/j")
    s.partition("acc", dim=2, factor=2, kind="cyclic")


# ---- trmm: B = alpha * A^T B, A unit lower triangular -----------------------------------------
@T.prim_func(s_tir=True)
def trmm(A: T.Buffer((YM, YM), "float32"), B: T.Buffer((YM, YN), "float32")):
    acc = T.alloc_buffer((YM, YN), "float32")
    for i, j, k in T.grid(YM, YN, YM):
        with T.sblock("acc"):
            vi, vj, vk = T.axis.remap("SSR", [i, j, k])
            with T.init():
                acc[vi, vj] = B[vi, vj]
            acc[vi, vj] = acc[vi, vj] + T.Select(vk > vi, A[vk, vi] * B[vk, vj], T.float32(0))
    for i, j in T.grid(YM, YN):
        with T.sblock("B"):
            vi, vj = T.axis.remap("SS", [i, j])
            B[vi, vj] = T.float32(ALPHA) * acc[vi, vj]


def _trmm(A, B):
    strict = np.tril(A, -1)
    return [A, ALPHA * (B + strict.T @ B)]


@benchmark("trmm", trmm, _trmm, expect=(PIPE, "ARRAY_PARTITION variable=A type=complete dim=1", "UNROLL"))
def schedule_trmm(s):
    s.pipeline("acc/j")  # k (inner) is unrolled by the pipeline: A's column read at once
    s.partition("A", dim=1)
    s.partition("B", dim=1)
    s.unroll("B/j", factor=0)


# ---- doitgen: A[r, q, :] = A[r, q, :] C4 -------------------------------------------------------
DR, DQ, DP = 4, 5, 8


@T.prim_func(s_tir=True)
def doitgen(A: T.Buffer((DR, DQ, DP), "float32"), C4: T.Buffer((DP, DP), "float32")):
    acc = T.alloc_buffer((DP,), "float32")
    for r, q in T.grid(DR, DQ):
        for p, s in T.grid(DP, DP):
            with T.sblock("sum"):
                vr, vq, vp, vs = T.axis.remap("SSSR", [r, q, p, s])
                with T.init():
                    acc[vp] = T.float32(0)
                acc[vp] = acc[vp] + A[vr, vq, vs] * C4[vs, vp]
        for p in range(DP):
            with T.sblock("A"):
                vr, vq, vp = T.axis.remap("SSS", [r, q, p])
                A[vr, vq, vp] = acc[vp]


def _doitgen(A, C4):
    return [A @ C4, C4]


@benchmark("doitgen", doitgen, _doitgen, expect=(PIPE, "ARRAY_PARTITION variable=acc type=complete dim=0",
                                                  "ARRAY_PARTITION variable=C4 type=complete dim=1"))
def schedule_doitgen(s):
    s.pipeline("sum/p")
    s.pipeline("A/p")
    s.partition("acc")
    s.partition("C4", dim=1)

