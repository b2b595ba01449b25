"""Where a decode design keeps its KV cache: per layer, on-chip (URAM or BRAM) or off-chip.

Why a module of its own: the choice is the one place the model trades on-chip memory for
off-chip bandwidth, and both the model (``model.estimate_work``: decode latency and bytes)
and the report (a row per layer) read the same :class:`KVPlacement` records.

What is modelled: the resident-cache architecture of Chen et al. (TRETS'24, Sec. 5, the
decode stage): each layer's K and V, sized at the compiled maximum context in the design's
cache type, stay where they are between tokens; a decoded token reads its layer's K and V
once (the attention) and appends one row to each. That is what a built decode design does
(``relax_passes.kv_inplace``): its cache is an ``inout`` m_axi buffer in off-chip memory
that persists between calls, each layer's ``kv_update`` process reads its slice for the
attention and writes one row (``KVCacheWork.in_design``) -- nothing is copied per token.

The choice (:func:`place_kv_cache`, pure): a cache the design keeps behind a port is
off-chip (HBM on cards that have it, else DDR): the report says where the design puts it.
Otherwise (a workload without a design, or the ``"onchip"`` what-if) layers in order, each
on the SLR of its attention; URAM if the layer's K and V fit in what is left of that SLR's
URAM within the budget after every process and stream, else BRAM, else off-chip. Capacity only: a URAM288 holds 4096 72-bit words and narrow elements are packed side
by side (``costs.uram_for``), a RAMB18 per ``costs.bram18_for``; the attention's array
reads them at its own rate, so an on-chip layer costs the attention compute time only,
while an off-chip one costs ``bytes / bandwidth`` of its port.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from . import costs


@dataclass(frozen=True)
class KVCacheWork:
    """One layer's cache: K and V, each ``[heads, context, head_dim]`` of ``dtype``."""

    layer: int
    slr: int  # the SLR of the attention that reads it
    heads: int
    context: int  # the compiled maximum context
    head_dim: int
    dtype: str
    # where the built design keeps it: "offchip" (an m_axi port: HBM or DDR), or "" when the
    # workload has no design and the model chooses
    in_design: str = ""

    @property
    def elements(self) -> int:
        """Elements of K (or of V)."""
        return self.heads * self.context * self.head_dim

    @property
    def bytes(self) -> int:
        """K and V together."""
        return 2 * self.elements * costs.dtype_bits(self.dtype) // 8

    @property
    def row_bytes(self) -> int:
        """One appended position of K (or V)."""
        return self.heads * self.head_dim * costs.dtype_bits(self.dtype) // 8

    def uram(self) -> int:
        return 2 * costs.uram_for(self.elements, costs.dtype_bits(self.dtype))

    def bram18k(self) -> int:
        return 2 * costs.bram18_for(self.elements, costs.dtype_bits(self.dtype))


@dataclass(frozen=True)
class KVPlacement:
    layer: int
    slr: int
    bytes: int  # K and V at the compiled context
    where: str  # "uram", "bram", or the off-chip memory ("hbm", "ddr")
    uram: int = 0
    bram18k: int = 0

    @property
    def on_chip(self) -> bool:
        return self.where in ("uram", "bram")


def place_kv_cache(caches: Sequence[KVCacheWork], free: Sequence[dict], offchip: str = "hbm",
                   policy: str = "auto") -> tuple[KVPlacement, ...]:
    """Place each layer's cache (pure). ``free``: per SLR, ``{"uram": n, "bram18k": n}``
    still available within the budget; ``policy``: ``"auto"`` (where the design keeps it;
    without a design, on-chip while it fits), ``"offchip"`` or ``"onchip"`` (a what-if:
    the URAM/BRAM it would take, even over budget)."""
    if policy not in ("auto", "offchip", "onchip"):
        raise ValueError(f"KV cache policy {policy!r} is not auto, offchip or onchip")
    left = [dict(f) for f in free]
    out = []
    for c in caches:
        slr = min(c.slr, len(left) - 1) if left else 0
        room = left[slr] if left else {"uram": 0, "bram18k": 0}
        uram, bram = c.uram(), c.bram18k()
        if policy == "offchip" or (policy == "auto" and c.in_design == "offchip"):
            where = offchip
        elif uram <= room.get("uram", 0):
            where = "uram"
        elif bram <= room.get("bram18k", 0):
            where = "bram"
        else:
            where = "uram" if policy == "onchip" else offchip
        use_u, use_b = (uram, 0) if where == "uram" else ((0, bram) if where == "bram" else (0, 0))
        if left:
            room["uram"] = room.get("uram", 0) - use_u
            room["bram18k"] = room.get("bram18k", 0) - use_b
        out.append(KVPlacement(c.layer, slr, c.bytes, where, use_u, use_b))
    return tuple(out)
