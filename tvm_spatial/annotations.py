"""The hardware-customization annotations carried by TensorIR, in one place.

Why one module: a schedule primitive (``tvm_spatial.schedule``) records what it means in
the IR itself, and everything downstream -- the HLS printer (``codegen_hls.printer``),
later the analytical model -- reads it back from the IR through the readers here. No key
is spelled anywhere else, and nothing travels beside the IR.

Where an annotation lives:

* **Loop annotations** (``For.annotations``; they survive lowering):

  ``hls.pipeline_ii`` (int >= 1)
      pipeline the loop with this initiation interval -> ``#pragma HLS PIPELINE II=n``.
  ``hls.unroll`` (int >= 0)
      unroll the loop; 0 means fully -> ``#pragma HLS UNROLL [factor=n]``.
  ``hls.unfold`` (str)
      the loop is a spatial array of processing elements named by the value (e.g. a
      systolic array): every iteration is its own hardware instance -> fully unrolled,
      and each instance is labelled in the HLS text.
  ``hls.dataflow`` (int 1)
      the loop body is a dataflow region -> ``#pragma HLS DATAFLOW``.

* **Function attributes** (``PrimFunc.attrs``), because buffers carry no annotation dict.
  Buffers are named; names are unique inside a function (``customize`` checks it):

  ``hls.partition``: {buffer name: [{"dim", "factor", "kind"}, ...]}
      ``#pragma HLS ARRAY_PARTITION``. ``dim`` is 1-based, 0 means every dimension (as in
      Vitis); ``kind`` is complete/block/cyclic. Part of the function's interface type
      when the buffer is a parameter.
  ``hls.stream``: {buffer name: {"depth", "array_dims"}}
      the buffer is ``hls::stream`` FIFO(s) of that depth. The first ``array_dims``
      dimensions select one stream of an array of streams (indexed by unfolded loops);
      the remaining dimensions are the order in time the elements pass through.
  ``hls.reuse``: {buffer name: {"source", "axis", "kind"}}
      the buffer is a reuse buffer that ``reuse_at`` created: a ``line`` buffer (rows of
      ``source``) or a ``window`` buffer, refilled by shifting along loop ``axis``.
  ``hls.dataflow`` (int 1)
      the whole function body is a dataflow region.

Import it as ``import tvm_spatial.annotations as ann``: ``from tvm_spatial import
annotations`` finds the package's ``__future__.annotations`` feature instead of this module.
"""

from __future__ import annotations

from dataclasses import dataclass

# ---- keys ---------------------------------------------------------------------------
PIPELINE_II = "hls.pipeline_ii"
UNROLL = "hls.unroll"
UNFOLD = "hls.unfold"
DATAFLOW = "hls.dataflow"  # on a loop or a function

PARTITION = "hls.partition"
STREAM = "hls.stream"
REUSE = "hls.reuse"

LOOP_KEYS = (PIPELINE_II, UNROLL, UNFOLD, DATAFLOW)
FUNCTION_KEYS = (PARTITION, STREAM, REUSE, DATAFLOW)

PARTITION_KINDS = ("complete", "block", "cyclic")


# ---- typed values -------------------------------------------------------------------
@dataclass(frozen=True)
class Partition:
    dim: int  # 1-based; 0 = all dimensions
    factor: int  # 0 for complete
    kind: str  # complete | block | cyclic

    def pragma(self, variable: str) -> str:
        factor = "" if self.kind == "complete" else f" factor={self.factor}"
        return f"#pragma HLS ARRAY_PARTITION variable={variable} type={self.kind}{factor} dim={self.dim}"

    def __str__(self) -> str:
        factor = "" if self.kind == "complete" else f" {self.factor}"
        return f"{self.kind}{factor} on dim {self.dim}"


@dataclass(frozen=True)
class Stream:
    depth: int
    array_dims: int = 0  # leading dims selecting one stream of an array of streams


@dataclass(frozen=True)
class Reuse:
    source: str  # the buffer whose elements are reused
    axis: str  # name of the loop the reuse buffer shifts along
    kind: str  # line | window


# ---- loop annotations ---------------------------------------------------------------
def _int(value) -> int:
    return int(value.value) if hasattr(value, "value") else int(value)


def pipeline_ii(loop) -> int | None:
    value = loop.annotations.get(PIPELINE_II) if loop.annotations else None
    return None if value is None else _int(value)


def unroll_factor(loop) -> int | None:
    value = loop.annotations.get(UNROLL) if loop.annotations else None
    return None if value is None else _int(value)


def unfold_name(loop) -> str | None:
    value = loop.annotations.get(UNFOLD) if loop.annotations else None
    return None if value is None else str(value)


def is_dataflow_loop(loop) -> bool:
    return bool(loop.annotations and loop.annotations.get(DATAFLOW) is not None)


# ---- function annotations -----------------------------------------------------------
def _attr(func, key):
    return func.attrs.get(key) if func.attrs is not None else None


def partitions(func) -> dict[str, tuple[Partition, ...]]:
    value = _attr(func, PARTITION) or {}
    return {
        str(name): tuple(Partition(_int(p["dim"]), _int(p["factor"]), str(p["kind"])) for p in parts)
        for name, parts in value.items()
    }


def streams(func) -> dict[str, Stream]:
    value = _attr(func, STREAM) or {}
    return {str(n): Stream(_int(s["depth"]), _int(s["array_dims"])) for n, s in value.items()}


def reuse_buffers(func) -> dict[str, Reuse]:
    value = _attr(func, REUSE) or {}
    return {str(n): Reuse(str(r["source"]), str(r["axis"]), str(r["kind"])) for n, r in value.items()}


def is_dataflow_function(func) -> bool:
    return _attr(func, DATAFLOW) is not None


def with_partition(func, buffer: str, part: Partition):
    table = partitions(func)
    kept = tuple(p for p in table.get(buffer, ()) if p.dim != part.dim and part.dim != 0)
    table[buffer] = (*kept, part)
    encoded = {
        name: [{"dim": p.dim, "factor": p.factor, "kind": p.kind} for p in parts]
        for name, parts in sorted(table.items())
    }
    return func.with_attr(PARTITION, encoded)


def with_stream(func, buffer: str, stream: Stream):
    table = streams(func)
    table[buffer] = stream
    encoded = {n: {"depth": s.depth, "array_dims": s.array_dims} for n, s in sorted(table.items())}
    return func.with_attr(STREAM, encoded)


def with_reuse(func, buffer: str, reuse: Reuse):
    table = reuse_buffers(func)
    table[buffer] = reuse
    encoded = {n: {"source": r.source, "axis": r.axis, "kind": r.kind} for n, r in sorted(table.items())}
    return func.with_attr(REUSE, encoded)


def with_dataflow(func):
    return func.with_attr(DATAFLOW, 1)
