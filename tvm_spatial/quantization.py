"""Public quantization API: ``tvm_spatial.quantize(mod, "w8a8" | "w4a8", calibration)``.

The pass itself (scheme, calibration, rewriting) is ``relax_passes/quantize.py``; the
W4A8 kernel is ``codegen_hls/quant_kernels.py``. This module adds the user-facing
entry, the default calibration set (random tokens of the model's vocabulary) used by the
CLI when no calibration file is given, and a helper that quantizes both designs of a
:class:`tvm_spatial.Generator`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import tvm
from tvm import relax

from .errors import UsageError

SCHEMES = ("w8a8", "w4a8")


def quantize(mod: tvm.IRModule, scheme: str = "w8a8", calibration: Sequence | None = None,
             *, attention: bool = True) -> tvm.IRModule:
    """Quantize ``mod["main"]``: linear layers to ``scheme`` (W8A8 or W4A8: per-output-
    channel weight scales), attention matmuls to int8 (``attention=True``), activation
    scales per tensor from running the fp32 model on ``calibration`` (a list of samples,
    each ``{input name: array}`` or a list of arrays in parameter order; default: random
    tokens, see :func:`random_token_calibration`). Softmax, layer norm, residual additions
    and GELU stay fp32. The result builds with ``relax.build(..., "vitis_spatial")``."""
    from relax_passes.quantize import quantize_module

    if scheme not in SCHEMES:
        raise UsageError(f"quantization scheme {scheme!r} is not one of {', '.join(SCHEMES)}")
    if calibration is None:
        calibration = random_token_calibration(mod)
    return quantize_module(mod, scheme, calibration, attention=attention).mod


def vocabulary_size(mod: tvm.IRModule) -> int | None:
    """Rows of the embedding table: the first constant gathered by ``take`` in ``main``."""
    take = tvm.ir.Op.get("relax.take")
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and value.op.same_as(take):
                table = value.args[0]
                if isinstance(table, tvm.ir.GenericConst) and table.ty.ndim == 2:
                    return int(table.ty.shape.values[0])
    return None


def random_token_calibration(mod: tvm.IRModule, samples: int = 4, seed: int = 0) -> list[dict]:
    """``samples`` inputs for ``main``: integer inputs named like a mask are ones, other
    integer inputs random token ids below the vocabulary size; float inputs standard
    normal. Good enough for a random-weight model; pass real text for a trained one."""
    rng = np.random.default_rng(seed)
    vocab = vocabulary_size(mod) or 2
    result = []
    for _ in range(samples):
        sample = {}
        for p in mod["main"].params:
            shape = [int(d) for d in p.ty.shape.values]
            dtype = str(p.ty.dtype)
            if dtype.startswith("int") and "mask" in p.name:
                sample[p.name] = np.ones(shape, dtype)
            elif dtype.startswith("int"):
                sample[p.name] = rng.integers(0, vocab, size=shape).astype(dtype)
            else:
                sample[p.name] = rng.standard_normal(shape).astype(dtype)
        result.append(sample)
    return result


def load_calibration(path: str | Path) -> list[dict]:
    """A ``.npz`` of one array per model input, each with a leading sample axis."""
    data = np.load(path)
    if not data.files:
        raise UsageError(f"calibration file {path} holds no arrays")
    count = {data[k].shape[0] for k in data.files}
    if len(count) != 1:
        raise UsageError(f"calibration file {path}: arrays differ in their leading (sample) dimension")
    return [{k: data[k][i] for k in data.files} for i in range(count.pop())]


def decode_calibration(decode_mod: tvm.IRModule, signature, steps: int = 6, seed: int = 0) -> list[dict]:
    """Inputs of a KV-cache decode model as generation feeds them: random tokens stepped
    through the fp32 model (TVM's ``llvm`` build) from an empty cache, so that the cache
    operands of the attention matmuls are calibrated on real cache contents."""
    rng = np.random.default_rng(seed)
    vm = relax.VirtualMachine(relax.build(decode_mod, target="llvm"), tvm.cpu())["main"]
    key = value = np.zeros(signature.cache_shape, "float32")
    samples = []
    for position in range(min(steps, signature.max_ctx)):
        sample = {
            "input_ids": np.array([[rng.integers(0, signature.vocab)]], "int64"),
            "position": np.array([position], "int64"),
            "past_key": key,
            "past_value": value,
        }
        sample = {name: sample[name] for name in signature.decode_inputs}
        samples.append(sample)
        _, k, v = vm(*[tvm.runtime.tensor(sample[n]) for n in signature.decode_inputs])
        key, value = k.numpy(), v.numpy()
    return samples


def quantized_generator(prefill_onnx, decode_onnx, scheme: str, *, target: str = "vitis_spatial",
                        samples: int = 4, seed: int = 0):
    """A :class:`~tvm_spatial.Generator` whose prefill and decode designs are quantized
    with ``scheme``: the prefill model calibrated on random prompts, the decode model on
    random tokens stepped from an empty cache (:func:`decode_calibration`)."""
    from .generate import Generator

    if scheme not in SCHEMES:
        raise UsageError(f"quantization scheme {scheme!r} is not one of {', '.join(SCHEMES)}")

    def quantize_stage(stage, mod, signature):
        if stage == "prefill":
            calibration = random_token_calibration(mod, samples, seed)
        else:
            calibration = decode_calibration(mod, signature, max(samples, 2), seed)
        return quantize(mod, scheme, calibration)

    generator = Generator(prefill_onnx, decode_onnx, target=target, transform=quantize_stage)
    return generator


def agreement(reference: np.ndarray, quantized: np.ndarray) -> dict[str, float]:
    """fp32-vs-quantized agreement of outputs whose last axis is a feature/logit vector:
    cosine similarity per position (mean and min) and top-1 (argmax) agreement."""
    ref = np.asarray(reference, np.float64).reshape(-1, reference.shape[-1])
    got = np.asarray(quantized, np.float64).reshape(-1, quantized.shape[-1])
    cos = (ref * got).sum(-1) / (np.linalg.norm(ref, axis=-1) * np.linalg.norm(got, axis=-1) + 1e-30)
    return {
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "top1": float((ref.argmax(-1) == got.argmax(-1)).mean()),
    }
