"""The ``vitis_spatial`` target, as TVM target tags.

A Python package cannot add a target kind, but a tag can carry our name: the tag is an
``llvm`` (host) target whose ``keys`` include ``vitis_spatial`` and whose ``model`` is
the FPGA part. ``vitis_spatial`` means the U280; ``vitis_spatial/u250`` and
``vitis_spatial/u55c`` pick other cards, as does any llvm target built with
``keys=["vitis_spatial", "cpu"]`` and ``model=<part>``.
"""

from __future__ import annotations

import tvm

from .devices import DEFAULT_DEVICE, Device, device_keys, get_device

TARGET_KEY = "vitis_spatial"


def tag_name(device_key: str) -> str:
    return TARGET_KEY if device_key == DEFAULT_DEVICE else f"{TARGET_KEY}/{device_key}"


def register_targets() -> None:
    """Register one tag per device in the data file (idempotent: ``override=True``)."""
    for key in device_keys():
        part = get_device(key).part.split("-")[0]
        config = {"kind": "llvm", "keys": [TARGET_KEY, "cpu"], "model": part}
        tvm.target.tag.register_tag(tag_name(key), config, override=True)


def is_spatial_target(target) -> bool:
    return target is not None and TARGET_KEY in list(target.keys)


def device_of(target) -> Device:
    """The FPGA a ``vitis_spatial`` target names (its ``model`` attribute)."""
    model = target.attrs.get("model") if target is not None else None
    return get_device(str(model) if model and str(model) != "unknown" else None)
