"""Partition a Relax module for the ``vitis_spatial`` codegen.

Matched operators become composite functions; ``MergeCompositeFunctions`` then groups
each connected region of them into one function annotated ``Codegen="vitis_spatial"``
(one Vitis kernel per region). A run of identical layers is first outlined into one
function (``layer_reuse``), so its region is one kernel the host calls once per layer.
Constants are *not* bound into the regions: weights
become kernel ports, which is where a spatial design wants them (off-chip, in HBM) —
except 0-d constants that legalization folds into literals (``scalar_constants``).
Whatever was not matched stays on the host and is listed by :func:`host_operators`.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.transform import FuseOpsByPattern

from .attention_fusion import fuse_attention
from .kv_inplace import kv_inplace, make_calls_inplace, merge_new_rows
from .layer_reuse import merge_regions, outline_layers
from .patterns import CODEGEN, fuse_patterns
from .roles import name_roles
from .scalar_constants import bind_scalar_constants
from .token_split import mark_chunked, split_tokens

# Relax bookkeeping ops that are not computation and need no kernel.
_NOT_COMPUTE = frozenset(
    {
        "relax.call_tir",
        "relax.call_dps_packed",
        "relax.call_pure_packed",
        "relax.call_inplace_packed",
        "relax.builtin.alloc_tensor",
        "relax.null_value",
        "relax.shape_of",
        "relax.tensor_to_shape",
        "relax.shape_to_tensor",
    }
)


def partition_for_vitis_spatial(mod: tvm.IRModule, layers: str = "unroll", chunks: int = 3) -> tvm.IRModule:
    """``layers``: "reuse" outlines a run of identical layers into one region called once
    per layer (``layer_reuse``); "unroll" keeps every layer's operators in one region;
    "token_parallel" unrolls them too, with the tokens split into ``chunks`` chunks, each
    computing the whole model for its rows (``token_split``; the codegen makes each chunk
    one engine). ``relax.build`` chooses between them (``tvm_spatial.allocation``)."""
    if layers not in ("reuse", "unroll", "token_parallel"):
        raise ValueError(f"layers {layers!r} is not 'reuse', 'unroll' or 'token_parallel'")
    mod = relax.transform.Normalize()(mod)
    mod = relax.transform.FoldConstant()(mod)  # exporters leave shape arithmetic on constants
    mod = kv_inplace(mod)  # a decode graph's cache: one row per layer written in place
    mod = fuse_attention(mod)  # head split, QK^T, softmax, AV, head merge: one operator
    mod = merge_new_rows(mod)  # ... which then merges the new K/V rows into the old slices
    if layers == "token_parallel":
        mod = split_tokens(mod, chunks)
    mod = FuseOpsByPattern(fuse_patterns(), bind_constants=False, annotate_codegen=False)(mod)
    if layers == "reuse":
        # before the scalars are bound: a per-layer one (a quantization scale) would make
        # every layer's operator a function of its own; it becomes a parameter instead
        mod = outline_layers(name_roles(mod))  # one layer's kernel, called once per layer
    mod = name_roles(bind_scalar_constants(mod))
    mod = merge_regions(mod)
    mod = make_calls_inplace(_name_kernels(mod))
    return mark_chunked(mod, chunks) if layers == "token_parallel" else mod


def _composites_in(func: relax.Function) -> list[str]:
    names = []
    for block in func.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Function) and value.attrs and "Composite" in value.attrs:
                names.append(str(value.attrs["Composite"]).split(".", 1)[-1])
    return names


def _name_kernels(mod: tvm.IRModule) -> tvm.IRModule:
    """Short, stable kernel names (``k0_linear_relu``): they become Vitis kernel names and
    C symbols, and MergeCompositeFunctions' names run to hundreds of characters."""
    regions = [
        (gv, func)
        for gv, func in mod.functions.items()
        if isinstance(func, relax.Function) and func.attrs and func.attrs.get("Codegen") == CODEGEN
    ]
    for index, (gv, func) in enumerate(sorted(regions, key=lambda item: item[0].name_hint)):
        ops = list(dict.fromkeys(_composites_in(func)))[:3]
        name = "_".join([f"k{index}", *ops])
        mod.update_func(gv, func.with_attr("global_symbol", name))
    return mod


def offloaded_regions(mod: tvm.IRModule) -> list[relax.Function]:
    """The offloaded regions (functions for the ``vitis_spatial`` codegen), in module order."""
    return [func for _, func in mod.functions.items()
            if isinstance(func, relax.Function) and func.attrs and func.attrs.get("Codegen") == CODEGEN]


def offloaded_functions(mod: tvm.IRModule) -> list[str]:
    """Kernel (global symbol) names of the offloaded regions."""
    return sorted(str(func.attrs["global_symbol"]) for func in offloaded_regions(mod))


def host_operators(mod: tvm.IRModule) -> list[str]:
    """Operators that remain on the host CPU, as ``op (binding in function)`` strings."""
    found: list[str] = []
    for gv, func in mod.functions.items():
        if not isinstance(func, relax.Function):
            continue
        if func.attrs and (func.attrs.get("Codegen") or func.attrs.get("Composite")):
            continue
        for block in func.body.blocks:
            for binding in block.bindings:
                value = binding.value
                if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
                    name = value.op.name
                    if name not in _NOT_COMPUTE:
                        found.append(f"{name} ({binding.var.name} in {gv.name_hint})")
    return found
