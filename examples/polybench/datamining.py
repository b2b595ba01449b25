"""PolyBench data mining (correlation, covariance) with their schedules."""

from __future__ import annotations

import numpy as np
from tvm.script import tirx as T

from ._registry import benchmark

PIPE = "#pragma HLS PIPELINE II=1"
N, M = 16, 10  # N data points of M variables
EPS = 0.1


@T.prim_func(s_tir=True)
def covariance(data: T.Buffer((N, M), "float32"), cov: T.Buffer((M, M), "float32")):
    mean = T.alloc_buffer((M,), "float32")
    for j, i in T.grid(M, N):
        with T.sblock("mean"):
            vj, vi = T.axis.remap("SR", [j, i])
            with T.init():
                mean[vj] = T.float32(0)
            mean[vj] = mean[vj] + data[vi, vj] / T.float32(N)
    for i, j, k in T.grid(M, M, N):
        with T.sblock("cov"):
            vi, vj, vk = T.axis.remap("SSR", [i, j, k])
            with T.init():
                cov[vi, vj] = T.float32(0)
            cov[vi, vj] = cov[vi, vj] + (data[vk, vi] - mean[vi]) * (data[vk, vj] - mean[vj]) / T.float32(N - 1)


def _covariance(data, cov):
    return [data, np.cov(data, rowvar=False)]


@benchmark("covariance", covariance, _covariance,
           expect=(PIPE, "ARRAY_PARTITION variable=data type=cyclic factor=2 dim=1", "UNROLL factor=2"))
def schedule_covariance(s):
    s.pipeline("mean/i")
    ko, ki = s.split("cov/k", factor=2)
    s.unroll(ki, factor=2)
    s.pipeline(ko)
    s.partition("data", dim=1, factor=2, kind="cyclic")


@T.prim_func(s_tir=True)
def correlation(data: T.Buffer((N, M), "float32"), corr: T.Buffer((M, M), "float32")):
    mean = T.alloc_buffer((M,), "float32")
    var = T.alloc_buffer((M,), "float32")
    stddev = T.alloc_buffer((M,), "float32")
    for j, i in T.grid(M, N):
        with T.sblock("mean"):
            vj, vi = T.axis.remap("SR", [j, i])
            with T.init():
                mean[vj] = T.float32(0)
            mean[vj] = mean[vj] + data[vi, vj] / T.float32(N)
    for j, i in T.grid(M, N):
        with T.sblock("var"):
            vj, vi = T.axis.remap("SR", [j, i])
            with T.init():
                var[vj] = T.float32(0)
            var[vj] = var[vj] + (data[vi, vj] - mean[vj]) * (data[vi, vj] - mean[vj]) / T.float32(N)
    for j in range(M):
        with T.sblock("stddev"):
            vj = T.axis.remap("S", [j])
            stddev[vj] = T.Select(T.sqrt(var[vj]) <= T.float32(EPS), T.float32(1), T.sqrt(var[vj]))
    for i, j, k in T.grid(M, M, N):
        with T.sblock("corr"):
            vi, vj, vk = T.axis.remap("SSR", [i, j, k])
            with T.init():
                corr[vi, vj] = T.Select(vi == vj, T.float32(1), T.float32(0))
            corr[vi, vj] = corr[vi, vj] + T.Select(
                vi == vj, T.float32(0),
                (data[vk, vi] - mean[vi]) / (T.sqrt(T.float32(N)) * stddev[vi])
                * ((data[vk, vj] - mean[vj]) / (T.sqrt(T.float32(N)) * stddev[vj])))


def _correlation(data, corr):
    out = np.corrcoef(data, rowvar=False)
    np.fill_diagonal(out, 1.0)
    return [data, out]


@benchmark("correlation", correlation, _correlation,
           expect=(PIPE, "ARRAY_PARTITION variable=stddev type=complete dim=0", "ARRAY_PARTITION variable=mean"))
def schedule_correlation(s):
    s.pipeline("mean/i")
    s.pipeline("var/i")
    s.pipeline("corr/k")
    s.partition("mean")
    s.partition("stddev")
