"""tvm-spatial: compile transformer models with Apache TVM (Relax) into spatial dataflow
accelerators for AMD Alveo FPGAs, as Vitis HLS C++ with an emulation runtime.

Importing this package (or plain ``import tvm``, through the ``tvm.backends`` entry
point) registers the ``vitis_spatial`` target, after which
``relax.build(mod, target="vitis_spatial")`` offloads every supported operator.
"""

from __future__ import annotations

# tvm first: its import runs our backend entry point, which must not find a half-imported
# tvm_spatial submodule (see backend_entry).
import tvm  # noqa: F401

from . import frontend
from .backend_entry import autoload
from .devices import Device, get_device
from .errors import (
    CodegenError,
    DesignNotFoundError,
    DynamicShapeError,
    EmulationError,
    InterfaceMismatchError,
    ScheduleError,
    ModelImportError,
    OutputDirError,
    SpatialError,
    ToolchainError,
    UnknownDeviceError,
    UnsupportedOperatorError,
)
from .pipeline import HostFallbackWarning
from .errors import ContextLengthError, GenerationError, KVCacheInterfaceError, VocabularyError
from .generate import Generation, Generator
from .project_api import design_of, export_project
from .report import BuildReport, build_report
from .runtime_mode import runtime_mode
from .schedule import Schedule, customize
from .prim_build import SpatialModule, build
from .quantization import quantize
from .errors import LintError, ResourceBudgetError, TokenSplitError, UsageError
from .estimate import Allocation, Estimate, allocate
from .estimate import estimate  # the function; the package stays importable as tvm_spatial.estimate.*
from .tuning import allocation

__version__ = "0.1.0"

__all__ = [
    "BuildReport",
    "build_report",
    "CodegenError",
    "DesignNotFoundError",
    "Device",
    "DynamicShapeError",
    "EmulationError",
    "HostFallbackWarning",
    "InterfaceMismatchError",
    "Schedule",
    "ScheduleError",
    "SpatialModule",
    "build",
    "customize",
    "ModelImportError",
    "OutputDirError",
    "SpatialError",
    "TokenSplitError",
    "ToolchainError",
    "UnknownDeviceError",
    "UnsupportedOperatorError",
    "design_of",
    "estimate",
    "Estimate",
    "allocate",
    "allocation",
    "Allocation",
    "ResourceBudgetError",
    "LintError",
    "UsageError",
    "export_project",
    "frontend",
    "get_device",
    "ContextLengthError",
    "GenerationError",
    "KVCacheInterfaceError",
    "VocabularyError",
    "Generation",
    "Generator",
    "runtime_mode",
    "quantize",
]


_autoload = autoload  # the registration also runs when TVM loads its backends
_autoload()
