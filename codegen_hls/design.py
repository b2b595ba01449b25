"""The description of a generated design: what the project writer, the emulation
runtime and the reports all read.

Why a plain data object: the codegen produces it once from the IR; it is embedded
(as JSON) in the compiled module so that an exported library can still write its Vitis
project, and everything downstream works from this one record rather than from globals.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Port:
    """One argument of a kernel's top function: an AXI master port onto off-chip memory."""

    name: str
    dtype: str  # TVM dtype string, e.g. "float32", "int64"
    shape: tuple[int, ...]
    direction: str  # "in" or "out"
    bundle: str  # m_axi bundle name, one per port so each gets its own memory bank

    @property
    def num_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class Kernel:
    """One Vitis kernel: an ``extern "C"`` top function in its own source file."""

    name: str
    source: str  # the complete HLS C++ file, byte-identical to what emulation compiles
    ports: tuple[Port, ...]
    ops: tuple[str, ...]  # Relax operators implemented inside, in program order

    @property
    def filename(self) -> str:
        return f"{self.name}.cpp"


@dataclass(frozen=True)
class Design:
    """All kernels one ``relax.build`` offloaded, plus what stayed on the host."""

    device: str  # key into tvm_spatial/data/devices.json
    kernels: tuple[Kernel, ...]
    common_header: str  # text of the shared header every kernel includes
    host_ops: tuple[str, ...] = field(default=())  # operators left on the host CPU

    COMMON_HEADER_NAME = "tvm_spatial_hls.h"

    def to_json(self) -> str:
        data = asdict(self)
        data["version"] = MANIFEST_VERSION
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Design":
        data = json.loads(text)
        version = data.pop("version", None)
        if version != MANIFEST_VERSION:
            raise ValueError(f"design manifest version {version} is not {MANIFEST_VERSION}")
        kernels = tuple(
            Kernel(
                name=k["name"],
                source=k["source"],
                ports=tuple(Port(**{**p, "shape": tuple(p["shape"])}) for p in k["ports"]),
                ops=tuple(k["ops"]),
            )
            for k in data["kernels"]
        )
        return cls(
            device=data["device"],
            kernels=kernels,
            common_header=data["common_header"],
            host_ops=tuple(data["host_ops"]),
        )
