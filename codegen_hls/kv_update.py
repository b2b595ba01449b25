"""The in-place KV-cache write of a ``kv_update`` process (``relax_passes.kv_inplace``).

Why its own module: it is the one process that writes a tensor the caller passed in.
Its TIR stages (take, one-hot, where) compute the K or V the attention reads, from the
cache port; this module prints what follows them: the new row written into row
``position`` of the process's layer of the cache, through the same port, which is
therefore ``inout``. The process reads its slice before writing one row of it, and no
other process touches that slice, so the dataflow region has no hazard on the buffer.
"""

from __future__ import annotations

from tvm_spatial.errors import CodegenError

from .c_types import c_type
from .code_writer import CodeWriter

KV_UPDATE_OP = "kv_update"
# the composite's parameter order (relax_passes.kv_inplace.KV_UPDATE_PARAMS)
ROLES = ("cache", "layer", "new_row", "position", "slots")


def roles(kernel: str, proc) -> dict:
    """The input slots of a kv_update process by role; a CodegenError if it has another shape."""
    if len(proc.inputs) != len(ROLES):
        raise CodegenError(
            f"{kernel}: process {proc.name or proc.op} takes {len(proc.inputs)} tensors; a kv_update "
            f"takes {len(ROLES)} ({', '.join(ROLES)})"
        )
    found = dict(zip(ROLES, proc.inputs))
    cache, row = found["cache"].shape, found["new_row"].shape
    if len(cache) != 5 or cache[1] != 1 or row != (1, cache[2], 1, cache[4]):
        raise CodegenError(
            f"{kernel}: kv_update {proc.name}: cache {list(cache)} and new row {list(row)} are not "
            "[layers, 1, heads, context, head_dim] and [1, heads, 1, head_dim]"
        )
    return found


def cache_slot(proc):
    """The cache a process writes in place, or None."""
    return proc.inputs[0] if proc.op == KV_UPDATE_OP and proc.inputs else None


def write_row(w: CodeWriter, kernel: str, proc) -> None:
    """The row write (after the stages; every input slot has its C name by then)."""
    r = roles(kernel, proc)
    cache, layer, row, position = r["cache"], r["layer"], r["new_row"], r["position"]
    layers, _, heads, context, head_dim = cache.shape
    w.line("// In place: this layer's new row into row `position` of the cache (after the take above")
    w.line("// read the slice; no other process touches it).")
    w.open("{")
    w.line(f"const {c_type(layer.dtype)} layer = {layer.cname}[0];")
    w.line(f"const {c_type(position.dtype)} pos = {position.cname}[0];")
    with w.block(f"if (layer >= 0 && layer < {layers} && pos >= 0 && pos < {context})"):
        with w.block(f"for (int h = 0; h < {heads}; ++h)"):
            with w.block(f"for (int d = 0; d < {head_dim}; ++d)"):
                w.line("#pragma HLS PIPELINE II=1")
                w.line(f"{cache.cname}[layer][0][h][pos][d] = {row.cname}[0][h][0][d];")
    w.close()
