"""tvm-spatial: compile transformer models with Apache TVM (Relax) into spatial dataflow
accelerators for AMD Alveo FPGAs, as Vitis HLS C++ with an emulation runtime.

Importing this package (or plain ``import tvm``, through the ``tvm.backends`` entry
point) registers the ``vitis_spatial`` target, after which
``relax.build(mod, target="vitis_spatial")`` offloads every supported operator.
"""

from __future__ import annotations

from .devices import Device, get_device
from .errors import (
    CodegenError,
    DesignNotFoundError,
    DynamicShapeError,
    EmulationError,
    OutputDirError,
    SpatialError,
    ToolchainError,
    UnknownDeviceError,
    UnsupportedOperatorError,
)
from .project_api import design_of, export_project

__version__ = "0.1.0"

__all__ = [
    "CodegenError",
    "DesignNotFoundError",
    "Device",
    "DynamicShapeError",
    "EmulationError",
    "OutputDirError",
    "SpatialError",
    "ToolchainError",
    "UnknownDeviceError",
    "UnsupportedOperatorError",
    "design_of",
    "export_project",
    "get_device",
]


def _autoload() -> None:
    """Register the target tags, the Relax pipeline hook and the BYOC codegen (idempotent)."""
    from codegen_hls.byoc import register as register_codegen

    from .pipeline import install as install_pipeline
    from .target import register_targets

    register_targets()
    install_pipeline()
    register_codegen()


_autoload()
