"""The in-place KV-cache write of a ``kv_update`` or ``kv_append`` process (``relax_passes.kv_inplace``).

Why its own module: it is the one process that writes a tensor the caller passed in.
Its TIR stages (take, one-hot, where) compute the K or V the attention reads, from the
cache port; this module prints what follows them: the new row written into row
``position`` of the process's layer of the cache, through the same port, which is
therefore ``inout``. The process reads its slice before writing one row of it, and no
other process touches that slice, so the dataflow region has no hazard on the buffer.

A ``kv_append`` has no stages: it streams its slice straight from the port, before it
reads the new row (its prologue: ``slice_source``), and then writes the row.
"""

from __future__ import annotations

from tvm_spatial.errors import CodegenError

from .c_types import c_type
from .code_writer import CodeWriter

KV_UPDATE_OP = "kv_update"
KV_APPEND_OP = "kv_append"
# the composites' parameter orders (relax_passes.kv_inplace.KV_UPDATE_PARAMS, KV_APPEND_PARAMS)
ROLES = {KV_UPDATE_OP: ("cache", "layer", "new_row", "position", "slots"),
         KV_APPEND_OP: ("cache", "layer", "new_row", "position")}


def roles(kernel: str, proc) -> dict:
    """The input slots of a kv_update (kv_append) process by role; a CodegenError if it has another shape."""
    names = ROLES[proc.op]
    if len(proc.inputs) != len(names):
        raise CodegenError(
            f"{kernel}: process {proc.name or proc.op} takes {len(proc.inputs)} tensors; a {proc.op} "
            f"takes {len(names)} ({', '.join(names)})"
        )
    found = dict(zip(names, proc.inputs))
    cache, row = found["cache"].shape, found["new_row"].shape
    if len(cache) != 5 or cache[1] != 1 or row != (1, cache[2], 1, cache[4]):
        raise CodegenError(
            f"{kernel}: kv_update {proc.name}: cache {list(cache)} and new row {list(row)} are not "
            "[layers, 1, heads, context, head_dim] and [1, heads, 1, head_dim]"
        )
    return found


def cache_slot(proc):
    """The cache a process writes in place, or None."""
    return proc.inputs[0] if proc.op in ROLES and proc.inputs else None


def slice_source(kernel: str, proc):
    """(statements before the loop, index -> C expression) of a kv_append's layer slice read
    straight from its cache port: the take, fused with the loop that streams it on. A
    layer index out of range reads layer 0 (take's "clip"); the row write skips it."""
    r = roles(kernel, proc)
    cache, layer = r["cache"], r["layer"]
    layers = cache.shape[0]
    kind = c_type(layer.dtype)
    before = [f"const {kind} layer_in = {layer.cname}[0];",
              f"const {kind} layer = layer_in >= 0 && layer_in < {layers} ? layer_in : 0;"]
    return before, lambda idx: f"{cache.cname}[layer]" + "".join(f"[{i}]" for i in idx)


def row_elements(kernel: str, proc) -> int:
    """Elements of the new row, which ``write_row`` writes one a cycle."""
    _, _, heads, _, head_dim = roles(kernel, proc)["cache"].shape
    return heads * head_dim


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
