"""Import ONNX models (BERT, GPT2 as Hugging Face exporters write them) into Relax.

Why a wrapper around TVM's importer: spatial designs need every dimension known, so a
dynamic input dimension without a given size is refused here by name (input and
dimension), before TVM turns it into a symbolic variable; and a missing or corrupt file
becomes one typed error instead of a protobuf traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx

from .errors import DynamicShapeError, ModelImportError, UnsupportedOperatorError


def load_onnx(model_or_path) -> onnx.ModelProto:
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path
    path = Path(os.fspath(model_or_path))
    if not path.is_file():
        raise ModelImportError(f"ONNX model {path} does not exist")
    try:
        model = onnx.load(str(path))
    except Exception as err:  # protobuf raises DecodeError, OSError, ... for a bad file
        raise ModelImportError(f"{path} is not a readable ONNX model ({type(err).__name__}: {err})") from err
    if not model.graph.node:
        raise ModelImportError(f"{path} holds no ONNX graph (empty or truncated file)")
    return model


def validate(model: onnx.ModelProto) -> None:
    """ONNX's own checker: catches files that parse but are not models (e.g. truncated)."""
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "invalid model"
        raise ModelImportError(f"not a valid ONNX model: {first}") from err


def input_shapes(model: onnx.ModelProto, shape_dict: dict | None = None) -> dict[str, list[int]]:
    """Static shape of every graph input; a dimension neither fixed in the file nor given
    in ``shape_dict`` is a :class:`DynamicShapeError` naming input and dimension."""
    shape_dict = dict(shape_dict or {})
    initializers = {init.name for init in model.graph.initializer}
    shapes: dict[str, list[int]] = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        if value.name in shape_dict:
            shapes[value.name] = [int(d) for d in shape_dict.pop(value.name)]
            continue
        dims = []
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                dims.append(int(dim.dim_value))
            else:
                label = dim.dim_param or "?"
                raise DynamicShapeError(
                    f"input {value.name!r} has dynamic dimension {axis} ({label!r}); give its size, "
                    f"e.g. shape_dict={{{value.name!r}: [...]}} or --shape {value.name}=D0,D1,..."
                )
        shapes[value.name] = dims
    if shape_dict:
        known = ", ".join(shapes) or "none"
        raise ModelImportError(f"shape_dict names unknown input(s) {sorted(shape_dict)}; inputs: {known}")
    return shapes


def check_operators(model: onnx.ModelProto) -> None:
    """Name the first node whose operator TVM's importer cannot convert."""
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    known = _get_convert_map()
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedOperatorError(
                f"ONNX operator {node.domain}:{node.op_type} (node {node.name or node.output[0]!r}) is "
                "from a custom domain the Relax ONNX importer does not know; export with standard ops"
            )
        if node.op_type not in known:
            raise UnsupportedOperatorError(
                f"ONNX operator {node.op_type} (node {node.name or node.output[0]!r}) is not "
                "supported by the Relax ONNX importer; export without it or decompose it"
            )


def from_onnx(model_or_path, shape_dict: dict | None = None, *, opset: int | None = None):
    """ONNX (path or ModelProto) -> Relax IRModule with static shapes and weights as constants."""
    from tvm.relax.frontend.onnx import from_onnx as tvm_from_onnx

    model = load_onnx(model_or_path)
    try:
        check_operators(model)
        validate(model)
    except UnicodeDecodeError as err:  # a corrupted name inside the protobuf
        raise ModelImportError(f"not a valid ONNX model: a name is not UTF-8 ({err.reason})") from err
    shapes = input_shapes(model, shape_dict)
    try:
        return tvm_from_onnx(model, shape_dict=shapes, opset=opset, keep_params_in_input=False)
    except Exception as err:
        raise ModelImportError(f"TVM's ONNX importer failed: {type(err).__name__}: {err}") from err
