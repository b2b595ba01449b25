"""FPGA cards as data.

Why a data file: a new card is one JSON entry, and every figure there carries its
source. Code asks for a :class:`Device` by key (``"u280"``), by part number, or by the
``model`` attribute of a TVM target.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from .errors import UnknownDeviceError

DEFAULT_DEVICE = "u280"


@dataclass(frozen=True)
class MemorySystem:
    channels: int
    bandwidth_gbs: float
    capacity_gb: float


RESOURCES = ("dsp", "bram18k", "uram", "lut", "ff")


@dataclass(frozen=True)
class SLRResources:
    """What one super logic region offers (the card's totals split by SLR)."""

    dsp: int
    bram18k: int
    uram: int
    lut: int
    ff: int

    def get(self, resource: str) -> int:
        return getattr(self, resource)


@dataclass(frozen=True)
class Device:
    key: str
    name: str
    part: str
    platform: str
    clock_mhz: float
    slrs: int
    dsp: int
    bram18k: int
    uram: int
    lut: int
    ff: int
    hbm: MemorySystem | None
    ddr: MemorySystem | None
    # per-SLR split of dsp/bram18k/uram/lut/ff, SLR 0 first (sums equal the totals)
    slr_resources: tuple[SLRResources, ...] = ()
    # figure -> source key of devices.json "_sources"; see source_text()
    sources: dict = field(default_factory=dict, compare=False, hash=False)

    def slr(self, index: int) -> SLRResources:
        """Resources of SLR ``index``; an even split of the totals when the data has none."""
        if self.slr_resources:
            return self.slr_resources[index]
        return SLRResources(*(getattr(self, r) // self.slrs for r in RESOURCES))

    @property
    def offchip(self) -> MemorySystem:
        """The memory weights live in: HBM when the card has it, else DDR."""
        memory = self.hbm if self.hbm is not None else self.ddr
        assert memory is not None
        return memory

    def source_text(self, figure: str) -> str:
        """The full citation of a figure (e.g. ``"slr_resources"``)."""
        key = self.sources.get(figure, "")
        return _source_table().get(key, key)

    @property
    def memory_banks(self) -> tuple[str, ...]:
        """Names of the off-chip banks kernels' ports can be mapped to (Vitis ``sp=`` syntax)."""
        if self.hbm is not None:
            return tuple(f"HBM[{i}]" for i in range(self.hbm.channels))
        assert self.ddr is not None
        return tuple(f"DDR[{i}]" for i in range(self.ddr.channels))


@lru_cache(maxsize=1)
def _raw() -> dict:
    return json.loads(resources.files("tvm_spatial").joinpath("data/devices.json").read_text())


def _table() -> dict:
    return {k: v for k, v in _raw().items() if not k.startswith("_")}


def _source_table() -> dict:
    return dict(_raw().get("_sources", {}))


def _memory(entry: dict | None) -> MemorySystem | None:
    return None if entry is None else MemorySystem(**entry)


def device_keys() -> tuple[str, ...]:
    return tuple(sorted(_table()))


def get_device(name: str | None = None) -> Device:
    """Look a card up by key (``u280``), part (``xcu280-...``) or part prefix (``xcu280``)."""
    wanted = (name or DEFAULT_DEVICE).strip().lower()
    for key, entry in _table().items():
        if wanted in (key, entry["part"].lower(), entry["part"].split("-")[0].lower()):
            fields = {k: v for k, v in entry.items() if k not in ("hbm", "ddr", "sources", "slr_resources")}
            slrs = tuple(SLRResources(**s) for s in entry.get("slr_resources", ()))
            return Device(
                key=key, hbm=_memory(entry["hbm"]), ddr=_memory(entry["ddr"]), slr_resources=slrs,
                sources=dict(entry.get("sources", {})), **fields,
            )
    raise UnknownDeviceError(
        f"unknown FPGA device {name!r}; known devices: {', '.join(device_keys())} "
        f"(or their part numbers, e.g. xcu280)"
    )
