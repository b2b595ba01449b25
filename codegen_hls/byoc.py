"""The BYOC entry point ``relax.ext.vitis_spatial``.

TVM's ``RunCodegen`` calls it once per build with every function annotated
``Codegen="vitis_spatial"``. It prints the design (one kernel per function), compiles
the emulation, and returns one module implementing all of them. Options come from
``RunCodegen(target_options={"vitis_spatial": {...}})`` — the device key, the operators
left on the host, and the allocation policy (JSON of ``tvm_spatial.tuning.AllocationPolicy``:
which MAC array each matmul process gets).
"""

from __future__ import annotations

import tvm_ffi

from .emulation import emulation_module
from .kernel import build_design

CODEGEN_NAME = "vitis_spatial"


def _option(options, key, default):
    if options is None or key not in options:
        return default
    return options[key]


def vitis_spatial_codegen(functions, options, constant_names):  # noqa: ARG001 - TVM's signature
    device = str(_option(options, "device", "u280"))
    host_ops = [str(op) for op in _option(options, "host_ops", [])]
    from tvm_spatial.tuning.policy import AllocationPolicy, choose_layout

    policy = AllocationPolicy.from_json(_option(options, "allocation", None))
    layout = choose_layout(list(functions), device, host_ops, policy)
    design = build_design(list(functions), device=device, host_ops=host_ops, arrays=layout.arrays,
                          slrs=layout.slrs, placement=layout.placement,
                          rows=layout.rows)
    return [emulation_module(design)]


def register() -> None:
    """Idempotent: re-registering replaces our own earlier registration only."""
    tvm_ffi.register_global_func(f"relax.ext.{CODEGEN_NAME}", vitis_spatial_codegen, override=True)
