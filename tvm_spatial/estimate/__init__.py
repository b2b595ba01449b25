"""The analytical performance/resource model, its report, and resource allocation.

``tvm_spatial.estimate(obj, device="u280", seq=None)`` is the entry point; the model is
the pure function :func:`model.estimate_work` (LLM dataflow designs) or
:func:`loops.estimate_schedule` (customized TensorIR kernels); :func:`allocate` chooses
each process's parallelism with the same function. Constants and their sources:
:mod:`.costs`; published figures the model is checked against: :mod:`.published`.
"""

from __future__ import annotations

from .allocation import DEFAULT_BUDGET, Allocation, allocate, allocate_for_codegen, realized_config
from .model import Estimate, ModelConfig, Parallelism, ProcessEstimate, Resources, Roofline, estimate_work
from .workload import DesignWork, Matmul, ProcessWork, design_work, transformer_layers


def design_from_onnx(path, device: str = "u280", seq: int | None = None):
    """The Design ``relax.build`` would make from an ONNX file, without compiling the
    emulation (partition + print only): seconds instead of minutes for GPT2-small. Its MAC
    arrays are the ones ``relax.build`` realizes under the current allocation policy
    (``tvm_spatial.allocation``; by default :func:`allocate_for_codegen`)."""
    return design_from_module(module_from_onnx(path, seq), device)


def module_from_onnx(path, seq: int | None = None):
    """The Relax module of an ONNX file, its inputs' last dimension set to ``seq`` (and
    any other unknown dimension to 1) when given."""
    import onnx

    from ..frontend import from_onnx

    shape_dict = None
    if seq is not None:
        model = onnx.load(str(path), load_external_data=False)
        shape_dict = {}
        for inp in model.graph.input:
            dims = [d.dim_value if d.dim_value > 0 else 1 for d in inp.type.tensor_type.shape.dim]
            if len(dims) >= 2:
                dims[-1] = seq
            shape_dict[inp.name] = dims
    return from_onnx(str(path), shape_dict=shape_dict)


def design_from_module(mod, device: str = "u280"):
    """The Design ``relax.build(mod, "vitis_spatial")`` would make (e.g. of a
    ``tvm_spatial.quantize``-d module), without compiling the emulation."""
    from codegen_hls.kernel import build_design
    from relax_passes import host_operators, offloaded_regions

    from ..devices import get_device
    from ..pipeline import check_static_shapes
    from ..tuning.policy import choose_layout, current_policy, partition_for_build

    check_static_shapes(mod)
    mod = partition_for_build(mod, get_device(device).key, current_policy())
    funcs = offloaded_regions(mod)

    key, host_ops = get_device(device).key, host_operators(mod)
    layout = choose_layout(funcs, key, host_ops, current_policy())
    return build_design(funcs, key, host_ops, arrays=layout.arrays, slrs=layout.slrs, placement=layout.placement,
                        rows=layout.rows)


def estimate(obj, device: str | None = None, seq: int | None = None, *, precision: str | None = None,
             config: ModelConfig | None = None, allocate_resources: bool = False,
             budget: float = DEFAULT_BUDGET) -> Estimate:
    """Estimate latency and resources of ``obj`` on ``device`` (default: the design's own).

    ``obj``: a relax Executable, an exported library path, a ``Design``
    (``tvm_spatial.design_of``), an ONNX path (``seq`` sets its sequence length), a
    :class:`DesignWork`, or a ``tvm_spatial.Schedule`` (a customized kernel).
    ``precision``: ``"w8a8"``/``"w4a8"`` to estimate the design quantized.
    ``allocate_resources``: the model's unconstrained allocation, a what-if beyond what the
    codegen builds: every operator streaming token blocks (``DesignWork.streaming``) and
    weights striped over channels (see :func:`allocate`); otherwise ``config`` (default:
    what a built design realized -- each matmul's recorded MAC array, its lanes and token
    blocks -- or the library's default tiling)."""
    import os

    from codegen_hls.design import Design

    from ..devices import get_device
    from ..schedule import Schedule

    if isinstance(obj, Schedule):
        from .loops import estimate_schedule

        return estimate_schedule(obj, get_device(device), config.clock_mhz if config else None)
    if isinstance(obj, (str, os.PathLike)) and str(obj).endswith(".onnx"):
        obj = design_from_onnx(obj, device or "u280", seq)
    if not isinstance(obj, (Design, DesignWork)):
        from ..project_api import design_of

        obj = design_of(obj)
    if config is None and isinstance(obj, Design):
        config = realized_config(obj)
    work = design_work(obj) if isinstance(obj, Design) else obj
    work = work.with_precision(precision)
    dev = get_device(device or work.device)
    if allocate_resources:
        return allocate(work.streaming(), dev, budget=budget).estimate
    return estimate_work(work, dev, config or ModelConfig())


__all__ = [
    "Allocation", "DEFAULT_BUDGET", "allocate_for_codegen", "design_from_module", "realized_config", "DesignWork", "Estimate", "Matmul", "ModelConfig", "Parallelism",
    "ProcessEstimate", "ProcessWork", "Resources", "Roofline", "allocate", "design_from_onnx", "design_work",
    "module_from_onnx",
    "estimate", "estimate_work", "transformer_layers",
]
