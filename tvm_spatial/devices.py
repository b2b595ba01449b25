"""FPGA cards as data.

Why a data file: a new card is one JSON entry, and every figure there carries its
source. Code asks for a :class:`Device` by key (``"u280"``), by part number, or by the
``model`` attribute of a TVM target.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from .errors import UnknownDeviceError

DEFAULT_DEVICE = "u280"


@dataclass(frozen=True)
class MemorySystem:
    channels: int
    bandwidth_gbs: float
    capacity_gb: float


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

    @property
    def memory_banks(self) -> tuple[str, ...]:
        """Names of the off-chip banks kernels' ports can be mapped to (Vitis ``sp=`` syntax)."""
        if self.hbm is not None:
            return tuple(f"HBM[{i}]" for i in range(self.hbm.channels))
        assert self.ddr is not None
        return tuple(f"DDR[{i}]" for i in range(self.ddr.channels))


@lru_cache(maxsize=1)
def _table() -> dict:
    text = resources.files("tvm_spatial").joinpath("data/devices.json").read_text()
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


def _memory(entry: dict | None) -> MemorySystem | None:
    return None if entry is None else MemorySystem(**entry)


def device_keys() -> tuple[str, ...]:
    return tuple(sorted(_table()))


def get_device(name: str | None = None) -> Device:
    """Look a card up by key (``u280``), part (``xcu280-...``) or part prefix (``xcu280``)."""
    wanted = (name or DEFAULT_DEVICE).strip().lower()
    for key, entry in _table().items():
        if wanted in (key, entry["part"].lower(), entry["part"].split("-")[0].lower()):
            fields = {k: v for k, v in entry.items() if k not in ("hbm", "ddr", "sources")}
            return Device(key=key, hbm=_memory(entry["hbm"]), ddr=_memory(entry["ddr"]), **fields)
    raise UnknownDeviceError(
        f"unknown FPGA device {name!r}; known devices: {', '.join(device_keys())} "
        f"(or their part numbers, e.g. xcu280)"
    )
