"""Hooks the spatial passes into ``relax.build``.

``relax.build`` runs ``relax.get_pipeline("default")`` for CPU-kind targets, and our
target is an ``llvm`` tag. We wrap that pipeline: under a target whose keys contain
``vitis_spatial`` it first partitions the module and runs the external codegen, then
continues with TVM's own pipeline for whatever stayed on the host. Under any other
target it is TVM's pipeline, untouched.
"""

from __future__ import annotations

import warnings

import tvm
from tvm import relax
from tvm.relax import pipeline as relax_pipeline

from .devices import get_device
from .errors import DynamicShapeError, ResourceBudgetError
from .target import device_of, is_spatial_target

_WRAPPED_NAMES = ("default", "default_build")


class HostFallbackWarning(UserWarning):
    """Operators that the vitis_spatial target could not offload run on the host CPU."""


def check_static_shapes(mod: tvm.IRModule) -> None:
    """A spatial design is sized at compile time: every input dimension must be a number."""
    for gv, func in mod.functions.items():
        if not isinstance(func, relax.Function) or (func.attrs and func.attrs.get("Codegen")):
            continue
        for param in func.params:
            ty = param.ty
            if not isinstance(ty, relax.TensorType):
                continue
            if ty.shape is None:
                raise DynamicShapeError(
                    f"input {param.name} of {gv.name_hint} has unknown rank; give it a static shape"
                )
            for axis, dim in enumerate(ty.shape.values):
                if not isinstance(dim, tvm.tirx.IntImm):
                    raise DynamicShapeError(
                        f"input {param.name} of {gv.name_hint} has symbolic dimension {axis} "
                        f"('{dim}'); vitis_spatial designs need static shapes: bind it first "
                        "(e.g. from_onnx(..., shape_dict=...) or relax.transform.BindSymbolicVars)"
                    )


def check_tensor_sizes(mod: tvm.IRModule, device) -> None:
    """Every tensor (inputs, weights, intermediates) must fit in the card's off-chip memory;
    a larger one is refused here, before any C++ is printed or compiled."""
    memory = device.hbm or device.ddr
    kind = "HBM" if device.hbm else "DDR"
    limit = int(memory.capacity_gb * 2**30)
    for gv, func in mod.functions.items():
        if not isinstance(func, relax.Function):
            continue
        named = [(p.name, p.ty) for p in func.params]
        for block in func.body.blocks:
            named += [(b.var.name, b.var.ty) for b in block.bindings]
            named += [(f"a constant used by {b.var.name}", a.ty) for b in block.bindings
                      if isinstance(b.value, relax.Call) for a in b.value.args
                      if isinstance(a, tvm.ir.GenericConst)]
        for name, ty in named:
            if not isinstance(ty, relax.TensorType) or ty.shape is None:
                continue
            dims = [int(d.value) for d in ty.shape.values if isinstance(d, tvm.tirx.IntImm)]
            elements = 1
            for d in dims:
                elements *= d
            size = elements * max(1, tvm.runtime.DataType(str(ty.dtype)).bits // 8)
            if size > limit:
                raise ResourceBudgetError(
                    f"tensor {name} of {gv.name_hint} (shape {dims}) has {elements} elements "
                    f"({size / 2**30:.1f} GiB), "
                    f"more than the {device.name}'s {memory.capacity_gb:g} GiB of {kind}"
                )


def spatial_passes(device_key: str) -> tvm.transform.Pass:
    """Partition for vitis_spatial, report host operators, run the codegen."""
    from relax_passes import host_operators

    @tvm.transform.module_pass(opt_level=0, name="VitisSpatialOffload")
    def offload(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        check_static_shapes(mod)
        check_tensor_sizes(mod, get_device(device_key))
        from .tuning.policy import current_policy, partition_for_build

        mod = partition_for_build(mod, device_key, current_policy())
        host_ops = host_operators(mod)
        if host_ops:
            warnings.warn(
                f"vitis_spatial: {len(host_ops)} operator(s) stay on the host CPU: "
                + ", ".join(host_ops),
                HostFallbackWarning,
                stacklevel=2,
            )
        options = {"device": device_key, "host_ops": host_ops, "allocation": current_policy().to_json()}
        # every function that calls a region, not only main: an outlined layer does too
        callers = [gv.name_hint for gv, f in mod.functions.items()
                   if isinstance(f, relax.Function) and not (f.attrs and ("Codegen" in f.attrs or "Composite" in f.attrs))]
        return relax.transform.RunCodegen(target_options={"vitis_spatial": options}, entry_functions=callers)(mod)

    return offload


def _wrap(make_pipeline):
    if getattr(make_pipeline, "_vitis_spatial_wrapper", False):
        return make_pipeline

    def make(**kwargs):
        host_pipeline = make_pipeline(**kwargs)

        @tvm.transform.module_pass(opt_level=0, name="VitisSpatialOrHostPipeline")
        def run(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
            target = tvm.target.Target.current(allow_none=True)
            if is_spatial_target(target):
                mod = spatial_passes(device_of(target).key)(mod)
            return host_pipeline(mod)

        return run

    make._vitis_spatial_wrapper = True
    make.__wrapped__ = make_pipeline
    return make


def install() -> None:
    """Wrap TVM's default Relax pipelines (idempotent)."""
    for name in _WRAPPED_NAMES:
        if name in relax_pipeline.PIPELINE_MAP:
            relax_pipeline.PIPELINE_MAP[name] = _wrap(relax_pipeline.PIPELINE_MAP[name])
